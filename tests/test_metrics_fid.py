"""Fréchet distance against closed forms (float64 NumPy; no JAX compile), feature statistics, errors.

Closed forms used (d^2 = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr (S1 S2)^{1/2}):
* commuting covariances ``S = Q diag(a) Q^T``, ``Q diag(b) Q^T``: ``tr (S1 S2)^{1/2} = sum sqrt(a b)``, so
  ``d^2 = |dmu|^2 + sum (sqrt a - sqrt b)^2``;
* 2 x 2 (any, non-commuting): ``tr M^{1/2} = sqrt(tr M + 2 sqrt(det M))`` for ``M = S1 S2``;
* proportional ``S2 = c S1``: ``d^2 = |dmu|^2 + (1 - sqrt c)^2 tr S1``.
"""
import numpy as np
import pytest

from sde_jax.metrics import feature_statistics, frechet_distance, trace_sqrt_product


def _rotation(rng, d):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _commuting_case(kind, d=64, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "well_conditioned":
        a, b = rng.uniform(0.5, 2.0, d), rng.uniform(0.5, 2.0, d)
    elif kind == "ill_conditioned":                       # condition numbers 1e14
        a, b = np.logspace(-12, 2, d), rng.permutation(np.logspace(-12, 2, d))
    elif kind == "rank_deficient":                        # different null spaces, rank d/2 each
        a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
        a[: d // 2] = 0.0
        b[d // 4: 3 * d // 4] = 0.0
    q = _rotation(rng, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    exact = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    return mu1, s1, mu2, s2, exact


@pytest.mark.parametrize("kind", ["well_conditioned", "ill_conditioned", "rank_deficient"])
def test_commuting_covariances_closed_form(kind):
    """Relative error < 1e-12 (well-conditioned; rank d/2 with different null spaces, d = 64) and < 1e-7 for
    condition number 1e14: its eigenvalues near 1e-12 lie below float64 eigh's resolution (d eps max|S| =
    1.4e-12) and are read as 0, missing sqrt(a b) ~ 1e-6 each (measured 2.7e-8 relative)."""
    mu1, s1, mu2, s2, exact = _commuting_case(kind)
    tol = 1e-7 if kind == "ill_conditioned" else 1e-12
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(exact, rel=tol)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(exact, rel=tol)        # symmetric


@pytest.mark.parametrize("rank1", [False, True])
def test_two_by_two_non_commuting_closed_form(rank1):
    """2 x 2 covariances that do not commute: tr (S1 S2)^{1/2} = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2));
    with a rank-1 S1 = v v^T it is sqrt(v^T S2 v). Relative error < 1e-12."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.standard_normal((2, 2))
        s1 = np.outer(a[0], a[0]) if rank1 else a @ a.T
        b = rng.standard_normal((2, 2))
        s2 = b @ b.T
        if rank1:
            tr_sqrt = np.sqrt(a[0] @ s2 @ a[0])
        else:
            tr_sqrt = np.sqrt(np.trace(s1 @ s2) + 2.0 * np.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
        assert trace_sqrt_product(s1, s2) == pytest.approx(tr_sqrt, rel=1e-12)
        mu1, mu2 = rng.standard_normal(2), rng.standard_normal(2)
        exact = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(exact, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("rank", [256, 100])
def test_proportional_covariances_including_singular(rank):
    """S2 = c S1 with S1 = A A^T, A [256, rank] (rank 100: singular, as Inception statistics of fewer samples
    than dimensions): d^2 = |dmu|^2 + (1 - sqrt c)^2 tr S1, relative error < 1e-11 (measured <= 3e-13);
    d(S1, S1) = 0 to 1e-12 tr S1 (without the round-off floor on eigenvalues, rank 100 was 1.6e-8 off)."""
    rng = np.random.default_rng(rank)
    a = rng.standard_normal((256, rank)) / np.sqrt(rank)
    s1 = a @ a.T
    mu1, mu2 = rng.standard_normal(256), rng.standard_normal(256)
    for c in (0.25, 1.0, 3.0):
        exact = np.sum((mu1 - mu2) ** 2) + (1.0 - np.sqrt(c)) ** 2 * np.trace(s1)
        assert frechet_distance(mu1, s1, mu2, c * s1) == pytest.approx(exact, rel=1e-11)
    assert frechet_distance(mu1, s1, mu1, s1) <= 1e-12 * np.trace(s1)


def test_one_dimensional_and_scipy_sqrtm():
    """1-D: d^2 = (m1 - m2)^2 + (s1 - s2)^2 exactly; a generic 40-d case agrees with scipy's sqrtm
    (pytorch-fid's method) to 1e-9 relative."""
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9.0 + 1.0, rel=1e-14)
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((40, 60)), rng.standard_normal((40, 60))
    s1, s2 = a @ a.T / 60, b @ b.T / 60
    mu1, mu2 = rng.standard_normal(40), rng.standard_normal(40)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2.0 * scipy_linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9)


def test_float32_and_jax_inputs_are_promoted_to_float64():
    """float32 / JAX arrays in, a Python float out, the same as float64 input to 1e-6 relative."""
    import jax.numpy as jnp

    mu1, s1, mu2, s2, exact = _commuting_case("well_conditioned", d=16)
    out = frechet_distance(jnp.asarray(mu1, jnp.float32), jnp.asarray(s1, jnp.float32),
                           np.float32(mu2), np.float32(s2))
    assert isinstance(out, float) and out == pytest.approx(exact, rel=1e-5)


def test_errors_name_the_argument():
    eye = np.eye(3)
    with pytest.raises(ValueError, match="mu1 and mu2"):
        frechet_distance(np.zeros(3), eye, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"sigma2 must be a \[3, 3\]"):
        frechet_distance(np.zeros(3), eye, np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="sigma1 is not symmetric"):
        frechet_distance(np.zeros(3), eye + np.triu(np.ones((3, 3)), 1), np.zeros(3), eye)
    with pytest.raises(ValueError, match="sigma2 is not positive semi-definite"):
        frechet_distance(np.zeros(3), eye, np.zeros(3), np.diag([1.0, -0.5, 1.0]))
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(np.zeros(3), eye, np.array([0.0, np.nan, 0.0]), eye)
    with pytest.raises(ValueError, match=r"\[n, d\] with n >= 2"):
        feature_statistics(np.zeros((1, 3)))


def test_feature_statistics_float64_two_pass():
    """Mean and covariance (ddof 1) equal NumPy's float64 np.mean / np.cov of the same float32 features
    to 1e-12 relative, also with a mean of 1e4 (one-pass sums would lose ~8 digits) and chunked rows."""
    rng = np.random.default_rng(0)
    f = (1e4 + rng.standard_normal((1001, 7)) @ rng.standard_normal((7, 7))).astype(np.float32)
    mu, sigma = feature_statistics(f, chunk=100)
    f64 = f.astype(np.float64)
    np.testing.assert_allclose(mu, f64.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f64, rowvar=False), rtol=1e-10, atol=1e-12)
    assert mu.dtype == sigma.dtype == np.float64
