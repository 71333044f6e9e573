"""Training: train state with EMA, optimizer from config, pure jitted multi-step training, orbax checkpoints.

* :mod:`~sde_jax.training.state`: :class:`TrainState`, :func:`get_optimizer`, EMA.
* :mod:`~sde_jax.training.step`: the pure ``train_step(state, batch, key)``, ``lax.scan`` over several steps
  per dispatch, data parallelism over a device mesh.
* :mod:`~sde_jax.training.checkpoint`: :class:`Checkpointer` (orbax ``CheckpointManager``).
* :mod:`~sde_jax.training.loop`: :func:`fit`, the loop with progress, history, checkpoints, exact resume.
* :mod:`~sde_jax.training.builders`: config -> SDE, model, loss, optimizer, mesh; :func:`validate_config`.
"""
from sde_jax.training.builders import (
    DISCRETE_LOSSES,
    MODELS,
    SDES,
    Components,
    build,
    build_loss,
    build_mesh,
    build_model,
    build_score_fn_factory,
    build_sde,
    check_workdir,
    init_params,
    is_continuous,
    register_model,
    validate_config,
)
from sde_jax.training.checkpoint import Checkpointer
from sde_jax.training.loop import CHECKPOINT_DIR, HISTORY_FILE, NonFiniteLossError, fit, read_history
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
