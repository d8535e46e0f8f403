"""Detectron2's ``LVISEvaluator`` with the exact, sharded scoring of :mod:`.lvis_scoring`.

Replaces only lvis-api's scoring step, because it takes minutes and ~22 GiB at LVIS val scale; the
numbers are the same (Detectron2's own: ``dataloader.evaluator.scorer=detectron2``).

Everything but the scoring step is Detectron2's: ``process()`` (standard protocol), gathering
across ranks, the conversion to LVIS results with dataset category ids, the files it writes and
the results dict. The numbers equal Detectron2's when all GT images were evaluated; when the test
loader covers a subset of the images, the ground truth is restricted to that subset (Detectron2
counts the other images' GT as missed).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections import OrderedDict

import numpy as np
import torch
from detectron2.evaluation import LVISEvaluator as _D2LVISEvaluator
from detectron2.evaluation.lvis_evaluation import _evaluate_predictions_on_lvis
from detectron2.structures import BoxMode
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage, has_event_storage
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table

from ..categories import FREQUENCY_GROUPS, per_category_ap
from .lvis_inputs import PROTOCOLS, lvis_arrays, top_k_per_key
from .lvis_scoring import (
    combine_shards,
    metric_names,
    metrics_percent,
    plan_shards,
    score_lvis,
    score_shards,
)
from .per_category_report import write_per_category_report

__all__ = ["LVISEvaluator"]


class _TopKPerCategory:
    """The ``k`` highest-scoring detections of every category seen so far, as arrays.

    Pruning keeps what the final top-k keeps (ties go to the earlier detection), so memory stays
    about ``2 k`` per category however many detections the model emits.
    """

    def __init__(self, k: int):
        self.k = k
        self.parts: list = []
        self.size = 0
        self.budget = 2 * k

    def add(self, image_id: int, category: np.ndarray, box_xywh: np.ndarray, score: np.ndarray):
        self.parts.append((np.full(len(score), image_id, np.int64), category, box_xywh, score))
        self.size += len(score)
        if self.size > self.budget:
            self.prune()

    def arrays(self) -> dict:
        """``{"image_id", "category_id" (contiguous), "bbox", "score"}`` in arrival order."""
        if not self.parts:
            z = np.zeros(0)
            return {
                "image_id": z.astype(np.int64),
                "category_id": z.astype(np.int64),
                "bbox": np.zeros((0, 4)),
                "score": z,
            }
        img, cat, box, score = (np.concatenate(x) for x in zip(*self.parts))
        return {"image_id": img, "category_id": cat, "bbox": box, "score": score}

    def prune(self):
        a = self.arrays()
        keep = top_k_per_key(a["category_id"], a["score"], self.k)
        self.parts = [tuple(a[f][keep] for f in ("image_id", "category_id", "bbox", "score"))]
        self.size = len(keep)
        # grow the budget with the categories seen, so pruning stays rare
        self.budget = max(self.budget, 2 * self.size)


def put_group_histograms(rows: list[dict], task: str) -> None:
    """During training, one TensorBoard histogram of the per-category AP (percent) of each
    frequency group, ``<task>/per_category_AP_<group>``, from :func:`per_category_ap` rows
    (categories without ground truth left out); nothing outside a training loop."""
    if not has_event_storage():
        return
    storage = get_event_storage()
    for group in FREQUENCY_GROUPS:
        ap = [r["ap"] for r in rows if r["frequency"] == group and not math.isnan(r["ap"])]
        if ap:
            storage.put_histogram(f"{task}/per_category_AP_{group}", torch.tensor(ap) * 100)


class LVISEvaluator(_D2LVISEvaluator):
    """Detectron2's ``LVISEvaluator``, scored by :func:`efl_d2.evaluation.score_lvis`.

    Args (besides Detectron2's ``dataset_name, tasks, distributed, output_dir,
    max_dets_per_image``):
        num_workers: processes scoring category shards (0: in this process), per rank: in
            distributed evaluation every rank scores a share of the shards. The result does not
            depend on it; memory per process and wall time fall with it.
        protocol: "standard" (LVIS, ``max_dets_per_image``), "fixed" (AP-fixed) or "pooled"
            (AP-pool) of Dave et al. 2021. The last two keep the ``dets_per_category``
            highest-scoring detections of each category over the dataset while inference runs,
            with no per-image limit; a model must then emit more than 300 boxes per image (see
            ``efl_d2.engine.set_eval_protocol``, which ``tools/train_net.py
            --eval-protocol`` applies). Their results are reported under "bbox-fixed" /
            "bbox-pooled".
        dets_per_category: K of AP-fixed / AP-pool (10,000 for LVIS).
        scorer: "efl_d2" or "detectron2": Detectron2's own evaluation, unchanged (lvis-api,
            all GT images; "standard" protocol only), to compare against or fall back to.
    """

    def __init__(
        self,
        dataset_name,
        tasks=None,
        distributed=True,
        output_dir=None,
        *,
        max_dets_per_image=None,
        num_workers: int = 0,
        protocol: str = "standard",
        dets_per_category: int = 10000,
        scorer: str = "efl_d2",
    ):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
        if scorer not in ("efl_d2", "detectron2"):
            raise ValueError(f"scorer must be 'efl_d2' or 'detectron2', got {scorer!r}.")
        if scorer == "detectron2" and protocol != "standard":
            raise ValueError(f"protocol {protocol!r} needs scorer='efl_d2'.")
        if dets_per_category < 1:
            raise ValueError(f"dets_per_category must be >= 1, got {dets_per_category}.")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}.")
        super().__init__(
            dataset_name, tasks, distributed, output_dir, max_dets_per_image=max_dets_per_image
        )
        self._num_workers = num_workers
        self._protocol = protocol
        self._dets_per_category = dets_per_category
        self._scorer = scorer
        self._use_metadata_groups()

    def _use_metadata_groups(self):
        """Give the GT categories the frequency groups and train image counts of the dataset's
        metadata, where it has them: a user's LVIS-format data takes its groups from its training
        json (``efl_d2.data.custom``), and its val json may carry none. (mini-LVIS: the same
        values as its json's; Detectron2's LVIS v1 metadata has no groups.)"""
        groups = self._metadata.get("class_frequency", None)
        counts = self._metadata.get("class_image_count", None)
        if not groups:
            return
        for k, cid in enumerate(self._dataset_category_ids().tolist()):
            cat = self._lvis_api.cats.get(cid)
            if cat is not None:  # the same dicts as the api's dataset["categories"]
                cat["frequency"] = groups[k]
                if counts:
                    cat["image_count"] = counts[k]["image_count"]

    # ------------------------------------------------------------------ collecting

    def reset(self):
        super().reset()
        self._top_k = _TopKPerCategory(self._dets_per_category)

    def process(self, inputs, outputs):
        if self._protocol == "standard":
            return super().process(inputs, outputs)
        for inp, out in zip(inputs, outputs):
            instances = out["instances"].to(self._cpu_device)
            box = BoxMode.convert(
                instances.pred_boxes.tensor, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS
            ).numpy()
            self._top_k.add(
                inp["image_id"],
                instances.pred_classes.numpy().astype(np.int64),
                box.astype(np.float64),
                instances.scores.numpy().astype(np.float64),
            )
            # one (empty) entry per image, so the evaluated image set is known after gathering
            self._predictions.append({"image_id": inp["image_id"], "instances": []})

    def evaluate(self):
        """Detectron2's ``evaluate``; in distributed evaluation every rank then scores a share of
        the category shards (rank 0 gathers the predictions, sends the arrays to all, combines)."""
        if not self._ranks_share_scoring():
            return self._gather_and_evaluate()
        self._rank_job_sent = False
        results = self._gather_and_evaluate()
        if not comm.is_main_process():
            self._score_share(comm.all_gather(None)[0])
        elif not self._rank_job_sent:
            comm.all_gather(None)  # nothing to score: release the other ranks
        return results

    def _gather_and_evaluate(self):
        if self._protocol == "standard":
            return super().evaluate()
        # this rank's top-k travels with its per-image entries through detectron2's gathering
        self._top_k.prune()
        entry = {"image_id": None, "top_k": self._top_k.arrays()}
        self._predictions.append(entry)
        try:
            return super().evaluate()
        finally:
            self._predictions.remove(entry)

    def _ranks_share_scoring(self) -> bool:
        return self._distributed and self._scorer == "efl_d2" and comm.get_world_size() > 1

    def _score_share(self, job) -> list:
        """Score this rank's share of ``job = (arrays, shard bounds)``; rank 0 gets all shares."""
        if job is None:
            return []
        arrays, bounds = job
        rank, world = comm.get_rank(), comm.get_world_size()
        mine = score_shards(
            arrays, bounds[rank::world], protocol=self._protocol, num_workers=self._num_workers
        )
        cats = sum(hi - lo for lo, hi in bounds[rank::world])
        self._logger.info(f"Rank {rank} scored {cats} of {len(arrays.cat_ids)} categories.")
        shares = comm.gather(mine, dst=0)
        return [s for share in shares for s in share] if comm.is_main_process() else []

    # ------------------------------------------------------------------ scoring

    def _dataset_category_ids(self) -> np.ndarray:
        """(C,) LVIS category id of every contiguous class id."""
        meta = self._metadata
        if hasattr(meta, "thing_dataset_id_to_contiguous_id"):
            m = meta.thing_dataset_id_to_contiguous_id
            return np.array([k for k, _ in sorted(m.items(), key=lambda kv: kv[1])], np.int64)
        return np.arange(1, len(meta.thing_classes) + 1, dtype=np.int64)

    def _lvis_results(self, predictions) -> tuple:
        """(results as the scorer takes them, evaluated image ids, number of detections)."""
        image_ids = sorted({p["image_id"] for p in predictions if p["image_id"] is not None})
        if self._protocol == "standard":
            results = list(itertools.chain(*[p["instances"] for p in predictions]))
            ids = self._dataset_category_ids()
            for r in results:  # as detectron2: contiguous -> dataset category ids
                r["category_id"] = int(ids[r["category_id"]])
            return results, image_ids, len(results)
        parts = [p["top_k"] for p in predictions if p["image_id"] is None]
        merged = {f: np.concatenate([p[f] for p in parts]) for f in parts[0]}
        keep = top_k_per_key(merged["category_id"], merged["score"], self._dets_per_category)
        results = {f: v[keep] for f, v in merged.items()}
        results["category_id"] = self._dataset_category_ids()[results["category_id"]]
        return results, image_ids, len(keep)

    def _save_results(self, results):
        if not self._output_dir:
            return
        if isinstance(results, dict):
            results = [
                {"image_id": int(i), "category_id": int(c), "bbox": b.tolist(), "score": float(s)}
                for i, c, b, s in zip(
                    results["image_id"], results["category_id"], results["bbox"], results["score"]
                )
            ]
        path = os.path.join(self._output_dir, "lvis_instances_results.json")
        self._logger.info(f"Saving results to {path}")
        with PathManager.open(path, "w") as f:
            f.write(json.dumps(results))

    def _eval_predictions(self, predictions):
        """Fill ``self._results`` with the box metrics (and, for masks, Detectron2's)."""
        if self._scorer == "detectron2":
            return super()._eval_predictions(predictions)
        self._logger.info("Preparing results in the LVIS format ...")
        results, image_ids, num_dets = self._lvis_results(predictions)
        self._save_results(results)
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return
        gt_images = len(self._lvis_api.get_img_ids())
        if len(image_ids) < gt_images:
            self._logger.info(
                f"Evaluating on the {len(image_ids)} of {gt_images} images that were run; the "
                "ground truth of the others is left out."
            )
        tasks = ["bbox"]
        if self._protocol == "standard":
            tasks = sorted(self._tasks or self._tasks_from_predictions(results))
        for task in tasks:
            if task != "bbox":  # masks: Detectron2's lvis-api path
                self._results[task] = _evaluate_predictions_on_lvis(
                    self._lvis_api,
                    results,
                    task,
                    self._max_dets_per_image,
                    self._metadata.get("thing_classes"),
                )
                continue
            key = "bbox" if self._protocol == "standard" else f"bbox-{self._protocol}"
            self._results[key] = self._score_boxes(results, image_ids, num_dets)

    def _score_boxes(self, results, image_ids, num_dets) -> dict:
        if num_dets == 0:  # as detectron2
            self._logger.warning("No predictions from the model!")
            return {m: float("nan") for m in metric_names(self._protocol)}
        max_dets = 300 if self._max_dets_per_image is None else self._max_dets_per_image
        self._logger.info(
            f"Evaluating {num_dets} detections, protocol {self._protocol!r}"
            + (
                f", at most {max_dets} per image"
                if self._protocol == "standard"
                else f", top {self._dets_per_category} per category"
            )
            + f", {self._num_workers} worker process(es) ..."
        )
        arrays = lvis_arrays(
            self._lvis_api,
            results,
            protocol=self._protocol,
            max_dets_per_image=max_dets,
            dets_per_category=self._dets_per_category,
            image_ids=image_ids,
        )
        if self._ranks_share_scoring():
            world = comm.get_world_size()
            bounds = plan_shards(arrays, num_workers=max(1, self._num_workers) * world)
            comm.all_gather((arrays, bounds))  # to every rank; see evaluate()
            self._rank_job_sent = True
            shards = self._score_share((arrays, bounds))
            scores = combine_shards(arrays, shards, protocol=self._protocol)
        else:
            scores = score_lvis(arrays, protocol=self._protocol, num_workers=self._num_workers)
        if self._protocol != "pooled":
            scores.lvis_eval().print_results()
        metrics = metrics_percent(scores)
        self._logger.info(
            f"Evaluation results for bbox ({self._protocol}): \n" + create_small_table(metrics)
        )
        if self._protocol != "pooled":
            self._report_per_category(scores, arrays)
        return OrderedDict(metrics)

    def _report_per_category(self, scores, arrays):
        """AP of every category with its frequency group and train image count: a CSV/JSON
        report in the output folder and, during training, one TensorBoard histogram per group."""
        rows = per_category_ap(
            scores.precision, scores.cat_ids.tolist(), self._lvis_api.dataset["categories"]
        )
        if self._output_dir:
            counts = np.bincount(arrays.gt_cat, minlength=len(arrays.cat_ids))
            paths = write_per_category_report(
                rows,
                self._output_dir,
                prefix=f"per_category_ap_bbox{'' if self._protocol == 'standard' else '_fixed'}",
                val_instance_counts=dict(zip(arrays.cat_ids.tolist(), counts.tolist())),
            )
            self._logger.info(f"Per-category AP written to {paths['csv']}")
        put_group_histograms(rows, "bbox")
