"""Readers of the CUHK-SYSU and PRW on-disk formats, each registered in the catalog with its search
protocol (the synthetic benchmark that writes these formats is psdiff.data.synthetic)."""

from .cuhk_sysu import CUHK_SYSU, available_gallery_sizes, load_cuhk_sysu
from .prw import PRW, load_prw

__all__ = ["CUHK_SYSU", "PRW", "available_gallery_sizes", "load_cuhk_sysu", "load_prw"]
