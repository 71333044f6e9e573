"""The predictor-corrector sampler (Song et al. 2021, Algorithms 2 and 3) as one ``lax.scan``."""
from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from sde_jax import _checks as C
from sde_jax import _jit
from sde_jax.samplers.correctors import get_corrector
from sde_jax.samplers.predictors import gaussian_move, get_predictor

__all__ = ["pc_sample", "time_grid", "grid_levels", "check_grid"]


def time_grid(sde, num_steps, eps, dtype=None):
    """Evaluation times ``t_k = linspace(T, eps, num_steps)`` and step targets ``t_{k+1}`` (last: 0).

    Step ``k`` evaluates the score at ``t_k`` and moves the sample to ``t_{k+1}``; the last step goes
    from ``eps`` to 0, so the score is never evaluated at the singular ``t = 0``.
    """
    dtype = _jit.default_dtype(dtype)
    ts = jnp.linspace(jnp.asarray(sde.T, dtype), jnp.asarray(eps, dtype), num_steps, dtype=dtype)
    return ts, jnp.concatenate([ts[1:], jnp.zeros((1,), dtype)])


def grid_levels(sde, ts):
    """The discrete level of each grid time: ``N - 1 - k`` when the grid has the SDE's ``N`` points (every
    level exactly once), else the nearest level of ``t_k`` (:meth:`SDE.time_index`)."""
    if ts.shape[0] == sde.N:
        return jnp.arange(sde.N - 1, -1, -1, dtype=jnp.int32)
    return sde.time_index(ts)


def check_grid(sde, pred, num_steps):
    """``num_steps`` (default ``sde.N``) checked against the predictor: an int >= 1, equal to ``sde.N`` for a
    discrete predictor, and the SDE must have what the predictor needs. Returns ``num_steps``."""
    num_steps = sde.N if num_steps is None else C.check_int("num_steps", num_steps)
    pred.check_sde(sde)
    if pred.discrete and hasattr(sde, "check_discrete_chain"):
        sde.check_discrete_chain()      # the VP family's chain: ValueError unless every beta_i < 1 (N > beta_max)
    if pred.discrete and num_steps != sde.N:
        raise ValueError(f"predictor {pred.name!r} steps through the SDE's N={sde.N} discrete levels, so "
                         f"num_steps must equal N; got num_steps={num_steps}. Build the SDE with N={num_steps}.")
    return num_steps


