"""Classic 2-D targets of the score-matching / diffusion literature: banana, moons, checkerboard, rings,
swiss roll.

Every target has ``sample(key, n) -> [n, 2]`` (exact). Targets with ``has_density = True`` also have an
exact, normalised ``log_prob(x) -> [B]``; those with ``has_score = True`` an exact closed-form
``score(x) -> [B, 2]``. The rest raise ``NotImplementedError`` naming why (no closed-form normaliser, or a
piecewise-constant density whose score is zero almost everywhere).

===============  ===========  =========  ==================================================
name             has_density  has_score  density
===============  ===========  =========  ==================================================
``banana``       yes          yes        twisted Gaussian (Haario et al., 1999), exact moments
``moons``        no           no         arcs + Gaussian noise: normaliser has no closed form
``checkerboard`` yes          no         uniform on the dark squares of a ``k x k`` board
``rings``        yes          yes        uniform angle, ``|x|^2`` a truncated Gaussian mixture
``swiss_roll``   no           no         spiral + Gaussian noise: no closed-form density
===============  ===========  =========  ==================================================

Each target is a :func:`~sde_jax._pytree.pytree_dataclass` (parameters are leaves, sizes are static) whose
unflattening bypasses validation, so it can be passed through ``jax.jit`` without re-validation.
"""
from __future__ import annotations

import math
import operator

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr

from sde_jax._pytree import pytree_dataclass, static_field

__all__ = [
    "Banana",
    "TwoMoons",
    "Checkerboard",
    "Rings",
    "SwissRoll",
    "TARGETS_2D",
    "make_target",
]


def _is_concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def _scalar(name, value, dtype):
    value = jnp.asarray(value, dtype=dtype)
    if value.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got shape {value.shape}.")
    return value


def _check_positive(name, value, *, allow_zero=False):
    if _is_concrete(value):
        bad = jnp.any(value < 0) if allow_zero else jnp.any(value <= 0)
        if bool(bad) or not bool(jnp.all(jnp.isfinite(value))):
            raise ValueError(f"{name} must be finite and {'>=' if allow_zero else '>'} 0; got {value}.")


def _gaussian_moment(n: int) -> int:
    """``E[z^n]`` for ``z ~ N(0, 1)``: ``(n - 1)!!`` for even ``n``, 0 for odd ``n``."""
    return 0 if n % 2 else math.prod(range(n - 1, 0, -2))


class _Target2D:
    """Shared plumbing: input checks, the dtype, and the errors of a missing density/score. Subclasses are
    ``pytree_dataclass``-es whose ``__post_init__`` validates and converts their fields."""

    has_density = False
    has_score = False
    dim = 2
    _why_no_density = ""

    def _set(self, name, value):
        object.__setattr__(self, name, value)

    @property
    def dtype(self):
        return next(getattr(self, f.name) for f in dataclasses.fields(self) if hasattr(getattr(self, f.name),
                                                                                   "dtype")).dtype

    @staticmethod
    def _check_x(x):
        if jnp.ndim(x) != 2 or jnp.shape(x)[1] != 2:
            raise ValueError(f"x must have shape [B, 2]; got shape {jnp.shape(x)}.")
        return jnp.asarray(x)

    @staticmethod
    def _check_n(n) -> int:
        try:
            n = operator.index(n)
        except TypeError:
            raise ValueError(f"n must be a Python int >= 0; got {n!r}.") from None
        if n < 0:
            raise ValueError(f"n must be a Python int >= 0; got {n}.")
        return n

    def log_prob(self, x):
        """Not available: see the class docstring."""
        raise NotImplementedError(f"{type(self).__name__} is sample-only: {self._why_no_density}")

    def score(self, x):
        """Not available: see the class docstring."""
        raise NotImplementedError(f"{type(self).__name__} has no score: {self._why_no_density}")


