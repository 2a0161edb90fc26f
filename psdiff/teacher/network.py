"""The ReID teacher network of Eq. 11: ResNet trunk, global pooling, embedding head with BNNeck.

HHCL's architecture (docs/teacher.md, "HHCL upstream") with its `--features D` path: a torchvision
ResNet whose last stage has stride 1, average (or GeM) pooling, Linear(C -> D), BatchNorm1d(D)
with a frozen zero bias (BNNeck), and an L2-normalized output in training and evaluation.
"""

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from psdiff.data.teacher_targets import load_network_state
from psdiff.modeling.backbone.pretrained import TEACHER_BODY, load_pretrained, warn_random_init
from psdiff.utils.env import check_device
from psdiff.utils.errors import PsdiffError

_RESNETS = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34,
            50: torchvision.models.resnet50}


class GeneralizedMeanPooling(nn.Module):
    """GeM pooling with a learnable exponent p (HHCL's `gem` option, p initialised to 3)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x):
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p)


def _set_last_stride(trunk: nn.Module, stride: int) -> None:
    """Set the stride of the first block of layer4 (its strided conv and its downsample)."""
    block = trunk.layer4[0]
    strided = block.conv2 if hasattr(block, "conv3") else block.conv1  # Bottleneck vs BasicBlock
    strided.stride = (stride, stride)
    block.downsample[0].stride = (stride, stride)


class ReIDNetwork(nn.Module):
    """Person crop (normalized RGB, N x 3 x H x W) -> L2-normalized D-dim embedding.

    `forward` returns a dict: "feature" (pre-BN head output, used by the S-ReID triplet loss),
    "bn" (BNNeck output, used by the S-ReID ID classifier) and "embedding" (L2-normalized "bn",
    the teacher's output e0 and what HHCL's memories hold).
    """

    def __init__(self, depth: int = 50, emb_dim: int = 256, last_stride: int = 1,
                 pooling: str = "avg", pretrained: str = ""):
        super().__init__()
        if depth not in _RESNETS:
            raise PsdiffError(
                f"TEACHER.BACKBONE.DEPTH must be one of {sorted(_RESNETS)}, got {depth}")
        if pooling not in ("avg", "gem"):
            raise PsdiffError(f"TEACHER.POOLING must be 'avg' or 'gem', got '{pooling}'")
        trunk = _RESNETS[depth](weights=None)
        if pretrained:  # the teacher's crops are RGB, as torchvision's: no channel flip
            missing, _ = load_pretrained(trunk, pretrained, classifier_prefixes=("fc.",),
                                         new_prefixes=("fc.",), key="TEACHER.BACKBONE.PRETRAINED")
            if missing:
                raise PsdiffError(f"TEACHER.BACKBONE.PRETRAINED {pretrained} lacks trunk "
                                  f"weights, e.g. '{missing[0]}'")
        _set_last_stride(trunk, last_stride)
        self.body = nn.Sequential(*(getattr(trunk, name) for name in TEACHER_BODY))
        self.pool = GeneralizedMeanPooling() if pooling == "gem" else nn.AdaptiveAvgPool2d(1)
        channels = trunk.fc.in_features
        self.head = nn.Linear(channels, emb_dim)
        nn.init.kaiming_normal_(self.head.weight, mode="fan_out")
        nn.init.zeros_(self.head.bias)
        self.neck = nn.BatchNorm1d(emb_dim)  # BNNeck: weight 1, bias 0 and frozen (HHCL)
        self.neck.bias.requires_grad_(False)
        self.emb_dim = emb_dim

    @classmethod
    def from_config(cls, cfg):
        """Build from `cfg.TEACHER` and `cfg.MODEL.PSDIFF.EMB_DIM`; warns when HHCL's ResNet-50
        would train from random weights (no PRETRAINED and no checkpoint to load)."""
        depth = cfg.TEACHER.BACKBONE.DEPTH
        checkpoint = cfg.TEACHER.WEIGHTS or cfg.MODEL.WEIGHTS
        if not cfg.TEACHER.BACKBONE.PRETRAINED and depth >= 50 and not checkpoint:
            warn_random_init("TEACHER.BACKBONE.PRETRAINED", f"ResNet{depth}_Weights.IMAGENET1K_V1")
        return cls(depth=cfg.TEACHER.BACKBONE.DEPTH, emb_dim=cfg.MODEL.PSDIFF.EMB_DIM,
                   last_stride=cfg.TEACHER.BACKBONE.LAST_STRIDE, pooling=cfg.TEACHER.POOLING,
                   pretrained=cfg.TEACHER.BACKBONE.PRETRAINED)

    def forward(self, images: torch.Tensor) -> dict:
        feature = self.head(self.pool(self.body(images)).flatten(1))
        bn = self.neck(feature)
        return {"feature": feature, "bn": bn, "embedding": F.normalize(bn, dim=1)}


def load_teacher(cfg, device="cpu") -> ReIDNetwork:
    """The trained teacher of cfg.TEACHER.WEIGHTS, frozen and in eval mode."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.TEACHER.BACKBONE.PRETRAINED = ""  # the checkpoint holds every weight
    network = ReIDNetwork.from_config(cfg)
    state = load_network_state(cfg.TEACHER.WEIGHTS)
    expected = network.state_dict()
    bad = [k for k in expected if k not in state or state[k].shape != expected[k].shape]
    bad += [k for k in state if k not in expected]
    if bad:
        raise PsdiffError(f"TEACHER.WEIGHTS {cfg.TEACHER.WEIGHTS} does not fit this config's "
                          f"teacher at '{bad[0]}' (check TEACHER.BACKBONE.DEPTH, "
                          "TEACHER.POOLING, MODEL.PSDIFF.EMB_DIM)")
    network.load_state_dict(state)
    network.requires_grad_(False)
    return network.to(check_device(str(device))).eval()
