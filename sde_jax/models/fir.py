"""FIR up/down-sampling in pure JAX (StyleGAN2's ``upfirdn2d``), as NCSN++ uses it.

The paper's code (yang-song/score_sde ``models/up_or_down_sampling.py``, ported from NVlabs/stylegan2)
resamples images with a finite-impulse-response filter: upsampling inserts ``factor - 1`` zeros after
every pixel and then filters, downsampling filters and then keeps every ``factor``-th pixel. The PyTorch
port needs a custom CUDA op; here everything is ``lax.pad`` + a depthwise ``lax.conv_general_dilated``,
so it runs on any backend and is differentiable to any order.

All functions take NHWC images ``x: [B, H, W, C]``. A 1-D kernel ``k`` (e.g. ``(1, 3, 3, 1)``) means the
separable 2-D kernel ``outer(k, k)``; kernels are normalised to sum to one (times ``factor**2`` when
upsampling, so that a constant image keeps its value away from the border). Pixels outside the image
are zero, so a constant image is attenuated within ``len(k) // 2`` pixels of the border, as in the
paper's code.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sde_jax.models.layers import default_init

__all__ = [
    "setup_kernel",
    "upfirdn2d",
    "upsample_2d",
    "downsample_2d",
    "naive_upsample_2d",
    "naive_downsample_2d",
    "upsample_conv_2d",
    "conv_downsample_2d",
    "FIRConv2d",
]


def setup_kernel(k) -> np.ndarray:
    """Normalised 2-D FIR kernel from a 1-D (separable) or 2-D kernel: ``K / sum(K)``.

    Raises:
      ValueError: if the kernel is empty, not square, not 1-D/2-D, or sums to zero.
    """
    k = np.asarray(k, dtype=np.float64)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.size == 0:
        raise ValueError(f"FIR kernel must be 1-D or square 2-D and non-empty; got shape {k.shape}.")
    s = k.sum()
    if s == 0:
        raise ValueError("FIR kernel must not sum to zero.")
    return k / s


def _check_factor(factor):
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a positive integer; got {factor!r}.")


def upfirdn2d(x, k, *, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)):
    """Upsample by zero insertion, pad, convolve with a 2-D FIR kernel, then subsample.

    .. math::

        y = \\mathrm{down}_d\\Big( \\mathrm{pad}_{p_0, p_1}\\big(\\mathrm{up}_u(x)\\big) * K \\Big),

    where ``up_u`` inserts ``u - 1`` zeros after every pixel (also the last one), ``*`` is a true 2-D
    convolution (the kernel is flipped) with no further padding, and ``down_d`` keeps every ``d``-th pixel.
    Negative pads crop. Output size per spatial axis: ``(H u + p0 + p1 - kh) // d + 1``.

    Args:
      x: ``[B, H, W, C]`` images.
      k: ``[kh, kw]`` kernel (used as given, not normalised).
      up, down: integer factors.
      pad: ``(p0, p1)`` padding before/after, the same for both spatial axes.

    Returns:
      ``[B, H', W', C]``, dtype of ``x``.
    """
    _check_factor(up)
    _check_factor(down)
    k = jnp.asarray(k, dtype=x.dtype)
    if k.ndim != 2:
        raise ValueError(f"upfirdn2d needs a 2-D kernel; got shape {k.shape}.")
    c = x.shape[-1]
    p0, p1 = pad
    zero = jnp.zeros((), x.dtype)
    # Zero insertion (interior padding) and the border padding in one lax.pad; the high side also
    # gets the up - 1 zeros that follow the last pixel.
    cfg = [(0, 0, 0), (p0, p1 + up - 1, up - 1), (p0, p1 + up - 1, up - 1), (0, 0, 0)]
    x = jax.lax.pad(x, zero, cfg)
    w = jnp.flip(k, (0, 1))[:, :, None, None] * jnp.ones((1, 1, 1, c), x.dtype)  # HWIO, depthwise
    return jax.lax.conv_general_dilated(
        x, w, window_strides=(down, down), padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)


def upsample_2d(x, k: Sequence[float] | None = None, factor: int = 2, gain: float = 1.0):
    """FIR upsampling ``[B, H, W, C] -> [B, H f, W f, C]`` (kernel default ``[1] * factor``: nearest)."""
    _check_factor(factor)
    k = setup_kernel([1] * factor if k is None else k) * (gain * factor**2)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x, k: Sequence[float] | None = None, factor: int = 2, gain: float = 1.0):
    """FIR downsampling ``[B, H, W, C] -> [B, H / f, W / f, C]`` (default ``[1] * factor``: average pool)."""
    _check_factor(factor)
    k = setup_kernel([1] * factor if k is None else k) * gain
    p = k.shape[0] - factor
    return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def naive_upsample_2d(x, factor: int = 2):
    """Nearest-neighbour upsampling by pixel repetition."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, factor, w, factor, c))
    return x.reshape(b, h * factor, w * factor, c)


