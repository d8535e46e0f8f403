"""PAA: Probabilistic Anchor Assignment (Kim & Lee, ECCV 2020), the EFL paper's Tables 1 and 6.

PAA is ATSS with a different answer to "which anchors are positive" and a different test-time
score. It keeps the ATSS head (its quality branch predicts the IoU), the ATSS losses and the
pluggable ``cls_loss``, so it is a subclass of :class:`ATSS`:

* **Assignment** (per image, from the model's own predictions, no gradient): anchors with IoU
  >= 0.1 with some GT (plus each GT's best anchors) are candidates of their best GT. Each candidate
  costs focal loss (summed over classes) + ``box_loss_weight`` x GIoU loss of its decoded box.
  Per GT, the ``topk`` cheapest candidates of every level are pooled, a two-component 1-D Gaussian
  mixture is fitted to their costs, and the cheapest candidates of the low-cost component, up to
  the most likely one, become positives; every other anchor is background.
* **Inference**: score sqrt(sigmoid(cls) * sigmoid(iou)), the ATSS decoding and NMS, then score
  voting (each kept box becomes a weighted mean of the overlapping same-class candidates).

Constants follow mmdetection's PAA port (``paa_head.py``; see ``docs/detectors.md`` §3).
"""

import math

import torch
from detectron2.config import configurable
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, Instances, pairwise_iou
from fvcore.nn import giou_loss
from torch import Tensor
from torch.nn import functional as F

from .atss import ATSS
from .config import register_meta_arch

__all__ = ["PAA", "fit_two_gaussians", "score_voting", "summed_focal_loss"]


def _weighted_log_prob(x: Tensor, means: Tensor, variances: Tensor, log_weights: Tensor) -> Tensor:
    """log(w_k N(x | mu_k, var_k)) for x (G, K) and per-row parameters (G, 2) -> (G, K, 2)."""
    x = x.unsqueeze(-1)
    means, variances, log_weights = (t.unsqueeze(1) for t in (means, variances, log_weights))
    return (
        -0.5 * (math.log(2 * math.pi) + (x - means) ** 2 / variances + variances.log())
        + log_weights
    )


@torch.no_grad()
def fit_two_gaussians(
    values: Tensor,
    valid: Tensor,
    *,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    max_iter: int = 100,
) -> tuple[Tensor, Tensor]:
    """
    Fit a mixture of two 1-D Gaussians to each row's valid values, all rows at once, by the EM
    that PAA runs through ``sklearn.mixture.GaussianMixture(2, weights_init=[.5, .5],
    means_init=[min, max], precisions_init=1)``: same start, same updates (``reg_covar`` added to
    the variances), and a row stops when its mean log-likelihood changes by less than ``tol``
    (or after ``max_iter`` iterations). Computed in float64.

    Args:
        values: (G, K) samples, one mixture per row.
        valid: (G, K) bool, which entries of a row are samples; at least 2 per row.

    Returns:
        component: (G, K) int64, the most likely component of each sample; 0 is the component
            started at the row's minimum.
        log_likelihood: (G, K) float64, log p(x) under the fitted mixture (sklearn's
            ``score_samples``). Entries where ``valid`` is False are meaningless.
    """
    if values.shape != valid.shape or values.dim() != 2:
        raise ValueError(f"values and valid must be (G, K), got {values.shape}, {valid.shape}.")
    counts = valid.sum(1)
    if values.shape[0] and counts.min() < 2:
        raise ValueError("fit_two_gaussians: every row needs at least 2 valid values.")
    x = torch.where(valid, values.double(), 0.0)
    mask = valid.double().unsqueeze(-1)  # (G, K, 1)
    n = counts.double()
    means = torch.stack(
        [
            torch.where(valid, x, math.inf).amin(1),
            torch.where(valid, x, -math.inf).amax(1),
        ],
        dim=1,
    )  # (G, 2)
    variances = torch.ones_like(means)
    log_weights = torch.full_like(means, math.log(0.5))
    lower_bound = torch.full_like(n, -math.inf)
    active = torch.ones_like(n, dtype=torch.bool)
    eps = torch.finfo(torch.float64).eps
    for _ in range(max_iter):
        # E-step with the current parameters; its mean log-likelihood is the convergence test.
        log_prob = _weighted_log_prob(x, means, variances, log_weights)
        log_norm = log_prob.logsumexp(-1)  # (G, K)
        resp = (log_prob - log_norm.unsqueeze(-1)).exp() * mask
        # M-step (sklearn's: nk gets 10 eps, the diagonal-covariance formula, weights nk / sum).
        nk = resp.sum(1) + 10 * eps
        new_means = (resp * x.unsqueeze(-1)).sum(1) / nk
        new_variances = (resp * x.unsqueeze(-1) ** 2).sum(1) / nk - new_means**2 + reg_covar
        new_log_weights = (nk / nk.sum(1, keepdim=True)).log()
        # Rows that converged earlier keep their parameters: each is its own sklearn fit.
        update = active.unsqueeze(1)
        means = torch.where(update, new_means, means)
        variances = torch.where(update, new_variances, variances)
        log_weights = torch.where(update, new_log_weights, log_weights)
        bound = (log_norm * mask.squeeze(-1)).sum(1) / n
        converged = (bound - lower_bound).abs() < tol
        lower_bound = torch.where(active, bound, lower_bound)
        active = active & ~converged
        if not bool(active.any()):
            break
    log_prob = _weighted_log_prob(x, means, variances, log_weights)
    return log_prob.argmax(-1), log_prob.logsumexp(-1)


