"""The evaluator that scores a registered dataset as its format is scored."""

from __future__ import annotations

from detectron2.data import MetadataCatalog

__all__ = ["evaluator_for_dataset"]


def evaluator_for_dataset(
    dataset_name: str,
    *,
    output_dir: str | None = None,
    max_dets_per_image: int = 300,
    num_workers: int = 0,
):
    """The evaluator of a registered dataset, by its metadata's ``evaluator_type``.

    - "lvis": efl_d2's :class:`~efl_d2.evaluation.LVISEvaluator` (LVIS's federated rules, up to
      ``max_dets_per_image`` detections per image, ``num_workers`` scoring processes);
    - "coco": efl_d2's :class:`~efl_d2.evaluation.COCOEvaluator` (pycocotools' COCOeval with its
      default parameters: up to 100 detections per image and class).

    Both add AP per frequency group and write the per-category report to ``output_dir``. The
    format of ``efl_d2.data.custom`` data is detected from its json; ``configs/custom/`` use this.
    """
    from . import COCOEvaluator, LVISEvaluator

    kind = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if kind == "coco":
        return COCOEvaluator(dataset_name, output_dir=output_dir)
    if kind == "lvis":
        return LVISEvaluator(
            dataset_name,
            output_dir=output_dir,
            max_dets_per_image=max_dets_per_image,
            num_workers=num_workers,
        )
    raise ValueError(
        f"Dataset {dataset_name!r} has evaluator_type {kind!r}: no COCO or LVIS scoring for it."
    )
