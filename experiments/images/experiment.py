"""Image experiments: train, sample and evaluate a score model on real images, on one or many devices and hosts.

Modes (``python -m experiments.images --workdir DIR --config FILE --mode MODE``):

* :func:`train`: the paper's loop (:func:`sde_jax.training.fit`: EMA, warm-up, clipping, several steps per
  dispatch, orbax checkpoints, exact resume, progress bar, ``train_history.csv``), plus, at multiples of
  ``training.eval_every`` the loss of the EMA parameters on ``training.eval_batches`` fixed batches of the eval
  split, and at multiples of ``training.snapshot_every`` a kept checkpoint and a sample grid
  ``DIR/snapshots/grid_<step>.png``. Everything is logged to TensorBoard (``DIR/tensorboard``) and
  ``DIR/metrics.jsonl``.
* :func:`sample`: EMA weights of the latest (or ``eval.checkpoint``) checkpoint, the sampler of
  ``config.sampling`` (PC with its predictor/corrector, or the probability-flow ODE), ``eval.num_samples`` images
  in batches of ``eval.batch_size`` sharded over the devices; writes ``DIR/samples/samples_<step>.npz``
  (``samples``: ``uint8 [n, H, W, C]``; ``labels`` for a class-conditional model) and
  ``DIR/samples/grid_<step>.png``. Finished batches are kept under ``DIR/samples/parts_<step>/``, so an
  interrupted run resumes where it stopped (batch ``b`` uses the key ``fold_in(key, b)``: the result is the same).
* :func:`evaluate`: bits/dim of the eval split (:func:`sde_jax.bits_per_dim`: probability-flow ODE,
  Hutchinson divergence, uniform dequantisation with ``eval.bpd_num_repeats`` repeats, one adaptive solve per
  example on each device), and the sample metrics: for labelled small sets the class histogram and mean
  confidence of a small classifier trained on the same data (:mod:`experiments.images.classifier`) for the samples
  and for held-out real images. Written to ``DIR/eval/metrics_<step>.json`` with every sample count.

Several processes (``jax.distributed``): every process runs the same program on its devices and loads its own
part of the data; checkpoints are written collectively by orbax; only process 0 writes logs, grids, samples and
metrics.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from experiments.images import classifier as clf_lib
from experiments.images.grids import make_grid, write_grid
from experiments.images.logs import RunLog
from sde_jax import _checks as C
from sde_jax import data as D
from sde_jax import likelihood, samplers, training
from sde_jax.parallel import DATA_AXIS, is_main_process, replicated_sharding

__all__ = ["MODES", "SAMPLERS", "train", "sample", "evaluate", "run", "restore_ema", "make_sampler", "pc_settings",
           "Run"]

SAMPLES_DIR, SNAPSHOT_DIR, EVAL_DIR, CLASSIFIER_DIR = "samples", "snapshots", "eval", "classifier"


class Run(NamedTuple):
    """The pieces every mode needs."""

    config: object
    workdir: str
    parts: training.Components
    keys: dict

    @property
    def mesh(self):
        return self.parts.mesh

    @property
    def conditional(self) -> bool:
        return int(self.config.model.get("num_classes", 0) or 0) > 0


_KEY_NAMES = ("init", "train", "eval_loss", "snapshot", "sample", "bpd")


def setup(config, workdir: str) -> Run:
    """Validate the config (data fields, then every training field via :func:`sde_jax.training.build`)."""
    D.check_data_config(config.data)
    parts = training.build(config, workdir if is_main_process() else None)
    keys = dict(zip(_KEY_NAMES, jax.random.split(jax.random.key(int(config.seed)), len(_KEY_NAMES))))
    return Run(config, workdir, parts, keys)


def _main_write_json(path: str, obj) -> None:
    if is_main_process():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
        os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------------------
def pc_settings(run: Run):
    """``(sde, options)``: the SDE and the :func:`sde_jax.pc_sample` keywords of ``config.sampling`` (also what the
    controllable-generation modes pass to ``sj.inpaint`` / ``sj.conditional_sample``)."""
    s, sde = run.config.sampling, run.parts.sde
    num_steps = int(s.num_steps) or None
    if num_steps and training.is_continuous(run.config):
        sde, num_steps = sde.replace(N=num_steps), None   # continuous models: the grid follows N
    return sde, dict(predictor=s.predictor, corrector=s.corrector, snr=s.snr,
                     n_corrector_steps=int(s.n_corrector_steps), num_steps=num_steps, eps=s.eps,
                     denoise=bool(s.denoise), mesh=run.mesh)


def _pc(run: Run, key, score_fn, shape):
    sde, options = pc_settings(run)
    return samplers.pc_sample(key, sde, score_fn, shape, **options)


def _ode(run: Run, key, score_fn, shape):
    s = run.config.sampling
    x, nfe = samplers.ode_sample(key, run.parts.sde, score_fn, shape, solver=s.ode_solver, rtol=s.ode_rtol,
                                 atol=s.ode_atol, num_steps=int(s.num_steps) or None, eps=s.eps,
                                 denoise=bool(s.denoise), mesh=run.mesh)
    return x, nfe


SAMPLERS: dict[str, Callable] = {"pc": _pc, "ode": _ode}
"""``config.sampling.method`` -> ``sampler(run, key, score_fn, shape) -> (x, nfe)``."""


def make_sampler(run: Run, params) -> Callable:
    """``draw(key, n) -> (uint8 [n, H, W, C] on every process, labels [n] or None, nfe)`` with ``params``."""
    sampler = C.lookup(SAMPLERS, run.config.sampling.method, "sampling.method")
    num_classes = int(run.config.model.get("num_classes", 0) or 0)
    centered = bool(run.config.data.centered)

    def draw(key, n):
        labels = None
        if num_classes:
            labels = jax.random.randint(jax.random.fold_in(key, 1), (n,), 0, num_classes)
            score_fn = run.parts.make_score_fn(params, class_labels=labels)
        else:
            score_fn = run.parts.make_score_fn(params)
        x, nfe = sampler(run, key, score_fn, (n,) + run.parts.data_shape)
        x = multihost_utils.process_allgather(x, tiled=True) if jax.process_count() > 1 else np.asarray(x)
        labels = None if labels is None else np.asarray(labels)
        return D.to_uint8(x, centered=centered), labels, int(nfe)

    return draw


# --------------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------------
def _state_template(run: Run):
    abstract = jax.eval_shape(lambda k: training.init_train_state(run.parts.init_params(k), run.parts.tx),
                              run.keys["init"])
    rep = replicated_sharding(run.mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), abstract)


def restore_ema(run: Run):
    """``(ema_params, step)`` from ``DIR/checkpoints`` (``eval.checkpoint``, 0: the latest) or from a converted
    checkpoint directory ``eval.checkpoint_dir``."""
    ev = run.config.eval
    if ev.get("checkpoint_dir"):
        return _load_converted(run, ev.checkpoint_dir)
    directory = os.path.join(run.workdir, training.CHECKPOINT_DIR)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no checkpoints in {directory}; train first (--mode train) or give "
                                f"--config.eval.checkpoint_dir=DIR (a converted checkpoint).")
    ckpt = training.Checkpointer(directory)
    try:
        steps = ckpt.all_steps()
        step = int(ev.get("checkpoint", 0) or 0) or (max(steps) if steps else None)
        if step is None:
            raise FileNotFoundError(f"no checkpoints in {directory}; train first (--mode train).")
        if step not in steps:
            raise ValueError(f"eval.checkpoint={step}: no such checkpoint in {directory}; saved steps: {steps}.")
        state = ckpt.restore(_state_template(run), step)
    finally:
        ckpt.close()
    return state.ema_params, step


def _load_converted(run: Run, directory: str):
    """A checkpoint converted with ``python -m sde_jax.models.convert`` (an orbax TrainState + config.json), its
    EMA weights read by :func:`sde_jax.models.load_variables` for this run's config; the step is the one the
    conversion recorded (0 if none)."""
    from sde_jax import models
    from sde_jax.models.convert import INFO_FILE

    variables = models.load_variables(directory, run.config)
    variables = jax.device_put(variables, replicated_sharding(run.mesh))
    step = 0
    info = os.path.join(directory, INFO_FILE)
    if os.path.exists(info):
        with open(info) as f:
            step = int(json.load(f).get("step", 0) or 0)
    return variables, step


# --------------------------------------------------------------------------------------------------------------
# Train
# --------------------------------------------------------------------------------------------------------------
def _eval_loss_fn(run: Run, eval_data):
    """Mean loss of ``params`` over ``training.eval_batches`` fixed batches of the eval split (fixed keys)."""
    n = int(run.config.training.eval_batches)
    loss_fn, make_score_fn = run.parts.loss_fn, run.parts.make_score_fn
    key = run.keys["eval_loss"]

    @jax.jit
    def eval_loss(params, batches):
        def one(i):
            batch = batches(key, i)
            return loss_fn(make_score_fn(params), jax.random.fold_in(key, i), batch)[0]

        return jnp.mean(jax.lax.map(one, jnp.arange(n)))

    return lambda params: float(eval_loss(params, eval_data))


def _segment_end(step: int, num_steps: int, *everies) -> int:
    ends = [num_steps] + [(step // e + 1) * e for e in everies if e]
    return min(ends)


def _eval_batch_size(run: Run) -> int:
    t = run.config.training
    return int(t.get("eval_batch_size", 0) or 0) or int(t.batch_size)


def train(config, workdir: str, *, progress: bool = True) -> dict:
    """Train (or resume) on ``config.data``'s train split; returns a summary (also in ``DIR/train_summary.json``)."""
    run = setup(config, workdir)
    t = config.training
    d = config.data
    t0 = time.perf_counter()
    train_data = D.device_batches(d, d.train_split, int(t.batch_size), run.mesh, with_labels=run.conditional,
                                  train=True, seed=int(config.seed))
    eval_every = int(t.get("eval_every", 0) or 0)
    eval_loss = None
    if eval_every:
        eval_data = D.device_batches(d, d.eval_split, _eval_batch_size(run), run.mesh, with_labels=run.conditional,
                                     train=False, seed=int(config.seed))
        eval_loss = _eval_loss_fn(run, eval_data)
    data_seconds = time.perf_counter() - t0
    logging.info("Data: %d training examples on %d device(s) (%s layout), loaded in %.1f s.",
                 train_data.num_examples, run.mesh.size, train_data.layout, data_seconds)
    if is_main_process():
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json(indent=2))

    state = training.init_train_state(run.parts.init_params(run.keys["init"]), run.parts.tx)
    ckpt_dir = os.path.join(workdir, training.CHECKPOINT_DIR)
    start = 0
    if os.path.isdir(ckpt_dir):
        probe = training.Checkpointer(ckpt_dir)
        start = probe.latest_step() or 0
        probe.close()
    log = RunLog(workdir, start, enabled=is_main_process())
    snapshot_every = int(t.get("snapshot_every", 0) or 0)
    num_steps = int(t.num_steps)
    step, history, resumed_from, first = start, {}, None, True
    t_train = time.perf_counter()
    try:
        while True:
            end = _segment_end(step, num_steps, eval_every, snapshot_every) if step < num_steps else num_steps
            offset = time.perf_counter() - t_train
            state, history = training.fit(
                state, run.parts.train_step, train_data, run.keys["train"], num_steps=end, workdir=workdir,
                steps_per_call=int(t.steps_per_call), checkpoint_every=int(t.checkpoint_every) or None,
                snapshot_every=snapshot_every or None, log_every=int(t.log_every), mesh=run.mesh, progress=progress)
            if first:   # later segments resume from the checkpoint the previous one wrote
                resumed_from, first = history.resumed_from, False
            step = int(state.step)
            log.history(history, wall_offset=offset)
            if eval_loss is not None and step % eval_every == 0 and step > start:
                log.scalars(step, "eval", {"loss": eval_loss(state.ema_params)})
            if snapshot_every and step % snapshot_every == 0 and step > start:
                _snapshot(run, state.ema_params, step, log)
            if step >= num_steps:
                break
    finally:
        log.close()
    seconds = time.perf_counter() - t_train
    summary = {"num_steps": step, "resumed_from_step": resumed_from, "start_step": start,
               "final_loss": float(history["loss"][-1]) if len(history.get("loss", ())) else None,
               "wall_seconds_training": seconds, "wall_seconds_data": data_seconds,
               "steps_per_second": (step - start) / seconds if seconds > 0 and step > start else None,
               "num_devices": int(run.mesh.size), "num_processes": jax.process_count(),
               "train_examples": train_data.num_examples, "batch_size": int(t.batch_size)}
    _main_write_json(os.path.join(workdir, "train_summary.json"), summary)
    return summary


