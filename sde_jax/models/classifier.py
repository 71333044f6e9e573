"""Noise-conditional classifiers ``(x_t, noise level) -> logits`` for classifier guidance (Song et al. 2021,
App. I.1): the paper's time-dependent Wide-ResNet for images and an MLP for low-dimensional data.

Both are conditioned on the noise level ``sigma`` of ``x_t`` through Gaussian Fourier features of
``log sigma`` (scale 16, as NCSN++) passed through a two-layer MLP; :func:`sde_jax.models.get_logit_fn` feeds
``sigma = sde.label_std(t)`` (``sigma(t)`` for VE, the kernel std for VP/sub-VP: the paper's
``sde.marginal_prob(x, t)[1]``). They are trained with cross-entropy on noised data
(:func:`sde_jax.losses.get_classifier_loss_fn`, ``training.loss = 'classifier'``) and give
``log p_t(y | x) = log_softmax(logits)[y]`` (:func:`sde_jax.models.classifier_log_prob`).

The Wide-ResNet follows the facts of the paper's ``models/wideresnet_noise_conditional.py`` (Zagoruyko &
Komodakis 2016, WRN-28-10 for CIFAR-10): per-image standardisation, a 3x3 conv to 16 channels, three groups of
``blocks_per_group`` pre-activation blocks with ``16 k``, ``32 k``, ``64 k`` channels (strides 1, 2, 2), GroupNorm
(``min(C // 4, 32)`` groups) + ReLU as the activation, the noise embedding added after each block's first conv,
shortcuts that average-pool and zero-pad channels, global average pooling and a dense layer. It was not
checked against the paper's released classifier weights (none are importable here).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from sde_jax.models.embeddings import GaussianFourierProjection
from sde_jax.models.layers import group_norm
from sde_jax.models.mlp import ScoreMLP

__all__ = ["WideResNet", "ClassifierMLP"]


def _check_labels(x, labels, name):
    if labels.shape != x.shape[:1]:
        raise ValueError(f"{name}: noise levels must have shape [B] = {x.shape[:1]}; got {labels.shape}.")


class _Activation(nn.Module):
    """GroupNorm then ReLU (the paper's classifier's ``activation``)."""

    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        return jax.nn.relu(group_norm(x.shape[-1], dtype=self.dtype)(x))


def _shortcut(orig, out_channels, stride):
    """Average-pool to the block's resolution and zero-pad channels (parameter-free shortcut)."""
    if stride > 1:
        orig = nn.avg_pool(orig, (stride, stride), (stride, stride))
    pad = out_channels - orig.shape[-1]
    return jnp.pad(orig, [(0, 0)] * (orig.ndim - 1) + [(0, pad)]) if pad > 0 else orig


class _WideBlock(nn.Module):
    channels: int
    stride: int = 1
    activate_before_residual: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x, temb):
        if self.activate_before_residual:
            x = _Activation(self.dtype)(x)
            orig, h = x, x
        else:
            orig, h = x, _Activation(self.dtype)(x)
        h = nn.Conv(self.channels, (3, 3), (self.stride, self.stride), use_bias=False, dtype=self.dtype)(h)
        h = h + nn.Dense(self.channels, dtype=self.dtype)(nn.silu(temb))[:, None, None, :]
        h = _Activation(self.dtype)(h)
        h = nn.Conv(self.channels, (3, 3), use_bias=False, dtype=self.dtype)(h)
        return h + _shortcut(orig, self.channels, self.stride)


def _noise_embedding(labels, embedding_size, scale, width, dtype):
    """Fourier features of ``log sigma`` -> Dense -> SiLU -> Dense: ``[B, width]``."""
    emb = GaussianFourierProjection(embedding_size, scale, dtype=dtype)(jnp.log(labels))
    emb = nn.Dense(width, dtype=dtype)(emb)
    return nn.Dense(width, dtype=dtype)(nn.silu(emb))


class WideResNet(nn.Module):
    """Noise-conditional Wide-ResNet ``(x [B, H, W, C], sigma [B]) -> logits [B, num_classes]``.

    WRN-``(6 n + 4)``-``k`` with ``n = blocks_per_group`` and ``k = channel_multiplier`` (the paper's CIFAR-10
    classifier: WRN-28-10, ``n = 4``, ``k = 10``); see the module docstring.

    Attributes:
      num_classes: number of classes.
      blocks_per_group: residual blocks per group.
      channel_multiplier: width factor ``k``.
      embedding_size: Fourier frequencies of ``log sigma`` (features: twice this).
      fourier_scale: std of the Fourier frequencies.
      embedding_width: width of the embedding MLP.
      dtype: computation dtype (``None``: the input's).
    """

    num_classes: int = 10
    blocks_per_group: int = 4
    channel_multiplier: int = 10
    embedding_size: int = 128
    fourier_scale: float = 16.0
    embedding_width: int = 512
    dtype: Any = None
    is_classifier: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x, labels):
        if x.ndim != 4:
            raise ValueError(f"WideResNet expects images [B, H, W, C]; got shape {x.shape}.")
        _check_labels(x, labels, "WideResNet")
        n = math.prod(x.shape[1:])
        mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
        std = jnp.maximum(jnp.std(x, axis=(1, 2, 3), keepdims=True), 1.0 / math.sqrt(n))
        h = (x - mean) / std   # per-image standardisation
        temb = _noise_embedding(labels, self.embedding_size, self.fourier_scale, self.embedding_width, self.dtype)
        h = nn.Conv(16, (3, 3), use_bias=False, dtype=self.dtype)(h)
        k = self.channel_multiplier
        for g, (width, stride) in enumerate(((16 * k, 1), (32 * k, 2), (64 * k, 2))):
            for i in range(self.blocks_per_group):
                h = _WideBlock(width, stride if i == 0 else 1, activate_before_residual=(g == 0 and i == 0),
                               dtype=self.dtype)(h, temb)
        h = _Activation(self.dtype)(h)
        h = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(h).astype(jnp.float32)


class ClassifierMLP(nn.Module):
    """Noise-conditional MLP classifier ``(x [B, D], sigma [B]) -> logits [B, num_classes]`` for toy data:
    the residual :class:`ScoreMLP` body with Fourier features of ``log sigma`` and ``num_classes`` outputs."""

    num_classes: int = 2
    hidden: int = 128
    num_layers: int = 3
    embed_dim: int = 64
    fourier_scale: float = 16.0
    act: str = "silu"
    is_classifier: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x, labels):
        if x.ndim != 2:
            raise ValueError(f"ClassifierMLP expects x of shape [B, D]; got {x.shape}.")
        _check_labels(x, labels, "ClassifierMLP")
        return ScoreMLP(hidden=self.hidden, num_layers=self.num_layers, embedding="fourier",
                        embed_dim=self.embed_dim, fourier_scale=self.fourier_scale, log_labels=True, act=self.act,
                        out_dim=self.num_classes, name="body")(x, labels)
