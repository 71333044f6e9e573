"""toy2d configs: ``default`` (VP, DSM) and variants per SDE and loss; each module has ``get_config()``.

On the command line pass a file, ``--config=experiments/toy2d/configs/ve_dsm.py``; in Python, :func:`load`.
"""
import importlib
import pkgutil

NAMES = sorted(m.name for m in pkgutil.iter_modules(__path__))


def load(name: str):
    """``get_config()`` of the config module ``name`` (one of :data:`NAMES`)."""
    if name not in NAMES:
        raise ValueError(f"unknown toy2d config {name!r}; valid names: {NAMES}.")
    return importlib.import_module(f"{__name__}.{name}").get_config()
