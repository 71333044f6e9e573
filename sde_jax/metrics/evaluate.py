"""One call from generated samples to FID, KID, IS and precision/recall, each with its sample count.

:func:`evaluate_samples` is what an experiment's ``--mode eval`` calls: features of the samples from a
:class:`~sde_jax.metrics.features.FeatureExtractor`, against reference statistics (a file, a
:class:`~sde_jax.metrics.features.FeatureStats`, or reference images whose statistics it computes);
:func:`reference_stats` computes a training split's statistics once and caches them in a file.

Naming (:func:`metric_name`). Every result records ``num_samples`` (and ``num_reference``); the names say
what the number is:

* with the FID Inception (``extractor.inception``): ``fid``, ``kid``, ``is``, ``precision``, ``recall``. FID
  and IS are biased in the sample count and papers quote them at 50,000 samples, so below
  ``min_fid_samples`` (10,000) they are named ``fid_<n>`` / ``is_<n>`` (e.g. ``fid_2000``) unless
  ``allow_small_sample_fid=True``. KID is unbiased; precision/recall carry their count in the record.
* with any other feature network ``NAME`` (e.g. a small classifier of the training data): ``fd_NAME``
  (Fréchet distance), ``kd_NAME``, ``is_NAME``, ``precision_NAME``, ``recall_NAME``; never ``fid``.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from sde_jax.metrics.features import FeatureExtractor, FeatureStats, extract_features, load_stats, save_stats
from sde_jax.metrics.fid import frechet_distance
from sde_jax.metrics.inception_score import inception_score
from sde_jax.metrics.kid import effective_subset_size, kernel_distance
from sde_jax.metrics.precision_recall import precision_recall

__all__ = ["evaluate_samples", "reference_stats", "metric_name", "MIN_FID_SAMPLES", "METRICS"]

MIN_FID_SAMPLES = 10_000
METRICS = ("fid", "kid", "is", "precision_recall")
_OTHER_PREFIX = {"fid": "fd", "kid": "kd", "is": "is", "precision": "precision", "recall": "recall"}


def metric_name(metric: str, extractor: FeatureExtractor, num_samples: int, *,
                min_fid_samples: int = MIN_FID_SAMPLES, allow_small_sample_fid: bool = False) -> str:
    """The result name of ``metric`` (``fid | kid | is | precision | recall``) under the module's rules."""
    if metric not in _OTHER_PREFIX:
        raise ValueError(f"metric must be one of {sorted(_OTHER_PREFIX)}; got {metric!r}.")
    if not extractor.inception:
        return f"{_OTHER_PREFIX[metric]}_{extractor.name}"
    if metric in ("fid", "is") and num_samples < min_fid_samples and not allow_small_sample_fid:
        return f"{metric}_{num_samples}"
    return metric


def _check_reference(ref: FeatureStats, extractor: FeatureExtractor, dim: int) -> None:
    if ref.mu.shape != (dim,):
        raise ValueError(f"reference statistics have dimension {ref.mu.shape[0]}; the extractor "
                         f"{extractor.name!r} gives {dim}-d features.")
    if ref.feature_network_sha256 is None:
        if not extractor.inception:
            raise ValueError(f"reference statistics of unknown provenance ({ref.source}: no network recorded) "
                             f"cannot be compared in the feature space of {extractor.name!r}; compute them "
                             f"with this extractor (reference_stats).")
        return                          # a pytorch-fid / clean-fid Inception file: same network by convention
    if ref.feature_network_sha256 != extractor.fingerprint or ref.feature_network != extractor.name:
        raise ValueError(f"reference statistics were computed with {ref.feature_network!r} (parameters "
                         f"{ref.feature_network_sha256[:12]}...), the samples with {extractor.name!r} "
                         f"({extractor.fingerprint[:12]}...): distances across feature spaces mean nothing.")


def reference_stats(cache_path: str | os.PathLike | None, images: Any | Callable[[], Any],
                    extractor: FeatureExtractor, *, keep_features: bool = True, **extract_kwargs) -> FeatureStats:
    """Statistics of reference images (e.g. a training split), computed once and cached in ``cache_path``.

    Args:
      cache_path: an ``.npz`` file (:func:`~sde_jax.metrics.save_stats`); reused when it holds statistics of
        this extractor (same name and fingerprint), recomputed and overwritten otherwise. ``None``: no cache.
      images: ``uint8 [N, H, W, C]``, an iterable of batches, or a zero-argument callable returning either
        (called only when the cache cannot be used, so a data set is not read needlessly).
      extractor: the feature network.
      keep_features: also store the features (KID and precision/recall need them; ``N x D`` float32).
      extract_kwargs: passed to :func:`~sde_jax.metrics.extract_features` (``batch_size``, ``mesh``, ...).
    """
    if cache_path is not None and os.path.exists(cache_path):
        cached = load_stats(cache_path)
        if (cached.feature_network == extractor.name and cached.feature_network_sha256 == extractor.fingerprint
                and (cached.features is not None or not keep_features)):
            return cached
    imgs = images() if callable(images) else images
    extract_kwargs.setdefault("desc", "reference features")
    feats = extract_features(extractor, imgs, **extract_kwargs)["features"]
    stats = FeatureStats.from_features(feats, extractor, keep_features=keep_features)
    if cache_path is not None:
        save_stats(cache_path, stats)
    return stats


