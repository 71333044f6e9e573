"""Where the probability-flow likelihood's time goes: the adaptive solve, with its fused field and with the
per-example field it replaced, against the same number of evaluations of its vector field, evaluated four ways.

Usage::

    python -m benchmarks.likelihood_field --out DIR [--dim 10] [--batch 256] [--repeats 5]

The target is the likelihood peer case's (:func:`benchmarks.peers.likelihood_mixture`: 4 anisotropic components,
exact perturbed score, VP SDE, exact divergence, dopri5, ``rtol = atol = 1e-5``, ``eps = 1e-5``). Cases:

* ``solve``: :func:`sde_jax.log_likelihood`, one jitted program; its NFE ``n`` sets the field cases' length.
* ``solve_per_example``: the same program with the per-example field (``_encode(..., fused=False)``, the field of
  fixed-step solves): the solve before the fused field.
* ``field_per_example``: ``n`` evaluations of the per-example augmented field (drift + ``D`` JVPs) in a
  ``lax.scan``, ``vmap``-ed over the examples, each at its own time, the score seeing a batch of one.
* ``field_fused``: the same with the adaptive solve's field (:func:`sde_jax.likelihood._fused_field`: a
  ``custom_vmap`` whose rule linearises the batch's drift once and runs ``D`` JVPs of the batch).
* ``field_batched``: the same values written for the whole batch by hand (the drift of ``[B, D]`` at per-example
  times, ``D`` JVPs of the batch), no ``vmap`` of a batch of one: the bound the fused field aims at.
* ``field_shared_time``: ``vmap`` as ``field_per_example``, but one time for the whole batch (what the host-scipy
  peer evaluates: one call per evaluation, one time).

``solve_per_example / solve`` is the fused field's gain in the solve (results agree to float rounding: the record
has the largest difference); ``solve / field_fused`` near 1 says the step control costs little next to the field.
Calls alternate (:func:`benchmarks.timing.time_interleaved`), compile untimed. Writes
``DIR/likelihood_field.json``.
"""
from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

import sde_jax as sj
from benchmarks.peers import likelihood_mixture
from benchmarks.timing import loadavg, summarize, time_interleaved, write_results
from sde_jax import flow, likelihood
from sde_jax.sdes import probability_flow_drift

TOL, EPS = 1e-5, 1e-5
_EXACT = likelihood._Divergence("exact", "", 1)


def _solve_per_example(sde, score):
    """:func:`sde_jax.log_likelihood`'s program with the per-example field (its fixed-step path's field) in the
    adaptive solve: what the solve was before the fused field."""
    config = flow.flow_config("dopri5", None, 4096)

    def solve(x):
        logp, _, info = likelihood._run(config, _EXACT, False, None, jax.random.key(0), sde, score, x, EPS, TOL, TOL)
        return logp, jnp.max(info.nfe)

    return jax.jit(solve)


def _per_example(sde, score):
    """The solve's own field (:mod:`sde_jax.likelihood`, exact divergence): one example ``(t, x [D]) -> (f, div)``,
    vmapped by the caller."""
    field = likelihood._augmented_field(sde, score, _EXACT, None)
    return lambda t, x: field(t, (x, jnp.zeros((), x.dtype)))


def _batched(sde, score):
    """The same values for the whole batch ``x: [B, D]`` at times ``t: [B]``."""

    def field(t, x):
        f, jvp = jax.linearize(lambda v: probability_flow_drift(sde, score, v, t), x)
        eye = jnp.eye(x.shape[1], dtype=x.dtype)
        cols = jax.vmap(lambda e: jvp(jnp.broadcast_to(e, x.shape)))(eye)     # [D, B, D]: column i of each Jacobian
        return f, jnp.einsum("ibi->b", cols)

    return field


def _fused(sde, score):
    """The adaptive solve's field (:func:`sde_jax.likelihood._fused_field`), vmapped as the solve does."""

    def field(t, x):
        batch = x.shape[0]

        def one(t, x):
            return likelihood._fused_field(sde, score, _EXACT, None, t, x, batch)(t, (x, jnp.zeros((), x.dtype)))

        return jax.vmap(one)(t, x)

    return field


