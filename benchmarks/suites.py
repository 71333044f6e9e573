"""Suites: which cases run, at which sizes. ``smoke`` (a few tiny cases, 1 repeat; the test suite runs it),
``quick`` (every case kind on the toy MLP, a few minutes on 2 CPU cores), ``full`` (the sweeps: batch 1 to
4096, steps 10 to 10,000, plus the image-model benchmark), ``peers`` (the same work in diffusers / k-diffusion,
:mod:`benchmarks.peers`) and its tiny ``peers-smoke``."""
from __future__ import annotations

from benchmarks.cases import FAST_SAMPLERS, PC_PAIRS

__all__ = ["SUITES"]

SUITES = {
    "smoke": dict(
        network="mlp-tiny", repeats=1, min_repeats=1, max_spread=float("inf"), retries=0, budget_s=0.0,
        pc_batches=[8], pc_batch_steps=4,
        fast=[("dpm_solver++", 4, {})], fast_batches=[8],
        ula_batches=[8], ula_batch_steps=10,
        train_batches=[8], train_k=[2],
        compile_steps=[10, 100], compile_trials=1, compile_batch=8, compile_entry_points=["ula"],
        metrics=dict(network="tiny-cnn", batches=[8], num_batches=2),
    ),
    "quick": dict(
        network="mlp", repeats=5, min_repeats=3, max_spread=0.2, retries=1, budget_s=3.0, retime_budget_s=10.0,
        pc_pairs=PC_PAIRS, pairs_batch=256, pairs_steps=20,
        pc_batches=[1, 16, 256, 1024], pc_batch_steps=20,
        pc_steps=[10, 100], pc_steps_batch=256,
        ode=[("euler", 20), ("heun", 20), ("tsit5", None)], ode_batches=[256], ode_tol=1e-3,
        fast=FAST_SAMPLERS, fast_batches=[256],
        ula_batches=[1, 256, 1024], ula_batch_steps=100,
        mala_batches=[256], mala_steps=100,
        ald_batches=[256], ald=(10, 5),
        train_batches=[256, 1024], train_k=[1, 10],
        multidevice=dict(batch=256, k=5, timeout=300),
        lik_batches=[64], lik_divergences=["exact", "hutchinson"], lik_tol=1e-3,
        compile_steps=[100, 10000], compile_trials=2, compile_batch=256,
        compile_entry_points=["pc_sample", "ode_sample_euler", "ula", "ula_trajectory", "make_train_fn"],
        extra_batches=[1, 8], extra_steps=10,
        loss_batches=[256], loss_pairs=["ssm", "ssm_vr", "ism", "energy_ssm", "energy_ssm_vr", "energy_ism",
                                         "energy_dsm"],
    ),
    "full": dict(
        network="mlp", repeats=7, min_repeats=3, max_spread=0.1, retries=1, budget_s=20.0, retime_budget_s=60.0,
        pc_pairs=PC_PAIRS, pairs_batch=256, pairs_steps=100,
        pc_batches=[1, 4, 16, 64, 256, 1024, 4096], pc_batch_steps=100,
        pc_steps=[10, 100, 1000, 10000], pc_steps_batch=256,
        pc_none_batches=[1, 256, 4096],
        ode=[("euler", 100), ("heun", 100), ("tsit5", None), ("dopri5", None)], ode_batches=[1, 256, 4096],
        ode_tol=1e-5,
        fast=FAST_SAMPLERS, fast_batches=[1, 256, 4096],
        ula_batches=[1, 4, 16, 64, 256, 1024, 4096], ula_batch_steps=1000,
        ula_steps=[10, 100, 1000, 10000], ula_steps_batch=256,
        mala_batches=[1, 256, 4096], mala_steps=1000,
        ald_batches=[1, 256, 4096], ald=(10, 100),
        train_batches=[64, 256, 1024, 4096], train_k=[1, 10, 100],
        multidevice=dict(batch=256, k=10, timeout=600),
        lik_batches=[64, 256], lik_divergences=["exact", "hutchinson"], lik_tol=1e-5,
        compile_steps=[100, 1000, 10000], compile_trials=2, compile_batch=256,
        models=dict(config="small/ncsnpp", batch_sizes=[1, 8]),
        extra_batches=[1, 8, 32], extra_steps=100,
        metrics=dict(network="inception", batches=[200], num_batches=2),
        loss_batches=[64, 256, 1024], loss_pairs=["ssm", "ssm_vr", "ism", "energy_ssm", "energy_ssm_vr",
                                                  "energy_ism", "energy_dsm"],
        loss_image=dict(config="small/ncsnpp"), loss_image_batches=[8], loss_image_pairs=["ssm", "ssm_vr"],
    ),
    # The same work in PyTorch peers (benchmarks/peers.py; needs the 'peers' extra, else recorded 'skipped').
    "peers": dict(
        network="mlp-tiny", repeats=5, min_repeats=3, max_spread=0.2, retries=1, budget_s=10.0, retime_budget_s=30.0,
        peers=dict(ve_pc=[(256, 64, 1000), (64, 16, 1000)], unet_batches=[16],
                   kdiff=[("heun", 256, 64, 17), ("dpmpp_2m", 256, 64, 20)],
                   likelihood=[(10, 256, 1e-5), (2, 256, 1e-5)]),
    ),
    "peers-smoke": dict(
        network="mlp-tiny", repeats=1, min_repeats=1, max_spread=float("inf"), retries=0, budget_s=0.0,
        peers=dict(ve_pc=[(16, 4, 5)], kdiff=[("heun", 16, 4, 3), ("dpmpp_2m", 16, 4, 3)],
                   likelihood=[(2, 8, 1e-5)]),
    ),
}
"""Suite name -> parameters. ``network``: the default network spec; ``repeats``/``min_repeats``/``budget_s``:
timed calls per program (fewer for long cases, never below ``min_repeats``); ``max_spread``/``retries``/
``retime_budget_s``: the stability gate (a case too spread is re-timed, with more repeats, for up to
``retime_budget_s`` seconds before it is refused). Other keys are read by the case runners (``cases``, ``train_cases``, ``compile_cases``,
``metrics_cases``: ``metrics`` = feature network, batch sizes and batches per call of extract_features;
``loss_cases``: ``loss_pairs``/``loss_batches`` for the MLP, ``loss_image`` with ``loss_image_pairs``/
``loss_image_batches`` for an image network);
``extra_*`` size the sampling cases of networks given with ``--network``; ``peers`` (:mod:`benchmarks.peers`):
``ve_pc`` (MLP width, batch, steps), ``unet_batches``, ``kdiff`` (sampler, MLP width, batch, steps),
``likelihood`` (dimension, batch, tolerance)."""
