"""sub-VP SDE, continuous DSM."""
from experiments.toy2d.configs import default


def get_config():
    c = default.get_config()
    c.sde.name = "subvpsde"
    return c
