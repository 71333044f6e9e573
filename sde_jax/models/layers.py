"""Shared building blocks: initialisers, convolutions, NIN, activations (score_sde ``models/layers.py``).

Two conventions from the paper's code are kept:

* DDPM/NCSN++ layers use ``default_init(scale)``: variance scaling with ``fan_avg`` and a uniform
  distribution (Ho et al. 2020), where ``scale = 0`` means ``1e-10`` (near-zero final layers).
* NCSN/NCSNv2 layers use PyTorch's default conv initialisation (``variance_scaling(1/3, fan_in, uniform)``
  for weights, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for biases), times ``init_scale``.

Every module takes ``dtype`` (the computation dtype, ``None`` = the input's); parameters are float32.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from sde_jax.models.normalization import GroupNorm

__all__ = [
    "ACTIVATIONS",
    "get_act",
    "default_init",
    "ncsn_kernel_init",
    "ncsn_bias_init",
    "DDPMConv",
    "NCSNConv",
    "NIN",
    "group_norm",
]


def _lrelu(x):
    return jax.nn.leaky_relu(x, negative_slope=0.2)


# config.model.nonlinearity -> activation (the paper's names).
ACTIVATIONS: dict[str, Callable] = {
    "elu": jax.nn.elu,
    "relu": jax.nn.relu,
    "lrelu": _lrelu,
    "swish": jax.nn.swish,
}


def get_act(name: str) -> Callable:
    """Activation by the paper's name (``elu | relu | lrelu | swish``), case-insensitive."""
    try:
        return ACTIVATIONS[name.lower()]
    except KeyError:
        raise ValueError(f"Unknown nonlinearity {name!r}; valid: {sorted(ACTIVATIONS)}.") from None


def default_init(scale: float = 1.0):
    """DDPM initialiser: ``variance_scaling(scale, 'fan_avg', 'uniform')``, with 0 read as 1e-10."""
    scale = 1e-10 if scale == 0 else scale
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


def ncsn_kernel_init(scale: float = 1.0):
    """PyTorch's default conv weight initialiser times ``scale`` (0 read as 1e-10)."""
    scale = 1e-10 if scale == 0 else scale
    return nn.initializers.variance_scaling(scale * scale / 3.0, "fan_in", "uniform")


def ncsn_bias_init(fan_in: int, scale: float = 1.0):
    """PyTorch's default conv bias initialiser ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` times ``scale``."""
    scale = 1e-10 if scale == 0 else scale
    bound = scale / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class DDPMConv(nn.Module):
    """Convolution with DDPM initialisation (``ddpm_conv3x3`` / ``ddpm_conv1x1``), 'SAME' padding.

    ``[B, H, W, Cin] -> [B, H / stride, W / stride, features]``.
    """

    features: int
    kernel: int = 3
    stride: int = 1
    use_bias: bool = True
    dilation: int = 1
    init_scale: float = 1.0
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        return nn.Conv(self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
                       padding="SAME", kernel_dilation=(self.dilation, self.dilation),
                       use_bias=self.use_bias, kernel_init=default_init(self.init_scale),
                       bias_init=nn.initializers.zeros, dtype=self.dtype, name="Conv_0")(x)


class NCSNConv(nn.Module):
    """Convolution with PyTorch-default initialisation as in NCSN/NCSNv2, 'SAME' padding (dilated)."""

    features: int
    kernel: int = 3
    stride: int = 1
    use_bias: bool = True
    dilation: int = 1
    init_scale: float = 1.0
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1] * self.kernel * self.kernel
        return nn.Conv(self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
                       padding="SAME", kernel_dilation=(self.dilation, self.dilation),
                       use_bias=self.use_bias, kernel_init=ncsn_kernel_init(self.init_scale),
                       bias_init=ncsn_bias_init(fan_in, self.init_scale), dtype=self.dtype,
                       name="Conv_0")(x)


class NIN(nn.Module):
    """Network-in-network: a per-pixel linear map over channels, ``y = x W + b``.

    ``x: [..., Cin] -> [..., num_units]``; ``W`` has ``default_init(init_scale)`` (DDPM's ``nin``).
    """

    num_units: int
    init_scale: float = 0.1
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        dtype = self.dtype or x.dtype
        w = self.param("W", default_init(self.init_scale), (x.shape[-1], self.num_units), jnp.float32)
        b = self.param("b", nn.initializers.zeros, (self.num_units,), jnp.float32)
        return jnp.einsum("...c,cd->...d", x.astype(dtype), w.astype(dtype)) + b.astype(dtype)


def group_norm(channels: int, *, num_groups: int | None = None, dtype: Any = None, name: str | None = None):
    """GroupNorm with ``min(C // 4, 32)`` groups (NCSN++/DDPM++) or a fixed count (DDPM: 32), eps 1e-6.

    Raises:
      ValueError: if the group count does not divide the channel count.
    """
    g = min(channels // 4, 32) if num_groups is None else num_groups
    if g < 1 or channels % g:
        raise ValueError(f"GroupNorm: {g} groups do not divide {channels} channels; "
                         "use a channel count that is a multiple of the number of groups.")
    return GroupNorm(num_groups=g, epsilon=1e-6, dtype=dtype, name=name)
