"""Linear measurements ``y = A x + sigma_y z`` in the spectral form every conditional sampler works in.

An SVD ``A = U diag(s) V^T`` (``V`` orthogonal on the data space, ``U`` on the measurement space) turns any
full-row-rank linear measurement into *observed coordinates*: in the basis ``x_bar = V^T x`` the first ``m``
coordinates are measured, each on its own,

.. math::  \\tilde y_i = (U^T y)_i / s_i = \\bar x_i + (\\sigma_y / s_i)\\, \\epsilon_i, \\qquad i < m,

and the rest are free (Kawar et al. 2022, DDRM; Cardoso et al. 2023, MCGdiff, Sec. 3). A
:class:`LinearMeasurement` stores exactly that: the observations ``y_bar`` (``\\tilde y`` on the observed
coordinates, 0 elsewhere), the boolean ``observed`` mask and the noise variances ``noise_var = (sigma_y /
s_i)^2``, all with the data's shape ``[B, ...]`` (one measurement per example), plus the orthogonal basis.
Inpainting is the identity basis with the pixel mask; colourisation is the paper's orthonormal colour basis
per pixel with the grey channel observed (:data:`COLOUR_BASIS`); any other ``A`` goes through its SVD
(:func:`linear_measurement`). Every sampler in :mod:`sde_jax.samplers.conditional` takes one of these.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from sde_jax import _checks as C
from sde_jax._pytree import pytree_dataclass, static_field

__all__ = ["LinearMeasurement", "COLOUR_BASIS", "mask_measurement", "colour_measurement", "linear_measurement",
           "BASIS_AXES"]

COLOUR_BASIS = np.stack([np.array([1.0, 1.0, 1.0]) / math.sqrt(3.0), np.array([-2.0, 1.0, 1.0]) / math.sqrt(6.0),
                         np.array([0.0, 1.0, -1.0]) / math.sqrt(2.0)], axis=1)
"""The orthonormal colour basis ``V`` (columns) of the paper's colouriser (score_sde
``controllable_generation.py``): the first column is the grey direction ``(1, 1, 1)/sqrt 3``, so the first
decoupled channel of an RGB pixel is ``(r + g + b)/sqrt 3 = sqrt 3 * grey``; the other two span the colours."""

BASIS_AXES = ("flat", "channel")
"""How ``basis`` acts: ``"flat"``: a ``[d, d]`` matrix on the flattened example; ``"channel"``: a ``[C, C]``
matrix on the last (channel) axis of every pixel."""


@pytree_dataclass
class LinearMeasurement:
    """Observed coordinates in an orthogonal basis (module docstring). Build with :func:`mask_measurement`,
    :func:`colour_measurement` or :func:`linear_measurement`.

    Attributes:
      y_bar: ``[B, ...]`` the observations ``\\tilde y`` in the basis (0 on free coordinates).
      observed: ``[B, ...]`` bool, True on observed coordinates.
      noise_var: ``[B, ...]`` ``(sigma_y / s_i)^2`` on observed coordinates (0: exact observation).
      basis: ``None`` (identity) or the orthogonal ``V`` (``[d, d]`` or ``[C, C]``, see ``basis_axis``).
      basis_axis: ``"flat"`` or ``"channel"`` (static).
    """

    y_bar: jax.Array
    observed: jax.Array
    noise_var: jax.Array
    basis: jax.Array | None = None
    basis_axis: str = static_field(default="flat")

    @property
    def shape(self) -> tuple[int, ...]:
        """The data shape ``[B, ...]``."""
        return tuple(self.y_bar.shape)

    def to_spectral(self, x):
        """``x_bar = V^T x`` for ``x: [..., *data_shape]`` (any leading axes)."""
        return self._apply(x, transpose=False)

    def from_spectral(self, x_bar):
        """``x = V x_bar`` (the inverse of :meth:`to_spectral`)."""
        return self._apply(x_bar, transpose=True)

    def _apply(self, x, transpose):
        if self.basis is None:
            return x
        v = self.basis.astype(x.dtype)
        v = v.T if transpose else v
        if self.basis_axis == "channel":
            return jnp.einsum("...i,ij->...j", x, v)
        event = self.y_bar.shape[1:]
        lead = x.shape[:x.ndim - len(event)]
        return jnp.reshape(jnp.reshape(x, lead + (-1,)) @ v, x.shape)

    def is_noise_free(self) -> bool:
        """True when every observation is exact (concrete check; False for traced noise)."""
        return C.is_concrete(self.noise_var) and not bool(np.any(np.asarray(self.noise_var)))


def _noise_var(noise_std, shape, dtype, scale=None):
    noise_std = C.check_nonnegative("noise_std", noise_std)
    var = jnp.asarray(noise_std, dtype) ** 2
    if scale is not None:
        var = var * scale
    return jnp.broadcast_to(var, shape)


def _float_data(name, x, min_ndim=2):
    x = jnp.asarray(x)
    C.check_data(name, x, min_ndim=min_ndim)
    return x


def mask_measurement(data, mask, noise_std=0.0) -> LinearMeasurement:
    """Inpainting: the coordinates where ``mask`` is 1 are observed (``A`` selects them, ``V = I``).

    Args:
      data: ``[B, ...]`` the examples whose known coordinates are observed (values elsewhere are ignored).
      mask: 1 (or True) where known, 0 where to inpaint; shape ``[B, ...]`` or broadcastable to it (e.g.
        ``[1, H, W, 1]`` for one mask over a batch of images).
      noise_std: std of Gaussian noise on the observed values (0: exact).
    """
    data = _float_data("data", data)
    mask = np.asarray(mask) if C.is_concrete(mask) else mask
    try:
        observed = jnp.broadcast_to(jnp.asarray(mask) != 0, data.shape)
    except ValueError:
        raise ValueError(f"mask must broadcast to data's shape {data.shape}; got shape {jnp.shape(mask)}.") from None
    if C.is_concrete(mask):
        m = np.asarray(mask)
        if not np.all((m == 0) | (m == 1)):
            raise ValueError("mask must hold 0 (unknown) and 1 (known) only.")
    y_bar = jnp.where(observed, data, jnp.zeros_like(data))
    return LinearMeasurement(y_bar, observed, _noise_var(noise_std, data.shape, data.dtype) * observed)


def colour_measurement(gray, noise_std=0.0) -> LinearMeasurement:
    """Colourisation: the grey level ``(r + g + b) / 3`` of every pixel is observed.

    In :data:`COLOUR_BASIS` the first channel of a pixel is ``sqrt 3 * grey``, so it is observed as
    ``y_bar = sqrt 3 * gray`` (noise std ``sqrt 3 * noise_std``) and the two colour channels are free.

    Args:
      gray: ``[B, H, W, 1]`` grey levels, or ``[B, H, W, 3]`` grey-scale images with equal channels (the
        paper's input; their mean over channels is used).
      noise_std: std of Gaussian noise on the grey levels (0: exact).
    """
    gray = _float_data("gray", gray, min_ndim=4)
    if gray.ndim != 4 or gray.shape[-1] not in (1, 3):
        raise ValueError(f"gray must have shape [B, H, W, 1] or [B, H, W, 3]; got shape {gray.shape}.")
    level = jnp.mean(gray, axis=-1, keepdims=True)
    shape = gray.shape[:-1] + (3,)
    observed = jnp.broadcast_to(jnp.arange(3) == 0, shape)
    y_bar = jnp.where(observed, math.sqrt(3.0) * level, 0.0).astype(gray.dtype)
    noise_var = _noise_var(noise_std, shape, gray.dtype, scale=3.0) * observed
    return LinearMeasurement(y_bar, observed, noise_var, jnp.asarray(COLOUR_BASIS, gray.dtype), "channel")


def linear_measurement(y, a, noise_std=0.0, *, shape=None, rcond=1e-6) -> LinearMeasurement:
    """A general measurement ``y = A x + noise_std z`` of flattened examples, through the SVD of ``A``.

    ``A = U diag(s) V^T`` (``jnp.linalg.svd``, full ``V``); the measurement becomes ``\\tilde y = U^T y / s``
    on the first ``m`` coordinates of ``V^T x`` with noise variances ``(noise_std / s_i)^2``.

    Args:
      y: ``[B, m]`` measurements.
      a: ``[m, d]`` matrix of full row rank, ``m <= d``.
      noise_std: std of the Gaussian measurement noise (0: exact).
      shape: the data shape of one example (default ``(d,)``); ``prod(shape) == d``.
      rcond: singular values below ``rcond * max(s)`` are refused (``A`` must have full row rank).
    """
    a = jnp.asarray(a)
    y = _float_data("y", y)
    if a.ndim != 2 or y.ndim != 2 or y.shape[1] != a.shape[0] or a.shape[0] > a.shape[1]:
        raise ValueError(f"a must be [m, d] with m <= d and y [B, m]; got a {a.shape} and y {y.shape}.")
    m, d = a.shape
    shape = (d,) if shape is None else tuple(int(s) for s in shape)
    if math.prod(shape) != d:
        raise ValueError(f"shape {shape} must have prod(shape) = d = {d}.")
    u, s, vt = jnp.linalg.svd(a.astype(y.dtype), full_matrices=True)
    if C.is_concrete(s) and float(jnp.min(s)) <= rcond * float(jnp.max(s)):
        raise ValueError(f"a must have full row rank; its smallest singular value is {float(jnp.min(s)):.3g} "
                         f"(largest {float(jnp.max(s)):.3g}).")
    b = y.shape[0]
    y_obs = (y @ u) / s
    y_bar = jnp.reshape(jnp.concatenate([y_obs, jnp.zeros((b, d - m), y.dtype)], axis=1), (b,) + shape)
    observed = jnp.broadcast_to(jnp.reshape(jnp.arange(d) < m, shape), (b,) + shape)
    scale = jnp.reshape(jnp.concatenate([1.0 / s**2, jnp.zeros((d - m,), y.dtype)]), shape)
    noise_var = _noise_var(noise_std, (b,) + shape, y.dtype) * scale
    return LinearMeasurement(y_bar, observed, noise_var, vt.T, "flat")
