"""toy2d: train a score model on a 2-D Gaussian mixture, sample it with the PC and ODE samplers, and score
everything against exact answers.

Writes to ``workdir``:

* ``samples.png``: true samples beside the PC-sampler and ODE-sampler samples (same number of points), and those
  of any further sampler in ``config.sampling.samplers`` (name -> ``{method, <options>}`` for
  :func:`sde_jax.sample`, e.g. ``edm_heun`` or ``dpm_solver++``).
* ``score_field.png``: the learned score field (EMA parameters) beside the exact score of ``p_t`` at three
  times, arrows ``s(t) * score`` over the exact log-density.
* ``loss.png``: the training loss (window means) against the step.
* ``metrics.json``: per sampler the mode weights and their largest error, the energy distance to true
  samples with the reference level of two independent true samples, and the number of score evaluations
  (NFE); the score error of the learned model at initialisation and after training; timings.
* ``checkpoints/`` (orbax; the latest for resume), ``train_history.csv``, ``config.json``.

Running again with the same ``workdir`` resumes from the latest checkpoint (no work is repeated when the run
had finished; sampling and evaluation are redone with the same keys, so the metrics are reproduced).
"""
from __future__ import annotations

import functools
import json
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.toy2d import plots
from sde_jax import likelihood, samplers, training
from sde_jax.samplers.api import sampler_options
from sde_jax import metrics as M
from sde_jax.toy import GaussianMixture

__all__ = ["TARGETS", "get_target", "score_error", "score_errors", "heldout_nll", "train", "evaluate", "run",
           "Trained", "sampler_specs"]


def _gmm5():
    """Five modes with unequal weights and shapes, well separated (nearest-mean assignment is ~exact)."""
    means = [[0.0, 0.0], [3.0, 0.0], [-3.0, 0.0], [0.0, 3.0], [0.0, -3.0]]
    stds = [[0.4, 0.4], [0.35, 0.5], [0.5, 0.35], [0.3, 0.3], [0.45, 0.3]]
    return GaussianMixture(means, stds, [0.3, 0.25, 0.2, 0.15, 0.1])


def _gmm2():
    """Two modes 0.2 / 0.8 (the classic mode-weight test of Song & Ermon 2019)."""
    return GaussianMixture([[-2.5, -2.5], [2.5, 2.5]], 0.5, [0.2, 0.8])


TARGETS = {"gmm5": _gmm5, "gmm2": _gmm2}
"""``config.data.target`` -> a :class:`~sde_jax.toy.GaussianMixture` (exact score and perturbed score)."""


def get_target(name: str) -> GaussianMixture:
    if name not in TARGETS:
        raise ValueError(f"data.target: unknown name {name!r}; valid names: {sorted(TARGETS)}.")
    return TARGETS[name]()


def score_error(score_fn, target: GaussianMixture, sde, key, n: int, eps: float) -> float:
    """Weighted Fisher divergence per dimension, the learnable part of the DSM loss:

    .. math::  \\frac1D\\,\\mathbb E_{t \\sim U(\\epsilon, T)}\\,\\mathbb E_{x \\sim p_t}\\,
               s(t)^2\\,\\|s_\\theta(x, t) - \\nabla \\log p_t(x)\\|^2,

    estimated with ``n`` stratified times and exact samples of ``p_t`` (fixed ``key``: comparable across
    calls). ``p_t`` and its score are exact for a Gaussian mixture under a linear SDE.
    """
    return float(_score_error(score_fn, target, sde, key, n, eps))


@functools.partial(jax.jit, static_argnums=(4,))
def _score_error(score_fn, target, sde, key, n, eps):
    key_x, key_z, key_u = jax.random.split(key, 3)
    t = eps + (sde.T - eps) * (jnp.arange(n) + jax.random.uniform(key_u, (n,))) / n
    x0 = target.sample(key_x, n)
    mean, std = sde.marginal_prob(x0, t)
    xt = mean + std[:, None] * jax.random.normal(key_z, x0.shape)
    diff = score_fn(xt, t) - target.perturbed_score(sde)(xt, t)
    return jnp.mean(std**2 * jnp.sum(diff**2, -1)) / target.dim


