"""Model configs (``ml_collections``) mirroring the paper's ``configs/`` (yang-song/score_sde), in the one
config dialect of this project.

``get_config('ve/cifar10_ncsnpp_continuous')`` is the twin of ``configs/ve/cifar10_ncsnpp_continuous.py``:
the same network fields and values under ``model``, the ``data`` fields the network depends on
(``image_size``, ``num_channels``, ``centered``), the SDE under ``sde`` and the loss under ``training.loss``
(which decides the labels the network is conditioned on). Where the paper's configs keep these elsewhere:

* ``training.sde = 'vesde'`` -> ``sde.name = 'vesde'``;
* ``model.{sigma_min, sigma_max, beta_min, beta_max, num_scales}`` -> ``sde.{sigma_min, sigma_max, beta_min,
  beta_max, N}``;
* ``training.continuous = True`` -> ``training.loss = 'dsm'``; ``False`` -> ``'smld'`` (VE) or ``'ddpm'`` (VP);
* ``model.ema_rate`` -> ``optim.ema_rate``.

``training`` and ``optim`` hold the paper's defaults (batch 128, Adam 2e-4 with 5000 warm-up steps and
clipping at 1, its EMA rate per config), so ``sde_jax.training.build(get_config(name))`` gives the paper's
training pieces; sampling and evaluation settings belong to the experiment configs. Fields we add, with defaults
that reproduce the paper: ``model.num_classes`` (0: no class conditioning), ``model.dtype`` ('float32' |
'bfloat16' compute dtype), ``model.remat`` (False), ``model.parameterization`` ('auto': the paper's).

``small/*`` configs are CPU-sized versions (nf=32, ch_mult=(1, 2, 2), one res-block per level, 32x32)
used by the tests and the benchmark.
"""
from __future__ import annotations

from typing import Callable

import ml_collections

from sde_jax import _checks as C

__all__ = ["CONFIGS", "get_config", "config_names", "paper_optim"]


_DISCRETE_LOSS = {"vesde": "smld", "vpsde": "ddpm"}


def paper_optim(ema_rate: float = 0.999) -> ml_collections.ConfigDict:
    """The paper's optimiser as a ``config.optim`` section (score_sde ``configs/default_*_configs.py``,
    ``losses.optimization_manager``): Adam with lr 2e-4, beta1 0.9, beta2 0.999, eps 1e-8, no weight decay,
    5000 linear warm-up steps, global-norm clipping at 1; EMA at ``ema_rate`` without warm-up."""
    return ml_collections.ConfigDict(dict(optimizer="adam", lr=2e-4, beta1=0.9, beta2=0.999, eps=1e-8,
                                          weight_decay=0.0, warmup=5000, grad_clip=1.0, ema_rate=ema_rate,
                                          ema_warmup=False))


def _base(dataset: str, image_size: int, sde: str, continuous: bool, *, centered: bool = False,
          sigma_max: float = 50.0, num_scales: int = 1000, dropout: float = 0.1) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.sde = ml_collections.ConfigDict(dict(name=sde, sigma_min=0.01, sigma_max=sigma_max, beta_min=0.1,
                                           beta_max=20.0, N=num_scales))
    # The paper's training and optimiser defaults (configs/default_*_configs.py): batch 128, 1.3M iterations,
    # Adam(2e-4, beta1 0.9, eps 1e-8), 5000 warm-up steps, global-norm clipping at 1, no weight decay; the VP
    # and sub-VP configs average the loss over dimensions (reduce_mean), the VE ones sum it.
    c.training = ml_collections.ConfigDict(dict(loss="dsm" if continuous else _DISCRETE_LOSS[sde], batch_size=128,
                                                num_steps=1_300_001, reduce_mean=sde != "vesde",
                                                likelihood_weighting=False))
    c.data = ml_collections.ConfigDict(dict(dataset=dataset, image_size=image_size, num_channels=3,
                                            centered=centered))
    c.model = ml_collections.ConfigDict(dict(dropout=dropout, embedding_type="fourier", num_classes=0,
                                             dtype="float32", remat=False, parameterization="auto"))
    c.optim = paper_optim()
    return c


_CIFAR = dict(dataset="CIFAR10", image_size=32)
_CELEBA = dict(dataset="CELEBA", image_size=64, sigma_max=90.0)
_LSUN = dict(dataset="LSUN", image_size=256, sigma_max=378.0, num_scales=2000, dropout=0.0)


