"""Import the paper's released checkpoints into our networks: ``import_checkpoint(path, config, source=...)``.

Two formats (:data:`~sde_jax.models.checkpoint_layout.SOURCES`):

* ``'score_sde_pytorch'``: the file yang-song/score_sde_pytorch's ``utils.save_checkpoint`` writes,
  ``torch.save({'model': state_dict, 'ema': {'decay', 'num_updates', 'shadow_params'}, 'optimizer', 'step'})``.
  ``model`` names carry DataParallel's ``module.`` prefix (stripped here); ``ema.shadow_params`` is a list
  in parameter order (the state dict's order) without the parameters that do not train (the Fourier
  features' ``W``, taken from ``model``). Read with ``torch.load(weights_only=True)``, NumPy scalars (the
  optimizer state holds one) and dtypes allow-listed and nothing else: no arbitrary code is unpickled. Needs
  PyTorch (``pip install 'sde_jax[torch]'``). A bare state dict (a dict of tensors) is read as ``model``
  weights.
* ``'score_sde_flax'``: a ``checkpoint_<N>`` file of yang-song/score_sde (``flax.training.checkpoints``), the
  msgpack of its ``State(step, optimizer{target, state}, lr, model_state, ema_rate, params_ema, rng)``; read
  with :func:`flax.serialization.msgpack_restore` (no ``flax.optim`` needed). ``weights='model'`` is
  ``optimizer.target``, ``'ema'`` is ``params_ema``. A directory means its highest-numbered ``checkpoint_<N>``.

Every tensor of the checkpoint must land on exactly one parameter of the model built from ``config`` and
every parameter must be filled: leftovers, missing names, a short EMA list and shape mismatches raise
``ValueError`` naming the first parameter that does not fit and both shapes.

Usage::

    variables = sde_jax.models.import_checkpoint("checkpoint_24.pth", "vp/cifar10_ddpmpp_continuous",
                                                 source="score_sde_pytorch", weights="ema")
    model = sde_jax.models.get_model(sde_jax.models.config_for_source("vp/cifar10_ddpmpp_continuous",
                                                                      "score_sde_pytorch"))
    out = model.apply(variables, x, labels)
"""
from __future__ import annotations

import os
import re

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from sde_jax.models.checkpoint_layout import (SOURCES, TRANSFORMS, Entry, checkpoint_layout, config_for_source)

__all__ = ["WEIGHTS", "import_checkpoint", "read_checkpoint", "variables_from_contents", "CheckpointContents"]

WEIGHTS = ("ema", "model")
"""``'ema'``: the exponential moving average the paper samples with; ``'model'``: the raw trained weights."""

_MAX_LISTED = 10


class CheckpointContents(dict):
    """What :func:`read_checkpoint` returns: ``{'model': {name: array}, 'ema': list | dict | None, 'step': int}``.

    ``ema`` is a list of arrays in parameter order (PyTorch ``shadow_params``) or a ``{name: array}`` dict
    (Flax ``params_ema``); ``None`` when the file has none.
    """


# --- readers --------------------------------------------------------------------------------------------------
def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError("Reading score_sde_pytorch checkpoints needs PyTorch: pip install 'sde_jax[torch]' "
                          "(the CPU wheel is enough).") from None
    return torch


