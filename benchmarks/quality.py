"""Sample quality against the number of score evaluations (NFE), for every sampler of ``sde_jax.sample``, on an
exact target: the toy2d five-mode Gaussian mixture under the VP SDE, driven by its exact score (so every error is
the sampler's own).

Usage::

    python -m benchmarks.quality --out DIR                 # ~10 min on 2 CPU cores; writes quality.json, quality.md
    python -m benchmarks.quality --out DIR --quick         # 2 NFE targets, fewer samples (smoke)

For each sampler and NFE target (10, 20, 35, 50, 100, 1000) the step count is the one whose NFE is closest
(adaptive samplers: a tolerance per target, their NFE as measured), then on ``num_samples`` samples:

* ``mode_weight_error``: the largest error of the fraction of samples nearest to each mode;
* ``energy_distance_ratio``: the energy distance to exact samples over the two-sample level (RMS of the energy
  distance between two independent exact samples of the same size; about 1 is as good as exact sampling);
* ``map_error``: deterministic samplers only: RMS distance to the exact probability-flow map of the same prior
  points (Tsit5 at rtol = atol = 1e-9, then the same Tweedie denoising at ``eps``): the solver error alone.

JSON: ``{"schema_version": 1, "target", "sde", "eps", "num_samples", "reference_level", "machine", "rows": [...]}``,
a row per (sampler, NFE target) with ``sampler``, ``method``, ``options``, ``nfe_target``, ``num_steps``,
``nfe``, the three statistics and ``wall_s``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

__all__ = ["SAMPLERS", "NFE_TARGETS", "run", "markdown"]

NFE_TARGETS = (10, 20, 35, 50, 100, 1000)

# name -> (method, options, nfe(num_steps), deterministic); adaptive ones: tolerance per NFE target instead.
SAMPLERS = {
    "pc (EM, no corrector)": ("pc", dict(predictor="euler_maruyama", corrector="none"), lambda n: n, False),
    "pc (rev. diffusion + Langevin)": ("pc", dict(predictor="reverse_diffusion", corrector="langevin"),
                                       lambda n: 2 * n, False),
    "ode Euler (uniform t)": ("ode", dict(solver="euler", denoise=True), lambda n: n + 1, True),
    "ode Heun (uniform t)": ("ode", dict(solver="heun", denoise=True), lambda n: 2 * n + 1, True),
    "ode Tsit5 (adaptive)": ("ode", dict(solver="tsit5", denoise=True), None, True),
    "ddim (Euler in sigma, uniform t)": ("ddim", {}, lambda n: n + 1, True),
    "ddim (Euler in sigma, Karras)": ("ddim", dict(grid="karras"), lambda n: n + 1, True),
    "ddim eta=1 (ancestral)": ("ddim", dict(eta=1.0), lambda n: n + 1, False),
    "edm_heun (Karras)": ("edm_heun", {}, lambda n: 2 * n + 1, True),
    "edm_stochastic (S_churn=10)": ("edm_stochastic", dict(S_churn=10.0), lambda n: 2 * n + 1, False),
    "dpm_solver++ 2M (logSNR)": ("dpm_solver++", dict(order=2), lambda n: n + 1, True),
    "dpm_solver++ 3M (logSNR)": ("dpm_solver++", dict(order=3), lambda n: n + 1, True),
    "dpm_solver 3S (logSNR)": ("dpm_solver", dict(order=3), lambda n: 3 * n + 1, True),
    "adaptive_sde": ("adaptive_sde", {}, None, False),
}
# Tolerances of the adaptive samplers for each NFE target (chosen once on this target; their NFE is measured).
ADAPTIVE_TOL = {"ode Tsit5 (adaptive)": {10: 1e-1, 20: 3e-2, 35: 1e-2, 50: 3e-3, 100: 1e-4, 1000: 1e-9},
                "adaptive_sde": {10: 0.5, 20: 0.3, 35: 0.2, 50: 0.1, 100: 0.05, 1000: 4e-3}}


def _steps_for(nfe_fn, target):
    n = min(range(1, target + 2), key=lambda k: (abs(nfe_fn(k) - target), -k))
    return n


def run(out: str, *, quick: bool = False, num_samples: int | None = None, seed: int = 0) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import sde_jax as sj
    from benchmarks.timing import machine_info
    from experiments.toy2d.experiment import get_target
    from sde_jax import metrics as M

    targets = (10, 35) if quick else NFE_TARGETS
    n = num_samples or (500 if quick else 4000)
    target = get_target("gmm5")
    sde, eps = sj.VPSDE(), 1e-3
    score = target.perturbed_score(sde)
    key_prior, key_true, key_ref, key_s = jax.random.split(jax.random.key(seed), 4)
    x_T = sde.prior_sampling(key_prior, (n, 2))
    true_x = target.sample(key_true, n)
    ref = np.asarray(M.two_sample_reference(target.sample, key_ref, n, num_pairs=10 if quick else 20))
    level = float(np.sqrt(np.mean(ref**2)))
    exact_map, _ = sj.ode_sample(key_prior, sde, score, (n, 2), rtol=1e-9, atol=1e-9, eps=eps, x_init=x_T,
                                 denoise=True)
    rows = []
    for name, (method, options, nfe_fn, deterministic) in SAMPLERS.items():
        for i, nfe_target in enumerate(targets):
            kw = dict(options, eps=eps)
            if method in ("ode", "adaptive_sde") or deterministic:
                kw["x_init"] = x_T          # the same prior points: map errors are comparable
            steps = None
            if nfe_fn is None:
                tol = ADAPTIVE_TOL[name][nfe_target]
                kw.update(rtol=tol, atol=tol)
            else:
                steps = _steps_for(nfe_fn, nfe_target)
            this_sde = sde.replace(N=steps) if method == "pc" else sde
            t0 = time.perf_counter()
            try:
                x, nfe = sj.sample(jax.random.fold_in(key_s, 1000 * len(rows) + i), this_sde, score, (n, 2),
                                   method=method, num_steps=steps, **kw)
            except ValueError as e:      # e.g. the VP DDPM chain with fewer than beta_max = 20 levels
                rows.append(dict(sampler=name, method=method, options=dict(options), nfe_target=nfe_target,
                                 num_steps=steps, tolerance=kw.get("rtol"), nfe=None, mode_weight_error=None,
                                 energy_distance_ratio=None, map_error=None, wall_s=None, refused=str(e)))
                print(f"  {name:<34} refused at {steps} steps: {e}", file=sys.stderr, flush=True)
                continue
            x = np.asarray(jax.block_until_ready(x))
            wall = time.perf_counter() - t0
            ok = np.all(np.isfinite(x))
            w = np.asarray(M.mode_weights(x, target.means)) if ok else None
            ed = float(M.energy_distance(jnp.asarray(x), true_x)) if ok else None
            rows.append(dict(
                sampler=name, method=method, options={k: v for k, v in options.items()}, nfe_target=nfe_target,
                num_steps=steps, tolerance=kw.get("rtol"), nfe=int(nfe),
                mode_weight_error=None if w is None else float(np.max(np.abs(w - np.asarray(target.weights)))),
                energy_distance_ratio=None if ed is None else ed / level,
                map_error=(float(np.sqrt(np.mean(np.sum((x - np.asarray(exact_map)) ** 2, -1))))
                           if deterministic and ok else None),
                wall_s=wall))
            print(f"  {name:<34} NFE {int(nfe):>5} (target {nfe_target:>4}): weight err "
                  f"{rows[-1]['mode_weight_error']}, ED ratio {rows[-1]['energy_distance_ratio']}, "
                  f"map err {rows[-1]['map_error']}", file=sys.stderr, flush=True)
    doc = dict(schema_version=1, target="toy2d gmm5 (5 modes, weights 0.3/0.25/0.2/0.15/0.1)", sde="VPSDE()",
               eps=eps, num_samples=n, reference_level=level, machine=machine_info(), rows=rows)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "quality.json"), "w") as f:
        json.dump(doc, f, indent=1)
    with open(os.path.join(out, "quality.md"), "w") as f:
        f.write(markdown(doc))
    return doc


def _fmt(v, spec):
    return "–" if v is None else format(v, spec)


def markdown(doc) -> str:
    """One row per sampler, one column per NFE target: ``NFE: mode-weight error / ED ratio / map error``."""
    targets = sorted({r["nfe_target"] for r in doc["rows"]})
    lines = [f"Target {doc['target']}, {doc['sde']}, eps {doc['eps']}, {doc['num_samples']} samples; cell: "
             "actual NFE: mode-weight error / energy distance (x two-sample level) / map error (deterministic)", "",
             "| sampler | " + " | ".join(f"NFE ~{t}" for t in targets) + " |",
             "|---|" + "---|" * len(targets)]
    by = {}
    for r in doc["rows"]:
        by.setdefault(r["sampler"], {})[r["nfe_target"]] = r
    for name, cells in by.items():
        out = []
        for t in targets:
            r = cells.get(t)
            if r is None:
                out.append("")
            elif r.get("refused"):
                out.append(f"refused ({r['num_steps']} steps)")
            else:
                out.append(f"{r['nfe']}: {_fmt(r['mode_weight_error'], '.3f')} / "
                           f"{_fmt(r['energy_distance_ratio'], '.2f')} / {_fmt(r['map_error'], '.1e')}")
        lines.append(f"| {name} | " + " | ".join(out) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="2 NFE targets and 500 samples (smoke)")
    ap.add_argument("--num-samples", type=int, default=None)
    args = ap.parse_args(argv)
    doc = run(args.out, quick=args.quick, num_samples=args.num_samples)
    print(markdown(doc))
    return doc


if __name__ == "__main__":
    main()
