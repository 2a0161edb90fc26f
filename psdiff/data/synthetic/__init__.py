"""The synthetic person-search benchmark: procedural scenes written in the exact on-disk formats
of CUHK-SYSU and PRW, so the real loaders read it (the demo and the tests run on it).

scenes.py draws persons, backgrounds and clutter; writers.py lays them out as the datasets' own
files (`write_cuhk_sysu`, `write_prw`) and returns what it wrote (`GroundTruth`).
"""

from .writers import CUHK_GALLERY_SIZES, PRW_CAMERA_SIZES, GroundTruth, write_cuhk_sysu, write_prw

__all__ = ["CUHK_GALLERY_SIZES", "GroundTruth", "PRW_CAMERA_SIZES", "write_cuhk_sysu", "write_prw"]
