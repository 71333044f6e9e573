"""toy2d, the default experiment: ``python -m experiments.toy2d --workdir DIR`` trains an MLP score model on a
2-D Gaussian mixture, samples it with the PC and ODE samplers and scores everything against exact answers
(see :mod:`experiments.toy2d.experiment`)."""
from experiments.toy2d.configs.default import get_config
from experiments.toy2d.experiment import TARGETS, run, score_error

__all__ = ["get_config", "run", "score_error", "TARGETS"]
