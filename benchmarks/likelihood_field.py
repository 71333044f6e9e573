"""Where the probability-flow likelihood's time goes: the adaptive solve against the same number of evaluations of
its vector field, evaluated three ways.

Usage::

    python -m benchmarks.likelihood_field --out DIR [--dim 10] [--batch 256] [--repeats 5]

The target is the likelihood peer case's (:func:`benchmarks.peers.likelihood_mixture`: 4 anisotropic components,
exact perturbed score, VP SDE, exact divergence, dopri5, ``rtol = atol = 1e-5``, ``eps = 1e-5``). Cases:

* ``solve``: :func:`sde_jax.log_likelihood`, one jitted program; its NFE ``n`` sets the other cases' length.
* ``field_per_example``: ``n`` evaluations of the augmented field (drift + ``D`` JVPs) in a ``lax.scan``, the
  way the solve evaluates it: ``vmap`` over the examples, each at its own time, the score seeing a batch of one.
* ``field_batched``: the same values computed for the whole batch at once (the drift of ``[B, D]`` at per-example
  times, ``D`` JVPs of the batch), no ``vmap`` of a batch of one.
* ``field_shared_time``: ``vmap`` as the solve, but one time for the whole batch (what the host-scipy peer
  evaluates: one call per evaluation, one time).

``solve / field_per_example`` near 1 says the step control costs little next to the field;
``field_per_example / field_batched`` is the price of evaluating a batch of one under ``vmap`` on this backend.
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
from sde_jax import likelihood
from sde_jax.sdes import probability_flow_drift

TOL, EPS = 1e-5, 1e-5


def _per_example(sde, score):
    """The solve's own field (:mod:`sde_jax.likelihood`, exact divergence): one example ``(t, x [D]) -> (f, div)``,
    vmapped by the caller."""
    field = likelihood._augmented_field(sde, score, likelihood._Divergence("exact", "rademacher", 1), None)
    return lambda t, x: field(t, (x, jnp.zeros((), x.dtype)))


def _batched(sde, score):
    """The same values for the whole batch ``x: [B, D]`` at times ``t: [B]``."""

    def field(t, x):
        f, jvp = jax.linearize(lambda v: probability_flow_drift(sde, score, v, t), x)
        eye = jnp.eye(x.shape[1], dtype=x.dtype)
        cols = jax.vmap(lambda e: jvp(jnp.broadcast_to(e, x.shape)))(eye)     # [D, B, D]: column i of each Jacobian
        return f, jnp.einsum("ibi->b", cols)

    return field


def fields(sde, score):
    """``{name: (t [B], x [B, D]) -> (f [B, D], div [B])}`` for the three ways of evaluating the field."""
    one = _per_example(sde, score)
    return {
        "field_per_example": lambda t, x: jax.vmap(one)(t, x),
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
    programs = {"solve": lambda: solve(x)}
    programs.update({name: (lambda p=_scan(f, n, times): p(x)) for name, f in fields(sde, score).items()})
    timed = time_interleaved(programs, repeats)
    sums = {k: summarize(v) for k, v in timed.items()}
    base = sums["field_per_example"]["min_s"]
    record = dict(
        id=f"likelihood_field/gmm{dim}/exact/b{batch}/tol{TOL:g}", dim=dim, batch=batch, rtol=TOL, atol=TOL,
        eps=EPS, nfe=n, abs_err_mean=float(np.abs(np.asarray(logp) - exact).mean()), loadavg=loadavg(),
        cases=sums, ratios=dict(solve_over_field_per_example=sums["solve"]["min_s"] / base,
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
