"""Sample-quality metrics.

* Low-dimensional targets (:mod:`~sde_jax.metrics.sample_stats`): energy distance, MMD, mode weights and
  the two-true-samples reference level.
* Images: Fréchet distance (FID), kernel distance (KID), Inception Score, improved precision/recall, in the
  feature space of the FID Inception (a Flax InceptionV3 loaded from pytorch-fid's weights file, checked by
  sha256) or of any Flax feature network; sharded feature extraction, statistics files, and
  :func:`evaluate_samples` with the sample count on every number.
"""
from sde_jax.metrics.sample_stats import energy_distance, mmd, mode_weights, two_sample_reference
from sde_jax.metrics.fid import feature_statistics, frechet_distance, trace_sqrt_product
from sde_jax.metrics.kid import kernel_distance, mmd2_unbiased, polynomial_kernel
from sde_jax.metrics.inception_score import inception_score
from sde_jax.metrics.precision_recall import precision_recall
from sde_jax.metrics.inception import InceptionV3
from sde_jax.metrics.features import (FeatureExtractor, FeatureStats, extract_features, load_stats,
                                      params_fingerprint, save_stats)
from sde_jax.metrics.torch_pickle import UnsafePickleError, load_torch_state_dict
from sde_jax.metrics.weights import (INCEPTION_ENV_VAR, INCEPTION_FILENAME, INCEPTION_SHA256, INCEPTION_URL,
                                     inception_extractor, inception_params_from_state_dict, load_inception,
                                     load_inception_params, resolve_inception_weights, save_inception_npz,
                                     sha256_file)
from sde_jax.metrics.evaluate import MIN_FID_SAMPLES, evaluate_samples, metric_name, reference_stats

__all__ = [
    "energy_distance", "mmd", "mode_weights", "two_sample_reference",
    "frechet_distance", "feature_statistics", "trace_sqrt_product",
    "kernel_distance", "mmd2_unbiased", "polynomial_kernel",
    "inception_score", "precision_recall",
    "InceptionV3", "FeatureExtractor", "FeatureStats", "extract_features", "load_stats", "save_stats",
    "params_fingerprint", "UnsafePickleError", "load_torch_state_dict",
    "INCEPTION_ENV_VAR", "INCEPTION_FILENAME", "INCEPTION_SHA256", "INCEPTION_URL",
    "inception_extractor", "inception_params_from_state_dict", "load_inception", "load_inception_params",
    "resolve_inception_weights", "save_inception_npz", "sha256_file",
    "MIN_FID_SAMPLES", "evaluate_samples", "metric_name", "reference_stats",
]
