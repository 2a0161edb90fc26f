"""Loading torchvision ImageNet weights into a trunk, naming every key that differs.

MODEL.BACKBONE.PRETRAINED (and the teacher's TEACHER.BACKBONE.PRETRAINED) is either a path to a
`.pth` state_dict as saved by `torch.save(torchvision.models.resnet50(weights=...).state_dict(),
path)`, or torchvision's name of the weights, `torchvision://ResNet50_Weights.IMAGENET1K_V1`:
torchvision's weights API fetches those once into the torch hub cache
(`torch.hub.get_dir()/checkpoints`, under `$TORCH_HOME`), and the cached file is used without
a network from then on. Offline, a missing file is one line saying which file to place where.
A paper-sized trunk (ResNet-50 and up, Swin) about to train from random weights gets a warning.
"""

import logging
import os
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from psdiff.utils import comm
from psdiff.utils.errors import PsdiffError
from psdiff.utils.weights import load_pth

logger = logging.getLogger(__name__)

# the children of a torchvision ResNet that the ReID teacher's `body` holds, in order
TEACHER_BODY = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
TORCHVISION_PREFIX = "torchvision://"  # then <WeightsEnum>.<NAME>, as torchvision.models.get_weight


def _torchvision_weights(value: str, key: str):
    """The torchvision weights enum member named by `torchvision://<WeightsEnum>.<NAME>`."""
    name = value[len(TORCHVISION_PREFIX):]
    try:
        return torchvision.models.get_weight(name)
    except (KeyError, ValueError):
        enum = getattr(torchvision.models, name.split(".")[0], None)
        members = getattr(enum, "__members__", {}) if isinstance(enum, type) else {}
        known = ", ".join(f"{enum.__name__}.{m}" for m in members) if members else (
            "e.g. ResNet50_Weights.IMAGENET1K_V1, Swin_B_Weights.IMAGENET1K_V1")
        raise PsdiffError(f"{key}: {value} names no torchvision weights; expected "
                          f"{TORCHVISION_PREFIX}<WeightsEnum>.<NAME> ({known})")


def _fetch(weights, path: str, key: str, value: str) -> None:
    """Download `weights` into the hub cache at `path` with torchvision's API (hash checked),
    unless the file is there; a failure says which file to place where."""
    if os.path.isfile(path):
        return
    logger.info(f"{key}: fetching {value} from {weights.url} into {path}")
    try:
        weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as e:  # offline (URLError), a proxy, a hash mismatch: the same advice
        reason = " ".join(str(e).split()) or type(e).__name__
        raise PsdiffError(f"{key}: {value} is not in the torch hub cache and cannot be "
                          f"downloaded ({reason}); offline, fetch {weights.url} elsewhere and "
                          f"place it at {path}")


def resolve_pretrained(value: str, key: str) -> str:
    """The local file of a PRETRAINED value: a path as given, or the torch hub cache file of
    `torchvision://<WeightsEnum>.<NAME>`, fetched when missing (by rank 0 first, so ranks
    sharing the cache download it once). Call it on every rank."""
    if not value.startswith(TORCHVISION_PREFIX):
        return value
    weights = _torchvision_weights(value, key)
    filename = os.path.basename(urlparse(weights.url).path)  # torch.hub's own naming
    path = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    comm.run_on_main(lambda: _fetch(weights, path, key, value))
    _fetch(weights, path, key, value)  # a machine whose cache rank 0 does not share
    return path


def warn_random_init(key: str, weights_name: str) -> None:
    """Warn that a paper-sized trunk trains from random weights: the paper starts from the
    ImageNet weights `weights_name` (the caller checks no checkpoint replaces them)."""
    logger.warning(f"{key} is empty: the backbone starts from random weights, while the paper "
                   f"starts from ImageNet; set {key} {TORCHVISION_PREFIX}{weights_name}")


def _read_state_dict(path: str, key: str) -> dict:
    """The tensors of a `.pth` file, or a PsdiffError naming the config `key` and the path."""
    state = load_pth(path, key)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PsdiffError(f"{key}: {path} is not a state_dict of tensors")
    return state


def load_pretrained(trunk: nn.Module, path: str, classifier_prefixes=(), new_prefixes=(),
                    bgr_input_key: str = "", key: str = "MODEL.BACKBONE.PRETRAINED") -> tuple:
    """Load `path` (a file, or torchvision's weights name) into `trunk`; returns (missing,
    unexpected) key names, both also logged.

    Keys under `classifier_prefixes` (the ImageNet head, e.g. "fc.") are dropped on purpose;
    trunk keys under `new_prefixes` are layers no ImageNet checkpoint has, so not "missing".
    torchvision trains on RGB: `bgr_input_key` names the first conv's weight, whose input
    channels are reversed so the model's BGR images (INPUT.FORMAT) meet the filters they expect.
    A key whose shape differs means a checkpoint of another architecture: PsdiffError naming
    `key`, the config key that gave `path`.
    """
    path = resolve_pretrained(path, key)
    return load_trunk_state(trunk, _read_state_dict(path, key), path, classifier_prefixes,
                            new_prefixes, bgr_input_key, key)


def load_trunk_state(trunk: nn.Module, state: dict, path: str, classifier_prefixes=(),
                     new_prefixes=(), bgr_input_key: str = "",
                     key: str = "MODEL.BACKBONE.PRETRAINED") -> tuple:
    """`load_pretrained` for a state_dict already read from `path` (named in messages)."""
    state = dict(state)
    if bgr_input_key in state:
        state[bgr_input_key] = state[bgr_input_key].flip(1)
    dropped = [k for k in state if k.startswith(tuple(classifier_prefixes))]
    state = {k: v for k, v in state.items() if k not in dropped}
    own = trunk.state_dict()
    for name, value in state.items():
        if name in own and own[name].shape != value.shape:
            raise PsdiffError(
                f"{key}: {path} holds {name} of shape {tuple(value.shape)}, the "
                f"backbone expects {tuple(own[name].shape)} (a checkpoint of another architecture?)"
            )
    result = trunk.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(tuple(new_prefixes))]
    unexpected = list(result.unexpected_keys)
    logger.info("Loaded %d tensors from %s (dropped classifier keys: %s)",
                len(state) - len(unexpected), path, dropped or "none")
    if missing:
        logger.warning("Backbone keys missing from %s, left at random init: %s", path, missing)
    if unexpected:
        logger.warning("Keys of %s that the backbone does not have, ignored: %s", path, unexpected)
    return missing, unexpected


def teacher_trunk_state(network_state: dict) -> dict:
    """The ResNet trunk of a ReID teacher's weights (`ReIDNetwork`, whose `body.<i>` is the
    i-th of TEACHER_BODY) under torchvision's names, as a trunk loads them."""
    trunk = {}
    for name, value in network_state.items():
        if name.startswith("body."):
            _, index, rest = name.split(".", 2)
            trunk[f"{TEACHER_BODY[int(index)]}.{rest}"] = value
    return trunk