def _snapshot(run: Run, params, step: int, log: RunLog) -> None:
    n = int(run.config.training.get("snapshot_samples", 64))
    n = max(run.mesh.size, n - n % run.mesh.size)
    images, _, _ = make_sampler(run, params)(run.keys["snapshot"], n)
    if is_main_process():
        path = write_grid(os.path.join(run.workdir, SNAPSHOT_DIR, f"grid_{step}.png"), images)
        log.image(step, "snapshot", make_grid(images))
        logging.info("Snapshot grid: %s", path)


# --------------------------------------------------------------------------------------------------------------
# Sample
# --------------------------------------------------------------------------------------------------------------
def samples_path(workdir: str, step: int) -> str:
    return os.path.join(workdir, SAMPLES_DIR, f"samples_{step}.npz")


def sample(config, workdir: str, *, progress: bool = True, run: Run | None = None) -> dict:
    """Generate ``eval.num_samples`` images (module docstring); returns ``{"path", "step", "num_samples", ...}``."""
    run = run or setup(config, workdir)
    params, step = restore_ema(run)
    ev = config.eval
    n_total = int(ev.num_samples)
    batch = int(ev.batch_size)
    n_dev = run.mesh.size
    if batch % n_dev:
        raise ValueError(f"eval.batch_size {batch} is not divisible by the {n_dev} devices.")
    out = samples_path(workdir, step)
    info = {"path": out, "step": step, "num_samples": n_total, "sampler": config.sampling.to_dict()}
    if os.path.exists(out):
        logging.info("Samples already complete: %s", out)
        return info
    parts_dir = os.path.join(workdir, SAMPLES_DIR, f"parts_{step}")
    num_batches = math.ceil(n_total / batch)
    done = [os.path.exists(os.path.join(parts_dir, f"batch_{b:05d}.npz")) for b in range(num_batches)]
    first = done.index(False) if False in done else num_batches
    if jax.process_count() > 1:   # every process must run the same batches
        first = int(multihost_utils.broadcast_one_to_all(np.int32(first)))
    draw = make_sampler(run, params)
    t0, nfe = time.perf_counter(), None
    for b in tqdm(range(num_batches), initial=first, total=num_batches, disable=not (progress and is_main_process()),
                  desc="sample", dynamic_ncols=True):
        if b < first:
            continue
        images, labels, nfe = draw(jax.random.fold_in(run.keys["sample"], b), batch)
        if is_main_process():
            os.makedirs(parts_dir, exist_ok=True)
            path = os.path.join(parts_dir, f"batch_{b:05d}.npz")
            arrays = {"samples": images} | ({"labels": labels} if labels is not None else {})
            np.savez(path + ".tmp.npz", **arrays)
            os.replace(path + ".tmp.npz", path)
    seconds = time.perf_counter() - t0
    if is_main_process():
        loaded = [np.load(os.path.join(parts_dir, f"batch_{b:05d}.npz")) for b in range(num_batches)]
        arrays = {"samples": np.concatenate([f["samples"] for f in loaded])[:n_total]}
        if run.conditional:
            arrays["labels"] = np.concatenate([f["labels"] for f in loaded])[:n_total].astype(np.int32)
        np.savez(out + ".tmp.npz", **arrays)
        os.replace(out + ".tmp.npz", out)
        write_grid(os.path.join(workdir, SAMPLES_DIR, f"grid_{step}.png"), arrays["samples"][: int(ev.grid_size)])
        for b in range(num_batches):
            os.remove(os.path.join(parts_dir, f"batch_{b:05d}.npz"))
        os.rmdir(parts_dir)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("samples written")
    info.update(nfe_per_batch=nfe, wall_seconds=seconds, batches_this_run=num_batches - first)
    return info