def evaluate_samples(samples, reference, extractor: FeatureExtractor, *, metrics=None, batch_size: int = 200,
                     mesh=None, progress: bool = True, min_fid_samples: int = MIN_FID_SAMPLES,
                     allow_small_sample_fid: bool = False, kid_subsets: int = 100, kid_subset_size: int = 1000,
                     is_splits: int = 10, pr_k: int = 3, seed: int = 0) -> dict:
    """FID, KID, IS and precision/recall of ``samples`` against ``reference``, with sample counts.

    Args:
      samples: generated images, ``uint8 [N, H, W, C]`` (or an iterable of batches).
      reference: a :class:`~sde_jax.metrics.FeatureStats`, a statistics file path (ours, pytorch-fid's or
        clean-fid's), or reference images ``uint8 [M, H, W, C]`` (their statistics are computed here).
      extractor: the feature network (:func:`~sde_jax.metrics.load_inception` for FID; any
        :class:`~sde_jax.metrics.FeatureExtractor` otherwise).
      metrics: subset of ``("fid", "kid", "is", "precision_recall")``; ``None``: every metric the inputs
        allow (KID and precision/recall need reference *features*, IS needs the extractor's logits; what is
        left out is listed under ``"skipped"``). Asking explicitly for one that is impossible raises.
      batch_size, mesh, progress: feature extraction (:func:`~sde_jax.metrics.extract_features`).
      min_fid_samples, allow_small_sample_fid: the naming rule (module docstring).
      kid_subsets, kid_subset_size: KID's ``s`` and ``m`` (:func:`~sde_jax.metrics.kernel_distance`).
      is_splits: the Inception Score's splits. pr_k: precision/recall's ``k``. seed: KID's subset draws.

    Returns:
      A JSON-ready dict: ``feature_network``, ``feature_network_sha256``, ``num_samples``,
      ``num_reference`` (``None`` if unknown), ``metrics`` (name -> record with ``metric`` (one of
      ``frechet_distance | kernel_distance | inception_score | precision | recall``), ``value``,
      ``num_samples``, and ``std`` / ``num_reference`` / settings as they apply) and ``skipped``
      (metric -> reason).

    Raises:
      ValueError: unknown metric names, a reference from another feature network, an impossible metric.
    """
    wanted = METRICS if metrics is None else tuple(metrics)
    unknown = sorted(set(wanted) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; valid: {list(METRICS)}.")
    ekw = dict(batch_size=batch_size, mesh=mesh, progress=progress)
    if isinstance(reference, (str, os.PathLike)):
        ref = load_stats(reference)
    elif isinstance(reference, FeatureStats):
        ref = reference
    else:
        ref = reference_stats(None, reference, extractor, **ekw)
    out = extract_features(extractor, samples, desc="sample features", **ekw)
    feats = out["features"]
    n, m = int(feats.shape[0]), ref.num_samples
    _check_reference(ref, extractor, feats.shape[1])

    impossible = {}
    if ref.features is None:
        impossible["kid"] = impossible["precision_recall"] = "the reference statistics hold no features"
    if "logits" not in out:
        impossible["is"] = f"the extractor {extractor.name!r} gives no logits"
    if metrics is not None and any(k in impossible for k in wanted):
        bad = {k: impossible[k] for k in wanted if k in impossible}
        raise ValueError(f"cannot compute {sorted(bad)}: {bad}.")

    def name(metric):
        return metric_name(metric, extractor, n, min_fid_samples=min_fid_samples,
                           allow_small_sample_fid=allow_small_sample_fid)

    results: dict[str, dict] = {}
    if "fid" in wanted:
        fs = FeatureStats.from_features(feats, extractor, keep_features=False)
        fd = frechet_distance(fs.mu, fs.sigma, ref.mu, ref.sigma)
        results[name("fid")] = dict(metric="frechet_distance", value=fd, num_samples=n, num_reference=m)
    if "kid" in wanted and "kid" not in impossible:
        mean, std = kernel_distance(feats, ref.features, num_subsets=kid_subsets, subset_size=kid_subset_size,
                                    seed=seed)
        results[name("kid")] = dict(metric="kernel_distance", value=mean, std=std, num_samples=n,
                                    num_reference=int(ref.features.shape[0]), num_subsets=kid_subsets,
                                    subset_size=effective_subset_size(kid_subset_size, n, ref.features.shape[0]))
    if "is" in wanted and "is" not in impossible:
        mean, std = inception_score(out["logits"], splits=is_splits)
        results[name("is")] = dict(metric="inception_score", value=mean, std=std, num_samples=n, splits=is_splits)
    if "precision_recall" in wanted and "precision_recall" not in impossible:
        p, r = precision_recall(ref.features, feats, k=pr_k)
        common = dict(num_samples=n, num_reference=int(ref.features.shape[0]), k=pr_k)
        results[name("precision")] = dict(metric="precision", value=p, **common)
        results[name("recall")] = dict(metric="recall", value=r, **common)
    return dict(feature_network=extractor.name, feature_network_sha256=extractor.fingerprint, num_samples=n,
                num_reference=m, metrics=results,
                skipped={k: v for k, v in impossible.items() if k in wanted})