def _numpy_safe_globals():
    """The NumPy globals a pickled NumPy scalar needs (as NumPy 1.x and 2.x name them): nothing executable."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:   # NumPy 1.x
        from numpy.core.multiarray import scalar
    dtype_classes = {type(np.dtype(c)) for c in "?bhilqBHILQefdgFDG"}
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype,
            *sorted(dtype_classes, key=lambda c: c.__name__)]


def _to_numpy(t) -> np.ndarray:
    return t.detach().cpu().float().numpy() if t.is_floating_point() else t.detach().cpu().numpy()


def _read_torch(path: str) -> CheckpointContents:
    torch = _torch()
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # torch raises pickle.UnpicklingError (or RuntimeError) for anything not allowed
        raise ValueError(f"{path}: not a score_sde_pytorch checkpoint that loads with weights_only=True "
                         f"(only tensors, containers, numbers, strings and NumPy scalars are read; no code is "
                         f"unpickled): {str(e).splitlines()[-1] if str(e) else type(e).__name__}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict with 'model' and 'ema'; got {type(obj).__name__}.")
    if "model" not in obj and obj and all(torch.is_tensor(v) for v in obj.values()):
        obj = {"model": obj}                                   # a bare state dict
    if "model" not in obj:
        raise ValueError(f"{path}: no 'model' entry; found {sorted(map(str, obj))}.")
    model = {}
    for k, v in obj["model"].items():
        if not torch.is_tensor(v):
            raise ValueError(f"{path}: model entry {k!r} is a {type(v).__name__}, not a tensor.")
        model[k[len("module."):] if k.startswith("module.") else k] = _to_numpy(v)
    ema = None
    if isinstance(obj.get("ema"), dict) and "shadow_params" in obj["ema"]:
        ema = [_to_numpy(t) for t in obj["ema"]["shadow_params"]]
    step = obj.get("step", 0)
    return CheckpointContents(model=model, ema=ema, step=int(step) if np.ndim(step) == 0 else 0)


def _flax_file(path: str) -> str:
    if os.path.isdir(path):
        found = [(int(m.group(1)), f) for f in os.listdir(path) if (m := re.fullmatch(r"checkpoint_(\d+)", f))]
        if not found:
            raise FileNotFoundError(f"{path}: no checkpoint_<N> file in this directory.")
        return os.path.join(path, max(found)[1])
    return path


def _flatten(tree) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


def _params_tree(tree):
    return tree["params"] if isinstance(tree, dict) and set(tree) == {"params"} else tree


def _read_flax(path: str) -> CheckpointContents:
    from flax import serialization

    path = _flax_file(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        state = serialization.msgpack_restore(data)
    except Exception as e:
        raise ValueError(f"{path}: not a Flax msgpack checkpoint ({type(e).__name__}: {e}).") from None
    if not isinstance(state, dict) or "params_ema" not in state or "optimizer" not in state:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: expected the paper's State with 'optimizer' and 'params_ema'; found {found}.")
    model = _flatten(_params_tree(state["optimizer"]["target"]))
    ema = _flatten(_params_tree(state["params_ema"]))
    step = np.asarray(state.get("step", 0))
    return CheckpointContents(model=model, ema=ema, step=int(step) if step.size == 1 else 0)


def read_checkpoint(path: str, source: str) -> CheckpointContents:
    """Read a ``source`` checkpoint into NumPy arrays (no mapping): see :class:`CheckpointContents`.

    Raises:
      ValueError: unknown ``source`` or a file that is not such a checkpoint. FileNotFoundError: no file.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)}; got {source!r}.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path!r}.")
    return _read_torch(path) if source == "score_sde_pytorch" else _read_flax(path)


# --- matching ---------------------------------------------------------------------------------------------------
def _listed(names):
    names = list(names)
    more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(repr(n) for n in names[:_MAX_LISTED]) + more


def _mismatch(what, layout, tensors: dict, config_name):
    """``ValueError`` naming the first entry (layout order) that is absent or of another shape, with both shapes,
    plus the lists of missing and leftover names; ``None`` when every entry fits and nothing is left over."""
    expected = {e.name for e in layout}
    first = next((e for e in layout if e.name not in tensors or tuple(tensors[e.name].shape) != e.shape), None)
    leftovers = [n for n in tensors if n not in expected]
    if first is None and not leftovers:
        return None
    missing = [e.name for e in layout if e.name not in tensors]
    parts = [f"{what} does not fit config {config_name}."]
    if first is not None:
        got = tuple(tensors[first.name].shape) if first.name in tensors else "absent"
        parts.append(f"First parameter that does not fit: {first.name!r}: checkpoint shape {got}, "
                     f"the config's model expects {first.shape}.")
    if missing:
        parts.append(f"{len(missing)} missing: {_listed(missing)}.")
    if leftovers:
        parts.append(f"{len(leftovers)} not used by the model (leftovers): {_listed(leftovers)}.")
    return ValueError(" ".join(parts))


