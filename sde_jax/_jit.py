"""Helpers at the jit boundary of the public functions: the default dtype, the array conversion that keeps
jitted functions from recompiling when only hyper-parameter values change, and the batch-sharding constraint."""
from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from jax.sharding import NamedSharding, PartitionSpec as P

from sde_jax.parallel import batch_sharding


def default_dtype(dtype=None):
    """``dtype`` or JAX's default float (float64 under ``jax_enable_x64``, else float32)."""
    return jnp.dtype(jnp.result_type(float) if dtype is None else dtype)


def compute_dtype(dtype):
    """The dtype a sampler, the ODE core or the likelihood carries its state in: ``dtype`` promoted to at least
    float32 (float64 stays float64).

    16-bit floats are storage formats here, not loop states: a bfloat16 state (8-bit mantissa) drops every
    update smaller than ``|x|/256``, so a 1,000-step sampler would stall, and a ``lax.scan`` carry must keep
    one dtype while float32 network parameters promote each update to float32 (the "carry input and carry
    output must have equal types" error). Callers compute in this dtype and cast their results back.

    Raises:
      TypeError: ``dtype`` is not a floating-point dtype.
    """
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating-point dtype; got {dtype}.")
    return jnp.promote_types(dtype, jnp.float32)


def as_leaves(tree, dtype, *, convert_arrays=False):
    """Python float leaves of a pytree (an SDE, a score function, ``snr``) as JAX arrays of ``dtype``.

    ``equinox.filter_jit`` treats Python floats as static (a new value recompiles) and arrays as traced, so
    converting them makes a new ``beta_max`` or ``snr`` a new *value* for the same compiled program. With
    ``convert_arrays`` floating arrays are cast to ``dtype`` too (for an SDE's hyper-parameters, so that they
    do not promote the samples' dtype); a score function's arrays (network parameters) are left alone.
    """

    def conv(v):
        if isinstance(v, numbers.Number) and not isinstance(v, bool):
            return jnp.asarray(v, dtype)
        if convert_arrays and isinstance(v, (np.ndarray, np.generic, jax.Array)) and jnp.issubdtype(
                v.dtype, jnp.floating):
            return jnp.asarray(v, dtype)
        return v

    return jax.tree.map(conv, tree)


def constrainer(mesh, batch_axis=0):
    """``x -> x`` with its batch axis (``batch_axis``) sharded over ``mesh`` (identity when ``mesh`` is None)."""
    if mesh is None:
        return lambda v: v
    sharding = batch_sharding(mesh)
    if batch_axis:
        sharding = NamedSharding(mesh, P(*(None,) * batch_axis, *sharding.spec))
    return lambda v: jax.lax.with_sharding_constraint(v, sharding)
