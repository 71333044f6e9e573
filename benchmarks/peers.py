"""Peer cases: the same work in sde_jax and in the PyTorch libraries users would otherwise pick, timed in one run.

``python -m benchmarks.run --suite peers --out DIR`` (needs the ``peers`` extra: ``pip install torch==2.13.0
--index-url https://download.pytorch.org/whl/cpu; pip install -e '.[peers]'; pip install --no-deps
k-diffusion==0.1.1.post1``). Without torch / diffusers / k-diffusion the cases are recorded with status
``"skipped"`` and a note that says what to install; the library never imports any of them.

Cases (ids ``peers/...``), each alternating our call and the peer's (A B, B A, ...) as every case of the suite:

* ``peers/ve_pc/mlp<W>/b<B>/n<N>``: the VE PC sampler, reverse-diffusion predictor + one Langevin corrector per
  step (``snr``), ``N`` steps, against diffusers' ``ScoreSdeVeScheduler`` driven as its ``ScoreSdeVePipeline``
  does (``step_correct`` then ``step_pred`` per step) with the same MLP in torch (the Flax weights copied):
  ``score(x, sigma) = MLP([x, log sigma]) / sigma``, 3 hidden SiLU layers of width ``W``, 2-D data. ``extra``
  also holds ``bare_over_ours``: the same ``2 N`` MLP evaluations alone (a ``lax.scan``), timed in the same
  alternation, over our sampler's time (the share of the sampler's time spent in the network).
* ``peers/unet_forward/b<B>``: our ``small/ncsnpp`` forward against diffusers' ``UNet2DModel`` forward at the
  closest configuration it has (32x32x3, channels (32, 64, 64), one res-block per level, attention at 16x16,
  Fourier time embedding); the parameter counts of both are in ``config``.
* ``peers/likelihood/gmm<D>/exact/b<B>/tol<T>``: ``sj.log_likelihood`` (exact divergence, dopri5, ``rtol = atol =
  T``) on ``B`` samples of a ``D``-dimensional Gaussian mixture with its exact perturbed score under the VP SDE,
  against the paper's method: scipy's RK45 on the host over the whole flattened batch, ``rtol = atol = T``, one
  jitted device call per evaluation returning the drift and the exact divergence of the batch. Both results are
  scored against the exact ``log p_eps`` (``extra``: mean / max absolute errors, the peer's evaluation count).
* ``peers/kdiff/<sampler>/mlp<W>/b<B>/n<N>``: ``sj.sample(method="edm_heun")`` against k-diffusion's
  ``sample_heun``, ``method="dpm_solver++"`` (2M) against ``sample_dpmpp_2m``, on the Karras grid of the VE SDE
  with the same MLP (k-diffusion's denoiser ``D(x, sigma) = x + sigma^2 score``); equal evaluation counts.

Each record's ``ratio`` is ``peer time / our time`` (our throughput over the peer's: above 1 we are faster), from
the minima (``ratio_median``: medians); ``limit`` holds the peer's timing. torch uses its default threads.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import pathlib
import sys
import types
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import sde_jax as sj
from sde_jax._pytree import pytree_dataclass, static_field
from benchmarks.common import Context, guarded, measure, record
from benchmarks.networks import forward_limit
from benchmarks.timing import aot_compile

__all__ = ["INSTALL", "SigmaMLP", "VEScore", "missing_peers", "run_peers"]

INSTALL = ("pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu; "
           "pip install -e '.[peers]'; pip install --no-deps k-diffusion==0.1.1.post1")
"""How to install what the peer cases need (torch's CPU wheel first, so pip does not pull a CUDA build)."""

SIGMA_MIN, SIGMA_MAX = 0.01, 50.0


def missing_peers(names=("torch", "diffusers", "k_diffusion")) -> list[str]:
    """The peer packages among ``names`` that are not installed."""
    return [n for n in names if importlib.util.find_spec(n) is None]


# --------------------------------------------------------------------------------------------------
# The MLP, in Flax and in torch with the same weights.


class SigmaMLP(nn.Module):
    """``score(x, sigma) = MLP([x, log sigma]) / sigma``: ``depth`` hidden SiLU layers of ``width``."""

    width: int = 256
    depth: int = 3

    @nn.compact
    def __call__(self, x, sigma):
        h = jnp.concatenate([x, jnp.log(sigma)[:, None].astype(x.dtype)], axis=-1)
        for _ in range(self.depth):
            h = nn.silu(nn.Dense(self.width)(h))
        return nn.Dense(x.shape[-1])(h) / sigma[:, None]


@pytree_dataclass
class VEScore:
    """``score_fn(x, t)`` of a :class:`SigmaMLP` under the VE SDE: ``sigma(t) = smin (smax / smin)^t``."""

    params: Any
    sigma_min: float = static_field()
    sigma_max: float = static_field()
    apply: Callable = static_field()

    def __call__(self, x, t):
        sigma = self.sigma_min * (self.sigma_max / self.sigma_min) ** t
        return self.apply(self.params, x, sigma.astype(x.dtype))


def _torch_mlp(torch, params, width, depth):
    layers = []
    dense = [params["params"][f"Dense_{i}"] for i in range(depth + 1)]
    for i, p in enumerate(dense):
        kernel = np.asarray(p["kernel"])
        lin = torch.nn.Linear(kernel.shape[0], kernel.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(kernel.T.copy()))
            lin.bias.copy_(torch.from_numpy(np.asarray(p["bias"]).copy()))
        layers += [lin] + ([torch.nn.SiLU()] if i < depth else [])
    body = torch.nn.Sequential(*layers).eval()

    def score(x, sigma):
        h = torch.cat([x, torch.log(sigma)[:, None]], dim=-1)
        return body(h) / sigma[:, None]

    return score


def _mlp(width, depth, dim=2):
    model = SigmaMLP(width, depth)
    params = jax.jit(model.init)(jax.random.key(0), jnp.ones((2, dim)), jnp.ones((2,)))
    return model, params, int(sum(v.size for v in jax.tree.leaves(params)))


# --------------------------------------------------------------------------------------------------
# Cases.


def _peer_record(ctx, cid, entry_point, *, batch, steps, nfe, config, compiled, ours, peer, status, note, what,
                 extra=None):
    ok = status == "ok"
    ratio = peer["min_s"] / ours["min_s"] if ok else None
    return record(ctx, id=cid, group="peers", entry_point=entry_point, batch=batch, num_steps=steps, nfe=nfe,
                  config=config, compiled=compiled, run=ours, limit=dict(what=what, nfe=nfe, **peer), ratio=ratio,
                  ratio_median=peer["median_s"] / ours["median_s"] if ok else None,
                  throughput=dict(samples_per_s=batch / ours["min_s"], peer_samples_per_s=batch / peer["min_s"])
                  if ok else None, status=status, note=note, extra=extra)


def ve_pc_case(ctx: Context, *, width: int, batch: int, steps: int, snr: float = 0.16, depth: int = 3):
    import torch
    from diffusers import ScoreSdeVeScheduler

    model, params, n_params = _mlp(width, depth)
    sde = sj.VESDE(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, N=steps)
    score = VEScore(params, SIGMA_MIN, SIGMA_MAX, model.apply)
    shape = (batch, 2)

    def ours(key, score):
        return sj.pc_sample(key, sde, score, shape, predictor="reverse_diffusion", corrector="langevin", snr=snr,
                            num_steps=steps, eps=1e-5)[0]

    args = (jax.random.key(1), score)
    compiled = aot_compile(ours, *args)
    tscore = _torch_mlp(torch, params, width, depth)
    sched = ScoreSdeVeScheduler(num_train_timesteps=steps, snr=snr, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX,
                                sampling_eps=1e-5, correct_steps=1)
    gen = torch.Generator().manual_seed(0)

    @torch.inference_mode()
    def peer():   # ScoreSdeVePipeline.__call__ with the MLP in place of the UNet
        sched.set_timesteps(steps)
        sched.set_sigmas(steps)
        x = torch.randn(shape, generator=gen) * sched.init_noise_sigma
        x_mean = x
        for i, t in enumerate(sched.timesteps):
            sigma_t = sched.sigmas[i] * torch.ones(batch)
            x = sched.step_correct(tscore(x, sigma_t), x, generator=gen).prev_sample
            out = sched.step_pred(tscore(x, sigma_t), t, x, generator=gen)
            x, x_mean = out.prev_sample, out.prev_sample_mean
        return x_mean

    # The bare network: the sampler's 2 * steps evaluations of the same MLP alone (one sigma per step, as the
    # sampler's), so ``bare / ours`` is the share of our time spent in the network (1.0: nothing on top).
    bare_args = (params, jnp.ones(shape), jnp.full((batch,), 1.0), jnp.zeros((steps,)))
    bare = aot_compile(forward_limit(model.apply, steps, 2), *bare_args)
    out_ours, out_peer = np.asarray(compiled(*args)), peer().numpy()
    sums, status, note = measure(ctx, {"ours": lambda: compiled(*args), "peer": lambda: (peer(), None)[1],
                                       "bare": lambda: bare(*bare_args)})
    return _peer_record(
        ctx, f"peers/ve_pc/mlp{width}/b{batch}/n{steps}", "pc_sample", batch=batch, steps=steps, nfe=2 * steps,
        config=dict(network=f"MLP {depth}x{width} SiLU, 2-D", params=n_params, sde="VESDE", sigma_min=SIGMA_MIN,
                    sigma_max=SIGMA_MAX, predictor="reverse_diffusion", corrector="langevin", snr=snr,
                    peer="diffusers.ScoreSdeVeScheduler (step_correct + step_pred, as ScoreSdeVePipeline)"),
        compiled=compiled, ours=sums["ours"], peer=sums["peer"], status=status, note=note,
        what=f"diffusers ScoreSdeVeScheduler + the same MLP in torch, {2 * steps} evaluations",
        extra=dict(ours_finite=bool(np.all(np.isfinite(out_ours))), peer_finite=bool(np.all(np.isfinite(out_peer))),
                   ours_std=float(out_ours.std()), peer_std=float(out_peer.std()), bare_min_s=sums["bare"]["min_s"],
                   bare_over_ours=sums["bare"]["min_s"] / sums["ours"]["min_s"],
                   bare_over_ours_median=sums["bare"]["median_s"] / sums["ours"]["median_s"]))


def _load_k_sampling():
    """``k_diffusion.sampling`` without the package ``__init__`` (which imports its training stack)."""
    spec = importlib.util.find_spec("k_diffusion")
    try:
        importlib.import_module("torchvision.transforms.functional")
    except Exception:  # noqa: BLE001 (absent, or a wheel that does not import beside this torch)
        for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
        sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
    if "k_diffusion.sampling" not in sys.modules:
        root = str(pathlib.Path(spec.origin).parent)
        package = types.ModuleType("k_diffusion")
        package.__path__ = [root]
        package.__spec__ = importlib.machinery.ModuleSpec("k_diffusion", None, is_package=True)
        package.__spec__.submodule_search_locations = [root]
        sys.modules["k_diffusion"] = package
    return importlib.import_module("k_diffusion.sampling")


K_SAMPLERS = {"heun": ("edm_heun", {}, "sample_heun"),
              "dpmpp_2m": ("dpm_solver++", {"order": 2, "multistep": True, "grid": "karras"}, "sample_dpmpp_2m")}
"""Ours vs k-diffusion: name -> (our method, its options, k-diffusion's function)."""


def kdiff_case(ctx: Context, *, name: str, width: int, batch: int, steps: int, depth: int = 3):
    import torch

    K = _load_k_sampling()
    method, options, k_name = K_SAMPLERS[name]
    model, params, n_params = _mlp(width, depth)
    eps = 1e-5
    sde = sj.VESDE(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, N=1000)
    score = VEScore(params, SIGMA_MIN, SIGMA_MAX, model.apply)
    shape = (batch, 2)

    def ours(key, score):
        x, nfe = sj.sample(key, sde, score, shape, method=method, num_steps=steps, eps=eps, **options)
        return x, jnp.asarray(nfe)

    args = (jax.random.key(1), score)
    compiled = aot_compile(ours, *args)
    nfe = int(compiled(*args)[1])
    tscore = _torch_mlp(torch, params, width, depth)
    s_lo = SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** eps
    sigmas = K.get_sigmas_karras(steps + 1, s_lo, SIGMA_MAX, rho=7.0)   # steps + 1 levels, then 0
    fn = getattr(K, k_name)
    gen = torch.Generator().manual_seed(0)

    @torch.inference_mode()
    def peer():
        x = torch.randn(shape, generator=gen) * SIGMA_MAX
        return fn(lambda v, s: v + s[:, None] ** 2 * tscore(v, s * torch.ones(v.shape[0])), x, sigmas,
                  disable=True)

    sums, status, note = measure(ctx, {"ours": lambda: compiled(*args), "peer": lambda: (peer(), None)[1]})
    k_nfe = 2 * (steps + 1) - 1 if name == "heun" else steps + 1
    return _peer_record(
        ctx, f"peers/kdiff/{name}/mlp{width}/b{batch}/n{steps}", f"sample(method={method!r})", batch=batch,
        steps=steps, nfe=nfe, config=dict(network=f"MLP {depth}x{width} SiLU, 2-D", params=n_params, sde="VESDE",
                                          method=method, peer=f"k_diffusion.sampling.{k_name}", peer_nfe=k_nfe,
                                          **options),
        compiled=compiled, ours=sums["ours"], peer=sums["peer"], status=status, note=note,
        what=f"k-diffusion {k_name} on the same Karras grid + the same MLP in torch, {k_nfe} evaluations")


def likelihood_mixture(dim: int) -> "sj.toy.GaussianMixture":
    """The likelihood peer case's target: 4 anisotropic components in ``dim`` dimensions (fixed seed)."""
    rng = np.random.default_rng(dim)
    w = np.array([0.1, 0.2, 0.3, 0.4])
    means = 1.5 * rng.standard_normal((4, dim))
    return sj.toy.GaussianMixture(means - w @ means, rng.uniform(0.3, 0.8, (4, dim)), w)


def likelihood_scipy_case(ctx: Context, *, dim: int, batch: int, tol: float, eps: float = 1e-5):
    from scipy import integrate

    gmm = likelihood_mixture(dim)
    sde = sj.VPSDE()
    score = gmm.perturbed_score(sde)
    x = gmm.sample(jax.random.key(3), batch)
    exact = np.asarray(gmm.perturbed_log_prob(sde)(x, jnp.full((batch,), eps)))

    def ours(score, x):
        return sj.log_likelihood(None, sde, score, x, divergence="exact", rtol=tol, atol=tol, eps=eps)

    compiled = aot_compile(ours, score, x)
    logp_ours, nfe = jax.block_until_ready(compiled(score, x))

    @jax.jit
    def field(y, t):   # the batch's probability-flow drift and exact divergence: one device call
        xs = y[:-batch].reshape(batch, dim)
        tt = jnp.full((batch,), t, xs.dtype)

        def drift(v):
            f, g = sde.sde(v[None], tt[:1])
            return (f - 0.5 * (g ** 2)[:, None] * score(v[None], tt[:1]))[0]

        f = jax.vmap(drift)(xs)
        div = jax.vmap(lambda v: jnp.trace(jax.jacfwd(drift)(v)))(xs)
        return jnp.concatenate([f.reshape(-1), div])

    x_np = np.asarray(x, np.float32)

    def peer():   # the paper's likelihood.py: scipy RK45 over the flattened batch, on the host
        init = np.concatenate([x_np.reshape(-1), np.zeros(batch, np.float32)])
        sol = integrate.solve_ivp(lambda t, y: np.asarray(field(y.astype(np.float32), np.float32(t)), np.float64),
                                  (eps, float(sde.T)), init, rtol=tol, atol=tol, method="RK45")
        z = sol.y[:-batch, -1].reshape(batch, dim)
        return np.asarray(sde.prior_logp(jnp.asarray(z, jnp.float32))) + sol.y[-batch:, -1], sol.nfev

    logp_peer, peer_nfev = peer()
    err_ours, err_peer = np.abs(np.asarray(logp_ours) - exact), np.abs(logp_peer - exact)
    sums, status, note = measure(ctx, {"ours": lambda: compiled(score, x), "peer": lambda: (peer(), None)[1]})
    return _peer_record(
        ctx, f"peers/likelihood/gmm{dim}/exact/b{batch}/tol{tol:g}", "log_likelihood", batch=batch, steps=None,
        nfe=int(nfe), config=dict(target=f"{dim}-D Gaussian mixture, 4 components, exact perturbed score",
                                  sde="VPSDE", divergence="exact", solver="dopri5", rtol=tol, atol=tol, eps=eps,
                                  peer="scipy.integrate.solve_ivp RK45 on the host over the flattened batch "
                                       "(the paper's likelihood.py), one jitted drift + divergence call per "
                                       "evaluation"),
        compiled=compiled, ours=sums["ours"], peer=sums["peer"], status=status, note=note,
        what=f"scipy RK45 on the host, {peer_nfev} evaluations of the batch",
        extra=dict(peer_nfe=int(peer_nfev), ours_abs_err_mean=float(err_ours.mean()),
                   ours_abs_err_max=float(err_ours.max()), peer_abs_err_mean=float(err_peer.mean()),
                   peer_abs_err_max=float(err_peer.max())))


def unet_forward_case(ctx: Context, *, batch: int):
    import torch
    from diffusers import UNet2DModel

    from sde_jax import models

    cfg = models.get_config("small/ncsnpp")
    model, variables = models.init_model(jax.random.key(0, impl="rbg"), cfg, (1, 32, 32, 3))
    x = jax.random.uniform(jax.random.key(1), (batch, 32, 32, 3))
    labels = jnp.full((batch,), 1.0)
    compiled = aot_compile(lambda v, x, l: model.apply(v, x, l, train=False), variables, x, labels)
    peer_cfg = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64),
                    layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), time_embedding_type="fourier",
                    norm_num_groups=8, attention_head_dim=None)
    unet = UNet2DModel(**peer_cfg).eval()
    xt = torch.rand(batch, 3, 32, 32)
    st = torch.full((batch,), 1.0)

    @torch.inference_mode()
    def peer():
        return unet(xt, st).sample

    sums, status, note = measure(ctx, {"ours": lambda: compiled(variables, x, labels),
                                       "peer": lambda: (peer(), None)[1]})
    return _peer_record(
        ctx, f"peers/unet_forward/b{batch}", "small/ncsnpp apply", batch=batch, steps=None, nfe=1,
        config=dict(ours="small/ncsnpp (NCSN++: FIR resampling, BigGAN res-blocks, residual input pyramid)",
                    params=models.count_params(variables),
                    peer="diffusers.UNet2DModel", peer_config={k: v for k, v in peer_cfg.items()},
                    peer_params=int(sum(p.numel() for p in unet.parameters()))),
        compiled=compiled, ours=sums["ours"], peer=sums["peer"], status=status, note=note,
        what="diffusers UNet2DModel forward (closest configuration, see config)")


