import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_jax.metrics import energy_distance, mmd, mode_weights, two_sample_reference


@pytest.mark.compile_bound
def test_energy_distance_zero_mean_for_equal_laws_and_detects_shift(key):
    def sample(k, n):
        return jax.random.normal(k, (n, 2))

    ref = two_sample_reference(sample, key, 500, num_pairs=30)
    assert abs(float(jnp.mean(ref))) < 3 * float(jnp.std(ref)) / np.sqrt(30)  # unbiased: mean zero
    k1, k2 = jax.random.split(jax.random.fold_in(key, 1))
    shifted = energy_distance(sample(k1, 500), sample(k2, 500) + 0.3)
    # population value for a shift d in N(0, I): 2E|Z+d| - 2E|Z| with Z ~ N(0, 2I) ~ 0.0785 at d=(0.3, 0) (MC)
    z = jax.random.normal(jax.random.key(9), (400000, 2)) * np.sqrt(2)
    pop = 2 * jnp.mean(jnp.linalg.norm(z + jnp.array([0.3, 0.0]), axis=1)) - 2 * jnp.mean(jnp.linalg.norm(z, axis=1))
    shifted_x = energy_distance(sample(k1, 500), sample(k2, 500) + jnp.array([0.3, 0.0]))
    assert abs(float(shifted_x) - float(pop)) < 4 * float(jnp.std(ref))
    assert float(shifted) > float(jnp.max(ref))
    assert float(mmd(sample(k1, 300), sample(k2, 300) + 1.0)) > 10 * abs(float(mmd(sample(k1, 300), sample(k2, 300))))


def test_mode_weights_and_errors():
    x = jnp.array([[-1.0, 0.0], [2.0, 0.0], [3.0, 1.0], [-4.0, 0.0]])
    np.testing.assert_allclose(mode_weights(x, jnp.array([[-2.0, 0.0], [2.0, 0.0]])), [0.5, 0.5])
    with pytest.raises(ValueError, match="means"):
        mode_weights(x, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="same d"):
        energy_distance(x, jnp.ones((4, 3)))
