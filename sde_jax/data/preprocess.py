"""Preprocessing as in the paper's ``datasets.py``: geometry on the host, randomness and scaling on the device.

**Host, once per image** (:func:`fit_image`, deterministic): channel conversion, an optional central crop
(CelebA: 140x140, as the paper), a central square crop of non-square images, and resizing to
``image_size`` with Pillow (``"bilinear"``/``"bicubic"``/``"box"``/``"nearest"``; Pillow filters are antialiased
when shrinking, like the paper's ``tf.image.resize(..., antialias=True)``). The result is stored as ``uint8``
(a stated deviation: the paper keeps the resized float values; rounding moves a pixel by at most 1/510).

**Device, per batch** (:func:`to_model_space`, a pure function of the key): random horizontal flip,
scaling to ``[0, 1]`` as ``n / 255`` or, with uniform dequantisation, ``(n + u) / 256`` with ``u ~ U[0, 1)``
(the paper's ``(u + 255 x) / 256``), then ``2 x - 1`` for ``centered`` data. :func:`to_uint8` is the inverse
used for samples (``round(255 x)`` after un-centring, clipped).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sde_jax import _checks as C

__all__ = ["RESIZE_FILTERS", "fit_image", "fit_images", "to_model_space", "to_uint8", "data_range"]

RESIZE_FILTERS = ("bilinear", "bicubic", "box", "nearest", "lanczos")


def _pil_filter(name):
    from PIL import Image

    filters = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "box": Image.BOX, "nearest": Image.NEAREST,
               "lanczos": Image.LANCZOS}
    return C.lookup(filters, name, "data.resize_filter")


def _channels(img: np.ndarray, c: int, where: str) -> np.ndarray:
    have = img.shape[-1]
    if have == c:
        return img
    if have == 4:   # drop alpha
        img, have = img[..., :3], 3
    if have == c:
        return img
    if have == 1 and c == 3:
        return np.repeat(img, 3, axis=-1)
    if have == 3 and c == 1:   # ITU-R 601-2 luma, Pillow's "L" conversion
        y = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return np.clip(np.round(y), 0, 255).astype(np.uint8)[..., None]
    raise ValueError(f"{where}: cannot convert an image with {have} channels to data.num_channels={c}.")


def fit_image(img, image_size: int, num_channels: int, *, crop_size: int = 0, resize_filter: str = "bilinear",
              where: str = "image") -> np.ndarray:
    """One raw ``uint8 [h, w, c]`` image -> ``uint8 [image_size, image_size, num_channels]``.

    Steps: channels (grey <-> RGB, alpha dropped); central ``crop_size`` crop if ``crop_size > 0`` (the paper's
    CelebA ``central_crop(img, 140)``); central square crop when ``h != w``; resize to ``image_size`` with
    ``resize_filter`` if the size differs.
    """
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[..., None]
    img = _channels(img, num_channels, where)
    h, w = img.shape[:2]
    if crop_size:
        if crop_size > min(h, w):
            raise ValueError(f"{where}: data.crop_size={crop_size} exceeds the image size {h}x{w}.")
        top, left = (h - crop_size) // 2, (w - crop_size) // 2
        img, h, w = img[top:top + crop_size, left:left + crop_size], crop_size, crop_size
    if h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        img, h, w = img[top:top + s, left:left + s], s, s
    if h != image_size:
        from PIL import Image

        mode = "L" if img.shape[-1] == 1 else "RGB"
        pil = Image.fromarray(img[..., 0] if mode == "L" else img, mode=mode)
        img = np.asarray(pil.resize((image_size, image_size), _pil_filter(resize_filter)), np.uint8)
        img = img[..., None] if img.ndim == 2 else img
    return np.ascontiguousarray(img, dtype=np.uint8)


def fit_images(images, image_size: int, num_channels: int, *, crop_size: int = 0, resize_filter: str = "bilinear",
               where: str = "images") -> np.ndarray:
    """:func:`fit_image` over a list of raw images; returns ``uint8 [n, image_size, image_size, num_channels]``.
    Arrays already of the target shape pass through unchanged (no copy per image)."""
    target = (image_size, image_size, num_channels)
    if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[1:] == target and not crop_size:
        return images.astype(np.uint8, copy=False)
    out = np.empty((len(images),) + target, np.uint8)
    for i, img in enumerate(images):
        out[i] = fit_image(img, image_size, num_channels, crop_size=crop_size, resize_filter=resize_filter,
                           where=f"{where}[{i}]")
    return out


def data_range(centered: bool) -> tuple[float, float]:
    """The model-space range of the data: ``(-1, 1)`` for centred data, else ``(0, 1)``."""
    return (-1.0, 1.0) if centered else (0.0, 1.0)


def to_model_space(key, images, *, centered: bool, uniform_dequantization: bool = False,
                   random_flip: bool = False, dtype=jnp.float32):
    """``uint8 [B, H, W, C]`` pixels -> model inputs (jittable; the randomness is a function of ``key``).

    .. math::  x = s\\big(\\text{flip}_b(n) / 255\\big) \\ \\text{or}\\ s\\big((\\text{flip}_b(n) + u) / 256\\big),
               \\quad s(v) = 2v - 1 \\text{ (centred) or } v,

    with ``b ~ Bernoulli(1/2)`` per example (``random_flip``) and ``u ~ U[0, 1)`` per pixel
    (``uniform_dequantization``; Song et al. 2021 App. D.2 / the paper's ``datasets.py``).
    """
    key_flip, key_u = jax.random.split(key)
    x = images
    if random_flip:
        flip = jax.random.bernoulli(key_flip, 0.5, (x.shape[0],))
        x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
    x = x.astype(dtype)
    if uniform_dequantization:
        x = (x + jax.random.uniform(key_u, x.shape, dtype)) / 256.0
    else:
        x = x / 255.0
    return 2.0 * x - 1.0 if centered else x


def to_uint8(x, *, centered: bool) -> np.ndarray:
    """Model-space samples -> ``uint8`` pixels: ``round(255 v)`` with ``v = (x + 1)/2`` (centred) or ``x``, clipped
    to ``[0, 255]`` (NaN -> 0). Returns a NumPy array (host)."""
    v = np.asarray(x, np.float64)
    v = (v + 1.0) / 2.0 if centered else v
    return np.clip(np.round(np.nan_to_num(v, nan=0.0) * 255.0), 0, 255).astype(np.uint8)
