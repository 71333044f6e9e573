"""Sample grids as PNG files (Pillow)."""
from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["make_grid", "write_grid"]


def make_grid(images, *, ncol: int | None = None, pad: int = 1, scale: int | None = None,
              pad_value: int = 255) -> np.ndarray:
    """Tile ``uint8 [n, h, w, c]`` images into one ``uint8 [H, W, c]`` image.

    Args:
      images: the images (``c`` = 1 or 3).
      ncol: images per row (default ``ceil(sqrt(n))``).
      pad: pixels between images (before scaling).
      scale: integer nearest-neighbour magnification (default: enough for cells of at least 32 pixels, so that
        8x8 digits are visible).
      pad_value: colour of the padding.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[0] == 0:
        raise ValueError(f"images must be uint8 [n, h, w, c] with n >= 1; got {images.dtype} {images.shape}.")
    n, h, w, c = images.shape
    ncol = ncol or int(math.ceil(math.sqrt(n)))
    nrow = int(math.ceil(n / ncol))
    scale = scale or max(1, int(math.ceil(32 / max(h, w))))
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), pad_value, np.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[i]
    return np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)


def write_grid(path: str, images, **kwargs) -> str:
    """:func:`make_grid` written to ``path`` as PNG (folders created); returns ``path``."""
    from PIL import Image

    grid = make_grid(images, **kwargs)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return path
