"""The DDPM U-Net of Ho et al. 2020 (score_sde ``models/ddpm.py``; diffusion_tf ``models/unet.py``).

A PixelCNN++-style U-Net: a 3x3 conv to ``nf``; per level ``num_res_blocks`` DDPM residual blocks (GroupNorm
with 32 groups, dropout, NIN shortcut) with attention at ``attn_resolutions`` and a stride-2 conv (or average
pool) between levels; middle block, attention, block; an up path of ``num_res_blocks + 1`` blocks per level
on the concatenated skips, nearest-neighbour upsampling + conv; GroupNorm, swish and a zero-initialised
3x3 conv. The time embedding is sinusoidal on the label followed by two dense layers of width ``4 nf``.

Labels: time steps (``999 t`` continuous VP/sub-VP, the integer level for discrete DDPM) or, for SMLD
training with ``scale_by_sigma`` (``configs/ve/cifar10_ddpm.py``), the integer noise level whose sigma
divides the output.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sde_jax.models.attention import AttnBlock
from sde_jax.models.embeddings import sinusoidal_embedding
from sde_jax.models.layers import DDPMConv, default_init, get_act, group_norm
from sde_jax.models.ncsnpp import check_image_input, discrete_sigmas
from sde_jax.models.resample import Downsample, Upsample
from sde_jax.models.resnet import ResnetBlockDDPM

__all__ = ["DDPM"]


class DDPM(nn.Module):
    """DDPM U-Net, ``(x [B, H, W, C], labels [B]) -> [B, H, W, C]``.

    Attributes (names of the paper's ``config.model``): nf, ch_mult, num_res_blocks, attn_resolutions,
    dropout, resamp_with_conv, conditional, nonlinearity, scale_by_sigma, centered, sigma_min, sigma_max,
    num_scales (the discrete sigma table for ``scale_by_sigma``), dtype (computation dtype), remat.
    """

    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    nonlinearity: str = "swish"
    scale_by_sigma: bool = False
    centered: bool = True
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 1000
    dtype: Any = None
    remat: bool = False

    @nn.compact
    def __call__(self, x, labels, train: bool = False):
        """Args: x ``[B, H, W, C]``; labels ``[B]``; train enables dropout. Returns ``[B, H, W, C]`` float32."""
        num_levels = len(self.ch_mult)
        if num_levels < 1 or self.num_res_blocks < 1:
            raise ValueError(f"DDPM needs ch_mult non-empty and num_res_blocks >= 1; got {self.ch_mult}, "
                             f"{self.num_res_blocks}.")
        check_image_input(x, labels, num_levels, "DDPM")
        act = get_act(self.nonlinearity)
        dtype = self.dtype or jnp.float32
        nf = self.nf
        channels = x.shape[-1]
        block_cls = nn.remat(ResnetBlockDDPM, static_argnums=(3,)) if self.remat else ResnetBlockDDPM
        attn_cls = nn.remat(AttnBlock) if self.remat else AttnBlock

        counts = {"res": 0, "attn": 0}   # explicit names: the same parameter tree with and without remat

        def resblock(out_ch=None):
            counts["res"] += 1
            return block_cls(act=act, out_ch=out_ch, dropout=self.dropout, num_groups=32, skip_rescale=False,
                             init_scale=0.0, dtype=dtype, name=f"ResnetBlockDDPM_{counts['res'] - 1}")

        def attn():
            counts["attn"] += 1
            return attn_cls(num_groups=32, skip_rescale=False, init_scale=0.0, dtype=dtype,
                            name=f"AttnBlock_{counts['attn'] - 1}")

        labels = jnp.asarray(labels)
        if self.conditional:
            temb = sinusoidal_embedding(labels, nf)
            temb = nn.Dense(nf * 4, kernel_init=default_init(), dtype=dtype)(temb)
            temb = nn.Dense(nf * 4, kernel_init=default_init(), dtype=dtype)(act(temb))
        else:
            temb = None

        h = x if self.centered else 2 * x - 1.0
        h = h.astype(dtype)
        hs = [DDPMConv(nf, dtype=dtype)(h)]
        for i_level in range(num_levels):
            for _ in range(self.num_res_blocks):
                h = resblock(nf * self.ch_mult[i_level])(hs[-1], temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = attn()(h)
                hs.append(h)
            if i_level != num_levels - 1:
                hs.append(Downsample(with_conv=self.resamp_with_conv, dtype=dtype)(hs[-1]))

        h = hs[-1]
        h = resblock()(h, temb, train)
        h = attn()(h)
        h = resblock()(h, temb, train)

        for i_level in reversed(range(num_levels)):
            for _ in range(self.num_res_blocks + 1):
                h = resblock(nf * self.ch_mult[i_level])(jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
            if h.shape[1] in self.attn_resolutions:
                h = attn()(h)
            if i_level != 0:
                h = Upsample(with_conv=self.resamp_with_conv, dtype=dtype)(h)
        assert not hs

        h = act(group_norm(h.shape[-1], num_groups=32, dtype=dtype)(h))
        h = DDPMConv(channels, init_scale=0.0, dtype=dtype)(h).astype(jnp.float32)
        if self.scale_by_sigma:
            sig = jnp.asarray(discrete_sigmas(self.sigma_min, self.sigma_max, self.num_scales))
            h = h / sig[labels.astype(jnp.int32)][:, None, None, None]
        return h
