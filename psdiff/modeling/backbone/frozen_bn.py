"""Frozen batch norm and stage freezing, as Detectron2's FrozenBatchNorm2d and FREEZE_AT.

Person-search batches are small (2 images per GPU), too few for batch statistics, so the trunk
keeps ImageNet's statistics and affine terms fixed; frozen stages also get no gradients.
"""

from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d / SyncBatchNorm in `module` by a FrozenBatchNorm2d holding its
    current statistics and affine terms; returns the (possibly new) module."""
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        if module.track_running_stats:
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new_child = convert_frozen_batchnorm(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def freeze(module: nn.Module) -> nn.Module:
    """A stage below FREEZE_AT: no parameter gets gradients and its batch norms are frozen."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return convert_frozen_batchnorm(module)
