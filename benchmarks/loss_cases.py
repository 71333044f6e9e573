"""Loss cases: a full training step with a finite-difference score-matching loss against the same step with its
autodiff counterpart (Pang et al. 2020's claim: FD is faster), on the toy MLP (score network and energy model)
and on a small image network.

Each case times three programs interleaved (:func:`benchmarks.common.measure`): the FD train step, the autodiff
train step (same network, batch, directions and optimizer) and the bare forward+backward of the network (the
limit, as in the training cases). A record's ``timing`` is the FD step's; ``ratio`` = limit / FD step;
``extra.autodiff_timing`` is the autodiff step's and ``extra.speedup`` = autodiff min time / FD min time
(``speedup_median`` with medians): above 1 when FD is faster.

Pairs (:data:`PAIRS`):

* score networks (time-conditioned, on the VP SDE's marginals, :func:`sde_jax.losses.get_sde_fd_loss_fn` vs
  :func:`sde_jax.losses.get_sde_score_matching_loss_fn`): ``ssm``, ``ssm_vr`` and (MLP only, exact trace
  costs ``D`` JVPs) ``ism``;
* energy models (:class:`sde_jax.models.EnergyMLP`, the toy MLP's size, one distribution):
  :func:`~sde_jax.losses.fd_energy_ssm_loss` (central) vs the same loss with ``scheme="exact"`` (autodiff
  Hessian-vector products), likewise ``energy_ssm_vr``, ``energy_ism`` and ``energy_dsm``.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from benchmarks.common import Context, guarded, limit_entry, measure, record
from benchmarks.networks import Network, fwd_bwd_step
from benchmarks.timing import aot_compile

__all__ = ["PAIRS", "run_losses", "loss_case"]

FD_EPS = 0.1
PROJECTION = "rademacher"


def _sde_pair(method):
    def make(sde):
        from sde_jax import losses

        kw = dict(num_projections=1, projection=PROJECTION, eps=1e-5) if method != "ism" else dict(eps=1e-5)
        fd = losses.get_sde_fd_loss_fn(sde, method="fd_" + method, fd_eps=FD_EPS, scheme="central", **kw)
        ad = losses.get_sde_score_matching_loss_fn(sde, method=method, **kw)
        return fd, ad

    return make


def _energy_pair(fn, **kw):
    def make(sde):
        del sde
        return (functools.partial(fn, fd_eps=FD_EPS, scheme="central", **kw),
                functools.partial(fn, scheme="exact", **kw))

    return make


def _energy_losses():
    from sde_jax import losses

    return {
        "energy_ssm": _energy_pair(losses.fd_energy_ssm_loss, projection=PROJECTION),
        "energy_ssm_vr": _energy_pair(losses.fd_energy_ssm_loss, projection=PROJECTION, variance_reduction=True),
        "energy_ism": _energy_pair(losses.fd_energy_ism_loss),
        "energy_dsm": _energy_pair(losses.fd_energy_dsm_loss, sigma=0.1, projection=PROJECTION),
    }


PAIRS = ("ssm", "ssm_vr", "ism", "energy_ssm", "energy_ssm_vr", "energy_ism", "energy_dsm")
"""Pair names; the ``energy_*`` pairs and ``ism`` run on low-dimensional (``mlp``) networks only."""


def _energy_network(net: Network):
    """An EnergyMLP of the toy MLP's width and depth on the same data, as a :class:`Network`-like bundle."""
    from sde_jax.models import EnergyMLP, get_energy_fn

    model = EnergyMLP(hidden=128, num_layers=3)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((2,) + net.data_shape))
    n_params = int(sum(leaf.size for leaf in jax.tree.leaves(params)))

    def apply(p, x, labels):
        del labels
        return model.apply(p, x)[:, None]                         # [B, 1] for the limit's mean square

    def make_fn(p):
        return get_energy_fn(model.apply, p).log_prob

    return apply, params, make_fn, n_params


