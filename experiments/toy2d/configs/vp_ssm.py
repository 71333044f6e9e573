"""VP SDE trained by sliced score matching on the perturbed data (Song et al. 2020), Rademacher projections."""
from experiments.toy2d.configs import default


def get_config():
    c = default.get_config()
    c.training.loss = "ssm"
    c.training.projection = "rademacher"
    c.training.eps = 1e-3
    return c
