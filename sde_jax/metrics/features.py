"""Feature networks, feature extraction sharded over a device mesh, and feature statistics files.

A :class:`FeatureExtractor` is any pure ``apply_fn(params, images_uint8) -> {"features": [B, D],
"logits": [B, C] (optional)}`` with its parameters, a name and a fingerprint of those parameters. The
metrics are the same for every extractor; only the *names* of the results differ (FID/KID/IS are reserved
for the FID Inception, :func:`sde_jax.metrics.load_inception`; any other network's results are named after
it, e.g. ``fd_digits_cnn``: see :mod:`sde_jax.metrics.evaluate`).

:func:`extract_features` runs the extractor in fixed-size batches (the last one padded, so one compiled
program serves every batch), each batch sharded over the ``data`` axis of a device mesh
(:func:`sde_jax.parallel.make_data_mesh`), with the next batch dispatched before the previous one is copied
to the host, and a progress bar.

Statistics files (:func:`save_stats` / :func:`load_stats`) are ``.npz`` with ``mu [D]`` and ``sigma [D, D]``
(float64), ``num_samples``, ``feature_network`` and ``feature_network_sha256`` (the parameter fingerprint),
``format`` (``"sde_jax.feature_stats/1"``) and optionally ``features [N, D]`` (needed for KID and
precision/recall). pytorch-fid / TTUR files (``mu``, ``sigma``) and clean-fid files (``mu``, ``sigma``; or
``feats`` for its KID statistics) load too, with an unknown sample count and network.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Any, Callable, Iterable

import jax
import numpy as np

from sde_jax.metrics.fid import feature_statistics
from sde_jax.parallel import batch_sharding, check_batch_divisible, make_data_mesh, replicated_sharding

__all__ = ["FeatureExtractor", "FeatureStats", "params_fingerprint", "extract_features", "save_stats",
           "load_stats", "STATS_FORMAT"]

STATS_FORMAT = "sde_jax.feature_stats/1"


def params_fingerprint(params) -> str:
    """sha256 (hex) of a parameter pytree's content: every leaf's path, dtype, shape and bytes, in path
    order. Equal for equal parameters whatever file they came from (``.pth`` or ``.npz``)."""
    h = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for path, leaf in sorted(leaves, key=lambda pl: jax.tree_util.keystr(pl[0])):
        a = np.ascontiguousarray(jax.device_get(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureExtractor:
    """A feature network for the sample-quality metrics.

    Attributes:
      name: the feature space's name, used in result names (``"inception-2015-12-05"`` for the FID
        Inception; e.g. ``"digits_cnn"`` for a classifier of one's own). Letters, digits, ``-``, ``_``.
      apply_fn: ``apply_fn(params, images) -> dict``; ``images: uint8 [B, H, W, C]``; the dict holds
        ``"features": [B, D]`` and, for a classifier, ``"logits": [B, C]`` (the Inception Score's input).
        Pure and jittable; it does its own preprocessing (resize, scaling).
      params: the parameter pytree passed to ``apply_fn``.
      inception: True only for the FID Inception (:func:`sde_jax.metrics.load_inception`): its results
        are named ``fid``/``kid``/``is``.
      fingerprint: sha256 of ``params`` (:func:`params_fingerprint`), computed when not given.
    """

    name: str
    apply_fn: Callable[[Any, jax.Array], dict]
    params: Any
    inception: bool = False
    fingerprint: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ValueError(f"name must be a non-empty string of letters, digits, '-', '_', '.'; got {self.name!r}.")
        if not callable(self.apply_fn):
            raise TypeError(f"apply_fn must be callable; got {type(self.apply_fn).__name__}.")
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", params_fingerprint(self.params))

    @classmethod
    def from_flax(cls, name: str, module, variables, *, preprocess: Callable | None = None,
                  features: str | int | None = None, logits: str | int | None = None, **kwargs):
        """An extractor from a Flax module whose ``apply(variables, x)`` returns the features (an array),
        or a dict / tuple holding them at key/index ``features`` (and the logits at ``logits``).

        ``preprocess(images_uint8) -> x`` maps the uint8 images to the module's input (default:
        ``images / 255`` as float32). Extra ``kwargs`` go to :class:`FeatureExtractor`.
        """
        return cls(name, functools.partial(_flax_apply, module, preprocess, features, logits), variables,
                   **kwargs)


def _flax_apply(module, preprocess, features_at, logits_at, variables, images):
    x = images.astype(np.float32) / 255.0 if preprocess is None else preprocess(images)
    out = module.apply(variables, x)
    if features_at is None:
        return {"features": out}
    res = {"features": out[features_at]}
    if logits_at is not None:
        res["logits"] = out[logits_at]
    return res


@functools.lru_cache(maxsize=32)
def _compiled(apply_fn, mesh):
    data, rep = batch_sharding(mesh), replicated_sharding(mesh)
    return jax.jit(apply_fn, in_shardings=(rep, data), out_shardings=data)


def _batches(images, batch_size: int) -> Iterable[tuple[np.ndarray, int]]:
    """Fixed-size uint8 batches ``[batch_size, ...]`` (zero-padded) with their number of real rows."""
    chunks = (images[i:i + batch_size] for i in range(0, len(images), batch_size)) \
        if hasattr(images, "shape") else images
    carry = None
    for chunk in chunks:
        chunk = np.asarray(chunk)
        carry = chunk if carry is None or not len(carry) else np.concatenate([carry, chunk])
        while len(carry) >= batch_size:
            yield carry[:batch_size], batch_size
            carry = carry[batch_size:]
    if carry is not None and len(carry):
        pad = np.zeros((batch_size - len(carry),) + carry.shape[1:], carry.dtype)
        yield np.concatenate([carry, pad]), len(carry)


def extract_features(extractor: FeatureExtractor, images, *, batch_size: int = 200, mesh=None,
                     progress: bool = True, desc: str = "features") -> dict[str, np.ndarray]:
    """Run ``extractor`` over ``images`` and return its outputs on the host.

    Args:
      extractor: a :class:`FeatureExtractor`.
      images: ``uint8 [N, H, W, C]`` (NumPy or JAX), or an iterable of such batches of any sizes (e.g. a
        generator that reads a data set), re-batched here.
      batch_size: examples per compiled call; must be divisible by the mesh's device count.
      mesh: a ``data`` mesh (default: every device, :func:`sde_jax.parallel.make_data_mesh`).
      progress: show a tqdm progress bar.
      desc: the progress bar's label.

    Returns:
      ``{"features": float32 [N, D], "logits": float32 [N, C] (if the extractor gives them)}``.

    Raises:
      TypeError: images not uint8. ValueError: wrong shapes, ``batch_size`` not divisible by the number of
      devices, an extractor output that is not ``[B, D]``, no images.

    One process: every image passes through this process's host memory (a multi-host run would extract
    per host and gather the features; not provided here).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    mesh = make_data_mesh() if mesh is None else mesh
    check_batch_divisible(batch_size, mesh, "batch_size")
    fn = _compiled(extractor.apply_fn, mesh)
    params = jax.device_put(extractor.params, replicated_sharding(mesh))
    total = len(images) if hasattr(images, "__len__") else None
    bar = _progress(total, desc) if progress else None
    outputs: dict[str, list] = {}
    pending = None

    def collect(result, n):
        for k, v in result.items():
            outputs.setdefault(k, []).append(np.asarray(v)[:n])
        if bar is not None:
            bar.update(n)

    try:
        for batch, n in _batches(images, batch_size):
            _check_images(batch)
            out = fn(params, jax.device_put(batch, batch_sharding(mesh)))
            _check_output(out, batch_size)
            if pending is not None:          # copy the previous batch while this one runs
                collect(*pending)
            pending = (out, n)
        if pending is not None:
            collect(*pending)
    finally:
        if bar is not None:
            bar.close()
    if not outputs:
        raise ValueError("images is empty: no features to extract.")
    return {k: np.concatenate(v).astype(np.float32, copy=False) for k, v in outputs.items()}


