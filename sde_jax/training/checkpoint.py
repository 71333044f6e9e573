"""Checkpoints with orbax ``CheckpointManager``: the latest for resume plus kept snapshots, verified.

One manager keeps the ``max_to_keep`` most recent checkpoints (the latest, for resuming after an interruption)
and, with ``keep_period``, never deletes a step that is a multiple of it (the snapshots), as the paper's
``checkpoints-meta`` / ``checkpoints`` pair does with two directories. Both rules are orbax preservation
policies (``LatestN`` or ``EveryNSteps``), orbax's current form of the deprecated ``max_to_keep`` /
``keep_period`` options.

**Integrity.** orbax verifies only what its storage layers verify (OCDBT/zarr framing; no checksum of array
data: 64 flipped bytes in an array file restore silently as different numbers). So every checkpoint also
records, in its orbax step metadata (``custom_metadata["sde_jax"]``), its step, the path, shape and dtype of
every array and a 64-bit checksum of each array's bytes computed on the host (two sums mod ``2^32`` of the
array's 32-bit words, plain and index-weighted, Fletcher style: any change of one word, and all but a
``~2^-32`` fraction of other changes, alter it). A restore is accepted only if orbax reads it, its step and
checksums match the record and every array is finite (params, EMA and optimizer state alike). An invalid
latest checkpoint is moved to ``<directory>/invalid/<step>`` with a warning that names it and why, and the next
older one is tried; a checkpoint that does not fit the restore template (a changed config) is refused with
:class:`CheckpointMismatchError` and never moved. Checkpoints written before the record existed are accepted
when they restore and are finite.

**Never poisoned.** :meth:`Checkpointer.save` refuses a state with any non-finite array
(:class:`NonFiniteStateError`, naming the arrays), so the latest checkpoint stays the last finite one.

**Disk errors surface at once.** Before a save the free space under ``directory`` is compared with the
state's size; a write that fails in orbax's background thread is detected at the next :meth:`Checkpointer.check`
(the training loop calls it at every dispatch boundary). Both raise :class:`CheckpointWriteError`, one line with
the path, the bytes needed and free, and the latest complete step, which is left intact.
"""
from __future__ import annotations

import math
import os
import re
import shutil
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from sde_jax.training.preemption import all_processes, any_process

__all__ = ["Checkpointer", "CheckpointError", "CheckpointMismatchError", "CheckpointWriteError",
           "NonFiniteStateError", "INVALID_DIR", "nonfinite_summary"]

INVALID_DIR = "invalid"
"""Sub-folder of a checkpoint directory where invalid step folders are moved (kept for inspection)."""

_RECORD = "sde_jax"
_FORMAT = 1
_MARGIN = 1 << 20            # bytes of headroom asked beyond the arrays' size (orbax metadata files)


class CheckpointError(RuntimeError):
    """No valid checkpoint could be restored (each candidate is named with the reason)."""


class CheckpointMismatchError(ValueError):
    """The checkpoint holds arrays of other paths, shapes or dtypes than the restore template (a changed
    config or model); nothing is moved or overwritten."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, quota, I/O error); the previous checkpoint is intact."""


class NonFiniteStateError(FloatingPointError):
    """A state with non-finite arrays was not saved; the latest checkpoint on disk is the last finite one."""


class _Digest(NamedTuple):
    paths: list          # [L] key paths (str)
    sums: np.ndarray     # [L, 2] uint32 checksums
    nonfinite: np.ndarray  # [L] int: non-finite values per array
    sizes: np.ndarray    # [L] int: values per array


_CHUNK = 1 << 22             # words per chunk of the index-weighted sum (bounds the temporary memory)


def _unkey(x):
    """PRNG key arrays as their uint32 data (everything else unchanged)."""
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(x)
    return x


def _checksum(a: np.ndarray) -> tuple[int, int]:
    """Two sums mod ``2^32`` of the array's bytes read as little-endian uint32 words ``w_i`` (zero-padded):
    ``sum_i w_i`` and ``sum_i (i + 1) w_i`` (uint64 arithmetic wraps mod ``2^64``, a multiple of ``2^32``)."""
    b = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    if b.size % 4:
        b = np.concatenate([b, np.zeros(4 - b.size % 4, np.uint8)])
    w = b.view("<u4")
    s1 = s2 = 0
    for start in range(0, w.size, _CHUNK):
        chunk = w[start:start + _CHUNK].astype(np.uint64)
        s1 += int(chunk.sum(dtype=np.uint64))
        i = np.arange(start + 1, start + 1 + chunk.size, dtype=np.uint64)
        s2 += int((chunk * i).sum(dtype=np.uint64))
    return s1 % 2**32, s2 % 2**32


