"""InceptionV3 in the FID variant (the 2015-12-05 TensorFlow graph) as a Flax Linen module, and its input
handling.

This is the network that TTUR's FID code, pytorch-fid, clean-fid and the paper's evaluation (through the
TF-GAN / TF-Hub module with the same weights) use: torchvision's InceptionV3 topology with the FID graph's
differences, as pytorch-fid documents them (``FIDInceptionA/C/E``):

* the average pools inside ``Mixed_5b..5d``, ``Mixed_6b..6e`` and ``Mixed_7b`` ignore the zero padding
  (TensorFlow's ``AVG`` pool; PyTorch's ``count_include_pad=False``);
* ``Mixed_7c`` pools its last branch with a 3x3 *max* pool (stride 1, padding 1) instead of an average pool;
* the classifier has 1008 outputs (``fc``: 2048 -> 1008), not 1000, and there is no auxiliary head.

Every convolution is followed by batch normalisation in inference form, ``eps = 1e-3``, and a ReLU
(torchvision's ``BasicConv2d``). Submodules and parameters carry pytorch-fid's names (``Mixed_6b``,
``branch7x7dbl_3``, ...), so :mod:`sde_jax.metrics.weights` maps a pytorch-fid state dict onto the network
name by name.

Outputs (``[B, 299, 299, 3]`` in ``[-1, 1]`` in):
  ``pool3``: ``[B, 2048]``, the final average pool (FID, KID, precision/recall features);
  ``logits``: ``[B, 1008]``, ``pool3 @ W + b``;
  ``logits_unbiased``: ``[B, 1008]``, ``pool3 @ W`` (no bias), the logits of the original Inception Score
  code (Salimans et al. 2016, which multiplies pool3 by the softmax weight matrix only), as torch-fidelity's
  and torchmetrics' ``logits_unbiased`` feature.

Input handling (:func:`preprocess`): ``uint8`` images ``[B, H, W, C]`` (C = 1 or 3) become
``x = 2 * (u / 255) - 1`` after a bilinear resize of ``u / 255`` to 299 x 299, exactly as pytorch-fid does
(``F.interpolate(..., mode='bilinear', align_corners=False)``: half-pixel centres, no antialiasing, source
coordinates clamped at the borders). What differs from the TensorFlow graph (``resize="tf1"`` reproduces
its resize formula):

* TF's 2015 graph resizes with TF1's legacy ``ResizeBilinear`` (``align_corners=False`` without
  ``half_pixel_centers``): output pixel ``o`` samples input coordinate ``o * in / out`` instead of
  ``(o + 0.5) * in / out - 0.5``. For a 32 -> 299 upsampling this shifts the image by
  ``0.5 - 0.5 * 32 / 299 = 0.45`` input pixels towards the top-left and repeats the last row and column;
  it is a sub-pixel translation, not a blur.
* the graph then maps ``x -> (x - 128) / 128`` on ``[0, 255]`` values, pytorch-fid (and we)
  ``x / 127.5 - 1``: a 0.4% difference in contrast and a ``1/256`` offset.

Both change the features slightly; pytorch-fid reports FIDs ``0.08`` (``0.09%``) away from TF's on its own
test (pytorch-fid README). Features from either resize are internally consistent; never mix statistics made
with different resizes (the resize is recorded in :class:`~sde_jax.metrics.features.FeatureExtractor`'s
name). Clean-fid's "clean" mode (PIL bicubic with antialiasing, on the uint8 image) is not reproduced.

References:
  Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer Vision".
  Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium".
  Parmar, Zhang, Zhu 2022, "On Aliased Resizing and Surprising Subtleties in GAN Evaluation" (clean-fid).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["InceptionV3", "BasicConv", "preprocess", "resize_bilinear", "interpolation_matrix", "RESIZE_METHODS",
           "INCEPTION_SIZE", "BN_EPS", "NUM_LOGITS", "POOL3_DIM"]

INCEPTION_SIZE = 299
BN_EPS = 1e-3          # torchvision's BasicConv2d (and the TF graph)
NUM_LOGITS = 1008      # the 2015 graph's classifier width
POOL3_DIM = 2048
RESIZE_METHODS = ("pytorch_fid", "tf1")


# --------------------------------------------------------------------------------------------------
# Input handling


def interpolation_matrix(in_size: int, out_size: int, method: str = "pytorch_fid") -> np.ndarray:
    """Bilinear interpolation weights ``W: [out_size, in_size]`` along one axis (``y = W @ x``).

    ``pytorch_fid``: PyTorch's ``align_corners=False`` rule, source coordinate
    ``s = max((o + 0.5) * in / out - 0.5, 0)``. ``tf1``: TF1's legacy ``ResizeBilinear`` rule
    ``s = o * in / out``. Both then interpolate between ``floor(s)`` and ``min(floor(s) + 1, in - 1)`` with
    weight ``s - floor(s)`` on the second; no antialiasing (a downsampling skips pixels, as both libraries
    do). Computed in float64 on the host: a constant of the compiled program.
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize method must be one of {RESIZE_METHODS}; got {method!r}.")
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be >= 1; got in_size={in_size}, out_size={out_size}.")
    scale = in_size / out_size
    o = np.arange(out_size, dtype=np.float64)
    src = np.maximum((o + 0.5) * scale - 0.5, 0.0) if method == "pytorch_fid" else o * scale
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = src - i0
    w = np.zeros((out_size, in_size), np.float64)
    np.add.at(w, (np.arange(out_size), i0), 1.0 - frac)
    np.add.at(w, (np.arange(out_size), i1), frac)
    return w


