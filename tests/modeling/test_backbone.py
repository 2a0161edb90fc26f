"""Backbones: FPN outputs, FREEZE_AT, frozen BN, and loading a local checkpoint key by key."""

import logging

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from psdiff.config import get_cfg
from psdiff.modeling.backbone import build_backbone
from psdiff.modeling.backbone.pretrained import load_pretrained
from psdiff.utils.errors import PsdiffError


def resnet_cfg(depth=18, norm="FrozenBN", freeze_at=2, pretrained=""):
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
    cfg.MODEL.BACKBONE.PRETRAINED = pretrained
    return cfg


def test_resnet_fpn_outputs():
    backbone = build_backbone(resnet_cfg())
    out = backbone(torch.randn(2, 3, 64, 96))
    assert list(out) == ["p2", "p3", "p4", "p5"] == backbone.out_features
    assert backbone.strides == {"p2": 4, "p3": 8, "p4": 16, "p5": 32}
    for name, feature in out.items():
        s = backbone.strides[name]
        assert feature.shape == (2, backbone.out_channels, 64 // s, 96 // s)


def test_unused_trailing_stages_are_not_built():
    """OUT_FEATURES res3, res4: layer4 does not exist (DDP would see parameters without grads)."""
    cfg = resnet_cfg()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4"]
    backbone = build_backbone(cfg)
    assert not hasattr(backbone.trunk, "layer4")
    out = backbone(torch.randn(1, 3, 64, 64))
    assert {k: v.shape[-1] for k, v in out.items()} == {"p3": 8, "p4": 4}
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res5"]
    with pytest.raises(PsdiffError, match="IN_FEATURES"):
        build_backbone(cfg)


def test_r50_fpn_fits_parameter_budget():
    """ResNet-50 convs (~23.5M; frozen BN holds buffers) + FPN (~3.3M) leave ~4M of the 31M."""
    backbone = build_backbone(resnet_cfg(depth=50))
    assert 26.0e6 < sum(p.numel() for p in backbone.parameters()) < 27.0e6
    assert 3.3e6 < sum(p.numel() for p in backbone.fpn.parameters()) < 3.4e6


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 4])
def test_freeze_at_follows_detectron2(freeze_at):
    trunk = build_backbone(resnet_cfg(norm="BN", freeze_at=freeze_at)).trunk
    stages = [("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)]
    for i, names in enumerate(stages):
        frozen = i < freeze_at
        for name in names:
            module = getattr(trunk, name)
            assert all(p.requires_grad != frozen for p in module.parameters())
            norms = [m for m in module.modules()
                     if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
            assert all(isinstance(m, FrozenBatchNorm2d) == frozen for m in norms)


def save_resnet18(path, edit=None):
    """A random torchvision resnet18 checkpoint (with fc and num_batches_tracked, as shipped)."""
    state = torchvision.models.resnet18(weights=None).state_dict()
    for param in state.values():
        if param.is_floating_point():
            param.uniform_(0.5, 1.5)  # positive, so running_var stays valid
    if edit:
        edit(state)
    torch.save(state, path)
    return state


def test_pretrained_checkpoint_loads_exactly(tmp_path):
    path = str(tmp_path / "r18.pth")
    state = save_resnet18(path)
    cfg = resnet_cfg(pretrained=path)
    cfg.INPUT.FORMAT = "RGB"
    trunk = build_backbone(cfg).trunk
    own = trunk.state_dict()
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer4.1.bn2.bias"):
        torch.testing.assert_close(own[key], state[key])
    expected = {k for k in state
                if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    assert set(own) == expected


def test_bgr_input_meets_the_rgb_filters(tmp_path):
    """With INPUT.FORMAT BGR the trunk on a BGR image equals torchvision's ResNet on the RGB one."""
    path = str(tmp_path / "r18.pth")
    state = save_resnet18(path)
    reference = torchvision.models.resnet18(weights=None).eval()
    reference.load_state_dict(state)
    trunk = build_backbone(resnet_cfg(pretrained=path)).trunk.eval()
    rgb = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(rgb))))
        expect = reference.layer4(reference.layer3(reference.layer2(reference.layer1(x))))
        got = trunk(rgb.flip(1))["res5"]
    torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-4)


