"""Data parallelism: a 1-D device mesh with the batch sharded on a ``data`` axis.

We use ``jax.jit`` with ``NamedSharding`` over a ``jax.make_mesh`` mesh (not ``jax.pmap``, which is in
maintenance mode). With ``jax_threefry_partitionable`` (JAX's default) random numbers drawn inside a jitted
function do not depend on how the batch is sharded, so results on 1 and N devices agree.
"""
from __future__ import annotations

import os

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

__all__ = ["DATA_AXIS", "make_data_mesh", "batch_sharding", "replicated_sharding", "check_batch_divisible",
           "shard_batch", "initialize_distributed", "is_main_process", "MULTIHOST_ENV"]

DATA_AXIS = "data"


def make_data_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (all by default), axis name ``"data"``.

    On several hosts call ``jax.distributed.initialize()`` first; ``jax.devices()`` then lists every
    host's devices and the mesh spans them all.
    """
    available = jax.device_count()
    n = available if num_devices is None else num_devices
    if not isinstance(n, int) or n < 1 or n > available:
        raise ValueError(f"num_devices must be an integer in [1, {available}]; got {num_devices!r}.")
    # Auto axes: XLA's partitioner propagates shardings, so library code needs no sharding annotations.
    return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=jax.devices()[:n])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of an array ``[B, ...]`` whose leading (batch) axis is split over the mesh's data axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_divisible(batch_size: int, mesh: Mesh, name: str = "batch size") -> None:
    """Raise ``ValueError`` unless ``batch_size`` splits evenly over the mesh's data axis."""
    n = mesh.shape[DATA_AXIS]
    if batch_size % n:
        raise ValueError(f"{name} {batch_size} is not divisible by the number of devices on the "
                         f"'{DATA_AXIS}' axis ({n}); use a multiple of {n}.")


def shard_batch(x, mesh: Mesh):
    """Place a pytree of ``[B, ...]`` arrays on the mesh, batch axis sharded."""
    for leaf in jax.tree.leaves(x):
        check_batch_divisible(leaf.shape[0], mesh)
    return jax.device_put(x, batch_sharding(mesh))


MULTIHOST_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                 "MEGASCALE_COORDINATOR_ADDRESS")
"""Environment variables through which a multi-process launch announces itself (``jax.distributed`` reads them:
an explicit coordinator, SLURM, Open MPI, a Cloud TPU pod)."""


def _launched_on_several_processes() -> bool:
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    for var in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        if int(os.environ.get(var, "1") or 1) > 1:
            return True
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return len([h for h in hosts.split(",") if h]) > 1


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, *, force: bool = False) -> bool:
    """Start JAX's multi-process runtime (``jax.distributed.initialize``) when this is a multi-process launch.

    Call it first, before anything touches a device. It initialises when ``coordinator_address`` is given (with
    ``num_processes`` and ``process_id``, e.g. two processes on ``127.0.0.1:PORT``), when ``force`` is set, or
    when the environment shows a multi-process launch (:data:`MULTIHOST_ENV`: SLURM with several tasks, Open
    MPI, a Cloud TPU pod, ``JAX_COORDINATOR_ADDRESS``); there ``jax.distributed.initialize()`` finds the
    coordinator, the process count and the process index by itself. A single process is left alone. On the CPU
    platform the cross-process collectives are set to gloo.

    Returns:
      Whether the multi-process runtime was initialised by this call.
    """
    if coordinator_address is None and not force and not _launched_on_several_processes():
        return False
    if (os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or "").split(",")[0] == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {k: v for k, v in (("coordinator_address", coordinator_address), ("num_processes", num_processes),
                                ("process_id", process_id)) if v is not None}
    jax.distributed.initialize(**kwargs)
    return True


def is_main_process() -> bool:
    """Process 0 writes logs, images and metrics; every process takes part in computing them."""
    return jax.process_index() == 0
