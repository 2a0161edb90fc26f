"""BACKBONE_REGISTRY and `build_backbone(cfg)`: the feature extractor named by the config."""

from fvcore.common.registry import Registry

from psdiff.utils.errors import PsdiffError

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """Functions `fn(cfg) -> nn.Module` building a backbone whose forward
maps a normalized image batch [B, 3, H, W] to an OrderedDict of FPN maps, with attributes
`out_features`, `out_channels` and `strides` (dict name -> stride). A backbone may also return
trunk maps after them, listed in `stage_channels` (dict name -> channels) with their `strides`:
MODEL.PSDIFF.EMB_PARTS_IN_FEATURE reads one."""


def build_backbone(cfg):
    """The backbone of `cfg.MODEL.BACKBONE.NAME` (e.g. "build_resnet_fpn_backbone")."""
    name = cfg.MODEL.BACKBONE.NAME
    if name not in BACKBONE_REGISTRY:
        known = sorted(k for k, _ in BACKBONE_REGISTRY)
        raise PsdiffError(f"MODEL.BACKBONE.NAME = '{name}' is not one of {known}")
    return BACKBONE_REGISTRY.get(name)(cfg)
