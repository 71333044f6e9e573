"""A noise-conditional MLP score network for low-dimensional data, with time/noise-level embeddings.

The network maps ``(x: [B, D], labels: [B]) -> [B, D]``; what the labels mean (``sigma(t)``, ``999 t`` or a
discrete level) and how the output becomes a score is the wrapper's business
(:func:`sde_jax.models.wrappers.get_score_fn`). Embeddings follow the paper's networks:

* ``"fourier"``: Gaussian random Fourier features ``[sin 2 pi W c, cos 2 pi W c]``, ``W ~ N(0, scale^2)``
  fixed at init (Tancik et al. 2020; NCSN++ with ``fourier_scale = 16``). With ``log_labels`` the input is
  ``c = log(labels)``, what NCSN++ feeds for VE noise levels ``sigma(t)``.
* ``"sinusoidal"``: the Transformer/DDPM positional embedding of ``c = labels`` (Vaswani et al. 2017;
  Ho et al. 2020), ``[sin(c w_k), cos(c w_k)]`` with ``w_k = max_positions^{-k/(h-1)}``, ``h = dim/2``.

Both are the image networks' embeddings (:mod:`sde_jax.models.embeddings`), computed in the data's dtype.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from sde_jax.models.embeddings import GaussianFourierProjection, sinusoidal_embedding

__all__ = ["ScoreMLP", "EMBEDDINGS", "ACTIVATIONS"]

ACTIVATIONS = {"silu": nn.silu, "swish": nn.silu, "relu": nn.relu, "gelu": nn.gelu, "softplus": nn.softplus,
               "elu": nn.elu, "tanh": jnp.tanh}

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
      out_dim: output width (default ``D``, a score; the classifier :class:`~sde_jax.models.ClassifierMLP`
        sets its number of classes).
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
    out_dim: int | None = None

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
            if self.embed_dim % 2:
                raise ValueError(f"embed_dim must be even for Fourier features; got {self.embed_dim}.")
            emb = GaussianFourierProjection(self.embed_dim // 2, self.fourier_scale, dtype=c.dtype)(c)
        else:
            if self.embed_dim % 2 or self.embed_dim < 4:
                raise ValueError(f"embed_dim must be even and >= 4 for the sinusoidal embedding; got {self.embed_dim}.")
            emb = sinusoidal_embedding(c, self.embed_dim, self.max_positions, dtype=c.dtype)
        emb = nn.Dense(4 * self.embed_dim)(emb)
        emb = nn.Dense(4 * self.embed_dim)(act(emb))
        h = nn.Dense(self.hidden)(x)
        for _ in range(self.num_layers):
            u = nn.Dense(self.hidden)(act(h)) + nn.Dense(self.hidden)(act(emb))
            h = h + nn.Dense(self.hidden)(act(u))
        init = nn.initializers.variance_scaling(self.output_scale**2, "fan_in", "truncated_normal")
        return nn.Dense(x.shape[-1] if self.out_dim is None else self.out_dim, kernel_init=init)(act(h))
