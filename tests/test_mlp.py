"""The low-dimensional score MLP and its time/noise embeddings."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_jax.models import ScoreMLP, sinusoidal_embedding


def test_sinusoidal_embedding_formula():
    c = jnp.array([0.0, 1.0, 250.0])
    e = sinusoidal_embedding(c, 8)
    w = np.exp(-np.log(10_000.0) * np.arange(4) / 3)
    np.testing.assert_allclose(e, np.concatenate([np.sin(c[:, None] * w), np.cos(c[:, None] * w)], -1), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("embedding,log_labels", [("fourier", True), ("fourier", False), ("sinusoidal", False)])
@pytest.mark.compile_bound
def test_shapes_and_label_dependence(embedding, log_labels):
    model = ScoreMLP(hidden=32, num_layers=2, embedding=embedding, embed_dim=16, log_labels=log_labels)
    x = jax.random.normal(jax.random.key(0), (5, 3))
    labels = jnp.linspace(0.1, 10.0, 5)
    params = jax.jit(model.init)(jax.random.key(1), x, labels)
    apply = jax.jit(model.apply)
    out = apply(params, x, labels)
    assert out.shape == (5, 3) and out.dtype == jnp.float32
    assert not np.allclose(out, apply(params, x, labels * 2.0))   # conditioned on the labels


@pytest.mark.compile_bound
def test_fourier_frequencies_are_not_trained():
    model = ScoreMLP(hidden=16, num_layers=1, embedding="fourier", embed_dim=8)
    x, labels = jnp.ones((2, 2)), jnp.ones(2)
    params = jax.jit(model.init)(jax.random.key(0), x, labels)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, x, labels) ** 2)))(params)
    w_grads = [g for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]
               if "GaussianFourierProjection" in jax.tree_util.keystr(path)]
    assert w_grads and all(float(jnp.max(jnp.abs(g))) == 0.0 for g in w_grads)


def test_errors_name_the_field():
    x, labels = jnp.ones((2, 2)), jnp.ones(2)
    with pytest.raises(ValueError, match="embedding must be one of"):
        ScoreMLP(embedding="learned").init(jax.random.key(0), x, labels)
    with pytest.raises(ValueError, match="act must be one of"):
        ScoreMLP(act="sigmoid").init(jax.random.key(0), x, labels)
    with pytest.raises(ValueError, match="labels must have shape"):
        ScoreMLP().init(jax.random.key(0), x, jnp.ones(3))