def resize_bilinear(x: jax.Array, size: int | tuple[int, int], method: str = "pytorch_fid") -> jax.Array:
    """Bilinear resize of ``x: [B, H, W, C]`` (float) to ``[B, h, w, C]`` as two matrix products.

    See :func:`interpolation_matrix` for the two coordinate rules. The weights are float32 constants; the
    products run at ``Precision.HIGHEST`` (a float32 result on every backend).
    """
    h, w = (size, size) if isinstance(size, int) else size
    wh = jnp.asarray(interpolation_matrix(x.shape[1], h, method), jnp.float32)
    ww = jnp.asarray(interpolation_matrix(x.shape[2], w, method), jnp.float32)
    return jnp.einsum("oh,bhwc,pw->bopc", wh, x, ww, precision=lax.Precision.HIGHEST)


def preprocess(images: jax.Array, resize: str = "pytorch_fid") -> jax.Array:
    """``uint8 [B, H, W, C]`` (C = 1 or 3) -> float32 ``[B, 299, 299, 3]`` in ``[-1, 1]``.

    ``x = 2 * resize(u / 255) - 1`` (pytorch-fid's ``normalize_input`` after its resize); grey images are
    repeated over three channels. Images already 299 x 299 are not resampled (the interpolation matrix is
    then the identity).
    """
    if images.dtype != jnp.uint8:
        raise TypeError(f"images must be uint8 [B, H, W, C] (quantise samples first, as they are saved); got "
                        f"dtype {images.dtype}.")
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [B, H, W, C] with C in (1, 3); got shape {images.shape}.")
    x = images.astype(jnp.float32) / 255.0
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    if x.shape[1:3] != (INCEPTION_SIZE, INCEPTION_SIZE):
        x = resize_bilinear(x, INCEPTION_SIZE, resize)
    return 2.0 * x - 1.0


# --------------------------------------------------------------------------------------------------
# Network


def _pad(p):
    ph, pw = (p, p) if isinstance(p, int) else p
    return ((ph, ph), (pw, pw))


class BasicConv(nn.Module):
    """Convolution without bias, inference batch norm (``eps = 1e-3``), ReLU (torchvision's ``BasicConv2d``).

    .. math::  y = \\mathrm{relu}\\big((W * x - \\mu)\\, \\gamma / \\sqrt{v + \\epsilon} + \\beta\\big)

    Parameters: ``kernel [kh, kw, C_in, C_out]`` (He-normal initialised, so a randomly initialised network
    keeps its activations at scale), ``scale`` (gamma), ``bias`` (beta), ``mean``, ``var`` (running
    statistics), all ``[C_out]``.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: Any = 0
    precision: Any = "highest"

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        kernel = self.param("kernel", nn.initializers.he_normal(), (kh, kw, x.shape[-1], self.features))
        scale = self.param("scale", nn.initializers.ones, (self.features,))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        mean = self.param("mean", nn.initializers.zeros, (self.features,))
        var = self.param("var", nn.initializers.ones, (self.features,))
        y = lax.conv_general_dilated(x, kernel, self.strides, _pad(self.padding),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)
        return jax.nn.relu((y - mean) * (scale * lax.rsqrt(var + BN_EPS)) + bias)


def _avg_pool_same(x):
    # TensorFlow's AVG pool: the mean over the window's in-image pixels (PyTorch count_include_pad=False).
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_same(x):
    return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_down(x):
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
    """``Mixed_5b/5c/5d`` (35 x 35): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool (no pad count)-1x1."""

    pool_features: int
    precision: Any = "highest"

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv, precision=self.precision)
        b1 = conv(64, (1, 1), name="branch1x1")(x)
        b5 = conv(48, (1, 1), name="branch5x5_1")(x)
        b5 = conv(64, (5, 5), padding=2, name="branch5x5_2")(b5)
        b3 = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = conv(96, (3, 3), padding=1, name="branch3x3dbl_2")(b3)
        b3 = conv(96, (3, 3), padding=1, name="branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_same(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """``Mixed_6a`` (35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | max pool 3x3/2."""

    precision: Any = "highest"

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv, precision=self.precision)
        b3 = conv(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
        bd = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(96, (3, 3), padding=1, name="branch3x3dbl_2")(bd)
        bd = conv(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_down(x)], axis=-1)


class InceptionC(nn.Module):
    """``Mixed_6b..6e`` (17 x 17): 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avg pool (no pad count)-1x1."""

    channels_7x7: int
    precision: Any = "highest"

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv, precision=self.precision)
        c7 = self.channels_7x7
        b1 = conv(192, (1, 1), name="branch1x1")(x)
        b7 = conv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = conv(192, (1, 1), name="branch_pool")(_avg_pool_same(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """``Mixed_7a`` (17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max pool 3x3/2."""

    precision: Any = "highest"

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv, precision=self.precision)
        b3 = conv(192, (1, 1), name="branch3x3_1")(x)
        b3 = conv(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
        b7 = conv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_down(x)], axis=-1)


class InceptionE(nn.Module):
    """``Mixed_7b/7c`` (8 x 8): 1x1 | 1x1-(1x3 & 3x1) | 1x1-3x3-(1x3 & 3x1) | pool-1x1.

    ``pool="avg"`` (``Mixed_7b``): average pool without counting the padding; ``pool="max"``
    (``Mixed_7c``): the FID graph's 3x3 max pool.
    """

    pool: str = "avg"
    precision: Any = "highest"

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv, precision=self.precision)
        b1 = conv(320, (1, 1), name="branch1x1")(x)
        b3 = conv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                              conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
        bd = conv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(384, (3, 3), padding=1, name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                              conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
        pooled = _avg_pool_same(x) if self.pool == "avg" else _max_pool_same(x)
        bp = conv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


# (name, block factory) in network order, after the stem.
_MIXED: Sequence[tuple[str, Any]] = (
    ("Mixed_5b", functools.partial(InceptionA, pool_features=32)),
    ("Mixed_5c", functools.partial(InceptionA, pool_features=64)),
    ("Mixed_5d", functools.partial(InceptionA, pool_features=64)),
    ("Mixed_6a", InceptionB),
    ("Mixed_6b", functools.partial(InceptionC, channels_7x7=128)),
    ("Mixed_6c", functools.partial(InceptionC, channels_7x7=160)),
    ("Mixed_6d", functools.partial(InceptionC, channels_7x7=160)),
    ("Mixed_6e", functools.partial(InceptionC, channels_7x7=192)),
    ("Mixed_7a", InceptionD),
    ("Mixed_7b", functools.partial(InceptionE, pool="avg")),
    ("Mixed_7c", functools.partial(InceptionE, pool="max")),
)


class InceptionV3(nn.Module):
    """InceptionV3, FID variant (module docstring). ``x: [B, H, W, 3]`` float in ``[-1, 1]`` (299 x 299 for
    FID; the network is fully convolutional down to 75 x 75) -> dict of ``pool3 [B, 2048]``,
    ``logits [B, 1008]``, ``logits_unbiased [B, 1008]``.

    Attributes:
      precision: convolution precision; ``"highest"`` (default) keeps float32 convolutions on GPUs/TPUs
        whose default would be TF32/bfloat16 passes (reference features); ``None`` for the backend's
        default (faster on accelerators, features then differ in the 3rd-4th digit).
    """

    precision: Any = "highest"

    @nn.compact
    def __call__(self, x):
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"x must be [B, H, W, 3]; got shape {x.shape}.")
        if min(x.shape[1:3]) < 75:
            raise ValueError(f"InceptionV3 needs images of at least 75 x 75; got {x.shape[1:3]} "
                             f"(use preprocess() to resize to {INCEPTION_SIZE}).")
        conv = functools.partial(BasicConv, precision=self.precision)
        x = conv(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = conv(64, (3, 3), padding=1, name="Conv2d_2b_3x3")(x)
        x = _max_pool_down(x)
        x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_down(x)
        for name, block in _MIXED:
            x = block(precision=self.precision, name=name)(x)
        pool3 = jnp.mean(x, axis=(1, 2))
        logits_unbiased, logits = _Classifier(NUM_LOGITS, precision=self.precision, name="fc")(pool3)
        return dict(pool3=pool3, logits=logits, logits_unbiased=logits_unbiased)


class _Classifier(nn.Module):
    """``fc``: ``(x @ kernel, x @ kernel + bias)``; ``kernel [2048, 1008]``, ``bias [1008]``."""

    features: int
    precision: Any = "highest"

    @nn.compact
    def __call__(self, x):
        w = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        y = jnp.dot(x, w, precision=self.precision)
        return y, y + b
