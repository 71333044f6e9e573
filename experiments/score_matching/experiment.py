"""Learn the score of exact 2-D targets with every score-matching objective, autodiff and finite differences.

Targets: a three-component Gaussian mixture and the banana (:mod:`sde_jax.toy`), whose scores are exact.
Models: a score network (:class:`sde_jax.models.ScoreMLP` at a constant label) and an energy model
(:class:`sde_jax.models.EnergyMLP`, score = gradient). Objectives (:data:`METHODS`): ISM, SSM, SSM-VR, DSM of
:mod:`sde_jax.losses` and their finite-difference twins of :mod:`sde_jax.losses_fd` (Pang et al. 2020), plus
Kingma & LeCun's regularised ISM. Every method trains the same network for the same steps on fresh exact
samples; the jitted training chunks after the first are timed, so ``ms_per_step`` excludes compilation.

Writes to ``workdir``:

* ``score_fields_<target>.png``: the exact score field beside each method's (normalised arrows coloured by
  the score's norm on a warm colour map, one colour scale per figure, the exact density in grey beneath);
* ``score_error.png``: relative score error ``E||s_theta - s||^2 / E||s||^2`` on held-out exact samples,
  per method and target;
* ``step_time.png``: milliseconds per training step per method, FD beside its autodiff counterpart;
* ``metrics.json``: every number above, per method and target, plus the FD speed-ups.
"""
from __future__ import annotations

import functools
import time

from absl import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sde_jax as sj
from experiments._shared import check_workdir, plt, score_quiver, write_json
from sde_jax import losses, training
from sde_jax.models import EnergyMLP, ScoreMLP, get_energy_fn

# name -> (model kind, what the loss receives: "score" | "log_prob", loss factory(config) -> loss_fn, label)
METHODS = {
    "ism": ("score", "score", lambda c: losses.implicit_score_matching_loss, "ISM"),
    "fd_ism": ("score", "score", lambda c: functools.partial(losses.fd_ism_loss, fd_eps=c.fd_eps), "FD-ISM"),
    "ssm": ("score", "score", lambda c: functools.partial(losses.sliced_score_matching_loss,
                                                          projection=c.projection), "SSM"),
    "fd_ssm": ("score", "score", lambda c: functools.partial(losses.fd_ssm_loss, fd_eps=c.fd_eps,
                                                             projection=c.projection), "FD-SSM"),
    "ssm_vr": ("score", "score", lambda c: functools.partial(losses.sliced_score_matching_loss,
                                                             projection=c.projection, variance_reduction=True),
               "SSM-VR"),
    "fd_ssm_vr": ("score", "score", lambda c: functools.partial(losses.fd_ssm_loss, fd_eps=c.fd_eps,
                                                                projection=c.projection, variance_reduction=True),
                  "FD-SSM-VR"),
    "dsm": ("score", "score", lambda c: functools.partial(losses.denoising_score_matching_loss, sigma=c.dsm_sigma),
            "DSM"),
    "energy_ism": ("energy", "score", lambda c: losses.implicit_score_matching_loss, "energy ISM"),
    "energy_fd_ism": ("energy", "log_prob", lambda c: functools.partial(losses.fd_energy_ism_loss, fd_eps=c.fd_eps),
                      "energy FD-ISM"),
    "energy_ism_reg": ("energy", "log_prob", lambda c: functools.partial(
        losses.regularized_ism_loss, curvature_weight=c.curvature_weight, scheme="central", fd_eps=c.fd_eps),
        "energy reg. FD-ISM"),
    "energy_ssm": ("energy", "score", lambda c: functools.partial(losses.sliced_score_matching_loss,
                                                                  projection=c.projection), "energy SSM"),
    "energy_fd_ssm": ("energy", "log_prob", lambda c: functools.partial(losses.fd_energy_ssm_loss, fd_eps=c.fd_eps,
                                                                        projection=c.projection), "energy FD-SSM"),
    "energy_ssm_vr": ("energy", "score", lambda c: functools.partial(
        losses.sliced_score_matching_loss, projection=c.projection, variance_reduction=True), "energy SSM-VR"),
    "energy_fd_ssm_vr": ("energy", "log_prob", lambda c: functools.partial(
        losses.fd_energy_ssm_loss, fd_eps=c.fd_eps, projection=c.projection, variance_reduction=True),
        "energy FD-SSM-VR"),
    "energy_dsm": ("energy", "score", lambda c: functools.partial(losses.denoising_score_matching_loss,
                                                                  sigma=c.dsm_sigma), "energy DSM"),
    "energy_fd_dsm": ("energy", "log_prob", lambda c: functools.partial(
        losses.fd_energy_dsm_loss, sigma=c.dsm_sigma, fd_eps=c.fd_eps, projection=c.projection), "energy FD-DSM"),
}
"""Method name -> (model kind, view given to the loss, loss factory, label)."""

