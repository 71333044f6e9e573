"""python -m experiments.noise_levels --workdir DIR [--config.field=value ...]"""
import json

from absl import app, flags
from ml_collections import config_flags

from experiments.noise_levels import get_config, run

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for figures, table.md and metrics.json.", required=True)
config_flags.DEFINE_config_dict("config", get_config(), "Experiment configuration.")


def main(argv):
    del argv
    metrics = run(FLAGS.config, FLAGS.workdir)
    print(metrics["table_markdown"])
    print(json.dumps({"best": metrics["best"], "wall_seconds": metrics["wall_seconds"], "workdir": FLAGS.workdir},
                     indent=2))


if __name__ == "__main__":
    app.run(main)
