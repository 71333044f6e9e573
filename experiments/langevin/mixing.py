"""Mixing of the Langevin samplers: MALA densities on both targets, MCMC diagnostics (ESS, split R-hat,
burn-in) for ULA / MALA / annealed Langevin / replica exchange, and replica exchange against annealed
Langevin on the separated mixture (mode weights against score evaluations).

Every chain here runs through the library's public kernels (``ula_step``, ``mala_step``,
``replica_exchange_step``, ``run_chain``, ``annealed_langevin``) and diagnostics (``effective_sample_size``,
``split_rhat``, ``rhat_trace``, ``burn_in``).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments._shared import CMAP, density_image, plt
from sde_jax.metrics import mode_weights
from sde_jax.samplers import (annealed_langevin, burn_in, effective_sample_size, geometric_betas, mala_init,
                              mala_step, replica_exchange_init, replica_exchange_step, rhat_trace, run_chain,
                              split_rhat, ula_init, ula_step)


def _uniform(key, n, half_width):
    return jax.random.uniform(key, (n, 2), minval=-half_width, maxval=half_width)


def ald_sigmas(config):
    return jnp.exp(jnp.linspace(jnp.log(config.ald_sigma_max), jnp.log(config.ald_sigma_min), config.ald_levels))


# --------------------------------------------------------------------------------------------------
# MALA densities on both targets
# --------------------------------------------------------------------------------------------------
def mala_mixture(config, key, gmm):
    """MALA from uniform initialisation on the separated mixture: exact per mode, but the chains keep the
    basin they start in, so the weights stay near the initial split (~0.5/0.5) instead of 0.2/0.8."""
    x0 = _uniform(jax.random.fold_in(key, 2), config.mixture_chains, config.mixture_init_half_width)
    h = config.mala_mixture_step_size
    state, info = jax.jit(lambda k, s: run_chain(k, lambda kk, ss: mala_step(kk, ss, gmm.log_prob, h), s,
                                                 config.ula_steps))(jax.random.fold_in(key, 6),
                                                                    mala_init(x0, gmm.log_prob))
    w = np.asarray(mode_weights(state.position, gmm.means))
    true = np.asarray(gmm.weights)
    return np.asarray(state.position), {"step_size": h, "steps": config.ula_steps, "weights": w.tolist(),
                                        "weight_error": float(np.max(np.abs(w - true))),
                                        "acceptance_rate": float(jnp.mean(info.acceptance_rate))}


def plot_mala_densities(path, config, banana, xm_banana, gmm, xm_mixture, mix_metrics):
    """Exact density beside the MALA histogram, for the banana and the mixture."""
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    lo, hi = -7, 9
    density_image(axes[0], banana.log_prob, lo, hi, "banana: exact density")
    axes[1].hist2d(xm_banana[:, 0], xm_banana[:, 1], bins=70, range=[[lo, hi], [lo, hi]], cmap=CMAP)
    axes[1].set_title(f"banana: MALA (h = {config.banana_step_size})")
    density_image(axes[2], gmm.log_prob, -10, 10, "mixture: exact, weights 0.2 / 0.8")
    axes[3].hist2d(xm_mixture[:, 0], xm_mixture[:, 1], bins=80, range=[[-10, 10], [-10, 10]], cmap=CMAP)
    w = mix_metrics["weights"]
    axes[3].set_title(f"mixture: MALA from uniform init, weights {w[0]:.2f} / {w[1]:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=config.dpi)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------------------
def _traj(step_fn, state, key, steps, every):
    run = jax.jit(lambda k, s: run_chain(k, step_fn, s, steps, trajectory_every=every))
    _, infos, traj = run(key, state)
    return traj, infos                                               # traj: [steps / every, n, 2]


def _ald_last_level(config, key, score_fn, x0, every):
    """Annealed Langevin with the last level's trajectory: levels ``1..L-1`` by :func:`annealed_langevin`, then
    the last level's ``n_steps_each`` updates (``x + a_L/2 s + sqrt(a_L) z`` = ULA with ``h = a_L/2``) kept."""
    sigmas = ald_sigmas(config)
    eps, n_each = config.ald_step_size, config.ald_steps_each
    # Levels 1..L-1 with the full ladder's step sizes a_i = eps sigma_i^2 / sigma_L^2: pass eps scaled so that
    # annealed_langevin's own sigma_L (= sigma_{L-1} of the shortened ladder) reproduces them.
    head = sigmas[:-1]
    eps_head = eps * (head[-1] / sigmas[-1]) ** 2
    x, _ = annealed_langevin(jax.random.fold_in(key, 0), score_fn, x0, head, step_size=eps_head, n_steps_each=n_each)
    sig = sigmas[-1]
    score_last = lambda y: score_fn(y, jnp.full(y.shape[:1], sig, y.dtype))  # noqa: E731
    traj, _ = _traj(lambda k, s: ula_step(k, s, score_last, 0.5 * eps), ula_init(x, score_last),
                    jax.random.fold_in(key, 1), n_each, every)
    return traj