def run_peers(ctx: Context, p: dict) -> None:
    """The suite's peer cases (``p["peers"]``); recorded as ``"skipped"`` when a peer package is missing."""
    spec = p.get("peers")
    if not spec:
        return
    plan = [(f"peers/ve_pc/mlp{w}/b{b}/n{n}", ("torch", "diffusers"),
             lambda w=w, b=b, n=n: ve_pc_case(ctx, width=w, batch=b, steps=n)) for w, b, n in spec.get("ve_pc", [])]
    plan += [(f"peers/unet_forward/b{b}", ("torch", "diffusers"), lambda b=b: unet_forward_case(ctx, batch=b))
             for b in spec.get("unet_batches", [])]
    plan += [(f"peers/kdiff/{s}/mlp{w}/b{b}/n{n}", ("torch", "k_diffusion"),
              lambda s=s, w=w, b=b, n=n: kdiff_case(ctx, name=s, width=w, batch=b, steps=n))
             for s, w, b, n in spec.get("kdiff", [])]
    plan += [(f"peers/likelihood/gmm{d}/exact/b{b}/tol{t:g}", ("scipy",),
              lambda d=d, b=b, t=t: likelihood_scipy_case(ctx, dim=d, batch=b, tol=t))
             for d, b, t in spec.get("likelihood", [])]
    for cid, needs, fn in plan:
        if not ctx.wants(cid):
            continue
        missing = missing_peers(needs)
        if missing:
            ctx.add(record(ctx, id=cid, group="peers", entry_point="peer comparison", status="skipped",
                           note=f"not installed: {', '.join(missing)} (install: {INSTALL})"))
            continue
        guarded(ctx, cid, "peers", "peer comparison", fn)
