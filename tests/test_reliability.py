"""Reliability (issue 18): nothing lost and nothing poisoned.

Each fault of the issue is injected by the test and the outcome is one of two: the final state is bitwise the
uninterrupted run's, or a clear error is raised with every valid checkpoint intact. Training runs use the tiny
MLP of test_training (5 steps per dispatch, a checkpoint every 10 steps, one device), so they share its
compiled dispatches; the uninterrupted reference is computed once per process.
"""
import functools
import glob
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import sde_jax as sj
from conftest import NUM_DEVICES
from experiments.toy2d import experiment, get_config
from sde_jax import training
from sde_jax.models import ScoreMLP, get_score_fn
from sde_jax.parallel import batch_sharding, make_data_mesh
from sde_jax.samplers.correctors import batch_mean
from sde_jax.training import checkpoint as ckpt_module
from sde_jax.training.preemption import PreemptionGuard
from sampler_targets import MIXTURE
from test_training import _fit_setup, _fresh_state as _new_state, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _assert_bitwise(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@functools.lru_cache(maxsize=None)
def _initial_state():
    return _new_state()


def _fresh_state():
    """A copy of the one initial state (fit donates its input; initialising anew compiles anew)."""
    return jax.tree.map(jnp.copy, _initial_state())


def _fit(workdir, num_steps, *, state=None, log_every=5, **kw):
    _, step, batch_fn = _fit_setup()
    return training.fit(_fresh_state() if state is None else state, step, batch_fn, jax.random.key(6),
                        num_steps=num_steps, workdir=workdir, steps_per_call=5, checkpoint_every=10,
                        log_every=log_every, progress=False, **kw)


def _setting():
    """The compile setting of the running test (conftest's ``compile_bound``): results compared bitwise must come
    from programs compiled under the same one, so the cached runs below are kept per setting."""
    return bool(jax.config.read("jax_disable_most_optimizations"))


@functools.lru_cache(maxsize=None)
def _uninterrupted(setting):
    """The reference: 30 steps without checkpoints (the same dispatch boundaries as every run below)."""
    return _fit(None, 30)


def _assert_equals_uninterrupted(state, history):
    ref_state, ref_hist = _uninterrupted(_setting())
    _assert_bitwise(state, ref_state)                 # params, EMA, optimizer state, step
    np.testing.assert_array_equal(history["step"], ref_hist["step"])
    np.testing.assert_array_equal(history["loss"], ref_hist["loss"])


@functools.lru_cache(maxsize=None)
def _pristine(root, setting):
    """A workdir holding checkpoints at steps 10 and 20 (copied by each test before injecting its fault)."""
    path = os.path.join(root, f"pristine_{'unoptimised' if setting else 'default'}")
    _fit(path, 20)
    return path


@pytest.fixture
def run20(tmp_path_factory, tmp_path):
    work = str(tmp_path / "run")
    shutil.copytree(_pristine(str(tmp_path_factory.getbasetemp()), _setting()), work)
    return work


def _step_dir(work, step):
    return os.path.join(work, training.CHECKPOINT_DIR, str(step))


def _largest_data_file(step_dir):
    files = [f for f in glob.glob(os.path.join(step_dir, "**", "d", "*"), recursive=True) if os.path.isfile(f)]
    return max(files, key=os.path.getsize)


def _rewrite_with_orbax(work, step, change, *, keep_record):
    """Replace checkpoint ``step`` by ``change(state)`` written with orbax alone (no checks of ours), keeping
    the original sde_jax record (a silent data change) or none (a checkpoint of an older version)."""
    directory = os.path.join(work, training.CHECKPOINT_DIR)
    manager = ocp.CheckpointManager(directory)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _fresh_state())
    state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    record = manager.metadata(step).custom_metadata if keep_record else None
    shutil.rmtree(_step_dir(work, step))
    manager.reload()
    manager.save(step, args=ocp.args.StandardSave(change(state)), custom_metadata=record, force=True)
    manager.wait_until_finished()
    manager.close()


