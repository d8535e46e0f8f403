"""One way to shrink a detector's LazyConfig to a small ResNet FPN (the mini-LVIS CPU configs, the
tests and the train-step benchmark all use it): :func:`small_resnet_fpn` for dense detectors,
:func:`small_faster_rcnn` for Detectron2's Faster R-CNN."""

from detectron2.layers import ShapeSpec

__all__ = ["small_faster_rcnn", "small_resnet_fpn"]


def small_resnet_fpn(
    model, *, depth: int = 18, channels: int = 64, head_convs: int = 2, from_scratch: bool = False
):
    """Edit (in place) the model config of a Detectron2-style dense detector (ResNet bottom-up,
    FPN, a head with ``input_shape`` / ``conv_dims``): a ResNet-``depth`` with a ``channels``-wide
    FPN and head towers of ``head_convs`` convs. The P6/P7 block follows: from P5 it takes the
    FPN's width, from C5 the ResNet's.

    Args:
        from_scratch: also BatchNorm in every stage and nothing frozen (no pretrained weights).

    Returns:
        ``model``.
    """
    _small_backbone(model.backbone, depth, channels, from_scratch)
    top = model.backbone.get("top_block")
    if top is not None and "in_channels" in top:
        from_p5 = top.get("in_feature", "res5") != "res5"
        top.in_channels = "${..out_channels}" if from_p5 else (512 if depth < 50 else 2048)
    model.head.input_shape = [ShapeSpec(channels=channels)] * 5
    model.head.conv_dims = [channels] * head_convs
    return model


def small_faster_rcnn(
    model, *, depth: int = 18, channels: int = 64, fc_dim: int = 256, from_scratch: bool = False
):
    """Edit (in place) the model config of Detectron2's Faster R-CNN (``GeneralizedRCNN`` with an
    RPN and a ``StandardROIHeads`` box head): a ResNet-``depth`` with a ``channels``-wide FPN and
    RPN head, and a box head of two ``fc_dim``-wide fully connected layers.

    Returns:
        ``model``.
    """
    _small_backbone(model.backbone, depth, channels, from_scratch)
    model.proposal_generator.head.in_channels = channels
    heads = model.roi_heads
    pooled = heads.box_head.input_shape
    heads.box_head.input_shape = ShapeSpec(
        channels=channels, height=pooled.height, width=pooled.width
    )
    heads.box_head.fc_dims = [fc_dim, fc_dim]
    heads.box_predictor.input_shape = ShapeSpec(channels=fc_dim)
    return model


def _small_backbone(backbone, depth: int, channels: int, from_scratch: bool) -> None:
    bottom_up = backbone.bottom_up
    bottom_up.stages.depth = depth
    if depth < 50 and "stride_in_1x1" in bottom_up.stages:
        del bottom_up.stages.stride_in_1x1  # BasicBlock has no such option
    if from_scratch:
        bottom_up.stages.norm = "BN"
        bottom_up.stem.norm = "BN"
        bottom_up.freeze_at = 0
    backbone.out_channels = channels
