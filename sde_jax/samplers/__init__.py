"""Samplers: predictor-corrector and probability-flow ODE sampling of the reverse SDE, Langevin MCMC (ULA, MALA,
annealed Langevin dynamics) for a known score or log-density, and controllable generation (inpainting,
colourisation, linear inverse problems by replacement or sequential Monte Carlo, classifier guidance). Every
loop is a ``lax.scan`` (or a diffrax loop for the adaptive ODE solves, through :mod:`sde_jax.flow`)."""
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

__all__ = ["CORRECTORS", "Corrector", "PREDICTORS", "Predictor", "get_corrector", "get_predictor", "pc_sample",
           "time_grid", "langevin_update", "LangevinState", "MALAInfo", "MALAState", "annealed_langevin",
           "mala_init", "mala_step", "run_chain", "ula_init", "ula_step", "ode_sample", "tweedie_denoise",
           "check_grid", "grid_levels", "COLOUR_BASIS", "LinearMeasurement", "colour_measurement",
           "linear_measurement", "mask_measurement", "SMCInfo", "smc_sample", "METHODS", "GuidedScore",
           "Replacement", "colorize", "conditional_sample", "inpaint", "linear_inverse"]
