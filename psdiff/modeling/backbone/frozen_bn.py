"""Frozen batch norm and stage freezing, as Detectron2's FrozenBatchNorm2d and FREEZE_AT, and
folding batch norms into their convs for inference.

Person-search batches are small (2 images per GPU), too few for batch statistics, so the trunk
keeps ImageNet's statistics and affine terms fixed; frozen stages also get no gradients.
At inference a batch norm is a fixed per-channel affine map, which `fold_batchnorm` merges into
the conv before it (w' = w γ/σ, b' = β − μ γ/σ): one op instead of a conv, a multiply and an add.
"""

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.ops.misc import FrozenBatchNorm2d

FOLDABLE_NORMS = (FrozenBatchNorm2d, nn.BatchNorm2d)


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


def conv_norm_pairs(module: nn.Module):
    """(parent, conv name, norm name) of each batch norm applied to a conv's output, in
    torchvision ResNet's naming: siblings conv<k> and bn<k>, or consecutive Sequential items."""
    for parent in module.modules():
        children = dict(parent.named_children())
        names = list(children)
        if isinstance(parent, nn.Sequential):
            candidates = zip(names, names[1:])
        else:
            candidates = [(n, "bn" + n[len("conv"):]) for n in names if n.startswith("conv")]
        for conv, norm in candidates:
            if (isinstance(children[conv], nn.Conv2d)
                    and isinstance(children.get(norm), FOLDABLE_NORMS)):
                yield parent, conv, norm


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold, in place, each batch norm in eval mode into the conv before it (the norm becomes
    an Identity); modules in training mode keep theirs, so gradients go where they did."""
    for parent, conv_name, norm_name in list(conv_norm_pairs(module)):
        conv, norm = getattr(parent, conv_name), getattr(parent, norm_name)
        if conv.training or norm.training or norm.running_var is None:
            continue
        setattr(parent, conv_name, fuse_conv_bn_eval(conv, norm))
        setattr(parent, norm_name, nn.Identity())
    return module
