"""A convolution's weight gradient at the top level of a program and inside a ``lax.scan`` loop body.

Usage::

    python -m benchmarks.conv_in_scan --out DIR [--steps 10] [--repeats 5]

XLA:CPU runs the convolutions of a weight gradient (the backward-filter pass) far slower inside a loop body than
at the top level (jax-ml/jax#12868): at the top level the convolution is rewritten to a layout its fast kernel
takes; inside the loop it is not. That is why the CPU training configs dispatch one step at a time
(``training.steps_per_call = 1``; :func:`sde_jax.training.make_train_fn` builds no loop for one step) and why
``--mode eval``'s digits CNN trains one step per dispatch. Cases, each at batch 128, NHWC, 3x3 kernels, SAME:

* ``grad_w``: ``jax.grad`` of ``sum(conv(x, w)^2)`` with respect to ``w`` (the weight gradient alone);
* ``grad_x``: the same with respect to ``x`` (the input gradient, a control: no slowdown expected);
* ``forward``: the mean of the convolution's output (control).

Each is timed as one jitted call (``outside``) and as ``--steps`` iterations of a ``lax.scan`` whose carry is
updated by it (``inside``, per iteration); ``ratio = inside / outside`` (1: no penalty). Calls alternate
(:func:`benchmarks.timing.time_interleaved`), compile untimed. Writes ``DIR/conv_in_scan.json``.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from benchmarks.timing import loadavg, summarize, time_interleaved, write_results

# (in channels, out channels, stride, height = width): the eval CNN's three layers on 8x8 digits and a 3x3
# convolution of a small U-Net at 16x16.
SHAPES = [(1, 32, 1, 8), (32, 64, 2, 8), (64, 64, 2, 4), (32, 32, 1, 16)]
BATCH = 128


def _case(cin, cout, stride, hw, what, steps):
    x = jax.random.normal(jax.random.key(0), (BATCH, hw, hw, cin))
    w = jax.random.normal(jax.random.key(1), (3, 3, cin, cout)) * 0.1

    def conv(w, x):
        return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def loss(w, x):
        return jnp.sum(conv(w, x) ** 2)

    if what == "grad_w":
        once = jax.jit(jax.grad(loss))
        loop = jax.jit(lambda w, x: jax.lax.scan(lambda c, _: (c - 1e-6 * jax.grad(loss)(c, x), None), w, None,
                                                 length=steps)[0])
        args = (w, x)
    elif what == "grad_x":
        once = jax.jit(jax.grad(loss, argnums=1))
        loop = jax.jit(lambda w, x: jax.lax.scan(lambda c, _: (c - 1e-6 * jax.grad(loss, argnums=1)(w, c), None),
                                                 x, None, length=steps)[0])
        args = (w, x)
    else:
        once = jax.jit(lambda w, x: jnp.mean(conv(w, x)))
        loop = jax.jit(lambda w, x: jax.lax.scan(lambda c, _: (c + 1e-6 * jnp.mean(conv(w, x + c)), None),
                                                 jnp.zeros((), x.dtype), None, length=steps)[0])
        args = (w, x)
    return once, loop, args


def run(steps: int, repeats: int, shapes=SHAPES):
    records = []
    for cin, cout, stride, hw in shapes:
        for what in ("grad_w", "grad_x", "forward"):
            once, loop, args = _case(cin, cout, stride, hw, what, steps)
            times = time_interleaved({"outside": lambda: once(*args), "inside": lambda: loop(*args)}, repeats)
            out, ins = summarize(times["outside"]), summarize(times["inside"])
            per_iter = {k: v / steps if k.endswith("_s") else v for k, v in ins.items()}
            rec = dict(id=f"conv{cin}->{cout}/s{stride}/{hw}x{hw}/{what}", what=what, batch=BATCH,
                       in_channels=cin, out_channels=cout, stride=stride, size=hw, scan_steps=steps,
                       outside=out, inside_per_iteration=per_iter,
                       ratio=per_iter["min_s"] / out["min_s"], loadavg=loadavg())
            records.append(rec)
            print(f"{rec['id']:34s} outside {1e3 * out['min_s']:9.2f} ms   inside {1e3 * per_iter['min_s']:9.2f} ms"
                  f"   ratio {rec['ratio']:6.1f}", flush=True)
    return records


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--steps", type=int, default=10, help="scan length (iterations timed per inside call)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--shapes", type=int, default=len(SHAPES), help=f"time the first N of the {len(SHAPES)} shapes")
    args = p.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or not 1 <= args.shapes <= len(SHAPES):
        p.error(f"--steps and --repeats must be >= 1 and --shapes in 1..{len(SHAPES)}")
    records = run(args.steps, args.repeats, SHAPES[:args.shapes])
    write_results(args.out, "conv_in_scan", records)
    return records


if __name__ == "__main__":
    main()
