"""Dynamic convolution of the collaborative interaction (Fig. 3): kernels from ReID features F_r.

Each box's detection features F_d (S*S tokens of width C) go through a chain of 1x1 kernels
generated from that box's ReID feature F_r: F_d W_1 -> LayerNorm -> ReLU -> W_2 -> LayerNorm ->
ReLU, as in Sparse R-CNN / DiffusionDet. Two changes keep the CDL inside the paper's parameter
budget (31M in all, Table II):
- kernel generation is low-rank: F_r -> Linear(C, r) -> Linear(r, #kernel entries), i.e. each
  box mixes r learned basis kernels plus a static one (the bias), 0.57M parameters at r = 16
  instead of DiffusionDet's 8.4M Linear(256, 32768);
- the 12,544 -> 256 flatten Linear (3.2M) becomes a learned weighted sum over the S*S bins
  (one weight per bin and channel, initialized to the mean) followed by Linear(C, C).
  `pooling="flatten"` (MODEL.PSDIFF.DC_POOLING) keeps DiffusionDet's flatten Linear, which
  knows where in the box each bin lies; it learns faster on small budgets (docs/design-notes.md).
"""

import torch
import torch.nn.functional as F
from torch import nn

from psdiff.utils.errors import PsdiffError

from .kernels import fused_applies

DC_POOLINGS = ("weighted_sum", "flatten")  # MODEL.PSDIFF.DC_POOLING choices


def dynamic_chain(features, kernels, norms):
    """The hot path: features [K, L, C] through kernels[i] [K, d_i, d_i+1], LayerNorm and ReLU.

    Batched matmuls over the K boxes, kept in one function so a fused kernel can replace it.
    """
    x = features
    for kernel, norm in zip(kernels, norms):
        x = F.relu(norm(torch.bmm(x, kernel)))
    return x


class DynamicConv(nn.Module):
    """F_d [K, S*S, C] and F_r [K, C] -> [K, C]: dynamic 1x1 convolutions, then spatial pooling."""

    def __init__(self, dim, dim_dynamic, num_dynamic, kernel_rank, pooler_resolution,
                 pooling="weighted_sum", fused=False):
        super().__init__()
        if num_dynamic < 2:
            raise PsdiffError(f"MODEL.PSDIFF.NUM_DYNAMIC must be >= 2 (dynamic conv layers), "
                              f"got {num_dynamic}")
        if pooling not in DC_POOLINGS:
            raise PsdiffError(f"MODEL.PSDIFF.DC_POOLING = '{pooling}' is not one of {DC_POOLINGS}")
        self.widths = [dim] + [dim_dynamic] * (num_dynamic - 1) + [dim]
        self.kernel_sizes = [a * b for a, b in zip(self.widths[:-1], self.widths[1:])]
        self.kernel_basis = nn.Linear(dim, kernel_rank, bias=False)
        self.kernel_generator = nn.Linear(kernel_rank, sum(self.kernel_sizes))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for width in self.widths[1:])
        bins = pooler_resolution * pooler_resolution
        self.flatten = pooling == "flatten"
        if self.flatten:
            self.out_layer = nn.Linear(bins * dim, dim)
        else:
            self.spatial_weights = nn.Parameter(torch.full((bins, dim), 1.0 / bins))
            self.out_layer = nn.Linear(dim, dim)
        self.out_norm = nn.LayerNorm(dim)
        self.fused = fused  # MODEL.PSDIFF.FUSED_KERNELS

    def generate_kernels(self, reid_features):
        """F_r [K, C] -> list of [K, d_i, d_i+1] kernels (Fig. 3: 'Linear' on F_r)."""
        params = self.kernel_generator(self.kernel_basis(reid_features))
        chunks = params.split(self.kernel_sizes, dim=-1)
        shapes = zip(self.widths[:-1], self.widths[1:])
        return [c.reshape(-1, a, b) for c, (a, b) in zip(chunks, shapes)]

    def forward(self, det_features, reid_features):
        chain = dynamic_chain
        if self.fused and fused_applies(det_features):
            from .kernels.dynamic_chain import fused_dynamic_chain as chain
        x = chain(det_features, self.generate_kernels(reid_features), self.norms)
        pooled = x.flatten(1) if self.flatten else (x * self.spatial_weights).sum(dim=1)
        return F.relu(self.out_norm(self.out_layer(pooled)))
