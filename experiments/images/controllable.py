"""Controllable generation with a trained image score model (Song et al. 2021, Sec. 5 and App. I): inpainting of
held-out images and class-conditional samples by classifier guidance, with grids and numbers that say how well.

Modes (``python -m experiments.images --workdir DIR --config FILE --mode MODE``), all on the EMA weights of the
run's latest checkpoint (or ``eval.checkpoint`` / ``eval.checkpoint_dir``, as ``--mode sample``) and the PC sampler
of ``config.sampling`` (:func:`experiments.images.experiment.pc_settings`):

* :func:`inpaint`: the eval split's images with one half hidden (``inpaint.mask``: :data:`MASKS`) completed by
  :func:`sde_jax.inpaint` (``inpaint.method``: ``replacement``, the paper's PC inpainter, or ``smc``, the
  asymptotically exact particle filter with ``inpaint.num_particles``). The output is always the last step's
  noise-free mean (``denoise=True`` whatever ``sampling.denoise`` says): the observed half equals the data exactly
  and the hidden half carries no last-step noise. Writes ``DIR/controllable/inpaint_<mask>_<method>_<step>.npz``
  (``originals``, ``masks`` (1: known), ``inputs`` (hidden half 0), ``inpaintings``: ``uint8 [n, H, W, C]``;
  ``labels``), a grid ``.png`` (rows of ``inpaint.grid_size`` images: masked input with the hole in mid-grey /
  inpainting / original) and a ``.json``: the mean squared error on the hidden half (pixels in ``[0, 1]``) and, on
  the CPU configs (``eval.classifier_steps > 0``), the accuracy of the small data-set classifier
  (:mod:`experiments.images.classifier`) against the true labels, each next to the same figures for the originals
  and for the masked inputs with the hole filled by zeros and by the training split's mean image (baselines).
* :func:`train_classifier`: the noise-conditional classifier of classifier guidance (``guidance.classifier``:
  its ``model`` (a ``wideresnet``; the paper's WRN-28-10 by default), ``training`` and ``optim`` fields over the
  run's config, ``training.loss = 'classifier'``: cross-entropy on data noised by the run's SDE), trained by
  :func:`experiments.images.experiment.train` on the labelled train split into ``guidance.classifier_dir``
  (default ``DIR/noise_classifier``: checkpoints, exact resume, logs), then its accuracy on the eval split at
  several noise levels (``classifier_eval.json`` there).
* :func:`conditional`: ``guidance.samples_per_class`` samples of every class by :func:`sde_jax.conditional_sample`
  with ``log p_t(y | x)`` of that classifier and ``guidance.scale``; writes
  ``DIR/controllable/conditional_scale<scale>_<step>.npz`` (``samples`` ``uint8``, ``labels``: the requested
  classes), a grid (one row per class) and a ``.json`` with the classifier-confidence metric: the small data-set
  classifier's fraction of samples classified as the requested class and its mean probability of that class, per
  class and overall (chance: ``1 / num_classes``).

Every bad option fails before anything is loaded or compiled; a missing score checkpoint or a missing
noise-conditional classifier fails with the command that makes it.
"""
from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from experiments.images import classifier as clf_lib
from experiments.images import experiment
from experiments.images.grids import write_grid
from sde_jax import _checks as C
from sde_jax import data as D
from sde_jax import models, samplers, training
from sde_jax.parallel import DATA_AXIS, is_main_process

__all__ = ["MASKS", "OUTPUT_DIR", "CLASSIFIER_DIR", "half_mask", "mode_key", "inpaint_images", "inpaint",
           "classifier_config", "classifier_dir", "train_classifier", "conditional"]

OUTPUT_DIR, CLASSIFIER_DIR = "controllable", "noise_classifier"
HOLE_GREY = 128
"""Grey level of the hidden half in the grids' first row (the npz ``inputs`` have 0 there)."""