def _digest(tree) -> _Digest:
    """Checksums and non-finite counts of every array, computed on the host (the state is copied there
    for saving anyway; no compilation)."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    arrays = [np.asarray(a) for a in jax.device_get([_unkey(v) for _, v in flat])]
    sums = np.asarray([_checksum(a) for a in arrays], np.uint32).reshape(-1, 2)
    bad = np.asarray([np.count_nonzero(~np.isfinite(a)) if jnp.issubdtype(a.dtype, jnp.inexact) else 0
                      for a in arrays], np.int64)
    return _Digest([jax.tree_util.keystr(p) for p, _ in flat], sums, bad,
                   np.asarray([a.size for a in arrays], np.int64))


def _structure(tree) -> list:
    return [[jax.tree_util.keystr(p), list(v.shape), str(jnp.dtype(v.dtype))]
            for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _nbytes(tree) -> int:
    return int(sum(math.prod(v.shape) * jnp.dtype(v.dtype).itemsize for v in jax.tree.leaves(tree)))


def _nonfinite_summary(d: _Digest) -> str:
    """``'params: 100% of 5,314 values (first: ...); ema_params: ...'`` grouped by the top-level field."""
    groups: dict[str, list] = {}
    for path, bad, size in zip(d.paths, d.nonfinite, d.sizes):
        head = re.match(r"^(\.\w+|\[[^\]]*\])?", path).group(0) or path
        g = groups.setdefault(head.lstrip("."), [0, 0, None])
        g[0] += int(bad)
        g[1] += int(size)
        if bad and g[2] is None:
            g[2] = path
    return "; ".join(f"{name}: {100.0 * b / max(n, 1):.3g}% of {n:,} values (first: {first})"
                     for name, (b, n, first) in groups.items() if b)


def nonfinite_summary(tree) -> str:
    """``''`` if every array of ``tree`` is finite, else which top-level fields hold NaN/inf and how many
    (``'params: 100% of 5,314 values (first: ...)'``). Computed on the host (no compilation)."""
    d = _digest(tree)
    return _nonfinite_summary(d) if d.nonfinite.any() else ""


def _bytes(n: int) -> str:
    """``'3.2 MiB (3,355,443 bytes)'``."""
    scaled, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if scaled < 1024 or unit == "TiB":
            break
        scaled /= 1024
    return f"{n:,} bytes" if unit == "B" else f"{scaled:.1f} {unit} ({n:,} bytes)"


def _first_line(e: BaseException, limit: int = 240) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit] + "..."


class Checkpointer:
    """Save and restore a :class:`~sde_jax.training.TrainState` (any pytree) under ``directory``, verified.

    Args:
      directory: checkpoint folder (created).
      max_to_keep: how many of the most recent checkpoints to keep (at least 1).
      keep_period: also keep every checkpoint whose step is a multiple of this (``None``: none).

    Attributes:
      restored_step: the step of the last successful :meth:`restore` (``None`` before).
      restored_metadata: the ``metadata`` dict saved with that checkpoint (``{}`` if none).
      skipped: ``[(step, reason)]`` of the invalid checkpoints the last :meth:`restore` moved aside.
    """

    def __init__(self, directory: str, *, max_to_keep: int = 1, keep_period: int | None = None):
        self.directory = os.path.abspath(directory)
        policies = [pp.LatestN(max(int(max_to_keep), 1))]
        if keep_period:
            policies.append(pp.EveryNSteps(int(keep_period)))
        self._options = ocp.CheckpointManagerOptions(preservation_policy=pp.AnyPreservationPolicy(policies),
                                                     create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=self._options)
        self.restored_step: int | None = None
        self.restored_metadata: dict = {}
        self.skipped: list[tuple[int, str]] = []
        self._pending: tuple[int, int] | None = None    # (step, bytes) of a save not yet known to be complete
        self._committed: int | None = self.manager.latest_step()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    # ------------------------------------------------------------------------------------------------
    # Save
    # ------------------------------------------------------------------------------------------------
    def save(self, step: int, state, *, metadata: dict | None = None) -> None:
        """Save ``state`` at ``step`` (asynchronously; :meth:`check`, :meth:`wait` or :meth:`close` to finish).

        ``metadata`` (JSON-serialisable) is stored with the checkpoint and comes back as
        :attr:`restored_metadata`.

        Raises:
          NonFiniteStateError: some array of ``state`` is NaN/inf (nothing is written).
          CheckpointWriteError: not enough free space under the directory, or an earlier save failed.
        """
        step = int(step)
        digest = _digest(state)
        if digest.nonfinite.any():
            raise NonFiniteStateError(
                f"not saving step {step}: the state has non-finite values ({_nonfinite_summary(digest)}); "
                f"{self._intact()}.")
        self.check()
        needed = _nbytes(state) + _MARGIN
        free = shutil.disk_usage(self.directory).free
        if any_process(free < needed):
            raise CheckpointWriteError(
                28, f"cannot save checkpoint step {step} in {self.directory}: it needs about {_bytes(needed)}, "
                    f"{_bytes(free)} free there; {self._intact()}.")
        record = {"format": _FORMAT, "step": step, "structure": _structure(state),
                  "checksums": digest.sums.tolist(), "metadata": dict(metadata or {})}
        try:
            self.manager.save(step, args=ocp.args.StandardSave(state), force=True,
                              custom_metadata={_RECORD: record})
        except Exception as e:  # orbax reports OS errors as ValueError/OSError from tensorstore
            raise self._write_error(step, needed, e) from e
        self._pending = (step, needed)

    def check(self) -> None:
        """Raise :class:`CheckpointWriteError` now if a background save has failed (non-blocking)."""
        if self._pending is not None and not self.manager.is_saving_in_progress():
            self._finish()

    def wait(self) -> None:
        """Block until the pending save is on disk (raises :class:`CheckpointWriteError` if it failed)."""
        self._finish()

    def close(self) -> None:
        try:
            self._finish()
        finally:
            self.manager.close()

    def _finish(self):
        pending, self._pending = self._pending, None
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            self._renew()
            if pending is None:   # a failure already reported by check()/wait()
                logging.warning("Checkpoint manager for %s: %s", self.directory, _first_line(e))
                return
            raise self._write_error(*pending, e) from e
        if pending is not None:
            self._committed = pending[0]

    def _renew(self):
        """A fresh orbax manager: a failed read or write can leave the old one's internal state wrong (its
        step list emptied, its item mode set by an empty folder)."""
        try:
            self.manager.close()
        except Exception as e:   # the failure was reported already
            logging.info("Closing the checkpoint manager of %s: %s", self.directory, _first_line(e))
        self.manager = ocp.CheckpointManager(self.directory, options=self._options)

    def _intact(self) -> str:
        if self._pending is not None:     # settle the save in flight first, so the message is true
            try:
                self._finish()
            except CheckpointWriteError:
                pass
        if self._committed is None:
            return f"no checkpoint in {self.directory} was written before"
        return f"the latest complete checkpoint, step {self._committed}, in {self.directory} is intact"

    def _write_error(self, step, needed, e) -> CheckpointWriteError:
        text = str(e)
        m = re.search(r"os_error_code='?(\d+)", text)
        code = int(m.group(1)) if m else getattr(e, "errno", None)
        reason = os.strerror(code) if code else _first_line(e, 160)
        try:
            free = _bytes(shutil.disk_usage(self.directory).free)
        except OSError:
            free = "unknown"
        return CheckpointWriteError(
            code or 5, f"checkpoint step {step} could not be written to {self.directory}: {reason}; it needs "
                       f"about {_bytes(needed)}, {free} free there; {self._intact()}.")

    # ------------------------------------------------------------------------------------------------
    # Restore
    # ------------------------------------------------------------------------------------------------
    def restore(self, template, step: int | None = None):
        """Restore the latest valid checkpoint (or ``step``) into the structure, dtypes and shardings of
        ``template``; ``None`` when there is no checkpoint.

        Without ``step``, an invalid checkpoint (unreadable, checksum or step mismatch, non-finite arrays, an
        empty or partial step folder) is moved to ``<directory>/invalid/`` with a warning and the next older
        one is tried.

        Raises:
          CheckpointMismatchError: the checkpoint's arrays do not fit ``template`` (nothing is moved).
          CheckpointError: ``step`` is invalid, or every checkpoint was invalid (all moved aside: running again
            starts from scratch), or a checkpoint without a checksum record fails to restore.
        """
        self.check()
        self.manager.reload()
        steps = sorted(self.all_steps(), reverse=True) if step is None else [int(step)]
        self.skipped = []
        for s in steps:
            state, problem = self._try_restore(template, s)
            if problem is None:
                self.restored_step = s
                return state
            if step is not None:
                raise CheckpointError(f"checkpoint step {s} in {self.directory} is invalid: {problem}.")
            self._renew()
            moved = self._quarantine(s)
            logging.warning("Checkpoint %s is invalid (%s); moved to %s; trying the next older checkpoint.",
                            os.path.join(self.directory, str(s)), problem, moved)
            self.skipped.append((s, problem))
        if self.skipped:
            listing = "; ".join(f"step {s}: {p}" for s, p in self.skipped)
            raise CheckpointError(f"no valid checkpoint in {self.directory} ({listing}); they were moved to "
                                  f"{os.path.join(self.directory, INVALID_DIR)}; run again to start from scratch.")
        return None

    def _step_path(self, s):
        return os.path.join(self.directory, str(s))

    def _try_restore(self, template, s):
        """``(state, None)`` or ``(None, reason)``; raises for template mismatches and unverifiable failures."""
        path = self._step_path(s)
        if not os.path.isdir(path) or not _has_items(path):
            return None, "empty step folder" if not os.path.isdir(path) or not any(os.scandir(path)) else \
                "partial step folder (no item folder)"
        try:
            record = (self.manager.metadata(s).custom_metadata or {}).get(_RECORD)
        except Exception as e:   # unreadable step metadata
            record, meta_error = None, _first_line(e)
        else:
            meta_error = None
        if record is not None:
            if record.get("step") != s:
                return None, f"its metadata records step {record.get('step')!r}"
            self._check_structure(s, record.get("structure"), template)
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), template)
        try:
            state = self.manager.restore(s, args=ocp.args.StandardRestore(abstract))
        except Exception as e:
            reason = f"orbax could not read it ({_first_line(e)})"
            if record is None and meta_error is None:
                raise CheckpointError(
                    f"checkpoint step {s} in {self.directory} (written without a checksum record) could not be "
                    f"restored: {reason}. If the run's config changed, restore with the old config; if the "
                    f"checkpoint is damaged, move {path} away to fall back to an older one.") from e
            return None, reason if meta_error is None else f"{reason}; metadata unreadable ({meta_error})"
        digest = _digest(state)
        problem = None
        if record is not None:
            expected = np.asarray(record.get("checksums", []), np.uint32).reshape(-1, 2)
            if expected.shape != digest.sums.shape:
                problem = f"{len(expected)} checksums recorded for {len(digest.sums)} arrays"
            else:
                wrong = [p for p, a, b in zip(digest.paths, digest.sums, expected) if (a != b).any()]
                if wrong:
                    problem = (f"checksum mismatch in {len(wrong)} of {len(digest.paths)} arrays "
                               f"({', '.join(wrong[:3])}{', ...' if len(wrong) > 3 else ''})")
        if problem is None and digest.nonfinite.any():
            problem = f"non-finite values ({_nonfinite_summary(digest)})"
        if problem is None:
            restored_step = getattr(state, "step", None)
            if restored_step is not None and int(np.asarray(restored_step)) != s:
                problem = f"its state holds step {int(np.asarray(restored_step))}"
        if not all_processes(problem is None):
            return None, problem or "invalid on another process"
        if record is None:
            logging.warning("Checkpoint %s has no checksum record (written by an older version): restored "
                            "without checksum verification; its arrays are finite.", path)
        self.restored_metadata = dict((record or {}).get("metadata", {}))
        return state, None

    def _check_structure(self, s, structure, template):
        if structure is None:
            return
        mine = _structure(template)
        if mine == structure:
            return
        theirs = {p: (tuple(sh), dt) for p, sh, dt in structure}
        ours = {p: (tuple(sh), dt) for p, sh, dt in mine}
        diffs = [f"{p}: checkpoint {theirs.get(p, 'absent')}, run {ours.get(p, 'absent')}"
                 for p in sorted(set(theirs) | set(ours)) if theirs.get(p) != ours.get(p)]
        raise CheckpointMismatchError(
            f"checkpoint step {s} in {self.directory} does not fit this run's state ({len(diffs)} arrays "
            f"differ: {'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''}); was the config or model "
            f"changed? Nothing was moved or overwritten.")

    def _quarantine(self, s) -> str:
        """Move step ``s`` to ``<directory>/invalid/<s>[.<n>]`` (process 0; all processes wait)."""
        dest_root = os.path.join(self.directory, INVALID_DIR)
        dest = os.path.join(dest_root, str(s))
        n = 1
        while os.path.exists(dest):
            dest = os.path.join(dest_root, f"{s}.{n}")
            n += 1
        if jax.process_index() == 0:
            os.makedirs(dest_root, exist_ok=True)
            os.replace(self._step_path(s), dest)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"sde_jax_checkpoint_quarantine_{s}")
        self.manager.reload()
        return dest


def _has_items(path) -> bool:
    """True if the step folder holds an orbax item folder (not only metadata files)."""
    return any(e.is_dir() for e in os.scandir(path))

