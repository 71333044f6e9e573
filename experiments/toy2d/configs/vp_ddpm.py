"""VP SDE, discrete DDPM loss (Ho et al. 2020) over N = 1000 levels, noise-prediction parameterisation."""
from experiments.toy2d.configs import default


def get_config():
    c = default.get_config()
    c.training.loss = "ddpm"
    c.training.reduce_mean = True
    return c
