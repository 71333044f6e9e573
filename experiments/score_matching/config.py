"""Default configuration of the score-matching experiment (override with ``--config.field=value``)."""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.targets = ("mixture", "banana")
    # Methods: keys of experiments.score_matching.METHODS (all by default).
    c.methods = ("ism", "fd_ism", "ssm", "fd_ssm", "ssm_vr", "fd_ssm_vr", "dsm",
                 "energy_ism", "energy_fd_ism", "energy_ism_reg", "energy_ssm", "energy_fd_ssm",
                 "energy_ssm_vr", "energy_fd_ssm_vr", "energy_dsm", "energy_fd_dsm")
    # Networks (no time input: one distribution).
    c.hidden = 32
    c.num_layers = 2
    # Training: Adam, fresh batches drawn from a pool of exact samples.
    c.num_steps = 600
    c.steps_per_call = 150          # steps per jitted lax.scan; calls after the first are timed
    c.batch_size = 128
    c.lr = 2e-3
    c.ema_rate = 0.99
    c.pool_size = 50_000
    # Losses.
    c.fd_eps = 0.1                  # finite-difference step length (Pang et al. 2020)
    c.projection = "rademacher"     # directions of every sliced loss (autodiff and FD alike)
    c.dsm_sigma = 0.1               # single-level DSM noise
    c.curvature_weight = 0.01       # Kingma & LeCun's lambda for energy_ism_reg (Hessian diagonal by FD)
    # Evaluation and figures.
    c.num_test = 4000
    c.quiver_points = 15            # arrows per axis
    c.dpi = 60
    return c
