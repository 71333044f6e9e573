"""Compile time and peak memory of each jitted entry point as the number of steps grows (100 -> 10,000).

Every loop is a ``lax.scan`` (or a ``while_loop`` for adaptive solves), so neither the compiled program nor
its memory should depend on the step count. Each entry point is lowered and compiled ahead of time at each
step count (``trials`` times, fastest kept, step counts interleaved); memory comes from the executable's
``memory_analysis()``. A positive control keeps the trajectory (``run_chain(trajectory_every=1)``): its
output, and so its peak memory, must grow with the steps.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import cases
from benchmarks.common import Context, guarded, record
from benchmarks.networks import Network
from benchmarks.timing import aot_compile
from benchmarks.train_cases import train_setup

__all__ = ["ENTRY_POINTS", "run_compile", "COMPILE_GROWTH_TARGET"]

COMPILE_GROWTH_TARGET = 0.20  # compile time within 20% from the fewest to the most steps
SCALARS_PER_STEP_BYTES = 64   # memory growth up to this many bytes per step counts as flat (a few scalars)


def _pc(net, batch, n):
    prog = cases.pc_program(net, batch, n, "reverse_diffusion", "langevin")
    return prog.fn, prog.args


def _ode_euler(net, batch, n):
    prog = cases.ode_program(net, batch, "euler", n)
    return prog.fn, prog.args


def _ode_tsit5(net, batch, n):
    prog = cases.ode_program(net, batch, "tsit5", None, max_steps=n)
    return prog.fn, prog.args


def _ula(net, batch, n):
    prog = cases.ula_program(net, batch, n)
    return prog.fn, prog.args


def _ula_traj(net, batch, n):
    prog = cases.ula_program(net, batch, n, trajectory_every=1)
    return prog.fn, prog.args


def _mala(net, batch, n):
    prog = cases.mala_program(net, batch, n)
    return prog.fn, prog.args


def _ald(net, batch, n):
    prog = cases.ald_program(net, batch, 10, max(1, n // 10))
    return prog.fn, prog.args


def _train(net, batch, n):
    s = train_setup(net, batch)
    fn = s.training.make_train_fn(s.train_step, s.batch_fn, n)
    return fn, (s.state(), jax.random.key(7), jax.random.key(8))


def _likelihood_fixed(net, batch, n):
    import sde_jax as sj

    sde = net.make_sde(1000)

    def fn(score_fn, x):
        return sj.log_likelihood(None, sde, score_fn, x, solver="heun", num_steps=n)[0]

    return fn, (net.make_score_fn(sde, net.params), jnp.zeros((batch,) + net.data_shape, jnp.float32))


# name -> (entry point, builder(net, batch, n) -> (fn or jitted, args), what n is, memory expected flat)
ENTRY_POINTS = {
    "pc_sample": ("pc_sample", _pc, "num_steps", True),
    "ode_sample_euler": ("ode_sample", _ode_euler, "num_steps", True),
    "ode_sample_tsit5": ("ode_sample", _ode_tsit5, "max_steps", True),
    "ula": ("run_chain(ula_step)", _ula, "num_steps", True),
    "ula_trajectory": ("run_chain(ula_step, trajectory_every=1)", _ula_traj, "num_steps", False),
    "mala": ("run_chain(mala_step)", _mala, "num_steps", True),
    "annealed_langevin": ("annealed_langevin", _ald, "10 levels x n/10 steps", True),
    "make_train_fn": ("make_train_fn", _train, "steps per dispatch", True),
    "log_likelihood_heun": ("log_likelihood", _likelihood_fixed, "num_steps (fixed-step Heun)", True),
}


def _compile(fn, args):
    if hasattr(fn, "lower"):  # already jitted (make_train_fn)
        return aot_compile(None, *args, jitted=fn)
    return aot_compile(fn, *args)


def compile_case(ctx: Context, net: Network, *, case_id: str, name: str, batch: int, steps: list, trials: int):
    entry, builder, unit, expect_flat = ENTRY_POINTS[name]
    best = {}
    for _ in range(trials):
        for n in steps:
            jax.clear_caches()  # no tracing or compilation reused from an earlier trial or case
            fn, args = builder(net, batch, n)
            c = _compile(fn, args)
            if n not in best or c.compile_s < best[n].compile_s:
                best[n] = c
    lo, hi = steps[0], steps[-1]
    comp = {str(n): round(best[n].compile_s, 4) for n in steps}
    xla = {str(n): round(best[n].xla_compile_s, 4) for n in steps}
    mem = {str(n): (best[n].memory or {}).get("peak_bytes") for n in steps}
    growth = best[hi].compile_s / best[lo].compile_s - 1.0
    mlo, mhi = mem[str(lo)], mem[str(hi)]
    mem_growth = (mhi / mlo - 1.0) if mlo and mhi else None
    bytes_per_step = round((mhi - mlo) / (hi - lo), 1) if mlo and mhi else None
    compile_flat = abs(growth) <= COMPILE_GROWTH_TARGET
    # "Flat": what grows per step is a few scalars at most (e.g. a precomputed time grid, reported in
    # bytes/step), far below one batch of samples, which is what a kept trajectory adds per step.
    state_bytes = batch * int(np.prod(net.data_shape)) * 4
    mem_flat = bytes_per_step is not None and bytes_per_step <= max(SCALARS_PER_STEP_BYTES, 0.1 * state_bytes)
    notes = []
    if not compile_flat:
        notes.append(f"compile time changes {growth:+.0%} from {lo} to {hi} steps (target within "
                     f"{COMPILE_GROWTH_TARGET:.0%})")
    if mem_growth is not None and mem_flat != expect_flat:
        notes.append(f"peak memory {'flat' if mem_flat else f'grows {bytes_per_step:.0f} B/step'} but expected "
                     f"{'flat' if expect_flat else 'growth (trajectory kept)'}")
    status = "ok" if not notes else "target_missed"
    return record(ctx, id=case_id, group="compile", entry_point=entry, network=net, batch=batch,
                  num_steps=hi, config=dict(steps=steps, step_unit=unit, trials=trials),
                  status=status, note="; ".join(notes),
                  extra=dict(compile_s_by_steps=comp, xla_compile_s_by_steps=xla, peak_bytes_by_steps=mem,
                             memory_by_steps={str(n): best[n].memory for n in steps},
                             compile_growth=growth, compile_flat=compile_flat, peak_memory_growth=mem_growth,
                             peak_bytes_per_step=bytes_per_step, sample_batch_bytes=state_bytes,
                             memory_flat=mem_flat, memory_expected_flat=expect_flat))


def run_compile(ctx: Context, net: Network, p: dict) -> None:
    if net.kind != "mlp":
        return
    steps, trials, batch = p.get("compile_steps"), p.get("compile_trials", 1), p.get("compile_batch", 256)
    if not steps:
        return
    for name in p.get("compile_entry_points", list(ENTRY_POINTS)):
        cid = f"compile/{net.name}/{name}/b{batch}"
        guarded(ctx, cid, "compile", ENTRY_POINTS[name][0],
                lambda name=name, cid=cid: compile_case(ctx, net, case_id=cid, name=name, batch=batch,
                                                        steps=list(steps), trials=trials),
                network=net, batch=batch)
