"""Reading an image file, with one `PsdiffError` line naming a file that is missing or broken.

Shared by the data mapper, the teacher's crops and the search predictor.
"""

import os

import cv2
import numpy as np

from psdiff.utils.errors import PsdiffError


def read_image(path: str, format: str = "BGR") -> np.ndarray:
    """The HWC uint8 image at `path`, channels in `format` order ("BGR", as OpenCV, or "RGB")."""
    if not os.path.isfile(path):
        raise PsdiffError(f"image not found: {path}")
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise PsdiffError(f"cannot read image {path} (not an image OpenCV can decode)")
    return image[:, :, ::-1] if format == "RGB" else image
