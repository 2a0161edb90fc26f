"""Feature extractors (Eq. 9): ResNet-FPN and Swin-FPN, looked up by name in BACKBONE_REGISTRY."""

from .build import BACKBONE_REGISTRY, build_backbone
from .fpn import FPNBackbone
from .resnet_fpn import ResNetTrunk, build_resnet_fpn_backbone
from .swin_fpn import SwinTrunk, build_swin_fpn_backbone

__all__ = [
    "BACKBONE_REGISTRY",
    "build_backbone",
    "FPNBackbone",
    "ResNetTrunk",
    "SwinTrunk",
    "build_resnet_fpn_backbone",
    "build_swin_fpn_backbone",
]