def _change_ema(value):
    """``state -> state`` with the first value of the EMA's Dense_1 kernel replaced by ``value(old)``."""

    def change(state):
        leaf = np.array(state.ema_params["params"]["Dense_1"]["kernel"])
        leaf.flat[0] = value(leaf.flat[0])
        ema = jax.tree.map(lambda x: x, state.ema_params)
        ema["params"]["Dense_1"]["kernel"] = jnp.asarray(leaf)
        return state.replace(ema_params=ema)
    return change


def _flip_bytes(work):
    path = _largest_data_file(_step_dir(work, 20))
    data = bytearray(open(path, "rb").read())
    for i in np.random.default_rng(0).choice(len(data), 64, replace=False):
        data[i] ^= 0xFF
    open(path, "wb").write(bytes(data))


def _truncate(work):
    path = _largest_data_file(_step_dir(work, 20))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


FAULTS = {
    # name: (inject(work), the step training must resume from)
    "flipped_bytes": (_flip_bytes, 10),
    "silently_changed_value": (lambda w: _rewrite_with_orbax(
        w, 20, _change_ema(lambda v: np.nextafter(v, np.float32(np.inf))), keep_record=True), 10),
    "poisoned_ema_older_format": (lambda w: _rewrite_with_orbax(
        w, 20, _change_ema(lambda v: np.nan), keep_record=False), 10),
    "empty_step_folder": (lambda w: os.mkdir(_step_dir(w, 99999)), 20),
    "missing_orbax_metadata": (lambda w: os.remove(os.path.join(_step_dir(w, 20), "default", "_METADATA")), 10),
    "truncated_data_file": (_truncate, 10),
    "missing_data_file": (lambda w: os.remove(_largest_data_file(_step_dir(w, 20))), 10),
}


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.compile_bound
def test_invalid_latest_checkpoint_falls_back_and_resumes_bitwise(run20, fault, caplog):
    """Fault injected into the latest checkpoint (step 20; the 99999 folder is newer than it): resuming
    warns naming the bad folder, moves it to checkpoints/invalid/, restores the next older valid checkpoint and
    trains on to step 30; the result is bitwise the uninterrupted run (state and history). Before issue 18:
    orbax-internal errors (flipped/truncated/missing files, empty folder, missing metadata) or a silent restore
    of wrong or NaN values (the last two fault kinds)."""
    inject, resume_step = FAULTS[fault]
    inject(run20)
    bad = 99999 if fault == "empty_step_folder" else 20
    with caplog.at_level(logging.WARNING):
        state, history = _fit(run20, 30)
    assert history.resumed_from == resume_step
    _assert_equals_uninterrupted(state, history)
    assert re.search(rf"Checkpoint \S*checkpoints/{bad} is invalid \(.+\); moved to", caplog.text), caplog.text
    assert os.path.isdir(os.path.join(run20, training.CHECKPOINT_DIR, training.INVALID_DIR, str(bad)))


def test_checksum_and_finiteness_name_the_array(run20):
    """The reasons name what is wrong: the changed array for a checksum mismatch, the field and the share of
    non-finite values for poisoned arrays."""
    _rewrite_with_orbax(run20, 20, _change_ema(lambda v: np.float32(v) * 2), keep_record=True)
    ckpt = training.Checkpointer(os.path.join(run20, training.CHECKPOINT_DIR))
    with pytest.raises(training.CheckpointError, match=r"checksum mismatch in 1 of \d+ arrays "
                                                        r"\(\.ema_params\['params'\]\['Dense_1'\]\['kernel'\]\)"):
        ckpt.restore(_fresh_state(), step=20)
    assert ckpt.all_steps() == [10, 20]                   # an explicit step is never moved aside
    _rewrite_with_orbax(run20, 20, _change_ema(lambda v: np.inf), keep_record=False)
    with pytest.raises(training.CheckpointError, match=r"non-finite values \(ema_params: 0\.\d+% of [\d,]+ values"):
        ckpt.restore(_fresh_state(), step=20)


