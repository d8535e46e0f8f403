"""detectron2's RetinaNet and FCOS with a pluggable classification loss (EFL paper Tables 1 and 6).

Each subclass only replaces the classification term of the parent's ``losses``; matching, box
and centerness losses, the EMA normaliser and inference are the parent's. With ``cls_loss=None``
they are exactly the parent. FCOS* of the paper (centre sampling) is detectron2's FCOS, which
always samples within ``center_sampling_radius`` (1.5) strides of the GT centre.
"""

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.box_regression import _dense_box_regression_loss
from detectron2.modeling.meta_arch.fcos import FCOS
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from .candidates import decode_candidates
from .config import build_cls_loss, register_meta_arch
from .divergence import check_finite_box_deltas

__all__ = ["PluggableFCOS", "PluggableRetinaNet"]


class _PluggableInference:
    """What both pluggable detectors add to their parent's inference: the finite-deltas check
    and AP-fixed's per-class candidates when ``test_topk_per_class`` > 0 (otherwise the parent's
    candidates, unchanged)."""

    def forward_inference(self, images, features, predictions):
        check_finite_box_deltas(predictions[1])  # (box deltas per level)
        return super().forward_inference(images, features, predictions)

    def _decode_per_level_predictions(self, *args):
        if not self.test_topk_per_class:
            return super()._decode_per_level_predictions(*args)
        return decode_candidates(self, *args)


def _flat_logits(pred_logits: list[Tensor]) -> Tensor:
    """L tensors (N, R_l, C) -> (N*R, C), rows (image, level, location, anchor) like the labels."""
    return cat(pred_logits, dim=1).flatten(0, 1)


def _shared_loss_terms(
    detector,
    anchors: list,
    gt_labels: list[Tensor],
    pred_anchor_deltas: list[Tensor],
    gt_boxes: list[Tensor],
    initial_normalizer: float,
    **box_loss_type,
) -> tuple[Tensor, Tensor, float, Tensor]:
    """What the parents' ``losses`` share: stacked labels (N, R), the foreground mask,
    detectron2's EMA loss normaliser (initial value 100 for RetinaNet, 300 for FCOS) and the
    summed box regression loss (``box_loss_type``: the keywords of
    ``_dense_box_regression_loss``)."""
    gt_labels = torch.stack(gt_labels)  # (N, R)
    pos_mask = (gt_labels >= 0) & (gt_labels != detector.num_classes)
    num_pos_anchors = pos_mask.sum().item()
    get_event_storage().put_scalar("num_pos_anchors", num_pos_anchors / len(gt_labels))
    normalizer = detector._ema_update(
        "loss_normalizer", max(num_pos_anchors, 1), initial_normalizer
    )
    loss_box_reg = _dense_box_regression_loss(
        anchors, detector.box2box_transform, pred_anchor_deltas, gt_boxes, pos_mask, **box_loss_type
    )
    return gt_labels, pos_mask, normalizer, loss_box_reg


@register_meta_arch
class PluggableRetinaNet(_PluggableInference, RetinaNet):
    """
    :class:`RetinaNet` whose classification loss is ``cls_loss(logits (M, C), gt_classes (M,),
    normalizer)`` (gt_classes 0..C-1 fg, C bg, -1 ignored; returns the normalised scalar).
    yacs: ``MODEL.META_ARCHITECTURE = "PluggableRetinaNet"`` and ``MODEL.CLS_LOSS`` (see
    :func:`efl_d2.modeling.add_atss_config`).
    """

    @configurable
    def __init__(
        self, *, cls_loss: nn.Module | None = None, test_topk_per_class: int = 0, **kwargs
    ):
        """
        Args:
            cls_loss: the classification loss; None = RetinaNet's sigmoid focal loss.
            test_topk_per_class: 0 (Detectron2's candidates) or the best anchors per class and
                level kept before NMS (for AP-fixed).
            kwargs: arguments of :class:`RetinaNet`.
        """
        super().__init__(**kwargs)
        self.cls_loss = cls_loss
        self.test_topk_per_class = test_topk_per_class

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["cls_loss"] = build_cls_loss(cfg, ret["num_classes"])
        return ret

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        check_finite_box_deltas(pred_anchor_deltas)
        if self.cls_loss is None:
            return super().losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        # Same normaliser and box term as RetinaNet.losses; only loss_cls differs.
        gt_labels, _, normalizer, loss_box_reg = _shared_loss_terms(
            self,
            anchors,
            gt_labels,
            pred_anchor_deltas,
            gt_boxes,
            100,
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        return {
            "loss_cls": self.cls_loss(_flat_logits(pred_logits), gt_labels.flatten(), normalizer),
            "loss_box_reg": loss_box_reg / normalizer,
        }


class PluggableFCOS(_PluggableInference, FCOS):
    """
    :class:`FCOS` (with centre sampling, i.e. the paper's FCOS*) whose classification loss is
    ``cls_loss(logits (M, C), gt_classes (M,), normalizer)``. LazyConfig only, like FCOS.
    """

    def __init__(
        self, *, cls_loss: nn.Module | None = None, test_topk_per_class: int = 0, **kwargs
    ):
        """
        Args:
            cls_loss: the classification loss; None = FCOS's sigmoid focal loss.
            test_topk_per_class: as :class:`PluggableRetinaNet`'s.
            kwargs: arguments of :class:`FCOS`.
        """
        super().__init__(**kwargs)
        self.cls_loss = cls_loss
        self.test_topk_per_class = test_topk_per_class

    def losses(
        self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, pred_centerness
    ) -> dict[str, Tensor]:
        check_finite_box_deltas(pred_anchor_deltas)
        if self.cls_loss is None:
            return super().losses(
                anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, pred_centerness
            )
        # Same normaliser, box and centerness terms as FCOS.losses; only the cls term differs.
        gt_labels, pos_mask, normalizer, loss_box_reg = _shared_loss_terms(
            self, anchors, gt_labels, pred_anchor_deltas, gt_boxes, 300, box_reg_loss_type="giou"
        )
        ctrness_targets = self.compute_ctrness_targets(anchors, gt_boxes)  # (N, R)
        pred_centerness = torch.cat(pred_centerness, dim=1).squeeze(dim=2)  # (N, R)
        ctrness_loss = nn.functional.binary_cross_entropy_with_logits(
            pred_centerness[pos_mask], ctrness_targets[pos_mask], reduction="sum"
        )
        return {
            "loss_fcos_cls": self.cls_loss(
                _flat_logits(pred_logits), gt_labels.flatten(), normalizer
            ),
            "loss_fcos_loc": loss_box_reg / normalizer,
            "loss_fcos_ctr": ctrness_loss / normalizer,
        }
