"""ResNet trunk (torchvision) + FPN: the paper's R50 feature extractor, and R18 for CPU tests.

The trunk keeps torchvision's module names (conv1, bn1, layer1..layer4) so an ImageNet
checkpoint loads key for key; only the classifier ("fc.") is dropped.
"""

import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from psdiff.data.teacher_targets import load_network_state
from psdiff.utils.errors import PsdiffError

from .build import BACKBONE_REGISTRY
from .fpn import FPNBackbone, check_in_features
from .frozen_bn import freeze
from .pretrained import load_pretrained, load_trunk_state, teacher_trunk_state, warn_random_init

RESNET_NORMS = {"FrozenBN": FrozenBatchNorm2d, "BN": nn.BatchNorm2d}
STAGES = ("res2", "res3", "res4", "res5")


class ResNetTrunk(nn.Module):
    """torchvision ResNet without pooling and classifier, returning the stages `out_features`.

    Stages after the last one returned are not built, so no parameter goes without gradient.
    """

    def __init__(self, depth: int = 50, norm: str = "FrozenBN", freeze_at: int = 2,
                 out_features=STAGES):
        """`freeze_at` as Detectron2: 0 trains all, 1 freezes the stem, k also res2..res_k."""
        super().__init__()
        if depth not in (18, 34, 50, 101):
            raise PsdiffError(f"MODEL.RESNETS.DEPTH = {depth} is not one of (18, 34, 50, 101)")
        if norm not in RESNET_NORMS:
            raise PsdiffError(f"MODEL.RESNETS.NORM = '{norm}' is not one of {tuple(RESNET_NORMS)}")
        if not 0 <= freeze_at <= 5:
            raise PsdiffError(f"MODEL.BACKBONE.FREEZE_AT = {freeze_at} is not in [0, 5]")
        if not out_features or any(f not in STAGES for f in out_features):
            raise PsdiffError(
                f"MODEL.RESNETS.OUT_FEATURES = {list(out_features)} must be a subset of {STAGES}")
        resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None,
                                                               norm_layer=RESNET_NORMS[norm])
        self.out_features = [f for f in STAGES if f in out_features]
        self.num_stages = STAGES.index(self.out_features[-1]) + 1
        layers = [f"layer{i + 1}" for i in range(self.num_stages)]
        for name in ["conv1", "bn1", "relu", "maxpool"] + layers:
            setattr(self, name, getattr(resnet, name))
        width = 64 if depth < 50 else 256  # BasicBlock vs Bottleneck (expansion 4)
        self.channels = {f: width * 2 ** STAGES.index(f) for f in self.out_features}
        if freeze_at >= 1:
            self.conv1, self.bn1 = freeze(self.conv1), freeze(self.bn1)
        for name in layers[: max(freeze_at - 1, 0)]:
            setattr(self, name, freeze(getattr(self, name)))

    def forward(self, x: torch.Tensor) -> dict:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = {}
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
            if STAGES[i] in self.out_features:
                out[STAGES[i]] = x
        return out


def check_teacher_init(cfg) -> None:
    """MODEL.BACKBONE.INIT_FROM_TEACHER reads TEACHER.WEIGHTS and excludes PRETRAINED."""
    if not cfg.TEACHER.WEIGHTS:
        raise PsdiffError("MODEL.BACKBONE.INIT_FROM_TEACHER True needs TEACHER.WEIGHTS: the "
                          "teacher checkpoint (tools/train_teacher.py) whose trunk starts the "
                          "backbone")
    if cfg.MODEL.BACKBONE.PRETRAINED:
        raise PsdiffError("MODEL.BACKBONE.INIT_FROM_TEACHER True and MODEL.BACKBONE.PRETRAINED "
                          f"{cfg.MODEL.BACKBONE.PRETRAINED} both start the trunk; set one")


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_backbone(cfg) -> FPNBackbone:
    """ResNet-{18,34,50,101} + FPN from MODEL.RESNETS / MODEL.FPN / MODEL.BACKBONE."""
    trunk = ResNetTrunk(cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.NORM,
                        cfg.MODEL.BACKBONE.FREEZE_AT, cfg.MODEL.RESNETS.OUT_FEATURES)
    bgr_key = "conv1.weight" if cfg.INPUT.FORMAT == "BGR" else ""
    if cfg.MODEL.BACKBONE.INIT_FROM_TEACHER:
        if not cfg.MODEL.WEIGHTS:  # a checkpoint to load replaces every weight anyway
            check_teacher_init(cfg)
            load_trunk_state(trunk, teacher_trunk_state(load_network_state(cfg.TEACHER.WEIGHTS)),
                             cfg.TEACHER.WEIGHTS, bgr_input_key=bgr_key, key="TEACHER.WEIGHTS")
    elif cfg.MODEL.BACKBONE.PRETRAINED:
        load_pretrained(trunk, cfg.MODEL.BACKBONE.PRETRAINED, classifier_prefixes=("fc.",),
                        bgr_input_key=bgr_key)
    elif cfg.MODEL.RESNETS.DEPTH >= 50 and not cfg.MODEL.WEIGHTS:
        depth = cfg.MODEL.RESNETS.DEPTH
        warn_random_init("MODEL.BACKBONE.PRETRAINED", f"ResNet{depth}_Weights.IMAGENET1K_V1")
    in_features = check_in_features(cfg.MODEL.FPN.IN_FEATURES, trunk.out_features)
    return FPNBackbone(trunk, trunk.channels, in_features, cfg.MODEL.FPN.OUT_CHANNELS)
