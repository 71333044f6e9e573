"""Score matching on exact 2-D targets: ISM, DSM, SSM, SSM-VR and their finite-difference twins, for score
networks and energy models. ``python -m experiments.score_matching --workdir DIR``."""
from experiments.score_matching.config import get_config
from experiments.score_matching.experiment import METHODS, run

__all__ = ["METHODS", "get_config", "run"]
