"""VE SDE, discrete SMLD/NCSN loss over N = 1000 geometric noise levels (discrete labels N - 1 - i)."""
from experiments.toy2d.configs import ve_dsm


def get_config():
    c = ve_dsm.get_config()
    c.training.loss = "smld"
    c.model.embedding = "sinusoidal"   # integer level labels
    c.model.log_labels = False
    return c