def _ema_by_name(ema_list, layout, model_names, config_name):
    """Name the PyTorch EMA's ``shadow_params``: they are ``model.parameters()`` with ``requires_grad``, i.e. the
    trainable tensors in the state dict's own order (a state dict lists parameters in ``parameters()`` order;
    these models have no buffers)."""
    by_name = {e.name: e for e in layout}
    trainable = [by_name[n] for n in model_names if by_name[n].trainable]
    if len(ema_list) != len(trainable):
        raise ValueError(f"ema.shadow_params has {len(ema_list)} tensors; the model of config {config_name} has "
                         f"{len(trainable)} trainable parameters: checkpoint and config do not fit.")
    for e, a in zip(trainable, ema_list):
        if tuple(a.shape) != e.shape:
            raise ValueError(f"ema.shadow_params does not fit config {config_name}. First parameter that does not "
                             f"fit: {e.name!r}: checkpoint shape {tuple(a.shape)}, the config's model expects "
                             f"{e.shape}.")
    return {e.name: a for e, a in zip(trainable, ema_list)}


def _map_tensors(tensors: dict[str, np.ndarray], layout: list[Entry]) -> dict:
    """``{'params': tree}`` from checkpoint tensors already checked against ``layout``."""
    flat = {e.path: jnp.asarray(TRANSFORMS[e.transform][0](np.asarray(tensors[e.name], dtype=np.float32)))
            for e in layout}
    return {"params": traverse_util.unflatten_dict(flat)}


def _config_label(config):
    return repr(config) if isinstance(config, str) else f"{config.model.name!r} (ConfigDict)"


def import_checkpoint(path: str, config, *, source: str = "score_sde_pytorch", weights: str = "ema",
                      return_config: bool = False):
    """Variables for our network from one of the paper's released checkpoints.

    Args:
      path: a score_sde_pytorch ``.pth`` file, or a score_sde ``checkpoint_<N>`` file (or its directory).
      config: the paper config the checkpoint was trained with: a name from
        :func:`~sde_jax.models.config_names` (e.g. ``'ve/cifar10_ncsnpp_continuous'``) or a ConfigDict.
      source: ``'score_sde_pytorch'`` or ``'score_sde_flax'``.
      weights: ``'ema'`` (the moving average the paper samples with) or ``'model'`` (the raw weights).
      return_config: also return the config the variables belong to (``config`` with the source's
        conventions, :func:`~sde_jax.models.config_for_source`; it matters for NCSNv2).

    Returns:
      ``variables = {'params': ...}`` (float32) for ``init_model(key, cfg)``'s model, where ``cfg`` is
      ``config_for_source(config, source)``; with ``return_config``, ``(variables, cfg)``.

    Raises:
      ValueError: bad ``source``/``weights``; a file that is not such a checkpoint; a checkpoint that does not
        fit the config (wrong architecture or size), naming the first parameter that does not fit and both
        shapes, and listing missing and leftover names. TypeError: ``config`` neither a name nor a ConfigDict.
      FileNotFoundError: no such file. ImportError: PyTorch missing for a ``.pth`` file.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)}; got {source!r}.")
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {list(WEIGHTS)}; got {weights!r}.")
    cfg = config_for_source(config, source)
    contents = read_checkpoint(path, source)
    variables = variables_from_contents(contents, cfg, source, weights, label=_config_label(config), path=path)
    return (variables, cfg) if return_config else variables


def variables_from_contents(contents: CheckpointContents, cfg, source: str, weights: str, *, label: str = "",
                            path: str = "checkpoint", layout: list[Entry] | None = None) -> dict:
    """The mapping step of :func:`import_checkpoint` on what :func:`read_checkpoint` returned (``cfg`` already
    through :func:`config_for_source`; ``layout`` its :func:`checkpoint_layout`, computed when ``None``):
    lets a caller read a large file once and take both weights."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {list(WEIGHTS)}; got {weights!r}.")
    label = label or _config_label(cfg)
    layout = checkpoint_layout(cfg, source) if layout is None else layout
    err = _mismatch(f"The checkpoint {path!r} ({source}, 'model' weights)", layout, contents["model"], label)
    if err is not None:
        raise err
    tensors = contents["model"]
    if weights == "ema":
        ema = contents["ema"]
        if ema is None:
            raise ValueError(f"{path}: the checkpoint has no EMA weights; use weights='model'.")
        if isinstance(ema, list):     # PyTorch: trainable parameters in order; W from 'model'
            tensors = {**tensors, **_ema_by_name(ema, layout, list(contents["model"]), label)}
        else:
            err = _mismatch(f"The checkpoint {path!r} ({source}, 'ema' weights)", layout, ema, label)
            if err is not None:
                raise err
            tensors = ema
    return _map_tensors(tensors, layout)
