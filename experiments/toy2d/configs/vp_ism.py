"""VP SDE trained by implicit score matching (Hyvärinen 2005; exact Jacobian trace, cheap in 2-D)."""
from experiments.toy2d.configs import default


def get_config():
    c = default.get_config()
    c.training.loss = "ism"
    c.training.eps = 1e-3
    return c
