"""The Flax FID Inception against PyTorch: the same features as pytorch-fid's network for the same random
weights (an independent torch implementation of its FIDInceptionA/C/E structure, and pytorch-fid itself
where it imports), its resize against ``F.interpolate``, TF1's resize formula, input errors, and the
end-to-end evaluation path.

Cost control: one random state dict, one torch.save-d file, three 32 x 32 images (resized to 299, the full
network), one compiled feature program shared by the tests of this module (1-device mesh)."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from sde_jax import metrics
from sde_jax.metrics import weights as W
from sde_jax.metrics.inception import InceptionV3, interpolation_matrix, preprocess, resize_bilinear
from sde_jax.parallel import make_data_mesh

REL_TOL = 1e-4   # the bound on max |jax - torch| / max |torch|, float32


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from torch_inception_ref import random_state_dict, to_torch

    sd = random_state_dict(seed=0)
    path = tmp_path_factory.mktemp("inc") / "pt_inception_random.pth"
    torch.save(to_torch(sd), path)
    extractor = metrics.load_inception(path, sha256=metrics.sha256_file(path))
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    mesh = make_data_mesh(1)
    out = metrics.extract_features(extractor, images, batch_size=4, mesh=mesh, progress=False)
    x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    return dict(sd=sd, path=path, extractor=extractor, images=images, mesh=mesh, out=out, x=x)


@pytest.mark.slow
def test_features_match_independent_torch_reference(setup):
    """Same random weights and uint8 images: pool3 [3, 2048] and the 1008 logits (with bias, and without:
    pool3 @ W) of the Flax network match a torch.nn.functional implementation of pytorch-fid's network
    (bilinear F.interpolate to 299, 2x - 1, FIDInceptionA/C/E_1/E_2) to relative error < 1e-4 (float32;
    measured ~1e-6)."""
    import torch
    from torch_inception_ref import TorchFIDInception, to_torch

    ref = TorchFIDInception().eval()
    ref.load_state_dict(to_torch(setup["sd"]))
    with torch.no_grad():
        pool3, logits = ref(setup["x"])
        unbiased = pool3 @ ref.fc.weight.T
    out = setup["out"]
    assert out["features"].shape == (3, 2048) and out["logits"].shape == (3, 1008)
    assert _rel(out["features"], pool3.numpy()) < REL_TOL
    assert _rel(out["logits_with_bias"], logits.numpy()) < REL_TOL
    assert _rel(out["logits"], unbiased.numpy()) < REL_TOL
    assert np.std(out["features"]) > 0.1          # random weights at scale: not a vacuous comparison


@pytest.mark.slow
def test_features_match_pytorch_fid(setup):
    """pytorch-fid's own InceptionV3 (its FIDInceptionA/C/E blocks, resize and normalisation), given the same
    state dict through its strict load_state_dict (so our key set is exactly its): pool3 relative error
    < 1e-4. Runs where pytorch-fid and torchvision are importable (test-only; not a declared dependency)."""
    pytest.importorskip("pytorch_fid")
    import torch
    from torch_inception_ref import pytorch_fid_network

    net = pytorch_fid_network(setup["sd"])
    with torch.no_grad():
        pool3 = net(setup["x"])[0][:, :, 0, 0]
    assert _rel(setup["out"]["features"], pool3.numpy()) < REL_TOL


@pytest.mark.parametrize("shape,size", [((32, 32), 299), ((61, 47), 29), ((20, 37), 299)])
def test_resize_matches_torch_interpolate(shape, size):
    """resize_bilinear(method='pytorch_fid') equals F.interpolate(bilinear, align_corners=False) for
    upsampling, downsampling and non-square inputs to 1e-5 on [0, 1] images (measured <= 4e-6: torch
    computes the source coordinates in float32, we the weights in float64)."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).uniform(size=(2, *shape, 3)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(size, size),
                                          mode="bilinear", align_corners=False).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(resize_bilinear(jnp.asarray(x), size), ref, atol=1e-5)


