"""python -m experiments.score_matching --workdir DIR [--config.field=value ...]"""
import json

from absl import app, flags
from ml_collections import config_flags

from experiments.score_matching import get_config, run

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for figures and metrics.json.", required=True)
config_flags.DEFINE_config_dict("config", get_config(), "Experiment configuration.")


def main(argv):
    del argv
    metrics = run(FLAGS.config, FLAGS.workdir)
    print(json.dumps({"score_error": {t: {m: r["score_error"] for m, r in v.items()}
                                      for t, v in metrics["results"].items()},
                      "ms_per_step": metrics["ms_per_step"], "fd_speedup": metrics["fd_speedup"],
                      "wall_seconds": metrics["wall_seconds"], "workdir": FLAGS.workdir}, indent=2))


if __name__ == "__main__":
    app.run(main)
