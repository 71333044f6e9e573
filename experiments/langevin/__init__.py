"""Langevin sampling with exact scores: ``python -m experiments.langevin --workdir DIR``."""
from experiments.langevin.config import get_config
from experiments.langevin.experiment import run

__all__ = ["get_config", "run"]
