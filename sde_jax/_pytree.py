"""``pytree_dataclass``: frozen dataclasses registered as pytrees whose tree structure includes the class.

``flax.struct.dataclass`` registers through ``jax.tree_util.register_dataclass``, whose tree structures
compare *equal* across different classes with the same field names; ``equinox.filter_jit`` (and any cache
keyed on tree equality) can then reuse a program traced for ``VPSDE`` when called with a ``SubVPSDE``.
A custom pytree node compares by class, so that cannot happen here. Unflattening bypasses ``__init__`` and
``__post_init__`` (no re-validation of traced values).
"""
from __future__ import annotations

import dataclasses

import jax


def static_field(**kwargs):
    """A dataclass field that is part of the tree structure (static under jit), not a leaf."""
    return dataclasses.field(metadata={"static": True}, **kwargs)


def pytree_dataclass(cls):
    """Decorator: frozen dataclass + pytree node (leaves: fields not marked ``static_field``)."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    data = tuple(f.name for f in fields if not f.metadata.get("static", False))
    meta = tuple(f.name for f in fields if f.metadata.get("static", False))

    def flatten_with_keys(obj):
        children = tuple((jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in data)
        return children, tuple(getattr(obj, n) for n in meta)

    def unflatten(aux, children):
        obj = object.__new__(cls)
        for name, value in zip(data, children):
            object.__setattr__(obj, name, value)
        for name, value in zip(meta, aux):
            object.__setattr__(obj, name, value)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten)
    cls.replace = lambda self, **updates: dataclasses.replace(self, **updates)
    return cls
