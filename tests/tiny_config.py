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


def write_e0_cache(datasets_root: str, path: str, emb_dim: int = EMB_DIM) -> None:
    """The e0 cache of `synthetic_cuhk_sysu_train` under `datasets_root`, embedded by an
    untrained ResNet-18 teacher and written by the real cache builder."""
    import torch

    from psdiff.data import get_train_dicts
    from psdiff.data.teacher_targets import save_targets
    from psdiff.teacher.inference import build_targets
    from psdiff.teacher.network import ReIDNetwork

    dicts = get_train_dicts("synthetic_cuhk_sysu_train", datasets_root)
    torch.manual_seed(0)
    network = ReIDNetwork(depth=18, emb_dim=emb_dim).eval()
    save_targets(path, build_targets(network, dicts, "synthetic_cuhk_sysu_train", (64, 32)))


def train_net_argv(datasets_root: str, cache: str, output_dir: str, *overrides) -> list:
    """tools/train_net.py arguments for a few CPU iterations of the tiny PSDiff on
    `synthetic_cuhk_sysu_train` with the e0 cache `cache`, no evaluation; then `overrides`."""
    return [
        "MODEL.DEVICE", "cpu", *TINY_OVERRIDES, "DATASETS.ROOT", datasets_root,
        "DATASETS.TRAIN", "('synthetic_cuhk_sysu_train',)", "DATASETS.TEST", "()",
        "TEACHER.CACHE", cache, "OUTPUT_DIR", output_dir, "SEED", "1",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "6", "SOLVER.WARMUP_ITERS", "0",
        "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.LOG_PERIOD", "1", "TEST.EVAL_PERIOD", "0",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
        "DATALOADER.NUM_WORKERS", "0", *overrides,
    ]
