"""Checkpoints with orbax ``CheckpointManager``: the latest for resume plus kept snapshots.

One manager keeps the ``max_to_keep`` most recent checkpoints (the latest, for resuming after an interruption)
and, with ``keep_period``, never deletes a step that is a multiple of it (the snapshots), as the paper's
``checkpoints-meta`` / ``checkpoints`` pair does with two directories. Both rules are orbax preservation
policies (``LatestN`` or ``EveryNSteps``), orbax's current form of the deprecated ``max_to_keep`` /
``keep_period`` options.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

__all__ = ["Checkpointer"]


class Checkpointer:
    """Save and restore a :class:`~sde_jax.training.TrainState` (any pytree) under ``directory``.

    Args:
      directory: checkpoint folder (created).
      max_to_keep: how many of the most recent checkpoints to keep (at least 1).
      keep_period: also keep every checkpoint whose step is a multiple of this (``None``: none).
    """

    def __init__(self, directory: str, *, max_to_keep: int = 1, keep_period: int | None = None):
        self.directory = os.path.abspath(directory)
        policies = [pp.LatestN(max(int(max_to_keep), 1))]
        if keep_period:
            policies.append(pp.EveryNSteps(int(keep_period)))
        options = ocp.CheckpointManagerOptions(preservation_policy=pp.AnyPreservationPolicy(policies), create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state) -> None:
        """Save ``state`` at ``step`` (asynchronously; :meth:`wait` or :meth:`close` to finish)."""
        self.manager.save(int(step), args=ocp.args.StandardSave(state), force=True)

    def restore(self, template, step: int | None = None):
        """Restore the checkpoint at ``step`` (latest by default) into the structure, dtypes and shardings
        of ``template``; ``None`` when there is no checkpoint."""
        step = self.latest_step() if step is None else step
        if step is None:
            return None

        def abstract(x):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))

        return self.manager.restore(step, args=ocp.args.StandardRestore(jax.tree.map(abstract, template)))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
