"""What the analysis figures take from a LazyConfig and a registered dataset: the class-count
check, the test-time resize and a mapper that keeps the annotations."""

from __future__ import annotations

from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T

__all__ = ["check_class_count", "inference_resize", "scoring_mapper_from_config"]


def check_class_count(dataset_name: str, num_classes: int) -> None:
    """Raise a clear error when a registered dataset's category count differs from the model's."""
    names = getattr(MetadataCatalog.get(dataset_name), "thing_classes", None)
    if names is not None and len(names) != num_classes:
        raise ValueError(
            f"The model has num_classes={num_classes} but dataset {dataset_name!r} has "
            f"{len(names)} categories: use a config made for this dataset (or set "
            "model.num_classes), or the dataset the config was made for."
        )


def inference_resize(cfg) -> tuple | None:
    """(short edge, max size) of the config's test-time ``ResizeShortestEdge``; None if none."""
    from detectron2.config import instantiate
    from omegaconf import OmegaConf

    augs = OmegaConf.select(cfg, "dataloader.test.mapper.augmentations", default=None)
    for aug in instantiate(augs) if augs is not None else []:
        if isinstance(aug, T.ResizeShortestEdge):
            return int(max(aug.short_edge_length)), int(aug.max_size)
    return None


def scoring_mapper_from_config(cfg):
    """A ``DatasetMapper`` that applies the config's *test* resize but keeps the annotations
    (``is_train=True``, no random augmentation), for scoring samples against their labels."""
    from detectron2.config import instantiate
    from detectron2.data import DatasetMapper
    from omegaconf import OmegaConf

    mapper = OmegaConf.select(cfg, "dataloader.test.mapper")
    augs = instantiate(mapper.augmentations)
    return DatasetMapper(
        is_train=True,
        augmentations=augs,
        image_format=mapper.get("image_format", "BGR"),
        use_instance_mask=False,
        use_keypoint=False,
        recompute_boxes=False,
    )
