"""Controllable generation in the image experiment (issue 14): ``--mode inpaint``, ``train_classifier`` and
``conditional`` on the tiny digits config. The conditional maths is checked against exact Gaussian-mixture
conditionals in test_conditional.py / test_conditional_exact.py; here: the modes run end to end and write their
files with the right shapes and types, the observed half is kept exactly, the output has no last-step noise,
and bad input fails before anything runs."""
import copy
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import build_once
from experiments.images import controllable, experiment
from images_tiny_config import tiny_digits_config
from sde_jax import data as D


def _config():
    c = tiny_digits_config(num_steps=2)
    c.optim.warmup = 1
    c.inpaint.num_images, c.inpaint.grid_size = 8, 4
    c.guidance.samples_per_class = 2
    g = c.guidance.classifier
    g.model.update(blocks_per_group=1, channel_multiplier=1, embedding_size=8, embedding_width=16)
    g.training.update(batch_size=16, num_steps=2, steps_per_call=1, log_every=1, checkpoint_every=2, eval_every=0)
    g.optim.update(warmup=0)
    return c


@pytest.mark.parametrize("field, value, match", [
    ("inpaint.mask", "diagonal", "inpaint.mask"),
    ("inpaint.method", "magic", "inpaint.method"),
    ("inpaint.num_particles", 0, "inpaint.num_particles"),
    ("guidance.scale", 0.0, "guidance.scale must be a number > 0"),
    ("guidance.scale", -1.0, "guidance.scale must be a number > 0"),
    ("guidance.samples_per_class", 0, "guidance.samples_per_class"),
    ("sampling.method", "ode", "sampling.method='pc'"),
])
def test_bad_options_fail_before_anything_is_loaded(tmp_path, field, value, match):
    """An unknown mask or method, a guidance scale <= 0, no samples, or a non-PC sampler: ValueError naming the
    field, raised before the workdir is touched (it stays absent)."""
    config = _config()
    section, name = field.split(".")
    config[section][name] = value
    mode = "inpaint" if section in ("inpaint", "sampling") else "conditional"
    wd = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        experiment.run(config, str(wd), mode, progress=False)
    assert not wd.exists()


def test_missing_checkpoint_or_classifier_fails_fast(tmp_path):
    """No score checkpoint: ``inpaint`` says to train first; no noise-conditional classifier: ``conditional`` names
    the directory and ``--mode train_classifier`` (before the score model is loaded)."""
    with pytest.raises(FileNotFoundError, match="train first"):
        experiment.run(_config(), str(tmp_path / "empty"), "inpaint", progress=False)
    with pytest.raises(FileNotFoundError, match=r"no noise-conditional classifier in .*noise_classifier.*"
                                                r"--mode train_classifier"):
        experiment.run(_config(), str(tmp_path / "empty"), "conditional", progress=False)


def test_half_masks():
    """Each mask hides exactly half of an 8x8 image (32 pixels), the named half."""
    for name, hidden in [("right_half", (slice(None), slice(4, None))), ("left_half", (slice(None), slice(0, 4))),
                         ("bottom_half", (slice(4, None), slice(None))), ("top_half", (slice(0, 4), slice(None)))]:
        m = controllable.half_mask(name, (8, 8, 1))
        assert m.dtype == np.float32 and m.sum() == 32 and not m[hidden].any(), name


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny score model (2 steps) and a tiny noise-conditional WRN (2 steps) on the 8x8 digits (trained once per
    session, a private copy of the run directory per worker)."""
    config = _config()

    def build(wd):
        experiment.train(config, wd, progress=False)
        return experiment.run(config, wd, "train_classifier", progress=False)

    wd, summary = build_once(tmp_path_factory, "controllable", build)
    return config, wd, summary


@pytest.mark.slow
def test_inpaint_keeps_the_observed_half_and_has_no_last_step_noise(trained):
    """``--mode inpaint`` on 8 test digits (right half hidden, replacement, 8 Euler-Maruyama steps) writes the npz
    (uint8 ``[8, 8, 8, 1]`` originals / masks / inputs / inpaintings, int32 labels), the 3-row grid and the JSON
    (hidden-half MSE of the inpainting and the zero / mean fills, classifier accuracy on each). The observed half
    equals the originals bitwise (uint8, and the float output equals the data bitwise there). Same key with
    ``denoise=False`` (the paper's output, built from the noisy last sample): the observed half is unchanged and
    the hidden half differs by exactly the last Euler-Maruyama step's noise ``g(eps) sqrt(eps) z`` (VP, eps =
    1e-3: std 0.01095), std within 15% over the 256 hidden pixels (s.e. 4.4%): the mode's output carries none."""
    config, wd, _ = trained
    run = experiment.setup(config, wd)
    info = controllable.inpaint(config, wd, progress=False, run=run)   # the sampler compiled once for both
    assert info["path"].endswith("controllable/inpaint_right_half_replacement_2.npz")
    with np.load(info["path"]) as f:
        arrays = dict(f)
    for k in ("originals", "masks", "inputs", "inpaintings"):
        assert arrays[k].dtype == np.uint8 and arrays[k].shape == (8, 8, 8, 1), k
    assert arrays["labels"].dtype == np.int32 and arrays["labels"].shape == (8,)
    known = arrays["masks"] == 1
    assert known[:, :, :4].all() and not known[:, :, 4:].any()
    np.testing.assert_array_equal(arrays["inpaintings"][known], arrays["originals"][known])
    np.testing.assert_array_equal(arrays["inputs"][~known], 0)
    assert info["observed_pixels_max_abs_diff_uint8"] == 0
    with open(info["path"][:-4] + ".json") as f:
        saved = json.load(f)
    assert set(saved["hidden_mse"]) == {"inpainting", "zero_fill", "mean_fill"}
    assert set(saved["classifier"]) >= {"inpainting", "original", "zero_fill", "mean_fill", "chance"}
    assert saved["classifier"]["original"]["num_images"] == 8
    assert os.path.getsize(saved["grid"]) > 0

    params, _ = experiment.restore_ema(run)
    mask = controllable.half_mask("right_half", (8, 8, 1))
    key = controllable.mode_key(config, "inpaint")
    ours, _ = controllable.inpaint_images(run, params, key, arrays["originals"], mask)
    noisy, _ = controllable.inpaint_images(run, params, key, arrays["originals"], mask, denoise=False)
    np.testing.assert_array_equal(D.to_uint8(ours, centered=True), arrays["inpaintings"])
    data = np.asarray(D.to_model_space(jax.random.key(0), jnp.asarray(arrays["originals"]), centered=True))
    np.testing.assert_array_equal(ours[known], data[known])
    np.testing.assert_array_equal(noisy[known], data[known])
    last_noise = float(np.sqrt((0.1 + 1e-3 * 19.9) * 1e-3))
    spread = float(np.std(noisy[~known] - ours[~known]))
    assert abs(spread / last_noise - 1.0) < 0.15, (spread, last_noise)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_inpaint_with_smc(trained):
    """``inpaint.method='smc'`` (2 particles, 2 images): the particle filter's output keeps the observed half
    bitwise and the files are named by the method."""
    config, wd, _ = trained
    config = copy.deepcopy(config)
    config.inpaint.update(method="smc", num_particles=2, num_images=2, mask="bottom_half")
    info = experiment.run(config, wd, "inpaint", progress=False)
    assert info["path"].endswith("inpaint_bottom_half_smc_2.npz") and info["num_particles"] == 2
    with np.load(info["path"]) as f:
        known = f["masks"] == 1
        assert f["inpaintings"].shape == (2, 8, 8, 1) and known[:, :4].all() and not known[:, 4:].any()
        np.testing.assert_array_equal(f["inpaintings"][known], f["originals"][known])


