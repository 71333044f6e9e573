"""Flax Linen score networks, the one registry that builds them from a config, and the one factory that
turns their outputs into ``score_fn(x, t)``."""
from sde_jax.models.embeddings import GaussianFourierProjection, sinusoidal_embedding
from sde_jax.models.mlp import ScoreMLP
from sde_jax.models.wrappers import PARAMETERIZATIONS, ScoreFn, get_score_fn, scales_by_sigma
from sde_jax.models.configs import CONFIGS, config_names, get_config
from sde_jax.models.ddpm import DDPM
from sde_jax.models.ncsnpp import NCSNpp
from sde_jax.models.ncsnv2 import NCSNv2
from sde_jax.models.registry import (MODELS, count_params, get_model, init_model, input_shape_of, model_names,
                                     register_model)
# The paper's released checkpoints (issue 13): layouts, import, conversion to an orbax directory.
from sde_jax.models.checkpoint_layout import SOURCES, checkpoint_layout, config_for_source
from sde_jax.models.checkpoint_import import import_checkpoint, read_checkpoint
from sde_jax.models.convert import convert_checkpoint, load_variables
