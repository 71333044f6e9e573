"""Where a training step's time goes beyond the network: the bare forward + backward pass, the DSM loss's
gradient at given times and noise, the same with its random draws, and the whole step.

Usage::

    python -m benchmarks.train_breakdown --out DIR [--batch 256] [--repeats 300]

On the quick suite's toy MLP (:func:`benchmarks.networks.mlp_network`, VP SDE, the suite's optimizer: Adam with
clipping and warm-up, EMA 0.999 with warm-up), one jitted call each, one step per dispatch:

* ``limit``: ``jax.grad`` of ``mean(apply(params, x, labels)^2)`` (the suite's training limit);
* ``dsm_grad``: ``jax.grad`` of the DSM loss (:func:`sde_jax.losses.dsm_per_example`, batch mean) at given
  ``t`` and ``z`` (the network on the perturbed batch, its labels from ``t``);
* ``loss_grad``: ``jax.grad`` of the suite's loss function (:func:`sde_jax.losses.get_sde_loss_fn`), which
  draws ``t`` and ``z`` from its key;
* ``train_step``: :func:`sde_jax.training.jit_train_step` (step key folding, the loss gradient, clipping, Adam,
  EMA; the state donated).

Each is timed ``--repeats`` times, the calls alternating (:func:`benchmarks.timing.time_interleaved`; at a few
milliseconds per call on a shared 2-core VM the minimum needs hundreds of repeats to settle), compile untimed.
``ratio = limit min / case min``; the differences between consecutive cases are the loss's own arithmetic, its
random draws, and the optimizer/EMA pass. Writes ``DIR/train_breakdown.json``.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from benchmarks.networks import fwd_bwd_step, mlp_network
from benchmarks.timing import loadavg, summarize, time_interleaved, write_results
from benchmarks.train_cases import TrainSetup
from sde_jax import losses


def programs(batch: int):
    """``{name: thunk}`` for the four cases, compiled and run once."""
    net = mlp_network()
    s = TrainSetup(net, batch)
    x, key = s.data(), jax.random.key(6)
    labels = net.labels(s.sde, batch)
    t = jax.random.uniform(jax.random.key(1), (batch,), x.dtype, 1e-5, 1.0)
    z = jax.random.normal(jax.random.key(2), x.shape, x.dtype)

    def score_of(p):
        return net.make_score_fn(s.sde, p)

    limit = jax.jit(fwd_bwd_step(net.apply))
    dsm = jax.jit(jax.grad(lambda p, x, t, z: jnp.mean(losses.dsm_per_example(score_of(p), s.sde, x, t, z))))
    loss = jax.jit(jax.grad(lambda p, x, key: s.loss_fn(score_of(p), key, x)[0]))
    step = s.training.jit_train_step(s.train_step)
    holder = [s.state()]

    def run_step():
        holder[0], _ = step(holder[0], x, key)
        return holder[0]

    params = net.params
    return {"limit": lambda: limit(params, x, labels), "dsm_grad": lambda: dsm(params, x, t, z),
            "loss_grad": lambda: loss(params, x, key), "train_step": run_step}


def run(batch: int, repeats: int):
    times = time_interleaved(programs(batch), repeats)
    sums = {k: summarize(v) for k, v in times.items()}
    base = sums["limit"]["min_s"]
    record = dict(id=f"train_breakdown/mlp/b{batch}", batch=batch, cases=sums, loadavg=loadavg(),
                  ratio={k: base / v["min_s"] for k, v in sums.items()})
    for k, v in sums.items():
        print(f"{k:12s} min {1e3 * v['min_s']:8.3f} ms  median {1e3 * v['median_s']:8.3f} ms  "
              f"ratio {record['ratio'][k]:.3f}", flush=True)
    return record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=300)
    args = p.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        p.error("--batch and --repeats must be >= 1")
    record = run(args.batch, args.repeats)
    write_results(args.out, "train_breakdown", [record])
    return record


if __name__ == "__main__":
    main()
