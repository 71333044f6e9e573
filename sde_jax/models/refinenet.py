"""RefineNet blocks of NCSN/NCSNv2 (Lin et al. 2017; Song & Ermon 2019, 2020; score_sde ``models/layers.py``).

* ``ResidualBlock``: pre-activation residual block (norm, act, conv, norm, act, conv) with optional
  down-sampling: by a 2x2 mean pool after the second conv when ``dilation == 1``, or none at all with
  dilated convolutions (``dilation > 1``, the receptive field grows instead of the resolution shrinking).
* ``RCUBlock``: residual conv units (act, conv without bias) x ``n_stages``, repeated ``n_blocks`` times.
* ``CRPBlock``: chained residual pooling, ``x <- x + conv(maxpool5(path))`` per stage.
* ``MSFBlock``: multi-resolution fusion, 3x3 conv of each input, resize to the output shape, sum.
* ``RefineBlock``: RCU on each input, MSF (when more than one), CRP, output RCU.

Bilinear resizing in ``MSFBlock`` follows the paper's JAX code by default (``jax.image.resize``: half-pixel
centres, ``x_src = (x_out + 1/2) H_in / H_out - 1/2``); ``align_corners=True`` maps the corner pixels onto
each other instead (``x_src = x_out (H_in - 1)/(H_out - 1)``), as the PyTorch port and the original NCSNv2
code do (``F.interpolate(..., mode='bilinear', align_corners=True)``): what a PyTorch-trained NCSNv2 computed.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sde_jax.models.layers import NCSNConv

__all__ = ["ConvMeanPool", "ResidualBlock", "RCUBlock", "CRPBlock", "MSFBlock", "RefineBlock", "INTERPOLATIONS",
           "resize_bilinear_align_corners"]

INTERPOLATIONS = {"bilinear": "bilinear", "nearest_neighbor": "nearest"}


def _align_corners_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` linear-interpolation weights at ``x_src = i (n_in - 1)/(n_out - 1)`` (0 if n_out = 1)."""
    pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    lo = np.minimum(np.floor(pos).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def resize_bilinear_align_corners(x, shape: tuple[int, int]):
    """Bilinear resize of ``x: [B, H, W, C]`` to ``[B, *shape, C]`` with corner pixels aligned.

    .. math::

        y_{ij} = \\sum_{k,l} A_{ik} x_{kl} B_{jl},\\quad A_{ik} = \\max(0, 1 - |i (H - 1)/(H' - 1) - k|)

    (``B`` likewise over the width): ``torch.nn.functional.interpolate(x, shape, mode='bilinear',
    align_corners=True)`` in NHWC. Two small static matrices, applied with ``einsum`` in ``x``'s dtype.
    """
    a = jnp.asarray(_align_corners_matrix(x.shape[1], shape[0]), x.dtype)
    b = jnp.asarray(_align_corners_matrix(x.shape[2], shape[1]), x.dtype)
    return jnp.einsum("ih,bhwc,jw->bijc", a, x, b)


class ConvMeanPool(nn.Module):
    """Conv ('SAME') then 2x2 mean pooling: ``[B, H, W, C] -> [B, H/2, W/2, features]``."""

    features: int
    kernel: int = 3
    use_bias: bool = True
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        h = NCSNConv(self.features, kernel=self.kernel, use_bias=self.use_bias, dtype=self.dtype)(x)
        b, hh, ww, c = h.shape
        return h.reshape(b, hh // 2, 2, ww // 2, 2, c).mean(axis=(2, 4))


class ResidualBlock(nn.Module):
    """NCSNv2 residual block, ``[B, H, W, Cin] -> [B, H', W', output_dim]``."""

    output_dim: int
    normalization: Callable[..., nn.Module]
    resample: str | None = None
    act: Callable = jax.nn.elu
    dilation: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        if self.resample not in (None, "down"):
            raise ValueError(f"ResidualBlock: resample must be None or 'down'; got {self.resample!r}.")
        cin = x.shape[-1]
        d = self.dilation
        h = self.act(self.normalization(dtype=self.dtype)(x))
        if self.resample == "down":
            if d > 1:
                h = NCSNConv(cin, dilation=d, dtype=self.dtype)(h)
                h = self.act(self.normalization(dtype=self.dtype)(h))
                h = NCSNConv(self.output_dim, dilation=d, dtype=self.dtype)(h)
                shortcut = NCSNConv(self.output_dim, dilation=d, dtype=self.dtype)(x)
            else:
                h = NCSNConv(cin, dtype=self.dtype)(h)
                h = self.act(self.normalization(dtype=self.dtype)(h))
                h = ConvMeanPool(self.output_dim, kernel=3, dtype=self.dtype)(h)
                shortcut = ConvMeanPool(self.output_dim, kernel=1, dtype=self.dtype)(x)
        else:
            h = NCSNConv(self.output_dim, dilation=d, dtype=self.dtype)(h)
            h = self.act(self.normalization(dtype=self.dtype)(h))
            h = NCSNConv(self.output_dim, dilation=d, dtype=self.dtype)(h)
            if self.output_dim == cin:
                shortcut = x
            elif d > 1:
                shortcut = NCSNConv(self.output_dim, dilation=d, dtype=self.dtype)(x)
            else:
                shortcut = NCSNConv(self.output_dim, kernel=1, dtype=self.dtype)(x)
        return shortcut.astype(h.dtype) + h


class RCUBlock(nn.Module):
    features: int
    n_blocks: int
    n_stages: int
    act: Callable = jax.nn.relu
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        for _ in range(self.n_blocks):
            residual = x
            for _ in range(self.n_stages):
                x = NCSNConv(self.features, use_bias=False, dtype=self.dtype)(self.act(x))
            x = x + residual
        return x


class CRPBlock(nn.Module):
    features: int
    n_stages: int
    act: Callable = jax.nn.relu
    maxpool: bool = True
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        x = self.act(x)
        path = x
        for _ in range(self.n_stages):
            if self.maxpool:
                path = nn.max_pool(path, (5, 5), strides=(1, 1), padding="SAME")
            else:
                path = nn.avg_pool(path, (5, 5), strides=(1, 1), padding="SAME")
            path = NCSNConv(self.features, use_bias=False, dtype=self.dtype)(path)
            x = path + x
        return x


class MSFBlock(nn.Module):
    shape: tuple[int, int]
    features: int
    interpolation: str = "bilinear"
    align_corners: bool = False   # bilinear only: the PyTorch convention (module docstring)
    dtype: Any = None

    @nn.compact
    def __call__(self, xs):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"Unknown interpolation {self.interpolation!r}; valid: {sorted(INTERPOLATIONS)}.")
        if self.align_corners and self.interpolation != "bilinear":
            raise ValueError(f"align_corners=True needs interpolation='bilinear'; got {self.interpolation!r}.")
        total = 0.0
        for x in xs:
            h = NCSNConv(self.features, dtype=self.dtype)(x)
            if self.align_corners:
                h = resize_bilinear_align_corners(h, tuple(self.shape))
            else:
                h = jax.image.resize(h, (h.shape[0], *self.shape, h.shape[-1]), INTERPOLATIONS[self.interpolation])
            total = total + h
        return total


class RefineBlock(nn.Module):
    output_shape: tuple[int, int]
    features: int
    act: Callable = jax.nn.relu
    interpolation: str = "bilinear"
    end: bool = False
    align_corners: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, xs):
        hs = [RCUBlock(x.shape[-1], 2, 2, self.act, dtype=self.dtype)(x) for x in xs]
        if len(hs) > 1:
            h = MSFBlock(self.output_shape, self.features, self.interpolation, align_corners=self.align_corners,
                         dtype=self.dtype)(hs)
        else:
            h = hs[0]
        h = CRPBlock(self.features, 2, self.act, dtype=self.dtype)(h)
        return RCUBlock(self.features, 3 if self.end else 1, 2, self.act, dtype=self.dtype)(h)
