"""Noise-level study: how sigma_1, the number of levels L and the loss weighting decide NCSN sample quality.

For each target (the well-separated mixture 0.2 N((-5,-5), I) + 0.8 N((5,5), I) and the banana), each largest
noise level ``sigma_1`` in {max pairwise distance of the training set (NCSNv2 technique 1), 1, half the max
distance}, each ``L`` in {3, 10, 30} (geometric down to ``sigma_L``) and each weighting ``lambda(sigma) =
sigma^2`` (Song & Ermon 2019) or ``1/sigma^2``: train a noise-conditional score network with the multi-level
NCSN loss (:func:`sde_jax.losses.get_ncsn_loss_fn`), sample it with annealed Langevin dynamics
(:func:`sde_jax.samplers.annealed_langevin`, the same budget of updates for every ``L``, step size from
NCSNv2 technique 4, Tweedie denoising) from uniform noise over the data's box, and score the samples against
exact ones: mode-weight error (mixture) and energy distance relative to the level of two exact samples.
Song & Ermon 2020's rules (:mod:`experiments.noise_levels.rules`) are evaluated beside the measurements.

Writes ``table.md`` (the table), ``noise_levels.png`` (heatmaps over ``sigma_1`` x ``L`` per weighting and
target) and ``metrics.json`` to ``workdir``.
"""
from __future__ import annotations

import itertools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import struct

import sde_jax as sj
from experiments._shared import check_workdir, plt, write_json
from experiments.noise_levels import rules
from sde_jax import losses, metrics, training
from sde_jax.models import ScoreMLP
from sde_jax.samplers import annealed_langevin

# Initial box of annealed Langevin per target: (x_lo, x_hi, y_lo, y_hi), uniform noise over the data's range.
BOXES = {"mixture": (-8.0, 8.0, -8.0, 8.0), "banana": (-6.0, 6.0, -4.0, 8.0)}
SIGMA_MAX_LABELS = {"dmax": "d_max", "one": "1", "half_dmax": "d_max / 2"}
DIVERGED = 1e3   # |coordinate| beyond this (or non-finite): a diverged chain, left out of the metrics and counted

__all__ = ["run", "make_target", "NoiseConditionalScore"]


def make_target(name):
    if name == "mixture":
        return sj.toy.GaussianMixture([[-5.0, -5.0], [5.0, 5.0]], 1.0, [0.2, 0.8])
    if name == "banana":
        return sj.toy.Banana()
    raise ValueError(f"unknown target {name!r}; valid names: ['banana', 'mixture'].")


@struct.dataclass
class NoiseConditionalScore:
    """``score(x, sigma) = net(x, sigma) / sigma`` (NCSNv2 technique 3), a pytree: new parameters reuse the
    compiled sampler. The one place the network becomes a score function in this experiment."""

    params: Any
    apply_fn: Callable = struct.field(pytree_node=False)

    def __call__(self, x, sigma):
        return self.apply_fn(self.params, x, sigma) / sigma[:, None]


def _model(config):
    return ScoreMLP(hidden=config.hidden, num_layers=config.num_layers, embedding="fourier", embed_dim=32,
                    fourier_scale=4.0, log_labels=True)


def _trainer(config, model):
    """``train(params, data, sigmas [L], power, key) -> (params, losses)``, jitted: sigmas, weighting power
    and data are arguments, so it compiles once per number of levels ``L``."""
    tx = optax.adam(config.lr)

    @jax.jit
    def train(params, data, sigmas, power, key):
        loss_fn = losses.get_ncsn_loss_fn(sigmas, anneal_power=power)
        step = training.make_train_step(loss_fn, lambda p: NoiseConditionalScore(p, model.apply), tx,
                                        ema_rate=config.ema_rate)
        data_key, loss_key = jax.random.split(key)

        def body(state, _):
            idx = jax.random.randint(jax.random.fold_in(data_key, state.step), (config.batch_size,), 0,
                                     data.shape[0])
            state, m = step(state, data[idx], loss_key)
            return state, m["loss"]

        state, curve = jax.lax.scan(body, training.init_train_state(params, tx), None, length=config.num_steps)
        return state.ema_params, curve

    return train


def _check_config(config):
    for t in config.targets:
        make_target(t)
    bad = [r for r in config.sigma_max_rules if r not in SIGMA_MAX_LABELS]
    if bad:
        raise ValueError(f"config.sigma_max_rules: unknown {bad}; valid names: {sorted(SIGMA_MAX_LABELS)}.")
    for L in config.num_levels:
        if not isinstance(L, int) or L < 2 or config.total_steps % L:
            raise ValueError(f"config.num_levels: each L must be an integer >= 2 dividing config.total_steps "
                             f"({config.total_steps}); got {L!r}.")


