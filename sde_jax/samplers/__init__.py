"""Samplers: predictor-corrector and probability-flow ODE sampling of the reverse SDE, the fast samplers (DDIM,
EDM's Heun and stochastic samplers, DPM-Solver/DPM-Solver++, adaptive-step reverse SDE), and Langevin MCMC (ULA,
MALA, annealed Langevin dynamics) for a known score or log-density, and controllable generation (inpainting,
colourisation, linear inverse problems by replacement or sequential Monte Carlo, classifier guidance);
:func:`sample` is the one entry point over the reverse-time samplers. Every loop is a ``lax.scan`` (or a ``while_loop``/diffrax loop for the adaptive
solves)."""
from sde_jax.samplers.correctors import CORRECTORS, Corrector, get_corrector
from sde_jax.samplers.langevin import (LangevinState, MALAInfo, MALAState, annealed_langevin, langevin_update,
                                       mala_init, mala_step, run_chain, ula_init, ula_step)
from sde_jax.samplers.ode import ode_sample
from sde_jax.samplers.pc import check_grid, grid_levels, pc_sample, time_grid
from sde_jax.samplers.predictors import PREDICTORS, Predictor, get_predictor
from sde_jax.samplers.measurements import (COLOUR_BASIS, LinearMeasurement, colour_measurement, linear_measurement,
                                           mask_measurement)
from sde_jax.samplers.smc import SMCInfo, smc_sample
from sde_jax.samplers.conditional import (METHODS, GuidedScore, Replacement, colorize, conditional_sample, inpaint,
                                          linear_inverse)
from sde_jax.sdes import tweedie_denoise
from sde_jax.samplers.fixed_grid import GRIDS, sampling_times
from sde_jax.samplers.ddim import ddim_sample
from sde_jax.samplers.edm import edm_heun_sample, edm_stochastic_sample
from sde_jax.samplers.dpm_solver import dpm_solver_pp_sample, dpm_solver_sample
from sde_jax.samplers.adaptive_sde import adaptive_sde_sample
from sde_jax.samplers.api import SAMPLERS, sample, sampler_options

from sde_jax.samplers.tempering import (ReplicaExchangeInfo, ReplicaExchangeState, geometric_betas,
                                        replica_exchange_init, replica_exchange_step)
from sde_jax.samplers.diagnostics import autocorrelation, burn_in, effective_sample_size, rhat_trace, split_rhat

__all__ = ["CORRECTORS", "Corrector", "PREDICTORS", "Predictor", "get_corrector", "get_predictor", "pc_sample",
           "time_grid", "langevin_update", "LangevinState", "MALAInfo", "MALAState", "annealed_langevin",
           "mala_init", "mala_step", "run_chain", "ula_init", "ula_step", "ode_sample", "tweedie_denoise",
           "check_grid", "grid_levels", "COLOUR_BASIS", "LinearMeasurement", "colour_measurement",
           "linear_measurement", "mask_measurement", "SMCInfo", "smc_sample", "METHODS", "GuidedScore",
           "Replacement", "colorize", "conditional_sample", "inpaint", "linear_inverse",
           "GRIDS", "sampling_times", "ddim_sample", "edm_heun_sample", "edm_stochastic_sample", "dpm_solver_sample",
           "dpm_solver_pp_sample", "adaptive_sde_sample", "SAMPLERS", "sample", "sampler_options",
           "ReplicaExchangeInfo", "ReplicaExchangeState", "geometric_betas", "replica_exchange_init",
           "replica_exchange_step", "autocorrelation", "burn_in", "effective_sample_size", "rhat_trace",
           "split_rhat"]