def _progress(total, desc):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", leave=False)


def _check_images(batch):
    if batch.dtype != np.uint8:
        raise TypeError(f"images must be uint8 [N, H, W, C] (quantised as saved samples are); got dtype "
                        f"{batch.dtype}.")
    if batch.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C]; got a batch of shape {batch.shape}.")


def _check_output(out, batch_size):
    if not isinstance(out, dict) or "features" not in out:
        raise ValueError(f"the extractor's apply_fn must return a dict with 'features'; got {type(out).__name__}"
                         + (f" with keys {sorted(out)}" if isinstance(out, dict) else "") + ".")
    for k, v in out.items():
        if v.ndim != 2 or v.shape[0] != batch_size:
            raise ValueError(f"the extractor's output {k!r} must be [batch, dim]; got shape {v.shape}.")


# --------------------------------------------------------------------------------------------------
# Statistics


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureStats:
    """Gaussian statistics of a feature set, with their provenance.

    Attributes:
      mu: ``[D]`` float64 mean. sigma: ``[D, D]`` float64 covariance (``ddof = 1``).
      num_samples: examples behind the statistics (``None``: unknown, e.g. a pytorch-fid file).
      feature_network: the extractor's name (``None``: unknown).
      feature_network_sha256: the extractor's parameter fingerprint (``None``: unknown).
      features: ``[N, D]`` float32 features, if kept (KID and precision/recall need them).
      source: ``"sde_jax"``, ``"pytorch-fid/clean-fid"`` (``mu``/``sigma`` only) or ``"clean-fid feats"``.
    """

    mu: np.ndarray
    sigma: np.ndarray
    num_samples: int | None = None
    feature_network: str | None = None
    feature_network_sha256: str | None = None
    features: np.ndarray | None = None
    source: str = "sde_jax"

    @classmethod
    def from_features(cls, features, extractor: FeatureExtractor | None = None, *, keep_features: bool = True):
        """Statistics of ``features: [N, D]`` (float64, :func:`sde_jax.metrics.feature_statistics`)."""
        f = np.asarray(features, np.float32)
        mu, sigma = feature_statistics(f)
        return cls(mu, sigma, int(f.shape[0]), None if extractor is None else extractor.name,
                   None if extractor is None else extractor.fingerprint, f if keep_features else None)


