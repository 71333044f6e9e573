"""The pure training step, several steps per dispatch with ``lax.scan``, and data parallelism over a mesh.

Keys are derived, never stored: the step's loss key is ``fold_in(loss_key, step)`` and its batch comes from
``batch_fn(data_key, step)``, so a run's randomness depends only on the base key and the step number; this
is what makes resume exact.

**Devices.** ``jax.jit`` over a 1-D ``data`` mesh: the state is replicated, the batch is sharded on its
leading axis and XLA inserts the gradient all-reduce. Random numbers drawn inside the step from one key
(``jax.random.normal(key, (B, ...))``) are *global* arrays: with JAX's partitionable threefry (the
default) each device computes its own slice, so the noise differs across devices (no replicated-key bug)
and the values do not depend on the number of devices. That is how one step on 8 devices equals the same
step on 1 device. (Folding the device index into the key, as the ``pmap`` era did, would give per-device
noise too but would make the result depend on the device count.)
"""
from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from sde_jax.parallel import batch_sharding, replicated_sharding
from sde_jax.training.state import TrainState, ema_decay, ema_update

__all__ = ["make_train_step", "jit_train_step", "make_train_fn", "sampler_batch_fn", "array_batch_fn"]


def make_train_step(loss_fn: Callable, make_score_fn: Callable, tx: optax.GradientTransformation, *,
                    ema_rate: float, ema_warmup: bool = False, schedule: Callable | None = None,
                    model_rngs: tuple[str, ...] = ()) -> Callable:
    """Build the pure step ``train_step(state, batch, key) -> (state, metrics)``.

    One optimizer step on ``loss(params) = loss_fn(make_score_fn(params), fold_in(key, state.step), batch)``
    followed by the EMA update ``ema <- d ema + (1 - d) params`` (``d = ema_decay(step)``).

    Args:
      loss_fn: ``loss_fn(score_fn, key, batch) -> (loss, aux)`` (:mod:`sde_jax.losses`).
      make_score_fn: ``params -> score_fn``, e.g. ``functools.partial(get_score_fn, sde, model.apply)``.
      tx: optax transformation.
      ema_rate: EMA decay rate.
      ema_warmup: use ``min(rate, (1+k)/(10+k))``.
      schedule: optional ``step -> learning rate``, reported as ``metrics["lr"]``.
      model_rngs: names of network PRNG streams (e.g. ``("dropout",)``); each step passes
        ``make_score_fn(params, rngs={name: key})`` with keys folded from the step key. Empty: no ``rngs``.

    Returns:
      ``train_step`` (not jitted; see :func:`jit_train_step` and :func:`make_train_fn`). ``metrics`` holds the
      loss's aux dict plus ``grad_norm`` (before clipping) and ``lr``.
    """

    def train_step(state: TrainState, batch, key):
        step_key = jax.random.fold_in(key, state.step)
        loss_key, model_key = jax.random.split(step_key) if model_rngs else (step_key, None)
        rngs = {name: jax.random.fold_in(model_key, i) for i, name in enumerate(model_rngs)} or None

        def objective(params):
            score_fn = make_score_fn(params, rngs=rngs) if rngs else make_score_fn(params)
            return loss_fn(score_fn, loss_key, batch)

        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = ema_update(state.ema_params, params, ema_decay(state.step, ema_rate, ema_warmup))
        metrics = dict(aux, loss=loss, grad_norm=optax.tree.norm(grads))
        if schedule is not None:
            metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
        return TrainState(step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state), metrics

    return train_step


def jit_train_step(train_step: Callable, mesh: Mesh | None = None, *, donate: bool = True) -> Callable:
    """``jax.jit`` a step ``(state, batch, key)`` with the state replicated and the batch sharded on ``mesh``.

    The state is donated (its buffers are reused for the new state), so do not use it after the call.
    """
    donate_argnums = (0,) if donate else ()
    if mesh is None:
        return jax.jit(train_step, donate_argnums=donate_argnums)
    rep, data = replicated_sharding(mesh), batch_sharding(mesh)
    return jax.jit(train_step, in_shardings=(rep, data, rep), out_shardings=(rep, rep),
                   donate_argnums=donate_argnums)


