"""Our fast samplers against reference implementations, driven by the same exact mixture denoiser and the same
noise, in float64:

* always: an independent NumPy implementation (written here from the published update rules: EDM Algorithms 1
  and 2, DPM-Solver++ Algorithm 2, DDIM's Eq. 12 in EDM's variables) on the same sigma schedule;
* when installed (``pip install -e '.[torch]'`` and ``pip install --no-deps k-diffusion==0.1.1.post1``):
  k-diffusion's own samplers (``sample_euler``,
  ``sample_heun`` (with and without churn), ``sample_dpmpp_2m``, ``sample_euler_ancestral`` (DDIM's eta),
  ``sample_dpm_2``, ``sample_dpmpp_2s_ancestral`` with eta = 0) with the denoiser written in torch. Their
  ``k_diffusion/sampling.py`` is loaded by path (the package ``__init__`` imports training code that needs
  torchvision / clean-fid); torchvision is stubbed if it does not import (the samplers never use it).

Conventions matched: k-diffusion's ``sigmas`` end with 0 and its last step is a plain Euler step to 0, i.e. the
denoiser at the last level: our ``denoise=True``. The schedule is ours (Karras, from ``sigma(T)`` to
``sigma(eps)``), checked against ``get_sigmas_karras``. The VP SDE is used on our side, so the test also covers
the change of variables ``x^ = x / a(t)``: our samplers never see sigma directly, only ``score_fn(x, t)``.
"""
import importlib
import importlib.machinery
import importlib.util
import pathlib
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_jax as sj
from sde_jax.samplers import fixed_grid
from sampler_targets import MIXTURE

SDE = sj.VPSDE()
SHAPE, NUM_STEPS, EPS = (6, 2), 9, 1e-3
# The mixture in float64 (its float32 parameters, exactly): every side computes in float64 from the same values.
MIXTURE64 = jax.tree.map(lambda a: np.asarray(a, np.float64), MIXTURE)
MEANS, VARS, WEIGHTS = MIXTURE64.means, MIXTURE64.stds**2, MIXTURE64.weights


