"""Training cases: the full train step (DSM loss, gradients, Adam with clipping, EMA) against the bare
forward + backward pass of the network on the same batch, with 1 and K steps per dispatch; and the
1-vs-8-simulated-device check (in a subprocess, :mod:`benchmarks.multidevice`)."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections

from benchmarks.common import Context, guarded, limit_entry, measure, record
from benchmarks.networks import Network, fwd_bwd_limit, fwd_bwd_step
from benchmarks.timing import aot_compile

__all__ = ["TrainSetup", "train_setup", "run_training", "OPTIM"]

OPTIM = dict(optimizer="adam", lr=2e-4, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, warmup=100,
             grad_clip=1.0)
EMA_RATE = 0.999


class TrainSetup:
    """The library's pieces of one training run for ``net``: SDE, DSM loss, optimizer, ``train_step``, state,
    and an on-device batch function (standard normal data of the network's shape)."""

    def __init__(self, net: Network, batch: int):
        from sde_jax import losses, training

        self.net, self.batch = net, batch
        self.sde = net.make_sde(1000)
        self.loss_fn = losses.get_sde_loss_fn(self.sde)
        self.tx, schedule = training.get_optimizer(ml_collections.ConfigDict(OPTIM))
        self.train_step = training.make_train_step(self.loss_fn, functools.partial(net.make_score_fn, self.sde),
                                                   self.tx, ema_rate=EMA_RATE, ema_warmup=True, schedule=schedule)
        self.shape = (batch,) + net.data_shape
        self.batch_fn = training.sampler_batch_fn(
            lambda key, n: jax.random.normal(key, (n,) + net.data_shape, jnp.float32), batch)
        self.training = training

    def state(self):
        """A fresh initial state (its buffers are donated by the jitted steps)."""
        return self.training.init_train_state(jax.tree.map(jnp.copy, self.net.params), self.tx)

    def data(self):
        return jax.random.normal(jax.random.key(5), self.shape, jnp.float32)


def train_setup(net: Network, batch: int) -> TrainSetup:
    return TrainSetup(net, batch)


def _config():
    return dict(loss="dsm (get_sde_loss_fn)", optimizer=OPTIM, ema_rate=EMA_RATE, ema_warmup=True)


def train_case(ctx: Context, net: Network, *, case_id: str, batch: int, steps_per_dispatch: int):
    """``jit_train_step`` (1 step per dispatch) or ``make_train_fn`` (K steps per dispatch in a lax.scan,
    batch generated on the device) against ``jax.grad`` of the network (K passes in a lax.scan)."""
    s = train_setup(net, batch)
    labels = net.labels(s.sde, batch)
    k = steps_per_dispatch
    holder = [s.state()]
    if k == 1:
        batch_x, key = s.data(), jax.random.key(6)
        compiled = aot_compile(None, holder[0], batch_x, key, jitted=s.training.jit_train_step(s.train_step))

        def run():
            holder[0], metrics = compiled(holder[0], batch_x, key)
            return holder[0]

        lim_fn, lim_args = fwd_bwd_step(net.apply), (net.params, s.data(), labels)
        entry = "jit_train_step"
    else:
        data_key, loss_key = jax.random.key(7), jax.random.key(8)
        train_fn = s.training.make_train_fn(s.train_step, s.batch_fn, k)
        data = train_fn.data_arrays
        compiled = aot_compile(None, holder[0], data_key, loss_key, data, jitted=train_fn.jitted)

        def run():
            holder[0], metrics = compiled(holder[0], data_key, loss_key, data)
            return holder[0]

        lim_fn, lim_args = fwd_bwd_limit(net.apply, k), (net.params, s.data(), labels)
        entry = "make_train_fn"
    lim = aot_compile(lim_fn, *lim_args)
    sums, status, note = measure(ctx, {"run": run, "limit": lambda: lim(*lim_args)})
    run_s, lsum = sums["run"], sums["limit"]
    ok = status == "ok"
    what = f"{k} x jax.grad(mean(apply^2)) w.r.t. params" + (" (lax.scan)" if k > 1 else " (one jitted call)")
    loss_ok = bool(jnp.isfinite(s.loss_fn(net.make_score_fn(s.sde, holder[0].params), jax.random.key(0),
                                          s.data())[0]))
    return record(ctx, id=case_id, group="training", entry_point=entry, network=net, batch=batch,
                  num_steps=k, nfe=None, config=dict(_config(), steps_per_dispatch=k), compiled=compiled,
                  run=run_s, limit=limit_entry(what, k, lim, lsum),
                  ratio=lsum["min_s"] / run_s["min_s"] if ok else None,
                  ratio_median=lsum["median_s"] / run_s["median_s"] if ok else None,
                  throughput=dict(examples_per_s=batch * k / run_s["min_s"], steps_per_s=k / run_s["min_s"],
                                  limit_examples_per_s=batch * k / lsum["min_s"]) if ok else None,
                  status=status, note=note, extra=dict(final_loss_finite=loss_ok))


def multidevice_case(ctx: Context, *, case_prefix: str, network: str, batch: int, steps: int, timeout: float):
    """Run :mod:`benchmarks.multidevice` in a subprocess with 8 simulated CPU devices; returns its records."""
    env = dict(os.environ)
    flags = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f)
    env["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "benchmarks.multidevice", "--network", network, "--batch", str(batch),
           "--steps", str(steps), "--repeats", str(ctx.repeats), "--max-spread", str(ctx.max_spread),
           "--retries", str(ctx.retries), "--budget", str(ctx.budget_s), "--suite", ctx.suite,
           "--case-prefix", case_prefix]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"multidevice subprocess failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_training(ctx: Context, net: Network, p: dict) -> None:
    if net.kind != "mlp":
        return
    for batch in p.get("train_batches", []):
        for k in p.get("train_k", []):
            cid = f"training/{net.name}/b{batch}/k{k}"
            guarded(ctx, cid, "training", "jit_train_step" if k == 1 else "make_train_fn",
                    lambda batch=batch, k=k, cid=cid: train_case(ctx, net, case_id=cid, batch=batch,
                                                                 steps_per_dispatch=k),
                    network=net, batch=batch, num_steps=k)
    md = p.get("multidevice")
    if md:
        prefix = f"training/{net.name}/devices"
        guarded(ctx, f"{prefix}/b{md['batch']}/k{md['k']}", "training", "make_train_fn(mesh)",
                lambda: multidevice_case(ctx, case_prefix=prefix, network=net.name, batch=md["batch"], steps=md["k"],
                                         timeout=md.get("timeout", 300)),
                network=net, batch=md["batch"], num_steps=md["k"])
