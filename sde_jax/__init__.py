"""sde_jax: score-based generative modelling through SDEs in JAX/Flax."""
from sde_jax import models
from sde_jax import losses, training
from sde_jax import data, flow, metrics, parallel, samplers, toy
from sde_jax.sdes import (
    SDE,
    VESDE,
    VPSDE,
    SubVPSDE,
    probability_flow_drift,
    reverse_discretize,
    reverse_sde,
    tweedie_denoise,
)
from sde_jax.likelihood import bits_per_dim, bits_per_dim_offset, decode_latent, log_likelihood

from sde_jax.samplers import annealed_langevin, mala_step, ode_sample, pc_sample, run_chain, sample, ula_step
from sde_jax.samplers import colorize, conditional_sample, inpaint, linear_inverse

__version__ = "0.1.0"
