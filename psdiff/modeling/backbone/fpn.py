"""Feature extractor f_θ1 of Eq. 9: a trunk's stages through a Feature Pyramid Network.

The trunk (ResNet or Swin) returns a dict "res2".."res5" (stride 4..32); torchvision's FPN
turns them into "p2".."p5" of `out_channels` each, the multi-scale condition c of the CDL. The
trunk's own stages are returned after them (MODEL.PSDIFF.EMB_PARTS_IN_FEATURE reads one).
"""

from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork

from psdiff.utils.errors import PsdiffError

STAGE_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


def check_in_features(in_features, valid) -> list:
    """MODEL.FPN.IN_FEATURES as a list, or a PsdiffError when it names a stage the trunk lacks."""
    if not in_features or any(f not in valid for f in in_features):
        raise PsdiffError(
            f"MODEL.FPN.IN_FEATURES = {list(in_features)} must be a subset of {list(valid)}")
    return list(in_features)


class FPNBackbone(nn.Module):
    """Trunk + FPN without extra levels (p2-p5, 256 channels: the lean FPN of the R50 budget)."""

    def __init__(self, trunk: nn.Module, in_channels: dict, in_features, out_channels: int = 256):
        """`trunk(x)` returns a dict with `in_features` (e.g. "res2".."res5") whose channel
        counts are `in_channels[name]`."""
        super().__init__()
        self.trunk = trunk
        self.in_features = list(in_features)
        self.fpn = FeaturePyramidNetwork([in_channels[f] for f in self.in_features], out_channels)
        self.out_features = ["p" + f[len("res"):] for f in self.in_features]
        self.out_channels = out_channels
        self.strides = {p: STAGE_STRIDES[f] for p, f in zip(self.out_features, self.in_features)}
        self.stage_channels = dict(in_channels)  # the trunk stages returned after the pyramid
        self.strides.update({f: STAGE_STRIDES[f] for f in self.stage_channels})

    def forward(self, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """Normalized float images [B, 3, H, W] -> OrderedDict p2..p5 of [B, C, H/s, W/s],
        then the trunk's stages (e.g. res2..res5) as it returns them."""
        stages = self.trunk(images)
        pyramid = self.fpn(OrderedDict((f, stages[f]) for f in self.in_features))
        return OrderedDict([*zip(self.out_features, pyramid.values()), *stages.items()])
