"""The 2-D Gaussian-mixture target and reference level shared by the sampler tests.

0.2 N((-2,-2), 0.25 I) + 0.8 N((2,2), 0.25 I): modes 11 standard deviations apart. Samplers draw N_SAMPLES = 3000
points; mode weights are then known to within sqrt(0.16/3000) = 0.0073 (1 s.e.), so the 0.03 tolerance is
4.1 standard errors. The energy-distance threshold is the level seen between two independent exact samples
of the same size: mean + 4 std over 20 independent pairs.
"""
import functools

import jax
import jax.numpy as jnp

import sde_jax as sj
from sde_jax.metrics import energy_distance, mode_weights, two_sample_reference

N_SAMPLES = 3000
WEIGHT_TOL = 0.03
MIXTURE = sj.toy.GaussianMixture([[-2.0, -2.0], [2.0, 2.0]], 0.5, [0.2, 0.8])


@functools.lru_cache(maxsize=None)
def reference():
    """(exact sample to compare with, energy-distance threshold)."""
    vals = two_sample_reference(MIXTURE.sample, jax.random.key(1234), N_SAMPLES, num_pairs=20)
    return MIXTURE.sample(jax.random.key(4321), N_SAMPLES), float(jnp.mean(vals) + 4 * jnp.std(vals))


def quality(x):
    """(max mode-weight error, energy distance to an exact sample, threshold)."""
    exact, threshold = reference()
    werr = float(jnp.max(jnp.abs(mode_weights(x, MIXTURE.means) - MIXTURE.weights)))
    return werr, float(energy_distance(x, exact)), threshold
