"""DPM-Solver (Lu et al. 2022a) and DPM-Solver++ (Lu et al. 2022b): orders 1-3, single-step and multistep.

Both are exponential integrators of the probability-flow ODE in ``lambda = -log sigma`` (half the log-SNR), in
EDM's variables ``x^ = x / a(t)``, ``sigma = s(t) / a(t)`` (:mod:`sde_jax.samplers.fixed_grid`), where the
linear part is solved exactly and the model is Taylor-expanded in ``lambda``. With ``h = lambda_t - lambda_s``:

.. math::

    \\text{DPM-Solver (noise } \\hat\\epsilon\\text{)}:\\quad \\hat x_t = \\hat x_s - \\sigma_t \\big[\\psi_1
        \\hat\\epsilon + h\\,\\psi_2\\,\\hat\\epsilon' + h^2 \\psi_3\\,\\hat\\epsilon''\\big], \\qquad
    \\psi_1 = e^h - 1,\\ \\psi_{k+1} = \\psi_k / h - 1/k!,

    \\text{DPM-Solver++ (data } D\\text{)}:\\quad \\hat x_t = e^{-h}\\hat x_s - \\varphi_1 D + h\\,\\varphi_2 D'
        - h^2 \\varphi_3 D'', \\qquad \\varphi_1 = e^{-h} - 1,\\ \\varphi_2 = \\varphi_1/h + 1,\\
        \\varphi_3 = \\varphi_2 / h - 1/2,

derivatives in ``lambda`` at ``s``. In ``x^`` the VP factor ``a(t)/a(s)`` of the papers' Eq. 3.7 / 9 is gone, so
the same update serves VE, VP and sub-VP (the papers' VP formulas are these times ``a(t)``).

* **Single-step** (order ``k`` costs ``k`` evaluations per step): order 1 is DDIM; order 2 uses one
  intermediate point at ``lambda_s + h/2`` (DPM-Solver-2 / DPM-Solver++(2S), Lu et al. 2022a Alg. 1 with
  ``r_1 = 1/2``, 2022b Alg. 1); order 3 uses ``r_1 = 1/3, r_2 = 2/3`` (DPM-Solver-3, 2022a Alg. 2; its data
  prediction twin).
* **Multistep** (one evaluation per step): the derivatives come from the previous steps' evaluations by
  backward divided differences in ``lambda``; the first step is order 1, the second at most order 2 (warm-up).
  Order 2 is the papers' 2M (coefficient ``-phi_1/2`` on ``h`` times the first difference, 2022b Alg. 2; the
  k-diffusion and official implementations). Order 3 uses the Taylor coefficients above with ``D'`` and
  ``D''`` of the quadratic through the last three evaluations. Deviation, measured: the third-order multistep
  update of the official code and of diffusers/k-diffusion weights the second difference with half the
  Taylor coefficient, which leaves a third-order local error; in our convergence test that form measures a
  global order of about 2, ours about 3 (see ``tests/test_fast_samplers.py``).

No ``lower_order_final`` (the official code lowers the order of the last steps below 15 steps): the final
``denoise`` evaluation already returns the data prediction at ``eps``.
"""
from __future__ import annotations

import jax.numpy as jnp

from sde_jax import _checks as C
from sde_jax.samplers import fixed_grid

__all__ = ["dpm_solver_sample", "dpm_solver_pp_sample", "dpm_method", "ORDERS"]

ORDERS = (1, 2, 3)
_R2 = (0.5,)          # single-step order 2: r_1
_R3 = (1.0 / 3.0, 2.0 / 3.0)  # single-step order 3: r_1, r_2


def _coeffs(h, data):
    """``(A, k0, k1, k2)`` of ``x_t = A x_s + B (k0 m + k1 h m' + k2 h^2 m'')`` (``B = 1`` for data prediction,
    ``-sigma_t`` for noise prediction; module docstring)."""
    if data:
        phi1 = jnp.expm1(-h)
        phi2 = phi1 / h + 1.0
        return jnp.exp(-h), -phi1, phi2, -(phi2 / h - 0.5)
    psi1 = jnp.expm1(h)
    psi2 = psi1 / h - 1.0
    return jnp.ones_like(h), psi1, psi2, psi2 / h - 0.5


def _model(model, data):
    return model.denoise if data else model.eps


def _scale(sigma, data):
    return 1.0 if data else -sigma


def _lam(model, t):
    return -jnp.log(model.sigma(t))


def _at(model, sigma_s, r, h):
    """Time and sigma of the intermediate point ``lambda_s + r h``."""
    sigma = sigma_s * jnp.exp(-r * h)
    return model.time(sigma), sigma


def _singlestep(order, data):
    def step(key, x, model, ts, i, options):
        f = _model(model, data)
        s, t = ts[i], ts[i + 1]
        sigma_s, sigma_t = model.sigma(s), model.sigma(t)
        h = _lam(model, t) - _lam(model, s)
        m_s = f(x, s)
        a, k0, k1, _ = _coeffs(h, data)
        if order == 1:
            return a * x + _scale(sigma_t, data) * k0 * m_s
        if order == 2:
            (r1,) = _R2
            t1, sig1 = _at(model, sigma_s, r1, h)
            a1, k01, _, _ = _coeffs(r1 * h, data)
            m1 = f(a1 * x + _scale(sig1, data) * k01 * m_s, t1)
            return a * x + _scale(sigma_t, data) * (k0 * m_s + k0 / (2.0 * r1) * (m1 - m_s))
        r1, r2 = _R3
        t1, sig1 = _at(model, sigma_s, r1, h)
        t2, sig2 = _at(model, sigma_s, r2, h)
        a1, k01, _, _ = _coeffs(r1 * h, data)
        a2, k02, k12, _ = _coeffs(r2 * h, data)
        m1 = f(a1 * x + _scale(sig1, data) * k01 * m_s, t1)
        m2 = f(a2 * x + _scale(sig2, data) * (k02 * m_s + (r2 / r1) * k12 * (m1 - m_s)), t2)
        return a * x + _scale(sigma_t, data) * (k0 * m_s + (1.0 / r2) * k1 * (m2 - m_s))

    return step


