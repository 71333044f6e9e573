"""Probability-flow ODE log-likelihood and bits/dim, on the device (Song et al. 2021, App. D.2).

The probability-flow ODE of a linear SDE ``dx = f(x,t) dt + g(t) dw`` with score ``s(x,t)`` is

.. math::

    \\frac{dx}{dt} = \\tilde f(x, t) = f(x, t) - \\tfrac12 g(t)^2 s(x, t),

and along its solutions the instantaneous change of variables (Chen et al. 2018) gives

.. math::

    \\frac{d}{dt} \\log p_t(x(t)) = -\\nabla\\!\\cdot \\tilde f(x(t), t)
    \\quad\\Longrightarrow\\quad
    \\log p_\\epsilon(x) = \\log p_T(x(T)) + \\int_\\epsilon^T \\nabla\\!\\cdot \\tilde f(x(t), t)\\, dt,

with ``x(eps) = x``. :func:`log_likelihood` integrates ``(x, int div)`` from ``eps`` to ``T`` (data to
noise) and replaces ``p_T`` by the prior. The divergence is the exact Jacobian trace (``D`` JVPs per
evaluation; for low dimension) or the Hutchinson--Skilling estimate ``e^T (d f~/dx) e`` with probes ``e``
fixed over one solve (one VJP per probe; Grathwohl et al. 2019, FFJORD). :func:`decode_latent` runs the
same ODE from ``T`` back to ``eps`` (noise to data): the inverse of the encoding.

Error budget of :func:`log_likelihood` (each part is measured against exact Gaussian-mixture densities in
``tests/test_likelihood.py``):

* **Start time** ``eps``: the result is ``log p_eps(x)``, not ``log p_0(x)``. The ODE (and a network
  trained on ``t >= eps``) defines the density at ``eps``; for smooth data the gap is ``O(eps)``.
* **Prior mismatch** at ``T``: ``log pi(z) - log p_T(z)`` is added to every result.
* **Solver error**: controlled by ``rtol``/``atol`` (adaptive) or ``num_steps`` (fixed step).
* **Hutchinson noise** (``divergence="hutchinson"``): the divergence integral is unbiased for fixed
  trajectory (the probes do not enter the ``x`` equation); its variance falls as ``1/num_probes``.

Design (deviations from the paper's ``likelihood.py``, which runs scipy RK45 on the host on the whole
flattened batch):

* Everything runs on the device, through the probability-flow core :mod:`sde_jax.flow` (the same solver
  table, per-example solve, per-device ``shard_map`` and failure policy as :func:`sde_jax.ode_sample`):
  **every example is its own ODE** with its own step sizes and error control, so an example's result does
  not depend on its batch-mates or on how the batch is sharded, and no cross-device communication runs
  inside the adaptive loop.
* Per-example Hutchinson probes come from ``fold_in(key, example_index)``: the same on 1 or N devices.
* Adaptive solves use diffrax's ``ForwardMode`` loop (forward-mode differentiable only); fixed-step solves
  (``num_steps``, a ``lax.scan``) are reverse-mode differentiable too, e.g. for gradients of ``log p`` with
  respect to ``x`` (tested against the exact score).
* The vector field of an adaptive solve is evaluated for the whole batch at once (one ``score_fn`` call on the
  batch, each example at its own time, and ``D`` JVPs or ``P`` VJPs of that call), through a
  ``jax.custom_batching.custom_vmap`` under the per-example ``vmap`` (``_fused_field``): 1.5x faster than
  ``vmap``-ing each example's linearisation on a 2-core CPU for the 10-D exact-divergence case, with the same
  values (tested to 1e-12 in float64). Fixed-step solves keep the per-example field, since reverse mode does
  not pass a ``custom_vmap``.
* The bits/dim offset is derived from the data range and bit depth (:func:`bits_per_dim`), and
  dequantisation is an explicit argument.

NFE. ``nfe`` counts evaluations of the ODE's vector field, each one forward call of ``score_fn`` on the
batch (plus ``D`` JVPs for ``"exact"`` or ``num_probes`` VJPs for ``"hutchinson"``): the largest
per-example count (:mod:`sde_jax.flow`), checked against a counter of actual calls in the tests.

References:
  Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole (2021), Score-Based Generative Modeling through
  Stochastic Differential Equations, ICLR; Sec. 4.3, App. D.2.
  Chen, Rubanova, Bettencourt, Duvenaud (2018), Neural Ordinary Differential Equations, NeurIPS.
  Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud (2019), FFJORD, ICLR.
  Hutchinson (1989); Skilling (1989): stochastic trace estimators.
  Theis, van den Oord, Bethge (2016), A note on the evaluation of generative models, ICLR (dequantisation).
  Ho, Chen, Srinivas, Duan, Abbeel (2019), Flow++, ICML (importance-weighted dequantisation bound).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from sde_jax import _checks as C
from sde_jax import flow
from sde_jax import _jit
from sde_jax.sdes import probability_flow_drift

__all__ = [
    "log_likelihood",
    "decode_latent",
    "bits_per_dim",
    "bits_per_dim_offset",
    "DIVERGENCES",
    "PROBES",
    "DEQUANTIZATIONS",
]


def _rademacher(key, shape, dtype):
    return jax.random.rademacher(key, shape, dtype)


def _gaussian(key, shape, dtype):
    return jax.random.normal(key, shape, dtype)


PROBES = {"rademacher": _rademacher, "gaussian": _gaussian}


def _exact_divergence(fn, x, probes):
    """``fn(x)`` and ``tr(d fn / dx)`` from one linearisation and ``D`` JVPs (one per basis vector)."""
    del probes
    f, jvp = jax.linearize(fn, x)
    eye = jnp.eye(x.size, dtype=x.dtype)
    return f, jnp.sum(jax.vmap(lambda e: jnp.vdot(e, jvp(e)))(eye))


def _hutchinson_divergence(fn, x, probes):
    """``fn(x)`` and ``mean_p e_p^T (d fn / dx) e_p`` from one forward pass and one VJP per probe."""
    f, vjp = jax.vjp(fn, x)
    ej = jax.vmap(lambda e: vjp(e)[0])(probes)  # [P, D]
    return f, jnp.mean(jnp.sum(ej * probes, axis=-1))


DIVERGENCES = {"exact": _exact_divergence, "hutchinson": _hutchinson_divergence}

DEQUANTIZATIONS = ("none", "uniform")


class _Divergence(NamedTuple):
    """How the divergence is computed (static: a new value compiles a new program)."""

    name: str
    probe: str
    num_probes: int


def _augmented_field_of(drift, div: _Divergence, probes):
    """Per-example ``(t, x) -> (f~(x, t), div f~(x, t))`` for a per-example ``drift(t, x)``."""
    div_fn = DIVERGENCES[div.name]

    def field(t, x):
        f, d = div_fn(lambda v: drift(t, v.reshape(x.shape)).reshape(-1), x.reshape(-1), probes)
        return f.reshape(x.shape), d

    return field


def _augmented_field(sde, score_fn, div: _Divergence, probes):
    """Per-example ``(t, (x, delta)) -> (f~(x, t), div f~(x, t))``."""
    field = _augmented_field_of(flow.pf_field(sde, score_fn), div, probes)
    return lambda t, y: field(t, y[0])


def _batched_exact(drift, x):
    """``drift(x)`` and the Jacobian trace of each example for a batch ``x: [B, ...]`` (``drift`` acts per
    example): one linearisation of the batch and ``D`` JVPs, each with one basis vector for every example."""
    b, d = x.shape[0], x[0].size
    f, jvp = jax.linearize(drift, x)
    eye = jnp.eye(d, dtype=x.dtype)
    cols = jax.vmap(lambda e: jvp(jnp.broadcast_to(e.reshape(x.shape[1:]), x.shape)).reshape(b, d))(eye)
    return f, jnp.einsum("ibi->b", cols)                       # cols[i, b, :] is column i of example b's Jacobian


def _batched_hutchinson(drift, x, probes):
    """``drift(x)`` and ``mean_p e_p^T J e_p`` per example for ``x: [B, ...]``, ``probes: [B, P, D]``."""
    b = x.shape[0]
    f, vjp = jax.vjp(drift, x)
    ej = jax.vmap(lambda e: vjp(e.reshape(x.shape))[0].reshape(b, -1), in_axes=1, out_axes=1)(probes)
    return f, jnp.mean(jnp.sum(ej * probes, axis=-1), axis=-1)


def _fused_field(sde, score_fn, div: _Divergence, probes, t0, x0, batch):
    """The augmented field of :func:`_augmented_field` (the same values) for adaptive solves: under the solve's
    ``vmap`` over ``batch`` examples it calls ``score_fn`` once on the whole batch, each example at its own time,
    and computes the divergences with ``D`` JVPs (or one VJP per probe) of that call (:func:`sde_jax.flow.
    batch_native`), instead of ``vmap``-ing each example's linearisation of a batch-of-one call: 1.9x faster for
    the field of the 10-D mixture case on a 2-core CPU (``benchmarks/likelihood_field.py``)."""

    def per_example(t, x, probes):
        return _augmented_field_of(flow.pf_field(sde, score_fn), div, probes)(t, x)

    def batched(t, x, probes):
        drift = lambda v: probability_flow_drift(sde, score_fn, v, t)
        return _batched_exact(drift, x) if div.name == "exact" else _batched_hutchinson(drift, x, probes)

    field = flow.batch_native(per_example, batched, (t0, x0, probes), batch)
    return lambda t, y: field(t, y[0], probes)


@eqx.filter_jit
def _encode(config, div, fused, mesh, key, sde, score_fn, x, t0, t1, rtol, atol):
    """``(logp, z, info)`` for the batch; ``fused``: evaluate the field with :func:`_fused_field` (adaptive
    solves only), else per example with :func:`_augmented_field` (same values)."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(x.shape[0]))
    per_device = flow.per_device_batch(x.shape[0], mesh)

    def one(xi, ki, rep):
        sde, score_fn, t0, t1, rtol, atol = rep
        probes = (PROBES[div.probe](ki, (div.num_probes, xi.size), xi.dtype) if div.name == "hutchinson"
                  else None)
        field = (_fused_field(sde, score_fn, div, probes, t0, xi, per_device) if fused
                 else _augmented_field(sde, score_fn, div, probes))
        (z, delta), nfe, status, t_stop = flow.solve(field, (xi, jnp.zeros((), xi.dtype)), t0, t1, config,
                                                     rtol, atol)
        return z, delta, flow.FlowInfo(status, t_stop, nfe)

    z, delta, info = flow.map_examples(one, (x, keys), (sde, score_fn, t0, t1, rtol, atol), mesh)
    return sde.prior_logp(z) + delta, z, info


