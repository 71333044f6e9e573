"""Default configuration of the noise-level study (override with ``--config.field=value``)."""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.targets = ("mixture", "banana")
    # The grid: sigma_1 in {max pairwise distance (NCSNv2 technique 1), 1, half the max distance}, L levels,
    # loss weighting lambda(sigma) = sigma^p with p = 2 (Song & Ermon 2019) or p = -2.
    c.sigma_max_rules = ("dmax", "one", "half_dmax")
    c.num_levels = (3, 10, 30)
    c.anneal_powers = (2.0, -2.0)
    c.sigma_min = 0.1
    # Network and training (noise-conditional ScoreMLP, score = out / sigma: NCSNv2 technique 3).
    c.hidden = 64
    c.num_layers = 2
    c.num_train = 5000            # training set: d_max is computed on it, batches are drawn from it
    c.num_steps = 1000
    c.batch_size = 128
    c.lr = 2e-3
    c.ema_rate = 0.99
    # Annealed Langevin: a fixed budget of total_steps updates split over the L levels (T = total_steps / L),
    # step size from NCSNv2 technique 4 (as annealed_langevin's step_size: 2 epsilon), Tweedie denoising.
    c.total_steps = 300
    c.num_samples = 2000
    c.num_reference_pairs = 10
    c.dpi = 60
    return c
