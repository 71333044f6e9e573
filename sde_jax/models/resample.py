"""Resolution changes of the U-Nets: ``Upsample``/``Downsample`` (x2) and the pyramid ``Combine``.

Without FIR (DDPM, DDPM++): nearest-neighbour upsampling then a 3x3 conv; a stride-2 3x3 conv ('SAME',
i.e. one pixel of zero padding after the image) or 2x2 average pooling. With FIR (NCSN++): StyleGAN2
resampling with the given kernel, fused with the 3x3 conv when ``with_conv``. Paper code:
``models/layerspp.py`` (``Upsample``, ``Downsample``, ``Combine``) and ``models/layers.py``.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sde_jax.models import fir as fir_lib
from sde_jax.models.layers import DDPMConv

__all__ = ["Upsample", "Downsample", "Combine", "COMBINE_METHODS"]


class Upsample(nn.Module):
    """``[B, H, W, C] -> [B, 2H, 2W, out_ch or C]``."""

    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        out_ch = self.out_ch or c
        if not self.with_conv and out_ch != c:
            raise ValueError(f"Upsample without conv cannot change channels ({c} -> {out_ch}).")
        if not self.fir:
            y = fir_lib.naive_upsample_2d(x, 2)
            if self.with_conv:
                y = DDPMConv(out_ch, dtype=self.dtype)(y)
        elif not self.with_conv:
            y = fir_lib.upsample_2d(x, self.fir_kernel, factor=2)
        else:
            y = fir_lib.FIRConv2d(out_ch, kernel=3, up=True, resample_kernel=self.fir_kernel,
                                  dtype=self.dtype)(x)
        assert y.shape == (b, 2 * h, 2 * w, out_ch), y.shape
        return y


class Downsample(nn.Module):
    """``[B, H, W, C] -> [B, H/2, W/2, out_ch or C]``."""

    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        out_ch = self.out_ch or c
        if not self.with_conv and out_ch != c:
            raise ValueError(f"Downsample without conv cannot change channels ({c} -> {out_ch}).")
        if not self.fir:
            if self.with_conv:
                y = DDPMConv(out_ch, stride=2, dtype=self.dtype)(x)
            else:
                y = fir_lib.naive_downsample_2d(x, 2)
        elif not self.with_conv:
            y = fir_lib.downsample_2d(x, self.fir_kernel, factor=2)
        else:
            y = fir_lib.FIRConv2d(out_ch, kernel=3, down=True, resample_kernel=self.fir_kernel,
                                  dtype=self.dtype)(x)
        assert y.shape == (b, h // 2, w // 2, out_ch), y.shape
        return y


COMBINE_METHODS = ("cat", "sum")


class Combine(nn.Module):
    """Merge a pyramid branch ``x`` into the main branch ``y``: 1x1 conv of ``x`` to ``y``'s channels,
    then concatenation (``cat``: ``2 C_y`` channels) or sum (``sum``: ``C_y``)."""

    method: str = "cat"
    dtype: Any = None

    @nn.compact
    def __call__(self, x, y):
        if self.method not in COMBINE_METHODS:
            raise ValueError(f"Unknown combine method {self.method!r}; valid: {list(COMBINE_METHODS)}.")
        h = DDPMConv(y.shape[-1], kernel=1, dtype=self.dtype)(x)
        y = y.astype(h.dtype)
        return jnp.concatenate([h, y], axis=-1) if self.method == "cat" else h + y