def _run(config, div, fused, mesh, key, sde, score_fn, x, eps, rtol, atol):
    """``(logp, z, info)`` from checked arguments: the dtypes and leaves :func:`_encode` compiles for."""
    in_dtype = x.dtype
    dtype = _jit.compute_dtype(in_dtype)             # 16-bit data are encoded in float32; logp stays float32
    t0, t1 = _encode_interval(sde, eps)
    logp, z, info = _encode(config, div, fused, mesh, key, _jit.as_leaves(sde, dtype, convert_arrays=True),
                            _jit.as_leaves(score_fn, dtype), x.astype(dtype), jnp.asarray(t0, dtype),
                            jnp.asarray(t1, dtype), jnp.asarray(rtol, dtype), jnp.asarray(atol, dtype))
    return logp, z.astype(in_dtype), info


def _encode_interval(sde, eps):
    """The likelihood direction: from ``eps`` (data) to ``T`` (noise)."""
    return eps, sde.T


def log_likelihood(key, sde, score_fn, x: Float[Array, "b ..."], *, divergence="exact", probe="rademacher",
                   num_probes=1, solver="dopri5", rtol=1e-5, atol=1e-5, num_steps=None, eps=1e-5, max_steps=4096,
                   return_latent=False, mesh=None, return_info=False):
    """Log-density of ``x`` under the probability-flow ODE, in nats per example, on the device.

    Solves, for each example separately, from ``t = eps`` (data) to ``t = T`` (noise):

    .. math::

        \\frac{d}{dt}\\begin{pmatrix} x \\\\ \\delta \\end{pmatrix}
        = \\begin{pmatrix} \\tilde f(x,t) \\\\ \\nabla\\!\\cdot\\tilde f(x,t) \\end{pmatrix},
        \\quad \\tilde f = f - \\tfrac12 g^2\\, \\mathrm{score},
        \\quad x(\\epsilon) = x,\\ \\delta(\\epsilon) = 0,

    and returns ``log pi(x(T)) + delta(T)``, with ``pi`` the SDE's prior (Song et al. 2021, Eq. 13 and
    App. D.2). By the instantaneous change of variables ``d log p_t(x(t))/dt = -div f~``, this is
    ``log p_eps(x)`` up to (i) the prior mismatch ``log pi(z) - log p_T(z)`` and (ii) the solver error.

    Accounting for ``eps``: the result estimates the density at time ``eps``, ``p_eps``, not ``p_0``.
    For a network trained on ``t >= eps`` this is the density the model defines; with an exact score the
    gap ``log p_eps(x) - log p_0(x)`` is ``O(eps)`` for smooth data (for the test mixtures at the default
    ``eps = 1e-5`` its mean absolute value is below 1e-5 nats; the tests compute it exactly).

    Args:
      key: PRNG key for the Hutchinson probes (per example ``fold_in(key, index)``; the same probes on 1 or
        N devices). May be ``None`` for ``divergence="exact"``.
      sde: a linear SDE (``VPSDE``, ``SubVPSDE``, ``VESDE``).
      score_fn: ``score_fn(x, t) -> [B, ...]`` with ``x: [B, ...]``, ``t: [B]``; a plain function or a
        callable pytree (its arrays are traced, so a new one with the same structure does not recompile).
        It must treat examples independently (no batch statistics) and be ``vmap``-able: each example is
        solved as its own ODE. Adaptive solves call it on the whole batch (per device), each example at its
        own time and state; fixed-step solves on batches of one under ``vmap``.
      x: data ``[B, ...]`` (floating point), in the model's data space.
      divergence: ``"exact"`` (Jacobian trace; ``D`` JVPs per evaluation, for low dimension) or
        ``"hutchinson"`` (unbiased estimate ``e^T J e`` with probes fixed over the solve).
      probe: ``"rademacher"`` (lower variance) or ``"gaussian"``; Hutchinson only.
      num_probes: probes per example (variance ``~ 1/num_probes``); Hutchinson only.
      solver: a name in :data:`sde_jax.flow.SOLVERS` (``"dopri5"``, ``"tsit5"``, ``"heun"`` adaptive or fixed
        step, ``"euler"`` fixed step).
      rtol, atol: tolerances of the PID step-size controller (adaptive solves, ``num_steps=None``).
      num_steps: if given, a fixed-step solve with this many uniform steps (a ``lax.scan``).
      eps: start time in ``(0, T)``.
      max_steps: step budget of an adaptive solve; an example that exhausts it is ``NaN`` (the failure policy
        of :mod:`sde_jax.flow`, the same as :func:`sde_jax.ode_sample`'s).
      return_latent: also return the latent ``z = x(T)``.
      mesh: a device mesh with a ``"data"`` axis (``sde_jax.parallel.make_data_mesh``): each device solves
        its shard with its own adaptive loop (no communication inside it); ``B`` must divide evenly. With
        ``None`` the solve runs as one program (do not pass a batch sharded over several devices then:
        the partitioner would synchronise the devices inside the loop). Same results either way.
      return_info: also return a :class:`sde_jax.flow.FlowInfo` (per-example status, stop time, NFE).

    Returns:
      ``(logp, nfe)``, then ``z`` if ``return_latent``, then ``info`` if ``return_info``: ``logp: [B]`` nats
      (``NaN`` for an example whose solve failed); ``nfe``: int32 scalar, the number of batched ``score_fn``
      evaluations (the largest per-example count); ``z: [B, ...]``.

    Raises:
      ValueError: unknown divergence/probe/solver (the valid names are listed), ``x`` without a batch and a
        data axis, non-positive tolerances, ``eps`` outside ``(0, T)``, ``B`` not divisible by the devices.
      TypeError: ``x`` not floating point; missing key for Hutchinson.

    Example:
      >>> gmm = sj.toy.GaussianMixture([[-1.0, 0.0], [1.0, 0.5]], 0.3, [0.5, 0.5])
      >>> sde = sj.VPSDE()
      >>> logp, nfe = sj.log_likelihood(None, sde, gmm.perturbed_score(sde), gmm.sample(key, 64))
    """
    C.lookup(DIVERGENCES, divergence, "divergence")
    C.lookup(PROBES, probe, "probe")
    num_probes = C.check_int("num_probes", num_probes)
    config = flow.flow_config(solver, num_steps, max_steps)
    C.check_data("x", x)
    x = jnp.asarray(x)
    rtol, atol = C.check_positive("rtol", rtol), C.check_positive("atol", atol)
    eps = C.check_eps(eps, sde)
    C.check_mesh(mesh, x.shape[0], "batch size of x")
    if key is None:
        if divergence == "hutchinson":
            raise TypeError("key must be a PRNG key for divergence='hutchinson'; got None.")
        key = jax.random.key(0)  # unused
    C.check_key(key)
    hutch = divergence == "hutchinson"
    div = _Divergence(divergence, probe if hutch else "", num_probes if hutch else 1)
    fused = config.num_steps is None                # reverse mode (fixed steps) cannot pass the fused field
    logp, z, info = _run(config, div, fused, mesh, key, sde, score_fn, x, eps, rtol, atol)
    flow.report(info, "log_likelihood")
    out = (logp, jnp.max(info.nfe)) + ((z,) if return_latent else ()) + ((info,) if return_info else ())
    return out