def _ncsnpp(c, *, nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4, fir=True, progressive="none",
            progressive_input="residual", embedding_type=None, scale_by_sigma=True, ema_rate=0.999):
    m = c.model
    m.name = "ncsnpp"
    m.scale_by_sigma = scale_by_sigma
    c.optim.ema_rate = ema_rate
    m.normalization = "GroupNorm"
    m.nonlinearity = "swish"
    m.nf = nf
    m.ch_mult = tuple(ch_mult)
    m.num_res_blocks = num_res_blocks
    m.attn_resolutions = (16,)
    m.resamp_with_conv = True
    m.conditional = True
    m.fir = fir
    m.fir_kernel = (1, 3, 3, 1)
    m.skip_rescale = True
    m.resblock_type = "biggan"
    m.progressive = progressive
    m.progressive_input = progressive_input
    m.progressive_combine = "sum"
    m.attention_type = "ddpm"
    m.init_scale = 0.0
    m.fourier_scale = 16.0
    m.conv_size = 3
    if embedding_type is not None:
        m.embedding_type = embedding_type
    return c


def _ddpm(c, *, nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, scale_by_sigma=False, ema_rate=0.9999):
    m = c.model
    m.name = "ddpm"
    m.scale_by_sigma = scale_by_sigma
    c.optim.ema_rate = ema_rate
    m.normalization = "GroupNorm"
    m.nonlinearity = "swish"
    m.nf = nf
    m.ch_mult = tuple(ch_mult)
    m.num_res_blocks = num_res_blocks
    m.attn_resolutions = (16,)
    m.resamp_with_conv = True
    m.conditional = True
    m.conv_size = 3
    return c


def _ncsnv2(c, *, name="ncsnv2_64", num_scales=232, ema_rate=0.999, sigma_max=None, nf=128):
    m = c.model
    m.name = name
    m.scale_by_sigma = True
    c.sde.N = num_scales
    if sigma_max is not None:
        c.sde.sigma_max = sigma_max
    c.optim.ema_rate = ema_rate
    m.normalization = "InstanceNorm++"
    m.nonlinearity = "elu"
    m.nf = nf
    m.interpolation = "bilinear"
    return c


# --- VE (SMLD) ---------------------------------------------------------------------------------------------
def _ve_cifar10_ncsnpp():
    return _ncsnpp(_base(sde="vesde", continuous=False, **_CIFAR), embedding_type="positional")


def _ve_cifar10_ncsnpp_continuous():
    return _ncsnpp(_base(sde="vesde", continuous=True, **_CIFAR))


def _ve_cifar10_ncsnpp_deep_continuous():
    return _ncsnpp(_base(sde="vesde", continuous=True, **_CIFAR), num_res_blocks=8)


def _ve_cifar10_ddpm():
    return _ddpm(_base(sde="vesde", continuous=False, **_CIFAR), scale_by_sigma=True, ema_rate=0.999)


def _ve_celeba_ncsnpp():
    return _ncsnpp(_base(sde="vesde", continuous=False, **_CELEBA), embedding_type="positional")


def _ve_lsun_256(category: str, sigma_max: float, dataset: str = "LSUN"):
    def make():
        c = _base(sde="vesde", continuous=True, **dict(_LSUN, dataset=dataset, sigma_max=sigma_max))
        if category:
            c.data.category = category
        return _ncsnpp(c, ch_mult=(1, 1, 2, 2, 2, 2, 2), num_res_blocks=2, progressive="output_skip",
                       progressive_input="input_skip")
    return make


def _ve_1024(dataset: str):
    def make():
        c = _base(dataset=dataset, image_size=1024, sde="vesde", continuous=True, sigma_max=1348.0,
                  num_scales=2000, dropout=0.0)
        return _ncsnpp(c, nf=16, ch_mult=(1, 2, 4, 8, 16, 32, 32, 32), num_res_blocks=1,
                       progressive="output_skip", progressive_input="input_skip", ema_rate=0.9999)
    return make


def _ve_ncsnv2_cifar10():
    return _ncsnv2(_base(sde="vesde", continuous=False, **_CIFAR), num_scales=232)


def _ve_ncsnv2_celeba():
    return _ncsnv2(_base(sde="vesde", continuous=False, **_CELEBA), num_scales=500)


def _ve_ncsnv2_bedroom():
    c = _base(sde="vesde", continuous=False, **dict(_LSUN, image_size=128))
    c.data.category = "bedroom"
    return _ncsnv2(c, name="ncsnv2_128", num_scales=1086, sigma_max=190.0, ema_rate=0.9999)


# --- VP / sub-VP (DDPM) ------------------------------------------------------------------------------------
def _ddpmpp(sde: str, continuous: bool, num_res_blocks: int):
    def make():
        c = _base(sde=sde, continuous=continuous, centered=True, **_CIFAR)
        return _ncsnpp(c, num_res_blocks=num_res_blocks, fir=False, progressive_input="none",
                       embedding_type="positional", scale_by_sigma=False, ema_rate=0.9999)
    return make


def _vp_ncsnpp(sde: str, num_res_blocks: int):
    def make():
        c = _base(sde=sde, continuous=True, centered=True, **_CIFAR)
        return _ncsnpp(c, num_res_blocks=num_res_blocks, embedding_type="positional", scale_by_sigma=False,
                       ema_rate=0.9999)
    return make


