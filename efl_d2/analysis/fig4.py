"""Paper Fig. 4: per category, the mean predicted probability sigmoid(logit_j) of its positive
samples and of its negative samples, for one or more checkpoints (focal vs EFL side by side).

Samples and labels are exactly those of a training step: anchors from the features, labels from
the model's ``label_anchors`` (positive for j when assigned to a box of j, negative otherwise,
ignored ones left out).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..categories import FREQUENCY_COLORS

__all__ = ["Fig4Data", "mean_scores_per_category", "plot_fig4"]


@dataclass
class Fig4Data:
    """Mean predicted probability per category; arrays indexed by contiguous class id.

    ``pos_mean[j]`` = mean of sigmoid(logit_j) over the positive samples of j (NaN if none);
    ``neg_mean[j]`` over its negative samples; ``pos_count`` / ``neg_count`` the sample counts.
    """

    pos_mean: np.ndarray
    neg_mean: np.ndarray
    pos_count: np.ndarray
    neg_count: np.ndarray
    num_images: int


@torch.no_grad()
def mean_scores_per_category(
    model: torch.nn.Module, dataset_dicts: Sequence[dict], mapper: Callable
) -> Fig4Data:
    """Mean sigmoid classification score of positive and negative samples per category.

    Args:
        model: one of efl_d2's dense detectors (ATSS, PAA, PluggableRetinaNet, PluggableFCOS):
            ``label_anchors(anchors, gt)``, or ``label_anchors(anchors, gt, pred_logits,
            pred_deltas)`` for a model that assigns from its predictions (PAA); the first two
            head outputs must be the class logits (N, A*C, H, W) and box deltas (N, A*4, H, W).
        dataset_dicts: the images to score (with annotations).
        mapper: maps a dataset dict to ``{"image", "instances"}`` (see
            :func:`efl_d2.analysis.scoring_mapper_from_config`).

    Labels come from ``model.label_anchors``: 0..C-1 positive, C background, -1 ignored.
    """
    from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K

    # PAA assigns from the predictions; ATSS, RetinaNet and FCOS from the boxes alone
    from_predictions = getattr(model, "assigns_from_predictions", False)
    was_training = model.training
    model.eval()
    num_classes = int(model.num_classes)
    device = model.pixel_mean.device
    pos_sum = torch.zeros(num_classes, dtype=torch.float64)
    all_sum = torch.zeros(num_classes, dtype=torch.float64)
    pos_cnt = torch.zeros(num_classes, dtype=torch.int64)
    valid_cnt = 0
    n = 0
    try:
        for record in dataset_dicts:
            inputs = mapper(record)
            if inputs is None:
                continue
            images = model.preprocess_image([inputs])
            features = model.backbone(images.tensor)
            features = [features[f] for f in model.head_in_features]
            head = model.head(features)
            logits = torch.cat([permute_to_N_HWA_K(x, num_classes) for x in head[0]], dim=1)
            deltas = torch.cat([permute_to_N_HWA_K(x, 4) for x in head[1]], dim=1)
            anchors = model.anchor_generator(features)
            gt = [inputs["instances"].to(device)]
            predictions = {"pred_logits": logits, "pred_deltas": deltas} if from_predictions else {}
            labels = model.label_anchors(anchors, gt, **predictions)[0][0]
            logits = logits[0]
            probs = logits.sigmoid().double().cpu()
            labels = labels.cpu()
            valid = labels >= 0
            fg = valid & (labels < num_classes)
            all_sum += probs[valid].sum(dim=0)
            pos_sum.index_add_(0, labels[fg], probs[fg, labels[fg]])
            pos_cnt += torch.bincount(labels[fg], minlength=num_classes)[:num_classes]
            valid_cnt += int(valid.sum())
            n += 1
    finally:
        model.train(was_training)
    neg_sum = all_sum - pos_sum
    neg_cnt = valid_cnt - pos_cnt
    with np.errstate(invalid="ignore", divide="ignore"):
        pos_mean = (pos_sum / pos_cnt.double()).numpy()
        neg_mean = (neg_sum / neg_cnt.double()).numpy()
    pos_mean[pos_cnt.numpy() == 0] = np.nan
    neg_mean[neg_cnt.numpy() == 0] = np.nan
    return Fig4Data(pos_mean, neg_mean, pos_cnt.numpy(), neg_cnt.numpy(), n)


def plot_fig4(
    panels: dict,
    order: Sequence[int],
    output: str,
    *,
    frequency: Sequence[str] | None = None,
) -> dict:
    """Save Fig. 4 as a PNG: one panel per checkpoint (e.g. {"focal": data, "EFL": data}),
    mean positive and mean negative score per category, categories in ``order``.

    Returns:
        ``{panel: {"positive": (x, y), "negative": (x, y)}}`` read back from the drawn lines,
        x = rank in ``order``.
    """
    from matplotlib.figure import Figure

    order = np.asarray(order)
    # a Figure of its own, not pyplot's: the caller's backend (e.g. a notebook's) is left alone
    fig = Figure(figsize=(6 * len(panels), 4))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)
    drawn = {}
    x = np.arange(len(order))
    for ax, (name, data) in zip(axes[0], panels.items()):
        pos = ax.plot(
            x, data.pos_mean[order], "o-", markersize=3, color="tab:green", label="positive samples"
        )[0]
        neg = ax.plot(
            x,
            data.neg_mean[order],
            "s-",
            markersize=3,
            color="tab:purple",
            label="negative samples",
        )[0]
        if frequency is not None:
            letters = [frequency[i] for i in order]
            for i, letter in enumerate(letters):
                if letter == "r":
                    ax.axvspan(i - 0.5, i + 0.5, color=FREQUENCY_COLORS["r"], alpha=0.08, lw=0)
        ax.set_title(f"{name}: mean predicted score")
        ax.set_xlabel("category index, sorted by frequency (rare shaded)")
        ax.grid(alpha=0.3)
        drawn[name] = {
            "positive": (
                np.asarray(pos.get_xdata()),
                np.asarray(pos.get_ydata(), dtype=np.float64),
            ),
            "negative": (
                np.asarray(neg.get_xdata()),
                np.asarray(neg.get_ydata(), dtype=np.float64),
            ),
        }
    axes[0][0].set_ylabel("mean sigmoid score")
    axes[0][0].legend(loc="best")
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    return drawn