def decode_latent(sde, score_fn, z: Float[Array, "b ..."], *, solver="dopri5", rtol=1e-5, atol=1e-5,
                  num_steps=None, eps=1e-5, max_steps=4096, mesh=None, return_info=False):
    """Inverse of the encoding: integrate the probability-flow ODE from ``T`` (latent) back to ``eps``.

    ``decode_latent(sde, score_fn, z)`` with ``z`` from ``log_likelihood(..., return_latent=True)``
    recovers ``x`` up to the solver error; it is :func:`sde_jax.ode_sample` started from ``x_init=z`` with
    this function's defaults (the same code path: same results and NFE for the same settings).

    Args:
      sde, score_fn, solver, rtol, atol, num_steps, eps, max_steps, mesh, return_info: as in
        :func:`log_likelihood`.
      z: latents ``[B, ...]`` at time ``T``.

    Returns:
      ``(x, nfe)`` (or ``(x, nfe, info)``): ``x: [B, ...]`` at time ``eps``; ``nfe`` as in
      :func:`log_likelihood`.
    """
    config = flow.flow_config(solver, num_steps, max_steps)
    C.check_data("z", z)
    z = jnp.asarray(z)
    x, info = flow.decode(config, sde, score_fn, z, eps, rtol, atol, mesh, False, "decode_latent")
    return (x, jnp.max(info.nfe), info) if return_info else (x, jnp.max(info.nfe))


