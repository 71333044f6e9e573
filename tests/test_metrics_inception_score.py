"""Inception Score against closed forms on constructed logits (float64 NumPy)."""
import numpy as np
import pytest

from sde_jax.metrics import inception_score


def _balanced_logits(c, per_class, splits, a, scale=None):
    """Logits ``log p(y|x)`` with ``p = 1 - a`` on the example's class and ``a / (C - 1)`` elsewhere; every
    split holds ``per_class`` examples of each class, so p(y) is uniform in each split."""
    labels = np.tile(np.repeat(np.arange(c), per_class), splits)
    p = np.full((labels.size, c), a / (c - 1))
    p[np.arange(labels.size), labels] = 1 - a
    return np.log(p) if scale is None else scale * np.eye(c)[labels]


@pytest.mark.parametrize("a", [0.0, 0.05, 0.5, 0.9])
def test_closed_form_balanced_confident_predictions(a):
    """IS = exp((1 - a) log((1 - a) C) + a log(a C / (C - 1))) for every split (so std = 0), C = 10, 10
    splits; a = 0 gives C. Relative error < 1e-12 (1e-12 absolute on the std)."""
    c = 10
    logits = _balanced_logits(c, 3, 10, a) if a > 0 else _balanced_logits(c, 3, 10, a, scale=800.0)
    kl = (1 - a) * np.log((1 - a) * c) + (a * np.log(a * c / (c - 1)) if a > 0 else 0.0)
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(np.exp(kl), rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_identical_predictions_score_one_and_splits_follow_the_original_chunks():
    """Identical rows: IS = 1 exactly (to 1e-14). Chunks are [i N / s, (i+1) N / s): with half the splits
    confident-balanced and half uniform, the per-split scores are C and 1, mean (C + 1) / 2, std (C - 1) / 2."""
    mean, std = inception_score(np.tile(np.random.default_rng(0).standard_normal(7), (20, 1)), splits=4)
    assert mean == pytest.approx(1.0, abs=1e-14) and std == pytest.approx(0.0, abs=1e-14)
    c = 5
    confident = _balanced_logits(c, 2, 2, 0.0, scale=1000.0)      # 2 splits x 10 examples
    uniform = np.zeros((20, c))
    mean, std = inception_score(np.concatenate([confident, uniform]), splits=4)
    assert mean == pytest.approx((c + 1) / 2, rel=1e-12) and std == pytest.approx((c - 1) / 2, rel=1e-12)
    assert inception_score(np.concatenate([confident, uniform]), splits=4, return_std=False) == mean


def test_generic_logits_against_the_definition():
    """Random logits, 5 splits of 40: equals exp(mean_x KL(p(y|x) || p(y))) per split written directly with
    scipy-free NumPy softmax, to 1e-12 relative."""
    rng = np.random.default_rng(1)
    z = 3 * rng.standard_normal((200, 8))
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = []
    for part in np.split(p, 5):
        py = part.mean(0)
        scores.append(np.exp(np.mean(np.sum(part * np.log(part / py), axis=1))))
    mean, std = inception_score(z, splits=5)
    assert mean == pytest.approx(np.mean(scores), rel=1e-12) and std == pytest.approx(np.std(scores), rel=1e-9)


def test_errors():
    with pytest.raises(ValueError, match=r"logits must be \[N, C\]"):
        inception_score(np.zeros(10))
    with pytest.raises(ValueError, match="splits must be an integer in"):
        inception_score(np.zeros((5, 3)), splits=6)
    with pytest.raises(ValueError, match="non-finite"):
        inception_score(np.full((5, 3), np.nan), splits=1)