def test_every_checkpoint_invalid_is_a_clear_error_then_a_fresh_start(run20):
    """Both checkpoints damaged: a CheckpointError lists each with its reason (nothing is silently restored);
    both are kept under invalid/, so running again starts from step 0."""
    for step in (10, 20):
        os.remove(os.path.join(_step_dir(run20, step), "default", "_METADATA"))
    with pytest.raises(training.CheckpointError, match=r"no valid checkpoint in .*step 20: orbax could not read "
                                                        r"it .*step 10: orbax could not read it"):
        _fit(run20, 30)
    assert sorted(os.listdir(os.path.join(run20, training.CHECKPOINT_DIR, training.INVALID_DIR))) == ["10", "20"]
    state, history = _fit(run20, 30)
    assert history.resumed_from is None
    _assert_equals_uninterrupted(state, history)


def test_a_changed_state_structure_is_refused_not_moved(run20):
    """A template of other shapes (a changed model) is not corruption: CheckpointMismatchError names the
    arrays and nothing is moved."""
    template = _fresh_state()
    template = template.replace(ema_params=jax.tree.map(lambda x: jnp.zeros(x.shape[:-1] + (x.shape[-1] + 1,),
                                                                            x.dtype), template.ema_params))
    ckpt = training.Checkpointer(os.path.join(run20, training.CHECKPOINT_DIR))
    with pytest.raises(training.CheckpointMismatchError, match=r"does not fit this run's state \(14 arrays differ: "
                                                                r"\.ema_params\['params'\]\['Dense_0'\]\['bias'\]: "
                                                                r"checkpoint \(\(64,\), 'float32'\), run \(\(65,\)"):
        ckpt.restore(template)
    assert ckpt.all_steps() == [10, 20]


# --------------------------------------------------------------------------------------------------
# Never save non-finite state
# --------------------------------------------------------------------------------------------------
@pytest.mark.compile_bound
def test_nonfinite_parameters_are_never_saved(tmp_path):
    """The issue's reproduction: lr = 1e39 (inf in float32), no warm-up, a checkpoint after every step. The
    first step's loss is finite but its update makes every parameter non-finite: NonFiniteStateError names
    params, EMA and optimizer state, and no checkpoint exists (before: a 100%-NaN checkpoint was saved and
    called 'the last good checkpoint')."""
    config = tiny_config(num_steps=5, checkpoint_every=1, steps_per_call=1)
    config.optim.lr, config.optim.warmup, config.optim.decay = 1e39, 0, "constant"
    parts = training.build(config, data_shape=(2,))   # the same network: reuse the initial parameters
    state = training.init_train_state(jax.tree.map(jnp.copy, _initial_state().params), parts.tx)
    with pytest.raises(training.NonFiniteStateError, match=r"not saving step 1: the state has non-finite values "
                                                           r"\(params: 100% of .*ema_params: .*; no checkpoint"):
        training.fit(state, parts.train_step, _fit_setup()[2], jax.random.key(6), num_steps=5,
                     workdir=str(tmp_path), steps_per_call=1, checkpoint_every=1, log_every=1, progress=False)
    assert training.Checkpointer(str(tmp_path / training.CHECKPOINT_DIR)).all_steps() == []


