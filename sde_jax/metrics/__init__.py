"""Sample-quality metrics.

* Low-dimensional targets (:mod:`~sde_jax.metrics.sample_stats`): energy distance, MMD, mode weights and
  the two-true-samples reference level.
"""
from sde_jax.metrics.sample_stats import energy_distance, mmd, mode_weights, two_sample_reference

__all__ = ["energy_distance", "mmd", "mode_weights", "two_sample_reference"]
