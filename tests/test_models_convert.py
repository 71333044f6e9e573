"""Converting a released checkpoint into an orbax directory (``python -m sde_jax.models.convert``) and loading it
back (``load_variables``). Uses the Flax format (no PyTorch needed); tests/test_models_checkpoint_torch.py runs
the command on a PyTorch file."""
import json
import os

import jax
import numpy as np
import pytest

from checkpoint_helpers import STEP, flax_checkpoint
from sde_jax import models, training
from sde_jax.models import convert, import_checkpoint


def _equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_convert_then_load_gives_back_the_imported_weights(tmp_path):
    """The command writes OUT/checkpoints/<step> (a TrainState: params = raw weights, ema_params = EMA weights,
    a fresh paper-optimizer state), OUT/config.json (model config + optim section) and OUT/conversion.json;
    ``load_variables`` returns exactly what ``import_checkpoint`` returns, for both weights, with the config
    read from config.json or given by name; the TrainState restores at the checkpoint's step."""
    _, path, _, _ = flax_checkpoint(tmp_path, "small/ddpm")
    out = str(tmp_path / "converted")
    args = ["--source", "score_sde_flax", "--config", "small/ddpm", "--checkpoint", path, "--out", out]
    assert convert.main(args) == 0
    _equal(models.load_variables(out), import_checkpoint(path, "small/ddpm", source="score_sde_flax"))
    _equal(models.load_variables(out, "small/ddpm", weights="model"),
           import_checkpoint(path, "small/ddpm", source="score_sde_flax", weights="model"))
    with open(os.path.join(out, convert.CONFIG_FILE)) as f:
        stored = json.load(f)
    assert stored["model"] == json.loads(models.get_config("small/ddpm").model.to_json())
    assert stored["optim"] == models.get_config("small/ddpm").optim.to_dict()   # the paper optimizer, EMA 0.9999
    with open(os.path.join(out, convert.INFO_FILE)) as f:
        info = json.load(f)
    assert (info["step"], info["source"], info["num_params"]) == (STEP, "score_sde_flax", 1_097_187)
    assert len(info["sha256"]) == 64
    ckpt = training.Checkpointer(os.path.join(out, convert.CHECKPOINT_DIR))
    assert ckpt.all_steps() == [STEP]
    ckpt.close()
    with pytest.raises(ValueError, match="weights must be one of"):
        models.load_variables(out, weights="raw")


def test_state_template_matches_a_training_state(key):
    """The restore template has the structure of ``training.init_train_state`` with the paper optimizer."""
    _, abstract = models.init_model(key, models.get_config("small/ddpm"), abstract=True)
    template = convert.state_template(abstract)
    tx, _ = training.get_optimizer(models.configs.paper_optim())
    real = jax.eval_shape(lambda v: training.init_train_state(v, tx), abstract)
    assert jax.tree.structure(template) == jax.tree.structure(real)
    assert all(a.shape == b.shape and a.dtype == b.dtype
               for a, b in zip(jax.tree.leaves(template), jax.tree.leaves(real)))
