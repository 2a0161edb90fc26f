"""The gather RoIAlign gives torchvision's roi_align(aligned=True) numbers and gradients."""

import pytest
import torch
from torchvision.ops import roi_align

from psdiff.modeling.roi_align_gather import roi_align_gather


def boxes_everywhere(generator, num, height, width, stride):
    """Boxes inside the map, across its borders, wholly outside it, and thinner than a pixel."""
    size = torch.tensor([width, height, width, height], dtype=torch.float32) * stride
    corner = (torch.rand(num, 2, generator=generator) * 1.6 - 0.3) * size[:2]
    extent = torch.rand(num, 2, generator=generator) * size[:2] * 0.7 + 0.2
    boxes = torch.cat([corner, corner + extent], dim=1)
    fixed = torch.tensor([[-40.0, -40.0, -12.0, -9.0], [3.0, 3.0, 3.5, 60.0],
                          [0.0, 0.0, width * stride, height * stride]])
    boxes = torch.cat([boxes, fixed])
    image = torch.randint(0, 3, (len(boxes), 1), generator=generator).float()
    return torch.cat([image, boxes], dim=1)


@pytest.mark.parametrize("height,width,output_size,sampling_ratio,stride", [
    (13, 17, 7, 2, 4), (9, 6, 5, 1, 8), (1, 12, 7, 3, 4), (20, 1, 3, 2, 2)])
def test_matches_torchvision_values_and_gradients(height, width, output_size, sampling_ratio,
                                                  stride):
    generator = torch.Generator().manual_seed(height * 100 + width)
    feature = torch.randn(3, 6, height, width, generator=generator, dtype=torch.float64)
    rois = boxes_everywhere(generator, 40, height, width, stride).double()
    args = (output_size, 1.0 / stride, sampling_ratio)
    expected_input = feature.clone().requires_grad_(True)
    gathered_input = feature.clone().requires_grad_(True)
    expected = roi_align(expected_input, rois, *args, aligned=True)
    gathered = roi_align_gather(gathered_input, rois, *args)
    torch.testing.assert_close(gathered, expected)
    assert expected.abs().sum() > 0 and (expected == 0).any()  # the boxes far outside read 0
    upstream = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    expected.backward(upstream)
    gathered.backward(upstream)
    torch.testing.assert_close(gathered_input.grad, expected_input.grad)


def test_no_boxes_give_an_empty_batch():
    """A pyramid level that no box selects pools nothing."""
    feature = torch.randn(2, 6, 8, 8)
    assert roi_align_gather(feature, torch.zeros(0, 5), 7, 0.25, 2).shape == (0, 6, 7, 7)
