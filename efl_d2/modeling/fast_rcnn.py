"""Detectron2's Faster R-CNN box predictor with a pluggable classification loss, and the
normalised cosine classifier of Seesaw's recipe.

``PluggableFastRCNNOutputLayers`` is to ``FastRCNNOutputLayers`` what ``PluggableRetinaNet`` is to
``RetinaNet``: the box regression, the proposal sampling and the inference stay Detectron2's; the
classification term and the test-time class scores come from ``cls_loss`` (the region-loss
protocol of ``efl_d2/losses/region_protocol.py``). With ``cls_loss=None`` it is the parent.
"""

from __future__ import annotations

import math

import torch
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from torch import nn
from torch.nn import functional as F

__all__ = ["NormedLinear", "PluggableFastRCNNOutputLayers"]


class NormedLinear(nn.Linear):
    """``temperature * <x / (|x| + 1e-6), w_j / (|w_j| + 1e-6)> + b_j``: a cosine classifier
    (Seesaw's LVIS recipe: temperature 20; weights N(0, 0.01), bias 0)."""

    def __init__(self, in_features: int, out_features: int, *, temperature: float = 20.0):
        super().__init__(in_features, out_features)
        self.temperature = float(temperature)
        nn.init.normal_(self.weight, std=0.01)
        nn.init.constant_(self.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x / (x.norm(dim=1, keepdim=True) + 1e-6)
        w = self.weight / (self.weight.norm(dim=1, keepdim=True) + 1e-6)
        return F.linear(x * self.temperature, w, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, temperature={self.temperature}"


class PluggableFastRCNNOutputLayers(FastRCNNOutputLayers):
    """``FastRCNNOutputLayers`` whose classification loss is ``cls_loss(logits (R, K),
    gt_classes (R,))`` (a tensor or a dict of terms) and whose test scores are
    ``cls_loss.probabilities(logits)``, with K = ``cls_loss.num_logits`` classifier outputs.

    Detectron2's ``fast_rcnn/*`` accuracy statistics are logged from those scores, so they mean
    the same for every loss. LazyConfig only (Detectron2's yacs ROI heads build their predictor
    themselves).
    """

    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        cls_loss: nn.Module | None = None,
        cosine_temperature: float = 0.0,
        cls_prior_prob: float = 0.0,
        **kwargs,
    ):
        """
        Args:
            input_shape, kwargs: as :class:`FastRCNNOutputLayers`.
            cls_loss: a region loss; None = Detectron2's softmax cross entropy (or its sigmoid /
                federated options in ``kwargs``).
            cosine_temperature: > 0 makes the classifier a :class:`NormedLinear` of this
                temperature (Seesaw's recipe: 20); 0 keeps Detectron2's ``nn.Linear``.
            cls_prior_prob: > 0 starts the classifier's biases at -log((1 - p) / p), a sigmoid
                classifier's prior (EQL's recipe: 0.001); 0 keeps them at 0.
        """
        super().__init__(input_shape, **kwargs)
        self.cls_loss = cls_loss
        num_logits = self.num_classes + 1 if cls_loss is None else cls_loss.num_logits
        in_features = self.cls_score.in_features
        if cosine_temperature > 0:
            self.cls_score = NormedLinear(in_features, num_logits, temperature=cosine_temperature)
        elif num_logits != self.cls_score.out_features:
            self.cls_score = nn.Linear(in_features, num_logits)
            nn.init.normal_(self.cls_score.weight, std=0.01)  # as the parent's classifier
            nn.init.constant_(self.cls_score.bias, 0)
        if cls_prior_prob > 0:
            nn.init.constant_(self.cls_score.bias, -math.log((1 - cls_prior_prob) / cls_prior_prob))

    def losses(self, predictions, proposals):
        if self.cls_loss is None:
            return super().losses(predictions, proposals)
        scores, proposal_deltas = predictions
        gt_classes = (
            cat([p.gt_classes for p in proposals], dim=0)
            if len(proposals)
            else torch.empty(0, dtype=torch.long, device=scores.device)
        )
        # The parent computes the box loss and the accuracy statistics; given log-probabilities
        # of the C + 1 classes, its cross entropy (discarded) costs little and its statistics
        # read the same scores as inference.
        with torch.no_grad():
            log_probs = self.cls_loss.probabilities(scores).clamp(min=1e-12).log()
        losses = super().losses((log_probs, proposal_deltas), proposals)
        del losses["loss_cls"]
        weight = self.loss_weight.get("loss_cls", 1.0)
        cls = self.cls_loss(scores, gt_classes)
        terms = cls if isinstance(cls, dict) else {"loss_cls": cls}
        losses.update({k: v * weight for k, v in terms.items()})
        return losses

    def predict_probs(self, predictions, proposals):
        if self.cls_loss is None:
            return super().predict_probs(predictions, proposals)
        scores, _ = predictions
        probs = self.cls_loss.probabilities(scores)
        return probs.split([len(p) for p in proposals], dim=0)
