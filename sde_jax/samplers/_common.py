"""Helpers shared by the sampler drivers: argument checks and the array conversion that keeps jitted
drivers from recompiling when only hyper-parameter values change."""
from __future__ import annotations

import numbers

import jax
import numpy as np
import jax.numpy as jnp

from sde_jax.parallel import batch_sharding, check_batch_divisible


def default_dtype(dtype=None):
    """``dtype`` or JAX's default float (float64 under ``jax_enable_x64``, else float32)."""
    return jnp.dtype(jnp.result_type(float) if dtype is None else dtype)


def as_leaves(tree, dtype):
    """Python/NumPy float leaves of a pytree (e.g. an SDE) as JAX arrays of ``dtype``.

    ``equinox.filter_jit`` treats Python floats as static (a new value recompiles) and arrays as traced,
    so converting them makes a new ``beta_max`` or ``snr`` a new *value* for the same compiled program.
    """

    def conv(v):
        if isinstance(v, numbers.Number) and not isinstance(v, bool):
            return jnp.asarray(v, dtype)
        if isinstance(v, (np.ndarray, np.generic, jax.Array)) and jnp.issubdtype(v.dtype, jnp.floating):
            return jnp.asarray(v, dtype)
        return v

    return jax.tree.map(conv, tree)


def check_shape(shape):
    if (not isinstance(shape, (tuple, list)) or len(shape) < 1
            or not all(isinstance(s, numbers.Integral) and s >= 1 for s in shape)):
        raise ValueError(f"shape must be a tuple of positive ints [B, ...]; got {shape!r}.")
    return tuple(int(s) for s in shape)


def check_positive_int(name, value, minimum=1):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def is_concrete(v):
    return not isinstance(v, jax.core.Tracer)


def check_positive(name, value):
    if is_concrete(value) and not float(value) > 0:
        raise ValueError(f"{name} must be > 0; got {value!r}.")


def check_eps(eps, sde):
    if is_concrete(eps) and not 0.0 < float(eps) < sde.T:
        raise ValueError(f"eps must be in (0, T={sde.T}); got {eps!r}.")


def check_mesh(mesh, batch_size):
    if mesh is not None:
        check_batch_divisible(batch_size, mesh)


def constrainer(mesh):
    """``x -> x`` with its batch axis sharded over ``mesh`` (identity when ``mesh`` is None)."""
    if mesh is None:
        return lambda v: v
    sharding = batch_sharding(mesh)
    return lambda v: jax.lax.with_sharding_constraint(v, sharding)
