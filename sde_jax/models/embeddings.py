"""Time / noise-level embeddings: sinusoidal (DDPM, Transformer) and Gaussian Fourier features (NCSN++).

References:
  Vaswani et al. 2017, "Attention is all you need", Sec. 3.5 (sinusoidal positions);
  Ho et al. 2020 (DDPM ``get_timestep_embedding``);
  Tancik et al. 2020, "Fourier features let networks learn high frequency functions" (random Fourier
  features), used by Song et al. 2021 (NCSN++) on ``log sigma``.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["sinusoidal_embedding", "GaussianFourierProjection"]


def sinusoidal_embedding(timesteps, embedding_dim: int, max_positions: float = 10000.0, dtype=jnp.float32):
    """Sinusoidal embedding of (possibly fractional) time steps.

    .. math::

        \\omega_i = \\exp\\Big(-\\frac{i \\log(\\text{max\\_positions})}{h - 1}\\Big),\\ i = 0..h-1,\\quad
        e(t) = [\\sin(t \\omega_0), \\dots, \\sin(t \\omega_{h-1}), \\cos(t \\omega_0), \\dots, \\cos(t \\omega_{h-1})],

    with ``h = embedding_dim // 2``, zero-padded by one column when ``embedding_dim`` is odd.

    Args:
      timesteps: ``[B]`` time labels (``t * 999`` or integer levels in the paper's code).
      embedding_dim: output width ``D >= 4`` (``h - 1`` must be positive).
      max_positions: the longest period.
      dtype: computation and output dtype (float32, as the paper's code; the toy MLP passes its data dtype).

    Returns:
      ``[B, D]`` in ``dtype``.
    """
    timesteps = jnp.asarray(timesteps)
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must have shape [B]; got shape {timesteps.shape}.")
    half = embedding_dim // 2
    if half < 2:
        raise ValueError(f"embedding_dim must be at least 4; got {embedding_dim}.")
    scale = math.log(max_positions) / (half - 1)
    # The frequencies are a NumPy constant, not jnp ops: XLA hoisted jnp-computed frequencies out of a sampler's
    # loop once per call site and did not merge the copies, so it could not share the embedding between two
    # evaluations at the same t (a PC step's corrector and predictor): 2 label MLPs per step instead of 1,
    # PC at 0.68-0.83 of the bare network instead of ~1 (benchmarks/README.md).
    np_dtype = np.dtype(dtype)
    freqs = np.exp(np.arange(half, dtype=np_dtype) * np_dtype.type(-scale))
    args = timesteps.astype(dtype)[:, None] * jnp.asarray(freqs, dtype)[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
    if embedding_dim % 2 == 1:
        emb = jnp.pad(emb, [(0, 0), (0, 1)])
    return emb


class GaussianFourierProjection(nn.Module):
    """Random Fourier features ``[sin(2 pi W x), cos(2 pi W x)]`` with fixed ``W ~ N(0, scale^2)``.

    ``W`` is stored as a parameter (the paper's code does the same, so parameter counts agree) but
    receives no gradient (``stop_gradient``): it stays at its initial value under any optimizer whose
    update is zero for a zero gradient (Adam, SGD; not decoupled weight decay).

    Attributes:
      embedding_size: number of frequencies ``m``; output width ``2 m``.
      scale: standard deviation of ``W`` (16 in the paper's NCSN++ configs).
      dtype: computation and output dtype (float32, as the paper's code).

    ``x: [B] -> [B, 2 m]`` (NCSN++ feeds ``log sigma``).
    """

    embedding_size: int = 256
    scale: float = 1.0
    dtype: Any = jnp.float32   # computation dtype (W is stored in float32)

    @nn.compact
    def __call__(self, x):
        w = self.param("W", nn.initializers.normal(stddev=self.scale), (self.embedding_size,), jnp.float32)
        w = jax.lax.stop_gradient(w).astype(self.dtype)
        proj = x.astype(self.dtype)[:, None] * w[None, :] * (2 * jnp.pi)
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)
