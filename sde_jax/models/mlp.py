"""A noise-conditional MLP score network for low-dimensional data, with time/noise-level embeddings.

The network maps ``(x: [B, D], labels: [B]) -> [B, D]``; what the labels mean (``sigma(t)``, ``999 t`` or a
discrete level) and how the output becomes a score is the wrapper's business
(:func:`sde_jax.models.wrappers.get_score_fn`). Embeddings follow the paper's networks:

* ``"fourier"``: Gaussian random Fourier features ``[sin 2 pi W c, cos 2 pi W c]``, ``W ~ N(0, scale^2)``
  fixed at init (Tancik et al. 2020; NCSN++ with ``fourier_scale = 16``). With ``log_labels`` the input is
  ``c = log(labels)``, what NCSN++ feeds for VE noise levels ``sigma(t)``.
* ``"sinusoidal"``: the Transformer/DDPM positional embedding of ``c = labels`` (Vaswani et al. 2017;
  Ho et al. 2020), ``[sin(c w_k), cos(c w_k)]`` with ``w_k = max_positions^{-k/(h-1)}``, ``h = dim/2``.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ScoreMLP", "GaussianFourierProjection", "sinusoidal_embedding", "EMBEDDINGS", "ACTIVATIONS"]

ACTIVATIONS = {"silu": nn.silu, "swish": nn.silu, "relu": nn.relu, "gelu": nn.gelu, "softplus": nn.softplus,
               "elu": nn.elu, "tanh": jnp.tanh}


def sinusoidal_embedding(labels, dim: int, max_positions: float = 10_000.0):
    """DDPM/Transformer sinusoidal embedding of ``labels: [B]`` -> ``[B, dim]`` (``dim`` even).

    ``[sin(c w_0), ..., sin(c w_{h-1}), cos(c w_0), ...]`` with ``w_k = exp(-k log(max_positions) / (h - 1))``
    (the paper's ``layers.get_timestep_embedding``).
    """
    if dim % 2 or dim < 4:
        raise ValueError(f"embed_dim must be even and >= 4 for the sinusoidal embedding; got {dim}.")
    half = dim // 2
    # A NumPy constant, not jnp ops: XLA hoists jnp-computed frequencies out of a sampler's loop once per call
    # site and then does not merge the copies, which kept it from sharing the label embedding between the
    # corrector's and the predictor's evaluation at the same t (measured: 2 label MLPs per PC step instead of 1).
    freqs = np.exp(-math.log(max_positions) * np.arange(half, dtype=np.float64) / (half - 1))
    arg = labels[:, None] * jnp.asarray(freqs, labels.dtype)[None]
    return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)


class GaussianFourierProjection(nn.Module):
    """Random Fourier features ``[sin(2 pi c W), cos(2 pi c W)]``, ``W ~ N(0, scale^2)`` (not trained).

    ``W`` is a ``params`` entry (as in NCSN++) but receives no gradient (``stop_gradient``).
    """

    embed_dim: int = 64
    scale: float = 16.0

    @nn.compact
    def __call__(self, c):
        if self.embed_dim % 2:
            raise ValueError(f"embed_dim must be even for Fourier features; got {self.embed_dim}.")
        w = self.param("W", nn.initializers.normal(stddev=self.scale), (self.embed_dim // 2,))
        w = jax.lax.stop_gradient(w).astype(c.dtype)
        arg = 2.0 * jnp.pi * c[:, None] * w[None]
        return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)


EMBEDDINGS = ("fourier", "sinusoidal")


class ScoreMLP(nn.Module):
    """Residual MLP ``(x [B, D], labels [B]) -> [B, D]`` conditioned on an embedding of the labels.

    ``h_0 = Dense(x)``; each block ``h <- h + Dense(act(Dense(h) + Dense_emb(e)))`` where ``e`` is the
    label embedding passed through ``Dense -> act -> Dense`` (the DDPM time-embedding MLP); output
    ``Dense(act(h))`` with its weights scaled by ``output_scale`` at init (small initial scores).

    Attributes:
      hidden: width of the hidden layers; ``num_layers`` blocks.
      embedding: ``"fourier"`` or ``"sinusoidal"`` (see the module docstring).
      embed_dim: embedding size (even).
      fourier_scale: std of the Fourier frequencies.
      log_labels: embed ``log(labels)`` (use for positive noise levels ``sigma(t)``).
      max_positions: sinusoidal embedding's longest period.
      act: activation name in :data:`ACTIVATIONS`.
      output_scale: multiplies the default init of the last layer's kernel.
    """

    hidden: int = 128
    num_layers: int = 3
    embedding: str = "sinusoidal"
    embed_dim: int = 64
    fourier_scale: float = 16.0
    log_labels: bool = False
    max_positions: float = 10_000.0
    act: str = "silu"
    output_scale: float = 1.0

    @nn.compact
    def __call__(self, x, labels):
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {list(EMBEDDINGS)}; got {self.embedding!r}.")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}; got {self.act!r}.")
        if x.ndim != 2:
            raise ValueError(f"ScoreMLP expects x of shape [B, D]; got {x.shape}.")
        if labels.shape != x.shape[:1]:
            raise ValueError(f"labels must have shape [B] = {x.shape[:1]}; got {labels.shape}.")
        act = ACTIVATIONS[self.act]
        labels = labels.astype(x.dtype)
        c = jnp.log(labels) if self.log_labels else labels
        if self.embedding == "fourier":
            emb = GaussianFourierProjection(self.embed_dim, self.fourier_scale)(c)
        else:
            emb = sinusoidal_embedding(c, self.embed_dim, self.max_positions)
        emb = nn.Dense(4 * self.embed_dim)(emb)
        emb = nn.Dense(4 * self.embed_dim)(act(emb))
        h = nn.Dense(self.hidden)(x)
        for _ in range(self.num_layers):
            u = nn.Dense(self.hidden)(act(h)) + nn.Dense(self.hidden)(act(emb))
            h = h + nn.Dense(self.hidden)(act(u))
        init = nn.initializers.variance_scaling(self.output_scale**2, "fan_in", "truncated_normal")
        return nn.Dense(x.shape[-1], kernel_init=init)(act(h))
