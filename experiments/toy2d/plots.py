"""Figures of the toy2d experiment (matplotlib, Agg backend; nothing is shown on screen)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

LIM = 5.0


def _style(ax, title):
    ax.set_xlim(-LIM, LIM)
    ax.set_ylim(-LIM, LIM)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def samples(path, target, true_x, sampled: dict, metrics):
    """True samples beside each sampler's, with mode-weight error, energy-distance ratio and NFE."""
    fig, axes = plt.subplots(1, 1 + len(sampled), figsize=(3.6 * (1 + len(sampled)), 4.2))
    axes[0].scatter(*np.asarray(true_x).T, s=2, alpha=0.5, color="k")
    _style(axes[0], f"true ({len(true_x)} samples)")
    for ax, (name, x) in zip(axes[1:], sampled.items()):
        m = metrics["samplers"][name.lower()]
        ax.scatter(*np.asarray(x).T, s=2, alpha=0.5, color="C0" if name == "PC" else "C1")
        _style(ax, f"{name}: NFE {m['nfe']}, mode-weight err {m['mode_weight_error']:.3f}\n"
                   f"energy dist. {m['energy_distance_ratio']:.2f} x reference")
    for ax in axes:
        ax.scatter(*np.asarray(target.means).T, marker="x", color="r", s=25)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def score_field(path, target, sde, score_fn, eps, times=None, n=21):
    """Learned vs exact score of ``p_t`` at a few times, over the exact log-density of ``p_t``.

    Arrows in a column share one scale (the exact field's median length maps to half the grid spacing) and
    are clipped at the grid spacing, so learned and exact fields compare directly.
    """
    times = (eps, 0.1, 0.4) if times is None else times
    g = np.linspace(-LIM, LIM, n)
    spacing = g[1] - g[0]
    X, Y = np.meshgrid(g, g)
    pts = jnp.asarray(np.stack([X.ravel(), Y.ravel()], -1), jnp.float32)
    fine = np.linspace(-LIM, LIM, 120)
    FX, FY = np.meshgrid(fine, fine)
    fpts = jnp.asarray(np.stack([FX.ravel(), FY.ravel()], -1), jnp.float32)
    fig, axes = plt.subplots(2, len(times), figsize=(3.4 * len(times), 7.0))
    exact = target.perturbed_score(sde)
    logp = target.perturbed_log_prob(sde)
    call = jax.jit(lambda f, x, t: f(x, t))  # score functions are pytrees: one compile per function type
    for j, t in enumerate(times):
        tt = jnp.full((pts.shape[0],), t, jnp.float32)
        dens = np.asarray(call(logp, fpts, jnp.full((fpts.shape[0],), t, jnp.float32))).reshape(FX.shape)
        fields = {"learned": np.asarray(call(score_fn, pts, tt)), "exact": np.asarray(call(exact, pts, tt))}
        scale = 0.5 * spacing / np.median(np.linalg.norm(fields["exact"], axis=-1))
        for i, (name, field) in enumerate(fields.items()):
            v = field * scale
            norm = np.linalg.norm(v, axis=-1, keepdims=True)
            v = v * np.minimum(1.0, spacing / np.maximum(norm, 1e-12))
            ax = axes[i, j]
            ax.contourf(FX, FY, np.maximum(dens, dens.max() - 12), levels=20, cmap="Greys", alpha=0.6)
            ax.quiver(X, Y, v[:, 0].reshape(X.shape), v[:, 1].reshape(X.shape), color="C0" if i == 0 else "C3",
                      angles="xy", scale_units="xy", scale=1.0, width=0.004)
            _style(ax, f"{name} score, t = {t:g}")
    fig.suptitle("score of p_t: learned (top, EMA) vs exact (bottom); arrows clipped at the grid spacing",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def loss(path, history, config, exact_level=None):
    """Training loss (means over windows of training.log_every steps), with the loss at the exact score."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if len(history.get("step", ())):
        ax.plot(history["step"], history["loss"], lw=1, label="training loss")
        if np.all(history["loss"] > 0) and (exact_level is None or exact_level > 0):
            ax.set_yscale("log")
    if exact_level is not None:
        ax.axhline(exact_level, color="k", ls="--", lw=1, label="at the exact score (irreducible)")
    ax.legend(fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel(f"{config.training.loss} loss")
    ax.set_title(f"{config.sde.name}, {config.training.loss}: loss (mean over {config.training.log_every} steps)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