def _sampling_sde(sde, config):
    """The SDE the PC sampler steps through: continuous models get ``N = sampling.num_steps``; discrete ones
    keep their training levels."""
    if training.is_continuous(config):
        return sde.replace(N=int(config.sampling.num_steps))
    return sde


def sampler_specs(config) -> dict:
    """Name -> ``(method, options)`` of the samplers :func:`evaluate` runs through :func:`sde_jax.sample`: ``pc``
    and ``ode`` from their ``config.sampling`` fields, then each entry of ``config.sampling.samplers``
    (``{method: ..., <its options>}``; ``eps`` defaults to ``sampling.eps``). Validated here, before training:
    unknown methods and options raise, listing the valid ones."""
    s = config.sampling
    specs = {"pc": ("pc", dict(predictor=s.predictor, corrector=s.corrector, snr=s.snr,
                               n_corrector_steps=s.n_corrector_steps, eps=s.eps, denoise=True)),
             "ode": ("ode", dict(solver=s.ode_solver, rtol=s.ode_rtol, atol=s.ode_atol, eps=s.eps))}
    extra = s.get("samplers") or {}
    for name, spec in (extra.to_dict() if hasattr(extra, "to_dict") else dict(extra)).items():
        options = dict(spec)
        if "method" not in options:
            raise ValueError(f"sampling.samplers.{name}: needs a 'method'; valid: {sorted(samplers.SAMPLERS)}.")
        method = options.pop("method")
        if method not in samplers.SAMPLERS:
            raise ValueError(f"sampling.samplers.{name}.method: unknown method {method!r}; valid names: "
                             f"{sorted(samplers.SAMPLERS)}.")
        valid = set(sampler_options(method)) | {"num_steps"}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ValueError(f"sampling.samplers.{name}: unknown option(s) {unknown} for method {method!r}; valid "
                             f"options: {sorted(valid)}.")
        if "eps" in valid:
            options.setdefault("eps", s.eps)
        specs[name] = (method, options)
    return specs


def _sampler_metrics(x, true_x, target, ref_level, nfe, seconds, config):
    weights = np.asarray(M.mode_weights(x, target.means))
    ed = float(M.energy_distance(x, true_x))
    err = float(np.max(np.abs(weights - np.asarray(target.weights))))
    return {
        "nfe": int(nfe),
        "mode_weights": weights.round(4).tolist(),
        "mode_weight_error": err,
        "energy_distance": ed,
        "energy_distance_ratio": ed / ref_level,
        "passes": bool(err <= config.eval.max_mode_weight_error
                       and ed <= config.eval.max_energy_distance_ratio * ref_level),
        "wall_seconds": seconds,
    }


class Trained(NamedTuple):
    """What :func:`train` hands to :func:`evaluate`."""

    parts: training.Components
    target: GaussianMixture
    state: training.TrainState
    history: dict
    resumed_from: int | None
    seconds: float


def _keys(config):
    names = ("init", "train", "pc", "ode", "true", "ref", "err")
    return dict(zip(names, jax.random.split(jax.random.key(config.seed), len(names))))


def train(config, workdir: str, *, progress: bool = True) -> Trained:
    """Validate the config, then train (or resume) the score model; checkpoints go to ``workdir``."""
    target = get_target(config.data.target)
    sampler_specs(config)   # fail on a bad sampler before training
    # ESM trains against the exact score of p_t, which only a toy target has.
    extra = (lambda sde: {"target_score_fn": target.perturbed_score(sde)}) if config.training.loss == "esm" else None
    parts = training.build(config, workdir, data_shape=(target.dim,), loss_extra=extra)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json(indent=2))
    keys = _keys(config)
    state = training.init_train_state(parts.init_params(keys["init"]), parts.tx)
    batch_fn = training.sampler_batch_fn(target.sample, config.training.batch_size)
    t0 = time.perf_counter()
    state, history = training.fit(
        state, parts.train_step, batch_fn, keys["train"], num_steps=config.training.num_steps, workdir=workdir,
        steps_per_call=config.training.steps_per_call, checkpoint_every=config.training.checkpoint_every,
        snapshot_every=config.training.snapshot_every or None, log_every=config.training.log_every,
        mesh=parts.mesh, progress=progress)
    return Trained(parts, target, state, history, history.resumed_from, time.perf_counter() - t0)


