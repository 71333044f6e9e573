"""From a network's output to ``score_fn(x, t)``: time labels and output parameterisations per SDE.

:func:`get_score_fn` returns a :class:`ScoreFn`, a pytree callable: ``params`` (and the SDE's floats) are
leaves and ``apply_fn`` is static, so handing a freshly built wrapper with new parameters to a jitted
sampler or loss does not recompile.

Conventions (the paper's ``models/utils.py::get_score_fn``; ``i = round(t (N-1)/T)`` is the nearest level,
``sde.time_index``):

=========  ==========  ===============================  =================================================
SDE        time        network label ``c``              noise std ``s`` used by the parameterisation
=========  ==========  ===============================  =================================================
VE         continuous  ``sigma(t)`` (paper's level)     ``sigma(t)``
VE         discrete    ``N - 1 - i`` (0 = sigma_max)    ``discrete_sigmas[i]``
VP         continuous  ``999 t``                        ``marginal_std(t) = sqrt(1 - a(t)^2)``
VP         discrete    ``i``                            ``sqrt(1 - alphas_cumprod[i])``
sub-VP     continuous  ``999 t``                        ``marginal_std(t) = 1 - a(t)^2``
sub-VP     discrete    not defined (raises)             --
=========  ==========  ===============================  =================================================

Parameterisations of the network output ``out = apply_fn(params, x, c)``:

* ``"score"``: ``s = out`` (direct score).
* ``"noise"``: ``s = -out / s`` (noise prediction ``eps_theta``; the paper's VP/sub-VP convention, DDPM).
* ``"scaled"``: ``s = out / s`` (NCSN/NCSN++ "scale by sigma"; the paper's VE convention, where the NCSN++
  network divides by ``sigma(t)`` itself when ``scale_by_sigma`` is on).

Deviations from the paper's code, stated: the VP discrete level is rounded, not truncated (so
``t_i = i T/(N-1)`` maps back to ``i`` despite rounding error); discrete sub-VP raises instead of silently
using the continuous labels. For VE, ``sigma(t)`` is the paper's noise level, not the exact kernel std
``marginal_std(t) = sqrt(sigma(t)^2 - sigma_min^2)`` (see ``sde_jax.sdes``); they differ only near ``t = 0``.
"""
from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
from flax import struct

from sde_jax.sdes import SDE, VESDE, VPSDE, SubVPSDE, batch_broadcast, check_batch, check_score

__all__ = ["ScoreFn", "get_score_fn", "time_labels", "noise_std", "PARAMETERIZATIONS",
           "default_parameterization"]

VP_TIME_SCALE = 999.0  # the paper's continuous VP/sub-VP label 999 t (DDPM's 1000 steps), whatever N is


def _check_sde(sde):
    if not isinstance(sde, (VESDE, VPSDE, SubVPSDE)):
        raise ValueError(f"sde must be a VESDE, VPSDE or SubVPSDE; got {type(sde).__name__}.")


def _check_discrete(sde, continuous):
    if not continuous and isinstance(sde, SubVPSDE):
        raise ValueError("discrete-time (continuous=False) score functions are not defined for SubVPSDE "
                         "(it has no discrete chain of its own); use continuous=True.")


def time_labels(sde: SDE, t, *, continuous=True):
    """The label ``[B]`` the network is conditioned on at times ``t: [B]`` (see the module table)."""
    _check_sde(sde)
    _check_discrete(sde, continuous)
    t = jnp.asarray(t)
    if isinstance(sde, VESDE):
        if continuous:
            return sde.sigma(t)                                            # paper: sigma(t)
        return (sde.N - 1 - sde.time_index(t)).astype(t.dtype)            # paper: round((T - t)(N - 1))
    if continuous:
        return VP_TIME_SCALE * t                                           # paper: 999 t
    return sde.time_index(t).astype(t.dtype)                               # paper: t (N - 1), truncated


def noise_std(sde: SDE, t, *, continuous=True):
    """The std ``s`` that the ``"noise"`` and ``"scaled"`` parameterisations divide by (module table)."""
    _check_sde(sde)
    _check_discrete(sde, continuous)
    t = jnp.asarray(t)
    if isinstance(sde, VESDE):
        if continuous:
            return sde.sigma(t)
        return sde.discrete_sigmas.astype(t.dtype)[sde.time_index(t)]
    if continuous:
        return sde.marginal_std(t)
    return jnp.sqrt(1.0 - sde.alphas_cumprod.astype(t.dtype)[sde.time_index(t)])


def _score(out, std):
    return out


def _noise(out, std):
    return -out / batch_broadcast(std, out)


def _scaled(out, std):
    return out / batch_broadcast(std, out)


