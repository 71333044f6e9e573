"""NCSN++ and DDPM++: the configurable U-Net of Song et al. 2021 (score_sde ``models/ncsnpp.py``).

One module covers both: NCSN++ is the configuration with FIR resampling, BigGAN residual blocks and a
progressive ("residual") input pyramid; DDPM++ is the same U-Net without FIR and pyramids (Song et al.
2021, Appendix H). The paper's configs are in :mod:`sde_jax.models.configs`.

Layout, for ``L = len(ch_mult)`` levels at resolutions ``R, R/2, ..., R/2^(L-1)``:

* time embedding: Gaussian Fourier features of ``log sigma`` (``'fourier'``) or sinusoidal features of
  the label (``'positional'``), then two dense layers of width ``4 nf`` (when ``conditional``); an optional
  class embedding (``num_classes > 0``) is added to it;
* down path: a 3x3 conv to ``nf``, then per level ``num_res_blocks`` residual blocks of width
  ``nf * ch_mult[level]`` (attention after each at ``attn_resolutions``) and, except at the last level, a
  down-sampling (a ``Downsample`` for DDPM blocks, a down-sampling BigGAN block otherwise), with the input
  pyramid merged in (``progressive_input``: none / input_skip / residual);
* middle: residual block, attention, residual block;
* up path: per level ``num_res_blocks + 1`` residual blocks on the concatenation with the skip, attention
  at ``attn_resolutions``, the output pyramid (``progressive``: none / output_skip / residual), and an
  up-sampling except at the top;
* GroupNorm, activation and a 3x3 conv (near-zero init) to the input channels; division by ``sigma`` when
  ``scale_by_sigma``.

Labels (the second argument) follow the paper's code: with ``'fourier'`` embedding the label *is* the
noise level sigma (VE, continuous training); with ``'positional'`` it is a time step (``999 t`` for
continuous VP/sub-VP, the integer level for discrete training) and ``scale_by_sigma`` looks sigma up in
the geometric table ``exp(linspace(log sigma_max, log sigma_min, num_scales))`` at ``int(label)``.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from sde_jax.models.attention import AttnBlock
from sde_jax.models.embeddings import GaussianFourierProjection, sinusoidal_embedding
from sde_jax.models.layers import DDPMConv, default_init, get_act, group_norm
from sde_jax.models.resample import COMBINE_METHODS, Combine, Downsample, Upsample
from sde_jax.models.resnet import RESBLOCK_TYPES, ResnetBlockBigGAN, ResnetBlockDDPM

__all__ = ["NCSNpp", "discrete_sigmas", "check_image_input"]

PROGRESSIVE = ("none", "output_skip", "residual")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
EMBEDDING_TYPES = ("fourier", "positional")
_INV_SQRT2 = 2.0**-0.5


def discrete_sigmas(sigma_min: float, sigma_max: float, num_scales: int) -> np.ndarray:
    """The paper's ``get_sigmas``: ``exp(linspace(log sigma_max, log sigma_min, num_scales))`` (descending)."""
    return np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_scales)).astype(np.float32)


def check_image_input(x, labels, num_levels: int, name: str):
    """Check ``x: [B, H, W, C]`` with ``H, W`` divisible by ``2**(num_levels - 1)`` and ``labels: [B]``."""
    if x.ndim != 4:
        raise ValueError(f"{name}: x must be NHWC [B, H, W, C]; got shape {x.shape}.")
    if labels is None or jnp.shape(labels) != x.shape[:1]:
        raise ValueError(f"{name}: labels must have shape [B] = {x.shape[:1]}; got "
                         f"{None if labels is None else jnp.shape(labels)}.")
    div = 2 ** (num_levels - 1)
    if x.shape[1] % div or x.shape[2] % div:
        raise ValueError(f"{name}: image size {x.shape[1]}x{x.shape[2]} is not divisible by 2^(levels-1) = "
                         f"{div} for {num_levels} resolution levels.")


def _check_choice(name, value, valid):
    if value not in valid:
        raise ValueError(f"Unknown {name} {value!r}; valid: {list(valid)}.")


