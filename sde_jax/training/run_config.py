"""A run's ``config.json``: written once per workdir; a changed config on resume is refused, naming the fields.

Resuming a checkpoint under another config silently mixes two runs (a new learning rate, network width or loss
applied to a state trained under the old one), and overwriting ``config.json`` then hides that it happened.
:func:`write_config` is what experiments call instead of writing the file themselves: when the workdir already
holds a checkpoint and its ``config.json`` differs from the new config, it raises :class:`ConfigChangedError`
listing every changed field (``path: old -> new``), unless the config's ``resume_with_changes`` field (the
command line's ``--config.resume_with_changes=True``) or ``allow_changes=True`` says the change is meant. An
accepted change keeps the previous file as ``config.<n>.json`` beside the new one.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
from absl import logging

from sde_jax.training.loop import CHECKPOINT_DIR

__all__ = ["CONFIG_FILE", "RESUME_FIELD", "ConfigChangedError", "config_changes", "write_config"]

CONFIG_FILE = "config.json"
RESUME_FIELD = "resume_with_changes"
"""The config field that allows resuming with changed values (itself never compared)."""


class ConfigChangedError(ValueError):
    """The workdir holds a checkpoint of a run with another config; the message lists the changed fields."""


def _as_dict(config) -> dict:
    if hasattr(config, "to_json"):
        return json.loads(config.to_json())
    return json.loads(json.dumps(dict(config), default=list))


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``['training.lr: 0.002 -> 0.001', 'model.depth: (absent) -> 3', ...]`` between two nested dicts."""
    out = []
    for k in sorted(set(old) | set(new)):
        path = f"{prefix}{k}"
        a, b = old.get(k, _ABSENT), new.get(k, _ABSENT)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_changes(a, b, path + ".")
        elif a != b:
            out.append(f"{path}: {_show(a)} -> {_show(b)}")
    return out


_ABSENT = object()


def _show(v) -> str:
    return "(absent)" if v is _ABSENT else json.dumps(v)


def _has_checkpoint(directory: str) -> bool:
    return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def write_config(config, workdir: str, *, allow_changes: bool | None = None, filename: str = CONFIG_FILE,
                 checkpoint_dir: str = CHECKPOINT_DIR) -> list[str]:
    """Write ``config`` as ``workdir/config.json``, refusing to change the config of a run being resumed.

    Args:
      config: an ``ml_collections.ConfigDict`` (or a JSON-serialisable mapping).
      workdir: the run's directory (created).
      allow_changes: accept a changed config; default: the config's ``resume_with_changes`` field (False if
        absent).
      filename: the file name in ``workdir``.
      checkpoint_dir: the checkpoint sub-folder whose step folders mean "this run will resume".

    Returns:
      The changed fields (empty for a new run or an unchanged config).

    Raises:
      ConfigChangedError: ``workdir/<checkpoint_dir>`` holds a checkpoint, ``workdir/config.json`` differs
        from ``config`` and changes are not allowed. Nothing is written.
    """
    new = _as_dict(config)
    allow = bool(new.get(RESUME_FIELD, False)) if allow_changes is None else bool(allow_changes)
    path = os.path.join(workdir, filename)
    changes: list[str] = []
    if os.path.exists(path) and _has_checkpoint(os.path.join(workdir, checkpoint_dir)):
        with open(path) as f:
            old = json.load(f)
        changes = config_changes({k: v for k, v in old.items() if k != RESUME_FIELD},
                                 {k: v for k, v in new.items() if k != RESUME_FIELD})
        if changes and not allow:
            raise ConfigChangedError(
                f"{workdir} holds a checkpoint of a run with another config ({len(changes)} changed: "
                f"{'; '.join(changes)}). Use a new workdir, or resume with the new values on purpose with "
                f"--config.{RESUME_FIELD}=True (the old {filename} is then kept beside the new one).")
    if jax.process_index() != 0:
        return changes
    os.makedirs(workdir, exist_ok=True)
    if changes:
        stem, ext = os.path.splitext(filename)
        n = 1
        while os.path.exists(os.path.join(workdir, f"{stem}.{n}{ext}")):
            n += 1
        kept = os.path.join(workdir, f"{stem}.{n}{ext}")
        os.replace(path, kept)
        logging.warning("Resuming %s with a changed config (%s); the previous config is kept as %s.", workdir,
                        "; ".join(changes), kept)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(json.dumps(new, indent=2))
    os.replace(tmp, path)
    return changes
