"""Tests for the 2-D targets in ``sde_jax.toy.planar``: exact normalisation, score = grad log_prob, exact
Banana moments, samples against log_prob, input checks, registry and pytree behaviour.

Tolerances (all fixed seeds):
  * normalisation by trapezoid quadrature on a fine float64 grid: |integral - 1| <= 1e-8 for the smooth
    targets (observed <= 2e-10: tail mass outside the box; the grid error is spectrally small), 1e-12 for
    the piecewise-constant checkerboard (a cell-aligned midpoint rule is exact there);
  * closed-form score vs ``jax.grad(log_prob)`` in float64: rtol = atol = 1e-10;
  * Banana ``moment`` vs float64 quadrature: rtol 1e-7 (observed <= 3e-10); Monte-Carlo moments of 2e5
    samples: within 5 standard errors, the standard errors computed from the exact moments
    (``Var[f] = E[f^2] - E[f]^2``);
  * histogram vs ``log_prob``: Pearson chi-square over cells (expected counts by midpoint quadrature of
    ``exp(log_prob)``, cells with expected count < 5 pooled with the outside), accepted when the p-value
    exceeds 1e-4 (observed 0.26-0.55); each density target also has a negative control (samples of a
    slightly different target) that must be rejected with p < 1e-10 (observed p = 0), so the check has power.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from sde_jax.toy import TARGETS_2D, Banana, Checkerboard, Rings, SwissRoll, TwoMoons, make_target

N_SIGMA = 5.0
N_SAMPLES = 200_000


def _truncated_rings():
    """Rings whose inner ring is strongly truncated at rho = 0 (same K = 3 as the default: shared compiles)."""
    return Rings([0.3, 1.5, 2.5], [0.3, 0.1, 0.2], [0.5, 0.3, 0.2])


# Jitted entry points (targets are pytrees): one compile per target type and shape instead of one per op.
sample = jax.jit(lambda target, key, n: target.sample(key, n), static_argnums=2)
log_prob = jax.jit(lambda target, x: target.log_prob(x))
score = jax.jit(lambda target, x: target.score(x))
grad_log_prob = jax.jit(lambda target, x: jax.vmap(jax.grad(lambda xi: target.log_prob(xi[None])[0]))(x))


def _trapezoid_2d(target, lo1, hi1, lo2, hi2, h):
    """Trapezoid rule of ``exp(log_prob)`` on ``[lo1, hi1] x [lo2, hi2]`` with spacing ``h`` (float64)."""
    g1 = np.arange(lo1, hi1 + h / 2, h)
    g2 = np.arange(lo2, hi2 + h / 2, h)
    w1 = np.full(g1.shape, h)
    w1[[0, -1]] = h / 2
    w2 = np.full(g2.shape, h)
    w2[[0, -1]] = h / 2
    x1, x2 = np.meshgrid(g1, g2, indexing="ij")
    pts = jnp.asarray(np.stack([x1.ravel(), x2.ravel()], axis=-1))
    dens = np.exp(np.asarray(log_prob(target, pts))).reshape(x1.shape)
    return dens, x1, x2, np.outer(w1, w2)


# ---------------------------------------------------------------------------------------------- density
SMOOTH_CASES = [
    # (factory, quadrature box (lo1, hi1, lo2, hi2), spacing)
    pytest.param(lambda: Banana(), (-16.0, 16.0, -10.0, 70.0), 0.05, id="banana-default"),
    pytest.param(lambda: Banana(s=1.0, b=-1.5), (-8.0, 8.0, -60.0, 10.0), 0.02, id="banana-flipped"),
    pytest.param(lambda: Rings(), (-4.5, 4.5, -4.5, 4.5), 0.01, id="rings-default"),
    # Strong truncation of the inner ring: Phi(m / tau) = Phi(0.5) ~ 0.69, so omitting the truncation
    # factor fails by ~15%.
    pytest.param(lambda: _truncated_rings(), (-4.5, 4.5, -4.5, 4.5), 0.01, id="rings-truncated"),
]


@pytest.mark.parametrize("factory, box, h", SMOOTH_CASES)
def test_smooth_log_prob_integrates_to_one(x64, factory, box, h):
    dens, _, _, w = _trapezoid_2d(factory(), *box, h)
    assert abs(np.sum(dens * w) - 1.0) < 1e-8


@pytest.mark.parametrize("k, half_width", [(1, 1.0), (3, 1.5), (4, 4.0), (5, 2.0)])
def test_checkerboard_log_prob_integrates_to_one(x64, k, half_width):
    target = Checkerboard(k, half_width)
    cell = 2 * half_width / k
    sub = cell / 4  # midpoints of a cell-aligned grid never fall on a cell edge
    g = np.arange(-half_width - cell + sub / 2, half_width + cell, sub)
    x1, x2 = np.meshgrid(g, g, indexing="ij")
    lp = np.asarray(log_prob(target, jnp.asarray(np.stack([x1.ravel(), x2.ravel()], -1))))
    assert abs(np.sum(np.exp(lp)) * sub**2 - 1.0) < 1e-12
    # Outside the board the log-density is -inf, and the dark/light pattern has ceil(k^2 / 2) dark cells.
    assert np.all(np.isneginf(lp[(np.abs(x1.ravel()) > half_width) | (np.abs(x2.ravel()) > half_width)]))
    assert np.isfinite(lp).sum() == 16 * target.num_dark


@pytest.mark.parametrize("factory", [
    pytest.param(lambda: Banana(), id="banana-default"),
    pytest.param(lambda: Banana(s=0.7, b=-2.0), id="banana-flipped"),
    pytest.param(lambda: Rings(), id="rings-default"),
    pytest.param(_truncated_rings, id="rings-truncated"),
])
def test_score_matches_grad_of_log_prob(x64, key, factory):
    target = factory()
    # Points in and far beyond the mass (|x| up to ~15), and the origin.
    x = jnp.concatenate([3.0 * jax.random.normal(key, (128, 2), jnp.float64), jnp.zeros((1, 2), jnp.float64)])
    closed_form = score(target, x)
    assert closed_form.dtype == jnp.float64
    np.testing.assert_allclose(closed_form, grad_log_prob(target, x), rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------------ banana moments
MOMENTS = [(1, 0), (0, 1), (2, 0), (0, 2), (1, 1), (2, 1), (0, 3), (4, 0), (0, 4), (2, 2), (3, 1)]


def test_banana_moment_closed_forms(x64):
    s, b = 1.7, -0.4
    target = Banana(s, b)
    c = b * s**2
    expected = {(1, 0): 0.0, (0, 1): 0.0, (2, 0): s**2, (0, 2): 1 + 2 * c**2, (1, 1): 0.0,
                (2, 1): 2 * s**2 * c, (0, 3): 8 * c**3, (4, 0): 3 * s**4, (0, 4): 3 + 12 * c**2 + 60 * c**4,
                (2, 2): s**2 * (1 + 10 * c**2), (0, 0): 1.0}
    for (i, j), value in expected.items():
        np.testing.assert_allclose(target.moment(i, j), value, rtol=1e-14, atol=1e-14, err_msg=f"{(i, j)}")
    np.testing.assert_allclose(target.mean(), [0.0, 0.0], atol=0)
    np.testing.assert_allclose(target.cov(), [[s**2, 0.0], [0.0, 1 + 2 * b**2 * s**4]], rtol=1e-14)


def test_banana_moments_match_quadrature(x64):
    target = Banana()
    dens, x1, x2, w = _trapezoid_2d(target, -16.0, 16.0, -10.0, 70.0, 0.05)
    for i, j in MOMENTS:
        quad = np.sum(dens * w * x1**i * x2**j)
        np.testing.assert_allclose(target.moment(i, j), quad, rtol=1e-7, atol=1e-9, err_msg=f"{(i, j)}")


@pytest.mark.parametrize("s, b", [(2.0, 0.25), (1.0, -1.0)])
@pytest.mark.compile_bound
def test_banana_sample_moments_within_monte_carlo_error(key, s, b):
    target, n = Banana(s, b), N_SAMPLES
    x = np.asarray(sample(target, key, n), np.float64)
    for i, j in MOMENTS:
        exact = float(target.moment(i, j))
        se = np.sqrt((float(target.moment(2 * i, 2 * j)) - exact**2) / n)
        mc = np.mean(x[:, 0] ** i * x[:, 1] ** j)
        assert abs(mc - exact) < N_SIGMA * se, f"E[x1^{i} x2^{j}]: mc={mc}, exact={exact}, se={se}"
    np.testing.assert_allclose(np.cov(x.T), target.cov(), atol=N_SIGMA * np.sqrt(target.moment(0, 4) / n))


# ----------------------------------------------------------------------------- samples agree with log_prob
def _chi_square_pvalue(samples, target, edges1, edges2, sub=20):
    """Pearson chi-square p-value of the 2-D histogram of ``samples`` against the mass ``target.log_prob``
    puts in each cell (midpoint rule with ``sub x sub`` points per cell); low-count cells are pooled."""
    samples = np.asarray(samples, np.float64)
    n = samples.shape[0]
    counts, _, _ = np.histogram2d(samples[:, 0], samples[:, 1], bins=[edges1, edges2])
    pts1 = np.concatenate([lo + (np.arange(sub) + 0.5) * (hi - lo) / sub for lo, hi in zip(edges1, edges1[1:])])
    pts2 = np.concatenate([lo + (np.arange(sub) + 0.5) * (hi - lo) / sub for lo, hi in zip(edges2, edges2[1:])])
    g1, g2 = np.meshgrid(pts1, pts2, indexing="ij")
    dens = np.exp(np.asarray(log_prob(target, jnp.asarray(np.stack([g1.ravel(), g2.ravel()], -1)))))
    area = np.outer(np.repeat(np.diff(edges1) / sub, sub), np.repeat(np.diff(edges2) / sub, sub))
    mass = (dens.reshape(g1.shape) * area).reshape(len(edges1) - 1, sub, len(edges2) - 1, sub).sum((1, 3))
    expected = n * mass.ravel()
    keep = expected >= 5
    obs = np.append(counts.ravel()[keep], n - counts.ravel()[keep].sum())
    exp = np.append(expected[keep], n - expected[keep].sum())
    obs, exp = (obs, exp) if exp[-1] >= 5 else (obs[:-1], exp[:-1])
    stat = np.sum((obs - exp) ** 2 / exp)
    return stats.chi2.sf(stat, df=len(obs) - 1)


BANANA_EDGES = (np.linspace(-6.0, 6.0, 25), np.linspace(-4.0, 10.0, 29))
RINGS_EDGES = (np.linspace(-4.0, 4.0, 33), np.linspace(-4.0, 4.0, 33))
CHECKER_EDGES = (np.linspace(-4.5, 4.5, 19), np.linspace(-4.5, 4.5, 19))  # 2 x 2 bins per square + border

HISTOGRAM_CASES = [
    # (target whose log_prob is tested, target that draws the samples, edges, should the test accept?)
    pytest.param(Banana, Banana, BANANA_EDGES, True, id="banana"),
    pytest.param(Banana, lambda: Banana(b=0.28), BANANA_EDGES, False, id="banana-control"),
    pytest.param(Banana, lambda: Banana(b=-0.25), BANANA_EDGES, False, id="banana-flipped-control"),
    pytest.param(Rings, Rings, RINGS_EDGES, True, id="rings"),
    pytest.param(Rings, lambda: Rings(widths=0.17), RINGS_EDGES, False, id="rings-control"),
    pytest.param(_truncated_rings, _truncated_rings, RINGS_EDGES, True, id="rings-truncated"),
    pytest.param(Checkerboard, Checkerboard, CHECKER_EDGES, True, id="checkerboard"),
    pytest.param(Checkerboard, lambda: Checkerboard(half_width=3.8), CHECKER_EDGES, False,
                 id="checkerboard-control"),
]


@pytest.mark.parametrize("density, sampler, edges, accept", HISTOGRAM_CASES)
@pytest.mark.compile_bound
def test_histogram_agrees_with_log_prob(key, density, sampler, edges, accept):
    samples = sample(sampler(), key, N_SAMPLES)
    p = _chi_square_pvalue(samples, density(), *edges)
    assert (p > 1e-4) if accept else (p < 1e-10), p


@pytest.mark.parametrize("k, half_width", [(3, 1.5), (4, 4.0)])
def test_checkerboard_samples_only_on_dark_squares(key, k, half_width):
    target = Checkerboard(k, half_width)
    x = sample(target, key, N_SAMPLES)
    assert np.all(np.isfinite(np.asarray(log_prob(target, x))))
    cells = np.floor((np.asarray(x, np.float64) + half_width) / (2 * half_width / k)).astype(int)
    assert np.all((cells >= 0) & (cells < k)) and np.all((cells.sum(-1) % 2) == 0)
    # All dark cells are used, each with probability 1 / num_dark.
    counts = np.bincount(cells[:, 0] * k + cells[:, 1], minlength=k * k)[(np.add.outer(
        np.arange(k), np.arange(k)) % 2 == 0).ravel()]
    p = 1 / target.num_dark
    assert np.all(np.abs(counts - x.shape[0] * p) < N_SIGMA * np.sqrt(x.shape[0] * p * (1 - p)))


# ------------------------------------------------------------------------------------- sample-only targets
def test_moons_noiseless_samples_lie_on_the_arcs(key):
    target = TwoMoons(noise=0.0, scale=3.0)
    p = np.asarray(sample(target, key, N_SAMPLES), np.float64) / 3.0 + np.array([0.5, 0.25])
    upper = np.abs(np.hypot(p[:, 0], p[:, 1]) - 1) < 1e-5
    lower = np.abs(np.hypot(1 - p[:, 0], 0.5 - p[:, 1]) - 1) < 1e-5
    assert np.all(upper | lower)
    assert np.all(p[upper, 1] >= -1e-6) and np.all(p[lower & ~upper, 1] <= 0.5 + 1e-6)
    assert abs(upper.mean() - 0.5) < N_SIGMA * np.sqrt(0.25 / p.shape[0])


def test_moons_mean_is_zero(key):
    x = np.asarray(sample(TwoMoons(), key, N_SAMPLES), np.float64)
    assert np.all(np.abs(x.mean(0)) < N_SIGMA * x.std(0) / np.sqrt(x.shape[0]))


def test_swiss_roll_noiseless_samples_lie_on_the_spiral(key):
    target = SwissRoll(noise=0.0, scale=0.5)
    x = np.asarray(sample(target, key, N_SAMPLES), np.float64)
    t = np.hypot(x[:, 0], x[:, 1]) / 0.5
    assert np.all((t >= 1.5 * np.pi - 1e-4) & (t <= 4.5 * np.pi + 1e-4))
    np.testing.assert_allclose(x, 0.5 * t[:, None] * np.stack([np.cos(t), np.sin(t)], -1), atol=1e-4)
    # t is uniform on [1.5 pi, 4.5 pi]: its mean is 3 pi.
    assert abs(t.mean() - 3 * np.pi) < N_SIGMA * (3 * np.pi / np.sqrt(3)) / np.sqrt(t.size)


@pytest.mark.parametrize("name", sorted(TARGETS_2D))
def test_registry_targets_sample_and_flags(key, name):
    target = make_target(name)
    x = sample(target, key, N_SAMPLES)
    assert x.shape == (N_SAMPLES, 2) and x.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(x)))
    np.testing.assert_array_equal(x, sample(target, key, N_SAMPLES))  # deterministic in the key
    assert target.has_density == (name in {"banana", "checkerboard", "rings"})
    assert target.has_score == (name in {"banana", "rings"})
    if target.has_density:
        lp = log_prob(target, x)
        assert lp.shape == (N_SAMPLES,) and np.all(np.isfinite(np.asarray(lp)))
    else:
        with pytest.raises(NotImplementedError, match="sample-only"):
            log_prob(target, x)
    if target.has_score:
        assert score(target, x).shape == (N_SAMPLES, 2)
    else:
        with pytest.raises(NotImplementedError, match="no score"):
            score(target, x)


def test_make_target_passes_kwargs_and_lists_names():
    assert float(make_target("banana", s=3.0).s) == 3.0
    assert make_target("checkerboard", k=6).k == 6
    with pytest.raises(ValueError, match=r"'nope'.*valid names: \['banana', 'checkerboard', 'moons'"):
        make_target("nope")


# -------------------------------------------------------------------------------------------------- pytree
@pytest.mark.compile_bound
def test_pytree_roundtrip_and_no_recompile_on_new_parameters(key):
    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(target, x):
        return target.log_prob(x), target.score(x)

    x = jax.random.normal(key, (8, 2))
    x1, x2 = np.asarray(x, np.float64).T
    for s, b in ((2.0, 0.1), (3.0, -0.5)):
        lp, sc = f(Banana(s, b), x)
        u = x2 - b * (x1**2 - s**2)
        np.testing.assert_allclose(lp, -np.log(2 * np.pi * s) - 0.5 * (x1 / s) ** 2 - 0.5 * u**2, rtol=1e-5)
        np.testing.assert_allclose(sc, np.stack([-x1 / s**2 + 2 * b * x1 * u, -u], -1), rtol=1e-5, atol=1e-5)
    board = Checkerboard(5, 2.0)
    leaves, treedef = jax.tree_util.tree_flatten(board)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert len(leaves) == 1 and rebuilt.k == 5 and rebuilt.num_dark == 13
    np.testing.assert_allclose(sample(Banana(), key, 16), Banana().sample(key, 16), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------- input checks
BAD_INPUTS = [
    (lambda: Banana(s=0.0), r"s must be finite and > 0"),
    (lambda: Banana(s=-1.0), r"s must be finite and > 0"),
    (lambda: Banana(s=[1.0, 2.0]), r"s must be a scalar; got shape \(2,\)"),
    (lambda: Banana(b=float("nan")), r"b must be finite"),
    (lambda: Banana().log_prob(jnp.zeros((4, 3))), r"x must have shape \[B, 2\]; got shape \(4, 3\)"),
    (lambda: Banana().score(jnp.zeros((2,))), r"x must have shape \[B, 2\]; got shape \(2,\)"),
    (lambda: Banana().moment(-1, 0), r"i must be an int >= 0"),
    (lambda: Banana().moment(0, 1.5), r"j must be an int >= 0"),
    (lambda: Banana().sample(jax.random.key(0), -1), r"n must be a Python int >= 0; got -1"),
    (lambda: Banana().sample(jax.random.key(0), 2.5), r"n must be a Python int >= 0"),
    (lambda: TwoMoons(noise=-0.1), r"noise must be finite and >= 0"),
    (lambda: SwissRoll(scale=0.0), r"scale must be finite and > 0"),
    (lambda: Checkerboard(k=0), r"k must be a Python int >= 1; got 0"),
    (lambda: Checkerboard(k=2.5), r"k must be a Python int >= 1"),
    (lambda: Checkerboard(half_width=-1.0), r"half_width must be finite and > 0"),
    (lambda: Checkerboard().log_prob(jnp.zeros((3, 2, 1))), r"x must have shape \[B, 2\]"),
    (lambda: Rings(radii=[[1.0]]), r"radii must have shape \[K\]"),
    (lambda: Rings(radii=[1.0, -2.0]), r"radii must be finite and > 0"),
    (lambda: Rings(radii=[1.0, 2.0], widths=[0.1, 0.1, 0.1]), r"widths must be a scalar or have shape \[K\]"),
    (lambda: Rings(widths=0.0), r"widths must be finite and > 0"),
    (lambda: Rings(radii=[1.0, 2.0], weights=[1.0]), r"weights must have shape \[K\] = \(2,\)"),
    (lambda: Rings(radii=[1.0, 2.0], weights=[1.0, -1.0]), r"weights must be >= 0"),
    (lambda: Rings().score(jnp.zeros((5, 1))), r"x must have shape \[B, 2\]; got shape \(5, 1\)"),
]


@pytest.mark.parametrize("call, match", BAD_INPUTS)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
