"""Loading a local torchvision ImageNet checkpoint into a trunk, naming every key that differs.

Never downloads: MODEL.BACKBONE.PRETRAINED (and the teacher's TEACHER.BACKBONE.PRETRAINED) is a
path to a `.pth` state_dict as saved by
`torch.save(torchvision.models.resnet50(weights=...).state_dict(), path)`.
"""

import logging

import torch
from torch import nn

from psdiff.utils.errors import PsdiffError
from psdiff.utils.weights import load_pth

logger = logging.getLogger(__name__)


def _read_state_dict(path: str, key: str) -> dict:
    """The tensors of a `.pth` file, or a PsdiffError naming the config `key` and the path."""
    state = load_pth(path, key)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PsdiffError(f"{key}: {path} is not a state_dict of tensors")
    return state


def load_pretrained(trunk: nn.Module, path: str, classifier_prefixes=(), new_prefixes=(),
                    bgr_input_key: str = "", key: str = "MODEL.BACKBONE.PRETRAINED") -> tuple:
    """Load `path` into `trunk`; returns (missing, unexpected) key names, both also logged.

    Keys under `classifier_prefixes` (the ImageNet head, e.g. "fc.") are dropped on purpose;
    trunk keys under `new_prefixes` are layers no ImageNet checkpoint has, so not "missing".
    torchvision trains on RGB: `bgr_input_key` names the first conv's weight, whose input
    channels are reversed so the model's BGR images (INPUT.FORMAT) meet the filters they expect.
    A key whose shape differs means a checkpoint of another architecture: PsdiffError naming
    `key`, the config key that gave `path`.
    """
    state = _read_state_dict(path, key)
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
