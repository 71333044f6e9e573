"""The probability-flow ODE core: one solver table, one per-example solve, one per-device wrapper.

Everything that integrates the probability-flow ODE (Song et al. 2021, Sec. 4.3)

.. math::  \\frac{dx}{dt} = \\tilde f(x, t) = f(x, t) - \\tfrac12 g(t)^2\\, s(x, t)

goes through this module: :func:`sde_jax.ode_sample` (``T -> eps``, from prior samples),
:func:`sde_jax.decode_latent` (``T -> eps``, from given latents) and :func:`sde_jax.log_likelihood`
(``eps -> T``, with the divergence integral appended to the state). The pieces:

* :data:`SOLVERS`: ``"dopri5"``, ``"tsit5"``, ``"heun"`` (adaptive or fixed step) and ``"euler"`` (fixed step
  only), with their evaluation counts as data (:class:`SolverSpec`).
* :func:`solve`: ONE example's solve (no batch axis): adaptively with diffrax (PID step-size controller,
  ``rtol``/``atol``, its forward-mode loop, which compiles fast and is not reverse-differentiable) or with
  ``num_steps`` uniform steps in a ``lax.scan`` (reverse-differentiable). Every example is its own ODE with
  its own step sizes, so a result never depends on its batch-mates.
* :func:`map_examples`: ``vmap`` over the batch and, with a device mesh, ``jax.shard_map`` so that each
  device runs its own loop on its shard with no cross-device communication inside it (adaptive solvers
  that synchronise devices inside the loop hang or crawl: the known failure of data-parallel ODE solves).
* :func:`batch_native`: under that ``vmap``, the vector field of an adaptive solve is evaluated for the whole
  batch at once (one ``score_fn`` call on the batch, each example at its own time and state) instead of a
  batch of one per example, which XLA:CPU runs up to 1.9x slower; fixed-step solves, which are reverse-mode
  differentiable, keep the per-example field (reverse mode does not pass the ``custom_vmap``).

**Failure policy (the same for every entry point).** An example whose adaptive solve exhausts ``max_steps``,
or whose state or vector field becomes non-finite, is *flagged*, not the batch failed: its result is ``NaN``,
its :class:`FlowInfo` status says why (``STATUS_MAX_STEPS`` / ``STATUS_NONFINITE``) and at which time the
solve stopped; the other examples' results are unaffected. A non-finite vector field stops that example's
solve at once (its remaining steps are not spent), instead of shrinking the step to ``max_steps``. The public
functions warn (:class:`FlowWarning`, naming the examples and times) when called outside a trace; under a
caller's ``jax.jit`` the NaNs and ``return_info=True`` are the signal.

NFE. A solve's vector-field evaluations: ``1 + 6 n`` for Dopri5/Tsit5 (FSAL: the first stage is evaluated
once and then each attempted step, accepted or rejected, costs 6), ``2 n`` for Heun, ``n`` for Euler
(:meth:`SolverSpec.nfe`). Under ``vmap`` the batched loop runs until the slowest example finishes, so the
batched evaluations made are the largest per-example count, which is what the entry points report.
"""
from __future__ import annotations

import warnings
from typing import Callable, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jax.sharding import PartitionSpec as P

from sde_jax import _checks as C
from sde_jax import _jit
from sde_jax.parallel import DATA_AXIS
from sde_jax.sdes import probability_flow_drift, tweedie_denoise

__all__ = ["SOLVERS", "SolverSpec", "FlowConfig", "FlowInfo", "FlowWarning", "STATUS_OK", "STATUS_MAX_STEPS",
           "STATUS_NONFINITE", "flow_config", "solve", "map_examples", "per_device_batch", "batch_native", "pf_field",
           "batched_pf_field", "integrate", "decode", "report"]

STATUS_OK, STATUS_MAX_STEPS, STATUS_NONFINITE = 0, 1, 2
_STATUS_TEXT = {STATUS_MAX_STEPS: "ran out of max_steps", STATUS_NONFINITE: "hit a non-finite state or score"}


