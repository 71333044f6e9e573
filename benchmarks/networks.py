"""Score networks to benchmark, and the *limit* programs: the same number of bare network evaluations.

A :class:`Network` bundles a Flax ``apply(params, x, labels) -> out`` (``out`` shaped like ``x``), its
parameters, the data shape, and how to make an SDE and a ``score_fn`` for it. Networks come from a spec
string (see :func:`build_network`):

* ``mlp`` -- the toy :class:`~sde_jax.models.ScoreMLP` (hidden 128, 3 blocks, sinusoidal embedding) on 2-D
  data with a VP SDE, the network of ``experiments/toy2d``; ``mlp-tiny`` is a small one for smoke runs.
* ``config:NAME`` -- an image network from :func:`sde_jax.models.get_config` (e.g. ``config:small/ncsnpp``),
  with ``--network-set model.nf=8`` style overrides.
* ``module.path:Class`` -- any Flax module ``Class(**kwargs)(x [B, ...], labels [B]) -> [B, ...]`` (kwargs
  from ``--network-kwargs JSON``, data shape from ``--data-shape``), wrapped with
  :func:`sde_jax.models.get_score_fn` under a VP SDE.

Limits (:func:`forward_limit`, :func:`value_grad_limit`, :func:`fwd_bwd_step`, :func:`fwd_bwd_limit`) are
``lax.scan`` loops of ``apply`` alone. Their carry feeds the next evaluation (``x <- apply(params, x,
labels)``), so XLA can neither hoist an evaluation out of the loop nor drop it. Labels change where the
sampler's labels change: a limit is a nested scan, ``outer`` groups of ``inner`` evaluations, the labels
shifted by a runtime offset per group and constant within it (a PC step's corrector and predictor
evaluations share ``t``; ULA at a fixed ``t`` is one group). A constant label lets XLA hoist the label
embedding out of the loop in the sampler; the limit then gets the same treatment.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import json
from typing import Any, Callable

import jax
import jax.numpy as jnp

import sde_jax as sj
from sde_jax.models import ScoreMLP, get_score_fn

__all__ = ["Network", "build_network", "forward_limit", "value_grad_limit", "fwd_bwd_step", "fwd_bwd_limit",
           "mlp_network"]


@dataclasses.dataclass(frozen=True)
class Network:
    """A network and what the benchmarks need to drive it.

    Attributes:
      name: short name used in case ids.
      description: for the report.
      apply: ``apply(params, x, labels) -> out`` (pure; ``out`` has the shape of ``x``).
      params: the network's variables.
      data_shape: one example's shape.
      make_sde: ``N -> SDE`` (the SDE the network is used with, ``N`` discrete levels).
      make_score_fn: ``(sde, params) -> score_fn`` (a pytree callable, params traced).
      num_params: number of parameters.
      kind: ``"mlp"`` (low-dimensional, all cases) or ``"image"`` (sampling cases only).
    """

    name: str
    description: str
    apply: Callable
    params: Any
    data_shape: tuple
    make_sde: Callable
    make_score_fn: Callable
    num_params: int
    kind: str = "mlp"

    def labels(self, sde, batch: int, t: float = 0.5, dtype=jnp.float32):
        """Labels ``[batch]`` the score function feeds the network at time ``t`` (its own mapping)."""
        score_fn = self.make_score_fn(sde, self.params)
        return jnp.asarray(score_fn.labels(jnp.full((batch,), t, dtype)), dtype)


def _count(params) -> int:
    return int(sum(leaf.size for leaf in jax.tree.leaves(params)))


def vp_sde(n: int):
    """The VP SDE with ``n`` levels: the paper's ``beta_max = 20`` where the DDPM chain allows it comfortably
    (``N >= 40``), ``beta_max = N / 2`` below that (the chain needs every ``beta_i < 1``, i.e. ``N > beta_max``;
    the timings do not depend on it)."""
    return sj.VPSDE(beta_max=min(20.0, n / 2), N=n)


def mlp_network(data_dim: int = 2, *, name: str = "mlp", **kwargs) -> Network:
    """The toy score MLP (defaults of :class:`~sde_jax.models.ScoreMLP`: hidden 128, 3 residual blocks,
    sinusoidal embedding of ``999 t``) under a VP SDE with the paper's ``noise`` parameterisation."""
    model = ScoreMLP(**kwargs)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((2, data_dim)), jnp.ones((2,)))
    desc = (f"ScoreMLP(hidden={model.hidden}, num_layers={model.num_layers}, embed_dim={model.embed_dim}), "
            f"D={data_dim}, VPSDE (beta_max = min(20, N/2))")
    return Network(name=name, description=desc, apply=model.apply, params=params, data_shape=(data_dim,),
                   make_sde=vp_sde, make_score_fn=lambda sde, p: get_score_fn(sde, model, p),
                   num_params=_count(params), kind="mlp")


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _config_network(config_name: str, overrides) -> Network:
    from sde_jax import models, training

    cfg = models.get_config(config_name)
    for item in overrides:
        key, _, value = item.partition("=")
        section, _, field = key.partition(".")
        if not field or section not in cfg:
            raise ValueError(f"--network-set expects section.field=value (e.g. model.nf=8); got {item!r}.")
        cfg[section][field] = _parse_value(value)
    s, c = cfg.data.image_size, cfg.data.num_channels
    model, variables = models.init_model(jax.random.key(0, impl="rbg"), cfg, (1, s, s, c))
    continuous = training.is_continuous(cfg)
    sde_name = cfg.sde.name

    def make_sde(n):
        return training.build_sde(cfg.sde).replace(N=n)

    def apply(p, x, labels):
        return model.apply(p, x, labels, train=False)

    return Network(name=config_name.replace("/", "_"), description=f"{config_name} {list(overrides)} ({sde_name})",
                   apply=apply, params=variables, data_shape=(s, s, c), make_sde=make_sde,
                   make_score_fn=lambda sde, p: models.get_score_fn(sde, model, p, continuous=continuous),
                   num_params=models.count_params(variables), kind="image")


