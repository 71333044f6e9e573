"""A small classifier trained on the run's own real data set: a sample-quality signal for the CPU configs.

It is *not* an Inception network and its numbers are not comparable to Inception Score or FID: it is a
three-layer CNN trained for a few hundred steps on the training split of the same small data set (digits,
MNIST-5k). For samples it gives the class histogram (are all classes generated, in what proportions?) and the
mean confidence ``E[max_c p(c | x)]``, next to the same figures for held-out real images (the test split), which
set the level a perfect generator would reach. Its penultimate layer (128 features) is the feature space for
Fréchet-style distances on these sets.
"""
from __future__ import annotations

import functools
import json
import os
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import serialization

from sde_jax import data as D
from sde_jax.metrics.features import _batches as padded_batches   # fixed-size, zero-padded uint8 chunks

__all__ = ["SmallCNN", "Classifier", "train_classifier", "load_or_train", "predict", "summarize"]


class SmallCNN(nn.Module):
    """``uint8``-range inputs scaled to ``[0, 1]`` -> ``(logits [B, K], features [B, 128])``."""

    num_classes: int

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(32, (3, 3))(x))
        h = nn.relu(nn.Conv(64, (3, 3), strides=(2, 2))(h))
        h = nn.relu(nn.Conv(64, (3, 3), strides=(2, 2))(h))
        features = nn.relu(nn.Dense(128)(h.reshape((h.shape[0], -1))))
        return nn.Dense(self.num_classes)(features), features


class Classifier(NamedTuple):
    model: SmallCNN
    params: dict
    test_accuracy: float


def _data_config(config) -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict(config.data.to_dict())
    d.centered, d.uniform_dequantization, d.random_flip = False, False, False
    d.layout = "replicated"
    return d


def train_classifier(config, *, steps: int, batch_size: int = 128, lr: float = 1e-3, seed: int = 0) -> Classifier:
    """Train :class:`SmallCNN` on ``config.data``'s training split (one device), report test-split accuracy."""
    d = _data_config(config)
    train = D.device_batches(d, d.get("train_split", "train"), batch_size, None, with_labels=True, train=False)
    test = D.load_images(d, d.get("eval_split", "test"))
    if test.labels is None:
        raise ValueError("the classifier needs class labels; this data set has none (eval.classifier=False).")
    model = SmallCNN(num_classes=int(test.num_classes))
    key_init, key_data = jax.random.split(jax.random.key(seed))
    params = jax.jit(model.init)(key_init, jnp.zeros((1,) + test.images.shape[1:]))   # one program, not one per layer
    tx = optax.adam(lr)

    def loss(p, batch):
        logits, _ = model.apply(p, batch["image"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    # One step per dispatch, not a lax.scan over the steps: XLA:CPU runs the convolutions of the weight gradient
    # ~10x slower inside a loop body (jax-ml/jax#12868; measured here: 260 vs 22 ms per step at batch 128).
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, batches, k):
        g = jax.grad(loss)(params, batches(key_data, k))
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state = tx.init(params)
    for k in range(steps):
        params, opt_state = step(params, opt_state, train, jnp.asarray(k, jnp.int32))
    probs = predict(model, params, test.images)
    acc = float(np.mean(np.argmax(probs, -1) == test.labels))
    return Classifier(model, params, acc)


def load_or_train(config, directory: str, *, steps: int, write: bool = True) -> Classifier:
    """The classifier saved in ``directory`` (``params.msgpack`` + ``classifier.json``) if it was trained with the
    same data and steps, else a freshly trained one (saved when ``write``)."""
    meta = {"data": config.data.to_dict(), "steps": int(steps), "architecture": "SmallCNN(32-64-64 conv, 128 dense)"}
    meta_path, params_path = os.path.join(directory, "classifier.json"), os.path.join(directory, "params.msgpack")
    if os.path.exists(meta_path) and os.path.exists(params_path):
        with open(meta_path) as f:
            saved = json.load(f)
        if saved.get("data") == json.loads(json.dumps(meta["data"])) and saved.get("steps") == meta["steps"]:
            model = SmallCNN(num_classes=int(saved["num_classes"]))
            template = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros([1] + saved["input_shape"]))
            with open(params_path, "rb") as f:
                params = serialization.from_bytes(template, f.read())
            return Classifier(model, params, float(saved["test_accuracy"]))
    clf = train_classifier(config, steps=steps)
    if write:
        os.makedirs(directory, exist_ok=True)
        with open(params_path, "wb") as f:
            f.write(serialization.to_bytes(clf.params))
        shape = [int(config.data.image_size), int(config.data.image_size), int(config.data.num_channels)]
        with open(meta_path, "w") as f:
            json.dump(dict(meta, num_classes=clf.model.num_classes, input_shape=shape,
                           test_accuracy=clf.test_accuracy), f, indent=2)
    return clf


@functools.partial(jax.jit, static_argnums=0)
def _probs_and_features(model, params, x):
    logits, features = model.apply(params, x.astype(jnp.float32) / 255.0)
    return jax.nn.softmax(logits, -1), features


def predict(model, params, images, *, batch_size: int = 500, features: bool = False):
    """Class probabilities ``[n, K]`` (and features ``[n, 128]``) of ``uint8 [n, h, w, c]`` images.

    Every chunk goes through one jitted program of ``batch_size`` rows (the last one padded), so any number of
    images of a given shape compiles once per model: eval and the controllable modes call this for several image
    sets of different sizes."""
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty [n, h, w, c] array; got shape {images.shape}")
    probs, feats = [], []
    for batch, n in padded_batches(images, batch_size):
        p, f = _probs_and_features(model, params, jnp.asarray(batch))
        probs.append(np.asarray(p)[:n])
        feats.append(np.asarray(f)[:n])
    probs = np.concatenate(probs)
    return (probs, np.concatenate(feats)) if features else probs


def summarize(probs, labels=None) -> dict:
    """Class histogram of the arg-max predictions, classes present, mean confidence ``E[max_c p(c|x)]``
    (with its standard error), and the accuracy when ``labels`` are given."""
    probs = np.asarray(probs, np.float64)
    pred, conf = np.argmax(probs, -1), np.max(probs, -1)
    hist = np.bincount(pred, minlength=probs.shape[1]).tolist()
    out = {"num_images": int(len(probs)), "class_histogram": hist, "classes_present": int(np.count_nonzero(hist)),
           "mean_confidence": float(conf.mean()),
           "mean_confidence_stderr": float(conf.std(ddof=1) / np.sqrt(len(conf))) if len(conf) > 1 else 0.0}
    if labels is not None:
        out["accuracy"] = float(np.mean(pred == np.asarray(labels)))
    return out