MASKS = {
    "right_half": lambda h, w: (slice(None), slice(w // 2, None)),
    "left_half": lambda h, w: (slice(None), slice(None, w - w // 2)),
    "bottom_half": lambda h, w: (slice(h // 2, None), slice(None)),
    "top_half": lambda h, w: (slice(None, h - h // 2), slice(None)),
}
"""``inpaint.mask`` -> ``(h, w) -> (rows, columns)`` of the hidden half (``floor(w / 2)`` columns / ``floor(h / 2)``
rows)."""

_MODE_SEEDS = {"inpaint": 1401, "conditional": 1402}


def half_mask(name: str, shape) -> np.ndarray:
    """``float32 [H, W, C]`` mask, 1 where the pixel is known and 0 on the hidden half ``name`` (:data:`MASKS`)."""
    h, w, c = (int(s) for s in shape)
    mask = np.ones((h, w, c), np.float32)
    mask[C.lookup(MASKS, name, "inpaint.mask")(h, w)] = 0.0
    return mask


def mode_key(config, mode: str):
    """The PRNG key of a mode: ``fold_in(key(config.seed), {'inpaint': 1401, 'conditional': 1402}[mode])``; batch
    ``b`` of the mode uses ``fold_in(mode_key, b)``."""
    return jax.random.fold_in(jax.random.key(int(config.seed)), _MODE_SEEDS[mode])


def _out_path(workdir: str, name: str) -> str:
    return os.path.join(workdir, OUTPUT_DIR, name)


def _check_pc(config) -> None:
    if config.sampling.method != "pc":
        raise ValueError(f"sampling.method={config.sampling.method!r}: the controllable-generation modes run the PC "
                         f"sampler; use sampling.method='pc' (sampling.predictor='probability_flow' is its ODE "
                         f"counterpart).")


def _batches(n: int, batch: int, n_dev: int):
    """Index arrays covering ``range(n)`` in batches of a multiple of ``n_dev`` (the last wraps around; the rows
    past ``n`` are dropped by the caller)."""
    batch = max(n_dev, min(batch, math.ceil(n / n_dev) * n_dev))
    batch -= batch % n_dev
    return [np.arange(i, i + batch) % n for i in range(0, n, batch)]


def _gather(x) -> np.ndarray:
    return multihost_utils.process_allgather(x, tiled=True) if jax.process_count() > 1 else np.asarray(x)


def _restore_score_model(config, workdir: str, run=None):
    run = run or experiment.setup(config, workdir)
    if int(config.model.get("num_classes", 0) or 0) > 0:
        raise ValueError("model.num_classes > 0: this score network is class-conditional; the controllable modes "
                         "need an unconditional one (--mode sample draws labelled samples from it).")
    params, step = experiment.restore_ema(run)
    return run, params, step


# --------------------------------------------------------------------------------------------------------------
# Inpainting
# --------------------------------------------------------------------------------------------------------------
def _inpaint_options(config):
    ic = config.inpaint
    _check_pc(config)
    C.lookup(MASKS, ic.mask, "inpaint.mask")
    C.lookup(samplers.METHODS, ic.method, "inpaint.method")
    C.check_int("inpaint.num_particles", ic.num_particles, 1)
    C.check_int("inpaint.num_images", ic.num_images, 0)
    C.check_int("inpaint.grid_size", ic.grid_size, 1)


def inpaint_images(run, params, key, images, mask, *, denoise: bool = True, progress: bool = False):
    """Complete ``uint8 [n, H, W, C]`` images where ``mask`` (``[H, W, C]``, 1: known) is 0.

    :func:`sde_jax.inpaint` with the run's score model, ``config.inpaint.method`` and the PC settings of
    ``config.sampling``; batches of ``eval.batch_size`` (``// inpaint.num_particles`` for ``smc``) sharded over the
    devices, batch ``b`` with ``fold_in(key, b)``.

    Returns:
      ``(x, nfe)``: model-space ``float32 [n, H, W, C]`` completions on the host and the score evaluations per
      batch.
    """
    config = run.config
    ic = config.inpaint
    sde, options = experiment.pc_settings(run)
    options["denoise"] = bool(denoise)
    batch = int(config.eval.batch_size)
    if ic.method == "smc":
        options = {k: options[k] for k in ("predictor", "num_steps", "eps", "denoise", "mesh")}
        options["num_particles"] = int(ic.num_particles)
        batch = max(1, batch // int(ic.num_particles))
    x0 = np.asarray(D.to_model_space(jax.random.key(0), jnp.asarray(images), centered=bool(config.data.centered)))
    score_fn = run.parts.make_score_fn(params)
    out, nfe = [], 0
    batches = _batches(len(images), batch, run.mesh.size)
    for b, idx in enumerate(tqdm(batches, disable=not (progress and is_main_process()), desc="inpaint")):
        data = D.to_device(x0[idx], run.mesh, P(DATA_AXIS))
        x, nfe = samplers.inpaint(jax.random.fold_in(key, b), sde, score_fn, data, jnp.asarray(mask)[None],
                                  method=ic.method, **options)
        out.append(_gather(x))
    return np.concatenate(out)[: len(images)], int(nfe)


def _hidden_mse(a, b, hidden) -> dict:
    """Mean over images of the mean squared difference on the hidden pixels, pixels in ``[0, 1]``."""
    d = (a.astype(np.float64) - b.astype(np.float64)) / 255.0
    per = (d**2 * hidden).sum(axis=(1, 2, 3)) / hidden.sum()
    return {"mean": float(per.mean()), "stderr": float(per.std(ddof=1) / math.sqrt(len(per))) if len(per) > 1 else 0.}


def _label_figures(probs, labels) -> dict:
    """Accuracy against ``labels`` and the mean probability of the true class."""
    probs = np.asarray(probs, np.float64)
    p_true = probs[np.arange(len(labels)), labels]
    return {"accuracy": float(np.mean(np.argmax(probs, -1) == labels)), "mean_prob_true_class": float(p_true.mean()),
            "num_images": int(len(labels))}


def inpaint(config, workdir: str, *, progress: bool = True, run=None) -> dict:
    """``--mode inpaint`` (module docstring); returns the metrics (also written as JSON). ``run``: an
    :func:`experiments.images.experiment.setup` of the same config and workdir to reuse (and its compiled
    sampler)."""
    _inpaint_options(config)
    run, params, step = _restore_score_model(config, workdir, run)
    d, ic = config.data, config.inpaint
    test = D.load_images(d, d.eval_split, max_examples=int(ic.num_images) or None)
    mask = half_mask(ic.mask, test.images.shape[1:])
    t0 = time.perf_counter()
    x, nfe = inpaint_images(run, params, mode_key(config, "inpaint"), test.images, mask, progress=progress)
    seconds = time.perf_counter() - t0
    stem = f"inpaint_{ic.mask}_{ic.method}_{step}"
    info = {"step": step, "mask": ic.mask, "method": ic.method, "num_images": int(len(test)), "split": d.eval_split,
            "nfe_per_batch": nfe, "wall_seconds_sampling": seconds, "sampler": config.sampling.to_dict() | {
                "denoise": True}, "num_particles": int(ic.num_particles) if ic.method == "smc" else None}
    if not is_main_process():
        return info
    originals = test.images
    inpaintings = D.to_uint8(x, centered=bool(d.centered))
    known = np.broadcast_to(mask, originals.shape).astype(np.uint8)
    hidden = 1.0 - mask
    inputs = originals * known
    train_mean = np.round(D.load_images(d, d.train_split).images.astype(np.float64).mean(0)).astype(np.uint8)
    mean_fill = np.where(known == 1, originals, train_mean[None]).astype(np.uint8)
    fills = {"inpainting": inpaintings, "original": originals, "zero_fill": inputs, "mean_fill": mean_fill}
    info["observed_pixels_max_abs_diff_uint8"] = int(np.abs(inpaintings.astype(int) - originals.astype(int))[
        known == 1].max())
    info["hidden_mse"] = {k: _hidden_mse(v, originals, hidden) for k, v in fills.items() if k != "original"}
    info["hidden_mse_definition"] = "mean over images of the mean squared error on the hidden half, pixels in [0, 1]"
    if int(config.eval.classifier_steps) > 0 and test.labels is not None:
        clf = clf_lib.load_or_train(config, os.path.join(workdir, experiment.CLASSIFIER_DIR),
                                    steps=int(config.eval.classifier_steps), write=True)
        info["classifier"] = {k: _label_figures(clf_lib.predict(clf.model, clf.params, v), test.labels)
                              for k, v in fills.items()}
        info["classifier"]["chance"] = 1.0 / int(test.num_classes)
        info["classifier"]["about"] = (
            "the small data-set CNN of --mode eval (experiments.images.classifier, trained on clean train-split "
            f"images, {int(config.eval.classifier_steps)} steps, test accuracy {clf.test_accuracy:.4f}): accuracy "
            "against the true labels of the eval split")
    os.makedirs(_out_path(workdir, ""), exist_ok=True)
    arrays = {"originals": originals, "masks": known, "inputs": inputs, "inpaintings": inpaintings}
    if test.labels is not None:
        arrays["labels"] = test.labels.astype(np.int32)
    np.savez(_out_path(workdir, stem + ".npz"), **arrays)
    g = min(int(ic.grid_size), len(originals))
    shown = np.where(known[:g] == 1, originals[:g], np.uint8(HOLE_GREY))
    info["grid"] = write_grid(_out_path(workdir, stem + ".png"), np.concatenate(
        [shown, inpaintings[:g], originals[:g]]), ncol=g)
    info["path"] = _out_path(workdir, stem + ".npz")
    experiment._main_write_json(_out_path(workdir, stem + ".json"), info)
    return info


# --------------------------------------------------------------------------------------------------------------
# Classifier guidance
# --------------------------------------------------------------------------------------------------------------
def classifier_config(config) -> ml_collections.ConfigDict:
    """The run config of the noise-conditional classifier: ``config`` (same data, SDE, seed, devices) with
    ``model`` = ``guidance.classifier.model``, ``training``/``optim`` updated by ``guidance.classifier.training``/
    ``.optim``, ``training.loss = 'classifier'`` and no snapshots (a classifier draws no samples)."""
    g = config.guidance.classifier
    c = ml_collections.ConfigDict(config.to_dict())
    c.model = ml_collections.ConfigDict(g.model.to_dict())
    c.training.update(g.training.to_dict())
    c.training.loss, c.training.snapshot_every = "classifier", 0
    c.optim.update(g.optim.to_dict())
    return c


def classifier_dir(config, workdir: str) -> str:
    """``guidance.classifier_dir`` or ``DIR/noise_classifier``."""
    return config.guidance.get("classifier_dir", "") or os.path.join(workdir, CLASSIFIER_DIR)


NOISE_LEVELS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
"""Times ``t`` (``0``: ``training.eps``) at which :func:`train_classifier` reports the eval-split accuracy."""


def _noisy_accuracy(run, params) -> dict:
    """Accuracy of the classifier on the eval split noised by the SDE's kernel at :data:`NOISE_LEVELS`."""
    d = run.config.data
    test = D.load_images(d, d.eval_split)
    x0 = D.to_model_space(jax.random.key(0), jnp.asarray(test.images), centered=bool(d.centered))
    logit_fn = run.parts.make_score_fn(params)
    sde = run.parts.sde
    eps = float(run.config.training.eps)

    @jax.jit
    def accuracy(key, t):
        t = jnp.full((x0.shape[0],), t, x0.dtype)
        mean, std = sde.marginal_prob(x0, t)
        xt = mean + std[:, None, None, None] * jax.random.normal(key, x0.shape, x0.dtype)
        return jnp.mean(jnp.argmax(logit_fn(xt, t), -1) == jnp.asarray(test.labels))

    return {f"t={max(t, eps):g}": float(accuracy(jax.random.fold_in(jax.random.key(0), i), max(t, eps)))
            for i, t in enumerate(NOISE_LEVELS)}


def train_classifier(config, workdir: str, *, progress: bool = True) -> dict:
    """``--mode train_classifier`` (module docstring): the training summary and the eval-split accuracy by noise
    level."""
    cc = classifier_config(config)
    if int(cc.model.get("num_classes", 0) or 0) < 2:
        raise ValueError(f"guidance.classifier.model.num_classes must be >= 2; got {cc.model.get('num_classes')!r}.")
    directory = classifier_dir(config, workdir)
    summary = experiment.train(cc, directory, progress=progress)
    run = experiment.setup(cc, directory)
    params, step = experiment.restore_ema(run)
    summary = dict(summary, step=step, directory=directory, eval_accuracy_by_time=_noisy_accuracy(run, params),
                   model=cc.model.to_dict())
    experiment._main_write_json(os.path.join(directory, "classifier_eval.json"), summary)
    return summary


def _has_checkpoint(directory: str) -> bool:
    ckpt = os.path.join(directory, training.CHECKPOINT_DIR)
    return os.path.isdir(ckpt) and any(name.isdigit() for name in os.listdir(ckpt))


def _guidance_options(config):
    _check_pc(config)
    g = config.guidance
    scale = g.scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0.0 < scale < float("inf"):
        raise ValueError(f"guidance.scale must be a number > 0 (1: exact conditioning); got {scale!r}.")
    C.check_int("guidance.samples_per_class", g.samples_per_class, 1)


def conditional(config, workdir: str, *, progress: bool = True) -> dict:
    """``--mode conditional`` (module docstring); returns the metrics (also written as JSON)."""
    _guidance_options(config)
    cdir = classifier_dir(config, workdir)
    if not _has_checkpoint(cdir):
        raise FileNotFoundError(f"no noise-conditional classifier in {cdir}: train one with --mode train_classifier "
                                f"(same --workdir and --config), or set --config.guidance.classifier_dir=DIR.")
    run, params, step = _restore_score_model(config, workdir)
    crun = experiment.setup(classifier_config(config), cdir)
    cparams, cstep = experiment.restore_ema(crun)
    g = config.guidance
    k, per = int(crun.config.model.num_classes), int(g.samples_per_class)
    labels = np.repeat(np.arange(k, dtype=np.int32), per)
    sde, options = experiment.pc_settings(run)
    score_fn = run.parts.make_score_fn(params)
    log_prob_y = models.classifier_log_prob(crun.parts.make_score_fn(cparams))
    key = mode_key(config, "conditional")
    t0, parts, nfe = time.perf_counter(), [], 0
    batches = _batches(len(labels), int(config.eval.batch_size), run.mesh.size)
    for b, idx in enumerate(tqdm(batches, disable=not (progress and is_main_process()), desc="conditional")):
        y = D.to_device(labels[idx], run.mesh, P(DATA_AXIS))
        x, nfe = samplers.conditional_sample(jax.random.fold_in(key, b), sde, score_fn, log_prob_y, y,
                                             (len(idx),) + run.parts.data_shape, scale=float(g.scale), **options)
        parts.append(_gather(x))
    seconds = time.perf_counter() - t0
    x = np.concatenate(parts)[: len(labels)]
    stem = f"conditional_scale{float(g.scale):g}_{step}"
    info = {"step": step, "classifier_step": cstep, "classifier_dir": cdir, "scale": float(g.scale),
            "samples_per_class": per, "num_classes": k, "nfe_per_batch": int(nfe), "wall_seconds_sampling": seconds,
            "sampler": config.sampling.to_dict()}
    if not is_main_process():
        return info
    samples = D.to_uint8(x, centered=bool(config.data.centered))
    os.makedirs(_out_path(workdir, ""), exist_ok=True)
    np.savez(_out_path(workdir, stem + ".npz"), samples=samples, labels=labels)
    info["grid"] = write_grid(_out_path(workdir, stem + ".png"), samples, ncol=per)
    info["path"] = _out_path(workdir, stem + ".npz")
    if int(config.eval.classifier_steps) > 0:
        clf = clf_lib.load_or_train(config, os.path.join(workdir, experiment.CLASSIFIER_DIR),
                                    steps=int(config.eval.classifier_steps), write=True)
        info["confidence"] = confidence_metric(clf_lib.predict(clf.model, clf.params, samples), labels)
        info["confidence"]["about"] = (
            "the small data-set CNN of --mode eval (experiments.images.classifier; trained on clean train-split "
            f"images, {int(config.eval.classifier_steps)} steps, test accuracy {clf.test_accuracy:.4f}), not the "
            "guidance classifier: fraction of samples classified as the requested class and its mean probability")
    experiment._main_write_json(_out_path(workdir, stem + ".json"), info)
    return info


def confidence_metric(probs, requested) -> dict:
    """The classifier-confidence metric of class-conditional samples: per requested class ``k`` (and overall) the
    fraction classified as ``k`` and the mean probability ``E[p(k | x)]`` (with its standard error); chance is
    ``1 / K``."""
    probs = np.asarray(probs, np.float64)
    requested = np.asarray(requested)
    hit = np.argmax(probs, -1) == requested
    p = probs[np.arange(len(requested)), requested]

    def stderr(v):
        return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0

    classes = np.unique(requested)
    return {"fraction_as_requested": float(hit.mean()), "mean_prob_requested": float(p.mean()),
            "mean_prob_requested_stderr": stderr(p), "chance": 1.0 / probs.shape[1], "num_samples": int(len(p)),
            "per_class": {int(c): {"fraction_as_requested": float(hit[requested == c].mean()),
                                   "mean_prob_requested": float(p[requested == c].mean())} for c in classes},
            "predicted_histogram": np.bincount(np.argmax(probs, -1), minlength=probs.shape[1]).tolist()}
