"""Test configuration: 8 simulated CPU devices and a fixed-seed key.

The device count must be set before JAX initialises its backend, so it happens here, at import of
conftest, before any test module imports jax.numpy or touches a device.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

NUM_DEVICES = 8


@pytest.fixture
def key():
    """A fixed-seed typed PRNG key; tests derive everything else from it."""
    return jax.random.key(0)


@pytest.fixture
def x64():
    """Enable float64 for the duration of one test (exactness against closed forms)."""
    with jax.enable_x64(True):
        yield
