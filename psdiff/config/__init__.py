"""Configuration: `get_cfg()` returns a fresh copy of every default (see defaults.py)."""

from .config import CfgNode
from .defaults import _C


def get_cfg() -> CfgNode:
    """A mutable copy of the default config; merge a YAML file and overrides into it."""
    return _C.clone()


__all__ = ["CfgNode", "get_cfg"]