def _vp_ddpm_cifar10(sde: str, continuous: bool):
    def make():
        return _ddpm(_base(sde=sde, continuous=continuous, centered=True, **_CIFAR))
    return make


def _vp_ddpm_256(dataset: str, category: str | None):
    def make():
        c = _base(sde="vpsde", continuous=False, centered=True, **dict(_LSUN, dataset=dataset))
        c.sde.N = 1000
        if category:
            c.data.category = category
        return _ddpm(c, ch_mult=(1, 1, 2, 2, 4, 4))
    return make


# --- CPU-sized --------------------------------------------------------------------------------------------
def _small(c):
    m = c.model
    m.nf = 32
    m.ch_mult = (1, 2, 2)
    m.num_res_blocks = 1
    return c


def _small_ncsnpp():
    return _small(_ve_cifar10_ncsnpp_continuous())


def _small_ddpmpp():
    return _small(_ddpmpp("vpsde", True, 4)())


def _small_ddpm():
    return _small(_vp_ddpm_cifar10("vpsde", True)())


def _small_ncsnv2():
    c = _ve_ncsnv2_cifar10()
    c.model.nf = 16
    return c


CONFIGS: dict[str, Callable[[], ml_collections.ConfigDict]] = {
    "ve/cifar10_ncsnpp": _ve_cifar10_ncsnpp,
    "ve/cifar10_ncsnpp_continuous": _ve_cifar10_ncsnpp_continuous,
    "ve/cifar10_ncsnpp_deep_continuous": _ve_cifar10_ncsnpp_deep_continuous,
    "ve/cifar10_ddpm": _ve_cifar10_ddpm,
    "ve/celeba_ncsnpp": _ve_celeba_ncsnpp,
    "ve/bedroom_ncsnpp_continuous": _ve_lsun_256("bedroom", 378.0),
    "ve/church_ncsnpp_continuous": _ve_lsun_256("church_outdoor", 380.0),
    "ve/celebahq_256_ncsnpp_continuous": _ve_lsun_256("", 348.0, dataset="CelebAHQ"),
    "ve/ffhq_256_ncsnpp_continuous": _ve_lsun_256("", 348.0, dataset="FFHQ"),
    "ve/celebahq_ncsnpp_continuous": _ve_1024("CelebAHQ"),
    "ve/ffhq_ncsnpp_continuous": _ve_1024("FFHQ"),
    "ve/ncsnv2/cifar10": _ve_ncsnv2_cifar10,
    "ve/ncsnv2/celeba": _ve_ncsnv2_celeba,
    "ve/ncsnv2/bedroom": _ve_ncsnv2_bedroom,
    "vp/cifar10_ddpmpp": _ddpmpp("vpsde", False, 4),
    "vp/cifar10_ddpmpp_continuous": _ddpmpp("vpsde", True, 4),
    "vp/cifar10_ddpmpp_deep_continuous": _ddpmpp("vpsde", True, 8),
    "vp/cifar10_ncsnpp_continuous": _vp_ncsnpp("vpsde", 4),
    "vp/cifar10_ncsnpp_deep_continuous": _vp_ncsnpp("vpsde", 8),
    "vp/ddpm/cifar10": _vp_ddpm_cifar10("vpsde", False),
    "vp/ddpm/cifar10_continuous": _vp_ddpm_cifar10("vpsde", True),
    "vp/ddpm/celebahq": _vp_ddpm_256("CelebAHQ", None),
    "vp/ddpm/church": _vp_ddpm_256("LSUN", "church_outdoor"),
    "subvp/cifar10_ddpm_continuous": _vp_ddpm_cifar10("subvpsde", True),
    "subvp/cifar10_ddpmpp_continuous": _ddpmpp("subvpsde", True, 4),
    "subvp/cifar10_ddpmpp_deep_continuous": _ddpmpp("subvpsde", True, 8),
    "subvp/cifar10_ncsnpp_continuous": _vp_ncsnpp("subvpsde", 4),
    "subvp/cifar10_ncsnpp_deep_continuous": _vp_ncsnpp("subvpsde", 8),
    "small/ncsnpp": _small_ncsnpp,
    "small/ddpmpp": _small_ddpmpp,
    "small/ddpm": _small_ddpm,
    "small/ncsnv2": _small_ncsnv2,
}


def config_names(prefix: str = "") -> list[str]:
    """Names of the shipped configs, optionally those starting with ``prefix`` (e.g. ``'small/'``)."""
    return sorted(n for n in CONFIGS if n.startswith(prefix))


def get_config(name: str) -> ml_collections.ConfigDict:
    """A fresh copy of the named config; raises ``ValueError`` listing the valid names."""
    return C.lookup(CONFIGS, name, "model config")()
