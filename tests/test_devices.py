import jax

from conftest import NUM_DEVICES


def test_eight_simulated_devices():
    assert jax.device_count() == NUM_DEVICES
    assert all(d.platform == "cpu" for d in jax.devices())