def pc_sample(key, sde, score_fn, shape, *, predictor="reverse_diffusion", corrector="langevin", snr=0.16,
              n_corrector_steps=1, num_steps=None, eps=1e-3, denoise=True, per_sample_step=False, mesh=None,
              dtype=None, project=None) -> tuple[Float[Array, "b ..."], int]:
    """Sample the reverse-time SDE with a predictor-corrector loop.

    At each of ``num_steps`` times ``t_k = linspace(T, eps, num_steps)`` the sampler runs
    ``n_corrector_steps`` corrector updates at ``t_k`` and then one predictor step from ``t_k`` to ``t_{k+1}``
    (``t_num_steps = 0``), as the paper's code does (corrector first). Step ``k`` of a discrete predictor
    uses level ``N - 1 - k``, so every level is visited exactly once.

    Differences from the paper's code (yang-song/score_sde ``sampling.py``), all deliberate:

    * Euler--Maruyama uses the grid's own step ``t_{k+1} - t_k`` (the paper: ``-1/N`` on a grid of spacing
      ``(T - eps)/(N - 1)``, so its steps do not land on its grid).
    * ``nfe`` counts the score evaluations actually made: ``num_steps * (p + c * n_corrector_steps)`` with
      ``p, c`` the evaluations of one predictor / corrector step (0 for ``"none"``). The paper reports
      ``N (n + 1)`` even without a corrector.
    * sub-VP works with both correctors (Langevin ``alpha_i = 1 - beta_i`` as for VP).
    * ``per_sample_step=True`` gives each sample its own Langevin step size (the paper's averages the norms
      over the global batch, the default here).

    The loop is a ``lax.scan``: memory does not grow with ``num_steps`` and the compiled program's size does
    not depend on it. The function is jitted with the score function's arrays (e.g. network parameters), the
    SDE's hyper-parameters, ``snr``, ``eps`` and ``key`` traced, so new values of these do not recompile;
    a plain Python ``score_fn`` is part of the cache key (pass the same function object to reuse the program).

    Random numbers: step ``k`` takes the keys ``split(fold_in(key_loop, k), n_corrector_steps + 1)`` (the
    correctors', then the predictor's), all derived before the loop. A predictor with a Gaussian ``kernel``
    (every built-in) and a corrector with a ``noise_step`` (both built-ins) use one standard normal draw per
    update, ``normal(key, x.shape)`` of its key. For small batches those draws are made ahead, for a chunk
    of :func:`noise_chunk` steps (up to :data:`NOISE_CHUNK_ELEMENTS` numbers) in one call, so that a small
    batch does not pay a random-number call per update (1000 steps of a 3x64 MLP at batch 16: 0.72 -> 0.93 of
    the bare network's time); a larger step makes its own draws. They are the same numbers either way, and
    the samples equal those of a step that draws for itself up to float rounding. Other predictors and
    correctors are called with their key.

    Args:
      key: PRNG key.
      sde: a :class:`~sde_jax.SDE`.
      score_fn: ``score_fn(x, t) -> score`` with ``x: [B, ...]``, ``t: [B]``; a function or a pytree callable.
      shape: sample shape ``[B, ...]``.
      predictor: a name in ``PREDICTORS`` (``"euler_maruyama"``, ``"reverse_diffusion"``, ``"ancestral"``,
        ``"none"``), a :class:`Predictor` or a step function.
      corrector: a name in ``CORRECTORS`` (``"langevin"``, ``"ald"``, ``"none"``), a :class:`Corrector` or a
        step function.
      snr: Langevin signal-to-noise ratio ``r`` (> 0); passed to the correctors that take it.
      n_corrector_steps: corrector updates per time step (>= 0).
      num_steps: number of time steps; defaults to ``sde.N`` (and must equal it for the discrete predictors
        ``reverse_diffusion`` and ``ancestral``: build the SDE with ``N=num_steps`` instead).
      eps: smallest time at which the score is evaluated, in ``(0, T)``.
      denoise: return the noise-free mean of the last step (the paper's default) instead of the sample.
      per_sample_step: per-sample Langevin step sizes (see above); passed to the correctors that take it.
      mesh: optional device mesh (:func:`sde_jax.parallel.make_data_mesh`); the batch is sharded over its
        ``data`` axis and the samples equal those drawn on one device.
      dtype: sample dtype (default: JAX's default float). 16-bit dtypes are computed in float32 and the
        samples cast (see :func:`sde_jax._jit.compute_dtype`).
      project: optional ``project(key, x, x_mean, t) -> (x, x_mean)`` applied to the prior sample (``t = T``)
        and after every corrector update (``t = t_k``) and predictor step (``t = t_{k+1}``), with ``t: [B]`` the
        time the sample is at and a fresh key each call: a constraint or data-consistency step, e.g. the
        replacement step of inpainting (:mod:`sde_jax.samplers.conditional`). A function (part of the cache
        key) or a pytree callable (its arrays are traced).

    Returns:
      ``(x, nfe)``: samples ``[B, ...]`` and the number of score-function evaluations (a Python int).
    """
    shape = C.check_shape(shape)
    pred, corr = get_predictor(predictor), get_corrector(corrector)
    n_corr = C.check_int("n_corrector_steps", n_corrector_steps, minimum=0)
    if corr.nfe_per_step == 0:
        n_corr = 0
    if pred.nfe_per_step == 0 and n_corr == 0:
        raise ValueError("predictor and corrector are both 'none' (or n_corrector_steps=0): nothing to sample with.")
    num_steps = check_grid(sde, pred, num_steps)
    eps = C.check_eps(eps, sde)
    C.check_mesh(mesh, shape[0])
    out_dtype = _jit.default_dtype(dtype)
    dtype = _jit.compute_dtype(out_dtype)
    options = {"snr": C.check_positive("snr", snr), "per_sample_step": bool(per_sample_step)}
    options = _jit.as_leaves({k: options[k] for k in corr.options}, dtype)
    x = _pc_loop(key, _jit.as_leaves(sde, dtype, convert_arrays=True), _jit.as_leaves(score_fn, dtype),
                 _jit.as_leaves(eps, dtype), options, shape, pred, corr, n_corr, num_steps, bool(denoise), dtype,
                 mesh, project)
    return x.astype(out_dtype), num_steps * (pred.nfe_per_step + corr.nfe_per_step * n_corr)


NOISE_CHUNK_ELEMENTS = 1 << 16
"""Budget of the noise the PC loop draws ahead: at most this many numbers per draw."""

MIN_NOISE_CHUNK = 8
"""Fewest steps worth a chunk: a step whose draws are larger than 1/8 of the budget draws for itself (its one
call already amortises the call's fixed cost, and the chunked loop compiles slower)."""