def score_errors(config, trained: Trained) -> tuple[float, float]:
    """:func:`score_error` of the initial parameters and of the trained EMA parameters (same keys)."""
    parts, target, keys = trained.parts, trained.target, _keys(config)
    init = parts.init_params(keys["init"])  # re-derived: the state's were donated
    ema = jax.device_put(trained.state.ema_params, jax.devices()[0])
    n, eps = int(config.eval.score_error_samples), float(config.sampling.eps)
    return (score_error(parts.make_score_fn(init), target, parts.sde, keys["err"], n, eps),
            score_error(parts.make_score_fn(ema), target, parts.sde, keys["err"], n, eps))


def loss_at_exact_score(config, trained: Trained, num_batches: int = 32) -> float | None:
    """The training loss evaluated at the exact score of ``p_t`` (its minimum: the irreducible part), by
    Monte Carlo over ``num_batches`` batches; ``None`` for the discrete losses (their noise levels are not
    the SDE's marginals exactly)."""
    if not training.is_continuous(config):
        return None
    parts, target = trained.parts, trained.target
    exact, b = target.perturbed_score(parts.sde), int(config.training.batch_size)

    def one(k):
        return parts.loss_fn(exact, k, target.sample(jax.random.fold_in(k, 1), b))[0]

    keys = jax.random.split(jax.random.fold_in(_keys(config)["err"], 1), num_batches)
    return float(jnp.mean(jax.jit(jax.vmap(one))(keys)))


def heldout_nll(config, score_fn, target: GaussianMixture, sde) -> dict:
    """Test-set negative log-likelihood (nats per example) of the model against the target's true one.

    ``config.eval.nll_samples`` fresh target samples (a key of their own, never seen in training) are
    encoded with the probability-flow ODE (:func:`sde_jax.log_likelihood`, exact divergence, Dopri5 at
    ``config.eval.nll_rtol``/``nll_atol``, from ``t = config.eval.nll_eps``) three ways:

    * ``model``: the learned score: ``-log p_model(x)`` (the model's density at ``t = nll_eps``);
    * ``exact_score_ode``: the exact score of ``p_t`` through the same solver: what a perfect model gets;
      its gap to ``true`` is the solver error plus the prior mismatch ``log pi - log p_T`` (checks the
      machinery, independent of training);
    * ``true``: ``-log p(x)`` of the target in closed form.

    ``model - true`` is a Monte-Carlo estimate of ``KL(p || p_model)`` (non-negative in expectation), with the
    standard error of the paired difference.
    """
    n = int(config.eval.nll_samples)
    x = target.sample(jax.random.fold_in(jax.random.key(config.seed), 1_000_003), n)
    kw = dict(divergence="exact", solver="dopri5", rtol=float(config.eval.nll_rtol),
              atol=float(config.eval.nll_atol), eps=float(config.eval.nll_eps))
    t0 = time.perf_counter()
    logp_model, nfe = likelihood.log_likelihood(None, sde, score_fn, x, **kw)
    logp_model = np.asarray(jax.block_until_ready(logp_model), np.float64)
    seconds = time.perf_counter() - t0
    logp_exact, nfe_exact = likelihood.log_likelihood(None, sde, target.perturbed_score(sde), x, **kw)
    logp_exact = np.asarray(logp_exact, np.float64)
    logp_true = np.asarray(target.log_prob(x), np.float64)

    def mean_se(v):
        return float(np.mean(v)), float(np.std(v, ddof=1) / np.sqrt(len(v)))

    (model, model_se), (exact, _), (true, true_se) = mean_se(-logp_model), mean_se(-logp_exact), mean_se(-logp_true)
    gap, gap_se = mean_se(logp_true - logp_model)
    return {
        "model": model, "model_stderr": model_se, "exact_score_ode": exact, "true": true, "true_stderr": true_se,
        "model_minus_true": gap, "model_minus_true_stderr": gap_se,
        "exact_score_ode_minus_true": exact - true,
        "nfe_model": int(nfe), "nfe_exact_score": int(nfe_exact), "num_samples": n, "wall_seconds_model": seconds,
        "definition": "mean negative log-likelihood in nats per example (2-D) of held-out target samples: "
                      "model and exact_score_ode by the probability-flow ODE (exact divergence, dopri5) from "
                      "t = eval.nll_eps, true in closed form; model_minus_true estimates KL(p || p_model)"}


