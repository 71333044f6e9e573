"""Single-head spatial self-attention over all ``H x W`` positions (DDPM's ``AttnBlock``, NCSN++'s ``AttnBlockpp``).

.. math::

    h = \\mathrm{GN}(x),\\quad q, k, v = h W_q, h W_k, h W_v,\\quad
    A_{ij} = \\mathrm{softmax}_j\\big(q_i \\cdot k_j / \\sqrt{C}\\big),\\quad
    y = x + (A v) W_o \\quad (\\text{or } (x + (A v) W_o)/\\sqrt 2 \\text{ with skip rescaling}),

with ``i, j`` ranging over the ``H W`` pixels of one image (no mixing across the batch). ``W_o`` is
initialised near zero (``init_scale``), so a new block starts close to the identity.

References: Ho et al. 2020, Appendix B; Song et al. 2021, Appendix H (NCSN++).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sde_jax.models.layers import NIN, group_norm

__all__ = ["AttnBlock"]

_INV_SQRT2 = 2.0**-0.5  # a Python float keeps the (weak-typed) dtype of the array it multiplies


class AttnBlock(nn.Module):
    """Self-attention block, ``[B, H, W, C] -> [B, H, W, C]``.

    Attributes:
      skip_rescale: divide the residual sum by ``sqrt(2)`` (NCSN++).
      init_scale: ``default_init`` scale of the output projection (0 -> 1e-10).
      num_groups: GroupNorm groups; ``None`` = ``min(C // 4, 32)`` (NCSN++), DDPM uses 32.
      dtype: computation dtype; the softmax is computed in float32.
    """

    skip_rescale: bool = False
    init_scale: float = 0.0
    num_groups: int | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        b, hh, ww, c = x.shape
        dtype = self.dtype or x.dtype
        h = group_norm(c, num_groups=self.num_groups, dtype=dtype)(x)
        q = NIN(c, dtype=dtype)(h)
        k = NIN(c, dtype=dtype)(h)
        v = NIN(c, dtype=dtype)(h)
        w = jnp.einsum("bhwc,bHWc->bhwHW", q, k) * (int(c) ** (-0.5))
        w = jax.nn.softmax(w.reshape(b, hh, ww, hh * ww).astype(jnp.float32), axis=-1)
        w = w.reshape(b, hh, ww, hh, ww).astype(dtype)
        h = jnp.einsum("bhwHW,bHWc->bhwc", w, v)
        h = NIN(c, init_scale=self.init_scale, dtype=dtype)(h)
        out = x.astype(dtype) + h
        return out * _INV_SQRT2 if self.skip_rescale else out