def naive_downsample_2d(x, factor: int = 2):
    """Average pooling over non-overlapping ``factor x factor`` windows."""
    b, h, w, c = x.shape
    return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def upsample_conv_2d(x, w, k: Sequence[float] | None = None, factor: int = 2, gain: float = 1.0):
    """Fused upsample + convolution (StyleGAN2): transposed strided conv, then one FIR pass.

    Equivalent to zero-insertion upsampling, a full correlation with ``w`` and the FIR filter
    ``k * factor**2``, with the padding applied once (``p = len(k) - factor - (kw - 1)``).

    Args:
      x: ``[B, H, W, Cin]``.
      w: ``[kh, kw, Cin, Cout]`` convolution weight (odd, square).

    Returns:
      ``[B, H f, W f, Cout]``.
    """
    _check_factor(factor)
    kh, kw = w.shape[0], w.shape[1]
    if kh != kw:
        raise ValueError(f"upsample_conv_2d needs a square conv kernel; got {w.shape[:2]}.")
    k = setup_kernel([1] * factor if k is None else k) * (gain * factor**2)
    p = (k.shape[0] - factor) - (kw - 1)
    # Transposed conv with stride `factor` (as the paper's flipped-kernel conv_transpose): zero-insert,
    # pad kw - 1 on each side and correlate with w; output (H - 1) f + kh per axis.
    x = jax.lax.conv_general_dilated(
        x, w.astype(x.dtype), window_strides=(1, 1), padding=[(kh - 1, kh - 1), (kw - 1, kw - 1)],
        lhs_dilation=(factor, factor), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return upfirdn2d(x, k, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x, w, k: Sequence[float] | None = None, factor: int = 2, gain: float = 1.0):
    """Fused FIR filter + strided convolution (StyleGAN2), padding applied once.

    Args:
      x: ``[B, H, W, Cin]``.
      w: ``[kh, kw, Cin, Cout]``.

    Returns:
      ``[B, H / f, W / f, Cout]``.
    """
    _check_factor(factor)
    kh, kw = w.shape[0], w.shape[1]
    if kh != kw:
        raise ValueError(f"conv_downsample_2d needs a square conv kernel; got {w.shape[:2]}.")
    k = setup_kernel([1] * factor if k is None else k) * gain
    p = (k.shape[0] - factor) + (kw - 1)
    x = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
    return jax.lax.conv_general_dilated(
        x, w.astype(x.dtype), window_strides=(factor, factor), padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class FIRConv2d(nn.Module):
    """Conv layer with optional fused FIR up/down-sampling (``Conv2d`` of the paper's code).

    Attributes:
      features: output channels.
      kernel: odd spatial size of the conv kernel.
      up, down: upsample (x2) before / downsample (x2) after the conv; at most one.
      resample_kernel: 1-D FIR kernel.
      use_bias: add a bias.
      init_scale: ``default_init`` scale of the weight.
      dtype: computation dtype (parameters stay float32).
    """

    features: int
    kernel: int = 3
    up: bool = False
    down: bool = False
    resample_kernel: tuple[int, ...] = (1, 3, 3, 1)
    use_bias: bool = True
    init_scale: float = 1.0
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x):
        if self.up and self.down:
            raise ValueError("FIRConv2d: up and down cannot both be set.")
        if self.kernel < 1 or self.kernel % 2 != 1:
            raise ValueError(f"FIRConv2d: kernel must be a positive odd integer; got {self.kernel}.")
        dtype = self.dtype or x.dtype
        x = x.astype(dtype)
        w = self.param("kernel", default_init(self.init_scale),
                       (self.kernel, self.kernel, x.shape[-1], self.features), jnp.float32).astype(dtype)
        if self.up:
            x = upsample_conv_2d(x, w, k=self.resample_kernel)
        elif self.down:
            x = conv_downsample_2d(x, w, k=self.resample_kernel)
        else:
            x = jax.lax.conv_general_dilated(
                x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.use_bias:
            x = x + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(dtype)
        return x