def run(config, workdir: str, *, progress: bool = True) -> dict:
    """Train (or resume), sample, evaluate and plot; returns the metrics written to ``metrics.json``."""
    t_start = time.perf_counter()
    trained = train(config, workdir, progress=progress)
    return evaluate(config, workdir, trained, t_start=t_start)


def evaluate(config, workdir: str, trained: Trained, *, t_start: float | None = None) -> dict:
    """Sample with the PC and ODE samplers and those of ``config.sampling.samplers`` (EMA parameters, one device),
    compute the metrics, write the figures and ``metrics.json``."""
    t_start = time.perf_counter() if t_start is None else t_start
    parts, target, state, history = trained.parts, trained.target, trained.state, trained.history
    sde, keys = parts.sde, _keys(config)
    score_fn = parts.make_score_fn(jax.device_put(state.ema_params, jax.devices()[0]))
    eval_eps = float(config.sampling.eps)
    err_init, err_final = score_errors(config, trained)
    key_pc, key_ode, key_true, key_ref = keys["pc"], keys["ode"], keys["true"], keys["ref"]

    n = int(config.sampling.num_samples)
    shape = (n, target.dim)
    true_x = target.sample(key_true, n)
    ref = np.asarray(M.two_sample_reference(target.sample, key_ref, n, num_pairs=config.eval.num_reference_pairs))
    ref_level = float(np.sqrt(np.mean(ref**2)))

    sampled, results = {}, {}
    for i, (name, (method, options)) in enumerate(sampler_specs(config).items()):
        # pc and ode keep their own keys; further samplers get keys folded from the ode key
        key = {"pc": key_pc, "ode": key_ode}.get(name, jax.random.fold_in(key_ode, 1000 + i))
        t0 = time.perf_counter()
        x, nfe = samplers.sample(key, _sampling_sde(sde, config) if method == "pc" else sde, score_fn, shape,
                                 method=method, **options)
        x = jax.block_until_ready(x)
        sampled[name.upper() if name in ("pc", "ode") else name] = x
        results[name] = _sampler_metrics(x, true_x, target, ref_level, nfe, time.perf_counter() - t0, config)

    metrics = {
        "target": config.data.target,
        "true_mode_weights": np.asarray(target.weights).round(4).tolist(),
        "sde": config.sde.name,
        "loss": config.training.loss,
        "num_samples": n,
        "energy_distance_reference": {
            "level": ref_level, "mean": float(ref.mean()), "std": float(ref.std(ddof=1)),
            "num_pairs": int(config.eval.num_reference_pairs),
            "definition": "root mean square of the unbiased energy distance between two independent true "
                          "samples of num_samples points (its expectation is 0)"},
        "samplers": results,
        "score_error": {
            "init": err_init, "final": err_final, "reduction": err_init / err_final,
            "definition": "E_t E_{x~p_t} s(t)^2 ||s_theta(x,t) - grad log p_t(x)||^2 / D, t ~ U(sampling.eps, T), "
                          "EMA parameters"},
        "training": {
            "num_steps": int(state.step), "resumed_from_step": trained.resumed_from,
            "final_loss": float(history["loss"][-1]) if len(history.get("loss", ())) else None,
            "loss_at_exact_score": loss_at_exact_score(config, trained),
            "wall_seconds_this_run": trained.seconds,
            "num_devices": int(parts.mesh.size)},
        "nll": heldout_nll(config, score_fn, target, sde),
    }
    plots.samples(os.path.join(workdir, "samples.png"), target, true_x, sampled, metrics)
    plots.score_field(os.path.join(workdir, "score_field.png"), target, sde, score_fn, eval_eps)
    plots.loss(os.path.join(workdir, "loss.png"), history, config, metrics["training"]["loss_at_exact_score"])
    metrics["wall_seconds"] = time.perf_counter() - t_start
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics
