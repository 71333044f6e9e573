"""Pluggable feature networks (a small Flax CNN on 8 x 8 grey images stands in for a digits classifier),
sharded feature extraction (8 simulated devices equal 1; padding; iterables; no re-trace), statistics
files (ours, pytorch-fid / clean-fid layouts), evaluate_samples (values, sample counts, the naming rule)
and the reference-statistics cache."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_jax import metrics
from sde_jax.metrics import FeatureExtractor, FeatureStats
from sde_jax.parallel import make_data_mesh


class TinyCNN(nn.Module):
    """8 x 8 x 1 images -> 16 features, 10 logits (a digits-classifier shape; random weights)."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(8, (3, 3))(x))
        h = nn.avg_pool(h, (2, 2), strides=(2, 2)).reshape(x.shape[0], -1)
        f = nn.Dense(16)(h)
        return {"features": f, "logits": nn.Dense(10)(nn.relu(f))}


@pytest.fixture(scope="module")
def cnn():
    """The module and random parameters drawn with NumPy into its shapes (no Flax-init compile)."""
    module = TinyCNN()
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1))))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
    return module, variables


def _extractor(cnn, name="digits_cnn", **kw):
    module, variables = cnn
    return FeatureExtractor.from_flax(name, module, variables, features="features", logits="logits", **kw)


def _images(seed, n, lo=0, hi=256):
    return np.random.default_rng(seed).integers(lo, hi, (n, 8, 8, 1), dtype=np.uint8)


