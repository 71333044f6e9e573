"""Feature-extraction throughput of the sample-quality metrics against the bare feature network.

The case is the public :func:`sde_jax.metrics.extract_features` on uint8 images held on the host (what
``evaluate_samples`` runs): per batch a host-to-device copy sharded over the mesh, the extractor's
preprocessing (uint8 -> float, bilinear resize to 299 x 299 for the Inception) and network, and the copy of
the features back, the next batch dispatched before the previous one is copied. The limit is the bare
network (``InceptionV3().apply`` on already preprocessed, device-resident ``[batch, 299, 299, 3]``
inputs) evaluated the same number of times in a ``lax.scan`` whose carry is shifted by the output (so no
evaluation can be hoisted). ``ratio = limit time / case time``; throughput in images/s.

Weights are random with the network's real shapes (throughput does not depend on them; no weights file is
needed). Networks: ``inception`` (the FID InceptionV3, 23.9M parameters, full suite, batch 200) and
``tiny-cnn`` (8 x 8 grey images, smoke suite: keeps the code path running in the test suite).
"""
from __future__ import annotations

import dataclasses
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import Context, guarded, limit_entry, measure, record
from benchmarks.timing import aot_compile
from sde_jax import metrics
from sde_jax.metrics.inception import INCEPTION_SIZE, InceptionV3
from sde_jax.metrics.weights import inception_param_shapes
from sde_jax.parallel import batch_sharding, make_data_mesh

__all__ = ["features_case", "run_metrics", "TinyCNN"]


@dataclasses.dataclass
class FeatureNet:
    """What a record needs to name the network, plus the pieces of the case and of its limit."""

    name: str
    description: str
    num_params: int
    extractor: metrics.FeatureExtractor
    bare_apply: object          # (variables, x) -> outputs: the network alone
    bare_input: tuple           # per-example input shape of bare_apply (float32)
    image_shape: tuple          # per-example uint8 image shape given to the extractor


class TinyCNN(nn.Module):
    """8 x 8 x 1 -> 16 features (a digits-sized stand-in for the smoke suite)."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(8, (3, 3))(x))
        return nn.Dense(16)(h.reshape(x.shape[0], -1))


def _random_like(shapes, seed):
    rng = np.random.default_rng(seed)

    def draw(path, s):
        leaf = path[-1].key
        if leaf in ("scale", "var"):
            return np.ones(s.shape, np.float32)
        if leaf in ("bias", "mean"):
            return np.zeros(s.shape, np.float32)
        fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1
        return (rng.standard_normal(s.shape, np.float32) * np.float32(np.sqrt(2.0 / fan_in)))

    return jax.tree_util.tree_map_with_path(draw, shapes)


def build_feature_net(kind: str) -> FeatureNet:
    if kind == "inception":
        variables = _random_like(inception_param_shapes(), 0)
        ext = metrics.inception_extractor(variables)
        model = InceptionV3()
        n = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables))
        return FeatureNet("inception", "FID InceptionV3 (random weights), uint8 32x32x3 -> resize 299 -> pool3",
                          n, ext, model.apply, (INCEPTION_SIZE, INCEPTION_SIZE, 3), (32, 32, 3))
    if kind == "tiny-cnn":
        module = TinyCNN()
        shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1))))
        variables = _random_like(shapes, 0)
        ext = metrics.FeatureExtractor.from_flax("tiny-cnn", module, variables)
        n = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables))
        return FeatureNet("tiny-cnn", "conv 3x3x8 + dense 16 on 8x8x1", n, ext, module.apply, (8, 8, 1), (8, 8, 1))
    raise ValueError(f"unknown feature network {kind!r}; valid: ['inception', 'tiny-cnn'].")


def _limit_fn(bare_apply, num_batches):
    def fn(variables, x):
        def body(carry, _):
            out = bare_apply(variables, carry)
            feat = out["pool3"] if isinstance(out, dict) else out
            return carry + 1e-30 * jnp.mean(feat), None   # the next input depends on this output

        return jax.lax.scan(body, x, None, length=num_batches)[0]

    return fn


def _mesh_for(batch):
    # The largest device count that divides the batch (extract_features needs an even split).
    n = max(d for d in range(1, jax.device_count() + 1) if batch % d == 0)
    return make_data_mesh(n)


def features_case(ctx: Context, net: FeatureNet, *, case_id: str, batch: int, num_batches: int):
    mesh = _mesh_for(batch)
    images = np.random.default_rng(0).integers(0, 256, (batch * num_batches, *net.image_shape), dtype=np.uint8)

    def run():
        return metrics.extract_features(net.extractor, images, batch_size=batch, mesh=mesh, progress=False)["features"]

    t0 = time.perf_counter()
    feats = run()                                  # compiles (cached for the timed calls)
    first_call_s = time.perf_counter() - t0
    x = jax.device_put(jax.random.uniform(jax.random.key(1), (batch, *net.bare_input), minval=-1.0, maxval=1.0),
                       batch_sharding(mesh))
    params = jax.device_put(net.extractor.params)
    lim = aot_compile(_limit_fn(net.bare_apply, num_batches), params, x)
    sums, status, note = measure(ctx, {"run": run, "limit": lambda: lim(params, x)})
    run_s, lsum = sums["run"], sums["limit"]
    ok = status == "ok"
    n_img = batch * num_batches
    what = f"{num_batches} x apply on device-resident preprocessed [{batch}, {', '.join(map(str, net.bare_input))}]"
    return record(ctx, id=case_id, group="metrics", entry_point="extract_features", network=net, batch=batch,
                  num_steps=num_batches, nfe=num_batches, config=dict(image_shape=list(net.image_shape),
                                                                       num_devices=mesh.size, precision="highest"),
                  run=run_s, limit=limit_entry(what, num_batches, lim, lsum),
                  ratio=lsum["min_s"] / run_s["min_s"] if ok else None,
                  ratio_median=lsum["median_s"] / run_s["median_s"] if ok else None,
                  throughput=dict(images_per_s=n_img / run_s["min_s"], limit_images_per_s=n_img / lsum["min_s"])
                  if ok else None, status=status, note=note,
                  extra=dict(first_call_s=first_call_s, features_finite=bool(np.all(np.isfinite(feats))),
                             feature_dim=int(feats.shape[1])))


def run_metrics(ctx: Context, p: dict) -> None:
    spec = p.get("metrics")
    if not spec:
        return
    net = build_feature_net(spec["network"])
    for batch in spec["batches"]:
        cid = f"metrics/{net.name}/extract_features/b{batch}/x{spec['num_batches']}"
        guarded(ctx, cid, "metrics", "extract_features",
                lambda batch=batch, cid=cid: features_case(ctx, net, case_id=cid, batch=batch,
                                                           num_batches=spec["num_batches"]),
                network=net, batch=batch)
