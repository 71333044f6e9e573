"""NCSNv2 (Song & Ermon 2020), the RefineNet score network (score_sde ``models/ncsnv2.py``).

Encoder: a 3x3 conv to ``nf``, then stages of two :class:`ResidualBlock` s each (the first of a stage
down-samples, by mean pooling or, in the deepest stages, by dilation instead); decoder: a chain of
:class:`RefineBlock` s from the deepest stage up, each fusing the next shallower encoder stage; then the
normalisation, activation and a 3x3 conv to the image channels. The output is divided by the noise level
(Song & Ermon 2020, Technique 3): ``s(x, sigma_i) = net(x) / sigma_i``, with ``sigma_i`` looked up from the
integer label ``i`` in the geometric table ``exp(linspace(log sigma_max, log sigma_min, num_scales))``.

Three depths, as in the paper's code (``config.model.name``):

=============  =====================  ===================================================
name           image size (paper)     encoder stages (width mult, down, dilation)
=============  =====================  ===================================================
ncsnv2_64      < 96 (CIFAR-10, CelebA)  (1,-,1) (2,down,1) (2,down,2) (2,down,4)
ncsnv2_128     96..128 (LSUN bedroom)   (1,-,1) (2,down,1) (2,down,1) (4,down,2) (4,down,4)
ncsnv2_256     129..256                 ... plus one more (2,down,1) stage
=============  =====================  ===================================================

("down" with dilation > 1 keeps the resolution.)

Conventions that differ between the paper's JAX code and its PyTorch port (and the original NCSNv2 code) are
options, defaulting to the JAX code's, so that a network computes what it computed when it was trained:

* ``align_corners``: bilinear resizing in the refine blocks with corners aligned (PyTorch) instead of
  half-pixel centres (JAX, ``jax.image.resize``); see :mod:`sde_jax.models.refinenet`.
* ``unbiased_channel_var``: InstanceNorm++ uses the unbiased (``C - 1``) variance of the channel means
  (PyTorch, ``torch.var``) instead of the biased one (JAX, ``jnp.var``); see
  :mod:`sde_jax.models.normalization`.
* ``refine_mults``: refine-block widths (multiples of ``nf``, deepest first) when they differ from the
  variant's; the paper's JAX ``ncsnv2_64`` uses ``(2, 2, 2, 1)`` where the PyTorch port and NCSNv2 use
  ``(2, 2, 1, 1)`` (the default, whose parameter count the tests pin).

:func:`sde_jax.models.config_for_source` sets them for checkpoints of either codebase.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from sde_jax.models.layers import NCSNConv, get_act
from sde_jax.models.ncsnpp import check_image_input, discrete_sigmas
from sde_jax.models.normalization import get_normalization
from sde_jax.models.refinenet import RefineBlock, ResidualBlock

__all__ = ["NCSNv2", "NCSNV2_VARIANTS"]

# variant -> (encoder stages (mult, down, dilation), refine-block width multipliers, deepest first)
NCSNV2_VARIANTS: dict[str, tuple[tuple[tuple[int, bool, int], ...], tuple[int, ...]]] = {
    "ncsnv2_64": (((1, False, 1), (2, True, 1), (2, True, 2), (2, True, 4)), (2, 2, 1, 1)),
    "ncsnv2_128": (((1, False, 1), (2, True, 1), (2, True, 1), (4, True, 2), (4, True, 4)), (4, 2, 2, 1, 1)),
    "ncsnv2_256": (((1, False, 1), (2, True, 1), (2, True, 1), (2, True, 1), (4, True, 2), (4, True, 4)),
                   (4, 2, 2, 2, 1, 1)),
}


class NCSNv2(nn.Module):
    """NCSNv2 score network, ``(x [B, H, W, C], labels [B] int) -> [B, H, W, C]`` (already divided by sigma).

    Attributes: variant ('ncsnv2_64' | 'ncsnv2_128' | 'ncsnv2_256'), nf, normalization ('InstanceNorm++',
    'InstanceNorm', 'VarianceNorm', 'GroupNorm'), nonlinearity ('elu'), interpolation ('bilinear' |
    'nearest_neighbor'), centered, sigma_min, sigma_max, num_scales, dtype, remat; the source-code
    conventions ``align_corners``, ``unbiased_channel_var`` (InstanceNorm++ only) and ``refine_mults``
    (``None``: the variant's) of the module docstring.
    """

    scale_by_sigma: ClassVar[bool] = True   # the output is divided by the level's sigma (always)
    variant: str = "ncsnv2_64"
    nf: int = 128
    normalization: str = "InstanceNorm++"
    nonlinearity: str = "elu"
    interpolation: str = "bilinear"
    centered: bool = False
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 232
    dtype: Any = None
    remat: bool = False
    align_corners: bool = False
    unbiased_channel_var: bool = False
    refine_mults: tuple[int, ...] | None = None

    @nn.compact
    def __call__(self, x, labels, train: bool = False):
        """Args: x ``[B, H, W, C]``; labels ``[B]`` integer noise levels (0 = sigma_max); ``train`` unused
        (no dropout), kept for the common ``apply(params, x, labels, train=...)`` signature."""
        del train
        if self.variant not in NCSNV2_VARIANTS:
            raise ValueError(f"Unknown NCSNv2 variant {self.variant!r}; valid: {sorted(NCSNV2_VARIANTS)}.")
        stages, refine_mults = NCSNV2_VARIANTS[self.variant]
        if self.refine_mults is not None:
            if len(self.refine_mults) != len(refine_mults) or min(self.refine_mults) < 1:
                raise ValueError(f"refine_mults must be {len(refine_mults)} positive integers for {self.variant}; "
                                 f"got {self.refine_mults}.")
            refine_mults = tuple(self.refine_mults)
        num_down = sum(1 for _, down, dil in stages if down and dil == 1)
        check_image_input(x, labels, num_down + 1, "NCSNv2")
        act = get_act(self.nonlinearity)
        norm = get_normalization(self.normalization)
        if self.unbiased_channel_var:
            if self.normalization != "InstanceNorm++":
                raise ValueError("unbiased_channel_var applies to normalization='InstanceNorm++' only; got "
                                 f"{self.normalization!r}.")
            norm = functools.partial(norm, unbiased_channel_var=True)
        dtype = self.dtype or jnp.float32
        nf = self.nf
        block_cls = nn.remat(ResidualBlock) if self.remat else ResidualBlock
        refine_cls = nn.remat(RefineBlock) if self.remat else RefineBlock

        h = x if self.centered else 2 * x - 1.0
        h = NCSNConv(nf, dtype=dtype)(h.astype(dtype))
        layers = []
        for s, (mult, down, dil) in enumerate(stages):   # explicit names: same tree with and without remat
            h = block_cls(mult * nf, norm, resample="down" if down else None, act=act, dilation=dil, dtype=dtype,
                          name=f"ResidualBlock_{2 * s}")(h)
            h = block_cls(mult * nf, norm, resample=None, act=act, dilation=dil, dtype=dtype,
                          name=f"ResidualBlock_{2 * s + 1}")(h)
            layers.append(h)

        n = len(layers)
        ref = None
        for k, mult in enumerate(refine_mults):
            layer = layers[n - 1 - k]
            inputs = [layer] if ref is None else [layer, ref]
            ref = refine_cls(tuple(layer.shape[1:3]), mult * nf, act=act, interpolation=self.interpolation,
                             end=(k == n - 1), align_corners=self.align_corners, dtype=dtype,
                             name=f"RefineBlock_{k}")(inputs)

        h = act(norm(dtype=dtype)(ref))
        h = NCSNConv(x.shape[-1], dtype=dtype)(h).astype(jnp.float32)
        sig = jnp.asarray(discrete_sigmas(self.sigma_min, self.sigma_max, self.num_scales))
        return h / sig[jnp.asarray(labels).astype(jnp.int32)][:, None, None, None]
