"""Data parallelism: a 1-D device mesh with the batch sharded on a ``data`` axis.

We use ``jax.jit`` with ``NamedSharding`` over a ``jax.make_mesh`` mesh (not ``jax.pmap``, which is in
maintenance mode). With ``jax_threefry_partitionable`` (JAX's default) random numbers drawn inside a jitted
function do not depend on how the batch is sharded, so results on 1 and N devices agree.
"""
from __future__ import annotations

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

__all__ = ["DATA_AXIS", "make_data_mesh", "batch_sharding", "replicated_sharding", "check_batch_divisible",
           "shard_batch"]

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