def test_interpolation_matrices_closed_form():
    """2 -> 4: pytorch-fid rule rows [1,0], [.75,.25], [.25,.75], [0,1] (source -0.25 clamped to 0, 0.25,
    0.75, 1.25 -> last pixel); TF1 rule rows [1,0], [.5,.5], [0,1], [0,1] (sources 0, .5, 1, 1.5). 3 -> 2
    with TF1: sources 0 and 1.5. Rows sum to 1; equal sizes give the identity. Exact."""
    np.testing.assert_array_equal(interpolation_matrix(2, 4), [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    np.testing.assert_array_equal(interpolation_matrix(2, 4, "tf1"), [[1, 0], [0.5, 0.5], [0, 1], [0, 1]])
    np.testing.assert_array_equal(interpolation_matrix(3, 2, "tf1"), [[1, 0, 0], [0, 0.5, 0.5]])
    for m in ("pytorch_fid", "tf1"):
        np.testing.assert_array_equal(interpolation_matrix(7, 7, m), np.eye(7))
        np.testing.assert_allclose(interpolation_matrix(32, 299, m).sum(1), 1.0, rtol=1e-15)
    with pytest.raises(ValueError, match="resize method must be one of"):
        interpolation_matrix(2, 4, "bicubic")


def test_preprocess_and_input_errors():
    """uint8 only (TypeError names the dtype); C in (1, 3); grey equals the channel-repeated RGB image
    exactly; a 299 x 299 image is only rescaled (2 u / 255 - 1, to 1 float32 ulp); the network refuses
    < 75 px."""
    g = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 1), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess(jnp.asarray(g)), preprocess(jnp.asarray(np.repeat(g, 3, -1))))
    big = np.random.default_rng(1).integers(0, 256, (1, 299, 299, 3), dtype=np.uint8)
    np.testing.assert_allclose(preprocess(jnp.asarray(big)), 2.0 * (big.astype(np.float32) / 255.0) - 1.0,
                               rtol=0, atol=1.2e-7)
    with pytest.raises(TypeError, match="uint8.*float32"):
        preprocess(jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"C in \(1, 3\)"):
        preprocess(jnp.zeros((1, 8, 8, 2), jnp.uint8))
    with pytest.raises(ValueError, match="at least 75 x 75"):
        jax.eval_shape(lambda: InceptionV3().init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    with pytest.raises(ValueError, match="resize must be one of"):
        metrics.load_inception("unused", resize="area")


def test_parameter_count_matches_the_torch_network():
    """Trainable parameters (kernels, BN scale/bias, fc) = 23,850,960, the torch network's count; BN
    mean/var = the torch BN buffers (94 layers)."""
    torch = pytest.importorskip("torch")
    from torch_inception_ref import TorchFIDInception

    ref = TorchFIDInception()
    leaves = jax.tree_util.tree_flatten_with_path(W.inception_param_shapes())[0]
    trainable = sum(l.size for p, l in leaves if p[-1].key not in ("mean", "var"))
    stats = sum(l.size for p, l in leaves if p[-1].key in ("mean", "var"))
    assert trainable == sum(p.numel() for p in ref.parameters()) == 23_850_960
    assert stats == sum(b.numel() for n, b in ref.named_buffers() if "running" in n)


@pytest.mark.slow
def test_evaluate_samples_end_to_end(setup):
    """evaluate_samples with the (unverified, random) Inception: reference = 3 other images whose
    statistics it computes; the record names say it is not the FID Inception (fd_inception-unverified,
    ...), every record carries num_samples = 3 and num_reference = 3, all values finite; the compiled
    feature program of the module's fixture is reused (one cache entry, no new trace). (That the values
    equal the metric functions on the features is checked with a small network in test_metrics_features.)"""
    from sde_jax.metrics.features import _compiled

    ext, mesh = setup["extractor"], setup["mesh"]
    ref_images = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    res = metrics.evaluate_samples(setup["images"], ref_images, ext, batch_size=4, mesh=mesh, progress=False,
                                   is_splits=1, pr_k=1, kid_subsets=2)
    name = ext.name
    assert name == "inception-unverified" and not ext.inception
    assert set(res["metrics"]) == {f"fd_{name}", f"kd_{name}", f"is_{name}", f"precision_{name}", f"recall_{name}"}
    for r in res["metrics"].values():
        assert r["num_samples"] == 3 and np.isfinite(r["value"])
    assert res["num_reference"] == 3 and res["metrics"][f"fd_{name}"]["value"] > 0
    assert _compiled(ext.apply_fn, mesh)._cache_size() == 1


@pytest.mark.slow
def test_verified_name_only_with_the_pinned_hash(setup, monkeypatch):
    """load_inception names the network inception-2015-12-05 (and labels FID/KID/IS) only when the file
    matched the pinned sha256; the resize and precision settings are part of the name."""
    path = setup["path"]
    monkeypatch.setattr(W, "INCEPTION_SHA256", metrics.sha256_file(path))   # pretend this file is the real one
    ext = W.load_inception(path, sha256=W.INCEPTION_SHA256, resize="tf1", precision=None)
    assert ext.inception and ext.name == "inception-2015-12-05.tf1-resize.precision-None"
    assert ext.fingerprint == setup["extractor"].fingerprint