@pytest.mark.slow
@pytest.mark.compile_bound
def test_nonfinite_ema_keeps_the_last_finite_checkpoint(tmp_path):
    """Only the EMA turns NaN from step 15 on (the loss stays finite): the save at step 20 is refused, naming
    ema_params; step 10 stays the latest and equals a clean 10-step run bitwise."""
    _, step, batch_fn = _fit_setup()

    def poisoned(state, batch, key):
        new, metrics = step(state, batch, key)
        ema = jax.tree.map(lambda e: jnp.where(state.step >= 15, jnp.nan, e), new.ema_params)
        return new.replace(ema_params=ema), metrics

    with pytest.raises(training.NonFiniteStateError, match=r"not saving step 20: .*ema_params: 100% .*the latest "
                                                           r"complete checkpoint, step 10, .* is intact"):
        training.fit(_fresh_state(), poisoned, batch_fn, jax.random.key(6), num_steps=30, workdir=str(tmp_path),
                     steps_per_call=5, checkpoint_every=10, log_every=5, progress=False)
    ckpt = training.Checkpointer(str(tmp_path / training.CHECKPOINT_DIR))
    assert ckpt.all_steps() == [10]
    _assert_bitwise(ckpt.restore(_fresh_state()), _fit(None, 10)[0])


# --------------------------------------------------------------------------------------------------
# Disk errors
# --------------------------------------------------------------------------------------------------
def test_full_disk_stops_at_once_and_loses_nothing_valid(tmp_path, monkeypatch):
    """A filesystem with 4,096 bytes left when step 20 is due (shutil.disk_usage simulated): training stops at
    that step with one line naming the path, the bytes needed and free and the intact step 10; no step 20
    exists. With space again, rerunning resumes from 10 and ends bitwise equal to the uninterrupted run.
    (Before: reported one checkpoint late, buried in orbax's log, everything since the last commit lost.)"""
    work = str(tmp_path / "run")
    real, calls = shutil.disk_usage, []

    def usage(path):                     # one call per save: step 10 sees the real disk, step 20 a full one
        calls.append(path)
        return real(path) if len(calls) == 1 else real(path)._replace(free=4096)

    monkeypatch.setattr(ckpt_module.shutil, "disk_usage", usage)
    with pytest.raises(training.CheckpointWriteError) as err:
        _fit(work, 30)
    message = str(err.value)
    assert "\n" not in message and err.value.errno == 28
    assert re.search(r"cannot save checkpoint step 20 in \S+/checkpoints: it needs about [\d.]+ \w+ \([\d,]+ "
                     r"bytes\), 4\.0 KiB \(4,096 bytes\) free there; the latest complete checkpoint, step 10, in "
                     r"\S+/checkpoints is intact\.$",
                     message), message
    assert training.Checkpointer(os.path.join(work, training.CHECKPOINT_DIR)).all_steps() == [10]
    monkeypatch.setattr(ckpt_module.shutil, "disk_usage", real)
    _assert_equals_uninterrupted(*_fit(work, 30))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE / SIGXFSZ semantics are Linux's")
def test_a_failed_background_write_surfaces_as_one_line(tmp_path):
    """A real write failure inside orbax's background thread: the file-size limit (RLIMIT_FSIZE, soft, no root
    needed) is lowered to 256 KiB before saving a 1 MiB array, so the kernel refuses the write (EFBIG). The next
    check() raises CheckpointWriteError with the path and errno text; the previous checkpoint restores intact."""
    import resource

    directory = str(tmp_path / "ckpt")
    state = {"w": jnp.arange(1 << 18, dtype=jnp.float32), "step": jnp.asarray(1, jnp.int32)}
    ckpt = training.Checkpointer(directory)
    ckpt.save(1, state)
    ckpt.wait()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))
    try:
        ckpt.save(2, {"w": state["w"] + 1, "step": jnp.asarray(2, jnp.int32)})
        with pytest.raises(training.CheckpointWriteError) as err:
            deadline = time.time() + 60
            while time.time() < deadline:
                ckpt.check()
                time.sleep(0.05)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    message = str(err.value)
    assert "\n" not in message and err.value.errno == 27
    assert re.search(r"checkpoint step 2 could not be written to \S+/ckpt: File too large; it needs about .* free "
                     r"there; the latest complete checkpoint, step 1, .* is intact", message), message
    ckpt.close()
    again = training.Checkpointer(directory)
    assert again.all_steps() == [1]
    _assert_bitwise(again.restore(state), state)


