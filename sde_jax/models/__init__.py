"""Flax Linen score networks and the wrappers that turn their outputs into ``score_fn(x, t)``."""
