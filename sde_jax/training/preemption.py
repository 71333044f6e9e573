"""Preemption: SIGTERM/SIGINT become a checkpoint at the next dispatch boundary and a clean exit.

Cloud TPU/GPU hosts announce preemption with SIGTERM (a grace period of ~30 s follows); Ctrl-C sends SIGINT.
:class:`PreemptionGuard` installs handlers that only *record* the signal; the training loop asks
:meth:`PreemptionGuard.requested` at every dispatch boundary (every ``steps_per_call`` steps at most), saves a
checkpoint there and raises :class:`Preempted`. A second signal of the same kind gets the handler that was
installed before (Python's default: ``KeyboardInterrupt`` for SIGINT, termination for SIGTERM), so a user who
insists is not ignored.

**Several hosts.** Every process must save the same step, so the decision is collective: at each boundary
the processes all-gather their flags (:func:`any_process`, one tiny collective per dispatch, only when
``jax.process_count() > 1``) and also honour JAX's own preemption notice
(``multihost_utils.reached_preemption_sync_point``) when ``jax.distributed`` set one up. All processes then
stop at the same step. Handlers can only be installed from the main thread; elsewhere the guard is inert.

The paper's code saved a "preemption checkpoint" every ``snapshot_freq_for_preemption`` steps; this saves
exactly when asked, at the next boundary, so at most one dispatch of work is redone.
"""
from __future__ import annotations

import signal
import threading

import jax
import numpy as np
from absl import logging

__all__ = ["Preempted", "PreemptionGuard", "any_process", "all_processes", "SIGNALS"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped at a step boundary after a signal, with a checkpoint saved at that step.

    Attributes:
      signum: the signal number (``signal.SIGTERM`` or ``signal.SIGINT``).
      step: the step of the checkpoint saved (resume continues from it).
      directory: the checkpoint directory.
    """

    def __init__(self, signum: int, step: int, directory: str | None):
        self.signum, self.step, self.directory = int(signum), int(step), directory
        name = signal.Signals(self.signum).name
        where = f"checkpoint step {step} saved in {directory}" if directory else "no checkpoint directory"
        super().__init__(f"stopped by {name} at step {step}; {where}; run the same command again to resume.")

    @property
    def exit_code(self) -> int:
        """``128 + signum``, the shell's code for a process ended by the signal (143 SIGTERM, 130 SIGINT)."""
        return 128 + self.signum


def any_process(flag) -> bool:
    """``flag`` OR-ed over all JAX processes (a tiny all-gather when there is more than one)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(bool(flag)))))


def all_processes(flag) -> bool:
    """``flag`` AND-ed over all JAX processes."""
    return not any_process(not flag)


class PreemptionGuard:
    """Context manager recording SIGTERM/SIGINT (or ``signals``) while training runs.

    Args:
      signals: the signals to catch.
      enabled: ``False`` makes the guard inert (no handlers; :meth:`requested` is ``None`` unless
        JAX's multi-host preemption notice fires).
    """

    def __init__(self, signals=SIGNALS, *, enabled: bool = True):
        self.signals = tuple(signals)
        self.enabled = enabled
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self):
        if self.enabled and threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            if signal.getsignal(s) == self._handle:
                signal.signal(s, handler)
        self._previous = {}
        return False

    def _handle(self, signum, frame):
        if self.received is None:
            self.received = signum
        logging.warning("Received %s: saving a checkpoint at the next step boundary, then stopping "
                        "(send it again to stop at once).", signal.Signals(signum).name)
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def requested(self, step: int) -> int | None:
        """The signal to stop for, agreed by all processes at this step boundary (``None``: keep going)."""
        local = self.received or 0
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            try:
                if multihost_utils.reached_preemption_sync_point(int(step)):
                    local = local or int(signal.SIGTERM)
            except RuntimeError:   # no preemption service (jax.distributed not set up with one)
                pass
            local = int(np.max(multihost_utils.process_allgather(np.asarray(local, np.int32))))
        return local or None