def save_stats(path: str | os.PathLike, stats: FeatureStats, *, include_features: bool = True) -> None:
    """Write ``stats`` as an ``.npz`` (module docstring); written to a temporary name, then renamed."""
    path = os.fspath(path)
    arrays = dict(mu=np.asarray(stats.mu, np.float64), sigma=np.asarray(stats.sigma, np.float64),
                  format=np.array(STATS_FORMAT),
                  meta=np.array(json.dumps(dict(num_samples=stats.num_samples, feature_network=stats.feature_network,
                                                feature_network_sha256=stats.feature_network_sha256,
                                                source=stats.source))))
    if include_features and stats.features is not None:
        arrays["features"] = np.asarray(stats.features, np.float32)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_stats(path: str | os.PathLike) -> FeatureStats:
    """Read a statistics ``.npz``: ours, pytorch-fid's / TTUR's / clean-fid's (``mu``, ``sigma``), or
    clean-fid's KID file (``feats``). Never unpickles (``allow_pickle=False``).

    Raises:
      FileNotFoundError: no such file. ValueError: none of the known layouts, or inconsistent shapes.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no statistics file at {path!r}.")
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        if "format" in keys:
            fmt = str(z["format"])
            if fmt != STATS_FORMAT:
                raise ValueError(f"{path}: statistics format {fmt!r}; this version reads {STATS_FORMAT!r}.")
            meta = json.loads(str(z["meta"]))
            stats = FeatureStats(z["mu"], z["sigma"], meta["num_samples"], meta["feature_network"],
                                 meta["feature_network_sha256"], z["features"] if "features" in keys else None,
                                 meta.get("source", "sde_jax"))
        elif {"mu", "sigma"} <= keys:
            stats = FeatureStats(z["mu"].astype(np.float64), z["sigma"].astype(np.float64),
                                 source="pytorch-fid/clean-fid")
        elif "feats" in keys:
            feats = z["feats"].astype(np.float32)
            mu, sigma = feature_statistics(feats)
            stats = FeatureStats(mu, sigma, int(feats.shape[0]), features=feats, source="clean-fid feats")
        else:
            raise ValueError(f"{path}: not a statistics file (keys {sorted(keys)}; expected 'mu' and 'sigma', "
                             f"or 'feats').")
    d = stats.mu.shape[0] if stats.mu.ndim == 1 else -1
    feats_ok = stats.features is None or stats.features.shape[1:] == (d,)
    if stats.mu.ndim != 1 or stats.sigma.shape != (d, d) or not feats_ok:
        raise ValueError(f"{path}: inconsistent shapes mu {stats.mu.shape}, sigma {stats.sigma.shape}"
                         + (f", features {stats.features.shape}" if stats.features is not None else "") + ".")
    return stats