def _summary(traj, every, checkpoints, num_evals_per_step):
    """ESS (per coordinate, min), split R-hat of the second half (max over coordinates), burn-in."""
    samples = traj                                                    # [draws, chains, 2]
    half = samples[samples.shape[0] // 2:]
    ess = np.asarray(effective_sample_size(half, chain_axis=1, sample_axis=0))
    rhat = np.asarray(split_rhat(half, chain_axis=1, sample_axis=0))
    b = burn_in(samples, num_checkpoints=checkpoints, chain_axis=1, sample_axis=0)
    ns, trace = rhat_trace(samples, checkpoints, chain_axis=1, sample_axis=0)
    draws_total = half.shape[0] * half.shape[1]
    return {"ess_min": float(ess.min()), "ess_per_draw": float(ess.min() / draws_total),
            "ess_per_1000_evals": float(1000.0 * ess.min() / (draws_total * every * num_evals_per_step)),
            "split_rhat_max": float(rhat.max()), "burn_in_steps": None if b is None else int(b * every),
            "rhat_trace_steps": (ns * every).tolist(),
            "rhat_trace": np.asarray(jnp.max(trace, axis=-1)).tolist()}


def diagnostics(config, key, banana, gmm):
    """ESS, split R-hat and burn-in for ULA / MALA on both targets and annealed Langevin (last level) and
    replica exchange (cold replica) on the mixture, from over-dispersed uniform starts."""
    n, steps, every = config.diag_chains, config.diag_steps, config.diag_every
    out = {}
    for ti, (name, target) in enumerate((("banana", banana), ("mixture", gmm))):
        x0 = _uniform(jax.random.fold_in(key, 300 + ti), n, config.diag_init_half_width)
        h_ula = config.ula_step_size if name == "mixture" else config.traj_step_size
        h_mala = config.mala_mixture_step_size if name == "mixture" else config.banana_step_size
        runs = {
            "ula": _traj(lambda k, s, t=target, h=h_ula: ula_step(k, s, t.score, h), ula_init(x0, target.score),
                         jax.random.fold_in(key, 310 + ti), steps, every)[0],
            "mala": _traj(lambda k, s, t=target, h=h_mala: mala_step(k, s, t.log_prob, h),
                          mala_init(x0, target.log_prob), jax.random.fold_in(key, 320 + ti), steps, every)[0],
        }
        evals = {"ula": 1, "mala": 1}
        if name == "mixture":
            runs["ald_last_level"] = _ald_last_level(config, jax.random.fold_in(key, 330),
                                                     gmm.noise_conditional_score(), x0, every)
            evals["ald_last_level"] = 1
            betas = geometric_betas(config.pt_replicas, config.pt_beta_min)
            pt_state = replica_exchange_init(jnp.broadcast_to(x0, (config.pt_replicas,) + x0.shape), gmm.log_prob)
            run = jax.jit(lambda k, s: run_chain(
                k, lambda kk, ss: replica_exchange_step(kk, ss, gmm.log_prob, betas, config.pt_step_size / betas), s,
                steps, trajectory_every=every))
            _, _, traj = run(jax.random.fold_in(key, 340), pt_state)
            runs["replica_exchange"] = traj[:, 0]                      # the cold replica
            evals["replica_exchange"] = config.pt_replicas
        out[name] = {s: _summary(traj, every, config.diag_checkpoints, evals[s]) for s, traj in runs.items()}
        for s in out[name]:
            out[name][s]["num_evals_per_step"] = evals[s]
    out["settings"] = {"chains": n, "steps": steps, "thinning": every, "init": f"uniform [-w, w]^2, w = "
                       f"{config.diag_init_half_width}", "ess_and_rhat_over": "second half of the draws",
                       "burn_in": "first checkpoint n (of diag_checkpoints) whose split R-hat over draws [n/2, n) "
                                  "is < 1.01 for both coordinates; None: never within the run",
                       "ald_last_level": f"the last of {config.ald_levels} levels, {config.ald_steps_each} steps"}
    return out


def plot_rhat(path, config, diag):
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, name in zip(axes, ("banana", "mixture")):
        for s, d in diag[name].items():
            ax.plot(d["rhat_trace_steps"], d["rhat_trace"], "o-", ms=3, label=s)
        ax.axhline(1.01, color="k", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xlabel("steps n (R-hat of steps [n/2, n))")
        ax.set_ylabel("max split R-hat")
        ax.set_title(f"{name}: {config.diag_chains} chains from uniform starts")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=config.dpi)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# Replica exchange vs annealed Langevin: mode weights against evaluations
# --------------------------------------------------------------------------------------------------
def tempering_vs_ald(config, key, gmm):
    """Weight error of the 0.2 mode against score evaluations per sample: replica exchange (cold replica after
    ``S`` steps, ``R (S + 1)`` evaluations), annealed Langevin (``L T`` evaluations), MALA (``S + 1``)."""
    n = config.mixture_chains
    x0 = _uniform(jax.random.fold_in(key, 2), n, config.mixture_init_half_width)
    true = np.asarray(gmm.weights)
    r, every, blocks = config.pt_replicas, config.pt_every, config.pt_blocks
    betas = geometric_betas(r, config.pt_beta_min)
    pt_state = replica_exchange_init(jnp.broadcast_to(x0, (r,) + x0.shape), gmm.log_prob)
    # One run each, snapshots every `every` steps (replica exchange) / every `r * every` steps (MALA, the
    # same evaluations): one compiled program per sampler whatever the number of budgets.
    t0 = time.perf_counter()
    _, info, pt_traj = jax.jit(lambda k, s: run_chain(
        k, lambda kk, ss: replica_exchange_step(kk, ss, gmm.log_prob, betas, config.pt_step_size / betas), s,
        every * blocks, trajectory_every=every))(jax.random.fold_in(key, 400), pt_state)
    pt_seconds = time.perf_counter() - t0
    _, _, mala_traj = jax.jit(lambda k, s: run_chain(
        k, lambda kk, ss: mala_step(kk, ss, gmm.log_prob, config.mala_mixture_step_size), s, r * every * blocks,
        trajectory_every=r * every))(jax.random.fold_in(key, 410), mala_init(x0, gmm.log_prob))
    out = {"replica_exchange": [], "annealed_langevin": [], "mala": []}
    for b in range(blocks):
        steps = every * (b + 1)
        w = np.asarray(mode_weights(pt_traj[b, 0], gmm.means))
        out["replica_exchange"].append({"steps": steps, "evals_per_sample": r * (steps + 1), "weights": w.tolist(),
                                        "weight_error": float(np.max(np.abs(w - true)))})
        w = np.asarray(mode_weights(mala_traj[b], gmm.means))
        out["mala"].append({"steps": r * steps, "evals_per_sample": r * steps + 1, "weights": w.tolist(),
                            "weight_error": float(np.max(np.abs(w - true)))})
    out["replica_exchange_swap_rate"] = np.asarray(jnp.mean(info.swap_rate, axis=(0, 2))).tolist()
    out["replica_exchange_seconds_incl_compile"] = pt_seconds
    sigmas = ald_sigmas(config)
    for t in config.ald_steps_grid:
        x, nfe = annealed_langevin(jax.random.fold_in(key, 420), gmm.noise_conditional_score(), x0, sigmas,
                                   step_size=config.ald_step_size, n_steps_each=t)
        w = np.asarray(mode_weights(x, gmm.means))
        out["annealed_langevin"].append({"steps_each": t, "evals_per_sample": nfe, "weights": w.tolist(),
                                         "weight_error": float(np.max(np.abs(w - true)))})
    out["settings"] = {"systems": n, "replicas": r, "beta_min": config.pt_beta_min,
                       "betas": np.asarray(betas).tolist(), "mala_step_per_replica": "pt_step_size / beta",
                       "weight_standard_error": float(np.sqrt(true[0] * true[1] / n))}
    return out


def plot_tempering(path, config, res):
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, marker in (("replica_exchange", "o"), ("annealed_langevin", "s"), ("mala", "^")):
        pts = res[name]
        ax.plot([p["evals_per_sample"] for p in pts], [p["weight_error"] for p in pts], marker + "-",
                label=name.replace("_", " "))
    ax.axhline(2 * res["settings"]["weight_standard_error"], color="k", ls="--", lw=0.8, label="2 standard errors")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("score / log-density evaluations per sample")
    ax.set_ylabel("mode-weight error (0.2 / 0.8 mixture)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=config.dpi)
    plt.close(fig)
