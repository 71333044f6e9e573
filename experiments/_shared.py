"""Helpers shared by the small experiments (langevin, score_matching, noise_levels): workdir check, plotting
grids, density images and score-field quivers (matplotlib, Agg backend)."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402,F401  (re-exported for the experiments)
import numpy as np  # noqa: E402

CMAP = "YlOrRd"
"""Warm colour map of every density image and score-norm colouring."""

__all__ = ["CMAP", "check_workdir", "grid", "density_image", "score_quiver", "write_json", "plt"]


def check_workdir(workdir):
    """Fail before any work if ``workdir`` cannot be created and written."""
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, ".write_test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"workdir {workdir!r} is not writable: {e}") from None


def grid(lo, hi, n=200):
    """``(xx, yy, points [n*n, 2] float32)`` of a square grid."""
    g = np.linspace(lo, hi, n)
    xx, yy = np.meshgrid(g, g)
    return xx, yy, jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)


def density_image(ax, log_prob, lo, hi, title, n=200):
    """``exp(log_prob)`` on a grid as an image on ``ax``; returns the density array. ``log_prob`` runs as one
    compiled program (op by op, a mixture's log density compiles some 30 one-op programs)."""
    xx, yy, pts = grid(lo, hi, n)
    dens = np.exp(np.asarray(jax.jit(log_prob)(pts))).reshape(xx.shape)
    ax.imshow(dens, origin="lower", extent=(lo, hi, lo, hi), cmap=CMAP, aspect="auto")
    ax.set_title(title)
    return dens


def score_quiver(ax, points, score, title, *, vmax=None, background=None, extent=None, arrow_length=None):
    """Normalised arrows (direction of the score) coloured by ``||score||`` on the warm colour map.

    Args:
      ax: matplotlib axes.
      points: ``[n, 2]`` arrow positions; score: ``[n, 2]`` score values there.
      title: panel title.
      vmax: upper end of the colour scale (share it between panels to compare norms).
      background: optional ``[m, m]`` image (e.g. the exact density) drawn in grey under the arrows.
      extent: ``(lo, hi, lo, hi)`` of the background.
      arrow_length: length of every arrow in data units (e.g. 0.8 grid spacings); default: matplotlib's.
    """
    p, s = np.asarray(points), np.asarray(score)
    norm = np.linalg.norm(s, axis=-1)
    unit = s / np.maximum(norm, 1e-12)[:, None]
    if background is not None:
        ax.imshow(background, origin="lower", extent=extent, cmap="Greys", alpha=0.35, aspect="auto")
    scale = {} if arrow_length is None else dict(scale_units="xy", scale=1.0 / arrow_length)
    q = ax.quiver(p[:, 0], p[:, 1], unit[:, 0], unit[:, 1], np.minimum(norm, vmax or norm.max()), cmap=CMAP,
                  clim=(0.0, vmax or norm.max()), angles="xy", pivot="mid", width=0.008, headwidth=3.5, **scale)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal")
    return q


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
