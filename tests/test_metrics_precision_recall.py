"""Improved precision/recall (Kynkäänniemi et al. 2019): 1/1 on identical sets, exact values on a
constructed cluster layout, monotone decrease under a growing shift, and block-size independence."""
import numpy as np
import pytest

from sde_jax.metrics import precision_recall
from sde_jax.metrics.precision_recall import knn_radii


def _clusters(centres, rng):
    """Four points per centre at centre + e_i (i = 0..3) in R^8: within a cluster every pair is sqrt(2)
    apart, so k = 3 radii are sqrt(2); clusters are 100 apart (far outside every radius)."""
    offs = np.eye(8)[:4]
    return np.concatenate([c + offs for c in centres]).astype(np.float32)


def test_identical_sets_give_one_and_one():
    """Same features as real and generated: precision = recall = 1 exactly (each point lies in its own
    ball); 300 Gaussian points in 16-d."""
    x = np.random.default_rng(0).standard_normal((300, 16))
    assert precision_recall(x, x) == (1.0, 1.0)


def test_constructed_clusters_exact_values():
    """Real: 10 clusters; generated: copies of 6 of them + 2 clusters far from every real one. Precision =
    24/32 = 0.75 (generated points inside the real manifold), recall = 24/40 = 0.6 (real clusters covered);
    exact, as every distance is either 0, sqrt(2) or >= 50. The k = 3 radii are sqrt(2) (squared: 2, to
    1e-5)."""
    rng = np.random.default_rng(1)
    centres = 100.0 * np.arange(10)[:, None] * np.eye(8)[4]
    real = _clusters(centres, rng)
    far = centres[:2] + 50.0 * np.eye(8)[5]
    fake = _clusters(np.concatenate([centres[:6], far]), rng)
    np.testing.assert_allclose(knn_radii(real, k=3), 2.0, rtol=1e-5)
    assert precision_recall(real, fake, k=3) == (0.75, 0.6)


def test_shift_lowers_precision_and_recall_monotonically():
    """Generated = real distribution shifted by delta (N(0, I_8), 400 points each, independent draws):
    precision and recall both decrease strictly over delta = 0, 1, 2, 4 and reach 0 at delta = 12; at delta
    = 0 both exceed 0.7 (finite-sample k-NN balls do not cover everything)."""
    rng = np.random.default_rng(2)
    real = rng.standard_normal((400, 8))
    base = rng.standard_normal((400, 8))
    e = np.eye(8)[0]
    pr = np.array([precision_recall(real, base + d * e) for d in (0.0, 1.0, 2.0, 4.0, 12.0)])
    assert np.all(pr[0] > 0.7)
    assert np.all(np.diff(pr[:4], axis=0) < 0), pr
    assert np.all(pr[4] == 0.0)


@pytest.mark.compile_bound
def test_block_size_does_not_change_results():
    """Blocks of 7 rows (padding in the last block) give exactly the blocks-of-1024 result."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((50, 5)), rng.standard_normal((37, 5)) + 0.3
    assert precision_recall(a, b, block_size=7) == precision_recall(a, b)


def test_errors():
    x = np.zeros((5, 3))
    with pytest.raises(ValueError, match="same d"):
        precision_recall(x, np.zeros((5, 4)))
    with pytest.raises(ValueError, match="k must be an integer"):
        precision_recall(x, x, k=5)
    with pytest.raises(ValueError, match="block_size"):
        precision_recall(x, x, block_size=0)
    with pytest.raises(ValueError, match="non-finite"):
        precision_recall(x, np.full((5, 3), np.nan))
