"""Flax Linen score networks and the wrappers that turn their outputs into ``score_fn(x, t)``."""
from sde_jax.models.embeddings import GaussianFourierProjection, sinusoidal_embedding
from sde_jax.models.mlp import ScoreMLP
from sde_jax.models.wrappers import ScoreFn, get_score_fn, noise_std, time_labels
from sde_jax.models.configs import CONFIGS, config_names, get_config
from sde_jax.models.ddpm import DDPM
from sde_jax.models.ncsnpp import NCSNpp
from sde_jax.models.ncsnv2 import NCSNv2
from sde_jax.models.registry import (MODELS, count_params, get_model, get_model_score_fn, init_model,
                                     model_names)
from sde_jax.models.energy import EnergyFn, EnergyMLP, get_energy_fn  # noqa: E402
