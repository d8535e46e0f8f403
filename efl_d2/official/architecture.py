"""The official EFL detector's modules that Detectron2 lacks: its P6/P7 and input statistics."""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "OFFICIAL_PIXEL_MEAN",
    "OFFICIAL_PIXEL_STD",
    "OfficialLastLevelP6P7",
    "build_fpn_with_official_top_block",
]

# Official pre-processing: RGB, to_tensor (/255), ImageNet mean/std -> detectron2's 0..255 scale
# (the statistics torchvision's ImageNet models are trained with, too).
OFFICIAL_PIXEL_MEAN = [123.675, 116.28, 103.53]
OFFICIAL_PIXEL_STD = [58.395, 57.12, 57.375]
# The same on the [0, 1] scale, with OfficialATSS(pixel_divisor=255): the official float arithmetic.
UNIT_PIXEL_MEAN = [0.485, 0.456, 0.406]
UNIT_PIXEL_STD = [0.229, 0.224, 0.225]


class OfficialLastLevelP6P7(nn.Module):
    """The official FPN's extra levels: P6 = p6(lateral(C5)), P7 = p7(P6), no ReLU in between.

    ``lateral`` is the FPN's own C5 lateral conv when the FPN is built with
    :func:`build_fpn_with_official_top_block` (one shared module, as in the official code); a
    block used on its own owns a separate lateral conv.
    """

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "res5"):
        """
        Args:
            in_channels: channels of the bottom-up feature ``in_feature`` (C5).
            out_channels: FPN channels.
        """
        super().__init__()
        self.num_levels = 2
        self.in_feature = in_feature
        self.lateral = nn.Conv2d(in_channels, out_channels, 1)
        self.p6 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for conv in (self.lateral, self.p6, self.p7):
            nn.init.kaiming_uniform_(conv.weight, a=1)  # detectron2's c2_xavier_fill
            nn.init.constant_(conv.bias, 0)

    def forward(self, c5: torch.Tensor) -> list:
        """(N, in_channels, H, W) C5 -> [P6 (N, out_channels, H/2, W/2), P7 (H/4, W/4)]."""
        p6 = self.p6(self.lateral(c5))
        return [p6, self.p7(p6)]


def build_fpn_with_official_top_block(**fpn_kwargs) -> nn.Module:
    """detectron2's ``FPN(**fpn_kwargs)`` whose :class:`OfficialLastLevelP6P7` top block shares
    the FPN's lateral conv of its input feature (use as ``model.backbone._target_``)."""
    from detectron2.modeling.backbone import FPN

    fpn = FPN(**fpn_kwargs)
    top = fpn.top_block
    if isinstance(top, OfficialLastLevelP6P7):
        # FPN.lateral_convs run from the coarsest input feature to the finest
        coarsest = fpn.in_features[-1]
        if top.in_feature != coarsest:
            raise ValueError(
                f"OfficialLastLevelP6P7 reads {top.in_feature!r} but the FPN's coarsest input is "
                f"{coarsest!r}"
            )
        top.lateral = fpn.lateral_convs[0]
    return fpn
