"""python -m experiments.images --workdir DIR --config experiments/images/configs/NAME.py[:VARIANT] --mode MODE

Modes: ``train`` | ``sample`` | ``eval`` (see :mod:`experiments.images.experiment`) and ``inpaint`` |
``train_classifier`` | ``conditional`` (controllable generation: :mod:`experiments.images.controllable`);
``--config.field=value`` overrides any field. Several processes: pass ``--coordinator_address=HOST:PORT --num_processes=N
--process_id=I`` to each, or launch under SLURM / on a Cloud TPU pod, where ``jax.distributed.initialize()``
finds its peers by itself.
"""
import json
import logging
import os

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, snapshots, samples, eval metrics.",
                    required=True)
config_flags.DEFINE_config_file("config", os.path.join(os.path.dirname(__file__), "configs", "digits.py"),
                                "Experiment config file (overrides: --config.field=value).")
flags.DEFINE_enum("mode", "train", ["train", "sample", "eval", "inpaint", "train_classifier", "conditional"],
                  "What to do.")
flags.DEFINE_string("coordinator_address", None, "Multi-process: HOST:PORT of process 0 (jax.distributed).")
flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-process: index of this process.")
flags.DEFINE_bool("progress", True, "Show progress bars.")


class _QuietOrbax(logging.Filter):
    """Drop orbax's per-save INFO lines (dozens per checkpoint); keep its warnings and our own log lines."""

    def filter(self, record):
        return record.levelno >= logging.WARNING or "orbax" not in record.pathname


def main(argv):
    del argv
    from sde_jax import parallel

    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    logging.getLogger("absl").addFilter(_QuietOrbax())
    from experiments.images import experiment

    result = experiment.run(FLAGS.config, FLAGS.workdir, FLAGS.mode, progress=FLAGS.progress)
    if parallel.is_main_process():
        print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    app.run(main)