PARAMETERIZATIONS = {"score": _score, "noise": _noise, "scaled": _scaled}
"""Parameterisation name -> ``f(out, std) -> score`` (see the module docstring)."""


def default_parameterization(sde: SDE) -> str:
    """The paper's choice: ``"scaled"`` for VE (NCSN++ scale_by_sigma), ``"noise"`` for VP and sub-VP."""
    _check_sde(sde)
    return "scaled" if isinstance(sde, VESDE) else "noise"


@struct.dataclass
class ScoreFn:
    """``score_fn(x, t) -> [B, ...]`` from a network: a pytree (params and SDE are leaves).

    Attributes:
      params: the network's variables, passed as the first argument of ``apply_fn``.
      sde: the SDE whose marginals the score is for.
      apply_fn: ``apply_fn(params, x, labels, **apply_kwargs) -> out`` (e.g. ``model.apply``); static.
      continuous: continuous-time labels (else discrete levels); static.
      parameterization: a key of :data:`PARAMETERIZATIONS`; static.
      apply_kwargs: static keyword arguments of ``apply_fn`` as a tuple of ``(name, value)`` pairs
        (hashable values only, e.g. ``train=False``).
      rngs: optional PRNG keys passed as ``apply_fn(..., rngs=rngs)`` (e.g. ``{"dropout": key}`` when
        training a network with dropout); a leaf, so new keys do not recompile.
    """

    params: Any
    sde: SDE
    apply_fn: Callable = struct.field(pytree_node=False)
    continuous: bool = struct.field(pytree_node=False, default=True)
    parameterization: str = struct.field(pytree_node=False, default="score")
    apply_kwargs: tuple = struct.field(pytree_node=False, default=())
    rngs: Any = None

    def labels(self, t):
        return time_labels(self.sde, t, continuous=self.continuous)

    def __call__(self, x, t):
        check_batch(x, t)
        kwargs = dict(self.apply_kwargs)
        if self.rngs is not None:
            kwargs["rngs"] = self.rngs
        out = self.apply_fn(self.params, x, self.labels(t), **kwargs)
        check_score(out, x)
        if self.parameterization == "score":
            return out
        std = noise_std(self.sde, t, continuous=self.continuous).astype(out.dtype)
        return PARAMETERIZATIONS[self.parameterization](out, std)


def get_score_fn(sde: SDE, apply_fn: Callable, params, *, continuous=True, parameterization=None, rngs=None,
                 **apply_kwargs) -> ScoreFn:
    """Wrap a network ``apply_fn(params, x, labels, **apply_kwargs)`` as ``score_fn(x, t)``.

    Args:
      sde: a VESDE, VPSDE or SubVPSDE.
      apply_fn: the network's pure apply function, e.g. ``model.apply``.
      params: its variables (e.g. ``{"params": ...}``).
      continuous: continuous-time labels ``sigma(t)`` / ``999 t`` or discrete levels (module table).
      parameterization: ``"score"``, ``"noise"`` or ``"scaled"``; ``None`` picks the paper's choice
        (:func:`default_parameterization`).
      rngs: optional PRNG keys forwarded as ``rngs=`` (e.g. ``{"dropout": key}``); traced, not static.
      **apply_kwargs: static keyword arguments forwarded to ``apply_fn`` (hashable, e.g. ``train=False``).

    Returns:
      a :class:`ScoreFn`.

    Raises:
      ValueError: unknown parameterization; a network bound in ``apply_fn`` that scales by sigma itself
        (NCSN++/DDPM ``scale_by_sigma``, NCSNv2) with a parameterization other than ``"score"``.

    Example:
      >>> model = ScoreMLP()
      >>> params = model.init(key, x, jnp.ones(x.shape[0]))
      >>> score_fn = get_score_fn(sde, model.apply, params, parameterization="noise")
      >>> score_fn(x, t)   # [B, D]
    """
    _check_sde(sde)
    _check_discrete(sde, continuous)
    parameterization = default_parameterization(sde) if parameterization is None else parameterization
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {sorted(PARAMETERIZATIONS)}; got {parameterization!r}.")
    module = getattr(apply_fn, "__self__", None)   # model.apply is bound to its module
    if module is not None and parameterization != "score":
        from sde_jax.models.registry import scales_by_sigma   # lazy: the registry imports this module
        if scales_by_sigma(module):
            raise ValueError(
                f"{type(module).__name__} divides its output by sigma itself (scale_by_sigma), so its output is "
                f"already the score; parameterization {parameterization!r} would rescale it again. Use "
                f"parameterization='score' or sde_jax.models.get_model_score_fn (the paper's conventions).")
    return ScoreFn(params=params, sde=sde, apply_fn=apply_fn, continuous=bool(continuous),
                   parameterization=parameterization, apply_kwargs=tuple(sorted(apply_kwargs.items())), rngs=rngs)