def bits_per_dim_offset(num_bits, data_range):
    """``k - log2(hi - lo)``: the bits/dim offset for data quantised to ``2^k`` levels on ``[lo, hi]``.

    Level ``n`` is the bin ``[lo + n w, lo + (n+1) w)`` of width ``w = (hi - lo) / 2^k``, so a density
    ``p`` on the model space gives the bin probability ``P(n) ~ p(x) w^D`` and

    .. math::

        \\mathrm{bpd} = -\\frac{\\log_2 P(n)}{D} \\approx -\\frac{\\log p(x)}{D \\ln 2} - \\log_2 w
        = -\\frac{\\log p(x)}{D \\ln 2} + k - \\log_2(hi - lo).

    8 for 8-bit data on ``[0, 1]``, 7 on ``[-1, 1]`` (the paper's ``7 - inverse_scaler(-1)`` offset).
    """
    lo, hi = _check_range(data_range)
    C.check_int("num_bits", num_bits)
    return num_bits - math.log2(hi - lo)


def _check_range(data_range):
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(f"data_range must be a pair (lo, hi) of floats; got {data_range!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"data_range must satisfy lo < hi (finite); got {data_range!r}.")
    return lo, hi


@eqx.filter_jit
def _dequantize(key, levels, lo, width, uniform, dtype):
    n = levels.astype(dtype)
    u = jax.random.uniform(key, levels.shape, dtype) if uniform else jnp.full(levels.shape, 0.5, dtype)
    return lo + (n + u) * width


def bits_per_dim(key, sde, score_fn, levels: Int[Array, "b ..."], *, num_bits=8, data_range=(0.0, 1.0),
                 dequantization="uniform", num_repeats=1, importance_weighted=False, dtype=None,
                 **likelihood_kwargs):
    """Bits per dimension of quantised data under the probability-flow ODE model.

    Data are integer levels ``n in {0, ..., 2^k - 1}`` (``k = num_bits``) on the known range ``[lo, hi]``
    of the model's data space; level ``n`` is the bin ``[lo + n w, lo + (n+1) w)``, ``w = (hi-lo)/2^k``.
    For each of ``num_repeats`` draws, ``x = lo + (n + u) w`` is scored with :func:`log_likelihood`:

    .. math::

        \\mathrm{bpd}(x) = -\\frac{\\log p(x)}{D \\ln 2} + k - \\log_2(hi - lo),

    i.e. offset 8 for ``[0, 1]`` and 7 for ``[-1, 1]`` with 8 bits (:func:`bits_per_dim_offset`).

    What is a bound and what is an estimate:

    * ``dequantization="uniform"``, ``u ~ U[0,1)^D``: ``E_u[bpd(x)] >= -log2 P(n) / D``, where
      ``P(n) = int_bin p`` is the model's discrete probability (Jensen; Theis et al. 2016). So the
      expectation is an upper bound on the discrete NLL and is never negative (``P(n) <= 1``). The
      returned value, the mean over ``num_repeats`` draws (the paper uses 5 on CIFAR-10), is an unbiased
      Monte Carlo estimate of that bound. With ``importance_weighted=True`` the draws are combined as
      ``-log2(mean_r p(x_r) w^D) / D``, whose expectation is a tighter upper bound (Ho et al. 2019).
    * ``dequantization="none"``, ``u = 1/2`` (bin centres): the midpoint rule ``P(n) ~ p(centre) w^D``;
      an estimate, not a bound, and negative when the density is peaked on the grid.
    * In all cases ``log p`` itself is the ODE estimate of ``log p_eps`` (see :func:`log_likelihood`):
      solver error, prior mismatch, and Hutchinson noise (unbiased for ``log p``) carry over.

    Args:
      key: PRNG key (dequantisation noise and Hutchinson probes).
      sde, score_fn: as in :func:`log_likelihood`.
      levels: integer array ``[B, ...]`` of quantisation levels in ``[0, 2^k)`` (e.g. ``uint8`` pixels).
        For data already scaled with endpoints (``x = lo + n (hi-lo)/(2^k-1)``, e.g. ``pixels/255``),
        ``n = round((x - lo) / (hi - lo) * (2^k - 1))``.
      num_bits: bit depth ``k``.
      data_range: ``(lo, hi)`` of the model's data space (``(0, 1)``, or ``(-1, 1)`` for centred data).
      dequantization: ``"uniform"`` or ``"none"``.
      num_repeats: dequantisation draws per example (1 for ``"none"``).
      importance_weighted: combine the repeats with log-mean-exp (tighter bound) instead of the mean.
      dtype: float dtype of the model input (JAX's default float if ``None``).
      **likelihood_kwargs: passed to :func:`log_likelihood` (divergence, solver, rtol, atol, eps, mesh...).

    Returns:
      ``(bpd, nfe)``: ``bpd: [B]``; ``nfe``: total batched ``score_fn`` evaluations over the repeats.
    """
    lo, hi = _check_range(data_range)
    num_bits = C.check_int("num_bits", num_bits)
    C.lookup(dict.fromkeys(DEQUANTIZATIONS), dequantization, "dequantization")
    num_repeats = C.check_int("num_repeats", num_repeats)
    if dequantization == "none" and num_repeats != 1:
        raise ValueError(f"num_repeats must be 1 with dequantization='none'; got {num_repeats}.")
    for name in ("return_latent", "return_info"):
        if name in likelihood_kwargs:
            raise TypeError(f"bits_per_dim does not accept {name!r}.")
    levels = jnp.asarray(levels)
    if not jnp.issubdtype(levels.dtype, jnp.integer):
        raise TypeError(f"levels must be an integer array of quantisation levels in [0, 2^{num_bits}); got "
                        f"dtype {levels.dtype}. Convert scaled data with round((x - lo)/(hi - lo)*(2^k - 1)).")
    if levels.ndim < 2:
        raise ValueError(f"levels must have shape [B, ...] with at least one data axis; got {levels.shape}.")
    if C.is_concrete(levels) and levels.size and (int(levels.min()) < 0 or int(levels.max()) >= 2**num_bits):
        raise ValueError(f"levels must lie in [0, {2**num_bits}) for num_bits={num_bits}; got range "
                         f"[{int(levels.min())}, {int(levels.max())}].")
    dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
    width = (hi - lo) / 2**num_bits
    d = math.prod(levels.shape[1:])
    offset = bits_per_dim_offset(num_bits, (lo, hi))
    key_deq, key_ll = jax.random.split(key)
    logps, nfe = [], 0
    for r in range(num_repeats):
        x = _dequantize(jax.random.fold_in(key_deq, r), levels, jnp.asarray(lo, dtype),
                        jnp.asarray(width, dtype), dequantization == "uniform", dtype)
        logp, n = log_likelihood(jax.random.fold_in(key_ll, r), sde, score_fn, x, **likelihood_kwargs)
        logps.append(logp)
        nfe = nfe + n
    logps = jnp.stack(logps)  # [R, B]
    if importance_weighted:
        logp = jax.nn.logsumexp(logps, axis=0) - jnp.log(num_repeats)
    else:
        logp = jnp.mean(logps, axis=0)
    return -logp / (d * np.log(2.0)) + offset, nfe
