"""Training on 1 vs 8 simulated CPU devices: the same K steps from the same state, on a 1-device and an
8-device ``data`` mesh; reports examples/s of each and how far the final parameters and losses differ.

A correctness-of-scaling check, not a speed claim: the 8 "devices" share the host's cores. Run by
:func:`benchmarks.train_cases.multidevice_case` in a subprocess whose ``XLA_FLAGS`` carry
``--xla_force_host_platform_device_count=8`` (set before JAX is imported); prints a JSON list of records
as its last line of stdout.
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default="mlp")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-spread", type=float, default=0.2)
    ap.add_argument("--retries", type=int, default=1)
    ap.add_argument("--budget", type=float, default=5.0)
    ap.add_argument("--suite", default="manual")
    ap.add_argument("--case-prefix", default="training/devices")
    args = ap.parse_args(argv)

    import jax
    import numpy as np

    from benchmarks.common import Context, measure, record
    from benchmarks.networks import build_network
    from benchmarks.timing import aot_compile, machine_info
    from benchmarks.train_cases import _config, train_setup
    from sde_jax.parallel import make_data_mesh, replicated_sharding

    if jax.device_count() < 8:
        raise SystemExit(f"needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8); "
                         f"got {jax.device_count()}")
    ctx = Context(suite=args.suite, params={}, repeats=args.repeats, max_spread=args.max_spread,
                  retries=args.retries, budget_s=args.budget, machine=machine_info(),
                  log=lambda m: print(m, file=sys.stderr, flush=True))
    net = build_network(args.network)
    s = train_setup(net, args.batch)
    k = args.steps
    finals, records = {}, []
    for n in (1, 8):
        mesh = make_data_mesh(n)
        rep = replicated_sharding(mesh)
        keys = jax.device_put((jax.random.key(7), jax.random.key(8)), rep)
        train_fn = s.training.make_train_fn(s.train_step, s.batch_fn, k, mesh)
        data = jax.device_put(train_fn.data_arrays, rep)
        compiled = aot_compile(None, jax.device_put(s.state(), rep), *keys, data, jitted=train_fn.jitted)
        state, metrics = compiled(jax.device_put(s.state(), rep), *keys, data)
        finals[n] = (jax.device_get(state.params), np.asarray(metrics["loss"]))
        holder = [jax.device_put(s.state(), rep)]

        def run(holder=holder, compiled=compiled, keys=keys, data=data):
            holder[0], _ = compiled(holder[0], *keys, data)
            return holder[0]

        sums, status, note = measure(ctx, {"run": run})
        r = sums["run"]
        extra = dict(num_devices=n, loss=finals[n][1].tolist())
        if n > 1:
            p1, l1 = finals[1]
            diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), finals[n][0], p1))
            scale = max(float(np.max(np.abs(v))) for v in jax.tree.leaves(p1))
            extra.update(max_abs_param_diff_vs_1_device=max(diffs), max_abs_param=scale,
                         max_abs_loss_diff_vs_1_device=float(np.max(np.abs(finals[n][1] - l1))))
            extra["match"] = bool(max(diffs) <= 1e-5 * max(1.0, scale)
                                  and extra["max_abs_loss_diff_vs_1_device"] <= 1e-4 * max(1.0, float(np.max(np.abs(l1)))))
            if not extra["match"]:
                status, note = "mismatch", "8-device result differs from 1-device result beyond float32 tolerance"
        records.append(record(
            ctx, id=f"{args.case_prefix}/n{n}/b{args.batch}/k{k}", group="training", entry_point="make_train_fn(mesh)",
            network=net, batch=args.batch, num_steps=k, config=dict(_config(), steps_per_dispatch=k, num_devices=n),
            compiled=compiled, run=r, status=status, note=note, extra=extra,
            throughput=dict(examples_per_s=args.batch * k / r["min_s"]) if status != "unstable" else None))
        ctx.add(records[-1])
    print(json.dumps(records))


if __name__ == "__main__":
    main()
