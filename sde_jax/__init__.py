"""sde_jax: score-based generative modelling through SDEs in JAX/Flax."""
from sde_jax import toy
from sde_jax.sdes import (
    SDE,
    VESDE,
    VPSDE,
    SubVPSDE,
    probability_flow_drift,
    reverse_discretize,
    reverse_sde,
)

__version__ = "0.1.0"
