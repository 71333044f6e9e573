"""Sampling and likelihood cases: each sampler against the same number of bare network evaluations.

Every sampler call is compiled ahead of time as ``jax.jit`` of the public function (``pc_sample``,
``ode_sample``, ``run_chain`` over ``ula_step`` / ``mala_step``, ``annealed_langevin``,
``log_likelihood``), so the timed program is the library's own (its internal ``equinox.filter_jit`` is
inlined) and its compile time and memory are measured apart. The limit is built by
:mod:`benchmarks.networks` with the sampler's NFE, batch size and dtype.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

import sde_jax as sj
from sde_jax._pytree import pytree_dataclass, static_field
from benchmarks.common import Context, guarded, limit_entry, measure, record
from benchmarks.networks import Network, forward_limit, logdensity_from, value_grad_limit
from benchmarks.timing import aot_compile

__all__ = ["FixedTimeScore", "NoiseConditionalScore", "NetworkLogDensity", "Program", "pc_program", "ode_program",
           "ula_program", "mala_program", "ald_program", "fast_program", "sampling_case", "run_sampling",
           "likelihood_case", "run_likelihood", "PC_PAIRS", "FAST_SAMPLERS"]

PC_PAIRS = [(p, c) for p in ("euler_maruyama", "reverse_diffusion", "ancestral", "none")
            for c in ("langevin", "ald", "none") if (p, c) != ("none", "none")]
"""Every predictor/corrector pair the PC sampler accepts (both 'none' is an error)."""

FAST_SAMPLERS = [("ddim", 20, {}), ("ddim", 20, {"eta": 1.0}), ("edm_heun", 10, {}),
                 ("edm_stochastic", 10, {"S_churn": 10.0}), ("dpm_solver++", 20, {}),
                 ("dpm_solver++", 20, {"order": 3}), ("dpm_solver", 6, {}), ("adaptive_sde", None, {})]
"""The fast samplers of :func:`sde_jax.sample` timed by the quick suite: (method, num_steps, options)."""

ULA_STEP_SIZE = 1e-3
MALA_STEP_SIZE = 1e-3
ULA_TIME = 0.5  # ULA / MALA target: the network at a fixed time


# --------------------------------------------------------------------------------------------------
# Pytree adapters: the network's parameters stay traced arguments (no constants baked into programs).


@pytree_dataclass
class FixedTimeScore:
    """``score(x) = score_fn(x, t)`` at a fixed time ``t`` (for ULA, whose score has no time argument)."""

    score_fn: Any
    t: jax.Array  # [], float

    def __call__(self, x):
        return self.score_fn(x, jnp.full(x.shape[:1], self.t, x.dtype))


@pytree_dataclass
class NoiseConditionalScore:
    """``score(x, sigma) = apply(params, x, sigma) / sigma`` (NCSN's scaled output; annealed Langevin)."""

    params: Any
    apply: Callable = static_field()

    def __call__(self, x, sigma):
        out = self.apply(self.params, x, sigma)
        return out / jnp.reshape(sigma, sigma.shape + (1,) * (x.ndim - 1))


@pytree_dataclass
class NetworkLogDensity:
    """``logp(x) = -1/2 ||apply(params, x, labels)||^2`` per chain (MALA needs a log-density)."""

    params: Any
    labels: jax.Array  # [n], float
    apply: Callable = static_field()

    def __call__(self, x):
        return logdensity_from(self.apply)(self.params, x, self.labels)


# --------------------------------------------------------------------------------------------------
# Sampler programs: (fn, args, nfe, limit layout).


@dataclasses.dataclass
class Program:
    """A jittable sampler call ``fn(*args)`` and the facts its limit needs."""

    fn: Callable
    args: tuple
    nfe: Any                 # int; a callable () -> int (read after tracing); None: the program's 2nd output
    layout: Callable         # nfe -> (outer, inner): groups of evaluations that share a label
    labels: Any              # limit labels: [] when the sampler broadcasts one time to the batch, else [B]
    samples: int             # samples per call
    limit: str = "forward"   # "forward" | "value_grad"
    offsets: Any = None      # [outer] label offsets of the limit (default zeros)


def _x0(net: Network, batch: int, seed: int = 2):
    return jax.random.normal(jax.random.key(seed), (batch,) + net.data_shape, jnp.float32)


def pc_program(net: Network, batch: int, num_steps: int, predictor: str, corrector: str, n_corr: int = 1):
    sde = net.make_sde(num_steps)
    score_fn = net.make_score_fn(sde, net.params)
    shape = (batch,) + net.data_shape
    captured = {}

    def fn(key, score_fn):
        x, captured["nfe"] = sj.pc_sample(key, sde, score_fn, shape, predictor=predictor, corrector=corrector,
                                          n_corrector_steps=n_corr, num_steps=num_steps)
        return x

    # nfe (a Python int, the library's count) is known once fn is traced; a step's evaluations share t.
    return Program(fn=fn, args=(jax.random.key(1), score_fn), nfe=lambda: captured["nfe"],
                   layout=lambda n: (num_steps, n // num_steps),
                   labels=net.labels(sde, 1)[0], samples=batch)


def ode_program(net: Network, batch: int, solver: str, num_steps=None, tol=1e-3, max_steps=16384):
    sde = net.make_sde(1000)
    score_fn = net.make_score_fn(sde, net.params)
    shape = (batch,) + net.data_shape
    fixed = solver in ("euler", "heun")

    def fn(key, score_fn):
        x, nfe = sj.ode_sample(key, sde, score_fn, shape, solver=solver, num_steps=num_steps, rtol=tol, atol=tol,
                               max_steps=max_steps)
        return x, jnp.asarray(nfe)

    nfe = (num_steps * (1 if solver == "euler" else 2)) if fixed else None
    # Every evaluation is at its own time (Heun: t and t_next; adaptive: each stage).
    # Fixed-step solvers broadcast one time to the batch; adaptive solves are per example (vmapped), each
    # example at its own time, so the labels are a batch.
    return Program(fn=fn, args=(jax.random.key(1), score_fn), nfe=nfe, layout=lambda n: (n, 1),
                   labels=net.labels(sde, 1)[0] if fixed else net.labels(sde, batch), samples=batch)


def ula_program(net: Network, batch: int, num_steps: int, trajectory_every: int = 0):
    sde = net.make_sde(1000)
    score = FixedTimeScore(net.make_score_fn(sde, net.params), jnp.asarray(ULA_TIME, jnp.float32))

    def fn(key, score, x0):
        state = sj.samplers.ula_init(x0, score)
        out = sj.run_chain(key, lambda k, s: sj.ula_step(k, s, score, ULA_STEP_SIZE), state, num_steps,
                           trajectory_every=trajectory_every)
        return (out[0].position, out[2]) if trajectory_every else out[0].position

    return Program(fn=fn, args=(jax.random.key(1), score, _x0(net, batch)), nfe=num_steps + 1,
                   layout=lambda n: (1, n), labels=net.labels(sde, 1, ULA_TIME)[0], samples=batch)


def mala_program(net: Network, batch: int, num_steps: int):
    sde = net.make_sde(1000)
    labels = net.labels(sde, batch, ULA_TIME)
    logdensity = NetworkLogDensity(net.params, labels, net.apply)

    def fn(key, logdensity, x0):
        state = sj.samplers.mala_init(x0, logdensity)
        state, info = sj.run_chain(key, lambda k, s: sj.mala_step(k, s, logdensity, MALA_STEP_SIZE), state,
                                   num_steps)
        return state.position, jnp.mean(info.acceptance_rate)

    return Program(fn=fn, args=(jax.random.key(1), logdensity, _x0(net, batch)), nfe=num_steps + 1,
                   layout=lambda n: (1, n), limit="value_grad", labels=labels, samples=batch)


def ald_program(net: Network, batch: int, num_levels: int, n_each: int):
    sigmas = jnp.geomspace(10.0, 0.01, num_levels).astype(jnp.float32)
    score = NoiseConditionalScore(net.params, net.apply)

    def fn(key, score, x0):
        return sj.annealed_langevin(key, score, x0, sigmas, step_size=2e-5, n_steps_each=n_each)[0]

    # Labels are sigma_i, constant over each level's n_each evaluations: the limit's offsets are the sigmas.
    return Program(fn=fn, args=(jax.random.key(1), score, _x0(net, batch)), nfe=num_levels * n_each,
                   layout=lambda n: (num_levels, n_each), labels=jnp.zeros((), jnp.float32),
                   samples=batch, offsets=sigmas)


def fast_program(net: Network, batch: int, method: str, num_steps, options: dict):
    """A fast sampler through :func:`sde_jax.sample`. Fixed-grid samplers evaluate the network at one time per
    evaluation (broadcast to the batch); the adaptive SDE solver per example (a batch of times)."""
    sde = net.make_sde(1000)
    score_fn = net.make_score_fn(sde, net.params)
    shape = (batch,) + net.data_shape
    adaptive = method == "adaptive_sde"

    def fn(key, score_fn):
        x, nfe = sj.sample(key, sde, score_fn, shape, method=method, num_steps=num_steps, **options)
        return x, jnp.asarray(nfe)

    return Program(fn=fn, args=(jax.random.key(1), score_fn), nfe=None, layout=lambda n: (n, 1),
                   labels=net.labels(sde, batch) if adaptive else net.labels(sde, 1)[0], samples=batch)


# --------------------------------------------------------------------------------------------------
# Measurement.


def _limit_program(net: Network, prog: Program, nfe: int, batch: int):
    x = _x0(net, batch, seed=3)
    if prog.limit == "value_grad":
        fn = value_grad_limit(net.apply, nfe)
        return fn, (net.params, x, prog.labels), f"{nfe} x value+grad of -|apply|^2/2 (lax.scan)"
    outer, inner = prog.layout(nfe)
    if outer * inner != nfe:
        raise AssertionError(f"limit layout {outer}x{inner} != nfe {nfe}")
    offsets = jnp.zeros((outer,), jnp.float32) if prog.offsets is None else prog.offsets
    fn = forward_limit(net.apply, outer, inner)
    return fn, (net.params, x, prog.labels, offsets), f"{nfe} x apply (lax.scan, {outer} label groups of {inner})"


def sampling_case(ctx: Context, net: Network, *, case_id: str, entry_point: str, prog: Program, batch: int,
                  num_steps, config: dict, extra_out: str | None = None):
    """Compile the sampler and its limit, time both interleaved, and return the record."""
    compiled = aot_compile(prog.fn, *prog.args)
    extra = {}
    nfe = prog.nfe() if callable(prog.nfe) else prog.nfe
    if nfe is None or extra_out:
        out = jax.block_until_ready(compiled(*prog.args))
        if nfe is None:
            nfe = int(out[1])
        if extra_out:
            extra[extra_out] = float(out[1])
    lim_fn, lim_args, what = _limit_program(net, prog, nfe, batch)
    lim = aot_compile(lim_fn, *lim_args)
    last = {}

    def limit_call():
        last["out"] = lim(*lim_args)
        return last["out"]

    sums, status, note = measure(ctx, {"run": lambda: compiled(*prog.args), "limit": limit_call})
    run, lsum = sums["run"], sums["limit"]
    # A diverging carry (inf/nan) could run at a different speed: record that it stayed finite.
    extra["limit_output_finite"] = bool(jnp.all(jnp.isfinite(jax.tree.leaves(last["out"])[0])))
    ok = status == "ok"
    ratio = lsum["min_s"] / run["min_s"] if ok else None
    ratio_med = lsum["median_s"] / run["median_s"] if ok else None
    thr = dict(samples_per_s=prog.samples / run["min_s"], evals_per_s=nfe * batch / run["min_s"],
               limit_evals_per_s=nfe * batch / lsum["min_s"]) if ok else None
    return record(ctx, id=case_id, group="sampling", entry_point=entry_point, network=net, batch=batch,
                  num_steps=num_steps, nfe=nfe, config=config, compiled=compiled, run=run,
                  limit=limit_entry(what, nfe, lim, lsum), ratio=ratio, ratio_median=ratio_med, throughput=thr,
                  status=status, note=note, extra=extra)


def run_sampling(ctx: Context, net: Network, p: dict) -> None:
    """The sampling cases of suite parameters ``p`` for ``net``."""
    seen = set()

    def pc(batch, steps, pred, corr, n_corr=1):
        cid = f"sampling/{net.name}/pc/{pred}+{corr}/b{batch}/n{steps}" + (f"/c{n_corr}" if n_corr != 1 else "")
        if cid in seen:
            return
        seen.add(cid)
        guarded(ctx, cid, "sampling", "pc_sample", lambda: sampling_case(
            ctx, net, case_id=cid, entry_point="pc_sample", prog=pc_program(net, batch, steps, pred, corr, n_corr),
            batch=batch, num_steps=steps, config=dict(predictor=pred, corrector=corr, n_corrector_steps=n_corr,
                                                      snr=0.16, sde=type(net.make_sde(steps)).__name__)),
                network=net, batch=batch, num_steps=steps)

    for pred, corr in p.get("pc_pairs", []):
        pc(p["pairs_batch"], p["pairs_steps"], pred, corr)
    for batch in p.get("pc_batches", []):
        pc(batch, p["pc_batch_steps"], "reverse_diffusion", "langevin")
    for steps in p.get("pc_steps", []):
        pc(p["pc_steps_batch"], steps, "reverse_diffusion", "langevin")
    for batch in p.get("pc_none_batches", []):
        pc(batch, p["pc_batch_steps"], "reverse_diffusion", "none")

    for solver, steps in p.get("ode", []):
        for batch in p.get("ode_batches", []):
            tol = p.get("ode_tol", 1e-3)
            cid = f"sampling/{net.name}/ode/{solver}/b{batch}" + (f"/n{steps}" if steps else f"/tol{tol:g}")
            guarded(ctx, cid, "sampling", "ode_sample", lambda solver=solver, steps=steps, batch=batch, cid=cid, tol=tol:
                    sampling_case(ctx, net, case_id=cid, entry_point="ode_sample",
                                  prog=ode_program(net, batch, solver, steps, tol), batch=batch, num_steps=steps,
                                  config=dict(solver=solver, rtol=None if steps else tol, atol=None if steps else tol,
                                              adaptive=steps is None)),
                    network=net, batch=batch, num_steps=steps)

    for method, steps, options in p.get("fast", []):
        for batch in p.get("fast_batches", []):
            opts = "".join(f"/{k}{v:g}" for k, v in sorted(options.items()))
            cid = f"sampling/{net.name}/{method}{opts}/b{batch}" + (f"/n{steps}" if steps else "")
            guarded(ctx, cid, "sampling", "sample", lambda method=method, steps=steps, options=options, batch=batch,
                    cid=cid: sampling_case(ctx, net, case_id=cid, entry_point=f"sample(method={method!r})",
                                           prog=fast_program(net, batch, method, steps, options), batch=batch,
                                           num_steps=steps, config=dict(method=method, **options)),
                    network=net, batch=batch, num_steps=steps)

    if net.kind != "mlp":
        return
    ula = [(b, p["ula_batch_steps"]) for b in p.get("ula_batches", [])]
    ula += [(p["ula_steps_batch"], n) for n in p.get("ula_steps", [])]
    for batch, steps in dict.fromkeys(ula):
        cid = f"sampling/{net.name}/ula/b{batch}/n{steps}"
        guarded(ctx, cid, "sampling", "run_chain(ula_step)", lambda batch=batch, steps=steps, cid=cid:
                sampling_case(ctx, net, case_id=cid, entry_point="run_chain(ula_step)",
                              prog=ula_program(net, batch, steps), batch=batch, num_steps=steps,
                              config=dict(step_size=ULA_STEP_SIZE, t=ULA_TIME)),
                network=net, batch=batch, num_steps=steps)
    for batch in p.get("mala_batches", []):
        steps = p["mala_steps"]
        cid = f"sampling/{net.name}/mala/b{batch}/n{steps}"
        guarded(ctx, cid, "sampling", "run_chain(mala_step)", lambda batch=batch, steps=steps, cid=cid:
                sampling_case(ctx, net, case_id=cid, entry_point="run_chain(mala_step)",
                              prog=mala_program(net, batch, steps), batch=batch, num_steps=steps,
                              config=dict(step_size=MALA_STEP_SIZE, t=ULA_TIME, logdensity="-|apply|^2/2"),
                              extra_out="acceptance_rate"),
                network=net, batch=batch, num_steps=steps)
    for batch in p.get("ald_batches", []):
        levels, each = p["ald"]
        cid = f"sampling/{net.name}/ald/b{batch}/L{levels}x{each}"
        guarded(ctx, cid, "sampling", "annealed_langevin", lambda batch=batch, cid=cid:
                sampling_case(ctx, net, case_id=cid, entry_point="annealed_langevin",
                              prog=ald_program(net, batch, levels, each), batch=batch, num_steps=levels * each,
                              config=dict(num_levels=levels, n_steps_each=each, step_size=2e-5)),
                network=net, batch=batch, num_steps=levels * each)


# --------------------------------------------------------------------------------------------------
# Likelihood.


def likelihood_case(ctx: Context, net: Network, *, case_id: str, batch: int, divergence: str, tol: float,
                    num_probes: int = 1):
    sde = net.make_sde(1000)
    score_fn = net.make_score_fn(sde, net.params)
    x = 0.5 * _x0(net, batch, seed=4)

    def fn(key, score_fn, x):
        logp, nfe = sj.log_likelihood(key, sde, score_fn, x, divergence=divergence, num_probes=num_probes,
                                      rtol=tol, atol=tol)
        return logp, nfe

    args = (jax.random.key(1), score_fn, x)
    compiled = aot_compile(fn, *args)
    logp, nfe = jax.block_until_ready(compiled(*args))
    nfe = int(nfe)
    lim_fn = forward_limit(net.apply, nfe, 1)
    lim_args = (net.params, _x0(net, batch, seed=3), net.labels(sde, batch), jnp.zeros((nfe,), jnp.float32))
    lim = aot_compile(lim_fn, *lim_args)
    sums, status, note = measure(ctx, {"run": lambda: compiled(*args), "limit": lambda: lim(*lim_args)})
    run, lsum = sums["run"], sums["limit"]
    ok = status == "ok"
    what = (f"{nfe} x apply, forward only (the divergence adds "
            + (f"{x.shape[-1]} JVPs" if divergence == "exact" else f"{num_probes} VJP(s)") + " per evaluation)")
    return record(ctx, id=case_id, group="likelihood", entry_point="log_likelihood", network=net, batch=batch,
                  nfe=nfe, config=dict(divergence=divergence, solver="dopri5", rtol=tol, atol=tol,
                                       num_probes=num_probes if divergence == "hutchinson" else None),
                  compiled=compiled, run=run, limit=limit_entry(what, nfe, lim, lsum),
                  ratio=lsum["min_s"] / run["min_s"] if ok else None,
                  ratio_median=lsum["median_s"] / run["median_s"] if ok else None,
                  throughput=dict(examples_per_s=batch / run["min_s"], evals_per_s=nfe * batch / run["min_s"])
                  if ok else None, status=status, note=note,
                  extra=dict(logp_finite=bool(jnp.all(jnp.isfinite(logp))), logp_mean=float(jnp.nanmean(logp))))


def run_likelihood(ctx: Context, net: Network, p: dict) -> None:
    if net.kind != "mlp":
        return
    for batch in p.get("lik_batches", []):
        for div in p.get("lik_divergences", []):
            tol = p.get("lik_tol", 1e-3)
            cid = f"likelihood/{net.name}/{div}/b{batch}/tol{tol:g}"
            guarded(ctx, cid, "likelihood", "log_likelihood", lambda batch=batch, div=div, cid=cid, tol=tol:
                    likelihood_case(ctx, net, case_id=cid, batch=batch, divergence=div, tol=tol),
                    network=net, batch=batch)