@pytest.mark.compile_bound
def test_sharded_extraction_equals_one_device_and_does_not_retrace(cnn):
    """37 images in batches of 16 (last one padded) over 8 devices equal 1 device and the module applied to
    all images at once (1e-6); an iterable of uneven chunks (5, 20, 12) gives the identical result; three
    calls on two meshes trace the apply function once per mesh."""
    module, variables = cnn
    traces = []

    def counted(v, images):
        traces.append(1)
        return {"features": module.apply(v, images.astype(jnp.float32) / 255.0)["features"]}

    ext = FeatureExtractor("counted", counted, variables)
    imgs = _images(0, 37)
    one = metrics.extract_features(ext, imgs, batch_size=16, mesh=make_data_mesh(1), progress=False)["features"]
    eight = metrics.extract_features(ext, imgs, batch_size=16, mesh=make_data_mesh(8), progress=False)["features"]
    chunks = metrics.extract_features(ext, (imgs[:5], imgs[5:25], imgs[25:]), batch_size=16,
                                      mesh=make_data_mesh(8), progress=True)["features"]
    direct = module.apply(variables, jnp.asarray(imgs, jnp.float32) / 255.0)["features"]
    assert one.shape == (37, 16) and one.dtype == np.float32
    np.testing.assert_allclose(eight, one, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(one, direct, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(chunks, eight)
    assert len(traces) == 2


def test_extraction_errors(cnn):
    ext = _extractor(cnn)
    with pytest.raises(TypeError, match="uint8"):
        metrics.extract_features(ext, np.zeros((8, 8, 8, 1), np.float32), batch_size=8, progress=False)
    with pytest.raises(ValueError, match="batch_size 12 is not divisible by the number of devices"):
        metrics.extract_features(ext, _images(0, 8), batch_size=12, progress=False)
    with pytest.raises(ValueError, match="empty"):
        metrics.extract_features(ext, np.zeros((0, 8, 8, 1), np.uint8), batch_size=8, progress=False)
    bare = FeatureExtractor("bare", lambda v, x: x.reshape(x.shape[0], -1).astype(jnp.float32), {})
    with pytest.raises(ValueError, match="must return a dict with 'features'"):
        metrics.extract_features(bare, _images(0, 8), batch_size=8, progress=False)
    with pytest.raises(ValueError, match="name must be"):
        FeatureExtractor("no spaces", lambda v, x: x, {})


def test_stats_files_ours_and_foreign_layouts(tmp_path, cnn):
    """Our .npz round-trips exactly (arrays, count, network name and fingerprint, features); a pytorch-fid /
    TTUR file (mu, sigma) loads with unknown count and network; clean-fid's KID file (feats) gives the
    statistics of its features; unknown layouts, another format version and missing files are errors."""
    ext = _extractor(cnn)
    feats = np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)
    st = FeatureStats.from_features(feats, ext)
    metrics.save_stats(tmp_path / "s.npz", st)
    back = metrics.load_stats(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.mu, st.mu)
    np.testing.assert_array_equal(back.sigma, st.sigma)
    np.testing.assert_array_equal(back.features, feats)
    assert (back.num_samples, back.feature_network, back.feature_network_sha256) == (50, "digits_cnn", ext.fingerprint)
    np.savez(tmp_path / "pytorch_fid.npz", mu=st.mu.astype(np.float32), sigma=st.sigma)
    pf = metrics.load_stats(tmp_path / "pytorch_fid.npz")
    assert pf.num_samples is None and pf.feature_network is None and pf.features is None
    np.testing.assert_allclose(pf.mu, st.mu, rtol=1e-6)
    np.savez_compressed(tmp_path / "cleanfid_kid.npz", feats=feats)
    cf = metrics.load_stats(tmp_path / "cleanfid_kid.npz")
    np.testing.assert_allclose(cf.sigma, st.sigma, rtol=1e-12)
    assert cf.num_samples == 50 and cf.source == "clean-fid feats"
    np.savez(tmp_path / "other.npz", weights=feats)
    with pytest.raises(ValueError, match="not a statistics file"):
        metrics.load_stats(tmp_path / "other.npz")
    np.savez(tmp_path / "v2.npz", mu=st.mu, sigma=st.sigma, format=np.array("sde_jax.feature_stats/2"),
             meta=np.array("{}"))
    with pytest.raises(ValueError, match="this version reads"):
        metrics.load_stats(tmp_path / "v2.npz")
    np.savez(tmp_path / "bad.npz", mu=st.mu, sigma=st.sigma[:3])
    with pytest.raises(ValueError, match="inconsistent shapes"):
        metrics.load_stats(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        metrics.load_stats(tmp_path / "missing.npz")


def test_evaluate_with_a_small_network_values_counts_and_names(cnn):
    """A non-Inception network: results named fd_/kd_/is_/precision_/recall_digits_cnn (never fid), each
    with num_samples = 48 (num_reference = 64); the values are exactly the metric functions applied to the
    extracted features; a brighter sample set is farther (FD) than one from the same pixel distribution."""
    ext = _extractor(cnn)
    ref_imgs, same, bright = _images(0, 64), _images(1, 48), _images(2, 48, lo=128)
    ref = metrics.reference_stats(None, ref_imgs, ext, batch_size=16, progress=False)
    res = metrics.evaluate_samples(same, ref, ext, batch_size=16, progress=False, kid_subsets=10, is_splits=4)
    m = res["metrics"]
    assert set(m) == {"fd_digits_cnn", "kd_digits_cnn", "is_digits_cnn", "precision_digits_cnn", "recall_digits_cnn"}
    assert all(r["num_samples"] == 48 for r in m.values())
    assert m["fd_digits_cnn"]["num_reference"] == 64 and res["num_reference"] == 64
    out = metrics.extract_features(ext, same, batch_size=16, progress=False)
    st = FeatureStats.from_features(out["features"])
    assert m["fd_digits_cnn"]["value"] == metrics.frechet_distance(st.mu, st.sigma, ref.mu, ref.sigma)
    assert (m["kd_digits_cnn"]["value"], m["kd_digits_cnn"]["std"]) == metrics.kernel_distance(
        out["features"], ref.features, num_subsets=10, subset_size=1000, seed=0)
    assert m["kd_digits_cnn"]["subset_size"] == 48
    assert (m["is_digits_cnn"]["value"], m["is_digits_cnn"]["std"]) == metrics.inception_score(out["logits"], 4)
    p, r = metrics.precision_recall(ref.features, out["features"])
    assert (m["precision_digits_cnn"]["value"], m["recall_digits_cnn"]["value"]) == (p, r)
    far = metrics.evaluate_samples(bright, ref, ext, metrics=("fid",), batch_size=16, progress=False)
    assert far["metrics"]["fd_digits_cnn"]["value"] > 2 * m["fd_digits_cnn"]["value"]


def test_naming_rule_for_the_inception(cnn):
    """With an Inception extractor: fid_<n> / is_<n> below 10,000 samples, fid / is when told or at the
    threshold; kid, precision, recall keep their names (their records carry num_samples)."""
    ext = _extractor(cnn, name="inception-like", inception=True)
    assert metrics.metric_name("fid", ext, 9_999) == "fid_9999"
    assert metrics.metric_name("is", ext, 2_000) == "is_2000"
    assert metrics.metric_name("fid", ext, 10_000) == "fid"
    assert metrics.metric_name("fid", ext, 2_000, allow_small_sample_fid=True) == "fid"
    assert metrics.metric_name("kid", ext, 50) == "kid"
    assert metrics.metric_name("fid", _extractor(cnn), 50_000) == "fd_digits_cnn"
    res = metrics.evaluate_samples(_images(1, 16), _images(0, 16), ext, batch_size=16, progress=False,
                                   kid_subsets=2, is_splits=2, min_fid_samples=10)
    assert set(res["metrics"]) == {"fid", "kid", "is", "precision", "recall"}
    with pytest.raises(ValueError, match="metric must be one of"):
        metrics.metric_name("fidd", ext, 10)


def test_reference_checks_and_skipped_metrics(cnn, tmp_path):
    """Statistics of another network (other parameters) are refused; a mu/sigma-only file is refused for
    a non-Inception network, accepted for an Inception one with KID and precision/recall listed as skipped
    (and an explicit request for them raises); IS without logits and unknown metrics raise."""
    a = _extractor(cnn)
    module, variables = cnn
    b = FeatureExtractor.from_flax("digits_cnn", module, jax.tree.map(lambda v: v * 1.5, variables),
                                   features="features", logits="logits")
    ref = metrics.reference_stats(None, _images(0, 16), a, batch_size=16, progress=False)
    with pytest.raises(ValueError, match="distances across feature spaces mean nothing"):
        metrics.evaluate_samples(_images(1, 16), ref, b, batch_size=16, progress=False)
    np.savez(tmp_path / "pf.npz", mu=ref.mu, sigma=ref.sigma)
    with pytest.raises(ValueError, match="unknown provenance"):
        metrics.evaluate_samples(_images(1, 16), str(tmp_path / "pf.npz"), a, batch_size=16, progress=False)
    inc = _extractor(cnn, name="inception-like", inception=True)
    res = metrics.evaluate_samples(_images(1, 16), tmp_path / "pf.npz", inc, batch_size=16, progress=False, is_splits=2)
    assert set(res["metrics"]) == {"fid_16", "is_16"} and set(res["skipped"]) == {"kid", "precision_recall"}
    assert res["num_reference"] is None
    with pytest.raises(ValueError, match=r"cannot compute \['kid'\]"):
        metrics.evaluate_samples(_images(1, 16), tmp_path / "pf.npz", inc, metrics=("fid", "kid"), batch_size=16,
                                 progress=False)
    no_logits = FeatureExtractor.from_flax("nl", module, variables, features="features")
    with pytest.raises(ValueError, match="gives no logits"):
        metrics.evaluate_samples(_images(1, 16), _images(0, 16), no_logits, metrics=("is",), batch_size=16,
                                 progress=False)
    with pytest.raises(ValueError, match="unknown metrics"):
        metrics.evaluate_samples(_images(1, 16), ref, a, metrics=("fid", "lpips"), progress=False)


def test_reference_stats_are_cached(cnn, tmp_path):
    """The images callable runs on the first call only; the cached file is reused for the same network and
    recomputed (and overwritten) for another one."""
    module, variables = cnn
    a = _extractor(cnn)
    b = FeatureExtractor.from_flax("digits_cnn_b", module, jax.tree.map(lambda v: -v, variables), features="features")
    calls = []

    def images():
        calls.append(1)
        return _images(0, 16)

    path = tmp_path / "cache" / "train_stats.npz"
    first = metrics.reference_stats(path, images, a, batch_size=16, progress=False)
    again = metrics.reference_stats(path, images, a, batch_size=16, progress=False)
    assert len(calls) == 1 and np.array_equal(first.sigma, again.sigma) and again.num_samples == 16
    other = metrics.reference_stats(path, images, b, batch_size=16, progress=False)
    assert len(calls) == 2 and other.feature_network == "digits_cnn_b"
    assert metrics.load_stats(path).feature_network_sha256 == b.fingerprint
