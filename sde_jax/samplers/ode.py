"""Probability-flow ODE sampling on the device (Song et al. 2021, Sec. 4.3).

``dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t)`` is integrated from ``t = T`` (a prior sample) down to ``eps`` by
the probability-flow core :mod:`sde_jax.flow` (the same code that :func:`sde_jax.log_likelihood` and
:func:`sde_jax.decode_latent` use): adaptively with diffrax (``"tsit5"``, ``"dopri5"``, ``"heun"``; PID
step-size controller) or with ``num_steps`` uniform steps (``"euler"``, ``"heun"``, or any of them). Each
example is its own ODE with its own step sizes, so a sample does not depend on its batch-mates, and under a
mesh each device solves its shard with no cross-device communication inside the loop.

The paper's code solves this ODE with scipy's RK45 on the host, one device-to-host copy per evaluation.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from sde_jax import _checks as C
from sde_jax import flow
from sde_jax import _jit
from sde_jax.sdes import tweedie_denoise

__all__ = ["ode_sample", "tweedie_denoise", "adaptive_nfe"]


def adaptive_nfe(num_steps):
    """Vector-field evaluations of an adaptive Tsit5/Dopri5 solve that attempted ``num_steps`` steps:
    ``1 + 6 n`` (:meth:`sde_jax.flow.SolverSpec.nfe`)."""
    return flow.SOLVERS["tsit5"].nfe(num_steps)


def ode_sample(key, sde, score_fn, shape, *, solver="tsit5", rtol=1e-5, atol=1e-5, num_steps=None, eps=1e-3,
               denoise=False, max_steps=16384, x_init=None, mesh=None, dtype=None, return_info=False
               ) -> tuple[Float[Array, "b ..."], jax.Array]:
    """Sample by integrating the probability-flow ODE from a prior sample at ``T`` down to ``eps``.

    Args:
      key: PRNG key (only the prior sample is random).
      sde: a :class:`~sde_jax.SDE`.
      score_fn: ``score_fn(x, t) -> score``; a function or a pytree callable (its arrays are traced). It
        must treat examples independently (no batch statistics) and be ``vmap``-able: each example is solved
        as its own ODE. Adaptive solves call it on the whole batch (per device), each example at its own time
        and state (:func:`sde_jax.flow.batch_native`); fixed-step solves on batches of one under ``vmap``.
      shape: sample shape ``[B, ...]``.
      solver: a name in :data:`sde_jax.flow.SOLVERS`: ``"tsit5"``, ``"dopri5"``, ``"heun"`` (adaptive unless
        ``num_steps`` is given) or ``"euler"`` (fixed step only).
      rtol, atol: tolerances of the adaptive solvers (> 0).
      num_steps: if given, a fixed-step solve with this many uniform steps on ``linspace(T, eps, n + 1)``.
      eps: end time in ``(0, T)``.
      denoise: apply Tweedie's formula at ``eps`` (:func:`tweedie_denoise`, one more evaluation). The paper's
        code takes one noise-free reverse-diffusion step instead.
      max_steps: adaptive step budget per example; an example that exhausts it is NaN (see
        :mod:`sde_jax.flow` for the failure policy, the same for the likelihood).
      x_init: optional starting points at ``T`` (``shape``), e.g. latents to decode; default: prior samples
        drawn with ``key``.
      mesh: optional device mesh; the batch is sharded over its ``data`` axis, one solve loop per device.
      dtype: sample dtype (default: JAX's default float); 16-bit dtypes are solved in float32 and cast.
      return_info: also return a :class:`sde_jax.flow.FlowInfo` (per-example status, stop time, NFE).

    Returns:
      ``(x, nfe)`` (or ``(x, nfe, info)``): samples ``[B, ...]`` and the number of batched score evaluations,
      an int32 array: the evaluations of the slowest example (all examples advance together, so that is what
      the network computes), plus one for ``denoise``.
    """
    shape = C.check_shape(shape)
    config = flow.flow_config(solver, num_steps, max_steps)
    dtype = _jit.default_dtype(dtype)
    if x_init is not None and jnp.shape(x_init) != shape:
        raise ValueError(f"x_init must have shape {shape}; got {jnp.shape(x_init)}.")
    work = _jit.compute_dtype(dtype)                 # 16-bit dtypes: solved in float32, samples cast
    x_init = sde.prior_sampling(key, shape, work) if x_init is None else jnp.asarray(x_init, work)
    x, info = flow.decode(config, sde, score_fn, x_init, eps, rtol, atol, mesh, denoise, "ode_sample")
    x = x.astype(dtype)
    nfe = jnp.max(info.nfe) + int(bool(denoise))
    return (x, nfe, info) if return_info else (x, nfe)
