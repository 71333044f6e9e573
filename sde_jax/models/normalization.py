"""Per-image normalisations of NCSN/NCSNv2 (score_sde ``models/normalization.py``; Song & Ermon 2019).

The instance norms act on ``[B, H, W, C]`` and normalise each image and channel over its ``H x W`` pixels only,
GroupNorm each image and group of channels; no statistic crosses the batch. With ``mu_c, s_c^2`` the spatial
mean and variance of channel ``c``:

* ``InstanceNorm``:   ``y = gamma_c (x - mu_c) / sqrt(s_c^2 + 1e-5) + beta_c``.
* ``InstanceNorm++``: ``y = gamma_c [ (x - mu_c) / sqrt(s_c^2 + 1e-5) + alpha_c m_c ] + beta_c`` with
  ``m_c = (mu_c - mean_c' mu_c') / sqrt(var_c' mu_c' + 1e-5)`` (Song & Ermon 2019, Eq. (7)), which keeps
  the information on the relative channel means that instance norm drops. ``var_c'`` is the biased variance
  of the ``C`` channel means (the paper's JAX code, ``jnp.var``); ``unbiased_channel_var=True`` divides by
  ``C - 1`` instead, as the PyTorch port and the original NCSNv2 code (``torch.var``) do.
* ``VarianceNorm``:   ``y = gamma_c x / sqrt(s_c^2 + 1e-5)`` (no centring).
* ``GroupNorm``:      ``y = gamma_c (x - mu_g) / sqrt(s_g^2 + eps) + beta_c`` over the pixels and channels of
  each group ``g`` (32 groups here, eps 1e-6), the NCSN++/DDPM models' norm too (``layers.group_norm``).
  :class:`GroupNorm` computes what ``flax.linen.GroupNorm`` does (same parameters ``scale, bias``, same
  ``E[x^2] - E[x]^2`` variance clipped at zero, statistics in at least float32, same output dtype) with the
  pixel sums taken per channel first: XLA:CPU ran Flax's reduction of a ``[B, H, W, G, C/G]`` view over axes
  ``(1, 2, 4)`` 2.9-4.8x slower than this (``python -m benchmarks.group_norm``; e.g. 2.2 vs 0.5 ms at
  ``16 x 32 x 32 x 96``).

The instance norms' ``gamma`` (and ``alpha``) start at ``1 + N(0, 0.02^2)``, ``beta`` at zero, as in the paper's
code; GroupNorm's ``scale`` at one and ``bias`` at zero, as Flax's.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["GroupNorm", "InstanceNorm2d", "InstanceNorm2dPlus", "VarianceNorm2d", "NORMALIZATIONS", "get_normalization"]


def _scale_init(key, shape, dtype=jnp.float32):
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def _f32(x):
    """Statistics in at least float32 (bfloat16 inputs are promoted; float64 stays float64)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _moments(x):
    xf = _f32(x)
    return jnp.mean(xf, axis=(1, 2), keepdims=True), jnp.var(xf, axis=(1, 2), keepdims=True)


