"""The image experiment's small classifier: predictions in fixed-size chunks equal the network applied directly."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.images import classifier as clf_lib


def test_predict_pads_to_one_program_and_equals_the_network_applied_directly():
    """Chunks of ``batch_size`` rows, the last one padded: any number of images compiles one program per model and
    image shape, and each row's probabilities and features are the network's on that row alone (float32, 1e-6)."""
    model = clf_lib.SmallCNN(num_classes=10)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    images = np.asarray(jax.random.randint(jax.random.key(1), (11, 8, 8, 1), 0, 256), np.uint8)
    one_row = jax.jit(lambda x: model.apply(params, x.astype(jnp.float32) / 255.0))
    before = clf_lib._probs_and_features._cache_size()
    for n in (11, 3, 4):                                   # 3 chunks with a padded last one, 1 padded, 1 exact
        probs, feats = clf_lib.predict(model, params, images[:n], batch_size=4, features=True)
        assert probs.shape == (n, 10) and feats.shape == (n, 128)
        for i in range(n):
            logits, f = one_row(images[i:i + 1])
            np.testing.assert_allclose(probs[i], jax.nn.softmax(logits, -1)[0], rtol=0, atol=1e-6)
            np.testing.assert_allclose(feats[i], f[0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    assert clf_lib._probs_and_features._cache_size() == before + 1
    with pytest.raises(ValueError, match="non-empty"):
        clf_lib.predict(model, params, images[:0])
    with pytest.raises(ValueError, match=r"\[n, h, w, c\]"):
        clf_lib.predict(model, params, images[0])
