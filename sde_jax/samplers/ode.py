"""Probability-flow ODE sampling on the device (Song et al. 2021, Sec. 4.3).

``dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t)`` is integrated from ``t = T`` (a prior sample) down to ``eps``:

* adaptively with diffrax (``"tsit5"`` or ``"dopri5"``, PID step-size controller, ``rtol``/``atol``; its
  forward-mode loop, which compiles faster and is not reverse-differentiable). Each
  example is its own ODE with its own step sizes (the solve is ``vmap``-ed over the batch), so a sample
  does not depend on its batch-mates, and under a mesh each device solves its shard with no cross-device
  communication inside the adaptive loop (``shard_map``);
* or with a fixed-step ``lax.scan`` (``"euler"``, ``"heun"``) on the grid ``linspace(T, eps, num_steps + 1)``.

The paper's code solves this ODE with scipy's RK45 on the host, one device-to-host copy per evaluation.
"""
from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from sde_jax.parallel import DATA_AXIS
from sde_jax.samplers import _common as C
from sde_jax.sdes import batch_broadcast, check_score, probability_flow_drift

__all__ = ["ode_sample", "ADAPTIVE_SOLVERS", "FIXED_STEP_SOLVERS", "tweedie_denoise", "adaptive_nfe"]

ADAPTIVE_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5}
# Score evaluations per step of each fixed-step solver.
FIXED_STEP_SOLVERS = {"euler": 1, "heun": 2}


def adaptive_nfe(num_steps):
    """True vector-field evaluations of a diffrax FSAL 7-stage solve (Tsit5, Dopri5) with an automatically
    chosen first step: 1 for the first stage (the initial step-size selection reuses it), then 6 per attempted
    step (accepted or rejected; the last stage is reused as the next first). Checked against a counter of
    actual calls in ``tests/test_ode.py``."""
    return 1 + 6 * num_steps


def tweedie_denoise(sde, score_fn, x, t):
    """Posterior mean ``E[x_0 | x_t] = (x_t + s(t)^2 score(x_t, t)) / a(t)`` (Tweedie's formula for the
    Gaussian kernel ``x_t = a(t) x_0 + s(t) z``): one score evaluation."""
    score = check_score(score_fn(x, t), x)
    a, s = sde.marginal_mean_coeff(t), sde.marginal_std(t)
    return (x + batch_broadcast(s**2, x) * score) / batch_broadcast(a, x)


def ode_sample(key, sde, score_fn, shape, *, solver="tsit5", rtol=1e-5, atol=1e-5, num_steps=None, eps=1e-3,
               denoise=False, max_steps=16384, x_init=None, mesh=None, dtype=None):
    """Sample by integrating the probability-flow ODE from a prior sample at ``T`` down to ``eps``.

    Args:
      key: PRNG key (only the prior sample is random).
      sde: a :class:`~sde_jax.SDE`.
      score_fn: ``score_fn(x, t) -> score``; a function or a pytree callable.
      shape: sample shape ``[B, ...]``.
      solver: ``"tsit5"`` or ``"dopri5"`` (adaptive, diffrax) or ``"euler"`` / ``"heun"`` (fixed step).
      rtol, atol: tolerances of the adaptive solvers (> 0).
      num_steps: number of steps of a fixed-step solver (required for them, unused otherwise).
      eps: end time in ``(0, T)``.
      denoise: apply Tweedie's formula at ``eps`` (:func:`tweedie_denoise`, one more evaluation). The paper's
        code takes one noise-free reverse-diffusion step instead.
      max_steps: adaptive step limit; exceeding it raises an error at run time.
      x_init: optional starting points at ``T`` (``shape``), e.g. latents to decode; default: prior samples
        drawn with ``key``.
      mesh: optional device mesh; the batch is sharded over its ``data`` axis.
      dtype: sample dtype (default: JAX's default float).

    Returns:
      ``(x, nfe)``: samples ``[B, ...]`` and the number of batched score evaluations. For fixed-step
      solvers a Python int; for adaptive ones an int32 array: the evaluations of the slowest example (all
      examples advance together, so that is what the network computes), see :func:`adaptive_nfe`.
    """
    shape = C.check_shape(shape)
    if solver not in ADAPTIVE_SOLVERS and solver not in FIXED_STEP_SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; valid names: {sorted({**ADAPTIVE_SOLVERS, **FIXED_STEP_SOLVERS})}.")
    C.check_eps(eps, sde)
    C.check_mesh(mesh, shape[0])
    dtype = C.default_dtype(dtype)
    if x_init is not None and jnp.shape(x_init) != shape:
        raise ValueError(f"x_init must have shape {shape}; got {jnp.shape(x_init)}.")
    if x_init is None:
        x_init = sde.prior_sampling(key, shape, dtype)
    x_init = jnp.asarray(x_init, dtype)
    sde_a, eps_a = C.as_leaves(sde, dtype), C.as_leaves(eps, dtype)
    extra = 1 if denoise else 0
    if solver in FIXED_STEP_SOLVERS:
        if num_steps is None:
            raise ValueError(f"solver {solver!r} is fixed-step: pass num_steps.")
        num_steps = C.check_positive_int("num_steps", num_steps)
        x = _fixed_step(x_init, sde_a, score_fn, eps_a, solver, num_steps, bool(denoise), mesh)
        return x, FIXED_STEP_SOLVERS[solver] * num_steps + extra
    C.check_positive("rtol", rtol)
    C.check_positive("atol", atol)
    max_steps = C.check_positive_int("max_steps", max_steps)
    x, steps = _adaptive(x_init, sde_a, score_fn, eps_a, C.as_leaves(rtol, dtype), C.as_leaves(atol, dtype),
                         solver, max_steps, bool(denoise), mesh)
    return x, adaptive_nfe(steps) + extra


