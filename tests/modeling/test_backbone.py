"""Backbones: FPN outputs, FREEZE_AT, frozen BN, loading a checkpoint key by key, and ImageNet
weights named the torchvision way, read from a temporary torch hub cache (never the network)."""

import logging
from pathlib import Path

import pytest
import torch
import torchvision
from tools_loader import load_tool
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from psdiff.config import get_cfg
from psdiff.modeling.backbone import build_backbone
from psdiff.modeling.backbone.pretrained import load_pretrained
from psdiff.teacher.network import ReIDNetwork
from psdiff.utils.errors import PsdiffError

REPO = Path(__file__).resolve().parents[2]


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
    # the pyramid first, then the trunk's own stages (MODEL.PSDIFF.EMB_PARTS_IN_FEATURE)
    assert list(out) == ["p2", "p3", "p4", "p5", "res2", "res3", "res4", "res5"]
    assert backbone.out_features == ["p2", "p3", "p4", "p5"]
    assert backbone.strides == {"p2": 4, "p3": 8, "p4": 16, "p5": 32,
                                "res2": 4, "res3": 8, "res4": 16, "res5": 32}
    assert backbone.stage_channels == {"res2": 64, "res3": 128, "res4": 256, "res5": 512}
    for name, feature in out.items():
        s = backbone.strides[name]
        channels = backbone.stage_channels.get(name, backbone.out_channels)
        assert feature.shape == (2, channels, 64 // s, 96 // s)


def test_unused_trailing_stages_are_not_built():
    """OUT_FEATURES res3, res4: layer4 does not exist (DDP would see parameters without grads)."""
    cfg = resnet_cfg()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4"]
    backbone = build_backbone(cfg)
    assert not hasattr(backbone.trunk, "layer4")
    out = backbone(torch.randn(1, 3, 64, 64))
    assert {k: v.shape[-1] for k, v in out.items()} == {"p3": 8, "p4": 4, "res3": 8, "res4": 4}
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
    pyramid = {k: tuple(v.shape) for k, v in out.items() if k in backbone.out_features}
    assert pyramid == {
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


# torchvision's files for the weights the paper configs name, as torch.hub caches them
R50_FILE, SWIN_B_FILE = "resnet50-0676ba61.pth", "swin_b-68c6b09e.pth"
R18_FILE = "resnet18-f37072fd.pth"
R50_WEIGHTS = "torchvision://ResNet50_Weights.IMAGENET1K_V1"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache under TORCH_HOME; any download goes to a closed local port."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints


def _paper_cfg(name):
    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / "configs" / name))
    return cfg


def test_paper_configs_name_torchvision_imagenet_weights():
    expected = {"ResNet50_Weights.IMAGENET1K_V1": lambda cfg: cfg.MODEL.RESNETS.DEPTH == 50,
                "Swin_B_Weights.IMAGENET1K_V1": lambda cfg: cfg.MODEL.SWIN.SIZE == "B"}
    configs = sorted((REPO / "configs").glob("psdiff_*.yaml")) + sorted(
        (REPO / "configs").glob("cross/*.yaml")) + sorted((REPO / "configs").glob("ablations/*"))
    assert len(configs) == 14
    for path in configs:
        cfg = _paper_cfg(path.relative_to(REPO / "configs"))
        name = cfg.MODEL.BACKBONE.PRETRAINED.removeprefix("torchvision://")
        assert name in expected and expected[name](cfg), path
    for path in sorted((REPO / "configs" / "teacher").glob("*_r50_*.yaml")):
        cfg = _paper_cfg(path.relative_to(REPO / "configs"))
        assert cfg.TEACHER.BACKBONE.PRETRAINED == R50_WEIGHTS and cfg.TEACHER.BACKBONE.DEPTH == 50
    synthetic = _paper_cfg("teacher/hhcl_r18_synthetic.yaml")
    assert synthetic.TEACHER.BACKBONE.PRETRAINED == ""  # tests and the demo stay offline


def test_paper_configs_load_their_weights_from_the_hub_cache(hub, caplog):
    stem = torch.randn(64, 3, 7, 7)
    torch.save({"conv1.weight": stem, "fc.weight": torch.ones(1000, 2048)}, hub / R50_FILE)
    patch = torch.randn(128, 3, 4, 4)
    torch.save({"features.0.0.weight": patch, "head.weight": torch.ones(1000, 1024)},
               hub / SWIN_B_FILE)
    with caplog.at_level(logging.INFO):
        r50 = build_backbone(_paper_cfg("psdiff_r50.yaml")).trunk
        swin = build_backbone(_paper_cfg("psdiff_swinb.yaml")).trunk
    # BGR input: the channels of the first filters are reversed
    torch.testing.assert_close(r50.conv1.weight, stem.flip(1))
    torch.testing.assert_close(swin.features[0][0].weight, patch.flip(1))
    assert f"Loaded 1 tensors from {hub / R50_FILE}" in caplog.text
    assert "random weights" not in caplog.text


def test_teacher_resnet18_weights_by_name(hub):
    from psdiff.teacher.network import ReIDNetwork

    state = save_resnet18(str(hub / R18_FILE))
    network = ReIDNetwork(depth=18, emb_dim=8,
                          pretrained="torchvision://ResNet18_Weights.IMAGENET1K_V1")
    torch.testing.assert_close(network.body[0].weight, state["conv1.weight"])  # RGB crops
    torch.testing.assert_close(network.body[7][1].bn2.bias, state["layer4.1.bn2.bias"])