def test_missing_and_unexpected_keys_are_named(tmp_path, caplog):
    def edit(state):
        del state["layer2.0.conv1.weight"]
        state["extra.weight"] = torch.ones(2)

    path = str(tmp_path / "r18.pth")
    save_resnet18(path, edit)
    trunk = build_backbone(resnet_cfg()).trunk
    with caplog.at_level(logging.WARNING):
        missing, unexpected = load_pretrained(trunk, path, classifier_prefixes=("fc.",))
    assert missing == ["layer2.0.conv1.weight"] and unexpected == ["extra.weight"]
    assert "layer2.0.conv1.weight" in caplog.text and "extra.weight" in caplog.text


def test_bad_checkpoints_name_the_path(tmp_path):
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(PsdiffError, match="nope.pth"):
        build_backbone(resnet_cfg(pretrained=missing))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(PsdiffError, match="corrupt.pth"):
        build_backbone(resnet_cfg(pretrained=str(corrupt)))
    other = str(tmp_path / "other.pth")
    save_resnet18(other, lambda s: s.__setitem__("conv1.weight", torch.ones(32, 3, 7, 7)))
    with pytest.raises(PsdiffError, match="conv1.weight"):
        build_backbone(resnet_cfg(pretrained=other))


def test_swin_stochastic_depth_comes_from_config():
    """MODEL.SWIN.DROP_PATH is the last block's rate, rising linearly from 0 (12 Swin-T blocks)."""
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_swin_fpn_backbone"
    cfg.MODEL.SWIN.SIZE = "T"
    cfg.MODEL.SWIN.DROP_PATH = 0.22
    trunk = build_backbone(cfg).trunk
    rates = [m.p for m in trunk.modules() if isinstance(m, torchvision.ops.StochasticDepth)]
    assert rates == pytest.approx([0.22 * i / 11 for i in range(12)])
    cfg.MODEL.SWIN.DROP_PATH = 1.0
    with pytest.raises(PsdiffError, match=r"^MODEL.SWIN.DROP_PATH = 1.0 is not in \[0, 1\)$"):
        build_backbone(cfg)


def test_bad_config_values():
    cfg = resnet_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_vgg_backbone"
    with pytest.raises(PsdiffError, match="MODEL.BACKBONE.NAME"):
        build_backbone(cfg)
    with pytest.raises(PsdiffError, match="MODEL.RESNETS.DEPTH"):
        build_backbone(resnet_cfg(depth=42))
    cfg = resnet_cfg()
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res6"]
    with pytest.raises(PsdiffError, match="IN_FEATURES"):
        build_backbone(cfg)


def test_swin_fpn_outputs_freezing_and_loading(tmp_path):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_swin_fpn_backbone"
    cfg.MODEL.SWIN.SIZE = "T"
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    backbone = build_backbone(cfg)
    out = backbone(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "p2": (1, 256, 16, 16), "p3": (1, 256, 8, 8), "p4": (1, 256, 4, 4), "p5": (1, 256, 2, 2)}
    trunk = backbone.trunk
    # FREEZE_AT 2: patch embedding and stage 1
    assert not any(p.requires_grad for p in trunk.features[:2].parameters())
    assert all(p.requires_grad for p in trunk.features[2:].parameters())
    trunk.train()
    assert not trunk.features[1].training and trunk.features[3].training
    # a checkpoint in torchvision's swin_t naming: features.* load, norm./head. are the classifier
    weight = torch.full_like(trunk.features[0][0].weight, 0.5)
    path = str(tmp_path / "swin.pth")
    torch.save({"features.0.0.weight": weight, "norm.weight": torch.ones(768),
                "head.weight": torch.ones(1000, 768)}, path)
    missing, unexpected = load_pretrained(trunk, path, ("norm.", "head."),
                                          new_prefixes=("out_norms.",))
    torch.testing.assert_close(trunk.features[0][0].weight, weight)
    assert unexpected == [] and "features.0.0.bias" in missing
    assert not any(k.startswith("out_norms.") for k in missing)
