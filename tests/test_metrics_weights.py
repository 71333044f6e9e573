"""Inception weights from a file: the torch-free restricted unpickler (zip and legacy formats), the exact
mapping of a pytorch-fid state dict onto the Flax network, sha256 checks, path resolution and the errors
for a missing file, a wrong checksum, wrong keys or shapes, unsafe pickles and our own .npz layout.

torch (test-only) writes the files; the library reads them without it."""
import collections
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from sde_jax import metrics
from sde_jax.metrics import weights as W
from sde_jax.metrics.torch_pickle import UnsafePickleError, load_torch_state_dict

torch = pytest.importorskip("torch")
from torch_inception_ref import random_state_dict, to_torch  # noqa: E402  (needs torch)


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_pickle_reads_every_dtype_and_view(tmp_path, zip_format):
    """Every storage dtype torch writes for state dicts, strided views (transposes, slices), 0-d and empty
    tensors, nested dicts: values equal torch's exactly, shapes and dtypes too, keys in file order."""
    base = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).state_dict()
    sd = collections.OrderedDict(base)
    sd.update({"half": torch.randn(3, 2).half(), "bf16": torch.randn(5).bfloat16(), "f64": torch.randn(2).double(),
               "i32": torch.arange(4, dtype=torch.int32), "u8": torch.arange(3, dtype=torch.uint8),
               "bool": torch.tensor([True, False]), "slice": torch.randn(4, 6)[:, 1::2], "t": torch.randn(3, 4).t(),
               "scalar": torch.tensor(7), "empty": torch.zeros(0, 3)})
    path = tmp_path / "x.pth"
    torch.save({"state_dict": sd, "epoch": 3}, path, _use_new_zipfile_serialization=zip_format)
    out = load_torch_state_dict(path)
    assert list(out) == [f"state_dict.{k}" for k in sd]
    for k, v in sd.items():
        ref = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
        got = out[f"state_dict.{k}"]
        assert got.shape == tuple(v.shape) and np.array_equal(np.asarray(got, ref.dtype), ref), k
        assert got.dtype.itemsize == v.element_size(), k


def _zip_checkpoint(path, payload: bytes, extra=()):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        for name, data in extra:
            z.writestr(name, data)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch EVIL_MARKER",))


def test_unsafe_pickles_are_refused_without_running_code(tmp_path, monkeypatch):
    """A zip checkpoint and a legacy one whose pickle calls os.system / builtins.eval raise
    UnsafePickleError naming the global; the command never runs (no marker file)."""
    monkeypatch.chdir(tmp_path)
    _zip_checkpoint(tmp_path / "evil.pth", pickle.dumps({"w": _Evil()}, protocol=2))
    with pytest.raises(UnsafePickleError, match="refusing to load global (posix|os).system"):
        load_torch_state_dict(tmp_path / "evil.pth")
    buf = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(obj, buf, protocol=2)
    buf.write(pickle.dumps({"w": _Evil()}, protocol=2))
    (tmp_path / "evil_legacy.pth").write_bytes(buf.getvalue())
    with pytest.raises(UnsafePickleError, match="system"):
        load_torch_state_dict(tmp_path / "evil_legacy.pth")
    assert not (tmp_path / "EVIL_MARKER").exists()
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="bad magic number"):
        load_torch_state_dict(tmp_path / "junk.pth")