class SolverSpec(NamedTuple):
    """Facts about a solver, as data.

    Attributes:
      make: ``() -> diffrax.AbstractSolver``.
      init_evals: vector-field evaluations before the first step (the FSAL seed).
      evals_per_step: new evaluations per attempted (accepted or rejected) step.
      adaptive: has an embedded error estimate, so ``rtol``/``atol`` step control is possible.
      order: the method's order of accuracy.
    """

    make: Callable[[], diffrax.AbstractSolver]
    init_evals: int
    evals_per_step: int
    adaptive: bool
    order: int

    def nfe(self, num_steps):
        """Evaluations of a solve that attempted ``num_steps`` steps."""
        return self.init_evals + self.evals_per_step * num_steps


SOLVERS = {
    "dopri5": SolverSpec(diffrax.Dopri5, 1, 6, True, 5),
    "tsit5": SolverSpec(diffrax.Tsit5, 1, 6, True, 5),
    "heun": SolverSpec(diffrax.Heun, 0, 2, True, 2),
    "euler": SolverSpec(diffrax.Euler, 0, 1, False, 1),
}


class FlowConfig(NamedTuple):
    """The static part of a solve (hashable; a new value compiles a new program)."""

    solver: str
    num_steps: int | None  # None: adaptive
    max_steps: int


class FlowInfo(NamedTuple):
    """Per-example outcome of a solve."""

    status: jax.Array  # [B], int32: STATUS_OK, STATUS_MAX_STEPS or STATUS_NONFINITE
    t_stop: jax.Array  # [B], float: the time the solve reached (the end time when it succeeded)
    nfe: jax.Array  # [B], int32: vector-field evaluations of that example's solve


class FlowWarning(RuntimeWarning):
    """Some examples of a probability-flow solve failed (their results are NaN)."""


def flow_config(solver: str, num_steps, max_steps) -> FlowConfig:
    """Validate the solver settings (one rule for every entry point)."""
    spec = C.lookup(SOLVERS, solver, "solver")
    num_steps = C.check_int("num_steps", num_steps, allow_none=True)
    if num_steps is None and not spec.adaptive:
        raise ValueError(f"solver {solver!r} is fixed-step: pass num_steps (it has no error estimate for adaptive "
                         f"steps), or use one of {sorted(k for k, v in SOLVERS.items() if v.adaptive)}.")
    return FlowConfig(solver, num_steps, C.check_int("max_steps", max_steps))


def pf_field(sde, score_fn):
    """Per-example probability-flow velocity ``(t, x) -> f(x, t) - 1/2 g(t)^2 s(x, t)``; ``x`` has no batch
    axis (the network sees a batch of one, which ``vmap`` turns back into the whole batch). Adaptive solves use
    :func:`batched_pf_field` instead."""

    def field(t, x):
        return probability_flow_drift(sde, score_fn, x[None], jnp.full((1,), t, x.dtype))[0]

    return field


def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(tree)]))


def _zero_nonfinite(tree):
    return jax.tree.map(lambda v: jnp.where(jnp.isfinite(v), v, jnp.zeros_like(v)), tree)