class NCSNpp(nn.Module):
    """NCSN++ / DDPM++ score network, ``(x [B, H, W, C], labels [B]) -> [B, H, W, C]``.

    Attributes (names and defaults of the paper's ``config.model``):
      nf: base width. ch_mult: width multiplier per level. num_res_blocks: blocks per level.
      attn_resolutions: resolutions (height) with attention. dropout: dropout rate.
      resamp_with_conv: conv in the DDPM-kind resampling. conditional: use the time embedding.
      fir, fir_kernel: FIR resampling and its 1-D kernel. skip_rescale: 1/sqrt(2) on residual sums.
      resblock_type: 'ddpm' | 'biggan'. progressive: 'none' | 'output_skip' | 'residual'.
      progressive_input: 'none' | 'input_skip' | 'residual'. progressive_combine: 'sum' | 'cat'.
      embedding_type: 'fourier' | 'positional'. fourier_scale: std of the Fourier frequencies.
      init_scale: init scale of the last conv of each block and of the output conv.
      nonlinearity: 'swish' | 'elu' | 'relu' | 'lrelu'. scale_by_sigma: divide the output by sigma.
      centered: inputs already in [-1, 1] (else ``x -> 2x - 1``).
      sigma_min, sigma_max, num_scales: the discrete sigma table (positional + scale_by_sigma only).
      num_classes: > 0 adds a class embedding (``class_labels`` argument). dtype: computation dtype
      (``jnp.bfloat16`` for mixed precision; parameters stay float32). remat: rematerialise each
      residual / attention block in the backward pass.
    """

    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    fir: bool = True
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    resblock_type: str = "biggan"
    progressive: str = "none"
    progressive_input: str = "residual"
    progressive_combine: str = "sum"
    embedding_type: str = "fourier"
    fourier_scale: float = 16.0
    init_scale: float = 0.0
    nonlinearity: str = "swish"
    scale_by_sigma: bool = True
    centered: bool = False
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 1000
    num_classes: int = 0
    dtype: Any = None
    remat: bool = False

    def _check_config(self):
        _check_choice("resblock_type", self.resblock_type, RESBLOCK_TYPES)
        _check_choice("progressive", self.progressive, PROGRESSIVE)
        _check_choice("progressive_input", self.progressive_input, PROGRESSIVE_INPUT)
        _check_choice("progressive_combine", self.progressive_combine, COMBINE_METHODS)
        _check_choice("embedding_type", self.embedding_type, EMBEDDING_TYPES)
        if len(self.ch_mult) < 1 or self.num_res_blocks < 1 or self.nf < 1:
            raise ValueError(f"NCSNpp needs nf >= 1, ch_mult non-empty, num_res_blocks >= 1; got nf={self.nf}, "
                             f"ch_mult={self.ch_mult}, num_res_blocks={self.num_res_blocks}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}.")

    @property
    def uses_sigma_labels(self) -> bool:
        """Conditioned on the noise level ``sigma`` itself (Fourier features of ``log sigma``), not a time or
        an integer level."""
        return self.embedding_type == "fourier"

    @nn.compact
    def __call__(self, x, labels, train: bool = False, class_labels=None):
        """Args:
          x: ``[B, H, W, C]`` images. labels: ``[B]`` sigma (fourier) or time step (positional).
          train: enables dropout (pass ``rngs={'dropout': key}``). class_labels: ``[B]`` ints when
          ``num_classes > 0``.

        Returns: ``[B, H, W, C]`` float32.
        """
        self._check_config()
        num_levels = len(self.ch_mult)
        check_image_input(x, labels, num_levels, "NCSNpp")
        act = get_act(self.nonlinearity)
        dtype = self.dtype or jnp.float32
        nf = self.nf
        channels = x.shape[-1]

        resblock_cls = ResnetBlockDDPM if self.resblock_type == "ddpm" else ResnetBlockBigGAN
        attn_cls = AttnBlock
        if self.remat:
            resblock_cls = nn.remat(resblock_cls, static_argnums=(3,))
            attn_cls = nn.remat(AttnBlock)

        # Explicit names: the same parameter tree with and without remat (which renames classes).
        counts = {"res": 0, "attn": 0}
        res_name = "ResnetBlockDDPM" if self.resblock_type == "ddpm" else "ResnetBlockBigGAN"

        def resblock(out_ch=None, up=False, down=False):
            name = f"{res_name}_{counts['res']}"
            counts["res"] += 1
            common = dict(act=act, out_ch=out_ch, dropout=self.dropout, skip_rescale=self.skip_rescale,
                          init_scale=self.init_scale, dtype=dtype, name=name)
            if self.resblock_type == "ddpm":
                return resblock_cls(**common)
            return resblock_cls(up=up, down=down, fir=self.fir, fir_kernel=tuple(self.fir_kernel), **common)

        def attn():
            name = f"AttnBlock_{counts['attn']}"
            counts["attn"] += 1
            return attn_cls(skip_rescale=self.skip_rescale, init_scale=self.init_scale, dtype=dtype, name=name)

        # Time / noise-level embedding.
        labels = jnp.asarray(labels)
        if self.embedding_type == "fourier":
            used_sigmas = labels.astype(jnp.float32)
            temb = GaussianFourierProjection(embedding_size=nf, scale=self.fourier_scale)(jnp.log(used_sigmas))
        else:
            temb = sinusoidal_embedding(labels, nf)
            sig = jnp.asarray(discrete_sigmas(self.sigma_min, self.sigma_max, self.num_scales))
            used_sigmas = sig[labels.astype(jnp.int32)]
        if self.conditional:
            temb = nn.Dense(nf * 4, kernel_init=default_init(), dtype=dtype)(temb)
            temb = nn.Dense(nf * 4, kernel_init=default_init(), dtype=dtype)(act(temb))
        else:
            temb = None
        if self.num_classes > 0:
            if class_labels is None or jnp.shape(class_labels) != x.shape[:1]:
                raise ValueError(f"NCSNpp with num_classes={self.num_classes} needs class_labels of shape "
                                 f"[B] = {x.shape[:1]}; got {None if class_labels is None else jnp.shape(class_labels)}.")
            cemb = nn.Embed(self.num_classes, nf * 4, dtype=dtype, name="class_embed")(class_labels)
            temb = cemb if temb is None else temb + cemb
        elif class_labels is not None:
            raise ValueError("class_labels given but the model has num_classes=0.")

        if not self.centered:
            x = 2 * x - 1.0
        x = x.astype(dtype)

        # Down path.
        input_pyramid = x if self.progressive_input != "none" else None
        hs = [DDPMConv(nf, dtype=dtype)(x)]
        for i_level in range(num_levels):
            for _ in range(self.num_res_blocks):
                h = resblock(out_ch=nf * self.ch_mult[i_level])(hs[-1], temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = attn()(h)
                hs.append(h)
            if i_level != num_levels - 1:
                if self.resblock_type == "ddpm":
                    h = Downsample(with_conv=self.resamp_with_conv, fir=self.fir,
                                   fir_kernel=tuple(self.fir_kernel), dtype=dtype)(hs[-1])
                else:
                    h = resblock(down=True)(hs[-1], temb, train)
                if self.progressive_input == "input_skip":
                    input_pyramid = Downsample(fir=self.fir, fir_kernel=tuple(self.fir_kernel),
                                               with_conv=False)(input_pyramid)
                    h = Combine(method=self.progressive_combine, dtype=dtype)(input_pyramid, h)
                elif self.progressive_input == "residual":
                    input_pyramid = Downsample(out_ch=h.shape[-1], with_conv=True, fir=self.fir,
                                               fir_kernel=tuple(self.fir_kernel), dtype=dtype)(input_pyramid)
                    input_pyramid = input_pyramid + h
                    if self.skip_rescale:
                        input_pyramid = input_pyramid * _INV_SQRT2
                    h = input_pyramid
                hs.append(h)

        # Middle.
        h = hs[-1]
        h = resblock()(h, temb, train)
        h = attn()(h)
        h = resblock()(h, temb, train)

        # Up path.
        pyramid = None
        for i_level in reversed(range(num_levels)):
            for _ in range(self.num_res_blocks + 1):
                h = resblock(out_ch=nf * self.ch_mult[i_level])(
                    jnp.concatenate([h, hs.pop().astype(h.dtype)], axis=-1), temb, train)
            if h.shape[1] in self.attn_resolutions:
                h = attn()(h)
            if self.progressive != "none":
                def gn_act(h):
                    return act(group_norm(h.shape[-1], dtype=dtype)(h))

                if i_level == num_levels - 1:
                    if self.progressive == "output_skip":
                        pyramid = DDPMConv(channels, init_scale=self.init_scale, dtype=dtype)(gn_act(h))
                    else:
                        pyramid = DDPMConv(h.shape[-1], dtype=dtype)(gn_act(h))
                elif self.progressive == "output_skip":
                    pyramid = Upsample(fir=self.fir, fir_kernel=tuple(self.fir_kernel), with_conv=False)(pyramid)
                    pyramid = pyramid + DDPMConv(channels, init_scale=self.init_scale, dtype=dtype)(gn_act(h))
                else:
                    pyramid = Upsample(out_ch=h.shape[-1], with_conv=True, fir=self.fir,
                                       fir_kernel=tuple(self.fir_kernel), dtype=dtype)(pyramid)
                    pyramid = pyramid + h
                    if self.skip_rescale:
                        pyramid = pyramid * _INV_SQRT2
                    h = pyramid
            if i_level != 0:
                if self.resblock_type == "ddpm":
                    h = Upsample(with_conv=self.resamp_with_conv, fir=self.fir,
                                 fir_kernel=tuple(self.fir_kernel), dtype=dtype)(h)
                else:
                    h = resblock(up=True)(h, temb, train)
        assert not hs

        if self.progressive == "output_skip":
            h = pyramid
        else:
            h = act(group_norm(h.shape[-1], dtype=dtype)(h))
            h = DDPMConv(channels, init_scale=self.init_scale, dtype=dtype)(h)
        h = h.astype(jnp.float32)
        if self.scale_by_sigma:
            h = h / used_sigmas[:, None, None, None]
        return h
