"""ATSS one-stage detector with the "improved baseline" options of the EFL paper (CVPR 2022).

Original ATSS: one anchor scale [8], topk 9, centerness branch. Improved baseline (paper Sec. 4.2,
"IB"/"IA"): anchor scales [6, 8], topk 18, an IoU branch replacing centerness, cls prior 0.001.
Losses and inference: ``docs/detectors.md`` §2; where this port deliberately differs from the
official (United-Perception) code: ``docs/official_conventions.md`` §3 (the official test
conventions are :class:`efl_d2.official.OfficialATSS`).
"""

import math
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, batched_nms, get_norm, shapes_to_tensor
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone import Backbone, build_backbone
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.structures.boxes import matched_pairwise_iou
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from fvcore.nn import giou_loss, sigmoid_focal_loss_jit
from torch import Tensor, nn
from torch.nn import functional as F

from .atss_matcher import ATSSMatcher
from .candidates import decode_candidates, topk_count
from .config import build_cls_loss, register_meta_arch
from .divergence import check_finite_box_deltas

__all__ = ["ATSS", "ATSSHead", "clip_to_image"]

QUALITY_KINDS = ("iou", "centerness")


class ATSSHead(nn.Module):
    """
    ATSS head: separate classification and box towers, each ``len(conv_dims)`` x
    (conv3x3 + norm + ReLU), shared by all levels, and three 3x3 output convs: class logits
    (A*C channels, anchor-major: channel = a*C + c), box deltas (A*4) and a quality logit (A) read
    from the box tower (IoU branch or centerness, the meta-arch decides the target).

    Module names follow detectron2's RetinaNetHead (cls_subnet, bbox_subnet, cls_score, bbox_pred)
    plus ``quality_pred``. With norm, tower convs have no bias (the norm's shift replaces it).
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: list[ShapeSpec],
        num_classes: int,
        num_anchors: int,
        conv_dims: Sequence[int] = (256, 256, 256, 256),
        norm: str = "GN",
        prior_prob: float = 0.01,
    ):
        """
        Args:
            input_shape: shapes of the input levels; all must have the same channel count.
            num_classes: C, foreground classes (sigmoid, no background logit).
            num_anchors: A, anchors per location (the anchor generator's ``num_cell_anchors``).
            conv_dims: output channels of each tower conv; empty = no tower.
            norm: detectron2 norm name for the towers ("GN" = GroupNorm(32)), or "" for none.
            prior_prob: initial foreground probability of every class logit (paper: 0.001).
        """
        super().__init__()
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(
                f"ATSSHead needs equal channels on all levels, got {sorted(channels)}."
            )
        in_channels = channels.pop()
        self._num_features = len(input_shape)
        self.num_classes = num_classes
        self.num_anchors = num_anchors

        self.cls_subnet = self._tower(in_channels, conv_dims, norm)
        self.bbox_subnet = self._tower(in_channels, conv_dims, norm)
        out_channels = conv_dims[-1] if len(conv_dims) else in_channels
        self.cls_score = nn.Conv2d(out_channels, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(out_channels, num_anchors * 4, 3, padding=1)
        self.quality_pred = nn.Conv2d(out_channels, num_anchors, 3, padding=1)

        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, mean=0.0, std=0.01)
                if layer.bias is not None:
                    nn.init.constant_(layer.bias, 0.0)
        # Focal-loss prior: sigmoid(bias) = prior_prob, so training starts with few false positives.
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    @staticmethod
    def _tower(in_channels: int, conv_dims: Sequence[int], norm: str) -> nn.Sequential:
        layers: list[nn.Module] = []
        for out_channels in conv_dims:
            norm_layer = get_norm(norm, out_channels)
            layers.append(
                nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=norm_layer is None)
            )
            if norm_layer is not None:
                layers.append(norm_layer)
            layers.append(nn.ReLU())
            in_channels = out_channels
        return nn.Sequential(*layers)

    @classmethod
    def from_config(cls, cfg, input_shape: list[ShapeSpec]):
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.ATSS.NUM_CLASSES,
            "num_anchors": len(cfg.MODEL.ATSS.ANCHOR_SCALES),
            "conv_dims": [input_shape[0].channels] * cfg.MODEL.ATSS.NUM_CONVS,
            "norm": cfg.MODEL.ATSS.NORM,
            "prior_prob": cfg.MODEL.ATSS.PRIOR_PROB,
        }

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """
        Args:
            features: L tensors (N, Cin, H_l, W_l), levels from high to low resolution.

        Returns:
            logits: L tensors (N, A*C, H_l, W_l).
            bbox_reg: L tensors (N, A*4, H_l, W_l), (dx, dy, dw, dh) per anchor.
            quality: L tensors (N, A, H_l, W_l), IoU/centerness logit per anchor.
        """
        assert len(features) == self._num_features, (len(features), self._num_features)
        logits, bbox_reg, quality = [], [], []
        for feature in features:
            logits.append(self.cls_score(self.cls_subnet(feature)))
            box_feature = self.bbox_subnet(feature)
            bbox_reg.append(self.bbox_pred(box_feature))
            quality.append(self.quality_pred(box_feature))
        return logits, bbox_reg, quality


def clip_to_image(boxes: Tensor, image_size: tuple[int, int] | tuple[Tensor, Tensor]) -> Tensor:
    """
    ``Boxes.clip``'s values (x to [0, w], y to [0, h]) for an image size of ints or, while
    tracing, of 0-dim tensors (then the limits follow each input's size in a traced graph).
    No finiteness assert, a branch on data that a graph cannot hold; the deltas are checked
    before decoding (:func:`~efl_d2.modeling.divergence.check_finite_box_deltas`).

    Args:
        boxes: (N, 4) XYXY.
        image_size: (h, w).
    """
    h, w = image_size[0], image_size[1]  # (a 1-D tensor while tracing: no iteration)
    limits = shapes_to_tensor([w, h, w, h], device=boxes.device).to(boxes.dtype)
    return torch.minimum(boxes.clamp(min=0), limits)


def _global_mean_per_worker(local_sum: Tensor) -> float:
    """max(sum over workers, 1) / world size: the official EFL code's loss normaliser."""
    total = local_sum.detach().float().clone()
    world_size = comm.get_world_size()
    if world_size > 1:
        dist.all_reduce(total)
    return max(total.item(), 1.0) / world_size


@register_meta_arch
class ATSS(DenseDetector):
    """
    ATSS (:paper:`ATSS`) with a pluggable classification loss and an IoU or centerness quality
    branch. Configured as the EFL paper's improved baseline it is the detector of all EFL rows.

    Losses (keys): ``loss_cls`` = cls_loss(logits, labels, N_pos); ``loss_box_reg`` = GIoU of the
    decoded positives weighted by the quality target, / (sum of quality targets);
    ``loss_iou`` or ``loss_centerness`` = BCE of the quality logit vs its target, / N_pos. Both
    normalisers are all-reduced sums divided by the world size (at least 1 before the division),
    or their EMAs with ``ema_loss_normalizer``.

    Inference: score = sigmoid(cls) * sigmoid(quality); per level the top
    min(test_topk_candidates, #anchors of the level) (anchor, class) pairs above
    test_score_thresh; boxes clipped to the image; one class-aware NMS over all levels; the best
    max_detections_per_image.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        head_in_features: list[str] | None = None,
        anchor_generator: nn.Module,
        box2box_transform: Box2BoxTransform | None = None,
        anchor_matcher: Callable | None = None,
        num_classes: int,
        cls_loss: nn.Module | None = None,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        quality: str = "iou",
        box_loss_weight: float = 1.0,
        quality_loss_weight: float = 1.0,
        ema_loss_normalizer: bool = False,
        test_score_thresh: float = 0.0,
        test_topk_candidates: int = 6000,
        test_nms_thresh: float = 0.5,
        max_detections_per_image: int = 100,
        test_topk_per_class: int = 0,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        size_divisibility: int = 0,
        input_format: str = "BGR",
    ):
        """
        Args:
            backbone, head_in_features, pixel_mean, pixel_std: see :class:`DenseDetector`.
            head: an :class:`ATSSHead` (or any module with the same outputs).
            anchor_generator: e.g. ``DefaultAnchorGenerator(sizes=[[6*s, 8*s] for s in strides],
                aspect_ratios=[1.0], strides=strides, offset=0.5)``; its anchors per location
                must equal the head's.
            box2box_transform: box coder; default ``Box2BoxTransform((1, 1, 1, 1))`` (official).
            anchor_matcher: callable ``(anchors_per_level, gt_boxes) -> (matched_idxs, labels)``;
                default ``ATSSMatcher(topk=9)``.
            num_classes: C. Labels are 0..C-1, background C.
            cls_loss: module called as ``cls_loss(logits (M, C), gt_classes (M,), normalizer)``
                with M = N*R and gt_classes in 0..C-1 (fg), C (bg), -1 (ignore); returns the
                normalised scalar. None: fvcore sigmoid focal loss with the two focal args.
            quality: "iou" (IoU of the detached decoded prediction with its GT) or "centerness".
            box_loss_weight, quality_loss_weight: multipliers of the two losses (official: 1, 1;
                original ATSS weighs the box loss 2).
            ema_loss_normalizer: use detectron2's EMA (momentum 0.9, start 100) of the
                normalisers instead of the per-iteration values.
            test_score_thresh, test_topk_candidates, test_nms_thresh, max_detections_per_image:
                inference, see the class docstring (official EFL: 0, 6000, 0.5, 300).
            test_topk_per_class: 0 (the official rule) or, for AP-fixed, the number of best
                anchors per class and level kept before NMS
                (:func:`efl_d2.modeling.candidates.select_candidates`).
            size_divisibility: pad the batch to a multiple of this (official: 64); 0 = the
                backbone's ``size_divisibility``.
            input_format: image channel order, used by ``visualize_training``.
        """
        super().__init__(
            backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std
        )
        self._check_anchor_count(head, anchor_generator)
        self.num_classes = num_classes
        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform or Box2BoxTransform(weights=(1.0,) * 4)
        self.anchor_matcher = anchor_matcher or ATSSMatcher(topk=9)
        # A module attribute, so loss state (e.g. EFL statistics) is checkpointed with the model.
        self.cls_loss = cls_loss
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        if quality not in QUALITY_KINDS:
            raise ValueError(f"ATSS: quality must be one of {QUALITY_KINDS}, got {quality!r}.")
        self.quality = quality
        self.box_loss_weight = box_loss_weight
        self.quality_loss_weight = quality_loss_weight
        self.ema_loss_normalizer = ema_loss_normalizer
        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.max_detections_per_image = max_detections_per_image
        self.test_topk_per_class = test_topk_per_class
        self.size_divisibility = int(size_divisibility)
        self.input_format = input_format

    @staticmethod
    def _check_anchor_count(head: nn.Module, anchor_generator: nn.Module) -> None:
        head_anchors = getattr(head, "num_anchors", None)
        cell_anchors = set(getattr(anchor_generator, "num_cell_anchors", []) or [])
        if head_anchors is not None and cell_anchors and cell_anchors != {head_anchors}:
            raise ValueError(
                f"ATSS: the head predicts {head_anchors} anchors per location but the anchor "
                f"generator makes {sorted(cell_anchors)}; set head.num_anchors to the number of "
                "anchor scales x aspect ratios."
            )

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        feature_shapes = [shapes[f] for f in cfg.MODEL.ATSS.IN_FEATURES]
        strides = [s.stride for s in feature_shapes]
        num_classes = cfg.MODEL.ATSS.NUM_CLASSES
        return {
            "backbone": backbone,
            "head": ATSSHead(cfg, feature_shapes),
            "head_in_features": cfg.MODEL.ATSS.IN_FEATURES,
            # offset 0.5: anchor centres at (i + 0.5) * stride, as the official box coder sees them.
            "anchor_generator": DefaultAnchorGenerator(
                sizes=[[k * s for k in cfg.MODEL.ATSS.ANCHOR_SCALES] for s in strides],
                aspect_ratios=[1.0],
                strides=strides,
                offset=0.5,
            ),
            "box2box_transform": Box2BoxTransform(weights=cfg.MODEL.ATSS.BBOX_REG_WEIGHTS),
            "anchor_matcher": ATSSMatcher(topk=cfg.MODEL.ATSS.TOPK),
            "num_classes": num_classes,
            "cls_loss": build_cls_loss(cfg, num_classes),
            "focal_loss_alpha": cfg.MODEL.ATSS.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": cfg.MODEL.ATSS.FOCAL_LOSS_GAMMA,
            "quality": cfg.MODEL.ATSS.QUALITY,
            "box_loss_weight": cfg.MODEL.ATSS.BOX_LOSS_WEIGHT,
            "quality_loss_weight": cfg.MODEL.ATSS.QUALITY_LOSS_WEIGHT,
            "ema_loss_normalizer": cfg.MODEL.ATSS.EMA_LOSS_NORMALIZER,
            "test_score_thresh": cfg.MODEL.ATSS.SCORE_THRESH_TEST,
            "test_topk_candidates": cfg.MODEL.ATSS.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": cfg.MODEL.ATSS.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
        }

    # ------------------------------------------------------------------ input and output

    def preprocess_image(self, batched_inputs: list[dict]) -> ImageList:
        """Normalise ((x - mean) / std), pad to ``size_divisibility`` and batch."""
        images = [self._move_to_current_device(x["image"]) for x in batched_inputs]
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        return ImageList.from_tensors(
            images,
            self.size_divisibility or self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        )

    # ------------------------------------------------------------------ training

    def transposed_predictions(
        self, predictions: list[list[Tensor]]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """The head's outputs as L tensors (N, A_l, C) logits, (N, A_l, 4) deltas, (N, A_l, 1)
        quality logits (rows location-major, anchor-minor); the deltas must be finite."""
        pred_logits, pred_deltas, pred_quality = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        check_finite_box_deltas(pred_deltas)
        return pred_logits, pred_deltas, pred_quality

    def forward_training(self, images, features, predictions, gt_instances):
        pred_logits, pred_deltas, pred_quality = self.transposed_predictions(predictions)
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(anchors, pred_logits, gt_labels, pred_deltas, gt_boxes, pred_quality)

    @torch.no_grad()
    def label_anchors(
        self, anchors: list[Boxes], gt_instances: list[Instances]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """
        Args:
            anchors: L Boxes, the anchors of each level (same for every image).
            gt_instances: N Instances with ``gt_boxes`` and ``gt_classes``.

        Returns:
            gt_labels: N int64 tensors (R,), R = sum_l A_l, values 0..C-1 or C (background).
            matched_gt_boxes: N tensors (R, 4), the matched GT box (undefined for background).
        """
        num_anchors = sum(len(a) for a in anchors)
        gt_labels, matched_gt_boxes = [], []
        for inst in gt_instances:
            matched_idxs, fg = self.anchor_matcher(anchors, inst.gt_boxes)
            if len(inst) > 0:
                labels = inst.gt_classes[matched_idxs].clone()
                labels[fg == 0] = self.num_classes
                boxes = inst.gt_boxes.tensor[matched_idxs]
            else:
                device = anchors[0].tensor.device
                labels = torch.full((num_anchors,), self.num_classes, device=device)
                boxes = torch.zeros((num_anchors, 4), device=device)
            gt_labels.append(labels)
            matched_gt_boxes.append(boxes)
        return gt_labels, matched_gt_boxes

    def losses(
        self,
        anchors: list[Boxes],
        pred_logits: list[Tensor],
        gt_labels: list[Tensor],
        pred_deltas: list[Tensor],
        gt_boxes: list[Tensor],
        pred_quality: list[Tensor],
    ) -> dict[str, Tensor]:
        """
        Args:
            anchors: L Boxes (A_l, 4).
            pred_logits, pred_deltas, pred_quality: L tensors (N, A_l, C / 4 / 1), rows in the
                anchors' order (location-major, anchor-minor), see ``permute_to_N_HWA_K``.
            gt_labels, gt_boxes: N tensors (R,) / (R, 4) from :meth:`label_anchors`.
        """
        gt_labels = torch.stack(gt_labels)  # (N, R)
        pos_mask = (gt_labels >= 0) & (gt_labels != self.num_classes)
        num_pos = pos_mask.sum()
        get_event_storage().put_scalar("num_pos_anchors", num_pos.item() / len(gt_labels))
        normalizer = self._normalizer("loss_normalizer", num_pos)

        # Rows of the flattened logits and labels are (image, level P3..P7, location, anchor).
        logits = torch.cat(pred_logits, dim=1).flatten(0, 1)  # (N*R, C)
        loss_cls = self._classification_loss(logits, gt_labels.flatten(), normalizer)

        pos_anchors = Boxes.cat(anchors).tensor[pos_mask.nonzero()[:, 1]]  # (P, 4)
        pred_boxes = self.box2box_transform.apply_deltas(
            torch.cat(pred_deltas, dim=1)[pos_mask], pos_anchors
        )
        target_boxes = torch.stack(gt_boxes)[pos_mask]
        quality_targets = self.quality_targets(pos_anchors, pred_boxes.detach(), target_boxes)
        box_normalizer = self._normalizer("box_loss_normalizer", quality_targets.sum())

        loss_box = giou_loss(pred_boxes, target_boxes, reduction="none") * quality_targets
        quality_logits = torch.cat(pred_quality, dim=1)[pos_mask].squeeze(1)
        loss_quality = F.binary_cross_entropy_with_logits(
            quality_logits, quality_targets, reduction="sum"
        )
        return {
            "loss_cls": loss_cls,
            "loss_box_reg": self.box_loss_weight * loss_box.sum() / box_normalizer,
            f"loss_{self.quality}": self.quality_loss_weight * loss_quality / normalizer,
        }

    def _normalizer(self, name: str, local_sum: Tensor) -> float:
        value = _global_mean_per_worker(local_sum)
        if self.ema_loss_normalizer:
            value = self._ema_update(name, value, initial_value=100)
        return value

    def _classification_loss(self, logits: Tensor, gt_labels: Tensor, normalizer: float) -> Tensor:
        """logits (M, C), gt_labels (M,) in {-1, 0..C}; returns the normalised scalar."""
        if self.cls_loss is not None:
            return self.cls_loss(logits, gt_labels, normalizer)
        valid = gt_labels >= 0
        targets = F.one_hot(gt_labels[valid], self.num_classes + 1)[:, :-1].to(logits.dtype)
        loss = sigmoid_focal_loss_jit(
            logits[valid],
            targets,
            alpha=self.focal_loss_alpha,
            gamma=self.focal_loss_gamma,
            reduction="sum",
        )
        return loss / normalizer

    @torch.no_grad()
    def quality_targets(self, anchors: Tensor, pred_boxes: Tensor, gt_boxes: Tensor) -> Tensor:
        """
        Args:
            anchors, pred_boxes, gt_boxes: (P, 4) XYXY for the P positive anchors.

        Returns:
            (P,) in [0, 1]: IoU(pred_box, gt_box) for "iou"; for "centerness"
            sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) with l, t, r, b the distances of
            the anchor centre to the GT sides (positive: ATSS positives lie inside their GT).
        """
        if self.quality == "iou":
            return matched_pairwise_iou(Boxes(pred_boxes), Boxes(gt_boxes)).to(pred_boxes.dtype)
        centers = (anchors[:, :2] + anchors[:, 2:]) / 2
        left_top = centers - gt_boxes[:, :2]
        right_bottom = gt_boxes[:, 2:] - centers
        ratio = torch.minimum(left_top, right_bottom) / torch.maximum(left_top, right_bottom)
        return ratio.prod(dim=1).sqrt().to(pred_boxes.dtype)

    # ------------------------------------------------------------------ inference

    def forward_inference(
        self, images: ImageList, features: list[Tensor], predictions: list[list[Tensor]]
    ) -> list[Instances]:
        pred_logits, pred_deltas, pred_quality = self.transposed_predictions(predictions)
        anchors = self.anchor_generator(features)
        results = []
        for img_idx, image_size in enumerate(images.image_sizes):
            scores = [
                self.predict_scores(x[img_idx], q[img_idx])
                for x, q in zip(pred_logits, pred_quality)
            ]
            deltas = [x[img_idx] for x in pred_deltas]
            results.append(self.inference_single_image(anchors, scores, deltas, image_size))
        return results

    def predict_scores(self, logits: Tensor, quality: Tensor) -> Tensor:
        """(A, C) class logits and (A, 1) quality logits -> (A, C) scores sigmoid(cls) * sigmoid(q)."""
        return logits.sigmoid() * quality.sigmoid()

    # DenseDetector's per-level decoding, top-k first and with test_topk_per_class
    _decode_per_level_predictions = decode_candidates

    def inference_single_image(
        self,
        anchors: list[Boxes],
        scores: list[Tensor],
        deltas: list[Tensor],
        image_size: tuple[int, int],
    ) -> Instances:
        """
        Args:
            anchors: L Boxes (A_l, 4).
            scores: L tensors (A_l, C), final scores (cls x quality).
            deltas: L tensors (A_l, 4).
            image_size: (height, width) of the resized, unpadded image.

        Returns:
            Instances with pred_boxes, scores, pred_classes, sorted by decreasing score.
        """
        return self.nms(self.pre_nms_candidates(anchors, scores, deltas, image_size))

    def nms(self, candidates: Instances) -> Instances:
        """Class-aware NMS at ``test_nms_thresh``; the best ``max_detections_per_image``."""
        keep = batched_nms(
            candidates.pred_boxes.tensor,
            candidates.scores,
            candidates.pred_classes,
            self.test_nms_thresh,
        )
        return candidates[keep[: self.max_detections_per_image]]

    def pre_nms_candidates(self, anchors, scores, deltas, image_size) -> Instances:
        """The decoded, clipped (anchor, class) candidates of all levels that NMS sees (same
        arguments as :meth:`inference_single_image`)."""
        per_level = [
            # Official pre-NMS cap: top-min(k, #anchors of the level) (anchor, class) pairs; the
            # count read from the shape, so that a traced graph follows the input size.
            self._decode_per_level_predictions(
                anchors_l,
                scores_l,
                deltas_l,
                self.test_score_thresh,
                topk_count(anchors_l.tensor.shape[0], self.test_topk_candidates),
                image_size,
            )
            for anchors_l, scores_l, deltas_l in zip(anchors, scores, deltas)
        ]
        pred = Instances.cat(per_level)
        # Before NMS, as the official code.
        pred.pred_boxes = Boxes(clip_to_image(pred.pred_boxes.tensor, image_size))
        return pred
