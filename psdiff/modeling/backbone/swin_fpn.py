"""Swin Transformer trunk (torchvision swin_t / swin_s / swin_b) + FPN: the paper's Swin-B model.

torchvision's `features` is [patch embed, stage 1, merge, stage 2, merge, stage 3, merge,
stage 4] in NHWC; each stage fed to the FPN gets its own LayerNorm, as the Swin detection
backbone does (those norms are new layers, absent from ImageNet checkpoints).
"""

import torch
import torchvision
from torch import nn

from psdiff.utils.errors import PsdiffError

from .build import BACKBONE_REGISTRY
from .fpn import FPNBackbone, check_in_features
from .frozen_bn import freeze
from .pretrained import load_pretrained, warn_random_init

SWIN_SIZES = {"T": "swin_t", "S": "swin_s", "B": "swin_b"}


def set_drop_path(features: nn.Module, rate: float) -> None:
    """Stochastic depth `rate` at the last block, rising linearly from 0 at the first (Swin's
    rule, as torchvision's, whose swin_t/s/b constructors fix the rate at 0.2/0.3/0.5)."""
    blocks = [m for m in features.modules() if isinstance(m, torchvision.ops.StochasticDepth)]
    for i, block in enumerate(blocks):
        block.p = rate * i / max(len(blocks) - 1, 1)


class SwinTrunk(nn.Module):
    """Swin stages `out_indices` (0..3, strides 4..32) as a dict "res2".."res5" in NCHW."""

    def __init__(self, size: str = "B", out_indices=(0, 1, 2, 3), freeze_at: int = 0,
                 drop_path: float = 0.3):
        """`freeze_at` as Detectron2: 1 freezes the patch embedding, k also stages 1..k−1;
        `drop_path`: stochastic depth rate of the last block (rising linearly from 0, as Swin)."""
        super().__init__()
        if size not in SWIN_SIZES:
            raise PsdiffError(f"MODEL.SWIN.SIZE = '{size}' is not one of {tuple(SWIN_SIZES)}")
        if not out_indices or any(i not in range(4) for i in out_indices):
            raise PsdiffError(
                f"MODEL.SWIN.OUT_FEATURES = {list(out_indices)} must be a subset of [0, 1, 2, 3]")
        if not 0 <= freeze_at <= 5:
            raise PsdiffError(f"MODEL.BACKBONE.FREEZE_AT = {freeze_at} is not in [0, 5]")
        if not 0 <= drop_path < 1:
            raise PsdiffError(f"MODEL.SWIN.DROP_PATH = {drop_path} is not in [0, 1)")
        features = getattr(torchvision.models, SWIN_SIZES[size])(weights=None).features
        set_drop_path(features, drop_path)
        self.features = features[: 2 * max(out_indices) + 2]  # stages past the last output unbuilt
        embed_dim = self.features[0][0].out_channels
        self.channels = {f"res{i + 2}": embed_dim * 2**i for i in sorted(out_indices)}
        self.out_norms = nn.ModuleDict({name: nn.LayerNorm(c) for name, c in self.channels.items()})
        # frozen modules of `features`: patch embed (1), then a (merge +) stage per FREEZE_AT step
        self.num_frozen = 0 if freeze_at == 0 else max(1, 2 * freeze_at - 2)
        for module in self.features[: self.num_frozen]:
            freeze(module)

    def train(self, mode: bool = True):
        """Frozen stages stay in eval mode, so their stochastic depth never drops a block."""
        super().train(mode)
        for module in self.features[: self.num_frozen]:
            module.eval()
        return self

    def forward(self, x: torch.Tensor) -> dict:
        out = {}
        for index, module in enumerate(self.features):
            x = module(x)
            name = f"res{index // 2 + 2}"  # stage i sits at index 2i + 1
            if index % 2 == 1 and name in self.out_norms:
                out[name] = self.out_norms[name](x).permute(0, 3, 1, 2).contiguous()
        return out


@BACKBONE_REGISTRY.register()
def build_swin_fpn_backbone(cfg) -> FPNBackbone:
    """Swin-{T,S,B} + FPN from MODEL.SWIN / MODEL.FPN / MODEL.BACKBONE."""
    if cfg.MODEL.BACKBONE.INIT_FROM_TEACHER:
        raise PsdiffError("MODEL.BACKBONE.INIT_FROM_TEACHER True needs a ResNet backbone: the "
                          "ReID teacher's trunk is a ResNet, this backbone a Swin")
    trunk = SwinTrunk(cfg.MODEL.SWIN.SIZE, cfg.MODEL.SWIN.OUT_FEATURES,
                      cfg.MODEL.BACKBONE.FREEZE_AT, cfg.MODEL.SWIN.DROP_PATH)
    if cfg.MODEL.BACKBONE.PRETRAINED:
        bgr_key = "features.0.0.weight" if cfg.INPUT.FORMAT == "BGR" else ""
        load_pretrained(trunk, cfg.MODEL.BACKBONE.PRETRAINED,
                        classifier_prefixes=("norm.", "head."), new_prefixes=("out_norms.",),
                        bgr_input_key=bgr_key)
    elif not cfg.MODEL.WEIGHTS:
        size = cfg.MODEL.SWIN.SIZE
        warn_random_init("MODEL.BACKBONE.PRETRAINED", f"Swin_{size}_Weights.IMAGENET1K_V1")
    in_features = check_in_features(cfg.MODEL.FPN.IN_FEATURES, list(trunk.channels))
    return FPNBackbone(trunk, trunk.channels, in_features, cfg.MODEL.FPN.OUT_CHANNELS)
