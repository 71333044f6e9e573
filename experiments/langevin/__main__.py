"""python -m experiments.langevin --workdir DIR [--config.field=value ...]"""
import json

from absl import app, flags
from ml_collections import config_flags

from experiments.langevin import get_config, run

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for figures and metrics.json.", required=True)
config_flags.DEFINE_config_dict("config", get_config(), "Experiment configuration.")


def main(argv):
    del argv
    metrics = run(FLAGS.config, FLAGS.workdir)
    mix, ban = metrics["mixture_annealed_vs_plain"], metrics["banana_mala_vs_ula"]
    print(json.dumps({
        "plain_langevin_weight_error": mix["plain_langevin_weight_error"],
        "annealed_langevin_weight_error": mix["annealed_langevin_weight_error"],
        "mala_z_scores": ban["mala"]["z_scores"], "ula_z_scores": ban["ula"]["z_scores"],
        "mala_acceptance_rate": ban["mala_acceptance_rate"], "wall_seconds": metrics["wall_seconds"],
        "workdir": FLAGS.workdir}, indent=2))


if __name__ == "__main__":
    app.run(main)