FD_PAIRS = (("fd_ism", "ism"), ("fd_ssm", "ssm"), ("fd_ssm_vr", "ssm_vr"), ("energy_fd_ism", "energy_ism"),
            ("energy_fd_ssm", "energy_ssm"), ("energy_fd_ssm_vr", "energy_ssm_vr"), ("energy_fd_dsm", "energy_dsm"))
"""(FD method, autodiff counterpart) pairs whose step times are compared."""

# Plot window per target: (x_lo, x_hi, y_lo, y_hi).
EXTENTS = {"mixture": (-5.0, 5.0, -4.5, 5.5), "banana": (-6.0, 6.0, -4.0, 8.0)}


def make_target(name):
    if name == "mixture":
        return sj.toy.GaussianMixture([[-2.5, -1.5], [2.5, -1.5], [0.0, 2.5]], [[0.6, 0.6], [0.8, 0.5], [0.5, 0.8]],
                                      [0.4, 0.35, 0.25])
    if name == "banana":
        return sj.toy.Banana()
    raise ValueError(f"unknown target {name!r}; valid names: ['banana', 'mixture'].")


def _networks(config):
    """The two models and how a parameter set becomes what a loss receives. The only place networks are
    turned into score / log-density functions (so a change of the wrappers is a change here)."""
    score_net = ScoreMLP(hidden=config.hidden, num_layers=config.num_layers, embed_dim=16)
    energy_net = EnergyMLP(hidden=config.hidden, num_layers=config.num_layers)

    def score_view(params):
        return lambda x: score_net.apply(params, x, jnp.zeros(x.shape[:1], x.dtype))

    def energy_view(params, view):
        energy = get_energy_fn(energy_net.apply, params)
        return energy.log_prob if view == "log_prob" else energy.score

    def init(kind, key):
        x = jnp.zeros((1, 2))
        return score_net.init(key, x, jnp.zeros((1,))) if kind == "score" else energy_net.init(key, x)

    def make(kind, view):
        return score_view if kind == "score" else functools.partial(energy_view, view=view)

    return init, make


def _train_fn(method, config, make):
    """``chunk(state, pool, data_key, loss_key) -> (state, losses)``: ``steps_per_call`` Adam steps in a
    ``lax.scan`` with batches drawn from ``pool`` (an argument: one compile serves both targets)."""
    kind, view, factory, _ = METHODS[method]
    tx = optax.adam(config.lr)
    step = training.make_train_step(factory(config), make(kind, view), tx, ema_rate=config.ema_rate)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def chunk(state, pool, data_key, loss_key):
        def body(state, _):
            idx = jax.random.randint(jax.random.fold_in(data_key, state.step), (config.batch_size,), 0,
                                     pool.shape[0])
            state, metrics = step(state, pool[idx], loss_key)
            return state, metrics["loss"]

        return jax.lax.scan(body, state, None, length=config.steps_per_call)

    return tx, chunk


def _check_config(config):
    unknown = [m for m in config.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"config.methods: unknown {unknown}; valid names: {sorted(METHODS)}.")
    for t in config.targets:
        make_target(t)
    if config.num_steps % config.steps_per_call:
        raise ValueError(f"config.num_steps ({config.num_steps}) must be a multiple of config.steps_per_call "
                         f"({config.steps_per_call}).")