# --------------------------------------------------------------------------------------------------------------
# Eval
# --------------------------------------------------------------------------------------------------------------
def bits_per_dim(run: Run, params, *, progress: bool = True) -> dict:
    """Bits/dim of (the first ``eval.bpd_num_examples`` of) the eval split under the probability-flow ODE."""
    ev, d = run.config.eval, run.config.data
    test = D.load_images(d, d.eval_split, max_examples=int(ev.bpd_num_examples) or None)
    n = len(test)
    n_dev = run.mesh.size
    batch = int(ev.get("bpd_batch_size", 0) or 0) or int(ev.batch_size)
    batch = max(n_dev, min(batch, math.ceil(n / n_dev) * n_dev))
    batch -= batch % n_dev
    labels = test.labels if run.conditional else None
    score_kwargs = {}
    values, nfe = [], 0
    t0 = time.perf_counter()
    for i in tqdm(range(0, n, batch), disable=not (progress and is_main_process()), desc="bits/dim"):
        idx = np.arange(i, i + batch) % n           # the last batch wraps around; the extra values are dropped
        levels = D.to_device(test.images[idx], run.mesh, P(DATA_AXIS))
        if labels is not None:
            score_kwargs = {"class_labels": D.to_device(labels[idx], run.mesh, P(DATA_AXIS))}
        bpd, k = likelihood.bits_per_dim(
            jax.random.fold_in(run.keys["bpd"], i), run.parts.sde, run.parts.make_score_fn(params, **score_kwargs),
            levels, num_bits=8, data_range=D.data_range(bool(d.centered)), dequantization=ev.bpd_dequantization,
            num_repeats=int(ev.bpd_num_repeats) if ev.bpd_dequantization == "uniform" else 1,
            divergence="hutchinson", num_probes=int(ev.bpd_num_probes), solver=ev.bpd_solver, rtol=ev.bpd_rtol,
            atol=ev.bpd_atol, eps=ev.bpd_eps, mesh=run.mesh)
        got = multihost_utils.process_allgather(bpd, tiled=True) if jax.process_count() > 1 else np.asarray(bpd)
        values.append(np.asarray(got, np.float64)[: min(batch, n - i)])
        nfe += int(k)
    v = np.concatenate(values)
    ok = np.isfinite(v)
    return {"bits_per_dim": float(v[ok].mean()) if ok.any() else float("nan"),
            "bits_per_dim_stderr": float(v[ok].std(ddof=1) / math.sqrt(ok.sum())) if ok.sum() > 1 else 0.0,
            "num_examples": int(n), "num_failed_solves": int((~ok).sum()), "split": d.eval_split,
            "num_repeats": int(ev.bpd_num_repeats), "dequantization": ev.bpd_dequantization,
            "solver": ev.bpd_solver, "rtol": float(ev.bpd_rtol), "atol": float(ev.bpd_atol), "eps": float(ev.bpd_eps),
            "divergence": f"hutchinson ({int(ev.bpd_num_probes)} Rademacher probe(s) per example)",
            "nfe_total": nfe, "wall_seconds": time.perf_counter() - t0,
            "definition": "mean over examples of -log2 p(x)/D + 8 - log2(hi - lo), x uniformly dequantised 8-bit "
                          "data, log p by the probability-flow ODE from eps to T (sde_jax.bits_per_dim); with "
                          "uniform dequantisation an upper bound on the discrete NLL"}


