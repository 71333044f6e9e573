"""Kernel distance (KID): the unbiased estimator against a brute-force sum, its unbiasedness on two samples
of one distribution (with the biased V-statistic as a positive control), and against an exact population
MMD^2 on discrete distributions. Fixed seeds; tolerances in each docstring."""
import numpy as np
import pytest

from sde_jax.metrics import kernel_distance, mmd2_unbiased, polynomial_kernel

D = 4


def _brute_mmd2(x, y, k):
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def _cubic(a, b):
    return (a @ b / D + 1.0) ** 3


def test_unbiased_estimator_equals_brute_force_sum():
    """mmd2_unbiased on float64 kernel matrices equals the double loop over i != j to 1e-12 relative; the
    whole-set kernel_distance (one subset of all n points: a permutation) equals it to 1e-6 (float32 Gram)."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((12, D)), rng.standard_normal((12, D)) + 0.5
    brute = _brute_mmd2(x, y, _cubic)
    k = [polynomial_kernel(a @ b.T, D) for a, b in ((x, x), (y, y), (x, y))]
    assert mmd2_unbiased(*k) == pytest.approx(brute, rel=1e-12)
    mean, std = kernel_distance(x, y, num_subsets=1, subset_size=12)
    assert mean == pytest.approx(brute, rel=1e-6) and std == 0.0


# Two discrete distributions on the same 5 support points of R^D (exact population MMD^2 by enumeration).
_SUPPORT = np.random.default_rng(11).standard_normal((5, D)) * 1.5
_P = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
_Q = np.array([0.1, 0.15, 0.2, 0.25, 0.3])


def _population_mmd2(p, q):
    k = polynomial_kernel(_SUPPORT @ _SUPPORT.T, D)
    return p @ k @ p + q @ k @ q - 2 * p @ k @ q


def _replicates(p, q, reps=300, n=40, seed=0):
    """``reps`` independent pairs of samples of size ``n``: unbiased (KID) and biased (V-statistic) values."""
    rng = np.random.default_rng(seed)
    u, v = np.empty(reps), np.empty(reps)
    for r in range(reps):
        x = _SUPPORT[rng.choice(5, n, p=p)]
        y = _SUPPORT[rng.choice(5, n, p=q)]
        u[r] = kernel_distance(x, y, num_subsets=1, subset_size=n, seed=r)[0]
        kxx, kyy, kxy = (polynomial_kernel(a @ b.T, D) for a, b in ((x, x), (y, y), (x, y)))
        v[r] = kxx.mean() + kyy.mean() - 2 * kxy.mean()
    return u, v


def test_unbiased_on_two_samples_of_one_distribution():
    """300 independent pairs (n = 40) from one discrete distribution: the mean KID is within 3 standard
    errors of 0 (exact MMD^2 = 0); the biased V-statistic of the same pairs is above 0 by more than 10
    standard errors (its bias is (E k(x,x) - E k(x,x')) 2/n > 0), so the test can fail."""
    u, v = _replicates(_P, _P)
    se_u, se_v = u.std(ddof=1) / np.sqrt(len(u)), v.std(ddof=1) / np.sqrt(len(v))
    assert abs(u.mean()) < 3 * se_u, (u.mean(), se_u)
    assert v.mean() > 10 * se_v, (v.mean(), se_v)


def test_mean_equals_exact_population_mmd_for_shifted_distributions():
    """Different discrete distributions: the mean of 300 independent KIDs (n = 40) is within 3 standard
    errors of the exact population MMD^2 (enumerated over the support), which is > 10 standard errors."""
    exact = _population_mmd2(_P, _Q)
    u, _ = _replicates(_P, _Q, seed=1)
    se = u.std(ddof=1) / np.sqrt(len(u))
    assert exact > 10 * se
    assert abs(u.mean() - exact) < 3 * se, (u.mean(), exact, se)


def test_subsets_reproducible_and_clipped_to_set_size():
    """Same seed -> same (mean, std); a subset_size above the set sizes uses min(n1, n2) (here the whole
    sets: equal to one full-set subset); more subsets give a positive std."""
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((30, D)), rng.standard_normal((25, D))
    a = kernel_distance(x, y, num_subsets=5, subset_size=10, seed=3)
    assert a == kernel_distance(x, y, num_subsets=5, subset_size=10, seed=3) and a[1] > 0
    full = kernel_distance(x[:25], y, num_subsets=1, subset_size=25)[0]
    assert kernel_distance(x[:25], y, num_subsets=1, subset_size=1000)[0] == pytest.approx(full, rel=1e-12)


def test_errors():
    x = np.zeros((5, 3))
    with pytest.raises(ValueError, match="same dimension"):
        kernel_distance(x, np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"features2 must be \[n, d\]"):
        kernel_distance(x, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="num_subsets"):
        kernel_distance(x, x, num_subsets=0)
    with pytest.raises(ValueError, match="subset_size"):
        kernel_distance(x, x, subset_size=1)
    with pytest.raises(ValueError, match="non-finite"):
        kernel_distance(x, np.full((5, 3), np.inf))