def run(config, workdir):
    """Run the grid; write ``table.md``, ``noise_levels.png`` and ``metrics.json``; return the metrics."""
    check_workdir(workdir)
    _check_config(config)
    t_start = time.perf_counter()
    key = jax.random.key(config.seed)
    model = _model(config)
    params0 = model.init(jax.random.fold_in(key, 1), jnp.zeros((1, 2)), jnp.ones((1,)))
    train = _trainer(config, model)
    rows, per_target = [], {}
    for ti, name in enumerate(config.targets):
        target = make_target(name)
        data = target.sample(jax.random.fold_in(key, 10 + ti), config.num_train)
        exact = target.sample(jax.random.fold_in(key, 20 + ti), config.num_samples)
        ref = np.asarray(metrics.two_sample_reference(target.sample, jax.random.fold_in(key, 30 + ti),
                                                      config.num_samples, num_pairs=config.num_reference_pairs))
        ref_level = float(np.sqrt(np.mean(ref**2)))
        d_max = rules.max_pairwise_distance(np.asarray(data))
        sigma_max = {"dmax": d_max, "one": 1.0, "half_dmax": 0.5 * d_max}
        box = BOXES[name]
        x0 = jnp.stack([jax.random.uniform(jax.random.fold_in(key, 40 + ti), (config.num_samples,), minval=box[0],
                                           maxval=box[1]),
                        jax.random.uniform(jax.random.fold_in(key, 50 + ti), (config.num_samples,), minval=box[2],
                                           maxval=box[3])], -1)
        per_target[name] = {"d_max": d_max, "energy_distance_reference_level": ref_level,
                            "true_weights": np.asarray(target.weights).tolist() if name == "mixture" else None}
        for rule, L, power in itertools.product(config.sigma_max_rules, config.num_levels, config.anneal_powers):
            t0 = time.perf_counter()
            s1 = sigma_max[rule]
            sigmas = jnp.asarray(np.geomspace(s1, config.sigma_min, L), jnp.float32)
            gamma = (s1 / config.sigma_min) ** (1.0 / (L - 1))
            steps_each = config.total_steps // L
            eps_v2 = rules.ncsnv2_step_size(config.sigma_min, gamma, steps_each) if gamma > 1 else None
            params, curve = train(params0, data, sigmas, jnp.float32(power), jax.random.fold_in(key, 60))
            score = NoiseConditionalScore(params, model.apply)
            x, nfe = annealed_langevin(jax.random.fold_in(key, 70), score, x0, sigmas, step_size=2.0 * eps_v2,
                                       n_steps_each=steps_each, denoise=True)
            x = np.asarray(x)
            finite = np.all(np.isfinite(x) & (np.abs(x) < DIVERGED), axis=1)
            row = {"target": name, "sigma_max_rule": rule, "sigma_1": s1, "num_levels": L, "anneal_power": power,
                   "gamma": gamma, "steps_each": steps_each, "step_size": 2.0 * eps_v2, "nfe": nfe,
                   "gamma_condition": rules.gamma_condition(gamma, 2),
                   "final_loss": float(np.mean(np.asarray(curve)[-100:])),
                   "diverged_fraction": float(1.0 - finite.mean())}
            xf = jnp.asarray(x[finite])
            ed = float(metrics.energy_distance(xf, exact)) if finite.sum() >= 2 else float("inf")
            row["energy_distance"] = ed
            row["energy_distance_ratio"] = ed / ref_level
            if name == "mixture":
                # weights over all samples: a diverged sample belongs to no mode
                w = np.asarray(metrics.mode_weights(xf, target.means)) * finite.mean() if finite.sum() else np.zeros(2)
                row["mode_weights"] = w.round(4).tolist()
                row["mode_weight_error"] = float(np.max(np.abs(w - np.asarray(target.weights))))
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            logging.info("%s sigma_1=%s L=%d p=%+.0f: %s (%.1f s)", name, rule, L, power,
                         {k: row.get(k) for k in ("mode_weight_error", "energy_distance_ratio")}, row["seconds"])
    best = _best(rows)
    table = _table(config, rows)
    cifar_gamma, cifar_L = rules.ncsnv2_num_levels(50.0, 0.01, 3072)
    out = {
        "rows": rows, "targets": per_target, "best": best, "table_markdown": table,
        "ncsnv2_rules": {
            "technique_1_sigma_1": {name: v["d_max"] for name, v in per_target.items()},
            "technique_2_in_2d": {"gamma_for_condition_0.5": rules.ncsnv2_num_levels(20.0, config.sigma_min, 2)[0],
                                  "condition_at_gamma_1": rules.gamma_condition(1.0, 2),
                                  "note": "no gamma > 1 meets the 0.5 target in 2-D: the condition is >= 0.997, so "
                                          "technique 2 places no constraint on L here"},
            "technique_2_cifar10": {"gamma": cifar_gamma, "num_levels": cifar_L, "paper_num_levels": 232},
            "technique_4_cifar10_eps": rules.ncsnv2_step_size(0.01, (50.0 / 0.01) ** (1 / 231), 5),
            "technique_4_paper_eps": 6.2e-6,
        },
        "config": config.to_dict(), "wall_seconds": time.perf_counter() - t_start, "jax": jax.__version__,
        "device": str(jax.devices()[0].platform),
    }
    with open(f"{workdir}/table.md", "w") as f:
        f.write(table)
    _plot(config, workdir, rows)
    write_json(f"{workdir}/metrics.json", out)
    return out