def loss_case(ctx: Context, net: Network, pair: str, *, case_id: str, batch: int):
    """Time the FD and autodiff train steps of ``pair`` and the network's forward+backward."""
    from sde_jax import training

    tx = optax.adam(2e-4)
    sde = net.make_sde(1000)
    x = jax.random.normal(jax.random.key(5), (batch,) + net.data_shape, jnp.float32)
    key = jax.random.key(6)
    if pair.startswith("energy_"):
        apply, params, make_fn, n_params = _energy_network(net)
        fd_loss, ad_loss = _energy_losses()[pair](sde)
        labels = jnp.zeros((batch,), jnp.float32)
        what_net = f"EnergyMLP(hidden=128, num_layers=3), {n_params:,} parameters"
    else:
        apply, params = net.apply, net.params
        make_fn = functools.partial(net.make_score_fn, sde)
        fd_loss, ad_loss = _sde_pair(pair)(sde)
        labels = net.labels(sde, batch)
        what_net = net.description
    compiled, holders = {}, {}
    for name, loss_fn in (("fd", fd_loss), ("autodiff", ad_loss)):
        step = training.make_train_step(loss_fn, make_fn, tx, ema_rate=0.999)
        holders[name] = [training.init_train_state(jax.tree.map(jnp.copy, params), tx)]
        compiled[name] = aot_compile(None, holders[name][0], x, key, jitted=training.jit_train_step(step))

    def runner(name):
        def run():
            holders[name][0], _ = compiled[name](holders[name][0], x, key)
            return holders[name][0]

        return run

    lim_fn, lim_args = fwd_bwd_step(apply), (params, x, labels)
    lim = aot_compile(lim_fn, *lim_args)
    sums, status, note = measure(ctx, {"fd": runner("fd"), "autodiff": runner("autodiff"),
                                       "limit": lambda: lim(*lim_args)})
    ok = status == "ok"
    fd_s, ad_s, lsum = sums["fd"], sums["autodiff"], sums["limit"]
    extra = dict(pair=pair, fd_eps=FD_EPS, projection=PROJECTION, model=what_net,
                 autodiff_timing=dict(compile_s=compiled["autodiff"].compile_s, **ad_s),
                 autodiff_memory=compiled["autodiff"].memory,
                 speedup=ad_s["min_s"] / fd_s["min_s"] if ok else None,
                 speedup_median=ad_s["median_s"] / fd_s["median_s"] if ok else None)
    return record(ctx, id=case_id, group="losses", entry_point="jit_train_step(make_train_step(FD loss))",
                  network=net, batch=batch, num_steps=1, nfe=None,
                  config=dict(pair=pair, fd_scheme="central", optimizer="adam", ema_rate=0.999),
                  compiled=compiled["fd"], run=fd_s,
                  limit=limit_entry("jax.grad(mean(apply^2)) w.r.t. params (one jitted call)", 1, lim, lsum),
                  ratio=lsum["min_s"] / fd_s["min_s"] if ok else None,
                  ratio_median=lsum["median_s"] / fd_s["median_s"] if ok else None,
                  throughput=dict(examples_per_s=batch / fd_s["min_s"],
                                  autodiff_examples_per_s=batch / ad_s["min_s"]) if ok else None,
                  status=status, note=note, extra=extra)


def run_losses(ctx: Context, net: Network, p: dict) -> None:
    """The suite's loss cases for ``net``: ``p["loss_pairs"]`` at ``p["loss_batches"]`` (low-dimensional
    networks), ``p["loss_image_pairs"]`` at ``p["loss_image_batches"]`` (image networks)."""
    image = net.kind == "image"
    pairs = p.get("loss_image_pairs" if image else "loss_pairs", [])
    for batch in p.get("loss_image_batches" if image else "loss_batches", []):
        for pair in pairs:
            if pair not in PAIRS or (image and (pair.startswith("energy_") or pair == "ism")):
                raise ValueError(f"loss pair {pair!r} is not available for a {net.kind} network; valid: "
                                 f"{[q for q in PAIRS if not image or q in ('ssm', 'ssm_vr')]}.")
            cid = f"losses/{net.name}/{pair}/b{batch}"
            guarded(ctx, cid, "losses", "jit_train_step(make_train_step(FD loss))",
                    lambda pair=pair, batch=batch, cid=cid: loss_case(ctx, net, pair, case_id=cid, batch=batch),
                    network=net, batch=batch, num_steps=1)
