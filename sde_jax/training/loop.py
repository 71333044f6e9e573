"""The training loop: dispatches of ``lax.scan``-ned steps, progress, history, checkpoints and exact resume.

Resume is exact because nothing random is carried on the host: step ``k``'s batch and noise are functions
of ``(key, k)`` (see :mod:`sde_jax.training.step`), the restored state holds ``k``, and dispatches are cut at
the same step boundaries (multiples of ``steps_per_call`` and of ``checkpoint_every``) in an interrupted run
and in an uninterrupted one. Every checkpoint is taken at such a boundary, including the one a SIGTERM/SIGINT
asks for, and stores the metric values of the unfinished logging window, so the history resumes exactly too.

What survives what (each is a test in ``tests/test_reliability.py``):

* a kill at any moment: the latest complete checkpoint (orbax writes to a temporary folder and renames);
* SIGTERM / SIGINT: a checkpoint at the next dispatch boundary, then :class:`~sde_jax.training.Preempted`;
* a corrupt, partial or empty latest checkpoint: skipped with a warning naming it, the next older one is used
  (:class:`~sde_jax.training.Checkpointer`);
* non-finite parameters, EMA or optimizer state: never saved (:class:`~sde_jax.training.NonFiniteStateError`);
  a non-finite loss stops training (:class:`NonFiniteLossError`);
* a full disk or a failed write: :class:`~sde_jax.training.CheckpointWriteError` at the next dispatch
  boundary, one line with the path and the bytes needed and free; the previous checkpoint is intact.
"""
from __future__ import annotations

import csv
import functools
import os
import time
from typing import Callable

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh
from tqdm.auto import tqdm

from sde_jax.parallel import replicated_sharding
from sde_jax.training.checkpoint import Checkpointer, NonFiniteStateError, nonfinite_summary
from sde_jax.training.preemption import Preempted, PreemptionGuard
from sde_jax.training.step import make_train_fn

__all__ = ["fit", "History", "NonFiniteLossError", "read_history", "HISTORY_FILE", "CHECKPOINT_DIR"]

HISTORY_FILE = "train_history.csv"
CHECKPOINT_DIR = "checkpoints"


class History(dict):
    """``fit``'s history: ``"step"`` and each metric name -> arrays of window means, plus ``"wall_time"``.

    Attributes:
      resumed_from: the checkpoint step this run resumed from (``None``: it started from the given state).
    """

    resumed_from: int | None = None


class NonFiniteLossError(FloatingPointError):
    """Training stopped at a non-finite loss; the checkpoints on disk are from earlier, finite steps."""