def test_truncated_storage_is_refused(tmp_path):
    """A zip checkpoint whose storage file is shorter than its tensor needs raises instead of reading
    past the buffer."""
    good = tmp_path / "good.pth"
    torch.save({"w": torch.randn(10)}, good)
    with zipfile.ZipFile(good) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    bad = tmp_path / "bad.pth"
    with zipfile.ZipFile(bad, "w") as z:
        for n, data in entries.items():
            z.writestr(n, data[:8] if n.endswith("data/0") else data)
    with pytest.raises(pickle.UnpicklingError, match="bytes for 10"):
        load_torch_state_dict(bad)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A pytorch-fid-format file of one random state dict (torch.save, zip format; the legacy format is
    read by the same code path, checked above on every dtype)."""
    sd = random_state_dict(seed=5)
    path = tmp_path_factory.mktemp("inception") / "pt_inception_random.pth"
    torch.save(to_torch(sd), path)
    return sd, path


def test_state_dict_file_maps_onto_the_network_exactly(inception_file):
    """A torch.save-d pytorch-fid state dict (random values, pytorch-fid's 566 keys incl. 94
    num_batches_tracked) loads through the file path: every Flax leaf equals the torch tensor bit for bit
    (conv OIHW -> HWIO, fc [out, in] -> [in, out], BN weight/bias/running_mean/running_var -> scale/bias/
    mean/var), and the tree has exactly the network's 472 leaves and shapes."""
    import jax

    sd, path = inception_file
    assert len(sd) == 566
    variables, fp = metrics.load_inception_params(path, sha256=metrics.sha256_file(path))
    assert fp == metrics.params_fingerprint(variables)
    p = variables["params"]
    assert jax.tree.structure(p) == jax.tree.structure(W.inception_param_shapes()["params"])
    assert len(jax.tree.leaves(p)) == 472
    np.testing.assert_array_equal(p["Conv2d_1a_3x3"]["kernel"], sd["Conv2d_1a_3x3.conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(p["Mixed_6b"]["branch7x7_2"]["kernel"],
                                  sd["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0))
    assert p["Mixed_6b"]["branch7x7_2"]["kernel"].shape == (1, 7, 128, 128)
    np.testing.assert_array_equal(p["fc"]["kernel"], sd["fc.weight"].T)
    np.testing.assert_array_equal(p["fc"]["bias"], sd["fc.bias"])
    bn = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
    for flax_leaf, torch_leaf in bn.items():
        np.testing.assert_array_equal(p["Mixed_7c"]["branch_pool"][flax_leaf],
                                      sd[f"Mixed_7c.branch_pool.bn.{torch_leaf}"])
    # every one of the 470 BN/conv entries, by the mapping's own key list
    for key, shape in W.inception_state_dict_keys().items():
        assert sd[key].shape == shape, key


def test_checksum_missing_file_and_environment_variable(inception_file, tmp_path, monkeypatch):
    """Default (pinned sha256) on a random file: ValueError with both hashes, the URL, the env var and the
    config flag. Missing path / unset env var: FileNotFoundError with the same instructions. The env var is
    read when no path is given."""
    _, path = inception_file
    with pytest.raises(ValueError, match=f"expected {metrics.INCEPTION_SHA256}") as e:
        metrics.load_inception_params(path)
    msg = str(e.value)
    assert metrics.sha256_file(path) in msg and metrics.INCEPTION_URL in msg
    assert "--config.eval.inception_weights=PATH" in msg and "SDE_JAX_INCEPTION_WEIGHTS" in msg
    monkeypatch.delenv("SDE_JAX_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match="SDE_JAX_INCEPTION_WEIGHTS is not set") as e:
        metrics.resolve_inception_weights()
    assert metrics.INCEPTION_URL in str(e.value) and metrics.INCEPTION_SHA256 in str(e.value)
    with pytest.raises(FileNotFoundError, match="does not exist.*pytorch-fid"):
        metrics.load_inception_params(tmp_path / "nope.pth")
    monkeypatch.setenv("SDE_JAX_INCEPTION_WEIGHTS", str(path))
    assert metrics.resolve_inception_weights() == path
    monkeypatch.setenv("SDE_JAX_INCEPTION_WEIGHTS", str(tmp_path / "gone.pth"))
    with pytest.raises(FileNotFoundError, match=r"from \$SDE_JAX_INCEPTION_WEIGHTS"):
        metrics.resolve_inception_weights()


def test_wrong_keys_and_shapes_are_named(inception_file):
    """A transposed fc weight, a missing key and torchvision's ImageNet AuxLogits keys each raise a
    ValueError naming the key and the expected shape / the network."""
    sd = dict(inception_file[0])
    bad = dict(sd, **{"fc.weight": sd["fc.weight"].T})
    with pytest.raises(ValueError, match=r"'fc.weight' has shape \(2048, 1008\); the FID Inception expects "
                                         r"\(1008, 2048\)"):
        metrics.inception_params_from_state_dict(bad)
    missing = {k: v for k, v in sd.items() if k != "Mixed_5b.branch1x1.bn.running_var"}
    with pytest.raises(ValueError, match="1 missing keys.*Mixed_5b.branch1x1.bn.running_var"):
        metrics.inception_params_from_state_dict(missing)
    aux = dict(sd, **{"AuxLogits.fc.weight": np.zeros((1000, 768), np.float32)})
    with pytest.raises(ValueError, match="unexpected keys.*AuxLogits.*no AuxLogits"):
        metrics.inception_params_from_state_dict(aux)


def test_npz_roundtrip_fingerprint_and_tampering(inception_file, tmp_path):
    """Our .npz: loads to the same variables and fingerprint as the .pth it came from; checked against the
    recorded source sha256 (a different one raises); an edited array fails its fingerprint check; missing
    arrays are counted."""
    import jax

    _, path = inception_file
    src_sha = metrics.sha256_file(path)
    variables, fp = metrics.load_inception_params(path, sha256=src_sha)
    npz = tmp_path / "inception.npz"
    assert metrics.save_inception_npz(npz, variables, source_sha256=src_sha) == fp
    again, fp2 = metrics.load_inception_params(npz, sha256=src_sha)
    assert fp2 == fp
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(again)))
    with pytest.raises(ValueError, match="converted from a file with sha256"):
        metrics.load_inception_params(npz)                         # the pinned hash is not this random file's
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["Mixed_5b/branch1x1/scale"] = arrays["Mixed_5b/branch1x1/scale"] + 1.0
    np.savez(tmp_path / "edited.npz", **arrays)
    with pytest.raises(ValueError, match="do not match the parameter fingerprint"):
        metrics.load_inception_params(tmp_path / "edited.npz", sha256=src_sha)
    np.savez(tmp_path / "partial.npz", __meta__=arrays["__meta__"], **{"Mixed_5b/branch1x1/scale": np.zeros(3)})
    with pytest.raises(ValueError, match="471 missing arrays"):
        metrics.load_inception_params(tmp_path / "partial.npz", sha256=src_sha)
