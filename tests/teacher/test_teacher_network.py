"""The teacher's ImageNet initialization: a local torchvision checkpoint loads as is (RGB, no
channel flip), and a missing, corrupt or incomplete file is one line naming
TEACHER.BACKBONE.PRETRAINED and the path."""

import pytest
import torch
import torchvision

from psdiff.teacher.network import ReIDNetwork
from psdiff.utils.errors import PsdiffError


def _save_resnet18(path, drop=()):
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    for key in drop:
        del state[key]
    torch.save(state, path)
    return state


def test_pretrained_trunk_loads_unflipped(tmp_path):
    path = str(tmp_path / "r18.pth")
    state = _save_resnet18(path)
    network = ReIDNetwork(depth=18, emb_dim=8, pretrained=path)
    conv1, layer4 = network.body[0], network.body[7]
    torch.testing.assert_close(conv1.weight, state["conv1.weight"])  # RGB in, as torchvision
    torch.testing.assert_close(layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_bad_pretrained_files_are_one_line(tmp_path):
    missing = str(tmp_path / "nope.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    partial = str(tmp_path / "partial.pth")
    _save_resnet18(partial, drop=("layer3.0.conv1.weight",))
    cases = [(missing, "no such file"), (str(corrupt), "cannot read"),
             (partial, "lacks trunk weights, e.g. 'layer3.0.conv1.weight'")]
    for path, reason in cases:
        with pytest.raises(PsdiffError) as err:
            ReIDNetwork(depth=18, emb_dim=8, pretrained=path)
        message = str(err.value)
        assert message.startswith("TEACHER.BACKBONE.PRETRAINED") and path in message
        assert reason in message and "\n" not in message
