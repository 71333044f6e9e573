"""Argument checks: the one home for validating what users pass, with one rule and one message each.

Every public entry point validates through these functions, so a rule (e.g. the valid range of ``eps``) and
its message are written once. The rule for values that may be traced:

* **Concrete** values (Python numbers, NumPy arrays, committed JAX arrays) are checked at call time and a bad
  value raises ``ValueError``/``TypeError`` naming the argument, the value and what was expected.
* **Traced** values (the caller wrapped our function in ``jax.jit``/``vmap`` and passed a hyper-parameter as
  an argument) are never tested with a Python ``if``. They are checked at run time with
  :func:`equinox.error_if`, which costs a predicate per call on the happy path and raises an
  ``EqxRuntimeError`` carrying the same message when the value is bad. These checks return the value; the
  caller must use the returned value (otherwise XLA may drop the check as dead code).

Shapes, dtypes, integers and names are always concrete (static) and always checked at call time.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "is_concrete",
    "lookup",
    "check_int",
    "check_shape",
    "check_scalar",
    "check_positive",
    "check_nonnegative",
    "check_open_interval",
    "check_eps",
    "check_finite",
    "check_batch",
    "check_score",
    "check_data",
    "check_key",
    "check_mesh",
    "finite_float",
]


def is_concrete(v) -> bool:
    """True unless ``v`` (or a leaf of it) is a tracer: a value known at call time."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(v))


def lookup(registry: Mapping[str, Any], name, what: str):
    """``registry[name]``, or ``ValueError`` listing the valid names (``what`` names the argument)."""
    if not isinstance(name, str) or name not in registry:
        raise ValueError(f"unknown {what} {name!r}; valid names: {sorted(registry)}.")
    return registry[name]


def check_int(name: str, value, minimum: int = 1, *, allow_none: bool = False):
    """A Python/NumPy integer ``>= minimum`` (not a bool), returned as ``int`` (or ``None`` if allowed)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{' or None' if allow_none else ''}; "
                         f"got {value!r}.")
    return int(value)


def check_shape(shape, name: str = "shape") -> tuple[int, ...]:
    """A sample shape ``[B, ...]`` of positive ints, returned as a tuple."""
    if (not isinstance(shape, (tuple, list)) or len(shape) < 1
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in shape)):
        raise ValueError(f"{name} must be a tuple of positive ints [B, ...]; got {shape!r}.")
    return tuple(int(s) for s in shape)


def check_scalar(name: str, value):
    """A scalar (0-d) number or array; returns it."""
    if isinstance(value, bool) or jnp.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar; got {value!r}.")
    if not (isinstance(value, numbers.Real) or jnp.issubdtype(jnp.result_type(value), jnp.number)):
        raise TypeError(f"{name} must be a real number; got {value!r}.")
    return value


def _checked(name: str, value, ok_fn, expectation: str):
    """Raise now (concrete) or attach a run-time check (traced); ``ok_fn`` maps an array to a bool array."""
    check_scalar(name, value)
    if is_concrete(value):
        v = float(np.asarray(value))
        if not bool(ok_fn(np.asarray(v))):
            raise ValueError(f"{name} must be {expectation}; got {value!r}.")
        return value
    return eqx.error_if(value, jnp.logical_not(ok_fn(value)), f"{name} must be {expectation}.")


def check_positive(name: str, value):
    """A finite scalar ``> 0`` (traced values: checked at run time). Returns the value."""
    return _checked(name, value, lambda v: (v > 0) & (v < np.inf), "> 0 and finite")


def check_nonnegative(name: str, value):
    """A finite scalar ``>= 0`` (traced values: checked at run time). Returns the value."""
    return _checked(name, value, lambda v: (v >= 0) & (v < np.inf), ">= 0 and finite")


def check_open_interval(name: str, value, lo: float, hi: float):
    """A scalar in the open interval ``(lo, hi)`` (traced values: checked at run time). Returns the value."""
    return _checked(name, value, lambda v: (v > lo) & (v < hi), f"in ({lo}, {hi})")


def check_eps(eps, sde, name: str = "eps"):
    """The smallest time of a sampler, likelihood or loss: a scalar in ``(0, T)``. Returns it."""
    return _checked(name, eps, lambda v: (v > 0) & (v < sde.T), f"in (0, T={sde.T})")


def check_finite(name: str, value):
    """A finite scalar (traced values: checked at run time). Returns the value."""
    return _checked(name, value, lambda v: (v > -np.inf) & (v < np.inf), "finite")


def check_batch(x, t, *, name_x: str = "x", name_t: str = "t"):
    """``t`` must be ``[B]`` for ``x`` of shape ``[B, ...]`` (no silent broadcasting)."""
    xs, ts = jnp.shape(x), jnp.shape(t)
    if len(xs) < 1:
        raise ValueError(f"{name_x} must have a batch axis [B, ...]; got shape {xs}.")
    if ts != xs[:1]:
        raise ValueError(f"{name_t} must have shape [B] = {xs[:1]} to match {name_x} of shape {xs}; "
                         f"got shape {ts}.")


def check_score(score, x, name: str = "score_fn(x, t)"):
    """A score function's output (or a ``jax.ShapeDtypeStruct`` of it) must have the shape of its input ``x``
    (no broadcasting); returns it. ``name`` names the function in the message."""
    if jnp.shape(score) != jnp.shape(x):
        raise ValueError(f"{name} must return an array of the same shape as x {jnp.shape(x)}; "
                         f"got shape {jnp.shape(score)}.")
    return score


def check_data(name: str, x, *, min_ndim: int = 2):
    """A floating-point array ``[B, ...]`` with a batch axis (and a data axis when ``min_ndim = 2``)."""
    shape = jnp.shape(x)
    if len(shape) < min_ndim or shape[0] < 1:
        raise ValueError(f"{name} must have shape [B, ...] with a batch axis"
                         f"{' and at least one data axis' if min_ndim > 1 else ''}; got shape {shape}.")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{name} must be a floating-point array; got dtype {jnp.result_type(x)}.")


def check_key(key, name: str = "key"):
    """A typed PRNG key (``jax.random.key``) or a legacy ``uint32[2]`` key."""
    ok = isinstance(key, jax.Array) and (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
                                         or (key.shape == (2,) and key.dtype == jnp.uint32))
    if not ok:
        raise TypeError(f"{name} must be a PRNG key (jax.random.key); got {key!r}.")
    return key


def check_mesh(mesh, batch_size: int, name: str = "batch size"):
    """``mesh`` is ``None`` or has a ``data`` axis that divides ``batch_size``."""
    if mesh is None:
        return
    from sde_jax.parallel import DATA_AXIS, check_batch_divisible   # parallel imports nothing of ours

    if DATA_AXIS not in mesh.shape:
        raise ValueError(f"mesh must have a '{DATA_AXIS}' axis (see sde_jax.parallel.make_data_mesh); "
                         f"got axes {tuple(mesh.shape)}.")
    check_batch_divisible(batch_size, mesh, name)


def finite_float(name: str, value) -> float:
    """A concrete finite Python float (for configuration values that fix a program, e.g. a loss's eps)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number; got {value!r}.")
    return float(value)
