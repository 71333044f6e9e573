"""Noise-level study: NCSN training + annealed Langevin for sigma_1, L and the loss weighting, against
Song & Ermon 2020's rules. ``python -m experiments.noise_levels --workdir DIR``."""
from experiments.noise_levels.config import get_config
from experiments.noise_levels.experiment import run

__all__ = ["get_config", "run"]