def classifier_metrics(run: Run, samples: np.ndarray) -> dict:
    """Class histogram and mean confidence of the small data-set classifier, for samples and held-out real images."""
    ev, d = run.config.eval, run.config.data
    clf = clf_lib.load_or_train(run.config, os.path.join(run.workdir, CLASSIFIER_DIR),
                                steps=int(ev.classifier_steps), write=is_main_process())
    test = D.load_images(d, d.eval_split)
    real = clf_lib.summarize(clf_lib.predict(clf.model, clf.params, test.images), test.labels)
    fake = clf_lib.summarize(clf_lib.predict(clf.model, clf.params, samples))
    return {"samples": fake, "real_heldout": real, "classifier_test_accuracy": clf.test_accuracy,
            "confidence_ratio": fake["mean_confidence"] / real["mean_confidence"],
            "classifier": "SmallCNN trained on this data set's train split "
                          f"({int(ev.classifier_steps)} steps); not an Inception network: not comparable to IS/FID"}


def feature_extractor(run: Run):
    """The feature network of the sample metrics: the FID Inception when ``eval.inception_weights`` (or
    ``$SDE_JAX_INCEPTION_WEIGHTS``) names its weights file, else, for the CPU configs (``eval.classifier_steps >
    0``), the small classifier of the run's own data set (results named ``fd_<data>_cnn``, ``kd_...``: not FID)."""
    from sde_jax import metrics

    ev = run.config.eval
    path = ev.get("inception_weights", "") or os.environ.get(metrics.INCEPTION_ENV_VAR, "")
    if path:
        return metrics.load_inception(path)
    if int(ev.classifier_steps) > 0:
        clf = clf_lib.load_or_train(run.config, os.path.join(run.workdir, CLASSIFIER_DIR),
                                    steps=int(ev.classifier_steps), write=is_main_process())
        return metrics.FeatureExtractor.from_flax(f"{run.config.data.name or run.config.data.source}_cnn",
                                                   clf.model, clf.params, features=1, logits=0)
    return None


