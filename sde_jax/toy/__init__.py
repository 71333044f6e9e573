"""Targets with exact answers: Gaussian mixtures in any dimension and classic 2-D densities."""
from sde_jax.toy.mixture import (GaussianMixture, NoiseConditionalScore, PerturbedClassLogProb, PerturbedLogProb,
                               PerturbedScore)

__all__ = ["GaussianMixture", "NoiseConditionalScore", "PerturbedClassLogProb", "PerturbedLogProb", "PerturbedScore"]
from sde_jax.toy.planar import TARGETS_2D, Banana, Checkerboard, Rings, SwissRoll, TwoMoons, make_target  # noqa: E402

__all__ += ["TARGETS_2D", "Banana", "Checkerboard", "Rings", "SwissRoll", "TwoMoons", "make_target"]
