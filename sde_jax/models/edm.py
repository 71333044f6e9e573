"""EDM's preconditioning (Karras et al. 2022, Sec. 5 and Table 1) as a parameterisation of the one score factory.

Any network ``F(x, label)`` of :data:`sde_jax.models.MODELS` becomes the denoiser

.. math::

    D(\\hat x; \\sigma) = c_{skip}(\\sigma)\\,\\hat x + c_{out}(\\sigma)\\, F\\big(c_{in}(\\sigma)\\,\\hat x;\\
    c_{noise}(\\sigma)\\big),

    c_{skip} = \\frac{\\sigma_d^2}{\\sigma^2 + \\sigma_d^2},\\quad
    c_{out} = \\frac{\\sigma\\,\\sigma_d}{\\sqrt{\\sigma^2 + \\sigma_d^2}},\\quad
    c_{in} = \\frac{1}{\\sqrt{\\sigma^2 + \\sigma_d^2}},\\quad c_{noise} = \\tfrac14 \\log\\sigma,

in EDM's variables of the SDE (``x^ = x / a(t)``, ``sigma = sigma(t)``; :meth:`sde_jax.SDE.edm_sigma`), and the
score the rest of the library sees is ``score(x, t) = (D - x^) / (a(t) sigma^2)`` (Tweedie's formula read
backwards). ``sigma_d`` (``sigma_data``) is the data's standard deviation (EDM: 0.5 for images in
``[-1, 1]``). The network is conditioned on ``c_noise`` only, so one EDM network serves every SDE: the SDE is
just a time parameterisation of ``sigma``. Networks that take the log of their labels themselves (NCSN++ with
Fourier features, ``ScoreMLP(log_labels=True)``) are given ``sigma^{1/4}``, whose log is ``c_noise``.

Why a parameterisation and not a wrapper module: the preconditioning needs the SDE's ``a(t)`` and ``sigma(t)``,
which live in the score factory, and as a parameterisation it applies to every registered network with one
config field (``model.parameterization = "edm"``, ``model.sigma_data``), keeps the network's parameter tree (and
so its checkpoints) unchanged, and trains with any loss of :mod:`sde_jax.losses` (EDM's own is ``"edm"``).
The EDM loss weight ``lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2`` is ``1 / c_out^2``: the
network's effective target ``(y - c_skip x^) / c_out`` has unit variance for data of std ``sigma_d``.
"""
from __future__ import annotations

import jax.numpy as jnp

from sde_jax.sdes import batch_broadcast

__all__ = ["edm_preconditioning", "edm_labels", "edm_inputs", "edm_output"]


def edm_preconditioning(sigma, sigma_data):
    """``(c_skip, c_out, c_in, c_noise)`` at noise levels ``sigma`` (any shape; module docstring)."""
    var = sigma**2 + sigma_data**2
    return sigma_data**2 / var, sigma * sigma_data / jnp.sqrt(var), 1.0 / jnp.sqrt(var), 0.25 * jnp.log(sigma)


def edm_labels(sf, t):
    """The network's labels ``c_noise(sigma(t))`` (or ``sigma^{1/4}`` for networks that take the log)."""
    sigma = sf.sde.edm_sigma(t)
    return sigma**0.25 if sf.log_labels else edm_preconditioning(sigma, sf.sigma_data)[3]


def edm_inputs(sf, x, t):
    """The network's input ``c_in x^ = c_in x / a(t)``."""
    a, sigma = sf.sde.edm_scale(t), sf.sde.edm_sigma(t)
    return x * batch_broadcast((edm_preconditioning(sigma, sf.sigma_data)[2] / a).astype(x.dtype), x)


def edm_output(sf, out, x, t):
    """The score ``(D - x^) / (a sigma^2)`` from the network's output ``out``, with ``D = c_skip x^ + c_out out``,
    written without the cancellation in ``D - x^``: ``-x / (a^2 (sigma^2 + sigma_d^2)) + c_out out / (a sigma^2)``."""
    a, sigma = sf.sde.edm_scale(t), sf.sde.edm_sigma(t)
    _, c_out, _, _ = edm_preconditioning(sigma, sf.sigma_data)
    skip = -1.0 / (a**2 * (sigma**2 + sf.sigma_data**2))
    return (batch_broadcast(skip.astype(x.dtype), x) * x
            + batch_broadcast((c_out / (a * sigma**2)).astype(out.dtype), out) * out)
