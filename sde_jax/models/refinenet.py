"""RefineNet blocks of NCSN/NCSNv2 (Lin et al. 2017; Song & Ermon 2019, 2020; score_sde ``models/layers.py``).

* ``ResidualBlock``: pre-activation residual block (norm, act, conv, norm, act, conv) with optional
  down-sampling: by a 2x2 mean pool after the second conv when ``dilation == 1``, or none at all with
  dilated convolutions (``dilation > 1``, the receptive field grows instead of the resolution shrinking).
* ``RCUBlock``: residual conv units (act, conv without bias) x ``n_stages``, repeated ``n_blocks`` times.
* ``CRPBlock``: chained residual pooling, ``x <- x + conv(maxpool5(path))`` per stage.
* ``MSFBlock``: multi-resolution fusion, 3x3 conv of each input, resize to the output shape, sum.
* ``RefineBlock``: RCU on each input, MSF (when more than one), CRP, output RCU.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax

from sde_jax.models.layers import NCSNConv

__all__ = ["ConvMeanPool", "ResidualBlock", "RCUBlock", "CRPBlock", "MSFBlock", "RefineBlock", "INTERPOLATIONS"]

INTERPOLATIONS = {"bilinear": "bilinear", "nearest_neighbor": "nearest"}


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
    dtype: Any = None

    @nn.compact
    def __call__(self, xs):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"Unknown interpolation {self.interpolation!r}; valid: {sorted(INTERPOLATIONS)}.")
        total = 0.0
        for x in xs:
            h = NCSNConv(self.features, dtype=self.dtype)(x)
            h = jax.image.resize(h, (h.shape[0], *self.shape, h.shape[-1]), INTERPOLATIONS[self.interpolation])
            total = total + h
        return total


class RefineBlock(nn.Module):
    output_shape: tuple[int, int]
    features: int
    act: Callable = jax.nn.relu
    interpolation: str = "bilinear"
    end: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, xs):
        hs = [RCUBlock(x.shape[-1], 2, 2, self.act, dtype=self.dtype)(x) for x in xs]
        if len(hs) > 1:
            h = MSFBlock(self.output_shape, self.features, self.interpolation, dtype=self.dtype)(hs)
        else:
            h = hs[0]
        h = CRPBlock(self.features, 2, self.act, dtype=self.dtype)(h)
        return RCUBlock(self.features, 3 if self.end else 1, 2, self.act, dtype=self.dtype)(h)
