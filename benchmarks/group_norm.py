"""Our GroupNorm against ``flax.linen.GroupNorm``: the layer alone, and an image network built with either.

Usage::

    python -m benchmarks.group_norm --out DIR [--config small/ncsnpp] [--batch 16] [--repeats 30]
                                    [--net-repeats 10] [--set model.nf=8 ...]

:class:`sde_jax.models.normalization.GroupNorm` computes what ``flax.linen.GroupNorm`` computes with the pixel
sums taken per channel first; this measures what that buys, calls alternating in one process
(:func:`benchmarks.timing.time_interleaved`), compile untimed:

* ``layer/<B>x<H>x<W>x<C>/g<G>``: the layer's forward, and ``jax.grad`` of ``sum(w * y)`` with respect to its
  input and parameters, at the shapes of ``small/ncsnpp`` at batch 16 and of the paper's CIFAR-10 NCSN++ at batch
  64 (``--layer-shapes`` replaces them);
* ``net/<config>/b<B>``: the network's forward and ``jax.grad`` of its mean squared output with respect to the
  parameters, with every GroupNorm ours or Flax's (the same parameters; ``sde_jax.models.layers.GroupNorm`` is
  swapped while the Flax network is built and traced).

``speedup = Flax min / ours min``; ``max_abs_diff`` is the largest difference of the two forwards. Writes
``DIR/group_norm.json``.
"""
from __future__ import annotations

import argparse
import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks.timing import loadavg, summarize, time_interleaved, write_results
from sde_jax.models import layers
from sde_jax.models.normalization import GroupNorm

LAYER_SHAPES = ((16, 32, 32, 96, 24), (16, 32, 32, 64, 16), (16, 16, 16, 64, 16), (64, 32, 32, 128, 32))
"""``(B, H, W, C, groups)``: ``small/ncsnpp``'s largest GroupNorms at batch 16; CIFAR-10 NCSN++ (nf 128) at 64."""


def _flax_group_norm(num_groups, epsilon, dtype=None, name=None):
    return nn.GroupNorm(num_groups=num_groups, epsilon=epsilon, dtype=dtype, name=name)


@contextlib.contextmanager
def flax_group_norms():
    """Networks built (and traced) inside use ``flax.linen.GroupNorm`` wherever ours would be."""
    saved = layers.GroupNorm
    layers.GroupNorm = _flax_group_norm
    try:
        yield
    finally:
        layers.GroupNorm = saved


def _record(rid: str, times: dict, max_abs_diff: float, **extra) -> dict:
    sums = {k: summarize(v) for k, v in times.items()}
    speedup = {kind: sums[f"flax_{kind}"]["min_s"] / sums[f"ours_{kind}"]["min_s"]
               for kind in ("forward", "grad")}
    rec = dict(id=rid, cases=sums, speedup=speedup, max_abs_diff=max_abs_diff, loadavg=loadavg(), **extra)
    print(f"{rid:36s} forward flax {1e3 * sums['flax_forward']['min_s']:8.2f} ms ours "
          f"{1e3 * sums['ours_forward']['min_s']:8.2f} ms (x{speedup['forward']:.2f}); grad flax "
          f"{1e3 * sums['flax_grad']['min_s']:8.2f} ms ours {1e3 * sums['ours_grad']['min_s']:8.2f} ms "
          f"(x{speedup['grad']:.2f}); max |diff| {max_abs_diff:.1e}", flush=True)
    return rec


def layer_case(shape, repeats: int) -> dict:
    b, h, w, c, g = shape
    x = jax.random.normal(jax.random.key(0), (b, h, w, c))
    wt = jax.random.normal(jax.random.key(1), x.shape)
    thunks, outs = {}, {}
    for name, mod in (("flax", nn.GroupNorm(num_groups=g, epsilon=1e-6)), ("ours", GroupNorm(num_groups=g))):
        v = mod.init(jax.random.key(2), x)
        fwd = jax.jit(mod.apply)
        grad = jax.jit(jax.grad(lambda v, x, mod=mod: jnp.sum(wt * mod.apply(v, x)), argnums=(0, 1)))
        outs[name] = fwd(v, x)
        thunks[f"{name}_forward"] = lambda fwd=fwd, v=v: fwd(v, x)
        thunks[f"{name}_grad"] = lambda grad=grad, v=v: grad(v, x)
    diff = float(jnp.max(jnp.abs(outs["flax"] - outs["ours"])))
    return _record(f"layer/{b}x{h}x{w}x{c}/g{g}", time_interleaved(thunks, repeats), diff, shape=list(shape))


def net_case(config: str, overrides: list[str], batch: int, repeats: int) -> dict:
    from benchmarks.models_bench import _apply_overrides
    from sde_jax import models

    cfg = _apply_overrides(models.get_config(config), overrides)
    s, ch = cfg.data.image_size, cfg.data.num_channels
    x = jax.random.uniform(jax.random.key(1), (batch, s, s, ch))
    labels = jnp.full((batch,), 1.0)
    thunks, outs = {}, {}
    for name in ("flax", "ours"):
        with flax_group_norms() if name == "flax" else contextlib.nullcontext():
            model, v = models.init_model(jax.random.key(0, impl="rbg"), cfg, (1, s, s, ch))
            fwd = jax.jit(lambda v, x, l, model=model: model.apply(v, x, l, train=False)).lower(v, x, labels).compile()
            grad = jax.jit(jax.grad(lambda v, x, l, model=model: jnp.mean(jnp.square(
                model.apply(v, x, l, train=False))))).lower(v, x, labels).compile()
        outs[name] = (fwd(v, x, labels), v)
        thunks[f"{name}_forward"] = lambda fwd=fwd, v=v: fwd(v, x, labels)
        thunks[f"{name}_grad"] = lambda grad=grad, v=v: grad(v, x, labels)
    same = jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), outs["flax"][1], outs["ours"][1]))
    if not same:
        raise RuntimeError("the two networks were initialised with different parameters")
    diff = float(jnp.max(jnp.abs(outs["flax"][0] - outs["ours"][0])))
    return _record(f"net/{config}/b{batch}", time_interleaved(thunks, repeats), diff, config=config,
                   overrides=list(overrides), batch=batch, params=models.count_params(outs["ours"][1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--config", default="small/ncsnpp", help="network config ('' : no network case)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=30, help="timed calls per layer program")
    p.add_argument("--net-repeats", type=int, default=10, help="timed calls per network program")
    p.add_argument("--layer-shapes", default=None, help="';'-separated B,H,W,C,G (default: LAYER_SHAPES)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.FIELD=VALUE")
    args = p.parse_args(argv)
    if min(args.batch, args.repeats, args.net_repeats) < 1:
        p.error("--batch, --repeats and --net-repeats must be >= 1")
    shapes = LAYER_SHAPES
    if args.layer_shapes is not None:
        try:
            shapes = [tuple(int(v) for v in s.split(",")) for s in args.layer_shapes.split(";") if s]
        except ValueError:
            p.error(f"--layer-shapes must be ';'-separated B,H,W,C,G integers; got {args.layer_shapes!r}")
        if any(len(s) != 5 or min(s) < 1 or s[3] % s[4] for s in shapes):
            p.error(f"--layer-shapes: each entry is B,H,W,C,G with positive values and G dividing C; got {shapes}")
    records = [layer_case(s, args.repeats) for s in shapes]
    if args.config:
        records.append(net_case(args.config, args.overrides, args.batch, args.net_repeats))
    write_results(args.out, "group_norm", records, config=args.config, overrides=args.overrides, batch=args.batch)
    return records


if __name__ == "__main__":
    main()
