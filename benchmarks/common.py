"""What every case shares: the run context, the record layout, and the sampler-vs-limit measurement."""
from __future__ import annotations

import dataclasses
import sys
import time
import traceback
from typing import Any, Callable

import jax

from benchmarks.timing import loadavg, summarize, time_interleaved

__all__ = ["SCHEMA_VERSION", "Context", "record", "measure", "stability", "guarded", "limit_entry"]

SCHEMA_VERSION = 1


@dataclasses.dataclass
class Context:
    """Settings of one run of the suite.

    Attributes:
      suite: suite name.
      params: the suite's parameters (:data:`benchmarks.suites.SUITES`).
      repeats: most timed calls per program; fewer when a case is long (``budget_s``), never fewer than
        ``min_repeats`` (or ``repeats`` if that is smaller).
      max_spread: a case whose ``(median - min) / min`` exceeds this (for the case or its limit) is re-timed:
        at least ``retries`` extra attempts, then more while the case's re-timing has taken less than
        ``retime_budget_s``, each attempt with twice the repeats of the previous one (at most 8x); only then
        is it not reported (status ``"unstable"``). Every summary records its ``attempts``.
      budget_s: target wall time of the timed calls of one case.
      machine: :func:`benchmarks.timing.machine_info`.
      log: progress printer.
    """

    suite: str
    params: dict
    repeats: int
    max_spread: float
    retries: int
    budget_s: float
    machine: dict
    min_repeats: int = 3
    retime_budget_s: float = 0.0
    only: Any = None  # compiled regex on case ids, or None
    log: Callable = dataclasses.field(default=lambda msg: print(msg, file=sys.stderr, flush=True))
    records: list = dataclasses.field(default_factory=list)

    def wants(self, case_id: str) -> bool:
        return self.only is None or bool(self.only.search(case_id))

    def add(self, rec: dict) -> dict:
        self.records.append(rec)
        ratio = rec.get("ratio")
        t = (rec.get("timing") or {}).get("min_s")
        self.log(f"  {rec['id']:<58} {rec['status']:<9}"
                 + (f" min {t * 1e3:9.2f} ms" if t else "")
                 + (f"  ratio {ratio:.3f}" if isinstance(ratio, float) else "")
                 + (f"  compile {rec['extra']['compile_s_by_steps']} s, growth {rec['extra']['compile_growth']:+.0%}, "
                    f"memory {rec['extra']['peak_bytes_per_step']} B/step"
                    if "compile_s_by_steps" in (rec.get("extra") or {}) else "")
                 + (f"  [{rec['note']}]" if rec.get("note") else ""))
        return rec


def record(ctx: Context, *, id: str, group: str, entry_point: str, network=None, batch=None, num_steps=None,  # noqa: A002
           nfe=None, config=None, compiled=None, run=None, limit=None, ratio=None, ratio_median=None,
           throughput=None, status="ok", note="", extra=None) -> dict:
    """One JSON record (the schema is documented in ``benchmarks/README.md``)."""
    timing = None
    if compiled is not None or run is not None:
        timing = dict(compile_s=None if compiled is None else compiled.compile_s,
                      trace_lower_s=None if compiled is None else compiled.trace_lower_s,
                      xla_compile_s=None if compiled is None else compiled.xla_compile_s,
                      **(run or {}))
    return dict(
        schema_version=SCHEMA_VERSION, suite=ctx.suite, id=id, group=group, entry_point=entry_point,
        network=None if network is None else network.name,
        network_description=None if network is None else network.description,
        network_params=None if network is None else network.num_params,
        batch=batch, num_steps=num_steps, nfe=nfe, dtype="float32", config=config or {},
        timing=timing, memory=None if compiled is None else compiled.memory, limit=limit,
        ratio=ratio, ratio_median=ratio_median, throughput=throughput, status=status, note=note,
        extra=extra or {}, loadavg=loadavg(), machine=ctx.machine,
    )


def _attempt(ctx: Context, thunks: dict, scale: int = 1) -> dict:
    # One untimed warm-up call of each program also estimates the call time, which sets the repeats.
    t0 = time.perf_counter()
    for thunk in thunks.values():
        jax.block_until_ready(thunk())
    per_round = time.perf_counter() - t0
    floor = min(ctx.min_repeats, ctx.repeats)
    repeats = max(floor, min(ctx.repeats, int(ctx.budget_s / max(per_round, 1e-9)))) * scale
    return {k: summarize(v) for k, v in time_interleaved(thunks, repeats, warmup=0).items()}


def measure(ctx: Context, thunks: dict) -> tuple[dict, str, str]:
    """Time the programs of one case; re-time while the spread is too large (within ``ctx.retime_budget_s``).

    Returns:
      ``(summaries, status, note)``: ``summaries[name]`` from :func:`benchmarks.timing.summarize` plus
      ``attempts`` (timed attempts made; > 1: the case was re-timed); status ``"ok"`` or ``"unstable"``
      (largest spread above ``ctx.max_spread`` in every attempt; the attempt with the smallest spread is kept).
    """
    best, attempts, scale = None, 0, 1
    t0 = time.perf_counter()
    while True:
        sums = _attempt(ctx, thunks, scale)
        attempts += 1
        worst = max(s["spread"] for s in sums.values())
        if best is None or worst < best[1]:
            best = (sums, worst)
        if worst <= ctx.max_spread:
            break
        if attempts > ctx.retries and time.perf_counter() - t0 >= ctx.retime_budget_s:
            break
        scale = min(2 * scale, 8)
    sums, worst = best
    for s in sums.values():
        s["attempts"] = attempts
    if worst > ctx.max_spread:
        return sums, "unstable", f"spread {worst:.0%} > {ctx.max_spread:.0%} after {attempts} attempts: not reported"
    return sums, "ok", ""


def stability(records) -> dict:
    """How often cases were re-timed: ``timed`` (records with timings), ``retimed`` (more than one attempt),
    ``unstable`` (still too spread: not reported), ``retimed_ids``, ``unstable_ids``."""
    timed = [r for r in records if (r.get("timing") or {}).get("attempts") is not None]
    retimed = [r["id"] for r in timed if r["timing"]["attempts"] > 1]
    unstable = [r["id"] for r in records if r.get("status") == "unstable"]
    return dict(timed=len(timed), retimed=len(retimed), unstable=len(unstable), retimed_ids=retimed,
                unstable_ids=unstable)


def limit_entry(what: str, nfe: int, compiled, summary: dict) -> dict:
    return dict(what=what, nfe=nfe, compile_s=compiled.compile_s, memory=compiled.memory, **summary)


def guarded(ctx: Context, case_id: str, group: str, entry_point: str, fn: Callable, **known) -> None:
    """Run one case ``fn() -> record`` (or list of records) unless filtered out; on an exception, record it
    as status ``"error"`` instead of stopping the suite."""
    if not ctx.wants(case_id):
        return
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        ctx.add(record(ctx, id=case_id, group=group, entry_point=entry_point, status="error",
                       note=f"{type(e).__name__}: {e}"[:500], **known))
        return
    for rec in (out if isinstance(out, list) else [out]):
        ctx.add(rec)
