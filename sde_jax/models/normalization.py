"""Per-image normalisations of NCSN/NCSNv2 (score_sde ``models/normalization.py``; Song & Ermon 2019).

All act on ``[B, H, W, C]`` and normalise each image and channel over its ``H x W`` pixels only, so no
statistic crosses the batch. With ``mu_c, s_c^2`` the spatial mean and variance of channel ``c``:

* ``InstanceNorm``:   ``y = gamma_c (x - mu_c) / sqrt(s_c^2 + 1e-5) + beta_c``.
* ``InstanceNorm++``: ``y = gamma_c [ (x - mu_c) / sqrt(s_c^2 + 1e-5) + alpha_c m_c ] + beta_c`` with
  ``m_c = (mu_c - mean_c' mu_c') / sqrt(var_c' mu_c' + 1e-5)`` (Song & Ermon 2019, Eq. (7)), which keeps
  the information on the relative channel means that instance norm drops. ``var_c'`` is the biased variance
  of the ``C`` channel means (the paper's JAX code, ``jnp.var``); ``unbiased_channel_var=True`` divides by
  ``C - 1`` instead, as the PyTorch port and the original NCSNv2 code (``torch.var``) do.
* ``VarianceNorm``:   ``y = gamma_c x / sqrt(s_c^2 + 1e-5)`` (no centring).
* ``GroupNorm``:      Flax GroupNorm with 32 groups (eps 1e-6).

``gamma`` (and ``alpha``) start at ``1 + N(0, 0.02^2)``, ``beta`` at zero, as in the paper's code.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["InstanceNorm2d", "InstanceNorm2dPlus", "VarianceNorm2d", "NORMALIZATIONS", "get_normalization"]


def _scale_init(key, shape, dtype=jnp.float32):
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def _f32(x):
    """Statistics in at least float32 (bfloat16 inputs are promoted; float64 stays float64)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _moments(x):
    xf = _f32(x)
    return jnp.mean(xf, axis=(1, 2), keepdims=True), jnp.var(xf, axis=(1, 2), keepdims=True)


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
    "GroupNorm": functools.partial(nn.GroupNorm, num_groups=32),
}


def get_normalization(name: str) -> Callable[..., nn.Module]:
    """Normalisation factory by the paper's name; raises ``ValueError`` listing the valid names."""
    try:
        return NORMALIZATIONS[name]
    except KeyError:
        raise ValueError(f"Unknown normalization {name!r}; valid: {sorted(NORMALIZATIONS)}.") from None
