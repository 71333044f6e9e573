"""Read a PyTorch state dict (``torch.save`` file) into NumPy arrays without torch and without running code.

A ``.pth`` file is a pickle whose tensors point at raw storages stored beside it. ``pickle.load`` would
import and call whatever the pickle names, so we use a restricted unpickler that resolves only the handful of
globals a state dict needs and raises on every other:

* ``collections.OrderedDict`` (the state dict and its ``_metadata``);
* ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor`` / ``_rebuild_parameter`` (a tensor from a
  storage, offset, size and stride), replaced here by NumPy functions;
* ``torch.<Type>Storage`` (``Float``, ``Double``, ``Half``, ``BFloat16``, ``Long``, ``Int``, ``Short``,
  ``Char``, ``Byte``, ``Bool``), mapped to NumPy dtypes.

Both container formats are read:

* the zip format (torch >= 1.6): ``<name>/data.pkl`` plus one raw little-endian file per storage,
  ``<name>/data/<key>``; the persistent id is ``('storage', StorageType, key, location, numel)``;
* the legacy format (``_use_new_zipfile_serialization=False``, torch < 1.6): pickled magic number
  ``0x1950a86a20f9469cfc6c``, protocol version ``1001`` and system info, the object pickle, the pickled list
  of storage keys, then per key an int64 element count and the raw bytes.

Every tensor view is bounds-checked against its storage before it is read, so a malformed file raises
instead of reading outside the buffer. The result is a plain ``dict`` of C-contiguous NumPy arrays (copies),
keys in file order.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

__all__ = ["load_torch_state_dict", "UnsafePickleError"]

_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"), "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16), "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"), "ShortStorage": np.dtype("<i2"), "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks for a global that a state dict does not need (it may run code): refused."""


class _StorageType:
    def __init__(self, name: str):
        self.name, self.dtype = name, _STORAGE_DTYPES[name]


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused):
    """``torch._utils._rebuild_tensor_v2`` as NumPy: the strided view of ``storage`` (a 1-D array), copied."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise pickle.UnpicklingError("tensor without a storage")
    if len(size) != len(stride) or storage_offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise pickle.UnpicklingError(f"bad tensor geometry: offset {storage_offset}, size {size}, stride {stride}")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise pickle.UnpicklingError(f"tensor (offset {storage_offset}, size {size}, stride {stride}) reads past "
                                     f"the end of its storage ({storage.size} elements)")
    if not size:                                     # a 0-d tensor (as_strided would read shape () as "same")
        return np.array(storage[storage_offset])
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[storage_offset:], shape=size,
                                           strides=tuple(s * item for s in stride), writeable=False)
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, *_unused):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: a state dict needs only "
                f"{sorted(f'{m}.{n}' for m, n in _ALLOWED)}") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        stype, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"storage of unknown type {stype!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (torch < 0.4 files) are not supported")
        if key not in self._storages:
            self._storages[key] = self._load_storage(key, stype.dtype, numel)
        return self._storages[key]


def _load_zip(path) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ValueError(f"{path}: not a torch zip checkpoint (no single '<name>/data.pkl'; found {names[:5]}...)")
        root = pkl[0][: -len("data.pkl")]
        if f"{root}byteorder" in names and zf.read(f"{root}byteorder").strip() != b"little":
            raise ValueError(f"{path}: big-endian checkpoints are not supported")

        def load_storage(key, dtype, numel):
            raw = zf.read(f"{root}data/{key}")
            if len(raw) < numel * dtype.itemsize:
                raise pickle.UnpicklingError(f"storage {key}: {len(raw)} bytes for {numel} x {dtype}")
            return np.frombuffer(raw, dtype, count=numel)

        return _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), load_storage).load()


def _load_legacy(path) -> Any:
    with open(path, "rb") as f:
        try:                                   # the header pickles hold plain ints and dicts only
            magic = _RestrictedUnpickler(f, None).load()
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            if isinstance(e, UnsafePickleError):
                raise
            magic = None
        if magic != _MAGIC:
            raise ValueError(f"{path}: neither a torch zip checkpoint nor a legacy one (bad magic number)")
        if _RestrictedUnpickler(f, None).load() != _LEGACY_PROTOCOL:
            raise ValueError(f"{path}: unsupported legacy torch protocol version")
        sys_info = _RestrictedUnpickler(f, None).load()
        if not sys_info.get("little_endian", True):
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        # The storages follow the object pickle: read it once to learn them, then again with their data.
        start = f.tell()
        declared: dict[str, tuple[np.dtype, int]] = {}

        def declare(key, dtype, numel):
            declared[key] = (dtype, numel)
            return np.zeros(max(numel, 0), dtype)

        _RestrictedUnpickler(f, declare).load()
        keys = _RestrictedUnpickler(f, None).load()
        storages: dict[str, np.ndarray] = {}
        for key in keys:
            if key not in declared:
                raise pickle.UnpicklingError(f"storage {key!r} listed but not referenced")
            dtype, numel = declared[key]
            (count,) = struct.unpack("<q", f.read(8))
            if count != numel:
                raise pickle.UnpicklingError(f"storage {key}: {count} elements on disk, {numel} expected")
            raw = f.read(numel * dtype.itemsize)
            if len(raw) != numel * dtype.itemsize:
                raise pickle.UnpicklingError(f"storage {key}: file ends early")
            storages[key] = np.frombuffer(raw, dtype, count=numel)
        if set(declared) - set(storages):
            raise pickle.UnpicklingError(f"storages without data: {sorted(set(declared) - set(storages))}")
        f.seek(start)
        return _RestrictedUnpickler(f, lambda key, dtype, numel: storages[key]).load()


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a ``torch.save``-d state dict, as ``{name: np.ndarray}``, read without torch.

    Args:
      path: a ``.pth`` / ``.pt`` file holding a (possibly nested, e.g. ``{"state_dict": ...}``) mapping of
        names to tensors, in the zip or the legacy format.

    Returns:
      ``{name: array}`` in file order (nested mappings flattened with ``.``; ``_metadata`` dropped).

    Raises:
      UnsafePickleError: the pickle names any global outside the state-dict allow-list (module docstring).
      ValueError / pickle.UnpicklingError: not a torch checkpoint, or malformed.
    """
    path = os.fspath(path)
    obj = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
    out: dict[str, np.ndarray] = {}

    def walk(prefix, node):
        if isinstance(node, np.ndarray):
            out[prefix] = node
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        # other leaves (ints, strings of training metadata) are not tensors: skipped

    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    walk("", obj)
    return out
