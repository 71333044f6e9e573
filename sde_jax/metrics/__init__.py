"""Sample-quality metrics.

* Low-dimensional targets (:mod:`~sde_jax.metrics.sample_stats`): energy distance, MMD, mode weights and
  the two-true-samples reference level.
* Feature-space distances: Fréchet distance (FID), kernel distance (KID), Inception Score, improved
  precision/recall.
"""
from sde_jax.metrics.sample_stats import energy_distance, mmd, mode_weights, two_sample_reference
from sde_jax.metrics.fid import feature_statistics, frechet_distance, trace_sqrt_product
from sde_jax.metrics.kid import kernel_distance, mmd2_unbiased, polynomial_kernel
from sde_jax.metrics.inception_score import inception_score
from sde_jax.metrics.precision_recall import precision_recall

__all__ = [
    "energy_distance", "mmd", "mode_weights", "two_sample_reference",
    "frechet_distance", "feature_statistics", "trace_sqrt_product",
    "kernel_distance", "mmd2_unbiased", "polynomial_kernel",
    "inception_score", "precision_recall",
]