def solve(field, y0, t0, t1, config: FlowConfig, rtol, atol):
    """Integrate ``dy/dt = field(t, y)`` for ONE example from ``t0`` to ``t1`` (either direction).

    ``y0`` is any pytree of arrays without a batch axis. The state is guarded: a non-finite vector field is
    replaced by zeros for the step and recorded in a flag carried beside ``y`` (excluded from the error
    norm, so the step sizes of a healthy solve are unchanged), and a diffrax event stops the solve when the
    flag is set. A non-finite ``y0`` is solved from zeros and flagged.

    Returns:
      ``(y1, nfe, status, t_stop)``; ``y1`` is NaN where ``status != STATUS_OK``.
    """
    spec = SOLVERS[config.solver]
    solver = spec.make()
    y0_ok = _all_finite(y0)
    y0 = _zero_nonfinite(y0)
    dtype = jax.tree.leaves(y0)[0].dtype

    def guarded(t, state, args):
        y, _ = state
        f = field(t, y)
        ok = _all_finite(f)
        return _zero_nonfinite(f), jnp.where(ok, 0.0, 1.0).astype(dtype)   # the flag grows (or falls, t1 < t0)

    term = diffrax.ODETerm(guarded)
    state0 = (y0, jnp.zeros((), dtype))
    solver_state = solver.init(term, t0, t1, state0, None)
    if spec.init_evals:
        # FSAL solver: seed the first stage ourselves (one evaluation), so that diffrax never evaluates it
        # again (it would, after a rejection of the very first step). NFE is then exactly 1 + 6 n.
        first_step, _ = solver_state
        solver_state = (jnp.zeros_like(first_step), guarded(t0, state0, None))
    if config.num_steps is None:
        sol = diffrax.diffeqsolve(
            term, solver, t0, t1, dt0=None, y0=state0, solver_state=solver_state,
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol,
                                                      norm=lambda s: optx.rms_norm(s[0])),
            saveat=diffrax.SaveAt(t1=True), max_steps=config.max_steps, throw=False,
            event=diffrax.Event(lambda t, s, args, **kwargs: s[1] != 0), adjoint=diffrax.ForwardMode())
        (y1, flag) = jax.tree.map(lambda v: v[-1], sol.ys)
        steps, t_stop = sol.stats["num_steps"], sol.ts[-1]
        status = jnp.where(sol.result == diffrax.RESULTS.successful, STATUS_OK, STATUS_MAX_STEPS)
    else:
        ts = jnp.linspace(t0, t1, config.num_steps + 1)

        def body(carry, tt):
            s, ss = carry
            s, _, _, ss, _ = solver.step(term, tt[0], tt[1], s, None, ss, made_jump=False)
            return (s, ss), None

        ((y1, flag), _), _ = jax.lax.scan(body, (state0, solver_state), jnp.stack([ts[:-1], ts[1:]], axis=-1))
        steps, t_stop, status = jnp.asarray(config.num_steps), jnp.asarray(t1, dtype), jnp.asarray(STATUS_OK)
    bad = (flag != 0) | jnp.logical_not(y0_ok) | jnp.logical_not(_all_finite(y1))
    status = jnp.where(bad, STATUS_NONFINITE, status).astype(jnp.int32)
    t_stop = jnp.where(y0_ok, t_stop, t0).astype(dtype)
    nan = jnp.asarray(jnp.nan, dtype)
    y1 = jax.tree.map(lambda v: jnp.where(status == STATUS_OK, v, nan), y1)
    return y1, jnp.asarray(spec.nfe(steps), jnp.int32), status, t_stop


def map_examples(fn, batched, replicated, mesh=None):
    """``vmap(fn)`` over the leading axis of ``batched``, with ``replicated`` shared by every example.

    With a ``mesh``, ``jax.shard_map`` gives each device its shard and its own loop: no collective runs
    inside ``fn``. ``replicated`` may hold non-array leaves (callables): only its arrays cross the shard_map
    boundary.

    Args:
      fn: ``fn(*example_leaves_of_batched, replicated) -> pytree`` for one example.
      batched: tuple of arrays/pytrees ``[B, ...]``.
      replicated: pytree (e.g. ``(sde, score_fn, rtol, atol)``).
      mesh: optional device mesh with a ``data`` axis.
    """

    def per_shard(batched, replicated):
        return jax.vmap(lambda *ex: fn(*ex, replicated))(*batched)

    if mesh is None:
        return per_shard(batched, replicated)
    dynamic, static = eqx.partition(replicated, eqx.is_array)
    return jax.shard_map(lambda b, d: per_shard(b, eqx.combine(d, static)), mesh=mesh,
                         in_specs=(P(DATA_AXIS), P()), out_specs=P(DATA_AXIS), check_vma=False)(batched, dynamic)


