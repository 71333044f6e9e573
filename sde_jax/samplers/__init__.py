"""Samplers: predictor-corrector and probability-flow ODE sampling of the reverse SDE, and Langevin MCMC
(ULA, MALA, annealed Langevin dynamics) for a known score or log-density. Every loop is a ``lax.scan``."""
from sde_jax.samplers.correctors import CORRECTORS, Corrector, get_corrector
from sde_jax.samplers.pc import pc_sample, time_grid
from sde_jax.samplers.predictors import PREDICTORS, Predictor, get_predictor

__all__ = ["CORRECTORS", "Corrector", "PREDICTORS", "Predictor", "get_corrector", "get_predictor", "pc_sample",
           "time_grid"]
from sde_jax.samplers.langevin import (  # noqa: E402
    LangevinState,
    MALAInfo,
    MALAState,
    annealed_langevin,
    mala_init,
    mala_step,
    run_chain,
    ula_init,
    ula_step,
)
from sde_jax.samplers.ode import ode_sample, tweedie_denoise  # noqa: E402

__all__ += ["LangevinState", "MALAInfo", "MALAState", "annealed_langevin", "mala_init", "mala_step", "run_chain",
            "ula_init", "ula_step", "ode_sample", "tweedie_denoise"]
from sde_jax.samplers.tempering import (  # noqa: E402
    ReplicaExchangeInfo,
    ReplicaExchangeState,
    geometric_betas,
    replica_exchange_init,
    replica_exchange_step,
)
from sde_jax.samplers.diagnostics import (  # noqa: E402
    autocorrelation,
    burn_in,
    effective_sample_size,
    rhat_trace,
    split_rhat,
)

__all__ += ["ReplicaExchangeInfo", "ReplicaExchangeState", "geometric_betas", "replica_exchange_init",
            "replica_exchange_step", "autocorrelation", "burn_in", "effective_sample_size", "rhat_trace",
            "split_rhat"]
