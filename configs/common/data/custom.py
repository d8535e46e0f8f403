# A user's own data, COCO or LVIS format (efl_d2.data.custom), given on the command line:
#   custom.train_json=... custom.train_images=... custom.val_json=... custom.val_images=...
# tools/train_net.py registers the files as custom_train / custom_val before anything runs; the
# class count, names, frequency groups and RFS threshold then come from the training json, and
# the evaluator follows the json's format (LVIS: federated LVIS rules; COCO: pycocotools' COCOeval).
from detectron2.config import LazyCall as L
from omegaconf import OmegaConf

from efl_d2.evaluation import evaluator_for_dataset

custom = OmegaConf.create(
    dict(  # noqa: C408
        train_json="",
        train_images="",  # the folder the json's file_name values are relative to
        val_json="",
        val_images="",
        # rare: classes in at most 10 training images, common: 11-100, frequent: more (LVIS's)
        frequency_thresholds=[10, 100],
        num_classes=None,  # filled in from train_json (a different value is an error)
        # RFS t; None: frequency_thresholds[1] / training images with a box. LVIS's t = 0.001 is
        # that rule on its 99k images: a class in fewer images than "frequent" is repeated.
        repeat_thresh=None,
    )
)


def custom_data(dataloader):
    """Point a data block (train loader with RFS, test loader, evaluator) at the custom data."""
    dataloader.train.dataset.names = "custom_train"
    dataloader.train.repeat_thresh = "${custom.repeat_thresh}"
    dataloader.test.dataset.names = "custom_val"
    dataloader.evaluator = L(evaluator_for_dataset)(
        dataset_name="${..test.dataset.names}",
        output_dir="${...train.output_dir}/inference",  # results json, per-category report
        max_dets_per_image=300,  # LVIS format; COCO format: pycocotools' own limits
        num_workers=dataloader.evaluator.get("num_workers", 0),
    )
    return dataloader
