"""RoIAlignV2 as one weighted gather: torchvision's `roi_align(aligned=True)`, faster on a CPU.

Each output bin is the mean of sampling_ratio² bilinear samples, each a weighted sum of four
map pixels, so a whole RoIAlign is a gather of 4·sampling_ratio² pixels per bin with fixed
weights: `embedding_bag` over the map's pixels. Its backward is a vectorized index-add, where
torchvision's CPU kernel scatters every sample of every channel one by one; in the CDL's
training step that backward is most of what pooling costs (docs/benchmarks.md). The sampling
rule is torchvision's: points more than one pixel outside the map read 0, the others are clamped
to the map.
"""

import torch
import torch.nn.functional as F


def axis_taps(start, end, length, output_size, sampling_ratio):
    """Bilinear taps along one axis for boxes spanning [start, end) in map pixels.

    Returns (index, weight), each [K, output_size, sampling_ratio, 2]: per bin and sample, the
    two neighbouring pixels and their weights (0 for samples beyond one pixel outside the map).
    """
    count = output_size * sampling_ratio
    fraction = (torch.arange(count, device=start.device, dtype=start.dtype) + 0.5) / count
    points = start[:, None] + fraction * (end - start)[:, None]  # [K, count]
    inside = (points >= -1) & (points <= length)
    points = points.clamp(0, length - 1)
    low = points.floor()
    high = (low + 1).clamp(max=length - 1)
    offset = points - low
    index = torch.stack([low, high], dim=-1).long()
    weight = torch.stack([1 - offset, offset], dim=-1) * inside[..., None]
    shape = (start.shape[0], output_size, sampling_ratio, 2)
    return index.reshape(shape), weight.reshape(shape)


def roi_align_gather(feature, rois, output_size, spatial_scale, sampling_ratio):
    """RoIAlignV2 of `rois` [K, 5] (image index, x1, y1, x2, y2) on `feature` [B, C, H, W].

    Returns [K, C, output_size, output_size], as `torchvision.ops.roi_align(feature, rois,
    output_size, spatial_scale, sampling_ratio, aligned=True)` for sampling_ratio > 0.
    """
    _, channels, height, width = feature.shape
    num_rois = rois.shape[0]
    boxes = rois[:, 1:].to(feature.dtype) * spatial_scale - 0.5  # half-pixel aligned
    y_index, y_weight = axis_taps(boxes[:, 1], boxes[:, 3], height, output_size, sampling_ratio)
    x_index, x_weight = axis_taps(boxes[:, 0], boxes[:, 2], width, output_size, sampling_ratio)
    # taps of a bin: [K, bin_y, bin_x, sample_y, corner_y, sample_x, corner_x]
    rows = y_index[:, :, None, :, :, None, None]
    cols = x_index[:, None, :, None, None, :, :]
    image = rois[:, 0].long().reshape(num_rois, 1, 1, 1, 1, 1, 1)
    pixel = (image * height + rows) * width + cols
    weight = (y_weight[:, :, None, :, :, None, None] * x_weight[:, None, :, None, None, :, :]
              / sampling_ratio ** 2)
    bins, taps = num_rois * output_size * output_size, 4 * sampling_ratio ** 2
    # row-major: for one image the permuted view is column-major, which embedding_bag reads
    # about 8x slower (inference pools one image at a time)
    pixels = feature.permute(0, 2, 3, 1).reshape(-1, channels).contiguous()
    pooled = F.embedding_bag(pixel.reshape(bins, taps), pixels, mode="sum",
                             per_sample_weights=weight.reshape(bins, taps))
    return pooled.reshape(num_rois, output_size, output_size, channels).permute(0, 3, 1, 2)
