"""What every image config shares: the experiment's fields beyond the network (data, training cadence, sampling,
evaluation), and the paper's configs (``sde_jax.models.get_config``) completed with the paper's data, training,
sampling and evaluation settings (yang-song/score_sde ``configs/default_*_configs.py``)."""
from __future__ import annotations

import ml_collections

from sde_jax import models

_DATASETS = {
    # paper dataset -> (tfds name, train split, eval split, crop_size, resize filter)
    "CIFAR10": ("cifar10", "train", "test", 0, "bilinear"),
    "CELEBA": ("celeb_a", "train", "validation", 140, "bilinear"),
    "LSUN": ("lsun/{category}", "train", "validation", 0, "bicubic"),
}


def experiment_fields(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Add the experiment's fields (with neutral defaults) to a config that has ``sde``/``model``/``data``/
    ``training``/``optim``."""
    d = c.data
    for k, v in dict(source="tfds", name="", path="", data_dir="", image_key="", label_key="label",
                     train_split="train", eval_split="test", random_flip=False, uniform_dequantization=False,
                     crop_size=0, resize_filter="bilinear", layout="replicated").items():
        if k not in d:
            d[k] = v
    t = c.training
    for k, v in dict(steps_per_call=5, log_every=50, checkpoint_every=10_000, snapshot_every=50_000,
                     eval_every=10_000, eval_batches=1, eval_batch_size=0, snapshot_samples=64, num_devices=0,
                     eps=1e-5).items():
        if k not in t:
            t[k] = v
    if "seed" not in c:
        c.seed = 42
    c.sampling = ml_collections.ConfigDict(dict(
        method="pc",                   # pc | ode
        predictor=_predictor(c), corrector="langevin" if c.sde.name == "vesde" else "none",
        snr=0.16, n_corrector_steps=1,
        num_steps=0,                   # 0: sde.N (PC) / adaptive (ODE)
        eps=1e-5 if c.sde.name == "vesde" else 1e-3, denoise=True,
        ode_solver="tsit5", ode_rtol=1e-5, ode_atol=1e-5))
    c.eval = ml_collections.ConfigDict(dict(
        checkpoint=0,                  # 0: the latest checkpoint
        checkpoint_dir="",             # a converted checkpoint (python -m sde_jax.models.convert) instead
        num_samples=50_000, batch_size=1024, grid_size=64,
        enable_bpd=True, bpd_num_examples=0,   # 0: the whole eval split
        bpd_batch_size=0,              # 0: eval.batch_size
        bpd_num_repeats=5, bpd_dequantization="uniform", bpd_solver="dopri5", bpd_rtol=1e-5, bpd_atol=1e-5,
        bpd_eps=1e-5, bpd_num_probes=1,
        classifier_steps=0,            # > 0: train the small data-set classifier (CPU configs) and score samples
        sample_metrics=True,           # FID/KID/IS/precision-recall of the samples (sde_jax.metrics)
        inception_weights="",          # the FID Inception weights file ('' : $SDE_JAX_INCEPTION_WEIGHTS; none:
                                       # the small classifier's features on the CPU configs, else no metrics)
        reference_stats="",            # a statistics file of the reference set ('': the train split, cached)
        reference_num_examples=0))     # 0: the whole train split
    c.inpaint = ml_collections.ConfigDict(dict(   # --mode inpaint (experiments.images.controllable)
        mask="right_half",             # right_half | left_half | bottom_half | top_half: the hidden half
        method="replacement",          # replacement (the paper's PC inpainter) | smc (sde_jax.samplers.smc_sample)
        num_particles=16,              # smc only
        num_images=0,                  # 0: the whole eval split
        grid_size=16))                 # columns of the grid (masked input / inpainting / original)
    c.guidance = ml_collections.ConfigDict(dict(   # --mode train_classifier / conditional
        scale=1.0,                     # > 0; 1: exact conditioning with the exact log p_t(y | x)
        samples_per_class=10,
        classifier_dir="",             # '': DIR/noise_classifier (written by --mode train_classifier)
        classifier=dict(               # the noise-conditional classifier: model fields, training and optim overrides
            model=_paper_classifier_model(),
            training=dict(batch_size=128, num_steps=50_000, steps_per_call=5, log_every=500, checkpoint_every=5_000,
                          eval_every=5_000, eval_batches=4),
            optim=dict(lr=2e-4, warmup=1000, ema_rate=0.999))))
    return c


def _paper_classifier_model() -> dict:
    """The paper's noise-conditional WRN-28-10 (``sde_jax.models.get_config('classifier/cifar10_wideresnet')``)."""
    return models.get_config("classifier/cifar10_wideresnet").model.to_dict()


def _predictor(c) -> str:
    """The paper's predictor: reverse diffusion for VE, Euler-Maruyama for continuous VP/sub-VP, ancestral
    sampling for discrete VP (DDPM)."""
    if c.sde.name == "vesde":
        return "reverse_diffusion"
    return "ancestral" if c.training.loss == "ddpm" else "euler_maruyama"


def paper(name: str, dataset: str | None = None) -> ml_collections.ConfigDict:
    """``sde_jax.models.get_config(name)`` with the paper's data/training/sampling/evaluation settings."""
    c = models.get_config(name)
    dataset = dataset or c.data.dataset
    experiment_fields(c)
    d = c.data
    if dataset in _DATASETS:
        tfds_name, train_split, eval_split, crop, resize = _DATASETS[dataset]
        d.source, d.name = "tfds", tfds_name.format(category=d.get("category", ""))
        d.train_split, d.eval_split, d.crop_size, d.resize_filter = train_split, eval_split, crop, resize
    else:   # FFHQ / CelebA-HQ: the paper reads its own TFRecords; here a folder of images (or an .npz)
        d.source, d.name, d.path = "folder", "", ""
        d.train_split = d.eval_split = "all"
    d.random_flip = True
    t = c.training
    if dataset == "CELEBA":
        c.sampling.snr = 0.17
    if c.data.image_size >= 128:   # the paper's LSUN/FFHQ/CelebA-HQ defaults
        t.batch_size, t.num_steps, t.checkpoint_every = 64, 2_400_001, 5_000
        c.sampling.snr = 0.075
        c.eval.batch_size = 512
    if c.data.image_size >= 1024:
        t.batch_size, t.reduce_mean = 8, True
        c.sampling.snr = 0.15
    t.eval_every = t.checkpoint_every
    c.eval.enable_bpd = dataset == "CIFAR10"
    return c
