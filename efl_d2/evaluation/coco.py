"""Detectron2's ``COCOEvaluator`` for COCO-format datasets (any category ids), with AP per
frequency group and the per-category report.

Boxes are scored by pycocotools' own ``COCOeval`` (not Detectron2's C++ ``COCOeval_opt``) with
its default parameters (maxDets [1, 10, 100], the standard ``summarize``), so AP, AP50, AP75,
APs, APm and APl equal ``COCOeval(..., "bbox")`` on the ``coco_instances_results.json`` written
next to them. Everything else is Detectron2's: ``process()``, gathering across ranks, the
results file (dataset category ids), the results dict with "AP-<class name>".

Added, when the dataset's metadata has ``class_frequency`` (LVIS-style "r"/"c"/"f" by contiguous
id): "APr", "APc", "APf" (the mean per-category AP of each group's categories with ground truth),
the per-category report (:func:`~efl_d2.evaluation.write_per_category_report`) and, during
training, one TensorBoard histogram per group, as :class:`~efl_d2.evaluation.LVISEvaluator`.
"""

from __future__ import annotations

from detectron2.evaluation import COCOEvaluator as _D2COCOEvaluator
from detectron2.utils.logger import create_small_table

from ..categories import FREQUENCY_GROUPS, count_instances, per_category_ap, per_group_summary
from .evaluator import put_group_histograms
from .per_category_report import write_per_category_report

__all__ = ["COCOEvaluator"]


class COCOEvaluator(_D2COCOEvaluator):
    """Detectron2's ``COCOEvaluator``, scored exactly as pycocotools, plus AP per frequency group.

    Args: Detectron2's (``dataset_name, tasks, distributed, output_dir, max_dets_per_image,
    use_fast_impl, kpt_oks_sigmas, allow_cached_coco``); only ``use_fast_impl`` defaults to
    False, so that the numbers are the official implementation's. ``max_dets_per_image=None``
    keeps pycocotools' maxDets [1, 10, 100].

    Metadata read besides Detectron2's (``json_file``, ``thing_classes``,
    ``thing_dataset_id_to_contiguous_id``):

    - ``class_frequency`` (optional): "r" / "c" / "f" by contiguous id. Without it there are no
      group keys and no per-category report.
    - ``class_image_count`` (optional): ``[{"id": dataset id, "image_count"}]``, the train image
      counts in the report (0 without it).
    """

    def __init__(
        self,
        dataset_name,
        tasks=None,
        distributed=True,
        output_dir=None,
        *,
        max_dets_per_image=None,
        use_fast_impl=False,
        kpt_oks_sigmas=(),
        allow_cached_coco=True,
    ):
        super().__init__(
            dataset_name,
            tasks,
            distributed,
            output_dir,
            max_dets_per_image=max_dets_per_image,
            use_fast_impl=use_fast_impl,
            kpt_oks_sigmas=kpt_oks_sigmas,
            allow_cached_coco=allow_cached_coco,
        )
        self._dataset_name = dataset_name
        self._check_class_frequency()

    def _check_class_frequency(self):
        """Fail at construction, not after inference, on a ``class_frequency`` that cannot be
        matched to the classes."""
        frequency = self._metadata.get("class_frequency")
        if frequency is None:
            return
        num_classes = len(self._metadata.thing_classes)
        if len(frequency) != num_classes:
            raise ValueError(
                f"Dataset {self._dataset_name!r}: class_frequency has {len(frequency)} entries "
                f"for {num_classes} thing_classes."
            )
        bad = sorted({f for f in frequency if f not in FREQUENCY_GROUPS})
        if bad:
            raise ValueError(
                f"Dataset {self._dataset_name!r}: class_frequency holds {bad}, not one of "
                f"{FREQUENCY_GROUPS}."
            )

    def _dataset_category_ids(self) -> list[int]:
        """(C,) dataset category id of every contiguous class id (Detectron2 writes contiguous
        ids as they are when the metadata has no mapping)."""
        mapping = self._metadata.get("thing_dataset_id_to_contiguous_id")
        if mapping is None:
            return list(range(len(self._metadata.thing_classes)))
        return [k for k, _ in sorted(mapping.items(), key=lambda kv: kv[1])]

    def _category_dicts(self) -> list[dict]:
        """(C,) LVIS-style category dicts ``{"id" (dataset id), "name", "frequency",
        "image_count"}`` by contiguous id, from the metadata (needs ``class_frequency``)."""
        meta = self._metadata
        image_count = {c["id"]: c["image_count"] for c in meta.get("class_image_count", [])}
        return [
            {"id": cid, "name": name, "frequency": freq, "image_count": image_count.get(cid, 0)}
            for cid, name, freq in zip(
                self._dataset_category_ids(), meta.thing_classes, meta.class_frequency
            )
        ]

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        """Detectron2's metrics, plus "APr", "APc", "APf" (percent; NaN for a group without
        categories with ground truth) for boxes and masks when the metadata has
        ``class_frequency``."""
        results = super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
        if iou_type == "keypoints" or self._metadata.get("class_frequency") is None:
            return results
        if coco_eval is None:  # no predictions: NaN, as Detectron2's other metrics
            results.update({f"AP{g}": float("nan") for g in FREQUENCY_GROUPS})
            return results
        # precision: [T IoU, R recall, K categories (params.catIds), A areas, M maxDets]; the
        # last maxDets is the one AP uses (100 by default), as in Detectron2's per-category AP
        rows = per_category_ap(
            coco_eval.eval["precision"][..., -1], coco_eval.params.catIds, self._category_dicts()
        )
        groups = per_group_summary(rows)
        group_ap = {f"AP{g}": 100 * groups[g]["ap"] for g in FREQUENCY_GROUPS}
        counts = "/".join(str(groups[g]["num_categories"]) for g in FREQUENCY_GROUPS)
        self._logger.info(
            f"{iou_type} AP per frequency group ({counts} categories with ground truth): \n"
            + create_small_table(group_ap)
        )
        results.update(group_ap)
        self._report_per_category(rows, iou_type, coco_eval.params.imgIds)
        return results

    def _report_per_category(self, rows: list[dict], iou_type: str, img_ids):
        """AP of every category with its frequency group and train image count: a CSV/JSON
        report in the output folder (with the non-crowd GT instances of the evaluated images
        ``img_ids``; crowd regions are only ignored by COCOeval) and, during training, one
        TensorBoard histogram per group."""
        if self._output_dir:
            evaluated = set(img_ids)
            counts = count_instances(
                a
                for a in self._coco_api.dataset["annotations"]
                if a["image_id"] in evaluated and not a.get("iscrowd", 0)
            )
            paths = write_per_category_report(
                rows,
                self._output_dir,
                prefix=f"per_category_ap_{iou_type}",
                val_instance_counts=counts,
            )
            self._logger.info(f"Per-category AP written to {paths['csv']}")
        put_group_histograms(rows, iou_type)