def _best(rows):
    best = {}
    for name in {r["target"] for r in rows}:
        key = "mode_weight_error" if name == "mixture" else "energy_distance_ratio"
        r = min((r for r in rows if r["target"] == name), key=lambda r: r[key])
        best[name] = {k: r[k] for k in ("sigma_max_rule", "sigma_1", "num_levels", "anneal_power", key)}
    return best


def _table(config, rows):
    index = {(r["target"], r["sigma_max_rule"], r["num_levels"], r["anneal_power"]): r for r in rows}
    head = ("| sigma_1 | L | lambda(sigma) | mixture: mode-weight error | mixture: energy dist. / ref. | "
            "banana: energy dist. / ref. | diverged (mixture / banana) | step size (2 eps) |\n"
            "|---|---|---|---|---|---|---|---|\n")
    lines = []
    for rule, L, power in itertools.product(config.sigma_max_rules, config.num_levels, config.anneal_powers):
        mix, ban = index.get(("mixture", rule, L, power)), index.get(("banana", rule, L, power))
        ref = mix or ban

        def fmt(r, k, spec):
            return format(r[k], spec) if r is not None and k in r else "–"

        lines.append(f"| {SIGMA_MAX_LABELS[rule]} ({ref['sigma_1']:.3g}) | {L} | "
                     f"{'sigma^2' if power == 2 else 'sigma^-2' if power == -2 else f'sigma^{power:g}'} | "
                     f"{fmt(mix, 'mode_weight_error', '.3f')} | {fmt(mix, 'energy_distance_ratio', '.1f')} | "
                     f"{fmt(ban, 'energy_distance_ratio', '.1f')} | {fmt(mix, 'diverged_fraction', '.0%')} / "
                     f"{fmt(ban, 'diverged_fraction', '.0%')} | {ref['step_size']:.3g} |")
    return head + "\n".join(lines) + "\n"


def _plot(config, workdir, rows):
    targets = list(dict.fromkeys(r["target"] for r in rows))
    powers = list(config.anneal_powers)
    fig, axes = plt.subplots(len(targets), len(powers), figsize=(3.6 * len(powers), 3.0 * len(targets)),
                             squeeze=False)
    for i, name in enumerate(targets):
        key = "mode_weight_error" if name == "mixture" else "energy_distance_ratio"
        for j, power in enumerate(powers):
            grid_vals = np.full((len(config.sigma_max_rules), len(config.num_levels)), np.nan)
            for r in rows:
                if r["target"] == name and r["anneal_power"] == power:
                    grid_vals[list(config.sigma_max_rules).index(r["sigma_max_rule"]),
                              list(config.num_levels).index(r["num_levels"])] = r[key]
            ax = axes[i, j]
            shade = grid_vals if key == "mode_weight_error" else np.log10(np.clip(grid_vals, 0.1, 1e6))
            ax.imshow(shade, cmap="YlOrRd", aspect="auto")
            for (a, b), v in np.ndenumerate(grid_vals):
                ax.text(b, a, f"{v:.2f}" if key == "mode_weight_error" else (f"{v:.1f}" if v < 1e4 else f"{v:.0e}"),
                        ha="center", va="center", fontsize=8)
            ax.set_xticks(range(len(config.num_levels)), [f"L={L}" for L in config.num_levels], fontsize=8)
            ax.set_yticks(range(len(config.sigma_max_rules)),
                          [f"s1={SIGMA_MAX_LABELS[r]}" for r in config.sigma_max_rules], fontsize=8)
            lam = "sigma^2" if power == 2 else "1/sigma^2" if power == -2 else f"sigma^{power:g}"
            what = "mode-weight error" if key == "mode_weight_error" else "energy dist. / ref. (log colour)"
            ax.set_title(f"{name}: {what}"
                         f"\nlambda = {lam}", fontsize=9)
    fig.tight_layout()
    fig.savefig(f"{workdir}/noise_levels.png", dpi=config.dpi)
    plt.close(fig)

