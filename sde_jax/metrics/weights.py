"""The FID Inception's weights: from a file the user provides, verified by sha256, never downloaded.

Sources, both read without torch and without unpickling code:

* pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (the 2015-12-05 TensorFlow graph's weights ported
  to PyTorch; ``FID_WEIGHTS_URL`` of pytorch-fid), read by :func:`sde_jax.metrics.torch_pickle.load_torch_state_dict`
  and checked against :data:`INCEPTION_SHA256`;
* an ``.npz`` of our own layout (:func:`save_inception_npz`): one array per parameter, named by its path in
  the Flax tree (``Mixed_6b/branch7x7_2/kernel``), plus ``__meta__`` (JSON: format, the source file's sha256,
  the parameter fingerprint). Its sha256 cannot be pinned (we cannot publish the converted bytes), so it is
  checked two ways: its recorded source sha256 must be :data:`INCEPTION_SHA256`, and its arrays must
  reproduce its recorded parameter fingerprint (:func:`sde_jax.metrics.features.params_fingerprint`, which
  is the same for the ``.pth`` and its conversion).

The path comes from the ``path`` argument, else the environment variable ``SDE_JAX_INCEPTION_WEIGHTS``
(experiments pass ``--config.eval.inception_weights=PATH`` as ``path``). A missing file or a wrong checksum
fails at once, with where the file comes from and how to pass it.

About the pinned sha256: torch hub names files ``<name>-<first 8 hex digits of the sha256>.pth``, so
``6726825d`` is the prefix of the file's sha256. pytorch-fid publishes no full hash; the full value below
is the one recorded independently by several public projects that verify this file (and torch-fidelity's
identical ``weights-inception-2015-12-05-6726825d.pth``), e.g. hash checks written as
``sha256(pt_inception-2015-12-05-6726825d.pth) == 6726825d0af5...`` and a report of the downloaded file
(95,628,359 bytes, 566 entries) with this hash. It agrees with the torch-hub prefix. It could not be checked
against the file itself here (no network).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from sde_jax.metrics.features import FeatureExtractor, params_fingerprint
from sde_jax.metrics.inception import INCEPTION_SIZE, InceptionV3, RESIZE_METHODS, preprocess
from sde_jax.metrics.torch_pickle import load_torch_state_dict

__all__ = ["INCEPTION_FILENAME", "INCEPTION_URL", "INCEPTION_SHA256", "INCEPTION_ENV_VAR", "INCEPTION_NAME",
           "resolve_inception_weights", "sha256_file", "inception_params_from_state_dict",
           "inception_state_dict_keys", "load_inception_params", "save_inception_npz", "load_inception",
           "inception_param_shapes", "inception_extractor"]

INCEPTION_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_FILENAME}"
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
INCEPTION_ENV_VAR = "SDE_JAX_INCEPTION_WEIGHTS"
INCEPTION_NAME = "inception-2015-12-05"
NPZ_FORMAT = "sde_jax.inception_npz/1"

_HOW_TO = (f"Download {INCEPTION_FILENAME} (pytorch-fid's release, {INCEPTION_URL}; sha256 {INCEPTION_SHA256}) "
           f"on a machine with internet access, copy it here and pass its path: "
           f"--config.eval.inception_weights=PATH in the experiments, the environment variable "
           f"{INCEPTION_ENV_VAR}=PATH, or path=... in Python. Nothing is downloaded at run time.")

# torch BatchNorm2d / Linear names -> ours; num_batches_tracked is ignored.
_TORCH_TO_FLAX = {"conv.weight": "kernel", "bn.weight": "scale", "bn.bias": "bias", "bn.running_mean": "mean",
                  "bn.running_var": "var"}


def resolve_inception_weights(path: str | os.PathLike | None = None) -> pathlib.Path:
    """The weights file to use: ``path`` if given, else ``$SDE_JAX_INCEPTION_WEIGHTS``.

    Raises:
      FileNotFoundError: neither is set, or the file does not exist; the message says where the file comes
        from, its sha256 and how to pass it.
    """
    src = "the path argument"
    if path is None or path == "":
        path, src = os.environ.get(INCEPTION_ENV_VAR) or None, f"${INCEPTION_ENV_VAR}"
    if path is None:
        raise FileNotFoundError(f"No Inception weights file given (no path argument and {INCEPTION_ENV_VAR} is "
                                f"not set). {_HOW_TO}")
    p = pathlib.Path(os.path.expanduser(os.fspath(path)))
    if not p.is_file():
        raise FileNotFoundError(f"Inception weights file {str(p)!r} (from {src}) does not exist. {_HOW_TO}")
    return p


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def inception_param_shapes() -> dict:
    """The Flax parameter tree of :class:`InceptionV3` as ``jax.ShapeDtypeStruct`` leaves (no compute)."""
    x = jax.ShapeDtypeStruct((1, INCEPTION_SIZE, INCEPTION_SIZE, 3), jnp.float32)
    return jax.eval_shape(lambda: InceptionV3().init(jax.random.key(0), jnp.zeros(x.shape)))


def _flat_paths():
    """``[(flax path tuple, torch key, shape)]`` for every parameter, in network order."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(inception_param_shapes())[0]:
        names = tuple(p.key for p in path)               # ("params", module..., leaf)
        mods, leaf_name = names[1:-1], names[-1]
        if mods == ("fc",):
            torch_key = f"fc.{'weight' if leaf_name == 'kernel' else 'bias'}"
        else:
            torch_leaf = {v: k for k, v in _TORCH_TO_FLAX.items()}[leaf_name]
            torch_key = ".".join(mods) + "." + torch_leaf
        out.append((names, torch_key, tuple(leaf.shape)))
    return out