def _denoiser_np(x, sigma):
    """Exact ``E[x_0 | x_0 + sigma n]`` of the mixture (per-coordinate Gaussian components)."""
    v = VARS[None] + sigma**2                                                  # [1, K, d]
    diff = x[:, None, :] - MEANS[None]
    logits = np.log(WEIGHTS) - 0.5 * np.sum(np.log(2 * np.pi * v) + diff**2 / v, -1)
    r = np.exp(logits - logits.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    return np.sum(r[..., None] * (MEANS[None] + VARS[None] / v * diff), 1)


def _setup(x64_key=0):
    """Our schedule (with the final 0), the starting point in EDM's variables, and the per-step noise our
    samplers draw for ``key``."""
    key = jax.random.key(x64_key)
    ts = fixed_grid.sampling_times(SDE, NUM_STEPS, EPS, "karras", 7.0)
    sigmas = np.append(np.asarray(SDE.edm_sigma(ts)), 0.0)
    key_prior, key_loop = fixed_grid.prior_and_loop_keys(key)
    x_T = SDE.prior_sampling(key_prior, SHAPE)
    x_hat = np.asarray(x_T) / float(SDE.edm_scale(ts[0]))
    noise = [np.asarray(fixed_grid.step_noise(jax.random.fold_in(key_loop, i), x_T)) for i in range(NUM_STEPS + 1)]
    return key, sigmas, x_hat, noise


def _ours(key, method, **kw):
    x, _ = sj.sample(key, SDE, MIXTURE64.perturbed_score(SDE), SHAPE, method=method, num_steps=NUM_STEPS, eps=EPS,
                     grid="karras", **kw)
    return np.asarray(x)


# ---------------------------------------------------------------------------------------------------------
# The NumPy reference (published update rules on a sigma schedule ending in 0).


def _np_heun(x, sigmas, noise=None, s_churn=0.0, s_noise=1.0, second_order=True):
    n = len(sigmas) - 1
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        gamma = min(s_churn / n, np.sqrt(2) - 1) if noise is not None else 0.0
        s_hat = s * (1 + gamma)
        if gamma > 0:
            x = x + s_noise * np.sqrt(s_hat**2 - s**2) * noise[i]
        d = (x - _denoiser_np(x, s_hat)) / s_hat
        x_e = x + (s_next - s_hat) * d
        if s_next == 0 or not second_order:
            x = x_e
        else:
            x = x + (s_next - s_hat) * 0.5 * (d + (x_e - _denoiser_np(x_e, s_next)) / s_next)
    return x


def _np_dpmpp_2m(x, sigmas):
    prev = None
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = _denoiser_np(x, s)
        if s_next == 0:
            x = d
        else:
            h = np.log(s) - np.log(s_next)
            use = d if prev is None else d + (d - prev) * h / (2 * (np.log(sigmas[i - 1]) - np.log(s)))
            x = (s_next / s) * x - np.expm1(-h) * use
        prev = d
    return x


def _np_ddim(x, sigmas, eta, noise):
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = _denoiser_np(x, s)
        c = eta * s_next * np.sqrt(1 - (s_next / s) ** 2)
        x = d + np.sqrt(s_next**2 - c**2) * (x - d) / s + (c * noise[i] if s_next > 0 else 0.0)
    return x


@pytest.mark.slow
@pytest.mark.parametrize("case", ["euler", "heun", "heun_churn", "dpmpp_2m", "ddim_eta"])
@pytest.mark.compile_bound
def test_against_numpy_reference(x64, case):
    """Same schedule, same start, same noise: equal to 1e-10 (float64)."""
    key, sigmas, x_hat, noise = _setup()
    if case == "euler":
        ours, ref = _ours(key, "ddim"), _np_heun(x_hat, sigmas, second_order=False)
    elif case == "heun":
        ours, ref = _ours(key, "edm_heun"), _np_heun(x_hat, sigmas)
    elif case == "heun_churn":
        ours = _ours(key, "edm_stochastic", S_churn=4.0, S_noise=1.003)
        ref = _np_heun(x_hat, sigmas, noise=noise, s_churn=4.0, s_noise=1.003)
    elif case == "dpmpp_2m":
        ours, ref = _ours(key, "dpm_solver++", order=2, multistep=True), _np_dpmpp_2m(x_hat, sigmas)
    else:
        ours, ref = _ours(key, "ddim", eta=0.6), _np_ddim(x_hat, sigmas, 0.6, noise)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------------------
# k-diffusion itself.


def _kdiffusion():
    torch = pytest.importorskip("torch")
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        pytest.skip("k-diffusion is not installed (pip install -e '.[torch]'; "
                    "pip install --no-deps k-diffusion==0.1.1.post1)")
    try:
        importlib.import_module("torchvision.transforms.functional")
    except Exception:  # noqa: BLE001 (absent, or a wheel that does not import beside this torch)
        for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
        sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
    if "k_diffusion.sampling" not in sys.modules:
        root = str(pathlib.Path(spec.origin).parent)
        package = types.ModuleType("k_diffusion")            # the package without its __init__ (training code)
        package.__path__ = [root]
        package.__spec__ = importlib.machinery.ModuleSpec("k_diffusion", None, is_package=True)
        package.__spec__.submodule_search_locations = [root]
        sys.modules["k_diffusion"] = package
    return torch, importlib.import_module("k_diffusion.sampling")


def _torch_denoiser(torch):
    means, var, logw = (torch.tensor(MEANS, dtype=torch.float64), torch.tensor(VARS, dtype=torch.float64),
                        torch.log(torch.tensor(WEIGHTS, dtype=torch.float64)))

    def model(x, sigma):
        v = var[None] + sigma[:, None, None] ** 2
        diff = x[:, None, :] - means[None]
        logits = logw - 0.5 * torch.sum(torch.log(2 * torch.pi * v) + diff**2 / v, -1)
        r = torch.softmax(logits, -1)
        return torch.sum(r[..., None] * (means[None] + var[None] / v * diff), 1)

    return model


class _Noise:
    """Hands out our per-step noise, in order, as k-diffusion draws it."""

    def __init__(self, torch, noise):
        self.torch, self.noise, self.i = torch, noise, 0

    def __call__(self, *args, **kwargs):
        z = self.torch.tensor(self.noise[self.i], dtype=self.torch.float64)
        self.i += 1
        return z


@pytest.mark.parametrize("case", ["euler", "heun", "heun_churn", "dpmpp_2m", "euler_ancestral", "dpm_2",
                                  "dpmpp_2s"])
@pytest.mark.compile_bound
def test_against_k_diffusion(x64, case, monkeypatch, request):
    """k-diffusion's samplers (float64 torch) equal ours to 1e-10 with the same schedule, start and noise; its
    Karras schedule equals ours to 1e-12."""
    torch, K = _kdiffusion()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)                                     # get_sigmas_karras' linspace
    request.addfinalizer(lambda: torch.set_default_dtype(old))
    key, sigmas, x_hat, noise = _setup()
    ks = K.get_sigmas_karras(NUM_STEPS + 1, sigmas[-2], sigmas[0], rho=7.0).numpy()
    np.testing.assert_allclose(ks, sigmas, rtol=1e-12)
    model, x = _torch_denoiser(torch), torch.tensor(x_hat, dtype=torch.float64)
    sig = torch.tensor(sigmas, dtype=torch.float64)
    run = lambda f, **kw: f(model, x, sig, disable=True, **kw).numpy()   # noqa: E731
    if case == "euler":
        ours, ref = _ours(key, "ddim"), run(K.sample_euler)
    elif case == "heun":
        ours, ref = _ours(key, "edm_heun"), run(K.sample_heun)
    elif case == "heun_churn":
        monkeypatch.setattr(K.torch, "randn_like", _Noise(torch, noise))
        ours, ref = _ours(key, "edm_stochastic", S_churn=4.0, S_noise=1.003), run(K.sample_heun, s_churn=4.0,
                                                                                   s_noise=1.003)
    elif case == "dpmpp_2m":
        ours, ref = _ours(key, "dpm_solver++", order=2, multistep=True), run(K.sample_dpmpp_2m)
    elif case == "euler_ancestral":
        ours, ref = _ours(key, "ddim", eta=0.6), run(K.sample_euler_ancestral, eta=0.6,
                                                     noise_sampler=_Noise(torch, noise))
    elif case == "dpm_2":
        ours, ref = _ours(key, "dpm_solver", order=2, multistep=False), run(K.sample_dpm_2)
    else:
        ours, ref = _ours(key, "dpm_solver++", order=2, multistep=False), run(K.sample_dpmpp_2s_ancestral, eta=0.0)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_k_diffusion_third_order_multistep_measures_second_order(x64):
    """The deviation stated in :mod:`sde_jax.samplers.dpm_solver`, measured on k-diffusion itself:
    ``sample_dpmpp_3m_sde(eta=0)`` (its DPM-Solver++(3M)) converges to the exact flow map at slope < 2.6 on the
    order-test problem (measured 2.2-2.4 at 100-400 steps; ours 3.2 there), from the same start."""
    torch, K = _kdiffusion()
    from test_fast_samplers import _ORDER_EPS, _ORDER_SHAPE, _reference_flow
    score, x0, ref = _reference_flow(SDE)
    model = _torch_denoiser(torch)
    a_T, a_eps = float(SDE.edm_scale(1.0)), float(SDE.edm_scale(_ORDER_EPS))
    errs, steps = [], [50, 100, 200]
    for n in steps:
        ts = fixed_grid.sampling_times(SDE, n, _ORDER_EPS, "logsnr")
        sig = torch.tensor(np.asarray(SDE.edm_sigma(ts)), dtype=torch.float64)
        x = torch.tensor(np.asarray(x0) / a_T, dtype=torch.float64)
        out = K.sample_dpmpp_3m_sde(model, x, sig, disable=True, eta=0.0).numpy() * a_eps
        errs.append(float(np.max(np.abs(out - np.asarray(ref)))))
    slope = np.polyfit(np.log(1.0 / np.array(steps)), np.log(errs), 1)[0]
    assert slope < 2.6, (slope, errs)