class GroupNorm(nn.Module):
    """Group normalisation over ``[B, ..., C]``: statistics per example and group of ``C / num_groups`` channels.

    The same computation, parameters (``scale``, ``bias``: ``[C]``) and initialisers as ``flax.linen.GroupNorm``
    with its defaults (fast variance ``E[x^2] - E[x]^2`` clipped at zero; statistics in
    ``promote_types(dtype or x.dtype, float32)``; the output in ``dtype``, or the type of ``x`` and the parameters
    promoted together when ``dtype`` is None), so a checkpoint of either loads into the other. Only the summation
    order differs (per-channel sums over the pixels, then over the channels of a group), which XLA:CPU runs
    several times faster; the results agree to float rounding.

    Raises:
      ValueError: if ``num_groups`` does not divide the channel count.
    """

    num_groups: int = 32
    epsilon: float = 1e-6
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        if x.ndim < 2:
            raise ValueError(f"GroupNorm needs an input [B, ..., C]; got shape {x.shape}.")
        c, g = x.shape[-1], self.num_groups
        if g < 1 or c % g:
            raise ValueError(f"GroupNorm: {g} groups do not divide the {c} channels of an input of shape "
                             f"{x.shape}; use a channel count that is a multiple of the number of groups.")
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        stat = jnp.promote_types(self.dtype or x.dtype, jnp.float32)
        b = x.shape[0]
        xf = x.astype(stat).reshape(b, -1, c)
        n = xf.shape[1] * (c // g)
        s1 = jnp.sum(xf, axis=1).reshape(b, g, c // g).sum(-1)            # per channel, then per group
        s2 = jnp.sum(xf * xf, axis=1).reshape(b, g, c // g).sum(-1)
        mean = s1 / n
        var = jnp.maximum(0.0, s2 / n - mean * mean)
        mean = jnp.repeat(mean, c // g, axis=-1)                            # [B, C]
        mul = jax.lax.rsqrt(jnp.repeat(var, c // g, axis=-1) + self.epsilon) * scale
        bshape = (b,) + (1,) * (x.ndim - 2) + (c,)
        y = (x - mean.reshape(bshape)) * mul.reshape(bshape) + bias
        out = self.dtype or jnp.result_type(x, scale, bias)
        return jnp.asarray(y, out)


class VarianceNorm2d(nn.Module):
    bias: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        _, var = _moments(x)
        h = _f32(x) / jnp.sqrt(var + 1e-5)
        h = h * self.param("scale", _scale_init, (1, 1, 1, c))
        if self.bias:
            h = h + self.param("bias", nn.initializers.zeros, (1, 1, 1, c))
        return h.astype(self.dtype or x.dtype)


class InstanceNorm2d(nn.Module):
    bias: bool = True
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        mean, var = _moments(x)
        h = (_f32(x) - mean) / jnp.sqrt(var + 1e-5)
        h = h * self.param("scale", nn.initializers.ones, (1, 1, 1, c))
        if self.bias:
            h = h + self.param("bias", nn.initializers.zeros, (1, 1, 1, c))
        return h.astype(self.dtype or x.dtype)


class InstanceNorm2dPlus(nn.Module):
    bias: bool = True
    unbiased_channel_var: bool = False   # True: torch.var convention (C - 1) for the variance of channel means
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        mean, var = _moments(x)
        means = mean[:, 0, 0, :]                                      # [B, C]
        m = jnp.mean(means, axis=-1, keepdims=True)
        v = jnp.var(means, axis=-1, keepdims=True, ddof=1 if self.unbiased_channel_var else 0)
        means_plus = (means - m) / jnp.sqrt(v + 1e-5)
        h = (_f32(x) - mean) / jnp.sqrt(var + 1e-5)
        h = h + means_plus[:, None, None, :] * self.param("alpha", _scale_init, (1, 1, 1, c))
        h = h * self.param("gamma", _scale_init, (1, 1, 1, c))
        if self.bias:
            h = h + self.param("beta", nn.initializers.zeros, (1, 1, 1, c))
        return h.astype(self.dtype or x.dtype)


# config.model.normalization -> module factory (called with dtype=...).
NORMALIZATIONS: dict[str, Callable[..., nn.Module]] = {
    "InstanceNorm": InstanceNorm2d,
    "InstanceNorm++": InstanceNorm2dPlus,
    "VarianceNorm": VarianceNorm2d,
    "GroupNorm": functools.partial(GroupNorm, num_groups=32),
}


def get_normalization(name: str) -> Callable[..., nn.Module]:
    """Normalisation factory by the paper's name; raises ``ValueError`` listing the valid names."""
    try:
        return NORMALIZATIONS[name]
    except KeyError:
        raise ValueError(f"Unknown normalization {name!r}; valid: {sorted(NORMALIZATIONS)}.") from None
