"""Reading and writing image files, with one `PsdiffError` line naming a file at fault.

Every image psdiff reads (dataset images, teacher crops, the predictor's and the pictures'
inputs) goes through `read_image`; every picture a tool writes goes through `write_image`.
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


def write_image(path: str, image: np.ndarray, params=()) -> None:
    """Write an HWC BGR image to `path` (format from its extension, folder created);
    `params` are OpenCV's encoder flags, e.g. `(cv2.IMWRITE_JPEG_QUALITY, 90)`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, image, list(params)):
        raise PsdiffError(f"cannot write image {path}")
