"""Detectors of efl_d2: the ATSS meta-architecture (improved-baseline options of the EFL paper),
its head and assigner, PAA (ATSS with probabilistic anchor assignment), detectron2's
RetinaNet/FCOS with a pluggable classification loss, and Faster R-CNN's box predictor with a
pluggable region loss (``PluggableFastRCNNOutputLayers``, with Seesaw's ``NormedLinear``).

Importing this package registers ``ATSS``, ``PAA`` and ``PluggableRetinaNet`` in detectron2's
``META_ARCH_REGISTRY`` (yacs: call :func:`add_atss_config` on the config first). What each
computes: ``docs/detectors.md``; the official EFL code's conventions are :mod:`efl_d2.official`.
"""

from .atss import ATSS, ATSSHead
from .atss_matcher import ATSSMatcher
from .config import CLS_LOSS_REGISTRY, add_atss_config, build_cls_loss
from .fast_rcnn import NormedLinear, PluggableFastRCNNOutputLayers
from .paa import PAA
from .pluggable import PluggableFCOS, PluggableRetinaNet

__all__ = [
    "ATSS",
    "CLS_LOSS_REGISTRY",
    "PAA",
    "ATSSHead",
    "ATSSMatcher",
    "NormedLinear",
    "PluggableFCOS",
    "PluggableFastRCNNOutputLayers",
    "PluggableRetinaNet",
    "add_atss_config",
    "build_cls_loss",
]
