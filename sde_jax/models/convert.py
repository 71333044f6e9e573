"""Convert one of the paper's released checkpoints into an orbax checkpoint directory; load it back.

Command line::

    python -m sde_jax.models.convert --source score_sde_pytorch --config vp/cifar10_ddpmpp_continuous \\
        --checkpoint checkpoint_8.pth --out runs/ddpmpp_cont

writes

* ``OUT/checkpoints/<step>/``: a :class:`~sde_jax.training.TrainState` saved by
  :class:`~sde_jax.training.Checkpointer` at the checkpoint's training step: ``params`` = the raw weights
  (``model``), ``ema_params`` = the EMA weights (what the paper samples with; the raw weights again when the
  file has no EMA), ``opt_state`` = a fresh state of the paper's optimizer (:func:`sde_jax.models.configs.paper_optim`, or the config's own ``optim``; the
  released Adam moments are not carried over);
* ``OUT/config.json``: the model config (``training``, ``data``, ``model``, with the source's conventions from
  :func:`~sde_jax.models.config_for_source`) and the ``optim`` section that built ``opt_state``, so that a
  restore template can be built from the same config;
* ``OUT/conversion.json``: source, file, its SHA-256, step, what each state field holds.

:func:`load_variables` restores the network variables from such a directory (the image experiment's
``--config.eval.checkpoint_dir=OUT`` will restore the whole state the same way).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections

from sde_jax.models.checkpoint_import import WEIGHTS, read_checkpoint, variables_from_contents
from sde_jax.models.checkpoint_layout import SOURCES, checkpoint_layout, config_for_source, resolve_config
from sde_jax.models.configs import paper_optim
from sde_jax.models.registry import count_params, init_model

__all__ = ["convert_checkpoint", "load_variables", "state_template", "main",
           "CHECKPOINT_DIR", "CONFIG_FILE", "INFO_FILE"]

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"
INFO_FILE = "conversion.json"


def _sha256(path, chunk=1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def state_template(variables, optim=None):
    """An abstract :class:`~sde_jax.training.TrainState` (``jax.ShapeDtypeStruct`` leaves on the first device) for
    restoring a converted directory: ``variables`` abstract network variables, ``optim`` the ``optim`` section of
    its config.json (default :func:`sde_jax.models.configs.paper_optim`)."""
    from sde_jax import training   # lazy: the training package sits above the models

    tx, _ = training.get_optimizer(paper_optim() if optim is None else optim)
    state = training.TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=variables, ema_params=variables,
                                opt_state=jax.eval_shape(tx.init, variables))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])   # a sharding spares orbax a metadata pass
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state)


def convert_checkpoint(path: str, config, out_dir: str, *, source: str = "score_sde_pytorch") -> dict:
    """Import a released checkpoint (both weights) and write ``out_dir`` as described in the module docstring.

    Args:
      path: the checkpoint file (see :func:`~sde_jax.models.import_checkpoint`).
      config: the paper config it was trained with (name or ConfigDict).
      out_dir: output directory (created).
      source: ``'score_sde_pytorch'`` or ``'score_sde_flax'``.

    Returns:
      the ``conversion.json`` record (a dict).
    """
    from sde_jax import training

    cfg = config_for_source(config, source)
    contents = read_checkpoint(path, source)
    layout = checkpoint_layout(cfg, source)
    label = repr(config) if isinstance(config, str) else repr(cfg.model.name)
    params = variables_from_contents(contents, cfg, source, "model", label=label, path=path, layout=layout)
    has_ema = contents["ema"] is not None
    ema = (variables_from_contents(contents, cfg, source, "ema", label=label, path=path, layout=layout)
           if has_ema else params)
    optim = cfg.optim if "optimizer" in cfg.get("optim", {}) else paper_optim()
    tx, _ = training.get_optimizer(optim)
    step = int(contents["step"])
    state = training.init_train_state(params, tx).replace(step=jnp.asarray(step, jnp.int32), ema_params=ema)
    os.makedirs(out_dir, exist_ok=True)
    ckpt = training.Checkpointer(os.path.join(out_dir, CHECKPOINT_DIR))
    ckpt.save(step, state)
    ckpt.close()
    record = {"source": source, "checkpoint": os.path.abspath(path), "sha256": _sha256(path), "step": step,
              "config": config if isinstance(config, str) else None, "num_tensors": len(layout),
              "num_params": count_params(params), "params": "model weights",
              "ema_params": "EMA weights" if has_ema else "model weights (the file has no EMA)",
              "opt_state": "fresh (paper optimizer, optim section of config.json)"}
    with open(os.path.join(out_dir, CONFIG_FILE), "w") as f:
        json.dump({**cfg.to_dict(), "optim": ml_collections.ConfigDict(optim).to_dict()}, f, indent=2, default=list)
    with open(os.path.join(out_dir, INFO_FILE), "w") as f:
        json.dump(record, f, indent=2)
    return record


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def load_variables(directory: str, config=None, *, weights: str = "ema"):
    """The network variables stored in a directory written by :func:`convert_checkpoint`.

    Args:
      directory: the ``--out`` directory.
      config: ``None`` (default): ``directory/config.json``; else a config name or ConfigDict (the source's
        conventions from ``conversion.json`` are applied to it).
      weights: ``'ema'`` (``ema_params``) or ``'model'`` (``params``).

    Returns:
      ``{'params': ...}`` for ``init_model(key, cfg)``'s model (``cfg`` as above).
    """
    from sde_jax import training

    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {list(WEIGHTS)}; got {weights!r}.")
    stored = _read_json(os.path.join(directory, CONFIG_FILE))
    optim = ml_collections.ConfigDict(stored["optim"])
    if config is None:
        cfg = ml_collections.ConfigDict(stored)
    else:
        source = _read_json(os.path.join(directory, INFO_FILE))["source"]
        cfg = config_for_source(resolve_config(config), source)
    _, abstract = init_model(jax.random.key(0), cfg, abstract=True)
    template = state_template(abstract, optim)
    ckpt = training.Checkpointer(os.path.join(directory, CHECKPOINT_DIR))
    try:
        state = ckpt.restore(template)
    finally:
        ckpt.close()
    if state is None:
        raise FileNotFoundError(f"{directory}: no checkpoint under {CHECKPOINT_DIR}/.")
    return state.ema_params if weights == "ema" else state.params


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sde_jax.models.convert", description=__doc__.split("\n")[0])
    parser.add_argument("--source", choices=SOURCES, required=True)
    parser.add_argument("--config", required=True, help="paper config name, e.g. ve/cifar10_ncsnpp_continuous")
    parser.add_argument("--checkpoint", required=True, help="the .pth file or checkpoint_<N> file / directory")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args(argv)
    record = convert_checkpoint(args.checkpoint, args.config, args.out, source=args.source)
    print(f"converted {record['num_tensors']} tensors ({record['num_params']:,} parameters) of "
          f"{args.checkpoint} at step {record['step']} -> {os.path.join(args.out, CHECKPOINT_DIR)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