def noise_chunk(num_steps, per_step):
    """How many steps' noise the PC loop draws in one call: the largest divisor of ``num_steps`` (at least
    :data:`MIN_NOISE_CHUNK`) whose draws, ``per_step`` numbers each, fit :data:`NOISE_CHUNK_ELEMENTS`; else 1
    (each step draws its own, in one call)."""
    most = min(num_steps, NOISE_CHUNK_ELEMENTS // max(per_step, 1))
    size = max([c for c in range(1, most + 1) if num_steps % c == 0], default=1)
    return size if size >= MIN_NOISE_CHUNK else 1


@eqx.filter_jit
def _pc_loop(key, sde, score_fn, eps, options, shape, pred, corr, n_corr, num_steps, denoise, dtype, mesh,
             project=None):
    constrain = _jit.constrainer(mesh)
    if project is None:
        key_init, key_loop = jax.random.split(key)
    else:   # projection keys from their own stream: pc_sample's draws do not change when project is None
        key_init, key_loop, key_project = jax.random.split(key, 3)
    x = constrain(sde.prior_sampling(key_init, shape, dtype))
    ts, t_next = time_grid(sde, num_steps, eps, dtype)
    levels = grid_levels(sde, ts)
    batch = shape[0]
    constrain_noise = _jit.constrainer(mesh, batch_axis=2)

    def projected(key, x, x_mean, t):
        x, x_mean = constrain(x), constrain(x_mean)
        if project is None:
            return x, x_mean
        x, x_mean = project(key, x, x_mean, t)
        return constrain(x), constrain(x_mean)

    noise_c = corr.noise_step is not None and n_corr > 0     # draws the loop makes for the step (see pc_sample)
    noise_p = pred.kernel is not None and pred.nfe_per_step > 0

    def corrector_update(t, level):
        def body(carry, inputs):
            x, _ = carry
            key_c, z, key_j = inputs
            if z is None:
                x, x_mean = corr.step(key_c, sde, score_fn, x, t, level, **options)
            else:
                x, x_mean = corr.noise_step(z, sde, score_fn, x, t, level, **options)
            x, x_mean = projected(key_j, x.astype(dtype), x_mean.astype(dtype), t)
            return (x.astype(dtype), x_mean.astype(dtype)), None   # the carry keeps its dtype

        return body

    def step(carry, inputs):
        x, x_mean = carry
        keys_k, z_k, keys_j, t, tn, level = inputs
        t, tn, level = jnp.full((batch,), t), jnp.full((batch,), tn), jnp.full((batch,), level)
        if n_corr > 0:
            (x, x_mean), _ = jax.lax.scan(
                corrector_update(t, level), (x, x_mean),
                (keys_k[:n_corr], None if not noise_c else z_k[:n_corr], None if keys_j is None else keys_j[:n_corr]))
        if pred.nfe_per_step > 0:
            if noise_p:
                x_mean, std = pred.kernel(sde, score_fn, x, t, tn, level)
                x = gaussian_move(x_mean, std, z_k[-1])
            else:
                x, x_mean = pred.step(keys_k[n_corr], sde, score_fn, x, t, tn, level)
            x, x_mean = projected(None if keys_j is None else keys_j[n_corr], x.astype(dtype),
                                  x_mean.astype(dtype), tn)
        return (x.astype(dtype), x_mean.astype(dtype)), None   # the carry keeps its dtype

    lo, hi = (0 if noise_c else n_corr), (n_corr + 1 if noise_p else n_corr)   # the keys whose draws are made ahead

    def keys_of(key, k):   # step k's keys: the correctors', then the predictor's
        return jax.random.split(jax.random.fold_in(key, k), n_corr + 1)

    def one(carry, inputs):     # a step that makes its own draws
        k, t, tn, level = inputs
        keys_k = keys_of(key_loop, k)
        z = jnp.stack([jax.random.normal(q, shape, dtype) for q in keys_k[lo:hi]]) if hi > lo else None
        return step(carry, (keys_k, z, None if project is None else keys_of(key_project, k), t, tn, level))

    def chunk(carry, inputs):   # C steps whose draws are made first, in one call
        k, t, tn, level = inputs
        keys = jax.vmap(keys_of, (None, 0))(key_loop, k)
        z = constrain_noise(jax.vmap(jax.vmap(lambda q: jax.random.normal(q, shape, dtype)))(keys[:, lo:hi]))
        keys_j = None if project is None else jax.vmap(keys_of, (None, 0))(key_project, k)
        return jax.lax.scan(step, carry, (keys, z, keys_j, t, tn, level))

    if project is not None:   # the prior sample at T, with a key no step uses (k = num_steps)
        x, _ = projected(jax.random.fold_in(key_project, num_steps), x, x, jnp.full((batch,), sde.T, dtype))
    inputs = (jnp.arange(num_steps), ts, t_next, levels)
    size = noise_chunk(num_steps, (hi - lo) * math.prod(shape)) if hi > lo else 1
    if size == 1:
        (x, x_mean), _ = jax.lax.scan(one, (x, x), inputs)
    else:
        inputs = jax.tree.map(lambda v: v.reshape((num_steps // size, size) + v.shape[1:]), inputs)
        (x, x_mean), _ = jax.lax.scan(chunk, (x, x), inputs)
    return x_mean if denoise else x
