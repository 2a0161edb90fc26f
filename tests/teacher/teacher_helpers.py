"""Helpers of the teacher tests: tiny configs on the synthetic tree."""

import os

from psdiff.config import get_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "teacher", "hhcl_r18_synthetic.yaml")


def tiny_cfg(datasets_root, output_dir, *overrides):
    """The synthetic R18 teacher config on `datasets_root`, 32-d embeddings, plus overrides."""
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["DATASETS.ROOT", datasets_root, "OUTPUT_DIR", str(output_dir),
                         "MODEL.PSDIFF.EMB_DIM", "32", "TEACHER.GALLERY_SIZE", "20",
                         "TEACHER.QUEUE_SIZE", "50", *overrides])
    return cfg