# --------------------------------------------------------------------------------------------------
# Preemption
# --------------------------------------------------------------------------------------------------
def _fit_log10(workdir, num_steps):
    """Logging every 10 steps, so that a stop at step 15 leaves a logging window open."""
    return _fit(workdir, num_steps, log_every=10)


def test_sigint_saves_at_the_next_boundary_and_resume_is_bitwise(tmp_path, monkeypatch):
    """SIGINT (Ctrl-C) raised in the process while step 15's dispatch completes: fit saves a checkpoint at
    step 15 (not a checkpoint step) and raises Preempted (exit code 130); rerunning resumes from 15 and ends
    bitwise equal to the uninterrupted run, history included (logging every 10 steps: the window of steps
    11-15 is stored with the checkpoint, so the row at step 20 averages 11-20 as it should). (Before:
    KeyboardInterrupt, up to checkpoint_every steps lost.)"""
    original = PreemptionGuard.requested

    def requested(self, step):
        if step == 15:
            signal.raise_signal(signal.SIGINT)   # a real signal, handled by the handler fit installed
        return original(self, step)

    monkeypatch.setattr(PreemptionGuard, "requested", requested)
    work = str(tmp_path / "run")
    safety_net = signal.signal(signal.SIGINT, lambda *a: None)   # if fit installed nothing, the test fails, not pytest
    net = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(training.Preempted, match=r"stopped by SIGINT at step 15; checkpoint step 15 saved") as e:
            _fit_log10(work, 30)
        assert signal.getsignal(signal.SIGINT) is net                       # fit's handler removed again
    finally:
        signal.signal(signal.SIGINT, safety_net)
    assert e.value.exit_code == 130 and e.value.step == 15
    assert training.Checkpointer(os.path.join(work, training.CHECKPOINT_DIR)).all_steps() == [10, 15]
    monkeypatch.setattr(PreemptionGuard, "requested", original)
    state, history = _fit_log10(work, 30)
    assert history.resumed_from == 15
    ref_state, ref_history = _fit_log10(None, 30)
    _assert_bitwise(state, ref_state)
    np.testing.assert_array_equal(history["step"], [10, 20, 30])
    np.testing.assert_array_equal(history["loss"], ref_history["loss"])


SUBPROCESS_OVERRIDES = {"model.hidden": 32, "model.num_layers": 1, "model.embed_dim": 16, "training.batch_size": 64,
                        "training.num_steps": 100_000, "training.steps_per_call": 5, "training.log_every": 5,
                        "training.checkpoint_every": 10, "training.num_devices": 1, "optim.warmup": 10}