def _maybe_denoise(sde, score_fn, x, eps, denoise):
    if not denoise:
        return x
    return tweedie_denoise(sde, score_fn, x, jnp.full((x.shape[0],), eps, x.dtype))


@eqx.filter_jit
def _fixed_step(x, sde, score_fn, eps, solver, num_steps, denoise, mesh):
    constrain = C.constrainer(mesh)
    x = constrain(x)
    dtype, batch = x.dtype, x.shape[0]
    ts = jnp.linspace(jnp.asarray(sde.T, dtype), eps, num_steps + 1, dtype=dtype)

    def velocity(x, t):
        return probability_flow_drift(sde, score_fn, x, jnp.full((batch,), t))

    def step(x, inputs):
        t, t_next = inputs
        dt = t_next - t
        k1 = velocity(x, t)
        if solver == "euler":
            return constrain(x + dt * k1), None
        k2 = velocity(x + dt * k1, t_next)
        return constrain(x + 0.5 * dt * (k1 + k2)), None

    x, _ = jax.lax.scan(step, x, (ts[:-1], ts[1:]))
    return _maybe_denoise(sde, score_fn, x, eps, denoise)


def _solve_each(sde, score_fn, x, eps, rtol, atol, solver, max_steps):
    """Per-example adaptive solves (vmapped): returns ``x(eps)`` and the largest step count."""

    def one(x1):
        def vf(t, y, args):
            return probability_flow_drift(sde, score_fn, y[None], jnp.full((1,), t, y.dtype))[0]

        term, solve, t0 = diffrax.ODETerm(vf), ADAPTIVE_SOLVERS[solver](), jnp.asarray(sde.T, x1.dtype)
        # Seed the FSAL first stage ourselves (one evaluation, shared with the initial step-size selection),
        # so that diffrax does not evaluate it again after a rejection of the very first step (it would: the
        # count was then 1 + 6 n + 1, found with a call counter at rtol = atol = 1e-9).
        first_step, _ = solve.init(term, t0, eps, x1, None)
        state = (jnp.zeros_like(first_step), vf(t0, x1, None))
        sol = diffrax.diffeqsolve(
            term, solve, t0=t0, t1=eps, dt0=None, y0=x1, solver_state=state,
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps,
            saveat=diffrax.SaveAt(t1=True), adjoint=diffrax.ForwardMode())
        return sol.ys[0], sol.stats["num_steps"]

    y, steps = jax.vmap(one)(x)
    return y, jnp.max(steps)


@eqx.filter_jit
def _adaptive(x, sde, score_fn, eps, rtol, atol, solver, max_steps, denoise, mesh):
    if mesh is None:
        y, steps = _solve_each(sde, score_fn, x, eps, rtol, atol, solver, max_steps)
    else:
        x = C.constrainer(mesh)(x)
        params, static = eqx.partition((sde, score_fn, eps, rtol, atol), eqx.is_array)

        def local(params, x):
            sde, score_fn, eps, rtol, atol = eqx.combine(params, static)
            y, steps = _solve_each(sde, score_fn, x, eps, rtol, atol, solver, max_steps)
            return y, steps[None]

        y, steps = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=(P(DATA_AXIS), P(DATA_AXIS)),
                                 check_vma=False)(params, x)
        steps = jnp.max(steps)
    return _maybe_denoise(sde, score_fn, y, eps, denoise), steps