def fields(sde, score):
    """``{name: (t [B], x [B, D]) -> (f [B, D], div [B])}`` for the four ways of evaluating the field."""
    one = _per_example(sde, score)
    return {
        "field_per_example": lambda t, x: jax.vmap(one)(t, x),
        "field_fused": _fused(sde, score),
        "field_batched": _batched(sde, score),
        "field_shared_time": lambda t, x: jax.vmap(lambda xi: one(t[0], xi))(x),
    }


def _scan(field, n, times):
    """``n`` evaluations, each moving the state a little (so no evaluation can be hoisted out of the loop)."""

    def run(x):
        def body(carry, dt):
            x, acc = carry
            f, d = field(times + dt, x)
            return (x + 1e-4 * f, acc + d), None

        return jax.lax.scan(body, (x, jnp.zeros(x.shape[0], x.dtype)), jnp.linspace(0.0, 0.5, n, dtype=x.dtype))[0]

    return jax.jit(run)


def run(dim: int, batch: int, repeats: int):
    gmm = likelihood_mixture(dim)
    sde = sj.VPSDE()
    score = gmm.perturbed_score(sde)
    x = gmm.sample(jax.random.key(3), batch)
    solve = jax.jit(lambda x: sj.log_likelihood(None, sde, score, x, divergence="exact", rtol=TOL, atol=TOL,
                                                eps=EPS))
    logp, nfe = jax.block_until_ready(solve(x))
    n = int(nfe)
    exact = np.asarray(gmm.perturbed_log_prob(sde)(x, jnp.full((batch,), EPS)))
    times = jnp.linspace(EPS, 1.0, batch, dtype=x.dtype)           # distinct per-example times
    per_example = _solve_per_example(sde, score)
    logp_pe, nfe_pe = jax.block_until_ready(per_example(x))
    programs = {"solve": lambda: solve(x), "solve_per_example": lambda: per_example(x)}
    programs.update({name: (lambda p=_scan(f, n, times): p(x)) for name, f in fields(sde, score).items()})
    timed = time_interleaved(programs, repeats)
    sums = {k: summarize(v) for k, v in timed.items()}
    base = sums["field_per_example"]["min_s"]
    record = dict(
        id=f"likelihood_field/gmm{dim}/exact/b{batch}/tol{TOL:g}", dim=dim, batch=batch, rtol=TOL, atol=TOL,
        eps=EPS, nfe=n, nfe_per_example=int(nfe_pe), abs_err_mean=float(np.abs(np.asarray(logp) - exact).mean()),
        abs_err_mean_per_example=float(np.abs(np.asarray(logp_pe) - exact).mean()),
        max_abs_diff_fused_vs_per_example=float(np.abs(np.asarray(logp) - np.asarray(logp_pe)).max()),
        loadavg=loadavg(), cases=sums,
        ratios=dict(solve_per_example_over_solve=sums["solve_per_example"]["min_s"] / sums["solve"]["min_s"],
                    solve_over_field_fused=sums["solve"]["min_s"] / sums["field_fused"]["min_s"],
                    field_per_example_over_fused=base / sums["field_fused"]["min_s"],
                                field_per_example_over_batched=base / sums["field_batched"]["min_s"],
                                field_per_example_over_shared_time=base / sums["field_shared_time"]["min_s"]))
    for k, s in sums.items():
        print(f"{k:20s} {1e3 * s['min_s']:9.2f} ms  ({n} evaluations)", flush=True)
    print(json.dumps(record["ratios"]), flush=True)
    return record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--dim", type=int, default=10)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if args.dim < 1 or args.batch < 1 or args.repeats < 1:
        p.error("--dim, --batch and --repeats must be >= 1")
    record = run(args.dim, args.batch, args.repeats)
    write_results(args.out, "likelihood_field", [record])
    return record


if __name__ == "__main__":
    main()