@pytest.mark.slow
def test_sigterm_to_a_training_process_saves_and_resume_is_bitwise(tmp_path):
    """SIGTERM to ``python -m experiments.toy2d`` once its first checkpoint (step 10) exists: the process saves
    a checkpoint at its next dispatch boundary, says so in one line and exits with 143. The checkpoint equals
    an uninterrupted in-process run to that step bitwise, and resuming from it 10 more steps does too.
    (Before: killed by the signal, everything since the last checkpoint lost.)"""
    work = str(tmp_path / "run")
    args = [f"--config.{k}={v}" for k, v in SUBPROCESS_OVERRIDES.items()]
    proc = subprocess.Popen([sys.executable, "-m", "experiments.toy2d", f"--workdir={work}", *args], cwd=ROOT,
                            env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not os.path.isdir(_step_dir(work, 10)) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr[-3000:]
    m = re.search(r"stopped by SIGTERM at step (\d+); checkpoint step \1 saved in (\S+);", stderr)
    assert m, stderr[-3000:]
    saved = int(m.group(1))
    assert saved > 10 and saved % 5 == 0
    config = get_config()
    for path, value in SUBPROCESS_OVERRIDES.items():
        section, field = path.split(".")
        config[section][field] = value
    parts = training.build(config, data_shape=(2,))
    keys = experiment._keys(config)
    batch_fn = training.sampler_batch_fn(experiment.get_target(config.data.target).sample, 64)

    params = parts.init_params(keys["init"])

    def run(num_steps, workdir=None, state=None):
        if state is None:
            state = training.init_train_state(jax.tree.map(jnp.copy, params), parts.tx)
        return training.fit(state, parts.train_step, batch_fn, keys["train"], num_steps=num_steps, workdir=workdir,
                            steps_per_call=5, checkpoint_every=10, log_every=5, mesh=parts.mesh, progress=False)

    template = training.init_train_state(params, parts.tx)
    restored = training.Checkpointer(os.path.join(work, training.CHECKPOINT_DIR)).restore(template)
    reference, _ = run(saved)
    _assert_bitwise(restored, reference)
    resumed, history = run(saved + 10, workdir=work)
    assert history.resumed_from == saved
    _assert_bitwise(resumed, run(saved + 10, state=reference)[0])


# --------------------------------------------------------------------------------------------------
# A changed config on resume
# --------------------------------------------------------------------------------------------------
def test_a_changed_config_is_refused_on_resume(tmp_path):
    """toy2d with a workdir that holds a checkpoint and a config.json of other values: refused before training
    with ConfigChangedError naming each changed field; resume_with_changes=True accepts, keeping the old file
    as config.1.json. (Before: config.json silently overwritten.)"""
    work = str(tmp_path)
    config = tiny_config()
    training.write_config(config, work)
    os.makedirs(os.path.join(work, training.CHECKPOINT_DIR, "10"))
    changed = tiny_config()
    changed.optim.lr = 1e-3
    changed.model.hidden = 64
    with pytest.raises(training.ConfigChangedError, match=r"holds a checkpoint of a run with another config \(2 "
                                                          r"changed: model.hidden: 32 -> 64; optim.lr: 0.002 -> "
                                                          r"0.001\).*--config.resume_with_changes=True"):
        experiment.train(changed, work, progress=False)
    with open(os.path.join(work, "config.json")) as f:
        assert json.load(f)["optim"]["lr"] == 0.002                          # untouched
    assert training.write_config(config, work) == []                         # the same config: fine
    changed.resume_with_changes = True
    assert training.write_config(changed, work) == ["model.hidden: 32 -> 64", "optim.lr: 0.002 -> 0.001"]
    with open(os.path.join(work, "config.1.json")) as f:
        assert json.load(f)["optim"]["lr"] == 0.002
    with open(os.path.join(work, "config.json")) as f:
        assert json.load(f)["optim"]["lr"] == 0.001


# --------------------------------------------------------------------------------------------------
# The PC sampler on 8 devices vs 1
# --------------------------------------------------------------------------------------------------
@pytest.mark.compile_bound
def test_batch_mean_is_exact_to_float_rounding_and_independent_of_sharding(x64):
    """batch_mean against the float64 mean (float32 input: rel. 1e-6, a few ulps; float64 input: rel. 1e-10),
    bitwise equal sharded over 8 devices and on one, masked entries (a NaN) ignored, all-zero input gives 0."""
    v64 = np.abs(np.random.default_rng(0).standard_normal(1024)) * 3.7
    v64[::7] *= 1e-6                                      # a wide range of magnitudes
    v = jnp.asarray(v64, jnp.float32)
    keep = jnp.ones(1024, bool).at[3].set(False)

    @jax.jit
    def means(v, v64, keep):
        return batch_mean(v), batch_mean(v.at[3].set(jnp.nan), keep), batch_mean(jnp.zeros(8)), batch_mean(v64)

    mean, masked, zero, mean64 = means(v, jnp.asarray(v64), keep)
    assert float(mean) == pytest.approx(float(np.mean(np.asarray(v, np.float64))), rel=1e-6)
    assert float(masked) == pytest.approx(float(np.mean(np.delete(np.asarray(v, np.float64), 3))), rel=1e-6)
    assert float(zero) == 0.0 and mean64.dtype == jnp.float64
    assert float(mean64) == pytest.approx(float(np.mean(v64)), rel=1e-10)
    sharded = jax.device_put(v, batch_sharding(make_data_mesh(NUM_DEVICES)))
    assert float(jax.jit(batch_mean)(sharded)) == float(mean)


@pytest.mark.slow   # ~25 s of compiles; test_batch_mean_... pins the sharding independence in the default suite
@pytest.mark.compile_bound
def test_pc_sampler_with_a_network_score_is_bitwise_the_same_on_8_devices_and_1():
    """The default (batch-mean) Langevin step with a network score: 1,024 samples, 20 steps, on 8 devices
    equal 1 device bitwise. Precondition checked first: this MLP gives bitwise the same rows for 128 and 1,024
    rows at once (XLA:CPU; small matmuls of <= 32 rows round differently, which no sampler can undo). (Before:
    every sample differed, the float batch mean being reduced per device.)"""
    sde = sj.VPSDE(N=25)
    model = ScoreMLP(hidden=32, num_layers=1, embed_dim=16)
    params = model.init(jax.random.key(0), jnp.zeros((1, 2)), jnp.zeros((1,)))
    score = get_score_fn(sde, model, params)                # noise parameterization: -net / std
    mesh = make_data_mesh(NUM_DEVICES)
    x = jax.random.normal(jax.random.key(1), (1024, 2))
    t = jnp.linspace(1e-3, 1.0, 1024)
    apply = jax.jit(lambda s, x, t: s(x, t))
    np.testing.assert_array_equal(
        np.asarray(apply(score, jax.device_put(x, batch_sharding(mesh)), jax.device_put(t, batch_sharding(mesh)))),
        np.asarray(apply(score, x, t)))
    one, _ = sj.pc_sample(jax.random.key(3), sde, score, (1024, 2))
    many, _ = sj.pc_sample(jax.random.key(3), sde, score, (1024, 2), mesh=mesh)
    assert np.all(np.isfinite(np.asarray(one)))
    np.testing.assert_array_equal(np.asarray(many), np.asarray(one))


@pytest.mark.compile_bound
def test_one_nonfinite_example_does_not_poison_the_batch_mean_step():
    """A score that is NaN for example 0 only: with the batch-mean Langevin step, the other 63 samples stay
    finite (the mean skips non-finite examples) and example 0 is NaN. (Before: the mean was NaN and every
    sample came back NaN.)"""
    sde = sj.VPSDE(N=25)
    exact = MIXTURE.perturbed_score(sde)

    def score(x, t):
        return exact(x, t).at[0].set(jnp.nan)

    x, _ = sj.pc_sample(jax.random.key(4), sde, score, (64, 2))
    x = np.asarray(x)
    assert np.all(np.isnan(x[0])) and np.all(np.isfinite(x[1:]))


# --------------------------------------------------------------------------------------------------
# Checks the issue found missing (item 8): losses' shape checks, 16-bit sampling dtypes
# --------------------------------------------------------------------------------------------------
def _column_score(x, t=None):
    """A wrong score of shape [B, 1] for [B, 2] data: it broadcasts, so without a check losses are silently
    wrong (SSM) or fail deep inside (ISM)."""
    return -x[:, :1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ism", "ssm", "ssm_vr", "esm_target", "sde_ism", "sde_ssm", "sde_esm_target"])
@pytest.mark.compile_bound
def test_losses_refuse_a_score_of_the_wrong_shape(name):
    """Every loss checks its score function's output shape against the data (ISM/SSM by jax.eval_shape,
    without computing), naming the function; so does ESM for the target score. (Before: ISM/SSM/SSM-VR and
    the ESM targets were unchecked.)"""
    from sde_jax import losses

    x = MIXTURE.sample(jax.random.key(0), 8)
    sde = sj.VPSDE()
    good = MIXTURE.perturbed_score(sde)
    calls = {
        "ism": lambda: losses.implicit_score_matching_loss(_column_score, None, x),
        "ssm": lambda: losses.sliced_score_matching_loss(_column_score, jax.random.key(1), x),
        "ssm_vr": lambda: losses.sliced_score_matching_loss(_column_score, jax.random.key(1), x,
                                                            variance_reduction=True),
        "esm_target": lambda: losses.explicit_score_matching_loss(MIXTURE.score, None, x,
                                                                  target_score_fn=_column_score),
        "sde_ism": lambda: losses.get_sde_score_matching_loss_fn(sde, method="ism")(_column_score,
                                                                                    jax.random.key(1), x),
        "sde_ssm": lambda: losses.get_sde_score_matching_loss_fn(sde, method="ssm")(_column_score,
                                                                                    jax.random.key(1), x),
        "sde_esm_target": lambda: losses.get_sde_score_matching_loss_fn(sde, method="esm", target_score_fn=(
            _column_score))(good, jax.random.key(1), x),
    }
    function = {"esm_target": r"target_score_fn\(x\)", "sde_esm_target": r"target_score_fn\(x, t\)",
                "ism": r"score_fn\(x\)", "ssm": r"score_fn\(x\)", "ssm_vr": r"score_fn\(x\)"}.get(name,
                                                                                             r"score_fn\(x, t\)")
    with pytest.raises(ValueError, match=rf"{function} must return an array of the same shape as x \(8, 2\); got "
                                         rf"shape \(8, 1\)"):
        calls[name]()


@pytest.mark.compile_bound
def test_16_bit_sampling_dtypes_compute_in_float32_and_return_their_dtype():
    """pc_sample with dtype=bfloat16 / float16: computed in float32 (a 16-bit loop state would stall and the
    scan carry would change type), returned as the float32 samples rounded to the dtype, bitwise. (Before:
    'scan body function carry input and carry output must have equal types'.)"""
    sde = sj.VPSDE(N=30)
    score = MIXTURE.perturbed_score(sde)
    ref, _ = sj.pc_sample(jax.random.key(5), sde, score, (16, 2), dtype=jnp.float32)
    for dtype in (jnp.bfloat16, jnp.float16):
        x, _ = sj.pc_sample(jax.random.key(5), sde, score, (16, 2), dtype=dtype)
        assert x.dtype == dtype
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(ref.astype(dtype), np.float32))


@pytest.mark.slow
@pytest.mark.compile_bound
def test_16_bit_ode_sampler_and_likelihood_compute_in_float32():
    """ode_sample (dtype=bfloat16) is the float32 solve rounded, bitwise; log_likelihood of bfloat16 data
    equals that of the same values in float32 bitwise, logp in float32, the latent in bfloat16. (Before: a
    scatter dtype error inside the solver.)"""
    sde = sj.VPSDE()
    score = MIXTURE.perturbed_score(sde)
    kw = dict(rtol=1e-3, atol=1e-3)
    ref, _ = sj.ode_sample(jax.random.key(6), sde, score, (8, 2), **kw)
    x, _ = sj.ode_sample(jax.random.key(6), sde, score, (8, 2), dtype=jnp.bfloat16, **kw)
    assert x.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(ref.astype(jnp.bfloat16), np.float32))
    data = MIXTURE.sample(jax.random.key(7), 8).astype(jnp.bfloat16)
    logp, _, z = sj.log_likelihood(None, sde, score, data, return_latent=True, **kw)
    logp32, _, z32 = sj.log_likelihood(None, sde, score, data.astype(jnp.float32), return_latent=True, **kw)
    assert logp.dtype == jnp.float32 and z.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(logp), np.asarray(logp32))
    np.testing.assert_array_equal(np.asarray(z, np.float32), np.asarray(z32.astype(jnp.bfloat16), np.float32))
