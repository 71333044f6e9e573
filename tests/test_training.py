"""Training: 1 vs 8 devices, multi-step scan, exact resume, non-finite loss, config validation, optimizer."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import NUM_DEVICES
from experiments.toy2d import get_config
from experiments.toy2d.experiment import get_target
from sde_jax import training
from sde_jax.parallel import batch_sharding, make_data_mesh, replicated_sharding


def tiny_config(**training_overrides):
    c = get_config()
    c.model.hidden = 32
    c.model.num_layers = 1
    c.model.embed_dim = 16
    c.training.batch_size = 64
    c.training.steps_per_call = 5
    c.training.log_every = 5
    c.optim.warmup = 10
    for k, v in training_overrides.items():
        c.training[k] = v
    return c


def _setup(config):
    parts = training.build(config, data_shape=(2,))
    target = get_target(config.data.target)
    state = training.init_train_state(parts.init_params(jax.random.key(1)), parts.tx)
    return parts, target, state, parts.train_step


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# --------------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.compile_bound
def test_one_step_on_8_devices_equals_1_device():
    parts, target, state, step = _setup(tiny_config())
    batch = target.sample(jax.random.key(2), 64)
    key = jax.random.key(3)
    out = {}
    for n in (1, NUM_DEVICES):
        mesh = make_data_mesh(n)
        s = jax.device_put(jax.tree.map(jnp.copy, state), replicated_sharding(mesh))
        new, metrics = training.jit_train_step(step, mesh)(s, jax.device_put(batch, batch_sharding(mesh)), key)
        out[n] = (new, metrics)
    diff = _max_diff(out[1][0].params, out[NUM_DEVICES][0].params)
    assert diff < 1e-6, diff                                  # float32 reduction-order differences only
    assert abs(float(out[1][1]["loss"]) - float(out[NUM_DEVICES][1]["loss"])) < 1e-5
    assert int(out[NUM_DEVICES][0].step) == 1


@pytest.mark.compile_bound
def test_noise_differs_across_devices_and_matches_one_device():
    """The loss draws noise for the global batch from one key; each device gets its own slice of it (no
    replicated-key noise), and the values do not depend on the device count."""
    mesh = make_data_mesh(NUM_DEVICES)
    x = jnp.tile(jnp.arange(8.0).reshape(4, 2), (NUM_DEVICES, 1))     # the same 4 examples on every device

    def noise_like_the_losses(key, batch):
        # exactly the draw in sde_jax.losses: split once, normal(key_z, batch.shape)
        _, key_z = jax.random.split(key)
        return batch + jax.random.normal(key_z, batch.shape, batch.dtype)

    f = jax.jit(noise_like_the_losses, in_shardings=(None, batch_sharding(mesh)), out_shardings=batch_sharding(mesh))
    y = f(jax.random.key(4), jax.device_put(x, batch_sharding(mesh)))
    shards = [np.asarray(s.data) for s in sorted(y.addressable_shards, key=lambda s: s.index[0].start)]
    assert len(shards) == NUM_DEVICES and len({s.tobytes() for s in shards}) == NUM_DEVICES
    np.testing.assert_array_equal(np.concatenate(shards), np.asarray(jax.jit(noise_like_the_losses)(jax.random.key(4), x)))


# --------------------------------------------------------------------------------------------------
# Multi-step dispatch
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.compile_bound
def test_scanned_steps_equal_single_steps_and_do_not_recompile():
    config = tiny_config()
    parts, target, state, step = _setup(config)
    batch_fn = training.sampler_batch_fn(target.sample, 64)
    data_key, loss_key = jax.random.split(jax.random.key(5))
    ref = jax.tree.map(jnp.copy, state)
    single = training.jit_train_step(step)
    for k in range(5):
        ref, _ = single(ref, batch_fn(data_key, k), loss_key)
    fn = training.make_train_fn(step, batch_fn, 5)
    new, metrics = fn(state, data_key, loss_key)
    assert metrics["loss"].shape == (5,) and int(new.step) == 5
    assert _max_diff(new.params, ref.params) < 1e-6 and _max_diff(new.ema_params, ref.ema_params) < 1e-6
    assert jax.tree.leaves(new.params)[0].dtype == jnp.float32
    before = fn._cache_size()
    fn(new, data_key, loss_key)
    assert fn._cache_size() == before                         # the second dispatch reuses the program


# --------------------------------------------------------------------------------------------------
# Checkpoints, resume, non-finite loss
# --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _fit_setup():
    """One train step and batch function for every fit below, so their compiled dispatches are shared."""
    parts, target, _, step = _setup(tiny_config())
    return parts, step, training.sampler_batch_fn(target.sample, 64)


def _fresh_state():
    parts = _fit_setup()[0]
    return training.init_train_state(parts.init_params(jax.random.key(1)), parts.tx)


def _fit(workdir, num_steps, batch_fn=None, **kw):
    _, step, default_batch_fn = _fit_setup()
    return training.fit(_fresh_state(), step, batch_fn or default_batch_fn, jax.random.key(6), num_steps=num_steps,
                        workdir=workdir, steps_per_call=5, checkpoint_every=10, log_every=5, progress=False, **kw)


def test_interrupted_and_resumed_training_equals_uninterrupted(tmp_path):
    full, hist_full = _fit(str(tmp_path / "a"), 30)
    _fit(str(tmp_path / "b"), 20)                              # "interrupted" after 20 steps
    resumed, hist = _fit(str(tmp_path / "b"), 30)             # a new process picks up from the checkpoint
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bitwise: params, EMA, optimizer state
    np.testing.assert_array_equal(hist["step"], hist_full["step"])
    np.testing.assert_array_equal(hist["loss"], hist_full["loss"])
    assert training.Checkpointer(str(tmp_path / "b" / training.CHECKPOINT_DIR)).latest_step() == 30


@pytest.mark.slow
@pytest.mark.compile_bound
def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    target = get_target("gmm5")

    def batch_fn(key, step):  # data turn to NaN from step 15 on
        x = target.sample(jax.random.fold_in(key, step), 64)
        return jnp.where(step >= 15, jnp.nan, x)

    with pytest.raises(training.NonFiniteLossError, match=r"non-finite loss nan at step 15.*checkpoint \(step 10\)"):
        _fit(str(tmp_path), 30, batch_fn=batch_fn)
    ckpt = training.Checkpointer(str(tmp_path / training.CHECKPOINT_DIR))
    assert ckpt.all_steps() == [10]
    restored = ckpt.restore(_fresh_state())
    good, _ = _fit(str(tmp_path / "clean"), 10)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(good)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_snapshots_are_kept_beside_the_latest(tmp_path):
    _fit(str(tmp_path), 30, snapshot_every=20)
    assert training.Checkpointer(str(tmp_path / training.CHECKPOINT_DIR)).all_steps() == [20, 30]


# --------------------------------------------------------------------------------------------------
# Config validation: fails before training, naming the field
# --------------------------------------------------------------------------------------------------
def _set(config, path, value):
    section, field = path.split(".")
    config[section][field] = value
    return config


@pytest.mark.parametrize("path,value,message", [
    ("training.loss", "nce", r"unknown training.loss 'nce'; valid names: \[.*'dsm'.*'ssm'"),
    ("sde.name", "cld", r"unknown sde.name 'cld'; valid names: \['subvpsde', 'vesde', 'vpsde'\]"),
    ("model.name", "unet", r"unknown model.name 'unet'; valid names: \[.*'mlp'"),
    ("training.batch_size", 100, r"training.batch_size 100 is not divisible by the number of devices"),
    ("optim.lr", -1e-3, r"optim.lr must be a number >= 0.0; got -0.001"),
    ("optim.optimizer", "sgd", r"unknown optim.optimizer 'sgd'"),
    ("training.loss", "smld", r"training.loss: 'smld' needs sde.name='vesde'; got 'vpsde'"),
    ("training.projection", "sphere", r"unknown training.projection 'sphere'"),
])
def test_bad_config_fails_before_training_naming_the_field(path, value, message):
    config = _set(get_config(), path, value)
    with pytest.raises(ValueError, match=message):
        training.build(config, data_shape=(2,))


def test_unknown_model_field_and_unwritable_workdir(tmp_path):
    config = get_config()
    config.model.depth = 3
    with pytest.raises(ValueError, match=r"model.depth: not a field of ScoreMLP"):
        training.build(config, data_shape=(2,))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match=r"workdir: .*a_file/run' is not writable"):
        training.build(get_config(), str(blocker / "run"), data_shape=(2,))   # fails even as root


# --------------------------------------------------------------------------------------------------
# Optimizer, EMA, data order
# --------------------------------------------------------------------------------------------------
def test_learning_rate_warmup_and_ema_warmup():
    schedule = training.learning_rate_schedule(2e-4, 5000)
    np.testing.assert_allclose([schedule(0), schedule(2499), schedule(4999), schedule(10**6)],
                               [2e-4 / 5000, 1e-4, 2e-4, 2e-4], rtol=1e-6)
    np.testing.assert_allclose(training.ema_decay(0, 0.999, True), 0.1, rtol=1e-6)
    np.testing.assert_allclose(training.ema_decay(10**6, 0.999, True), 0.999, rtol=1e-6)
    np.testing.assert_allclose(training.ema_decay(0, 0.999, False), 0.999, rtol=1e-6)


def test_array_batches_follow_a_per_epoch_permutation():
    data = jnp.arange(10.0)[:, None]
    batch_fn = training.array_batch_fn(data, 3)                # 3 batches per epoch, last partial dropped
    key = jax.random.key(7)
    epoch0 = np.concatenate([np.asarray(batch_fn(key, k))[:, 0] for k in range(3)])
    epoch1 = np.concatenate([np.asarray(batch_fn(key, k))[:, 0] for k in range(3, 6)])
    assert len(set(epoch0)) == 9 and len(set(epoch1)) == 9 and not np.array_equal(epoch0, epoch1)
    np.testing.assert_array_equal(np.asarray(batch_fn(key, 4)), np.asarray(batch_fn(key, 4)))