def inception_state_dict_keys() -> dict[str, tuple[int, ...]]:
    """pytorch-fid's state-dict keys and their torch shapes (``num_batches_tracked`` excluded)."""
    return {key: _torch_shape(names, shape) for names, key, shape in _flat_paths()}


def _torch_shape(names, shape):
    if names[-1] == "kernel" and len(shape) == 4:                # HWIO -> OIHW
        return (shape[3], shape[2], shape[0], shape[1])
    if names[-1] == "kernel":                                    # fc: [in, out] -> [out, in]
        return (shape[1], shape[0])
    return shape


def _to_flax(array, names):
    a = np.asarray(array, np.float32)
    if names[-1] == "kernel" and a.ndim == 4:
        return np.ascontiguousarray(a.transpose(2, 3, 1, 0))
    if names[-1] == "kernel":
        return np.ascontiguousarray(a.T)
    return a


def _nest(flat: dict[tuple, np.ndarray]) -> dict:
    tree: dict = {}
    for names, a in flat.items():
        node = tree
        for n in names[:-1]:
            node = node.setdefault(n, {})
        node[names[-1]] = a
    return tree


def inception_params_from_state_dict(state_dict: dict) -> dict:
    """Map a pytorch-fid state dict (``{key: array}``, torch layouts) onto :class:`InceptionV3`'s variables
    ``{"params": ...}`` (ready for ``InceptionV3().apply``).

    Conv weights ``[O, I, kh, kw]`` become kernels ``[kh, kw, I, O]``, ``fc.weight [1008, 2048]`` becomes
    ``fc/kernel [2048, 1008]``; batch-norm ``weight, bias, running_mean, running_var`` become ``scale, bias,
    mean, var``. Values are copied exactly (float32).

    Raises:
      ValueError: a missing key, an unexpected key (other than ``num_batches_tracked``; e.g. torchvision's
        ImageNet Inception with ``AuxLogits``), or a wrong shape, each named with the expected value.
    """
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    expected = _flat_paths()
    want = {key for _, key, _ in expected}
    missing = sorted(want - set(sd))
    unexpected = sorted(k for k in set(sd) - want if not k.endswith("num_batches_tracked"))
    if missing or unexpected:
        raise ValueError(f"not a pytorch-fid FID-Inception state dict: {len(missing)} missing keys "
                         f"{missing[:5]}{'...' if len(missing) > 5 else ''}, {len(unexpected)} unexpected keys "
                         f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''} (the FID Inception has 1008 "
                         f"classes and no AuxLogits; torchvision's ImageNet Inception is a different network).")
    flat = {}
    for names, key, shape in expected:
        tshape = _torch_shape(names, shape)
        got = tuple(np.shape(sd[key]))
        if got != tshape:
            raise ValueError(f"state dict entry {key!r} has shape {got}; the FID Inception expects {tshape}.")
        flat[names] = _to_flax(sd[key], names)
    return _nest(flat)


def save_inception_npz(path: str | os.PathLike, params: dict, *, source_sha256: str) -> str:
    """Write ``params`` in our ``.npz`` layout (module docstring); returns the parameter fingerprint."""
    fp = params_fingerprint(params)
    arrays = {"/".join(p.key for p in path[1:]): np.asarray(leaf)
              for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    arrays["__meta__"] = np.array(json.dumps(dict(format=NPZ_FORMAT, source_sha256=source_sha256,
                                                  params_sha256=fp, network=INCEPTION_NAME)))
    np.savez(path, **arrays)
    return fp


def _load_npz(path: pathlib.Path):
    with np.load(path, allow_pickle=False) as z:
        if "__meta__" not in z.files:
            raise ValueError(f"{path}: not an sde_jax Inception .npz (no '__meta__' entry).")
        meta = json.loads(str(z["__meta__"]))
        flat = {("params",) + tuple(k.split("/")): z[k] for k in z.files if k != "__meta__"}
    if meta.get("format") != NPZ_FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r}; this version reads {NPZ_FORMAT!r}.")
    expected = {names: shape for names, _, shape in _flat_paths()}
    missing, unexpected = sorted(set(expected) - set(flat)), sorted(set(flat) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: {len(missing)} missing arrays {['/'.join(m[1:]) for m in missing[:5]]}, "
                         f"{len(unexpected)} unexpected {['/'.join(u[1:]) for u in unexpected[:5]]}.")
    for names, shape in expected.items():
        if tuple(flat[names].shape) != shape:
            raise ValueError(f"{path}: array {'/'.join(names[1:])!r} has shape {tuple(flat[names].shape)}; "
                             f"the FID Inception expects {shape}.")
    return _nest(flat), meta


