"""python -m experiments.toy2d --workdir DIR [--config=experiments/toy2d/configs/FILE.py] [--config.field=value]"""
import json
import logging
import os

from absl import app, flags
from ml_collections import config_flags

from experiments.toy2d import run
from sde_jax import training

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, figures and metrics.json (resumed if present).",
                    required=True)
config_flags.DEFINE_config_file("config", os.path.join(os.path.dirname(__file__), "configs", "default.py"),
                                "Experiment configuration file (overrides: --config.field=value).")


class _QuietOrbax(logging.Filter):
    """Drop orbax's per-save INFO lines (dozens per checkpoint); keep its warnings and our own log lines."""

    def filter(self, record):
        return record.levelno >= logging.WARNING or "orbax" not in record.pathname


def main(argv):
    del argv
    logging.getLogger("absl").addFilter(_QuietOrbax())
    try:
        m = run(FLAGS.config, FLAGS.workdir)
    except training.Preempted as e:   # SIGTERM/SIGINT: the checkpoint is on disk; rerun to resume
        logging.getLogger("absl").warning("%s", e)
        return e.exit_code
    summary = {name: {k: s[k] for k in ("mode_weight_error", "energy_distance_ratio", "nfe", "passes")}
               for name, s in m["samplers"].items()}
    print(json.dumps({"samplers": summary, "score_error": m["score_error"],
                      "nll": {k: m["nll"][k] for k in ("model", "true", "model_minus_true", "exact_score_ode")},
                      "wall_seconds": m["wall_seconds"],
                      "workdir": FLAGS.workdir}, indent=2))


if __name__ == "__main__":
    app.run(main)
