"""Decoding one image file into the paper's fixed-size input (Sec. 2): rescale so that the shorter
side is S, then take the central S x S patch, as RGB.

Any file Pillow can read is accepted, whatever its extension says: ILSVRC-2012 ships a few CMYK
JPEGs, a PNG named ``.JPEG`` and grayscale images, all of which become RGB here. A file that cannot
be decoded raises :class:`DecodeError`, which the writer records and skips.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image

# What ImageFolder-style trees are searched for (torchvision's list, compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# Bilinear with Pillow's antialiasing, the filter torchvision's Resize uses by default.
RESAMPLE = Image.Resampling.BILINEAR


class DecodeError(Exception):
    """A file that is not a readable image."""


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def central_square(width: int, height: int) -> tuple[float, float, float, float]:
    """The box (left, top, right, bottom) of the central square of a width x height image: the
    region that becomes the S x S patch once the shorter side is rescaled to S."""
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


# Grey images of more than 8 bits: 16-bit PNGs open as I;16 (or I, 32-bit), whose convert("RGB")
# clips every value above 255 (nearly all of a 16-bit image) instead of scaling it.
WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit grey image (0-65535) as 8-bit grey: the high byte of each value."""
    values = np.asarray(image, dtype=np.uint32)
    return Image.fromarray(np.clip(values >> 8, 0, 255).astype(np.uint8))  # mode L


def load_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode ``path`` into a uint8 (size, size, 3) RGB array: shorter side to ``size``, central
    crop (Sec. 2). Raises DecodeError for anything that is not a readable image."""
    try:
        with warnings.catch_warnings():
            # Huge images are rare but real; Pillow's warning is about untrusted input.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                # JPEG only: decode directly at a reduced scale (1/2, 1/4, 1/8), much faster for
                # large images; keeping at least twice the target size leaves the filtering to
                # the antialiased resize below.
                image.draft("RGB", (2 * size, 2 * size))
                if image.mode == "F":  # convert("RGB") would clip a 0-1 image to black
                    raise DecodeError("a 32-bit floating-point image, whose range (0-1? "
                                      "0-255?) is not known: convert it to 8 bits first")
                if image.mode in WIDE_GREY:
                    image = _eight_bit(image)
                if image.mode != "RGB":
                    # Grayscale, CMYK, palette, RGBA: the network takes RGB.
                    image = image.convert("RGB")
                box = central_square(*image.size)
                image = image.resize((size, size), RESAMPLE, box=box)
                array = np.asarray(image, dtype=np.uint8)
    except DecodeError:
        raise
    except Exception as err:  # Pillow raises many kinds (OSError, SyntaxError, ValueError, ...)
        message = " ".join(str(err).split()) or type(err).__name__
        raise DecodeError(f"{type(err).__name__}: {message}") from None
    if array.shape != (size, size, 3):
        raise DecodeError(f"decoded to shape {array.shape}, expected {(size, size, 3)}")
    return array


class ImageFiles:
    """The rows of one split made from image files (a writer.RowReader)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def read(self, start: int, stop: int, size: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        images = np.zeros((stop - start, size, size, 3), dtype=np.uint8)
        failures = []
        for row in range(start, stop):
            try:
                images[row - start] = load_image(self.paths[row], size)
            except DecodeError as err:
                failures.append((row, str(err)))
        return images, failures

    def describe(self, row: int) -> str:
        return self.paths[row]