@pytest.mark.slow
@pytest.mark.compile_bound
def test_conditional_samples_every_class_with_the_trained_classifier(trained):
    """``--mode train_classifier`` wrote a checkpoint and the eval-split accuracy at 6 noise levels;
    ``--mode conditional`` (scale 2) writes ``samples`` uint8 ``[20, 8, 8, 1]`` with ``labels`` 0,0,1,1,...,9,9,
    one grid row per class, and the confidence metric per class with chance 0.1."""
    config, wd, summary = trained
    assert summary["step"] == 2 and len(summary["eval_accuracy_by_time"]) == 6
    assert all(0.0 <= v <= 1.0 for v in summary["eval_accuracy_by_time"].values())
    assert os.path.exists(os.path.join(wd, "noise_classifier", "classifier_eval.json"))
    config = copy.deepcopy(config)
    config.guidance.scale = 2.0
    info = experiment.run(config, wd, "conditional", progress=False)
    assert info["path"].endswith("controllable/conditional_scale2_2.npz") and info["classifier_step"] == 2
    with np.load(info["path"]) as f:
        samples, labels = f["samples"], f["labels"]
    assert samples.dtype == np.uint8 and samples.shape == (20, 8, 8, 1)
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 2))
    c = info["confidence"]
    assert c["chance"] == 0.1 and c["num_samples"] == 20 and sorted(c["per_class"]) == list(range(10))
    assert 0.0 <= c["fraction_as_requested"] <= 1.0 and sum(c["predicted_histogram"]) == 20
    from PIL import Image
    grid = np.asarray(Image.open(info["grid"]))
    assert grid.shape == (4 * (10 * 9 + 1), 4 * (2 * 9 + 1))   # 10 rows of 2 digits, 1-pixel padding, scaled x4


def test_confidence_metric_on_known_probabilities():
    """Three samples requested as classes (0, 0, 1) of K = 4 with probabilities chosen by hand: fraction as
    requested 2/3, mean probability of the requested class (0.7 + 0.4 + 0.9) / 3, per class 0: (1/2, 0.55),
    1: (1, 0.9); chance 1/4; predicted histogram (1, 1, 1, 0)."""
    probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.4, 0.0, 0.6, 0.0], [0.05, 0.9, 0.05, 0.0]])
    m = controllable.confidence_metric(probs, np.array([0, 0, 1]))
    assert m["fraction_as_requested"] == pytest.approx(2 / 3) and m["chance"] == 0.25
    assert m["mean_prob_requested"] == pytest.approx(2.0 / 3)
    assert m["per_class"][0] == pytest.approx({"fraction_as_requested": 0.5, "mean_prob_requested": 0.55})
    assert m["per_class"][1] == pytest.approx({"fraction_as_requested": 1.0, "mean_prob_requested": 0.9})
    assert m["predicted_histogram"] == [1, 1, 1, 0] and m["num_samples"] == 3
