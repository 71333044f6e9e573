"""Samplers: predictor-corrector and probability-flow ODE sampling of the reverse SDE, and Langevin MCMC
(ULA, MALA, annealed Langevin dynamics) for a known score or log-density. Every loop is a ``lax.scan``."""
from sde_jax.samplers.correctors import CORRECTORS, Corrector, get_corrector
from sde_jax.samplers.pc import pc_sample, time_grid
from sde_jax.samplers.predictors import PREDICTORS, Predictor, get_predictor

__all__ = ["CORRECTORS", "Corrector", "PREDICTORS", "Predictor", "get_corrector", "get_predictor", "pc_sample",
           "time_grid"]
