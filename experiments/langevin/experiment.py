"""Langevin sampling with exact scores: chain trajectories, ULA vs MALA, plain vs annealed Langevin, MCMC
diagnostics and replica exchange.

Writes to ``workdir``:

* ``trajectories.png``: ULA chains started far from the mass, drawn over the exact density (banana and a
  two-mode mixture; warm colormap).
* ``mala_vs_ula.png``: the banana's exact density beside 2-D histograms of MALA and ULA samples at a step size
  where ULA is biased, with the exact and estimated moments.
* ``annealed_vs_plain.png``: 0.2 N((-5,-5), I) + 0.8 N((5,5), I) from uniform initialisation: plain Langevin
  (keeps the initial basin, wrong weights) vs annealed Langevin dynamics (Song & Ermon 2019, Fig. 3).
* ``mala_densities.png``: exact density beside the MALA histogram on both targets; on the mixture MALA from
  uniform initialisation is exact within each mode but keeps the initial split of the chains between modes,
  so it does not recover the 0.2 / 0.8 weights.
* ``rhat_trace.png``: split R-hat of draws ``[n/2, n)`` against ``n`` for ULA, MALA (both targets), annealed
  Langevin's last level and replica exchange's cold replica (mixture), from over-dispersed starts.
* ``tempering_vs_ald.png``: mixture mode-weight error against score evaluations per sample for replica
  exchange, annealed Langevin and MALA.
* ``metrics.json``: moments with standard errors and z-scores, MALA acceptance, mode weights, ESS, split
  R-hat and burn-in per sampler (:mod:`experiments.langevin.mixing`), the tempering-vs-ALD curves, timings.
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import sde_jax as sj
from experiments._shared import CMAP, check_workdir, density_image, plt, write_json
from experiments.langevin import mixing
from sde_jax.metrics import mode_weights
from sde_jax.samplers import annealed_langevin, mala_init, mala_step, run_chain, ula_init, ula_step


def _moments(x):
    x = np.asarray(x, np.float64)
    feats = np.stack([x[:, 0], x[:, 1], x[:, 0] ** 2, x[:, 1] ** 2], 1)
    return feats.mean(0), feats.std(0) / np.sqrt(x.shape[0])


MOMENT_NAMES = ["E[x1]", "E[x2]", "E[x1^2]", "E[x2^2]"]


def banana_mala_vs_ula(config, key):
    banana = sj.toy.Banana(config.banana_s, config.banana_b)
    x0 = banana.sample(jax.random.fold_in(key, 0), config.banana_chains)
    h, steps = config.banana_step_size, config.banana_steps

    @jax.jit
    def run(key):
        su, _ = run_chain(key, lambda k, s: ula_step(k, s, banana.score, h), ula_init(x0, banana.score), steps)
        sm, info = run_chain(key, lambda k, s: mala_step(k, s, banana.log_prob, h), mala_init(x0, banana.log_prob),
                             steps)
        return su.position, sm.position, jnp.mean(info.acceptance_rate)

    t0 = time.perf_counter()
    xu, xm, acc = jax.block_until_ready(run(jax.random.fold_in(key, 1)))
    seconds = time.perf_counter() - t0
    exact = np.array([float(banana.moment(1, 0)), float(banana.moment(0, 1)), float(banana.moment(2, 0)),
                      float(banana.moment(0, 2))])
    out = {"step_size": h, "chains": config.banana_chains, "steps": steps, "exact": dict(zip(MOMENT_NAMES, exact)),
           "mala_acceptance_rate": float(acc), "seconds_incl_compile": seconds}
    for name, x in (("ula", xu), ("mala", xm)):
        m, se = _moments(x)
        out[name] = {"moments": dict(zip(MOMENT_NAMES, m.tolist())), "std_errors": dict(zip(MOMENT_NAMES, se.tolist())),
                     "z_scores": dict(zip(MOMENT_NAMES, ((m - exact) / se).tolist())),
                     "finite": bool(np.all(np.isfinite(np.asarray(x))))}
    return banana, np.asarray(xu), np.asarray(xm), out


def mixture_annealed_vs_plain(config, key):
    gmm = sj.toy.GaussianMixture([[-5.0, -5.0], [5.0, 5.0]], 1.0, [0.2, 0.8])
    w = config.mixture_init_half_width
    x0 = jax.random.uniform(jax.random.fold_in(key, 2), (config.mixture_chains, 2), minval=-w, maxval=w)
    h = config.ula_step_size
    state, _ = jax.jit(lambda k, s: run_chain(k, lambda kk, ss: ula_step(kk, ss, gmm.score, h), s, config.ula_steps))(
        jax.random.fold_in(key, 3), ula_init(x0, gmm.score))
    sigmas = jnp.exp(jnp.linspace(jnp.log(config.ald_sigma_max), jnp.log(config.ald_sigma_min), config.ald_levels))
    x_ald, nfe = annealed_langevin(jax.random.fold_in(key, 4), gmm.noise_conditional_score(), x0, sigmas,
                                   step_size=config.ald_step_size, n_steps_each=config.ald_steps_each)
    w_ula = np.asarray(mode_weights(state.position, gmm.means))
    w_ald = np.asarray(mode_weights(x_ald, gmm.means))
    true = np.asarray(gmm.weights)
    out = {"true_weights": true.tolist(), "plain_langevin_weights": w_ula.tolist(),
           "annealed_langevin_weights": w_ald.tolist(),
           "plain_langevin_weight_error": float(np.max(np.abs(w_ula - true))),
           "annealed_langevin_weight_error": float(np.max(np.abs(w_ald - true))),
           "annealed_nfe": nfe, "chains": config.mixture_chains,
           "weight_standard_error": float(np.sqrt(true[0] * true[1] / config.mixture_chains))}
    return gmm, np.asarray(state.position), np.asarray(x_ald), out


def trajectories(config, key, banana, gmm):
    start = jnp.stack([jnp.linspace(-7.0, 7.0, config.traj_chains), jnp.full((config.traj_chains,), 9.0)], -1)
    paths = {}
    for name, target in (("banana", banana), ("mixture", gmm)):
        run = jax.jit(lambda k, s, t=target: run_chain(k, lambda kk, ss: ula_step(kk, ss, t.score, config.traj_step_size),
                                                       s, config.traj_steps, trajectory_every=config.traj_every))
        _, _, traj = run(jax.random.fold_in(key, 5), ula_init(start, target.score))
        paths[name] = np.concatenate([np.asarray(start)[None], np.asarray(traj)], 0)
    return paths


def run(config, workdir):
    """Run the experiment and write figures and ``metrics.json`` to ``workdir``; returns the metrics."""
    check_workdir(workdir)
    key = jax.random.key(config.seed)
    t0 = time.perf_counter()
    banana, xu, xm, banana_metrics = banana_mala_vs_ula(config, key)
    gmm, x_plain, x_ald, mix_metrics = mixture_annealed_vs_plain(config, key)
    paths = trajectories(config, key, banana, gmm)
    xm_mix, mala_mix_metrics = mixing.mala_mixture(config, key, gmm)
    diag = mixing.diagnostics(config, key, banana, gmm)
    tempering = mixing.tempering_vs_ald(config, key, gmm)

    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, (name, target, lim) in zip(axes, (("banana", banana, (-8, 10)), ("mixture", gmm, (-10, 10)))):
        density_image(ax, target.log_prob, *lim, f"ULA chains over the {name} density")
        for p in paths[name].transpose(1, 0, 2):
            ax.plot(p[:, 0], p[:, 1], "-", lw=0.8, color="tab:blue", alpha=0.8)
            ax.plot(p[0, 0], p[0, 1], "o", color="k", ms=4)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "trajectories.png"), dpi=config.dpi)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    lo, hi = -7, 9
    density_image(axes[0], banana.log_prob, lo, hi, "exact banana density")
    for ax, (name, x) in zip(axes[1:], (("MALA", xm), ("ULA", xu))):
        key_name = name.lower()
        x = x[np.all(np.isfinite(x), 1)]
        ax.hist2d(x[:, 0], x[:, 1], bins=70, range=[[lo, hi], [lo, hi]], cmap=CMAP)
        z = banana_metrics[key_name]["z_scores"]
        ax.set_title(f"{name}, h={banana_metrics['step_size']}: z(E[x2^2]) = {z['E[x2^2]']:.1f}")
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "mala_vs_ula.png"), dpi=config.dpi)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    density_image(axes[0], gmm.log_prob, -10, 10, "exact: weights 0.2 / 0.8")
    for ax, (name, x, wkey) in zip(axes[1:], (("plain Langevin", x_plain, "plain_langevin_weights"),
                                               ("annealed Langevin", x_ald, "annealed_langevin_weights"))):
        ax.hist2d(x[:, 0], x[:, 1], bins=80, range=[[-10, 10], [-10, 10]], cmap=CMAP)
        w = mix_metrics[wkey]
        ax.set_title(f"{name}: weights {w[0]:.3f} / {w[1]:.3f}")
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "annealed_vs_plain.png"), dpi=config.dpi)
    plt.close(fig)

    mixing.plot_mala_densities(os.path.join(workdir, "mala_densities.png"), config, banana, xm, gmm, xm_mix,
                               mala_mix_metrics)
    mixing.plot_rhat(os.path.join(workdir, "rhat_trace.png"), config, diag)
    mixing.plot_tempering(os.path.join(workdir, "tempering_vs_ald.png"), config, tempering)

    metrics = {"banana_mala_vs_ula": banana_metrics, "mixture_annealed_vs_plain": mix_metrics,
               "mixture_mala": mala_mix_metrics, "diagnostics": diag, "tempering_vs_ald": tempering,
               "config": config.to_dict(), "wall_seconds": time.perf_counter() - t0,
               "jax": jax.__version__, "device": str(jax.devices()[0].platform)}
    write_json(os.path.join(workdir, "metrics.json"), metrics)
    return metrics
