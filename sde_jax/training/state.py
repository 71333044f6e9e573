"""Train state (step, params, EMA params, optimizer state), the optimizer from a config, and the EMA update."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from sde_jax._pytree import pytree_dataclass

__all__ = ["TrainState", "init_train_state", "get_optimizer", "learning_rate_schedule", "ema_decay",
           "ema_update", "OPTIMIZERS"]


@pytree_dataclass
class TrainState:
    """Everything a training run carries from step to step; keys are *not* stored (derived from ``step``).

    Attributes:
      step: number of optimizer steps taken; ``[]`` int32.
      params: network variables (a pytree of float arrays).
      ema_params: exponential moving average of ``params`` (same structure); used for sampling.
      opt_state: the optax optimizer state.
    """

    step: jax.Array  # [], int32
    params: Any
    ema_params: Any
    opt_state: Any


def init_train_state(params, tx: optax.GradientTransformation) -> TrainState:
    """Step 0 with ``ema_params = params`` and a fresh optimizer state."""
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      ema_params=jax.tree.map(jnp.array, params), opt_state=tx.init(params))


def learning_rate_schedule(lr: float, warmup: int, *, decay: str = "constant", total_steps: int | None = None,
                           final_ratio: float = 0.0):
    """Linear warm-up, then constant (the paper) or cosine decay.

    ``lr_k = lr min((k + 1)/warmup, 1)`` at optimizer step ``k`` (0-based) for ``decay="constant"``. With
    ``decay="cosine"`` the rate after warm-up follows ``lr (r + (1 - r)(1 + cos(pi u))/2)``,
    ``u = (k - warmup)/(total_steps - warmup)`` clipped to ``[0, 1]``, ``r = final_ratio``.

    The paper's ``optimize_fn`` uses ``lr min(k/warmup, 1)``, whose first step has learning rate 0; we start
    at ``lr/warmup`` (a stated deviation, one step's worth).
    """
    if decay not in _DECAYS:
        raise ValueError(f"optim.decay: unknown name {decay!r}; valid names: {list(_DECAYS)}.")
    if decay == "cosine" and (total_steps is None or total_steps <= warmup):
        raise ValueError(f"cosine decay needs total_steps > warmup; got total_steps={total_steps}, warmup={warmup}.")

    def schedule(count):
        count = jnp.asarray(count, jnp.float32)
        rate = lr * jnp.minimum((count + 1.0) / warmup, 1.0) if warmup > 0 else jnp.asarray(lr, jnp.float32)
        if decay == "cosine":
            u = jnp.clip((count - warmup) / (total_steps - warmup), 0.0, 1.0)
            rate = rate * (final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + jnp.cos(jnp.pi * u)))
        return rate

    return schedule


_DECAYS = ("constant", "cosine")


def _adam(optim, schedule):
    return optax.adam(schedule, b1=optim.beta1, b2=optim.get("beta2", 0.999), eps=optim.eps)


def _adamw(optim, schedule):
    return optax.adamw(schedule, b1=optim.beta1, b2=optim.get("beta2", 0.999), eps=optim.eps,
                       weight_decay=optim.weight_decay)


OPTIMIZERS = {"adam": _adam, "adamw": _adamw}
"""``config.optim.optimizer`` names -> ``factory(optim_config, schedule) -> GradientTransformation``."""


def get_optimizer(optim, total_steps: int | None = None) -> tuple[optax.GradientTransformation, Any]:
    """Optimizer from ``config.optim`` (the paper's: Adam, linear warmup, global-norm clipping).

    ``config.optim`` fields: ``optimizer`` (a key of :data:`OPTIMIZERS`), ``lr``, ``beta1``, ``beta2``,
    ``eps``, ``weight_decay`` (adamw), ``warmup`` (steps, 0 for none), ``grad_clip`` (global norm; <= 0 for
    none), optional ``decay`` (``"constant"``, the paper's, or ``"cosine"`` down to ``final_lr_ratio`` at
    ``total_steps``). Paper defaults: Adam, lr 2e-4, beta1 0.9, eps 1e-8, warmup 5000, grad_clip 1.

    Returns:
      ``(tx, schedule)`` with ``schedule(step) -> learning rate``.
    """
    if optim.optimizer not in OPTIMIZERS:
        raise ValueError(f"optim.optimizer: unknown optimizer {optim.optimizer!r}; valid names: {sorted(OPTIMIZERS)}.")
    schedule = learning_rate_schedule(optim.lr, optim.warmup, decay=optim.get("decay", "constant"),
                                      total_steps=total_steps, final_ratio=optim.get("final_lr_ratio", 0.0))
    parts = []
    if optim.grad_clip is not None and optim.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(optim.grad_clip))
    parts.append(OPTIMIZERS[optim.optimizer](optim, schedule))
    return optax.chain(*parts), schedule


def ema_decay(step, rate: float, warmup: bool):
    """EMA decay at ``step``: ``rate``, or ``min(rate, (1 + step)/(10 + step))`` with ``warmup``.

    The warm-up form is TensorFlow's ``ExponentialMovingAverage(num_updates=step)``: early averages are not
    dominated by the random initialisation.
    """
    if not warmup:
        return jnp.asarray(rate, jnp.float32)
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(rate, (1.0 + step) / (10.0 + step))


def ema_update(ema_params, params, decay):
    """``ema <- decay ema + (1 - decay) params``, leaf by leaf (dtype kept)."""
    return jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema_params, params)
