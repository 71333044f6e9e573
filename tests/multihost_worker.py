"""One process of the two-process test (tests/test_experiment_images.py::test_two_processes_equal_one): CPU,
one device per process, JAX's gloo collectives over the loopback address.

    python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT WORKDIR OUT.npz
"""
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.path.dirname(os.path.abspath(__file__))]

from sde_jax import parallel  # noqa: E402


def main(process_id, num_processes, port, workdir, out):
    parallel.initialize_distributed(f"127.0.0.1:{port}", num_processes, process_id)
    import jax
    import numpy as np

    from images_tiny_config import tiny_digits_config
    from experiments.images import experiment

    config = tiny_digits_config()
    config.training.num_devices = 0   # every process's device
    summary = experiment.train(config, workdir, progress=False)
    run = experiment.setup(config, workdir)
    params, step = experiment.restore_ema(run)
    state = jax.tree.map(np.asarray, jax.device_get(params))   # replicated: every process holds all of it
    mesh = run.mesh
    noise = jax.jit(lambda k: jax.random.normal(k, (4, 3)), out_shardings=parallel.batch_sharding(mesh))(
        jax.random.key(7))
    local = np.concatenate([np.asarray(s.data) for s in noise.addressable_shards])
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): v
            for path, v in jax.tree_util.tree_flatten_with_path(state)[0]}
    np.savez(out, noise=local, step=step, num_processes=jax.process_count(), devices=jax.device_count(),
             resumed=summary["resumed_from_step"] or -1, **{f"p/{k}": v for k, v in flat.items()})


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