@pytree_dataclass
class Banana(_Target2D):
    r"""Twisted Gaussian ("banana"), a smooth curved 2-D density with exact log-density, score and moments.

    .. math::
        x_1 = s z_1, \qquad x_2 = z_2 + b (x_1^2 - s^2), \qquad z \sim N(0, I_2).

    The map is volume-preserving up to the factor ``s``, so

    .. math::
        \log p(x) = -\log(2\pi) - \log s - \tfrac12 (x_1/s)^2 - \tfrac12 u^2, \quad u = x_2 - b(x_1^2 - s^2),
        \qquad \nabla \log p(x) = \big(-x_1/s^2 + 2 b x_1 u,\; -u\big).

    With ``c = b s^2`` (so ``x_2 = z_2 + c (z_1^2 - 1)``) the moments are polynomials in ``s`` and ``c``:
    ``mean = (0, 0)``, ``cov = diag(s^2, 1 + 2 c^2)``, ``E[x1^4] = 3 s^4``, ``E[x2^3] = 8 c^3``,
    ``E[x2^4] = 3 + 12 c^2 + 60 c^4``, ``E[x1^2 x2] = 2 s^2 c``, ``E[x1^2 x2^2] = s^2 (1 + 10 c^2)``;
    :meth:`moment` gives any ``E[x1^i x2^j]``.

    Defaults ``s = 2, b = 0.25`` (``c = 1``): the ridge ``x2 = b (x1^2 - s^2)`` rises by 3 between
    ``x1 = 0`` and ``x1 = 2 s`` against a unit noise across it, so the banana is clearly curved and
    ``Var[x2] = 3`` comes half from the twist. Haario et al.'s ``B_b`` (their ``s^2 = 100``, ridge opening
    downwards) is ``Banana(s=10, b=-b_haario)``.

    Args:
      s: scale of ``x1`` (> 0).
      b: curvature of the ridge (any real; ``b = 0`` is the Gaussian ``N(0, diag(s^2, 1))``).

    References:
      Haario, Saksman, Tamminen (1999), "Adaptive proposal distribution for random walk Metropolis
      algorithm", Comput. Stat. 14:375-395, Sec. 3 (twisted Gaussian ``f_b = f o phi_b``).
    """

    has_density = True
    has_score = True
    s: float = 2.0
    b: float = 0.25

    def __post_init__(self):
        dtype = jnp.result_type(float)
        self._set("s", _scalar("s", self.s, dtype))
        self._set("b", _scalar("b", self.b, dtype))
        _check_positive("s", self.s)
        if _is_concrete(self.b) and not bool(jnp.isfinite(self.b)):
            raise ValueError(f"b must be finite; got {self.b}.")

    def sample(self, key, n):
        """``n`` exact samples ``[n, 2]``."""
        n = self._check_n(n)
        z = jax.random.normal(key, (n, 2), self.dtype)
        x1 = self.s * z[:, 0]
        return jnp.stack([x1, z[:, 1] + self.b * (x1**2 - self.s**2)], axis=-1)

    def _ridge_residual(self, x):
        return x[:, 1] - self.b * (x[:, 0] ** 2 - self.s**2)

    def log_prob(self, x):
        """Exact log-density ``[B]`` at ``x: [B, 2]``."""
        x = self._check_x(x)
        u = self._ridge_residual(x)
        return -jnp.log(2 * jnp.pi) - jnp.log(self.s) - 0.5 * (x[:, 0] / self.s) ** 2 - 0.5 * u**2

    def score(self, x):
        """Exact score ``grad_x log p(x)``: ``[B, 2]``."""
        x = self._check_x(x)
        u = self._ridge_residual(x)
        return jnp.stack([-x[:, 0] / self.s**2 + 2 * self.b * x[:, 0] * u, -u], axis=-1)

    def mean(self):
        """Exact mean ``[2]``: zero (the ridge is centred by the ``- s^2`` term)."""
        return jnp.zeros((2,), self.dtype)

    def cov(self):
        """Exact covariance ``[2, 2]``: ``diag(s^2, 1 + 2 b^2 s^4)`` (``x1`` and ``x2`` are uncorrelated)."""
        return jnp.diag(jnp.stack([self.s**2, 1 + 2 * self.b**2 * self.s**4]))

    def moment(self, i: int, j: int):
        r"""Exact raw moment ``E[x1^i x2^j]`` (a scalar) for integers ``i, j >= 0``.

        .. math::
            E[x_1^i x_2^j] = s^i \sum_{k=0}^{j} \binom{j}{k} E[z^{j-k}]\, c^k
                \sum_{m=0}^{k} \binom{k}{m} (-1)^{k-m} E[z^{i+2m}], \qquad c = b s^2,

        with ``E[z^n] = (n-1)!!`` for even ``n`` and 0 for odd ``n``; the coefficients are exact integers.
        """
        for name, v in (("i", i), ("j", j)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be an int >= 0; got {v!r}.")
        coeffs = [
            math.comb(j, k)
            * _gaussian_moment(j - k)
            * sum(math.comb(k, m) * (-1) ** (k - m) * _gaussian_moment(i + 2 * m) for m in range(k + 1))
            for k in range(j + 1)
        ]
        c = self.b * self.s**2
        poly = sum(coef * c**k for k, coef in enumerate(coeffs) if coef)
        return jnp.asarray(self.s**i * poly, self.dtype)


@pytree_dataclass
class TwoMoons(_Target2D):
    r"""Two interleaving half-circles with Gaussian noise (sample-only).

    .. math::
        x = \text{scale}\,(p - (0.5, 0.25) + \text{noise}\cdot \varepsilon), \qquad \varepsilon \sim N(0, I_2),

    with ``p = (cos t, sin t)`` (upper moon) or ``p = (1 - cos t, 0.5 - sin t)`` (lower moon) with
    probability 1/2 each, ``t ~ U[0, pi]``. The shift makes the mean exactly zero. With the defaults
    (``noise=0.1, scale=2``) it is ``sklearn.datasets.make_moons(noise=0.1) * 2`` re-centred, the "moons"
    of the FFJORD toy suite (up to the constant shift).

    Sample-only: the density is a Gaussian blurred arc, ``int_0^pi N(x; p(t), noise^2) dt / pi``, which has
    no closed form (an incomplete von Mises / Bessel integral). ``log_prob``/``score`` raise.

    Args:
      noise: standard deviation of the Gaussian noise before scaling (>= 0).
      scale: overall scale (> 0).
    """

    _why_no_density = "a Gaussian-blurred arc has no closed-form normaliser (noise convolved with a half-circle)."
    noise: float = 0.1
    scale: float = 2.0

    def __post_init__(self):
        dtype = jnp.result_type(float)
        self._set("noise", _scalar("noise", self.noise, dtype))
        self._set("scale", _scalar("scale", self.scale, dtype))
        _check_positive("noise", self.noise, allow_zero=True)
        _check_positive("scale", self.scale)

    def sample(self, key, n):
        """``n`` exact samples ``[n, 2]``."""
        n = self._check_n(n)
        key_moon, key_t, key_eps = jax.random.split(key, 3)
        upper = jax.random.bernoulli(key_moon, 0.5, (n,))
        t = jax.random.uniform(key_t, (n,), self.dtype, 0.0, jnp.pi)
        c, s = jnp.cos(t), jnp.sin(t)
        p = jnp.where(upper[:, None], jnp.stack([c, s], -1), jnp.stack([1 - c, 0.5 - s], -1))
        eps = jax.random.normal(key_eps, (n, 2), self.dtype)
        return self.scale * (p - jnp.asarray([0.5, 0.25], self.dtype) + self.noise * eps)


@pytree_dataclass
class Checkerboard(_Target2D):
    r"""Uniform density on the dark squares of a ``k x k`` board covering ``[-L, L)^2``.

    Cell ``(i, j)`` (``i`` along ``x1``, ``j`` along ``x2``, from the lower-left corner, width
    ``h = 2L/k``) is dark when ``i + j`` is even; there are ``ceil(k^2 / 2)`` dark cells and

    .. math::
        p(x) = \frac{1}{\lceil k^2/2 \rceil\, h^2} \text{ on dark cells}, \qquad 0 \text{ elsewhere}
        \ (\log p = -\infty).

    Cells are half-open ``[a, a + h)``, so the top and right edges of the board are outside (a null set).
    The defaults ``k=4, half_width=4`` reproduce FFJORD's "checkerboard" exactly.

    No score: the density is piecewise constant (score zero almost everywhere, undefined on cell edges), so
    ``score`` raises instead of returning a misleading zero.

    Args:
      k: number of cells per side (a Python int >= 1; static, part of the pytree structure).
      half_width: half the side of the board, ``L`` (> 0).

    References:
      Grathwohl et al. (2019), "FFJORD", ICLR, toy densities (Fig. 2).
    """

    has_density = True
    has_score = False
    k: int = static_field(default=4)
    half_width: float = 4.0
    _why_no_density = "the density is piecewise constant; its score is 0 a.e. and undefined on cell edges."

    def __post_init__(self):
        k = self.k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a Python int >= 1; got {k!r}.")
        self._set("k", int(k))
        self._set("half_width", _scalar("half_width", self.half_width, jnp.result_type(float)))
        _check_positive("half_width", self.half_width)

    @property
    def num_dark(self) -> int:
        return (self.k * self.k + 1) // 2

    def _dark_cells(self):
        ij = np.array([(i, j) for i in range(self.k) for j in range(self.k) if (i + j) % 2 == 0])
        return ij.reshape(-1, 2)

    def sample(self, key, n):
        """``n`` exact samples ``[n, 2]``: a dark cell uniformly, then a uniform point in it."""
        n = self._check_n(n)
        key_cell, key_pos = jax.random.split(key)
        cells = jnp.asarray(self._dark_cells(), self.dtype)
        idx = jax.random.randint(key_cell, (n,), 0, self.num_dark)
        u = jax.random.uniform(key_pos, (n, 2), self.dtype)
        h = 2 * self.half_width / self.k
        return -self.half_width + (cells[idx] + u) * h

    def log_prob(self, x):
        """Exact log-density ``[B]``: ``-log(ceil(k^2/2) h^2)`` on dark cells, ``-inf`` elsewhere."""
        x = self._check_x(x)
        h = 2 * self.half_width / self.k
        ij = jnp.floor((x + self.half_width) / h)
        inside = jnp.all((ij >= 0) & (ij < self.k), axis=-1)
        dark = jnp.mod(ij[:, 0] + ij[:, 1], 2) == 0
        log_density = -jnp.log(self.num_dark * h**2)
        return jnp.where(inside & dark, log_density, -jnp.inf).astype(jnp.result_type(x.dtype, self.dtype))


@pytree_dataclass
class Rings(_Target2D):
    r"""Concentric rings: uniform angle and a squared radius drawn from a truncated Gaussian mixture.

    .. math::
        x = \sqrt{\rho}\,(\cos\theta, \sin\theta), \quad \theta \sim U[0, 2\pi), \quad
        \rho = |x|^2 \sim \sum_k w_k\, N(\mu_k^2, (2 \mu_k \sigma_k)^2) \text{ truncated to } \rho > 0.

    In the plane the area element is ``dA = d(rho) d(theta) / 2``, so the density is exact and smooth
    everywhere (including the origin):

    .. math::
        p(x) = \frac{1}{\pi} \sum_k w_k \frac{N(|x|^2; m_k, \tau_k^2)}{\Phi(m_k/\tau_k)}, \quad
        m_k = \mu_k^2,\ \tau_k = 2\mu_k\sigma_k, \qquad
        \nabla \log p(x) = -2x \sum_k r_k(x) \frac{|x|^2 - m_k}{\tau_k^2},

    ``r_k`` the posterior ring probabilities. Near ring ``k`` the radius is approximately
    ``N(mu_k, sigma_k^2)`` (exactly so as ``sigma_k / mu_k -> 0``), hence the names ``radii`` and
    ``widths``. (This replaces the usual "radius + isotropic noise" construction, whose density has no
    closed form.)

    Args:
      radii: ``[K]`` ring radii ``mu_k`` (> 0).
      widths: ``[K]`` (or scalar, broadcast) approximate radial standard deviations ``sigma_k`` (> 0).
      weights: ``[K]`` ring probabilities (>= 0, positive sum; normalised), default uniform.
    """

    has_density = True
    has_score = True
    radii: jax.Array = (1.0, 2.0, 3.0)
    widths: jax.Array = 0.15
    weights: jax.Array = None

    def __post_init__(self):
        dtype = jnp.result_type(float)
        radii, widths, weights = self.radii, self.widths, self.weights
        radii = jnp.asarray(radii, dtype)
        if radii.ndim != 1 or radii.shape[0] < 1:
            raise ValueError(f"radii must have shape [K] with K >= 1; got shape {radii.shape}.")
        (k,) = radii.shape
        widths = jnp.asarray(widths, dtype)
        if widths.ndim not in (0, 1) or (widths.ndim == 1 and widths.shape != (k,)):
            raise ValueError(f"widths must be a scalar or have shape [K] = {(k,)}; got shape {widths.shape}.")
        widths = jnp.broadcast_to(widths, (k,))
        weights = jnp.full((k,), 1.0 / k, dtype) if weights is None else jnp.asarray(weights, dtype)
        if weights.shape != (k,):
            raise ValueError(f"weights must have shape [K] = {(k,)}; got shape {weights.shape}.")
        _check_positive("radii", radii)
        _check_positive("widths", widths)
        if _is_concrete(weights):
            if bool(jnp.any(weights < 0)) or not float(jnp.sum(weights)) > 0:
                raise ValueError(f"weights must be >= 0 with a positive sum; got {weights}.")
        self._set("radii", radii)
        self._set("widths", widths)
        self._set("weights", weights / jnp.sum(weights))

    @property
    def num_rings(self) -> int:
        return self.radii.shape[0]

    def _sq_radius_params(self):
        return self.radii**2, 2 * self.radii * self.widths  # m_k, tau_k: [K], [K]

    def sample(self, key, n):
        """``n`` exact samples ``[n, 2]``."""
        n = self._check_n(n)
        key_ring, key_rho, key_angle = jax.random.split(key, 3)
        m, tau = self._sq_radius_params()
        ring = jax.random.choice(key_ring, self.num_rings, (n,), p=self.weights)
        u = jax.random.truncated_normal(key_rho, -m[ring] / tau[ring], jnp.inf, (n,), self.dtype)
        rho = jnp.maximum(m[ring] + tau[ring] * u, 0.0)
        theta = jax.random.uniform(key_angle, (n,), self.dtype, 0.0, 2 * jnp.pi)
        return jnp.sqrt(rho)[:, None] * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1)

    def _ring_log_probs(self, x):
        x = self._check_x(x)
        m, tau = self._sq_radius_params()
        rho = jnp.sum(x**2, axis=-1, keepdims=True)
        z = (rho - m) / tau
        logits = (
            jnp.log(self.weights) - 0.5 * jnp.log(2 * jnp.pi) - jnp.log(tau) - 0.5 * z**2 - log_ndtr(m / tau)
        )
        return x, logits, rho, m, tau

    def log_prob(self, x):
        """Exact log-density ``[B]`` at ``x: [B, 2]``."""
        _, logits, _, _, _ = self._ring_log_probs(x)
        return jax.nn.logsumexp(logits, axis=-1) - jnp.log(jnp.pi)

    def score(self, x):
        """Exact score ``grad_x log p(x)``: ``[B, 2]`` (smooth, zero at the origin)."""
        x, logits, rho, m, tau = self._ring_log_probs(x)
        r = jax.nn.softmax(logits, axis=-1)
        return -2 * x * jnp.sum(r * (rho - m) / tau**2, axis=-1, keepdims=True)


