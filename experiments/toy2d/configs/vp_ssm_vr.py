"""VP SDE trained by variance-reduced sliced score matching (SSM-VR)."""
from experiments.toy2d.configs import default


def get_config():
    c = default.get_config()
    c.training.loss = "ssm_vr"
    c.training.eps = 1e-3
    return c
