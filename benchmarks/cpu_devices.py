"""An image network on a CPU host with its cores exposed as JAX devices: the batch sharded over 1, 2, ... devices.

Usage::

    python -m benchmarks.cpu_devices --out DIR [--config small/ncsnpp] [--batch 16] [--devices 1,2]
                                     [--pc-steps 100] [--repeats 5] [--forward-repeats 20] [--set model.nf=8 ...]

XLA:CPU runs one convolution on one thread, so a single CPU device leaves the other cores of a host mostly idle
(see the README's Performance section). Started with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``,
JAX shows ``N`` CPU devices; a batch sharded over them (a ``data`` mesh, as on a GPU/TPU host) runs each shard
on its own thread. For each ``N`` in ``--devices`` a fresh process (the flag must be set before JAX starts)
times, with the batch sharded over ``N`` devices:

* ``forward``: the network's ``apply`` at ``--batch`` (one jitted call);
* ``pc``: :func:`sde_jax.pc_sample` under a VE SDE with ``N = --pc-steps`` levels (reverse diffusion + one
  Langevin corrector, the paper's VE sampler), ``--batch`` samples (skipped with ``--pc-steps 0``).

Compile untimed (reported apart), minimum of ``--forward-repeats`` (forward) or ``--repeats`` (sampler) calls; ``speedup = time on 1 device / time on N``.
The results are the same computation whatever ``N`` (the samplers' noise is drawn for the global batch), so
this is a setting of the host, not of the model. Writes ``DIR/cpu_devices.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _worker(args) -> dict:
    """Runs in the child process, whose environment already has the device count."""
    import jax
    import numpy as np

    import sde_jax as sj
    from benchmarks.models_bench import _apply_overrides
    from sde_jax import models
    from sde_jax.parallel import batch_sharding, make_data_mesh

    n = jax.device_count()
    cfg = _apply_overrides(models.get_config(args.config), args.overrides)
    s, c = cfg.data.image_size, cfg.data.num_channels
    model, variables = models.init_model(jax.random.key(0, impl="rbg"), cfg, (1, s, s, c))
    mesh = make_data_mesh(n) if n > 1 else None
    shape = (args.batch, s, s, c)
    x = jax.random.uniform(jax.random.key(1), shape)
    labels = jax.numpy.full((args.batch,), 0.5)
    if mesh is not None:
        x, labels = (jax.device_put(v, batch_sharding(mesh)) for v in (x, labels))
    forward = jax.jit(lambda v, x, l: model.apply(v, x, l))
    out = {"devices": n, "forward": _timed(lambda: forward(variables, x, labels), args.forward_repeats)}
    if args.pc_steps:
        sde = sj.VESDE(N=args.pc_steps)
        score = models.get_score_fn(sde, model, variables)
        keys = iter(range(10 ** 6))
        result = {}

        def sample():
            result["x"], result["nfe"] = sj.pc_sample(jax.random.key(next(keys)), sde, score, shape, mesh=mesh)
            return result["x"]

        out["pc"] = _timed(sample, args.repeats)
        out["pc"].update(nfe=int(result["nfe"]), finite=bool(np.all(np.isfinite(np.asarray(result["x"])))),
                         images_per_s=args.batch / out["pc"]["min_s"])
    return out


def _timed(fn, repeats: int) -> dict:
    import jax

    from benchmarks.timing import summarize

    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    cpu0 = time.process_time()
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return dict(summarize(times), first_call_s=first, cpu_over_wall=(time.process_time() - cpu0) / sum(times))


def run(args) -> list[dict]:
    records = []
    for n in args.devices:
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        flags = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f)
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
        cmd = [sys.executable, "-m", "benchmarks.cpu_devices", "--worker", "--out", args.out, "--config", args.config,
               "--batch", str(args.batch), "--pc-steps", str(args.pc_steps), "--repeats", str(args.repeats),
               "--forward-repeats", str(args.forward_repeats)]
        cmd += [f"--set={o}" for o in args.overrides]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"the {n}-device process failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        if rec["devices"] != n:
            raise RuntimeError(f"asked for {n} CPU devices, the process saw {rec['devices']}")
        records.append(rec)
    one = records[0]
    for rec in records:
        for case in ("forward", "pc"):
            if case in rec and one["devices"] == 1:
                rec[case]["speedup"] = one[case]["min_s"] / rec[case]["min_s"]
    return records


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--config", default="small/ncsnpp")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--devices", default="1,2", help="comma-separated device counts (the first should be 1)")
    p.add_argument("--pc-steps", type=int, default=100, help="levels of the PC sampler case (0: no sampler case)")
    p.add_argument("--repeats", type=int, default=5, help="timed sampler calls per device count")
    p.add_argument("--forward-repeats", type=int, default=20, help="timed forward calls per device count")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per device count")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.FIELD=VALUE")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args)), flush=True)
        return None
    try:
        args.devices = [int(n) for n in args.devices.split(",")]
    except ValueError:
        p.error(f"--devices must be comma-separated integers; got {args.devices!r}")
    if min(args.batch, args.repeats, args.forward_repeats, *args.devices) < 1 or args.pc_steps < 0:
        p.error("--batch, --repeats, --forward-repeats and every --devices count must be >= 1, --pc-steps >= 0")
    bad = [n for n in args.devices if args.batch % n]
    if bad:
        p.error(f"--batch {args.batch} is not divisible by the device count(s) {bad}")
    from benchmarks.timing import loadavg, write_results

    load = loadavg()
    records = run(args)
    doc = dict(loadavg_at_start=load, config=args.config, overrides=args.overrides, batch=args.batch,
               pc_steps=args.pc_steps)
    write_results(args.out, "cpu_devices", records, **doc)
    doc["records"] = records
    for r in records:
        line = f"{r['devices']} device(s): forward {1e3 * r['forward']['min_s']:8.1f} ms"
        if "pc" in r:
            line += f", PC {r['pc']['min_s']:7.2f} s ({r['pc']['images_per_s']:.3f} images/s)"
        print(line + "".join(f", {k} x{r[k]['speedup']:.2f}" for k in ("forward", "pc") if "speedup" in r.get(k, {})))
    return doc


if __name__ == "__main__":
    main()
