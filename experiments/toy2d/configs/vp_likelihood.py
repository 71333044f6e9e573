"""VP SDE, DSM with the likelihood weighting g(t)^2 and importance sampling of t (Song et al. 2021b)."""
from experiments.toy2d.configs import default


def get_config():
    c = default.get_config()
    c.training.likelihood_weighting = True
    c.training.importance_sampling = True
    return c
