"""One entry point over every sampler: ``sample(key, sde, score_fn, shape, method=..., num_steps=..., **options)``.

:data:`SAMPLERS` is the one registry from a method name (what ``config.sampling.method`` holds) to its sampler;
each sampler's options are its keyword arguments, read from its signature, so an unknown method or option
raises an error listing the valid ones.

=================  ==========================================================  ===========================
method             sampler                                                     ``num_steps``
=================  ==========================================================  ===========================
``pc``             :func:`sde_jax.pc_sample` (predictor-corrector)             time steps (default ``sde.N``)
``ode``            :func:`sde_jax.ode_sample` (probability flow)               fixed steps, or None: adaptive
``ddim``           :func:`sde_jax.samplers.ddim_sample`                        steps (evaluations)
``edm_heun``       :func:`sde_jax.samplers.edm_heun_sample`                    Heun steps (2 evaluations each)
``edm_stochastic`` :func:`sde_jax.samplers.edm_stochastic_sample`              Heun steps with churn
``dpm_solver``     :func:`sde_jax.samplers.dpm_solver_sample` (noise pred.)    steps
``dpm_solver++``   :func:`sde_jax.samplers.dpm_solver_pp_sample` (data pred.)  steps
``adaptive_sde``   :func:`sde_jax.samplers.adaptive_sde_sample`                must be None (adaptive)
=================  ==========================================================  ===========================

Every method returns ``(x, nfe)``: samples ``[B, ...]`` and the score evaluations actually made.
"""
from __future__ import annotations

import inspect
from typing import Callable, NamedTuple

from sde_jax import _checks as C
from sde_jax.samplers.adaptive_sde import adaptive_sde_sample
from sde_jax.samplers.ddim import ddim_sample
from sde_jax.samplers.dpm_solver import dpm_solver_pp_sample, dpm_solver_sample
from sde_jax.samplers.edm import edm_heun_sample, edm_stochastic_sample
from sde_jax.samplers.ode import ode_sample
from sde_jax.samplers.pc import pc_sample

__all__ = ["SAMPLERS", "SamplerEntry", "sample", "sampler_options"]

_NOT_OPTIONS = ("key", "sde", "score_fn", "shape", "num_steps", "return_info")


class SamplerEntry(NamedTuple):
    """A registered sampler: ``fn(key, sde, score_fn, shape, *, num_steps?, **options) -> (x, nfe)``;
    ``steps``: whether it takes ``num_steps``."""

    fn: Callable
    steps: bool = True


SAMPLERS = {
    "pc": SamplerEntry(pc_sample),
    "ode": SamplerEntry(ode_sample),
    "ddim": SamplerEntry(ddim_sample),
    "edm_heun": SamplerEntry(edm_heun_sample),
    "edm_stochastic": SamplerEntry(edm_stochastic_sample),
    "dpm_solver": SamplerEntry(dpm_solver_sample),
    "dpm_solver++": SamplerEntry(dpm_solver_pp_sample),
    "adaptive_sde": SamplerEntry(adaptive_sde_sample, steps=False),
}
"""``method`` name -> :class:`SamplerEntry`. The one place sampler names live."""


def sampler_options(method: str) -> tuple[str, ...]:
    """The keyword options ``method`` accepts (besides ``num_steps``), from its sampler's signature."""
    fn = C.lookup(SAMPLERS, method, "method").fn
    return tuple(p for p in inspect.signature(fn).parameters if p not in _NOT_OPTIONS)


def sample(key, sde, score_fn, shape, method: str = "pc", num_steps=None, **options):
    """Sample with any registered sampler (:data:`SAMPLERS`).

    Args:
      key: PRNG key.
      sde: a :class:`~sde_jax.SDE`.
      score_fn: ``score_fn(x, t) -> score``.
      shape: sample shape ``[B, ...]``.
      method: a name in :data:`SAMPLERS`.
      num_steps: the method's step count (see the module table); ``None``: the method's default.
      **options: the method's keyword options (:func:`sampler_options`), e.g. ``eta`` for ``"ddim"``.

    Returns:
      ``(x, nfe)``.

    Raises:
      ValueError: unknown method or option (listing the valid ones); ``num_steps`` for ``"adaptive_sde"``.

    Example:
      >>> x, nfe = sample(key, sde, score_fn, (64, 2), method="edm_heun", num_steps=17)   # nfe == 35
    """
    entry = C.lookup(SAMPLERS, method, "method")
    valid = sampler_options(method)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {method!r}; valid options: {sorted(valid)}.")
    if not entry.steps:
        if num_steps is not None:
            raise ValueError(f"method {method!r} chooses its own steps: num_steps must be None (set its "
                             f"tolerances instead); got {num_steps!r}.")
        return entry.fn(key, sde, score_fn, shape, **options)
    if num_steps is not None:
        options["num_steps"] = num_steps
    return entry.fn(key, sde, score_fn, shape, **options)