def read_history(path: str, max_step: int | None = None) -> dict[str, np.ndarray]:
    """Read a history CSV (``step`` plus metric columns) into arrays, keeping rows with ``step <= max_step``."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if max_step is None or int(r["step"]) <= max_step]
    if not rows:
        return {}
    return {k: np.asarray([float(r[k]) for r in rows]) for k in rows[0]}


def _write_history(path, hist):
    """Write the CSV to a temporary file and rename it over ``path``: a full disk or a kill mid-write never
    leaves a truncated history."""
    keys = list(hist)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(keys)
            for i in range(len(hist["step"]) if hist else 0):
                w.writerow([int(hist[k][i]) if k == "step" else repr(float(hist[k][i])) for k in keys])
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def fit(state, train_step: Callable, batch_fn: Callable, key, *, num_steps: int, workdir: str | None = None,
        steps_per_call: int = 100, checkpoint_every: int | None = None, snapshot_every: int | None = None,
        log_every: int = 100, mesh: Mesh | None = None, progress: bool = True, handle_signals: bool = True,
        keep_latest: int = 2):
    """Train until ``state.step == num_steps``, resuming from ``workdir`` when it holds a checkpoint.

    Args:
      state: the initial :class:`~sde_jax.training.TrainState` (also the template for restoring).
      train_step: pure ``(state, batch, key) -> (state, metrics)`` (:func:`make_train_step`).
      batch_fn: ``batch_fn(data_key, step) -> batch`` on the device (:func:`sampler_batch_fn`, ...).
      key: base key; split once into the data key and the loss key.
      num_steps: total number of optimizer steps.
      workdir: where ``checkpoints/`` and ``train_history.csv`` live (``None``: no checkpoints, no resume).
      steps_per_call: steps per jitted dispatch (``lax.scan`` length); also the longest a signal waits.
        On the CPU, use 1 for networks with convolutions: XLA:CPU runs their weight gradients ~10x slower
        inside a loop body (jax-ml/jax#12868); on GPU/TPU a few steps per dispatch save dispatch time.
      checkpoint_every: save the latest checkpoint every this many steps (default: only at the end).
      snapshot_every: also keep the checkpoints at multiples of this (``None``: none).
      log_every: log and record the mean metrics over windows of this many steps.
      mesh: data-parallel mesh (state replicated, batch sharded); ``None`` for the default device.
      progress: show a tqdm progress bar.
      handle_signals: with a ``workdir``, turn SIGTERM/SIGINT into a checkpoint at the next dispatch boundary
        and :class:`~sde_jax.training.Preempted` (:mod:`sde_jax.training.preemption`; main thread only).
      keep_latest: how many of the most recent checkpoints to keep (default 2: if the latest is found
        corrupt on resume, the one before it is used).

    Returns:
      ``(state, history)``; ``history`` (a :class:`History`) maps ``"step"`` and each metric name to arrays
      (window means), including the windows of earlier runs in the same workdir, plus ``"wall_time"`` per
      window; ``history.resumed_from`` is the step resumed from.

    Raises:
      NonFiniteLossError: at the first non-finite loss, naming the step; nothing after the last finite
        checkpoint is saved, so that checkpoint stays the latest.
      NonFiniteStateError: parameters, EMA or optimizer state turned non-finite (found when saving, or at
        the end without a ``workdir``); not saved.
      Preempted: after SIGTERM/SIGINT, once the checkpoint at the next boundary is on disk.
      CheckpointWriteError: a checkpoint could not be written (disk full, I/O error), at the next boundary.
      CheckpointError, CheckpointMismatchError: no valid checkpoint to resume from / one that does not fit.
    """
    for name, v in (("num_steps", num_steps), ("steps_per_call", steps_per_call), ("log_every", log_every)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {v!r}.")
    checkpoint_every = num_steps if checkpoint_every is None else checkpoint_every
    data_key, loss_key = jax.random.split(key)
    ckpt = history_path = resumed_from = None
    hist: dict[str, list] = {}
    window: dict[str, list] = {}
    guard = PreemptionGuard(enabled=handle_signals and workdir is not None)
    bar = None
    with guard:
        try:
            if workdir is not None:
                os.makedirs(workdir, exist_ok=True)
                ckpt = Checkpointer(os.path.join(workdir, CHECKPOINT_DIR), max_to_keep=keep_latest,
                                    keep_period=snapshot_every)
                history_path = os.path.join(workdir, HISTORY_FILE)
                restored = ckpt.restore(state)
                if restored is not None:
                    state = restored
                    resumed_from = int(state.step)
                    window = {k: list(v) for k, v in ckpt.restored_metadata.get("history_window", {}).items()}
                    logging.info("Resumed from %s at step %d.", ckpt.directory, int(state.step))
                hist = {k: list(v) for k, v in read_history(history_path, int(state.step)).items()}
            if mesh is not None:
                state = jax.device_put(state, replicated_sharding(mesh))

            step = int(state.step)
            bar = tqdm(total=num_steps, initial=step, disable=not progress, desc="train", dynamic_ncols=True)
            start_time = time.perf_counter()
            while step < num_steps:
                boundary = min(num_steps, (step // checkpoint_every + 1) * checkpoint_every)
                n = min(steps_per_call - step % steps_per_call, boundary - step)
                state, metrics = _train_fn(train_step, batch_fn, n, mesh)(state, data_key, loss_key)
                metrics = jax.device_get(metrics)
                loss = np.asarray(metrics["loss"])
                bad = np.flatnonzero(~np.isfinite(loss))
                if bad.size:
                    last = ckpt.latest_step() if ckpt is not None else None
                    where = (f"the last good checkpoint (step {last}) in {ckpt.directory} is intact"
                             if last is not None else "no checkpoint was written")
                    raise NonFiniteLossError(
                        f"non-finite loss {loss[bad[0]]} at step {step + int(bad[0])}; training stopped; {where}.")
                for i in range(n):
                    for k, v in metrics.items():
                        window.setdefault(k, []).append(float(np.asarray(v)[i]))
                    s = step + i + 1
                    if s % log_every == 0 or s == num_steps:
                        row = {k: float(np.mean(v)) for k, v in window.items()}
                        hist.setdefault("step", []).append(s)
                        for k, v in row.items():
                            hist.setdefault(k, []).append(v)
                        hist.setdefault("wall_time", []).append(time.perf_counter() - start_time)
                        window = {}
                if hist.get("step"):
                    logging.info("step %d: %s", hist["step"][-1], ", ".join(
                        f"{k}={hist[k][-1]:.5g}" for k in sorted(hist) if k not in ("step", "wall_time")))
                step += n
                bar.update(n)
                bar.set_postfix(loss=f"{float(np.mean(loss)):.4g}")
                if ckpt is None:
                    continue
                ckpt.check()                   # a failed background write surfaces here, one dispatch late
                signum = guard.requested(step)
                if (step % checkpoint_every == 0 or step == num_steps or signum) and ckpt.latest_step() != step:
                    ckpt.save(step, state, metadata={"history_window": window})
                    _write_history(history_path, _as_arrays(hist))
                if signum:
                    ckpt.wait()
                    raise Preempted(signum, step, ckpt.directory)
            if ckpt is None:
                bad_state = nonfinite_summary(state)
                if bad_state:
                    raise NonFiniteStateError(f"training produced non-finite values by step {step} "
                                              f"({bad_state}).")
        finally:
            if bar is not None:
                bar.close()
            if ckpt is not None:
                ckpt.close()
    history = History(_as_arrays(hist))
    history.resumed_from = resumed_from
    return state, history


@functools.lru_cache(maxsize=16)
def _train_fn(train_step, batch_fn, n, mesh):
    """Jitted dispatch of ``n`` steps, shared by calls of :func:`fit` with the same step and batch functions
    (a resumed run in the same process compiles nothing new)."""
    return make_train_fn(train_step, batch_fn, n, mesh)


def _as_arrays(hist):
    return {k: np.asarray(v) for k, v in hist.items()}

