"""Readers of the CUHK-SYSU and PRW on-disk formats (the synthetic benchmark that writes them is
psdiff.data.synthetic)."""

from .cuhk_sysu import available_gallery_sizes, load_cuhk_sysu
from .prw import load_prw

__all__ = ["available_gallery_sizes", "load_cuhk_sysu", "load_prw"]
