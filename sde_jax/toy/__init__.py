"""Targets with exact answers: Gaussian mixtures in any dimension and classic 2-D densities."""
from sde_jax.toy.mixture import GaussianMixture, PerturbedLogProb, PerturbedScore

__all__ = ["GaussianMixture", "PerturbedLogProb", "PerturbedScore"]