def test_missing_weights_offline_say_which_file_to_place_where(hub, tmp_path, capsys):
    url = f"https://download.pytorch.org/models/{R50_FILE}"
    status = load_tool("train_net").run([
        "--config-file", str(REPO / "configs" / "psdiff_r50.yaml"), "MODEL.DEVICE", "cpu",
        "OUTPUT_DIR", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(f"error: MODEL.BACKBONE.PRETRAINED: {R50_WEIGHTS} is not in the torch "
                          "hub cache and cannot be downloaded (")
    assert err.endswith(f"); offline, fetch {url} elsewhere and place it at {hub / R50_FILE}\n")
    assert not (hub / R50_FILE).exists()


def test_unknown_torchvision_weights_name_lists_the_known_ones():
    with pytest.raises(PsdiffError) as err:
        build_backbone(resnet_cfg(pretrained="torchvision://ResNet18_Weights.IMAGENET9K"))
    assert str(err.value) == (
        "MODEL.BACKBONE.PRETRAINED: torchvision://ResNet18_Weights.IMAGENET9K names no "
        "torchvision weights; expected torchvision://<WeightsEnum>.<NAME> "
        "(ResNet18_Weights.IMAGENET1K_V1, ResNet18_Weights.DEFAULT)")
    with pytest.raises(PsdiffError, match="e.g. ResNet50_Weights.IMAGENET1K_V1"):
        build_backbone(resnet_cfg(pretrained="torchvision://resnet50"))


def test_random_init_of_a_paper_backbone_is_a_warning(caplog):
    from psdiff.teacher.network import ReIDNetwork

    def warnings(cfg, build=build_backbone):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            build(cfg)
        return [r.getMessage() for r in caplog.records if "random weights" in r.getMessage()]

    cfg = _paper_cfg("psdiff_r50.yaml")
    cfg.MODEL.BACKBONE.PRETRAINED = ""
    assert warnings(cfg) == [
        "MODEL.BACKBONE.PRETRAINED is empty: the backbone starts from random weights, while "
        f"the paper starts from ImageNet; set MODEL.BACKBONE.PRETRAINED {R50_WEIGHTS}"]
    cfg.MODEL.WEIGHTS = "output/model_final.pth"  # a checkpoint replaces the init: no warning
    assert warnings(cfg) == []
    assert warnings(resnet_cfg(depth=18)) == []  # the synthetic and test configs' ResNet-18
    teacher = _paper_cfg("teacher/hhcl_r50_cuhk.yaml")
    teacher.TEACHER.BACKBONE.PRETRAINED = ""
    assert len(warnings(teacher, ReIDNetwork.from_config)) == 1


def save_teacher(path, depth=18):
    """A teacher checkpoint as tools/train_teacher.py writes it, its BN statistics moved off
    their initial values by one training-mode forward."""
    network = ReIDNetwork(depth=depth, emb_dim=8)
    with torch.no_grad():
        network.train()(torch.randn(4, 3, 64, 32))
    torch.save({"model": {f"network.{k}": v for k, v in network.state_dict().items()}}, path)
    return network.eval()


def teacher_init_cfg(weights, **kwargs):
    cfg = resnet_cfg(norm="BN", **kwargs)
    cfg.MODEL.BACKBONE.INIT_FROM_TEACHER = True
    cfg.TEACHER.WEIGHTS = weights
    return cfg


def test_trunk_starts_from_the_teachers(tmp_path):
    """INIT_FROM_TEACHER: on a BGR image the trunk computes what the teacher's trunk computes on
    the RGB one, up to res4 (the teacher's last stage has stride 1, the detector's 2)."""
    path = str(tmp_path / "teacher.pth")
    teacher = save_teacher(path)
    trunk = build_backbone(teacher_init_cfg(path)).trunk.eval()
    rgb = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expect = teacher.body[:7](rgb)  # conv1 ... layer3
        got = trunk(rgb.flip(1))["res4"]
    torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-4)


def test_teacher_init_errors_name_the_key(tmp_path):
    with pytest.raises(PsdiffError, match="INIT_FROM_TEACHER True needs TEACHER.WEIGHTS"):
        build_backbone(teacher_init_cfg(""))
    path = str(tmp_path / "teacher.pth")
    save_teacher(path)
    with pytest.raises(PsdiffError, match="set one"):
        build_backbone(teacher_init_cfg(path, pretrained="torchvision://ResNet18_Weights.DEFAULT"))
    resnet50 = str(tmp_path / "teacher_r50.pth")
    save_teacher(resnet50, depth=50)
    with pytest.raises(PsdiffError, match="TEACHER.WEIGHTS.*another architecture"):
        build_backbone(teacher_init_cfg(resnet50))
    swin = teacher_init_cfg(path)
    swin.MODEL.BACKBONE.NAME = "build_swin_fpn_backbone"
    with pytest.raises(PsdiffError, match="INIT_FROM_TEACHER True needs a ResNet backbone"):
        build_backbone(swin)


def test_a_checkpoint_to_load_needs_no_teacher():
    """Evaluation (MODEL.WEIGHTS) replaces every weight: a run's config with INIT_FROM_TEACHER
    builds without the teacher's file."""
    cfg = teacher_init_cfg("")
    cfg.MODEL.WEIGHTS = "run/model_final.pth"
    assert build_backbone(cfg).trunk.conv1.weight.shape == (64, 3, 7, 7)