def _multistep(order, data):
    def step(key, carry, model, ts, i, options):
        x, m1, m2 = carry
        f = _model(model, data)
        lam = -jnp.log(model.sigma(ts))
        t, sigma_t = ts[i + 1], model.sigma(ts[i + 1])
        h = lam[i + 1] - lam[i]
        h0 = lam[i] - lam[jnp.maximum(i - 1, 0)]
        h1 = lam[jnp.maximum(i - 1, 0)] - lam[jnp.maximum(i - 2, 0)]
        h0, h1 = jnp.where(i >= 1, h0, 1.0), jnp.where(i >= 2, h1, 1.0)   # unused values, kept finite
        m0 = f(x, ts[i])
        a, k0, k1, k2 = _coeffs(h, data)
        b = _scale(sigma_t, data)
        first = a * x + b * k0 * m0
        d01 = (m0 - m1) / h0
        second = first + b * 0.5 * k0 * h * d01   # the papers' 2M (midpoint)
        if order >= 3:
            d012 = (d01 - (m1 - m2) / h1) / (h0 + h1)
            third = first + b * (k1 * h * (d01 + h0 * d012) + k2 * h**2 * 2.0 * d012)
        x_new = jnp.where(i == 0, first, second) if order == 2 else first
        if order == 3:
            x_new = jnp.where(i == 0, first, jnp.where(i == 1, second, third))
        return x_new, m0, m1

    return step


def dpm_method(order: int, multistep: bool, data: bool) -> fixed_grid.GridMethod:
    """The :class:`~sde_jax.samplers.fixed_grid.GridMethod` of one DPM-Solver variant."""
    name = f"dpm_solver{'++' if data else ''}({order}{'M' if multistep else 'S'})"
    if multistep:
        return fixed_grid.GridMethod(init=lambda x: (x, jnp.zeros_like(x), jnp.zeros_like(x)),
                                     step=_multistep(order, data), output=lambda c: c[0], nfe_per_step=1, name=name)
    return fixed_grid.GridMethod(init=lambda x: x, step=_singlestep(order, data), output=lambda x: x,
                                 nfe_per_step=order, name=name)


_METHODS = {(o, m, d): dpm_method(o, m, d) for o in ORDERS for m in (False, True) for d in (False, True)}


def _run(data, key, sde, score_fn, shape, *, num_steps, default_steps, order, multistep, grid, rho, eps, denoise,
         x_init, mesh, dtype):
    if order not in ORDERS or isinstance(order, bool):
        raise ValueError(f"order must be one of {list(ORDERS)}; got {order!r}.")
    method = _METHODS[(int(order), bool(multistep), data)]
    return fixed_grid.run(method, key, sde, score_fn, shape, num_steps=num_steps, default_steps=default_steps,
                          grid=grid, rho=rho, eps=eps, denoise=denoise, options={}, x_init=x_init, mesh=mesh,
                          dtype=dtype)


def dpm_solver_pp_sample(key, sde, score_fn, shape, *, num_steps=None, order=2, multistep=True, grid="logsnr",
                         rho=7.0, eps=1e-3, denoise=True, x_init=None, mesh=None, dtype=None):
    """DPM-Solver++ (data prediction; module docstring), one ``lax.scan``.

    Args:
      num_steps: steps on the grid (evaluations: ``num_steps`` multistep, ``order * num_steps`` single-step,
        plus one for ``denoise``; default 19 + 1 = 20; on an array grid: its length).
      order: 1, 2 or 3.
      multistep: multistep (one evaluation per step, warm-up from order 1) or single-step.
      grid: ``"logsnr"`` (uniform in ``lambda``; default), ``"karras"``, ``"uniform"`` or an array of times.
      Other arguments: as :func:`sde_jax.samplers.ddim_sample`.

    Returns:
      ``(x, nfe)``.
    """
    return _run(True, key, sde, score_fn, shape, num_steps=num_steps, default_steps=19, order=order,
                multistep=multistep, grid=grid, rho=rho, eps=eps, denoise=denoise, x_init=x_init, mesh=mesh,
                dtype=dtype)


def dpm_solver_sample(key, sde, score_fn, shape, *, num_steps=None, order=3, multistep=False, grid="logsnr",
                      rho=7.0, eps=1e-3, denoise=True, x_init=None, mesh=None, dtype=None):
    """DPM-Solver (noise prediction; module docstring), one ``lax.scan``; default: DPM-Solver-3, 6 single steps
    (18 + 1 evaluations). Arguments as :func:`dpm_solver_pp_sample`."""
    return _run(False, key, sde, score_fn, shape, num_steps=num_steps, default_steps=6, order=order,
                multistep=multistep, grid=grid, rho=rho, eps=eps, denoise=denoise, x_init=x_init, mesh=mesh,
                dtype=dtype)
