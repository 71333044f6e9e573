"""Config files of the image experiment; :func:`load` reads one by file name (``"digits"``, ``"cifar10:NAME"``)."""
from __future__ import annotations

import importlib

NAMES = ("digits", "mnist_small", "cifar10", "celeba", "lsun", "ffhq")


def load(name: str):
    """``get_config()`` of ``experiments/images/configs/<file>.py``; ``"file:arg"`` passes ``arg`` (the paper config
    name for the paper files)."""
    file, _, arg = name.partition(":")
    if file not in NAMES:
        raise ValueError(f"unknown image config {file!r}; valid names: {list(NAMES)}.")
    module = importlib.import_module(f"experiments.images.configs.{file}")
    return module.get_config(arg) if arg else module.get_config()
