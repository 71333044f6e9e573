"""Samplers: predictor-corrector and probability-flow ODE sampling of the reverse SDE, and Langevin MCMC
(ULA, MALA, annealed Langevin dynamics) for a known score or log-density. Every loop is a ``lax.scan`` (or a
diffrax loop for the adaptive ODE solves, through :mod:`sde_jax.flow`)."""
from sde_jax.samplers.correctors import CORRECTORS, Corrector, get_corrector
from sde_jax.samplers.langevin import (LangevinState, MALAInfo, MALAState, annealed_langevin, langevin_update,
                                       mala_init, mala_step, run_chain, ula_init, ula_step)
from sde_jax.samplers.ode import ode_sample
from sde_jax.samplers.pc import pc_sample, time_grid
from sde_jax.samplers.predictors import PREDICTORS, Predictor, get_predictor
from sde_jax.sdes import tweedie_denoise

__all__ = ["CORRECTORS", "Corrector", "PREDICTORS", "Predictor", "get_corrector", "get_predictor", "pc_sample",
           "time_grid", "langevin_update", "LangevinState", "MALAInfo", "MALAState", "annealed_langevin",
           "mala_init", "mala_step", "run_chain", "ula_init", "ula_step", "ode_sample", "tweedie_denoise"]
