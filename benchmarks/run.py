"""Throughput benchmarks of sde_jax against the score-network limit; writes JSON and a Markdown table.

Usage::

    python -m benchmarks.run --suite quick --out runs/bench            # a few minutes on 2 CPU cores
    python -m benchmarks.run --suite full --out runs/bench-full        # the sweeps (long)
    python -m benchmarks.run --suite smoke --out /tmp/bench            # tiny, 1 repeat (the test suite's)
    python -m benchmarks.run --suite peers --out runs/peers            # vs diffusers / k-diffusion (extra 'peers')
    python -m benchmarks.run --suite quick --out DIR --only 'sampling/mlp/pc'         # a subset, by case id
    python -m benchmarks.run --suite quick --out DIR --network config:small/ncsnpp \\
        --network-set model.nf=16                                      # + sampling with an image network
    python -m benchmarks.run --suite quick --out DIR --network mypkg.nets:MyNet --network-kwargs '{"width": 256}' \\
        --data-shape 8

Writes ``DIR/benchmarks.json`` (``{"schema_version", "suite", "argv", "machine", ..., "records": [...]}``, one
record per case; schema in ``benchmarks/README.md``) and ``DIR/benchmarks.md``. Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

__all__ = ["main"]


def _parser():
    from benchmarks.suites import SUITES

    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=sorted(SUITES), default="quick")
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--only", default=None, help="regular expression: run only cases whose id matches")
    ap.add_argument("--network", action="append", default=[], metavar="SPEC",
                    help="an extra score network for the sampling cases: 'config:NAME' (sde_jax.models config), "
                         "'module.path:Class' (a Flax module (x, labels) -> out), 'mlp' or 'mlp-tiny'")
    ap.add_argument("--network-set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="override of a config: network's config (repeatable)")
    ap.add_argument("--network-kwargs", default="{}", help="JSON kwargs of a module.path:Class network")
    ap.add_argument("--data-shape", default="2", help="comma-separated example shape of a module.path:Class network")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per program (default: the suite's)")
    ap.add_argument("--max-spread", type=float, default=None,
                    help="largest (median - min) / min reported (default: the suite's)")
    ap.add_argument("--budget", type=float, default=None, help="seconds of timed calls per case (default: suite's)")
    ap.add_argument("--retime-budget", type=float, default=None,
                    help="seconds a case too spread to report may spend being re-timed (default: the suite's)")
    ap.add_argument("--no-multidevice", action="store_true", help="skip the 1-vs-8-device subprocess")
    ap.add_argument("--no-models", action="store_true", help="skip the image-model benchmark (full suite)")
    return ap


def _models_case(ctx, spec):
    from benchmarks import models_bench
    from benchmarks.common import record

    out = []
    for r in models_bench.run(spec["config"], spec["batch_sizes"], ctx.repeats, spec.get("overrides", ())):
        out.append(record(ctx, id=f"models/{spec['config']}/b{r['batch']}", group="models",
                          entry_point="models_bench (apply / grad)", batch=r["batch"],
                          config=dict(config=spec["config"], params=r["params"]), note="", extra=r))
    return out


def main(argv=None) -> dict:
    from benchmarks.suites import SUITES

    args = _parser().parse_args(argv)
    p = dict(SUITES[args.suite])
    t_start = time.perf_counter()

    import jax

    from benchmarks import cases, compile_cases, loss_cases, metrics_cases, peers, train_cases
    from benchmarks.common import Context, guarded, record, stability
    from benchmarks.networks import build_network
    from benchmarks.report import check_targets, markdown
    from benchmarks.timing import loadavg, machine_info

    os.makedirs(args.out, exist_ok=True)
    machine = machine_info()
    ctx = Context(suite=args.suite, params=p, repeats=args.repeats or p["repeats"],
                  max_spread=p["max_spread"] if args.max_spread is None else args.max_spread,
                  retries=p["retries"], budget_s=p["budget_s"] if args.budget is None else args.budget,
                  machine=machine, min_repeats=p["min_repeats"],
                  retime_budget_s=p.get("retime_budget_s", 0.0) if args.retime_budget is None else args.retime_budget,
                  only=re.compile(args.only) if args.only else None)
    load0 = loadavg()
    ctx.log(f"suite {args.suite}: jax {jax.__version__} on {machine['backend']} ({machine['device_kind']}), "
            f"{machine['cpus_usable']} CPUs, load {load0}")
    if args.no_multidevice:
        p.pop("multidevice", None)

    net = build_network(p["network"])
    cases.run_sampling(ctx, net, p)
    cases.run_likelihood(ctx, net, p)
    train_cases.run_training(ctx, net, p)
    loss_cases.run_losses(ctx, net, p)
    compile_cases.run_compile(ctx, net, p)
    metrics_cases.run_metrics(ctx, p)
    peers.run_peers(ctx, p)

    extra_p = dict(pc_batches=p["extra_batches"], pc_batch_steps=p["extra_steps"],
                   pc_pairs=[("euler_maruyama", "none")], pairs_batch=p["extra_batches"][-1],
                   pairs_steps=p["extra_steps"], ode=[("euler", p["extra_steps"])],
                   ode_batches=p["extra_batches"]) if "extra_batches" in p else dict(
        pc_batches=p.get("pc_batches", [8]), pc_batch_steps=p.get("pc_batch_steps", 4))
    shape = tuple(int(s) for s in args.data_shape.split(",") if s)
    for spec in args.network:
        try:
            extra = build_network(spec, overrides=args.network_set, kwargs=json.loads(args.network_kwargs),
                                  data_shape=shape)
        except Exception as e:  # noqa: BLE001 (recorded as an error case; the run goes on)
            ctx.add(record(ctx, id=f"sampling/{spec}/build", group="sampling", entry_point="build_network",
                           status="error", note=f"{type(e).__name__}: {e}"[:500]))
            continue
        ctx.log(f"network {spec}: {extra.description}, {extra.num_params:,} parameters")
        cases.run_sampling(ctx, extra, extra_p)

    if p.get("loss_image") and not args.no_models:   # FD vs autodiff losses on a small image network
        spec = p["loss_image"]
        try:
            image_net = build_network(f"config:{spec['config']}", overrides=spec.get("overrides", ()))
            loss_cases.run_losses(ctx, image_net, p)
        except Exception as e:  # noqa: BLE001 (recorded; the run goes on)
            ctx.add(record(ctx, id=f"losses/{spec['config']}/build", group="losses", entry_point="build_network",
                           status="error", note=f"{type(e).__name__}: {e}"[:500]))

    if p.get("models") and not args.no_models:
        spec = p["models"]
        guarded(ctx, f"models/{spec['config']}", "models", "models_bench", lambda: _models_case(ctx, spec))

    doc = dict(schema_version=1, suite=args.suite, argv=list(sys.argv[1:] if argv is None else argv),
               machine=machine, loadavg_start=load0, loadavg_end=loadavg(),
               wall_s=time.perf_counter() - t_start, targets=check_targets(ctx.records),
               stability=stability(ctx.records), records=ctx.records)
    with open(os.path.join(args.out, "benchmarks.json"), "w") as f:
        json.dump(doc, f, indent=1)
    with open(os.path.join(args.out, "benchmarks.md"), "w") as f:
        f.write(markdown(doc))
    st = doc["stability"]
    ctx.log(f"re-timed {st['retimed']} of {st['timed']} cases, {st['unstable']} still unstable (not reported)")
    ctx.log(f"wrote {args.out}/benchmarks.json and benchmarks.md ({len(ctx.records)} records, "
            f"{doc['wall_s']:.0f} s)")
    return doc


if __name__ == "__main__":
    main()