def per_device_batch(batch: int, mesh) -> int:
    """The size of the ``vmap`` over examples inside :func:`map_examples`: ``batch`` over the mesh's devices."""
    return batch // (1 if mesh is None else mesh.shape[DATA_AXIS])


def batch_native(per_example, batched, example, batch: int):
    """``per_example`` whose ``vmap`` over ``batch`` examples calls ``batched`` once on the whole batch.

    The per-example solves (:func:`solve` under :func:`map_examples`) evaluate their vector field under ``vmap``:
    ``score_fn`` then sees a batch of one per example, which XLA:CPU runs up to 1.9x slower than one call on the
    batch (``benchmarks/likelihood_field.py``), and a per-example linearisation (the likelihood's divergence) is
    ``vmap``-ed too. This returns a function with ``per_example``'s values whose ``vmap`` rule
    (``jax.custom_batching.custom_vmap``) evaluates ``batched`` instead: the same function written for the batch
    (leading axis ``batch`` on every argument and result), e.g. :func:`sde_jax.sdes.probability_flow_drift`.

    Both functions are staged out here, at ``example``'s shapes (``jax.make_jaxpr``), so that every array they
    read, including values a plain-function ``score_fn`` closes over, enters the ``custom_vmap`` as an argument:
    its rule runs in another trace, where closed-over tracers would leak. The rule falls back to ``vmap``-ing
    ``per_example`` for another axis size or for constants that vary along the axis (the solves never do: their
    ``vmap`` is over ``batch`` examples sharing ``sde`` and ``score_fn``). Reverse mode does not pass a
    ``custom_vmap`` (``jax.linearize`` fails; ``jax.jvp`` works), so only forward-mode solves use this: the
    adaptive ones. The staged functions must not depend on anything but their arguments and constants (no
    Python state read at call time).

    Args:
      per_example: ``(*args) -> pytree`` for one example.
      batched: ``(*args) -> pytree`` with a leading axis ``batch`` on every leaf of the arguments and result.
      example: the arguments of one example (arrays or tracers; shapes and dtypes are what matter).
      batch: the size of the ``vmap`` that should call ``batched``.
    """
    leaves, tree = jax.tree.flatten(example)
    avals = [jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in leaves]
    one, out_shape = jax.make_jaxpr(lambda *a: per_example(*jax.tree.unflatten(tree, a)), return_shape=True)(*avals)
    whole = jax.make_jaxpr(lambda *a: batched(*jax.tree.unflatten(tree, a)))(
        *[jax.ShapeDtypeStruct((batch,) + a.shape, a.dtype) for a in avals])
    out_tree = jax.tree.structure(out_shape)

    def run(staged, consts, args):
        return jax.core.eval_jaxpr(staged.jaxpr, consts, *args)

    @jax.custom_batching.custom_vmap
    def call(consts, args):
        return run(one, consts[0], args)

    @call.def_vmap
    def _rule(axis_size, in_batched, consts, args):
        c_b, a_b = in_batched
        args = [a if b else jnp.broadcast_to(a, (axis_size,) + a.shape) for a, b in zip(args, a_b)]
        if axis_size == batch and not any(jax.tree.leaves(c_b)):
            out = run(whole, consts[1], args)
        else:
            axes = [0 if b else None for b in c_b[0]]
            out = jax.vmap(lambda c, a: run(one, c, a), in_axes=(axes, 0))(consts[0], args)
        return out, [True] * len(out)

    consts = (list(one.consts), list(whole.consts))

    def f(*args):
        flat = jax.tree.leaves(args)
        if jax.tree.structure(args) != tree:
            raise TypeError(f"batch_native: arguments {jax.tree.structure(args)} do not match the example's {tree}")
        return jax.tree.unflatten(out_tree, call(consts, [jnp.asarray(a, v.dtype) for a, v in zip(flat, avals)]))

    return f


