"""The tiny PSDiff config of the model tests: ResNet-18, 32 channels, 16 proposals, 2 steps."""

from psdiff.config import get_cfg

EMB_DIM = 16

# ResNet-18 with trainable BN: with random weights and FrozenBN, a few large optimizer steps
# blow the FPN features up (the paper's runs start from ImageNet weights).
TINY_OVERRIDES = [
    "MODEL.RESNETS.DEPTH", "18",
    "MODEL.RESNETS.NORM", "BN",
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.PSDIFF.HIDDEN_DIM", "32",
    "MODEL.PSDIFF.EMB_DIM", str(EMB_DIM),
    "MODEL.PSDIFF.NHEADS", "4",
    "MODEL.PSDIFF.DIM_FEEDFORWARD", "64",
    "MODEL.PSDIFF.DIM_DYNAMIC", "8",
    "MODEL.PSDIFF.KERNEL_RANK", "4",
    "MODEL.PSDIFF.NUM_PROPOSALS_TRAIN", "16",
    "MODEL.PSDIFF.NUM_PROPOSALS_TEST", "16",
    "MODEL.PSDIFF.SAMPLE_STEPS", "2",
    "TEST.SCORE_THRESH", "0.0",
]


def tiny_cfg(*overrides):
    """get_cfg() on CPU with TINY_OVERRIDES, then `overrides` (alternating keys and values)."""
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *TINY_OVERRIDES, *overrides])
    return cfg
