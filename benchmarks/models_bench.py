"""Score-network throughput: forward and forward+backward time per image for a model config.

Usage::

    python -m benchmarks.models_bench --out DIR [--config small/ncsnpp] [--batch-sizes 1,16,128]
                                      [--repeats 10] [--set model.nf=8 ...]

For each batch size: compile once (timed separately), then ``repeats`` timed calls with
``block_until_ready``; reports min and median seconds per call and per image. Forward is
``model.apply(params, x, labels)``; forward+backward is ``jax.grad`` of the mean squared output with
respect to the parameters (the cost pattern of a training step, without the optimizer). Writes
``DIR/models_bench.json`` (one record per case) and prints a table.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from sde_jax.models import count_params, get_config, init_model


def _time(fn, *args, repeats: int):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return compile_s, min(times), statistics.median(times)


def _apply_overrides(cfg, items):
    for item in items:
        key, _, value = item.partition("=")
        section, _, field = key.partition(".")
        if not field or section not in cfg:
            raise ValueError(f"--set expects section.field=value (e.g. model.nf=8); got {item!r}.")
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
        cfg[section][field] = value
    return cfg


def run(config_name: str, batch_sizes, repeats: int, overrides=()):
    cfg = _apply_overrides(get_config(config_name), overrides)
    s, c = cfg.data.image_size, cfg.data.num_channels
    key = jax.random.key(0)
    # Parameters do not depend on the batch size: initialise once ('rbg' keys compile Flax init fast).
    model, params = init_model(jax.random.key(0, impl="rbg"), cfg, (1, s, s, c))
    records = []
    for b in batch_sizes:
        x = jax.random.uniform(jax.random.fold_in(key, 1), (b, s, s, c))
        if cfg.model.name == "ncsnpp" and cfg.model.embedding_type == "fourier":
            labels = jnp.full((b,), 1.0)
        else:
            labels = jnp.zeros((b,))
        fwd = jax.jit(lambda p, x, l: model.apply(p, x, l))
        bwd = jax.jit(jax.grad(lambda p, x, l: jnp.mean(model.apply(p, x, l) ** 2)))
        f_compile, f_min, f_med = _time(fwd, params, x, labels, repeats=repeats)
        b_compile, b_min, b_med = _time(bwd, params, x, labels, repeats=repeats)
        records.append(dict(
            config=config_name, overrides=list(overrides), params=count_params(params), batch=b,
            image_shape=[s, s, c], repeats=repeats,
            forward_compile_s=f_compile, forward_min_s=f_min, forward_median_s=f_med,
            forward_min_s_per_image=f_min / b, forward_median_s_per_image=f_med / b,
            fwd_bwd_compile_s=b_compile, fwd_bwd_min_s=b_min, fwd_bwd_median_s=b_med,
            fwd_bwd_min_s_per_image=b_min / b, fwd_bwd_median_s_per_image=b_med / b,
            jax_version=jax.__version__, device=str(jax.devices()[0].device_kind),
            platform=jax.devices()[0].platform, num_devices=jax.device_count(), host=platform.node(),
        ))
    return records


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--config", default="small/ncsnpp")
    p.add_argument("--batch-sizes", default="1,16,128")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.FIELD=VALUE")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    records = run(args.config, batch_sizes, args.repeats, args.overrides)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "models_bench.json")
    with open(path, "w") as f:
        json.dump(records, f, indent=1)
    print(f"{args.config} ({records[0]['params']:,} params) on {records[0]['device']}, jax {jax.__version__}")
    print(f"{'batch':>6} {'fwd ms/img (min/med)':>22} {'fwd+bwd ms/img (min/med)':>26} {'compile s (fwd/bwd)':>20}")
    for r in records:
        print(f"{r['batch']:>6} {1e3 * r['forward_min_s_per_image']:>10.2f} /{1e3 * r['forward_median_s_per_image']:>9.2f}"
              f" {1e3 * r['fwd_bwd_min_s_per_image']:>12.2f} /{1e3 * r['fwd_bwd_median_s_per_image']:>11.2f}"
              f" {r['forward_compile_s']:>9.1f} /{r['fwd_bwd_compile_s']:>8.1f}")
    print(f"wrote {path}")
    return records


if __name__ == "__main__":
    main()