def batched_pf_field(sde, score_fn, t0, x0, batch: int):
    """:func:`pf_field` (one example), evaluated for the whole batch under the solve's ``vmap``
    (:func:`batch_native`)."""
    return batch_native(pf_field(sde, score_fn), lambda t, x: probability_flow_drift(sde, score_fn, x, t),
                        (t0, x0), batch)


@eqx.filter_jit
def integrate(config: FlowConfig, mesh, sde, score_fn, x, t0, t1, rtol, atol):
    """Solve the probability-flow ODE for every example of ``x: [B, ...]`` from ``t0`` to ``t1``.

    Returns:
      ``(x1 [B, ...], FlowInfo)``.
    """

    batch = per_device_batch(x.shape[0], mesh)

    def one(xi, rep):
        sde, score_fn, t0, t1, rtol, atol = rep
        field = (pf_field(sde, score_fn) if config.num_steps is not None        # reverse-differentiable
                 else batched_pf_field(sde, score_fn, t0, xi, batch))
        y1, nfe, status, t_stop = solve(field, xi, t0, t1, config, rtol, atol)
        return y1, FlowInfo(status, t_stop, nfe)

    return map_examples(one, (x,), (sde, score_fn, t0, t1, rtol, atol), mesh)


def decode(config: FlowConfig, sde, score_fn, x, eps, rtol, atol, mesh, denoise: bool, what: str):
    """``T -> eps`` for every example of ``x`` (prior samples or latents), then optionally Tweedie's
    denoising at ``eps``: the one driver under :func:`sde_jax.ode_sample` and :func:`sde_jax.decode_latent`.
    Checks the arguments, runs one jitted program and reports failed examples.

    Returns:
      ``(x [B, ...], FlowInfo)``.
    """
    C.check_data("x", x, min_ndim=1)
    C.check_mesh(mesh, jnp.shape(x)[0])
    eps = C.check_eps(eps, sde)
    rtol, atol = C.check_positive("rtol", rtol), C.check_positive("atol", atol)
    out_dtype = jnp.result_type(x)
    dtype = _jit.compute_dtype(out_dtype)            # 16-bit inputs are solved in float32
    x, info = _decode(config, mesh, _jit.as_leaves(sde, dtype, convert_arrays=True),
                      _jit.as_leaves(score_fn, dtype), jnp.asarray(x, dtype), jnp.asarray(eps, dtype),
                      jnp.asarray(rtol, dtype), jnp.asarray(atol, dtype), bool(denoise))
    report(info, what)
    return x.astype(out_dtype), info


@eqx.filter_jit
def _decode(config, mesh, sde, score_fn, x, eps, rtol, atol, denoise):
    x, info = integrate(config, mesh, sde, score_fn, _jit.constrainer(mesh)(x), jnp.asarray(sde.T, x.dtype), eps, rtol, atol)
    if denoise:
        x = tweedie_denoise(sde, score_fn, x, jnp.full((x.shape[0],), eps, x.dtype))
    return x, info


def report(info: FlowInfo, what: str) -> None:
    """Warn (:class:`FlowWarning`) naming the examples whose solve failed; silent under a trace."""
    if not C.is_concrete(info):
        return
    status = np.asarray(info.status)
    bad = np.flatnonzero(status != STATUS_OK)
    if not bad.size:
        return
    t_stop = np.asarray(info.t_stop)
    parts = []
    for code, text in _STATUS_TEXT.items():
        idx = bad[status[bad] == code]
        if idx.size:
            shown = ", ".join(f"{int(i)} (t={float(t_stop[i]):.4g})" for i in idx[:10])
            parts.append(f"{idx.size} {text}: examples {shown}{', ...' if idx.size > 10 else ''}")
    warnings.warn(f"{what}: {bad.size} of {status.size} examples failed and are NaN; " + "; ".join(parts)
                  + ". Others are unaffected. Increase max_steps or loosen rtol/atol for the first kind; "
                    "check the score function for the second.", FlowWarning, stacklevel=3)
