import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_jax.parallel import check_batch_divisible, make_data_mesh, shard_batch


def test_mesh_and_sharding():
    mesh = make_data_mesh()
    assert mesh.shape["data"] == 8
    x = shard_batch(jnp.arange(32.0).reshape(16, 2), mesh)
    assert len(x.sharding.device_set) == 8
    assert x.addressable_shards[0].data.shape == (2, 2)
    np.testing.assert_array_equal(np.asarray(x), np.arange(32.0).reshape(16, 2))
    assert make_data_mesh(2).shape["data"] == 2


def test_errors():
    with pytest.raises(ValueError, match="num_devices must be an integer in \\[1, 8\\]"):
        make_data_mesh(9)
    with pytest.raises(ValueError, match="batch size 10 is not divisible by the number of devices"):
        check_batch_divisible(10, make_data_mesh(4))
    with pytest.raises(ValueError, match="not divisible"):
        shard_batch({"x": jnp.ones((6, 2))}, make_data_mesh(4))


def test_random_draws_do_not_depend_on_sharding():
    mesh = make_data_mesh()
    sharded = jax.jit(lambda k: jax.random.normal(k, (64, 3)),
                      out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    np.testing.assert_array_equal(np.asarray(sharded(jax.random.key(0))),
                                  np.asarray(jax.random.normal(jax.random.key(0), (64, 3))))
