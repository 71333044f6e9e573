"""Training: train state with EMA, optimizer from config, pure jitted multi-step training, orbax checkpoints.

* :mod:`~sde_jax.training.state`: :class:`TrainState`, :func:`get_optimizer`, EMA.
* :mod:`~sde_jax.training.step`: the pure ``train_step(state, batch, key)``, ``lax.scan`` over several steps
  per dispatch, data parallelism over a device mesh.
* :mod:`~sde_jax.training.checkpoint`: :class:`Checkpointer` (orbax ``CheckpointManager``, verified: checksums,
  finiteness, fallback to the next older valid checkpoint, disk errors at once).
* :mod:`~sde_jax.training.preemption`: SIGTERM/SIGINT -> a checkpoint at the next boundary, :class:`Preempted`.
* :mod:`~sde_jax.training.loop`: :func:`fit`, the loop with progress, history, checkpoints, exact resume.
* :mod:`~sde_jax.training.run_config`: :func:`write_config`, refusing a changed config on resume.
* :mod:`~sde_jax.training.builders`: :func:`build`, the one place a config becomes the pieces of a run (and is
  validated on the way).
"""
from sde_jax.training.builders import DISCRETE_LOSSES, SDES, Components, build, build_sde, check_workdir, is_continuous
from sde_jax.training.checkpoint import (
    INVALID_DIR,
    CheckpointError,
    CheckpointMismatchError,
    Checkpointer,
    CheckpointWriteError,
    NonFiniteStateError,
    nonfinite_summary,
)
from sde_jax.training.loop import CHECKPOINT_DIR, HISTORY_FILE, NonFiniteLossError, fit, read_history
from sde_jax.training.preemption import Preempted, PreemptionGuard
from sde_jax.training.run_config import CONFIG_FILE, ConfigChangedError, config_changes, write_config
from sde_jax.training.state import (
    OPTIMIZERS,
    TrainState,
    ema_decay,
    ema_update,
    get_optimizer,
    init_train_state,
    learning_rate_schedule,
)
from sde_jax.training.step import array_batch_fn, jit_train_step, make_train_fn, make_train_step, sampler_batch_fn
