"""Residual blocks of the U-Nets: the DDPM kind and the BigGAN kind (score_sde ``layers.py``/``layerspp.py``).

DDPM kind (Ho et al. 2020; ``ResnetBlockDDPM`` / ``ResnetBlockDDPMpp``):

.. math::

    h = W_1 * \\phi(\\mathrm{GN}(x)) + D(\\phi(e)),\\quad
    h = W_2 * \\mathrm{Dropout}(\\phi(\\mathrm{GN}(h))),\\quad
    y = S(x) + h \\ \\ (\\text{or } (S(x) + h)/\\sqrt 2),

with ``e`` the time embedding, ``D`` a dense layer, ``S`` the identity or, when channels change, a NIN
(or a 3x3 conv with ``conv_shortcut``). BigGAN kind (Brock et al. 2019; ``ResnetBlockBigGANpp``): the same,
with up/down-sampling of both branches after the first normalisation and a 1x1 conv shortcut whenever
channels or resolution change. ``W_2`` starts near zero (``init_scale``).
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax

from sde_jax.models import fir as fir_lib
from sde_jax.models.layers import NIN, DDPMConv, default_init, group_norm

__all__ = ["ResnetBlockDDPM", "ResnetBlockBigGAN", "RESBLOCK_TYPES"]

_INV_SQRT2 = 2.0**-0.5


def _temb_bias(h, temb, act, out_ch, dtype):
    if temb is None:
        return h
    d = nn.Dense(out_ch, kernel_init=default_init(), dtype=dtype, name="Dense_0")(act(temb))
    return h + d[:, None, None, :]


class ResnetBlockDDPM(nn.Module):
    """DDPM residual block, ``[B, H, W, C] (+ temb [B, E]) -> [B, H, W, out_ch or C]``.

    Attributes:
      act: activation.
      out_ch: output channels (default: input channels).
      conv_shortcut: 3x3 conv instead of NIN on the shortcut when channels change.
      dropout: dropout rate (active when ``train=True``; needs the ``'dropout'`` rng).
      skip_rescale: divide the sum by ``sqrt(2)`` (DDPM++).
      init_scale: ``default_init`` scale of the second conv (0 -> 1e-10).
      num_groups: GroupNorm groups; ``None`` = ``min(C // 4, 32)`` (DDPM++), the DDPM model uses 32.
      dtype: computation dtype.
    """

    act: Callable = jax.nn.swish
    out_ch: int | None = None
    conv_shortcut: bool = False
    dropout: float = 0.1
    skip_rescale: bool = False
    init_scale: float = 0.0
    num_groups: int | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x, temb=None, train: bool = False):
        c = x.shape[-1]
        out_ch = self.out_ch or c
        dtype = self.dtype or x.dtype
        h = self.act(group_norm(c, num_groups=self.num_groups, dtype=dtype)(x))
        h = DDPMConv(out_ch, dtype=dtype)(h)
        h = _temb_bias(h, temb, self.act, out_ch, dtype)
        h = self.act(group_norm(out_ch, num_groups=self.num_groups, dtype=dtype)(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = DDPMConv(out_ch, init_scale=self.init_scale, dtype=dtype)(h)
        x = x.astype(dtype)
        if c != out_ch:
            x = DDPMConv(out_ch, dtype=dtype)(x) if self.conv_shortcut else NIN(out_ch, dtype=dtype)(x)
        return (x + h) * _INV_SQRT2 if self.skip_rescale else x + h


class ResnetBlockBigGAN(nn.Module):
    """BigGAN residual block with optional x2 up/down-sampling (FIR or naive),
    ``[B, H, W, C] -> [B, H', W', out_ch or C]``.

    Attributes: as :class:`ResnetBlockDDPM`, plus ``up``/``down`` and ``fir``/``fir_kernel``.
    """

    act: Callable = jax.nn.swish
    up: bool = False
    down: bool = False
    out_ch: int | None = None
    dropout: float = 0.1
    fir: bool = False
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    init_scale: float = 0.0
    dtype: Any = None

    @nn.compact
    def __call__(self, x, temb=None, train: bool = False):
        if self.up and self.down:
            raise ValueError("ResnetBlockBigGAN: up and down cannot both be set.")
        c = x.shape[-1]
        out_ch = self.out_ch or c
        dtype = self.dtype or x.dtype
        x = x.astype(dtype)
        h = self.act(group_norm(c, dtype=dtype)(x))
        if self.up:
            if self.fir:
                h = fir_lib.upsample_2d(h, self.fir_kernel, factor=2)
                x = fir_lib.upsample_2d(x, self.fir_kernel, factor=2)
            else:
                h = fir_lib.naive_upsample_2d(h, factor=2)
                x = fir_lib.naive_upsample_2d(x, factor=2)
        elif self.down:
            if self.fir:
                h = fir_lib.downsample_2d(h, self.fir_kernel, factor=2)
                x = fir_lib.downsample_2d(x, self.fir_kernel, factor=2)
            else:
                h = fir_lib.naive_downsample_2d(h, factor=2)
                x = fir_lib.naive_downsample_2d(x, factor=2)
        h = DDPMConv(out_ch, dtype=dtype)(h)
        h = _temb_bias(h, temb, self.act, out_ch, dtype)
        h = self.act(group_norm(out_ch, dtype=dtype)(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = DDPMConv(out_ch, init_scale=self.init_scale, dtype=dtype)(h)
        if c != out_ch or self.up or self.down:
            x = DDPMConv(out_ch, kernel=1, dtype=dtype)(x)
        return (x + h) * _INV_SQRT2 if self.skip_rescale else x + h


RESBLOCK_TYPES = ("ddpm", "biggan")