def make_train_fn(train_step: Callable, batch_fn: Callable, num_steps: int, mesh: Mesh | None = None) -> Callable:
    """Several steps per dispatch: ``train_fn(state, data_key, loss_key) -> (state, metrics)``, jitted.

    ``lax.scan`` runs ``num_steps`` steps; step ``k``'s batch is ``batch_fn(data_key, k)`` (generated on the
    device, sharded over ``mesh``'s ``data`` axis) and its loss key ``fold_in(loss_key, k)``. ``metrics``
    are stacked ``[num_steps]``. The state is donated. ``batch_fn`` may be a pytree callable whose
    ``jax.Array`` leaves (a data set on the devices) become arguments of the compiled program, keeping their
    shardings, instead of constants inside it.
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps per dispatch must be an integer >= 1; got {num_steps!r}.")
    # A pytree batch_fn (e.g. sde_jax.data.DeviceBatches) passes its device arrays as arguments: a closed-over
    # array would be baked into the program as a constant (a 150 MB data set: a 120 MB program, 30 s compile).
    data_arrays, static = eqx.partition(batch_fn, lambda v: isinstance(v, jax.Array))

    def train_fn(state, data_key, loss_key, data_arrays):
        batch_fn_ = eqx.combine(data_arrays, static)

        def body(state, _):
            batch = batch_fn_(data_key, state.step)
            if mesh is not None:
                batch = jax.lax.with_sharding_constraint(batch, batch_sharding(mesh))
            return train_step(state, batch, loss_key)

        if num_steps == 1:   # no loop: XLA:CPU runs convolutions inside a while loop ~10x slower (measured)
            state, metrics = body(state, None)
            return state, jax.tree.map(lambda m: m[None], metrics)
        return jax.lax.scan(body, state, None, length=num_steps)

    if mesh is None:
        jitted = jax.jit(train_fn, donate_argnums=(0,))
    else:
        rep = replicated_sharding(mesh)
        data_shardings = jax.tree.map(lambda a: a.sharding, data_arrays)
        jitted = jax.jit(train_fn, in_shardings=(rep, rep, rep, data_shardings), out_shardings=(rep, rep),
                         donate_argnums=(0,))
    return _TrainFn(jitted, data_arrays)


class _TrainFn:
    """``train_fn(state, data_key, loss_key)``: ``jitted(state, data_key, loss_key, data_arrays)``, the jitted
    program with the batch function's arrays as its last argument (``jitted`` and ``data_arrays`` are public for
    ahead-of-time compilation; ``_cache_size`` as on the jitted function, for recompilation checks)."""

    def __init__(self, jitted, data_arrays):
        self.jitted, self.data_arrays = jitted, data_arrays

    def __call__(self, state, data_key, loss_key):
        return self.jitted(state, data_key, loss_key, self.data_arrays)

    def _cache_size(self):
        return self.jitted._cache_size()


def sampler_batch_fn(sample_fn: Callable, batch_size: int) -> Callable:
    """``batch_fn(key, step) = sample_fn(fold_in(key, step), batch_size)``: fresh samples each step."""

    def batch_fn(key, step):
        return sample_fn(jax.random.fold_in(key, step), batch_size)

    return batch_fn


def array_batch_fn(data, batch_size: int) -> Callable:
    """Batches from a dataset array ``[n, ...]`` in an order derived from the step.

    Epoch ``e = (step * batch_size) // n`` uses the permutation ``permutation(fold_in(key, e), n)``; a batch
    never straddles two epochs' permutations (the last partial batch of an epoch is dropped), so the order
    is a pure function of ``(key, step)``.
    """
    data = jnp.asarray(data)
    n = data.shape[0]
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} exceeds the dataset size {n}.")
    per_epoch = n // batch_size

    def batch_fn(key, step):
        epoch, within = step // per_epoch, step % per_epoch
        perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
        idx = jax.lax.dynamic_slice_in_dim(perm, within * batch_size, batch_size)
        return data[idx]

    return batch_fn
