"""yacs support for the efl_d2 meta-architectures (LazyConfig users do not need this module).

Usage::

    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from efl_d2.modeling import add_atss_config

    cfg = get_cfg()
    add_atss_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "ATSS"
    model = build_model(cfg)
"""

from detectron2.config import CfgNode as CN
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.registry import Registry
from torch import nn

__all__ = ["CLS_LOSS_REGISTRY", "add_atss_config", "build_cls_loss", "register_meta_arch"]


def add_atss_config(cfg: CN) -> CN:
    """
    Add ``MODEL.ATSS`` (the ATSS meta-architecture), ``MODEL.PAA`` (PAA's own options) and
    ``MODEL.CLS_LOSS`` (the pluggable classification loss of ATSS, PAA and PluggableRetinaNet)
    to a detectron2 config, in place.
    Defaults are the paper's improved baseline except the class count (COCO's 80).
    """
    _C = cfg
    _C.MODEL.ATSS = CN()
    _C.MODEL.ATSS.NUM_CLASSES = 80
    _C.MODEL.ATSS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Head: NUM_CONVS x (conv3x3 [+ norm] + ReLU) per tower, channels = FPN channels.
    _C.MODEL.ATSS.NUM_CONVS = 4
    _C.MODEL.ATSS.NORM = "GN"
    _C.MODEL.ATSS.PRIOR_PROB = 0.001
    # One square anchor per scale and location, side = scale * stride. [8] is original ATSS.
    _C.MODEL.ATSS.ANCHOR_SCALES = [6, 8]
    # Candidates per level and GT (9 in original ATSS, 18 with two anchor scales).
    _C.MODEL.ATSS.TOPK = 18
    # "iou" (IoU branch, paper's IB) or "centerness" (original ATSS).
    _C.MODEL.ATSS.QUALITY = "iou"
    _C.MODEL.ATSS.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
    _C.MODEL.ATSS.BOX_LOSS_WEIGHT = 1.0
    _C.MODEL.ATSS.QUALITY_LOSS_WEIGHT = 1.0
    # Only used when MODEL.CLS_LOSS.NAME is empty (fvcore sigmoid focal loss).
    _C.MODEL.ATSS.FOCAL_LOSS_ALPHA = 0.25
    _C.MODEL.ATSS.FOCAL_LOSS_GAMMA = 2.0
    # False: normalise by the all-reduced #positives of the iteration (official EFL code);
    # True: detectron2-style EMA of it.
    _C.MODEL.ATSS.EMA_LOSS_NORMALIZER = False
    _C.MODEL.ATSS.SCORE_THRESH_TEST = 0.0
    _C.MODEL.ATSS.TOPK_CANDIDATES_TEST = 6000
    _C.MODEL.ATSS.NMS_THRESH_TEST = 0.5

    # PAA (meta-architecture "PAA"): the MODEL.ATSS options plus its assignment and voting.
    # Its configs also set BBOX_REG_WEIGHTS (10, 10, 5, 5), BOX_LOSS_WEIGHT 1.3,
    # QUALITY_LOSS_WEIGHT 0.5, ANCHOR_SCALES [8], NMS_THRESH_TEST 0.6.
    _C.MODEL.PAA = CN()
    _C.MODEL.PAA.IOU_THRESHOLD = 0.1  # candidates: IoU >= this with their best GT
    _C.MODEL.PAA.TOPK = 9  # candidates per GT and level kept for the mixture fit
    _C.MODEL.PAA.SCORE_VOTING = True

    # NAME: a class of efl_d2.losses (e.g. "EqualizedFocalLoss"), built as
    # NAME(num_classes, **{lowercased other keys}); "" = the meta-arch's built-in focal loss.
    _C.MODEL.CLS_LOSS = CN(new_allowed=True)
    _C.MODEL.CLS_LOSS.NAME = ""
    return cfg


CLS_LOSS_REGISTRY = Registry("CLS_LOSS")
CLS_LOSS_REGISTRY.__doc__ = """Dense classification losses by class name for yacs configs
(``MODEL.CLS_LOSS.NAME``), built as ``cls(num_classes, **kwargs)``. efl_d2's focal family is
registered on first use; register your own with ``CLS_LOSS_REGISTRY.register()``. LazyConfig files
name a loss by import path instead."""


def _register_efl_losses() -> None:
    from efl_d2 import losses  # deferred: the loss package is optional for the modeling code

    for cls in (losses.SigmoidFocalLoss, losses.EqualizedFocalLoss, losses.EQLv2FocalLoss):
        if cls.__name__ not in CLS_LOSS_REGISTRY:
            CLS_LOSS_REGISTRY.register(cls)


def build_cls_loss(cfg: CN, num_classes: int) -> nn.Module | None:
    """
    Build the classification loss described by ``cfg.MODEL.CLS_LOSS`` (its class from
    ``CLS_LOSS_REGISTRY``), or None when the node is absent or its NAME is empty (the
    meta-architecture then uses sigmoid focal loss).
    """
    node = cfg.MODEL.get("CLS_LOSS", None)
    if node is None or not node.NAME:
        return None
    _register_efl_losses()
    if node.NAME not in CLS_LOSS_REGISTRY:
        available = sorted(name for name, _ in CLS_LOSS_REGISTRY)
        raise KeyError(
            f"MODEL.CLS_LOSS.NAME={node.NAME!r} is not in CLS_LOSS_REGISTRY; registered: "
            f"{available}."
        )
    kwargs = {k.lower(): v for k, v in node.items() if k != "NAME"}
    return CLS_LOSS_REGISTRY.get(node.NAME)(num_classes, **kwargs)


def register_meta_arch(cls: type) -> type:
    """
    Register ``cls`` in detectron2's META_ARCH_REGISTRY under its class name. Re-registering the
    same class (module reload, notebook autoreload) replaces the old entry instead of failing;
    a different class already holding the name is an error.
    """
    name = cls.__name__
    if name in META_ARCH_REGISTRY:
        old = META_ARCH_REGISTRY.get(name)
        if (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise RuntimeError(
                f"META_ARCH_REGISTRY already holds a different {name!r} ({old.__module__}); "
                "efl_d2 cannot register its own. Import only one of the two projects."
            )
        # fvcore's Registry has no public "replace"; a reload must swap in the new class.
        META_ARCH_REGISTRY._obj_map[name] = cls
    else:
        META_ARCH_REGISTRY.register(cls)
    return cls
