"""Default configuration of the Langevin experiment (override with ``--config.field=value``)."""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    # Banana: ULA vs MALA at one step size where ULA is visibly biased.
    c.banana_s = 2.0
    c.banana_b = 0.25
    c.banana_step_size = 0.2
    c.banana_chains = 4000
    c.banana_steps = 1000
    # Trajectory figure: a few chains from far away, thinned.
    c.traj_chains = 6
    c.traj_steps = 400
    c.traj_every = 2
    c.traj_step_size = 0.05
    # Mixture 0.2 N((-5,-5), I) + 0.8 N((5,5), I): plain Langevin vs annealed Langevin (Song & Ermon 2019, Fig. 3).
    c.mixture_chains = 5000
    c.mixture_init_half_width = 8.0
    c.ula_step_size = 0.1
    c.ula_steps = 1000
    c.ald_sigma_max = 20.0
    c.ald_sigma_min = 1.0
    c.ald_levels = 10
    c.ald_steps_each = 300  # Song & Ermon use 100; at 100 the 0.2-mode weight is biased by ~+0.015 here
    c.ald_step_size = 0.1
    # MALA on the mixture from the same uniform start (exact per mode, keeps the initial split of chains).
    c.mala_mixture_step_size = 0.5
    # MCMC diagnostics (ESS, split R-hat, burn-in) from over-dispersed uniform starts, trajectories thinned.
    c.diag_chains = 64
    c.diag_steps = 2000
    c.diag_every = 2
    c.diag_checkpoints = 20
    c.diag_init_half_width = 8.0
    # Replica exchange (parallel tempering over MALA) vs annealed Langevin on the mixture.
    c.pt_replicas = 8
    c.pt_beta_min = 0.01
    c.pt_step_size = 0.5            # MALA step of replica r: pt_step_size / beta_r
    c.pt_every = 8                  # weights measured every pt_every steps (MALA: pt_replicas x as many)
    c.pt_blocks = 24                # ... pt_blocks times: up to 192 steps (1544 evaluations per sample)
    c.ald_steps_grid = (3, 10, 30, 100, 300)
    c.dpi = 60
    return c