@pytree_dataclass
class SwissRoll(_Target2D):
    r"""2-D Swiss roll: a noisy Archimedean spiral (sample-only).

    .. math::
        x = \text{scale}\,(t \cos t, t \sin t) + \text{noise}\cdot\varepsilon, \qquad
        t = 1.5\pi (1 + 2u),\ u \sim U[0, 1],\ \varepsilon \sim N(0, I_2).

    The defaults (``scale=0.2, noise=0.2``) are ``sklearn.datasets.make_swiss_roll(noise=1.0)[0][:, [0, 2]]
    / 5``, FFJORD's "swissroll".

    Sample-only: the density is a Gaussian blurred spiral, with no closed form; ``log_prob``/``score``
    raise.

    Args:
      noise: standard deviation of the additive Gaussian noise (>= 0), in output units.
      scale: scale of the spiral (> 0).
    """

    _why_no_density = "a Gaussian-blurred spiral has no closed-form density."
    noise: float = 0.2
    scale: float = 0.2

    def __post_init__(self):
        dtype = jnp.result_type(float)
        self._set("noise", _scalar("noise", self.noise, dtype))
        self._set("scale", _scalar("scale", self.scale, dtype))
        _check_positive("noise", self.noise, allow_zero=True)
        _check_positive("scale", self.scale)

    def sample(self, key, n):
        """``n`` exact samples ``[n, 2]``."""
        n = self._check_n(n)
        key_t, key_eps = jax.random.split(key)
        t = 1.5 * jnp.pi * (1 + 2 * jax.random.uniform(key_t, (n,), self.dtype))
        eps = jax.random.normal(key_eps, (n, 2), self.dtype)
        return self.scale * t[:, None] * jnp.stack([jnp.cos(t), jnp.sin(t)], axis=-1) + self.noise * eps


TARGETS_2D = {
    "banana": Banana,
    "moons": TwoMoons,
    "checkerboard": Checkerboard,
    "rings": Rings,
    "swiss_roll": SwissRoll,
}


def make_target(name: str, **kwargs):
    """Build the 2-D target registered as ``name`` (a key of :data:`TARGETS_2D`) with keyword ``kwargs``."""
    if name not in TARGETS_2D:
        raise ValueError(f"Unknown 2-D target {name!r}; valid names: {sorted(TARGETS_2D)}.")
    return TARGETS_2D[name](**kwargs)