def sample_metrics(run: Run, samples: np.ndarray, *, progress: bool = True) -> dict | None:
    """FID/KID/IS/precision-recall of the samples (:func:`sde_jax.metrics.evaluate_samples`) against the train
    split (statistics cached in ``DIR/eval/reference_<network>.npz``, or ``eval.reference_stats``, a statistics
    file), in the space of :func:`feature_extractor`; ``None`` when there is no feature network."""
    from sde_jax import metrics

    extractor = feature_extractor(run)
    if extractor is None:
        logging.warning("No sample metrics: set eval.inception_weights (or $%s) to the FID Inception weights file.",
                        metrics.INCEPTION_ENV_VAR)
        return None
    ev, d = run.config.eval, run.config.data
    reference = ev.get("reference_stats", "")
    if not reference:
        cache = os.path.join(run.workdir, EVAL_DIR, f"reference_{extractor.name}.npz") if is_main_process() else None
        max_ref = int(ev.get("reference_num_examples", 0) or 0) or None
        reference = metrics.reference_stats(cache, lambda: D.load_images(d, d.train_split, max_examples=max_ref)
                                            .images, extractor, batch_size=int(ev.batch_size), progress=progress)
    return metrics.evaluate_samples(samples, reference, extractor, batch_size=int(ev.batch_size),
                                    progress=progress and is_main_process(),
                                    kid_subset_size=min(1000, len(samples)))