@torch.no_grad()
def summed_focal_loss(
    logits: Tensor,
    gt_classes: Tensor,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
    max_chunk_elements: int = 1 << 22,
) -> Tensor:
    """
    Per row, the sigmoid focal loss summed over classes with a one-hot target:
    sum_c (1 - alpha) p_c^gamma softplus(z_c), with the target class's term replaced by
    alpha (1 - p_y)^gamma softplus(-z_y) (p = sigmoid(z)). Computed in float32, in row chunks of at
    most ``max_chunk_elements`` logits, without materialising the one-hot target: the PAA cost
    of thousands of candidates x 1203 classes stays within a few small buffers.

    Args:
        logits: (P, C); gt_classes: (P,) int64 in [0, C).

    Returns:
        (P,) float32.
    """
    rows = max(1, max_chunk_elements // max(1, logits.shape[1]))
    negatives = torch.cat(
        [
            (torch.sigmoid(z.float()).pow_(gamma) * F.softplus(z.float())).sum(1)
            for z in logits.split(rows)  # an empty (0, C) tensor splits into one empty chunk
        ]
    )
    z = logits.gather(1, gt_classes[:, None]).squeeze(1).float()
    p = torch.sigmoid(z)
    positive = alpha * (1 - p).pow(gamma) * F.softplus(-z)
    return (1 - alpha) * (negatives - p.pow(gamma) * F.softplus(z)) + positive


def _group_sort(groups: Tensor, costs: Tensor) -> tuple[Tensor, Tensor]:
    """Permutation that sorts by (group, cost), and each sorted element's rank in its group."""
    order = costs.argsort(stable=True)
    order = order[groups[order].argsort(stable=True)]
    sorted_groups = groups[order]
    rank = torch.arange(len(order), device=groups.device)
    return order, rank - torch.searchsorted(sorted_groups, sorted_groups)


@torch.no_grad()
def score_voting(
    detections: Instances, candidates: Instances, sigma: float = 0.025, min_iou: float = 0.01
) -> Tensor:
    """
    PAA's score voting: each detection's box becomes the average of the candidate boxes of its
    class that overlap it by IoU > ``min_iou``, weighted by score * exp(-(1 - IoU)^2 / sigma).
    Scores are unchanged.

    Args:
        detections: K Instances (after NMS) with pred_boxes, pred_classes.
        candidates: M Instances (before NMS) with pred_boxes, scores, pred_classes.

    Returns:
        (K, 4) voted boxes; a detection without any weighted candidate keeps its box.
    """
    boxes = candidates.pred_boxes.tensor
    iou = pairwise_iou(detections.pred_boxes, candidates.pred_boxes).to(boxes.dtype)  # (K, M)
    voters = (detections.pred_classes[:, None] == candidates.pred_classes[None]) & (iou > min_iou)
    weights = torch.exp(-((1 - iou) ** 2) / sigma) * candidates.scores[None].to(iou) * voters
    total = weights.sum(1, keepdim=True)
    voted = weights @ boxes / total.clamp_min(1e-30)
    return torch.where(total > 0, voted, detections.pred_boxes.tensor)


@register_meta_arch
class PAA(ATSS):
    """
    PAA (:paper:`PAA`): :class:`ATSS` with probabilistic anchor assignment and score voting, see
    the module docstring. The losses are ATSS's with ``quality="iou"``; the PAA configs weigh the
    box loss 1.3 and the IoU loss 0.5 and decode boxes with weights (10, 10, 5, 5), as mmdetection.

    The assignment cost always uses sigmoid focal loss (``focal_loss_alpha``,
    ``focal_loss_gamma``), whatever ``cls_loss`` is trained: a stateful loss (EFL, EQLv2&Focal)
    must not update its statistics from the assignment, and every loss variant then assigns with
    the same rule.
    """

    #: ``label_anchors`` also takes the (N, R, C) logits and (N, R, 4) deltas of all anchors
    assigns_from_predictions = True

    @configurable
    def __init__(
        self,
        *,
        initial_matcher: Matcher | None = None,
        topk: int = 9,
        score_voting: bool = True,
        score_voting_sigma: float = 0.025,
        **kwargs,
    ):
        """
        Args:
            initial_matcher: detectron2 :class:`Matcher` on the (GT x anchor) IoU matrix whose
                label-1 anchors are the candidates; default ``Matcher([0.1], [0, 1],
                allow_low_quality_matches=True)``.
            topk: candidates kept per GT and pyramid level before the mixture fit (PAA: 9).
            score_voting, score_voting_sigma: test-time box voting and its sigma (PAA: 0.025).
            kwargs: the :class:`ATSS` arguments; ``quality`` must be "iou" and ``anchor_matcher``
                is not used (PAA has its own assignment).
        """
        if kwargs.get("anchor_matcher") is not None:
            raise ValueError("PAA assigns anchors itself: set initial_matcher, not anchor_matcher.")
        if kwargs.setdefault("quality", "iou") != "iou":
            raise ValueError(f"PAA predicts IoU: quality must be 'iou', got {kwargs['quality']!r}.")
        if topk < 1:
            raise ValueError(f"PAA: topk must be >= 1, got {topk}.")
        super().__init__(**kwargs)
        self.anchor_matcher = None
        self.initial_matcher = initial_matcher or Matcher(
            [0.1], [0, 1], allow_low_quality_matches=True
        )
        self.topk = topk
        self.score_voting = score_voting
        self.score_voting_sigma = score_voting_sigma

    @classmethod
    def from_config(cls, cfg):
        args = super().from_config(cfg)
        del args["anchor_matcher"]
        args.update(
            initial_matcher=Matcher(
                [cfg.MODEL.PAA.IOU_THRESHOLD], [0, 1], allow_low_quality_matches=True
            ),
            topk=cfg.MODEL.PAA.TOPK,
            score_voting=cfg.MODEL.PAA.SCORE_VOTING,
        )
        return args

    # ------------------------------------------------------------------ training

    def forward_training(self, images, features, predictions, gt_instances):
        """:meth:`ATSS.forward_training`, assigning from the predictions of all levels."""
        pred_logits, pred_deltas, pred_quality = self.transposed_predictions(predictions)
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(
            anchors, gt_instances, torch.cat(pred_logits, dim=1), torch.cat(pred_deltas, dim=1)
        )
        return self.losses(anchors, pred_logits, gt_labels, pred_deltas, gt_boxes, pred_quality)

    @torch.no_grad()
    def label_anchors(
        self,
        anchors: list[Boxes],
        gt_instances: list[Instances],
        pred_logits: Tensor,
        pred_deltas: Tensor,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """
        Args:
            anchors: L Boxes, the anchors of each level (same for every image).
            gt_instances: N Instances with ``gt_boxes`` and ``gt_classes``.
            pred_logits, pred_deltas: (N, R, C) / (N, R, 4), the predictions of all R anchors,
                levels concatenated.

        Returns:
            as :meth:`ATSS.label_anchors`: N (R,) labels (C = background) and N (R, 4) boxes.
        """
        all_anchors = Boxes.cat(anchors)
        levels = torch.cat(
            [torch.full((len(a),), i, device=all_anchors.device) for i, a in enumerate(anchors)]
        )
        gt_labels, matched_gt_boxes = [], []
        for inst, logits, deltas in zip(gt_instances, pred_logits, pred_deltas):
            labels = torch.full_like(levels, self.num_classes)
            boxes = torch.zeros_like(all_anchors.tensor)
            if len(inst) > 0:
                matched_idxs, match_labels = self.initial_matcher(
                    pairwise_iou(inst.gt_boxes, all_anchors)
                )
                candidates = (match_labels == 1).nonzero().squeeze(1)
                gt_idxs = matched_idxs[candidates]
                costs = self.assignment_costs(
                    logits[candidates],
                    deltas[candidates],
                    all_anchors.tensor[candidates],
                    inst.gt_classes[gt_idxs],
                    inst.gt_boxes.tensor[gt_idxs],
                )
                positive = self.select_positives(costs, gt_idxs, levels[candidates], len(inst))
                pos_anchors, pos_gts = candidates[positive], gt_idxs[positive]
                labels[pos_anchors] = inst.gt_classes[pos_gts]
                boxes[pos_anchors] = inst.gt_boxes.tensor[pos_gts]
            gt_labels.append(labels)
            matched_gt_boxes.append(boxes)
        return gt_labels, matched_gt_boxes

    @torch.no_grad()
    def assignment_costs(
        self,
        logits: Tensor,
        deltas: Tensor,
        anchors: Tensor,
        gt_classes: Tensor,
        gt_boxes: Tensor,
    ) -> Tensor:
        """
        Args:
            logits (P, C), deltas (P, 4), anchors (P, 4): predictions and anchors of P candidates.
            gt_classes (P,), gt_boxes (P, 4): the candidates' GTs.

        Returns:
            (P,) sum_c focal(logit_c, onehot_c) + box_loss_weight * (1 - GIoU(decoded box, GT)).
        """
        cls_cost = summed_focal_loss(
            logits, gt_classes, alpha=self.focal_loss_alpha, gamma=self.focal_loss_gamma
        )
        pred_boxes = self.box2box_transform.apply_deltas(deltas.float(), anchors)
        box_cost = giou_loss(pred_boxes, gt_boxes.float(), reduction="none")
        return cls_cost + self.box_loss_weight * box_cost

    @torch.no_grad()
    def select_positives(
        self, costs: Tensor, gt_idxs: Tensor, levels: Tensor, num_gts: int
    ) -> Tensor:
        """
        The PAA reassignment of one image's candidates.

        Args:
            costs (P,), gt_idxs (P,), levels (P,): each candidate's cost, GT and pyramid level.
            num_gts: G, the image's GT count.

        Returns:
            (P,) bool: for each GT, the ``topk`` cheapest candidates per level are pooled in
            ascending cost; a GT with fewer than 2 gets no positive; otherwise
            :func:`fit_two_gaussians` splits them and the component-0 candidates up to the one
            with the highest likelihood (in ascending cost) are positive.
        """
        positive = torch.zeros_like(costs, dtype=torch.bool)
        num_levels = int(levels.max()) + 1 if len(levels) else 1
        order, rank = _group_sort(gt_idxs * num_levels + levels, costs)
        pooled = order[rank < self.topk]
        order, rank = _group_sort(gt_idxs[pooled], costs[pooled])
        pooled, gts = pooled[order], gt_idxs[pooled][order]
        counts = torch.bincount(gts, minlength=num_gts)
        rows = counts >= 2  # GTs with a mixture to fit
        fitted = rows[gts]
        if not bool(fitted.any()):
            return positive
        # One row per GT (rows of GTs without a fit stay empty), samples in ascending cost.
        width = int(counts.max())
        values = costs.new_zeros((num_gts, width), dtype=torch.float64)
        valid = torch.zeros((num_gts, width), dtype=torch.bool, device=costs.device)
        pooled, gts, rank = pooled[fitted], gts[fitted], rank[fitted]
        values[gts, rank] = costs[pooled].double()
        valid[gts, rank] = True
        component, log_likelihood = fit_two_gaussians(values[rows], valid[rows])
        low = (component == 0) & valid[rows]
        best = torch.where(low, log_likelihood, -math.inf).argmax(1, keepdim=True)
        columns = torch.arange(width, device=costs.device)
        row_positive = torch.zeros_like(valid)
        row_positive[rows] = low & (columns <= best)  # all False in a row without component 0
        positive[pooled[row_positive[gts, rank]]] = True
        return positive

    # ------------------------------------------------------------------ inference

    def predict_scores(self, logits: Tensor, quality: Tensor) -> Tensor:
        """(A, C) logits and (A, 1) IoU logits -> sqrt(sigmoid(cls) * sigmoid(iou)), (A, C)."""
        return (logits.sigmoid() * quality.sigmoid()).sqrt()

    def inference_single_image(self, anchors, scores, deltas, image_size) -> Instances:
        """:meth:`ATSS.inference_single_image`, then score voting over the pre-NMS candidates."""
        candidates = self.pre_nms_candidates(anchors, scores, deltas, image_size)
        detections = self.nms(candidates)
        if self.score_voting and len(detections):
            detections.pred_boxes = Boxes(
                score_voting(detections, candidates, sigma=self.score_voting_sigma)
            )
        return detections
