"""Timing method shared by every benchmark case: compile once (ahead of time), time repeats, summarise.

* :func:`aot_compile` lowers and compiles a ``jax.jit`` program ahead of time, so compile time is measured
  apart from run time, and reads the compiled executable's memory analysis (argument / output / temp bytes).
* :func:`time_interleaved` runs one warm-up call of each program, then ``repeats`` timed calls of each with
  ``jax.block_until_ready``, interleaving the programs of a case (A B, B A, ...) so that a change of machine
  load hits a sampler and its limit alike.
* :func:`summarize` reports min, median, max and the spread ``(median - min) / min``.
* :func:`machine_info` names the machine, the libraries and the git commit.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from typing import Any, Callable

import jax

__all__ = ["Compiled", "aot_compile", "memory_stats", "time_interleaved", "summarize", "machine_info",
           "loadavg", "write_results"]


@dataclasses.dataclass
class Compiled:
    """A compiled program with its compile cost: ``trace_lower_s`` (Python tracing + lowering to StableHLO)
    and ``xla_compile_s`` (XLA); ``compile_s`` is their sum, what a user waits for on a first call."""

    fn: Any
    trace_lower_s: float
    xla_compile_s: float
    memory: dict | None

    @property
    def compile_s(self) -> float:
        return self.trace_lower_s + self.xla_compile_s

    def __call__(self, *args):
        return self.fn(*args)


def memory_stats(compiled) -> dict | None:
    """Sizes from ``compiled.memory_analysis()`` in bytes; ``peak_bytes = argument + output + temp - alias``
    (the buffers live at once at the program's peak, an upper bound XLA's buffer assignment guarantees)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 (not every backend implements it)
        return None
    if m is None:
        return None
    out = dict(argument_bytes=int(m.argument_size_in_bytes), output_bytes=int(m.output_size_in_bytes),
               temp_bytes=int(m.temp_size_in_bytes), alias_bytes=int(m.alias_size_in_bytes),
               generated_code_bytes=int(getattr(m, "generated_code_size_in_bytes", 0)))
    out["peak_bytes"] = out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
    return out


def aot_compile(fn: Callable, *args, donate_argnums=(), jitted=None) -> Compiled:
    """``jax.jit(fn).lower(*args).compile()``, timed in two parts. ``jitted``: an already ``jax.jit``-ed
    function (e.g. the library's own ``jit_train_step``) to lower instead of ``fn``."""
    jitted = jitted if jitted is not None else jax.jit(fn, donate_argnums=donate_argnums)
    t0 = time.perf_counter()
    lowered = jitted.lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    return Compiled(compiled, t1 - t0, t2 - t1, memory_stats(compiled))


def time_interleaved(thunks: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall-clock seconds of ``repeats`` calls of each thunk (each call ends with ``block_until_ready``).

    Every thunk is called ``warmup`` times first (untimed). Rounds alternate the order of the thunks.
    """
    names = list(thunks)
    for _ in range(warmup):
        for n in names:
            jax.block_until_ready(thunks[n]())
    times = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            jax.block_until_ready(thunks[n]())
            times[n].append(time.perf_counter() - t0)
    return times


def summarize(times: list[float]) -> dict:
    """``min_s``, ``median_s``, ``max_s``, ``repeats`` and ``spread = (median - min) / min`` (0 for one repeat)."""
    lo, med = min(times), statistics.median(times)
    return dict(repeats=len(times), min_s=lo, median_s=med, max_s=max(times),
                spread=(med - lo) / lo if lo > 0 else 0.0)


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001
        return None


def _git(*args) -> str | None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except Exception:  # noqa: BLE001
        return None


def machine_info() -> dict:
    """Platform, devices, CPU count, library versions and git commit (``dirty`` when the tree has changes)."""
    dev = jax.devices()[0]
    try:
        cpus_usable = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus_usable = os.cpu_count()
    status = _git("status", "--porcelain", "--untracked-files=no")
    return dict(
        host=platform.node(), os=platform.platform(), python=platform.python_version(),
        processor=platform.processor() or platform.machine(), cpu_count=os.cpu_count(), cpus_usable=cpus_usable,
        backend=jax.default_backend(), device_kind=dev.device_kind, device_count=jax.device_count(),
        versions={m: _version(m) for m in ("jax", "jaxlib", "flax", "optax", "diffrax", "equinox", "numpy")},
        git_commit=_git("rev-parse", "HEAD"), git_dirty=None if status is None else bool(status),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def write_results(out_dir: str, name: str, records: list, **extra) -> str:
    """``out_dir/name.json`` holding ``{"machine": machine_info(), **extra, "records": records}`` (the one-off
    measuring tools' output); prints and returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.json")
    with open(path, "w") as f:
        json.dump(dict(machine=machine_info(), **extra, records=records), f, indent=1)
    print(path)
    return path