def evaluate(config, workdir: str, *, progress: bool = True) -> dict:
    """Bits/dim and sample metrics of a checkpoint, written to ``DIR/eval/metrics_<step>.json``."""
    run = setup(config, workdir)
    ev = config.eval
    params, step = restore_ema(run)
    metrics = {"step": step, "config": os.path.basename(workdir.rstrip("/")), "num_devices": int(run.mesh.size),
               "num_processes": jax.process_count()}
    t0 = time.perf_counter()
    if ev.enable_bpd:
        metrics["bpd"] = bits_per_dim(run, params, progress=progress)
    need_samples = int(ev.classifier_steps) > 0 or bool(ev.get("sample_metrics", False))
    if need_samples:
        info = sample(config, workdir, progress=progress, run=run)
        samples = np.load(info["path"])["samples"]
        metrics["samples"] = {"path": info["path"], "num_samples": int(len(samples)),
                              "sampler": config.sampling.to_dict()}
        if int(ev.classifier_steps) > 0:
            metrics["classifier"] = classifier_metrics(run, samples)
        extra = sample_metrics(run, samples, progress=progress) if ev.get("sample_metrics", False) else None
        if extra is not None:
            metrics["sample_metrics"] = extra
    metrics["wall_seconds"] = time.perf_counter() - t0
    _main_write_json(os.path.join(workdir, EVAL_DIR, f"metrics_{step}.json"), metrics)
    return metrics


def _controllable(name: str) -> Callable:
    def mode(config, workdir: str, *, progress: bool = True):
        from experiments.images import controllable   # imports this module

        return getattr(controllable, name)(config, workdir, progress=progress)

    mode.__name__ = mode.__qualname__ = name
    mode.__doc__ = f"The ``{name}`` mode of :mod:`experiments.images.controllable`."
    return mode


MODES = {"train": train, "sample": sample, "eval": evaluate, "inpaint": _controllable("inpaint"),
         "train_classifier": _controllable("train_classifier"), "conditional": _controllable("conditional")}
"""``--mode`` -> function ``(config, workdir, progress=...)``; ``inpaint``, ``train_classifier`` and
``conditional``: :mod:`experiments.images.controllable`."""


def run(config, workdir: str, mode: str, *, progress: bool = True):
    return C.lookup(MODES, mode, "mode")(config, workdir, progress=progress)