def run(config, workdir):
    """Train every method on every target; write figures and ``metrics.json`` to ``workdir``; return the metrics."""
    check_workdir(workdir)
    _check_config(config)
    t_start = time.perf_counter()
    key = jax.random.key(config.seed)
    init, make = _networks(config)
    targets = {name: make_target(name) for name in config.targets}
    pools = {name: t.sample(jax.random.fold_in(key, 1 + i), config.pool_size) for i, (name, t) in
             enumerate(targets.items())}
    tests = {name: t.sample(jax.random.fold_in(key, 100 + i), config.num_test) for i, (name, t) in
             enumerate(targets.items())}
    results = {name: {} for name in targets}
    fields = {name: {} for name in targets}
    chunk_times = {}
    n_calls = config.num_steps // config.steps_per_call
    score_of = {kind: jax.jit(lambda p, x, kind=kind: make(kind, "score")(p)(x)) for kind in ("score", "energy")}
    for method in config.methods:
        kind, view, _, label = METHODS[method]
        t_method = time.perf_counter()
        tx, chunk = _train_fn(method, config, make)
        chunk_times[method] = []
        for name, target in targets.items():
            params = init(kind, jax.random.fold_in(key, 7))
            state = training.init_train_state(params, tx)
            data_key, loss_key = jax.random.fold_in(key, 11), jax.random.fold_in(key, 13)
            curve = []
            for c in range(n_calls):
                t0 = time.perf_counter()
                state, loss = jax.block_until_ready(chunk(state, pools[name], data_key, loss_key))
                if c > 0:
                    chunk_times[method].append(time.perf_counter() - t0)
                curve.append(np.asarray(loss))
            test = tests[name]
            learned, exact = score_of[kind](state.ema_params, test), target.score(test)
            err = float(jnp.mean(jnp.sum((learned - exact) ** 2, -1)) / jnp.mean(jnp.sum(exact**2, -1)))
            curve = np.concatenate(curve)
            results[name][method] = {"label": label, "model": kind, "score_error": err,
                                     "final_loss": float(np.mean(curve[-100:])),
                                     "finite": bool(np.all(np.isfinite(curve)))}
            fields[name][method] = (state.ema_params, score_of[kind])
        logging.info("%s: %.1f s (score errors %s)", method, time.perf_counter() - t_method,
                     ", ".join(f"{t} {results[t][method]['score_error']:.3g}" for t in targets))
    ms = {m: (1e3 * float(np.median(v)) / config.steps_per_call if v else None) for m, v in chunk_times.items()}
    speedup = {f"{fd}/{ad}": ms[ad] / ms[fd] for fd, ad in FD_PAIRS
               if ms.get(fd) and ms.get(ad)}
    for name in targets:
        for m in config.methods:
            results[name][m]["ms_per_step"] = ms[m]
    _plot_fields(config, workdir, targets, fields)
    _plot_bars(config, workdir, results, ms)
    metrics = {"results": results, "ms_per_step": ms, "fd_speedup": speedup,
               "timing_note": (f"median over {max(n_calls - 1, 0)} jitted chunks per target of "
                               f"{config.steps_per_call} steps each (batch {config.batch_size}), compile excluded"),
               "config": config.to_dict(), "wall_seconds": time.perf_counter() - t_start, "jax": jax.__version__,
               "device": str(jax.devices()[0].platform)}
    write_json(f"{workdir}/metrics.json", metrics)
    return metrics


def _plot_fields(config, workdir, targets, fields):
    for name, target in targets.items():
        x0, x1, y0, y1 = EXTENTS[name]
        n = config.quiver_points
        gx, gy = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
        pts = jnp.asarray(np.stack([gx.ravel(), gy.ravel()], -1), jnp.float32)
        fx, fy = np.meshgrid(np.linspace(x0, x1, 120), np.linspace(y0, y1, 120))
        dens = np.exp(np.asarray(target.log_prob(jnp.asarray(np.stack([fx.ravel(), fy.ravel()], -1),
                                                             jnp.float32)))).reshape(fx.shape)
        exact = np.asarray(target.score(pts))
        vmax = float(np.percentile(np.linalg.norm(exact, axis=-1), 90))
        panels = [("exact", exact)] + [(METHODS[m][3], np.asarray(f(p, pts))) for m, (p, f) in fields[name].items()]
        cols = 6
        rows = -(-len(panels) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols + 0.8, 2.15 * rows + 0.4), squeeze=False)
        fig.subplots_adjust(left=0.01, right=0.9, bottom=0.01, top=0.9, wspace=0.04, hspace=0.18)
        q = None
        for ax, (title, s) in zip(axes.ravel(), panels):
            q = score_quiver(ax, pts, s, title, vmax=vmax, background=dens, extent=(x0, x1, y0, y1),
                             arrow_length=0.75 * (x1 - x0) / (n - 1))
        for ax in axes.ravel()[len(panels):]:
            ax.axis("off")
        fig.colorbar(q, cax=fig.add_axes([0.92, 0.12, 0.015, 0.7]), label="||score|| (capped at the exact 90th pct.)")
        fig.suptitle(f"{name}: exact and learned score fields (arrows: direction; colour: norm)", fontsize=10)
        fig.savefig(f"{workdir}/score_fields_{name}.png", dpi=config.dpi)
        plt.close(fig)


def _plot_bars(config, workdir, results, ms):
    methods = list(config.methods)
    labels = [METHODS[m][3] for m in methods]
    y = np.arange(len(methods))
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(methods) + 1.2))
    width = 0.8 / max(len(results), 1)
    for i, (name, res) in enumerate(results.items()):
        ax.barh(y + i * width, [res[m]["score_error"] for m in methods], width, label=name)
    ax.set_yticks(y + width * (len(results) - 1) / 2, labels, fontsize=8)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("relative score error  E||s_theta - s||^2 / E||s||^2  (held-out exact samples)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{workdir}/score_error.png", dpi=config.dpi)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 0.32 * len(methods) + 1.2))
    fd_methods = {fd for fd, _ in FD_PAIRS}
    colors = ["C3" if m in fd_methods else "C0" for m in methods]
    ax.barh(y, [ms[m] or 0.0 for m in methods], color=colors)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"ms per training step (batch {config.batch_size}, compile excluded); red: finite differences")
    fig.tight_layout()
    fig.savefig(f"{workdir}/step_time.png", dpi=config.dpi)
    plt.close(fig)
