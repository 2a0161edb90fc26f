"""The synthetic person-search benchmark: procedural scenes written in the exact on-disk formats
of CUHK-SYSU and PRW, so the real loaders read it (the demo and the tests run on it).

scenes.py draws persons, backgrounds and clutter; writers.py lays them out as the datasets' own
files (`write_cuhk_sysu`, `write_prw`) and returns what it wrote (`GroundTruth`). The trees
are registered as the catalog names `synthetic_cuhk_sysu_*` and `synthetic_prw_*`, under
`<datasets root>/synthetic/`.
"""

import os

from psdiff.data.catalog import register_dataset
from psdiff.data.datasets import CUHK_SYSU, PRW

from .writers import CUHK_GALLERY_SIZES, PRW_CAMERA_SIZES, GroundTruth, write_cuhk_sysu, write_prw

_HINT = ("it is synthetic: write it with `python tools/make_synthetic.py --output-dir {parent}` "
         "(see datasets/README.md)")
register_dataset("synthetic_cuhk_sysu", os.path.join("synthetic", "CUHK-SYSU"), CUHK_SYSU, _HINT)
register_dataset("synthetic_prw", os.path.join("synthetic", "PRW"), PRW, _HINT)

__all__ = ["CUHK_GALLERY_SIZES", "GroundTruth", "PRW_CAMERA_SIZES", "write_cuhk_sysu", "write_prw"]