def _module_network(spec: str, kwargs: dict, data_shape: tuple) -> Network:
    module_name, _, attr = spec.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    model = cls(**kwargs)
    x = jnp.zeros((2,) + tuple(data_shape))
    params = jax.jit(model.init)(jax.random.key(0), x, jnp.ones((2,)))
    return Network(name=attr, description=f"{spec}({json.dumps(kwargs)}), data {tuple(data_shape)}, VPSDE (beta_max = min(20, N/2))",
                   apply=model.apply, params=params, data_shape=tuple(data_shape),
                   make_sde=vp_sde, make_score_fn=lambda sde, p: get_score_fn(sde, model, p),
                   num_params=_count(params), kind="mlp" if len(data_shape) == 1 else "image")


def build_network(spec: str, *, overrides=(), kwargs=None, data_shape=None) -> Network:
    """A :class:`Network` from a spec string (module docstring)."""
    if spec == "mlp":
        return mlp_network()
    if spec == "mlp-tiny":
        return mlp_network(name="mlp-tiny", hidden=16, num_layers=1, embed_dim=8)
    if spec.startswith("config:"):
        return _config_network(spec[len("config:"):], overrides)
    if ":" in spec:
        return _module_network(spec, kwargs or {}, tuple(data_shape or (2,)))
    raise ValueError(f"unknown network spec {spec!r}; use 'mlp', 'mlp-tiny', 'config:NAME' or 'module.path:Class'.")


# --------------------------------------------------------------------------------------------------
# Limit programs (not jitted here: the caller compiles them ahead of time with the sampler).


def forward_limit(apply: Callable, outer: int, inner: int) -> Callable:
    """``limit(params, x, labels, offsets[outer]) -> x``: ``outer * inner`` evaluations ``x <- apply(params,
    x, labels + offsets[i])``, the label constant over the ``inner`` evaluations of group ``i``.

    ``labels`` is ``[B]``, or a scalar broadcast to the batch (as the samplers do with one time for the
    whole batch: XLA then computes the label's sinusoids once, not per example)."""

    def limit(params, x, labels, offsets):
        def group(x, off):
            lab = labels + off
            if lab.ndim == 0:
                lab = jnp.full(x.shape[:1], lab)

            def one(x, _):
                return apply(params, x, lab).astype(x.dtype), None

            return jax.lax.scan(one, x, None, length=inner)[0], None

        return jax.lax.scan(group, x, offsets)[0]

    return limit


def logdensity_from(apply: Callable) -> Callable:
    """``logp(params, x, labels) = -1/2 ||apply(params, x, labels)||^2`` per example: a log-density made of the
    network, for MALA (which needs values and gradients, not a score)."""

    def logp(params, x, labels):
        out = apply(params, x, labels)
        return -0.5 * jnp.sum(jnp.reshape(out, (out.shape[0], -1)) ** 2, axis=-1)

    return logp


def value_grad_limit(apply: Callable, n: int) -> Callable:
    """``n`` evaluations of the value and input-gradient of :func:`logdensity_from` (one forward and one
    backward pass, as MALA computes them: ``jax.vjp`` with a ones cotangent); the carry is the gradient."""
    logp = logdensity_from(apply)

    def limit(params, x, labels):
        def one(carry, _):
            x, acc = carry
            lp, vjp = jax.vjp(lambda v: logp(params, v, labels), x)
            return (vjp(jnp.ones_like(lp))[0], acc + lp), None

        return jax.lax.scan(one, (x, jnp.zeros(x.shape[:1], x.dtype)), None, length=n)[0]

    return limit


def _mse(apply, params, x, labels):
    return jnp.mean(apply(params, x, labels).astype(jnp.float32) ** 2)


def fwd_bwd_step(apply: Callable) -> Callable:
    """``grads(params, x, labels)``: one forward + backward pass (gradient of the mean squared output with
    respect to the parameters), the network cost of one training step without loss, optimizer or EMA."""
    return jax.grad(functools.partial(_mse, apply))


def fwd_bwd_limit(apply: Callable, n: int) -> Callable:
    """``n`` forward + backward passes in a ``lax.scan``. The carry is a scalar ``s`` that shifts the next
    batch and labels (``x + s``, ``labels + s``) and absorbs the sum of squares of every gradient leaf, so every
    pass depends on the previous one and every gradient entry must be computed. (A plain ``sum`` of a weight
    gradient ``A^T B`` lets XLA rewrite it as a product of column sums and skip the outer product, a third of
    the backward pass: that limit was ~12% too fast for the toy MLP.)"""
    grad = fwd_bwd_step(apply)

    def limit(params, x, labels):
        def one(s, _):
            g = grad(params, x + s, labels + s)
            total = sum(jnp.sum(jnp.square(leaf.astype(jnp.float32))) for leaf in jax.tree.leaves(g))
            return s + 1e-30 * total, None

        return jax.lax.scan(one, jnp.zeros((), x.dtype), None, length=n)[0]

    return limit
