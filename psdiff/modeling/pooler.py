"""RoIAlign over FPN levels: the first step of the CDL (Fig. 2), F_d = RoIAlign(c, b_t).

Detectron2's `ROIPooler` with ROIAlignV2 (half-pixel aligned sampling) in a few lines: each box
reads the FPN level that matches its size, level = floor(4 + log2(sqrt(area) / 224)), clamped to
the levels present. torchvision's `MultiScaleRoIAlign` infers scales from shapes and samples
unaligned, so it is not used. On a CPU, RoIAlign is `roi_align_gather` (the same numbers,
faster forward and backward); on CUDA, torchvision's kernel.

Each level pools only its own boxes, found with `nonzero`, whose output size depends on the
data; a CUDA graph cannot capture that, so while one is being captured (TEST.CUDA_GRAPH) every
level pools every box and each box keeps its own level's result: the same numbers, at a fixed
shape, for more RoIAlign work.
"""

import math

import torch
from torch import nn
from torchvision.ops import roi_align

from .roi_align_gather import roi_align_gather


def assign_levels(boxes, min_level, max_level, canonical_size=224, canonical_level=4):
    """FPN level index (0 = min_level) of each xyxy box, by the FPN paper's Eq. 1."""
    widths = (boxes[:, 2] - boxes[:, 0]).clamp(min=0)
    heights = (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    sizes = (widths * heights).sqrt()
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_size + 1e-8))
    return levels.clamp(min=min_level, max=max_level).long() - min_level


class MultiLevelRoIAlign(nn.Module):
    """Pools an S x S feature per box from the FPN level its size selects."""

    def __init__(self, strides, output_size=7, sampling_ratio=2):
        """`strides`: the stride of each feature map, finest first (e.g. 4, 8, 16, 32)."""
        super().__init__()
        self.strides = list(strides)
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio
        self.min_level = int(math.log2(self.strides[0]))
        self.max_level = int(math.log2(self.strides[-1]))

    def forward(self, features, boxes):
        """features: list of [B, C, H_l, W_l]; boxes: [B, N, 4] xyxy input pixels.

        Returns [B * N, C, S, S], rows in (image, box) order.
        """
        num_images, num_boxes = boxes.shape[:2]
        flat = boxes.reshape(-1, 4)
        image_index = torch.arange(num_images, device=boxes.device)[:, None].expand(
            num_images, num_boxes).reshape(-1)
        rois = torch.cat([image_index[:, None].to(flat.dtype), flat], dim=1)
        levels = assign_levels(flat, self.min_level, self.max_level)
        if features[0].is_cuda and torch.cuda.is_current_stream_capturing():
            return self.pool_every_level(features, rois, levels)
        size = self.output_size
        out = flat.new_zeros(flat.shape[0], features[0].shape[1], size, size)
        for level, feature in enumerate(features):
            index = torch.nonzero(levels == level).squeeze(1)
            out[index] = self.pool(feature, level, rois[index]).to(out.dtype)
        return out

    def pool(self, feature, level, rois):
        """RoIAlign of `rois` [K, 5] (image index, xyxy) on the map of level index `level`."""
        args = (self.output_size, 1.0 / self.strides[level], self.sampling_ratio)
        if feature.is_cuda or self.sampling_ratio <= 0:  # <= 0: torchvision's adaptive sampling
            return roi_align(feature, rois, *args, aligned=True)
        return roi_align_gather(feature, rois, *args)

    def pool_every_level(self, features, rois, levels):
        """`forward` at a fixed shape: every box pooled at every level, each keeping the result
        of its own level (`levels`, [K] level indices)."""
        out = None
        for level, feature in enumerate(features):
            pooled = self.pool(feature, level, rois).to(rois.dtype)
            out = pooled if out is None else torch.where((levels == level)[:, None, None, None],
                                                         pooled, out)
        return out