def load_inception_params(path: str | os.PathLike | None = None, *, sha256: str | None = INCEPTION_SHA256,
                          ) -> tuple[dict, str]:
    """Load and verify the FID Inception's parameters from a ``.pth`` (pytorch-fid) or ``.npz`` (ours).

    Args:
      path: the file; ``None``: ``$SDE_JAX_INCEPTION_WEIGHTS`` (:func:`resolve_inception_weights`).
      sha256: the sha256 the ``.pth`` must have, and the source sha256 an ``.npz`` must record
        (default: :data:`INCEPTION_SHA256`). ``None`` skips both checks (random-weight tests only).

    Returns:
      ``(variables, fingerprint)``: ``{"params": ...}`` for ``InceptionV3().apply`` and the parameter
      fingerprint.

    Raises:
      FileNotFoundError: no file (message: where it comes from, how to pass it).
      ValueError: wrong checksum, an ``.npz`` whose arrays do not match its recorded fingerprint, wrong
        keys or shapes.
    """
    p = resolve_inception_weights(path)
    if p.suffix == ".npz":
        variables, meta = _load_npz(p)
        fp = params_fingerprint(variables)
        if fp != meta.get("params_sha256"):
            raise ValueError(f"{p}: its arrays do not match the parameter fingerprint it records "
                             f"({meta.get('params_sha256')!r}; computed {fp!r}): the file is corrupt or edited.")
        if sha256 is not None and meta.get("source_sha256") != sha256:
            raise ValueError(f"{p}: converted from a file with sha256 {meta.get('source_sha256')!r}, not the "
                             f"expected {sha256}. {_HOW_TO}")
        return variables, fp
    if sha256 is not None:
        got = sha256_file(p)
        if got != sha256:
            raise ValueError(f"Inception weights file {str(p)!r} has sha256 {got}, expected {sha256} "
                             f"({INCEPTION_FILENAME}); the file is incomplete, corrupt or a different network. "
                             f"{_HOW_TO}")
    variables = inception_params_from_state_dict(load_torch_state_dict(p))
    return variables, params_fingerprint(variables)


def _inception_apply(model: InceptionV3, resize: str, variables, images):
    out = model.apply(variables, preprocess(images, resize))
    return {"features": out["pool3"], "logits": out["logits_unbiased"], "logits_with_bias": out["logits"]}


def inception_extractor(variables, *, verified: bool = False, resize: str = "pytorch_fid", precision="highest",
                        fingerprint: str = "") -> FeatureExtractor:
    """The FID Inception with the given ``variables`` as a
    :class:`~sde_jax.metrics.features.FeatureExtractor` (use :func:`load_inception` for the real weights).

    Its ``apply_fn(variables, images_uint8)`` returns ``features`` (pool3, ``[B, 2048]``), ``logits``
    (``pool3 @ W``, the Inception Score's input as in Salimans et al.'s code) and ``logits_with_bias``.
    Named ``inception-2015-12-05`` (results labelled FID/KID/IS) only if ``verified``, else
    ``inception-unverified``; a non-default ``resize`` (``"tf1"``, see :mod:`sde_jax.metrics.inception`) or
    ``precision`` is part of the name.
    """
    if resize not in RESIZE_METHODS:
        raise ValueError(f"resize must be one of {RESIZE_METHODS}; got {resize!r}.")
    name = INCEPTION_NAME if verified else "inception-unverified"
    if resize != "pytorch_fid":
        name += f".{resize}-resize"
    if precision != "highest":
        name += f".precision-{precision}"
    apply = functools.partial(_inception_apply, InceptionV3(precision=precision), resize)
    return FeatureExtractor(name, apply, variables, inception=verified, fingerprint=fingerprint)


def load_inception(path: str | os.PathLike | None = None, *, sha256: str | None = INCEPTION_SHA256,
                   resize: str = "pytorch_fid", precision="highest") -> FeatureExtractor:
    """The FID Inception, weights from a file checked by sha256 (:func:`load_inception_params`), as a
    :class:`~sde_jax.metrics.features.FeatureExtractor` (:func:`inception_extractor`).

    Args:
      path, sha256: as :func:`load_inception_params`.
      resize: ``"pytorch_fid"`` (default; pytorch-fid's bilinear resize) or ``"tf1"`` (the TF graph's
        resize formula); see :mod:`sde_jax.metrics.inception`.
      precision: convolution precision (:class:`~sde_jax.metrics.inception.InceptionV3`).

    Unless ``sha256`` is the pinned :data:`INCEPTION_SHA256` (e.g. ``None`` or another file's hash, for
    random-weight tests) the extractor is named ``inception-unverified`` and its results are not labelled
    FID/KID/IS.
    """
    if resize not in RESIZE_METHODS:
        raise ValueError(f"resize must be one of {RESIZE_METHODS}; got {resize!r}.")
    variables, fp = load_inception_params(path, sha256=sha256)
    return inception_extractor(variables, verified=sha256 == INCEPTION_SHA256, resize=resize, precision=precision,
                               fingerprint=fp)
