"""tensorflow-datasets as a source, through its random-access API (no TensorFlow needed to read).

``TfdsSource("cifar10", "train", data_dir=...)`` opens ``tfds.builder(name, data_dir=...).as_data_source(split)``
(array_record files; ``tfds.data_source`` does the same after a download attempt). It never downloads: when
offline, tfds retries the network for minutes, so a set that is not prepared fails at once with a
:class:`~sde_jax.data.sources.DataNotFoundError` that says how to prepare it. ``name`` may also be the path of a
prepared dataset version directory (``.../cifar10/3.0.2``, read with ``tfds.builder_from_directory``).

Preparing needs a connected machine (and TensorFlow for sets whose features are encoded images, e.g. CIFAR-10)::

    pip install tensorflow-datasets tensorflow-cpu            # on the connected machine only
    tfds build cifar10 --data_dir=/data/tfds --file_format=array_record
    # copy /data/tfds to the training host, then
    python -m experiments.images ... --config.data.data_dir=/data/tfds

Reading back needs no TensorFlow. The image is the feature ``image_key`` (default ``"image"``), the label the
``ClassLabel`` feature ``label_key`` (default ``"label"``; none for e.g. ``celeb_a`` and ``lsun``).
"""
from __future__ import annotations

import os

import numpy as np

from sde_jax.data.sources import DataNotFoundError

__all__ = ["TfdsSource", "prepare_instructions"]


def prepare_instructions(name: str, data_dir: str | None) -> str:
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return (f"Prepare it on a connected machine with `tfds build {name} --data_dir=DIR --file_format=array_record` "
            f"(encoded-image sets such as cifar10 need `pip install tensorflow-cpu` there), copy DIR here and pass "
            f"--config.data.data_dir=DIR (looked in: {where}); or use a folder of images "
            f"(--config.data.source=folder --config.data.path=PATH) or an array file "
            f"(--config.data.source=array --config.data.path=FILE.npz).")


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:   # e.g. importlib_resources missing
        raise ImportError(f"tensorflow-datasets is needed to read {e.name or 'tfds'} data sets: "
                          f"pip install tensorflow-datasets importlib_resources ({e}).") from None
    return tfds


class TfdsSource:
    """A split of a prepared tensorflow-datasets set, read by index (see the module docstring).

    Args:
      name: a tfds name (``"cifar10"``, ``"mnist"``, ``"celeb_a"``, ``"lsun/bedroom"``, any set with an image
        feature) or the path of a prepared dataset version directory.
      split: a tfds split (``"train"``, ``"test"``, ``"validation"``, ``"train[:10%]"``).
      data_dir: where prepared sets live (tfds' default when ``None``).
      image_key, label_key: feature names (``label_key=None``: no labels).

    Raises:
      DataNotFoundError: the set is not prepared under ``data_dir`` (fails in well under a second).
      ValueError: unknown name, unknown split, no image feature.
    """

    def __init__(self, name: str, split: str = "train", *, data_dir: str | None = None, image_key: str = "image",
                 label_key: str | None = "label"):
        tfds = _tfds()
        self.name = name
        if os.path.isdir(name):
            builder = tfds.builder_from_directory(name)
        else:
            try:
                builder = tfds.builder(name, data_dir=data_dir)
            except tfds.core.registered.DatasetNotFoundError:
                raise ValueError(f"data.name: tensorflow-datasets has no data set {name!r} (and none is prepared "
                                 f"under {data_dir or 'the default data_dir'}).") from None
        try:
            self._ds = builder.as_data_source(split=split)
        except (NotImplementedError, FileNotFoundError, OSError, AssertionError) as e:
            if not builder.is_prepared():
                raise DataNotFoundError(f"tensorflow-datasets set {name!r} is not prepared under "
                                        f"{builder.data_dir}. {prepare_instructions(name, data_dir)}") from None
            raise DataNotFoundError(
                f"tensorflow-datasets set {name!r} at {builder.data_dir} cannot be read by index ({e}); it was "
                f"probably prepared as TFRecord: rebuild it with `tfds build {name} --file_format=array_record`."
            ) from None
        except ValueError as e:
            splits = list(builder.info.splits) if builder.info.splits else []
            raise ValueError(f"data split {split!r} of {name!r}: {e} (prepared splits: {splits}).") from None
        features = builder.info.features
        if image_key not in features:
            candidates = [k for k, f in features.items() if len(getattr(f, "shape", ()) or ()) == 3]
            if not candidates:
                raise ValueError(f"{name!r} has no image feature {image_key!r} (features: {list(features)}); set "
                                 f"data.image_key.")
            image_key = candidates[0]
        self.image_key = image_key
        self.label_key = label_key if label_key and label_key in features else None
        self.num_classes = int(getattr(features[self.label_key], "num_classes", 0) or 0) if self.label_key else 0
        self.builder = builder

    def __len__(self) -> int:
        return len(self._ds)

    def read(self, indices):
        images, labels = [], []
        for i in np.asarray(indices, np.int64):
            try:
                ex = self._ds[int(i)]
            except Exception as e:   # noqa: BLE001 - a broken record is named by its index
                raise ValueError(f"cannot read example {int(i)} of tfds set {self.name!r}: {e}") from None
            img = np.asarray(ex[self.image_key])
            images.append(img[..., None] if img.ndim == 2 else img)
            labels.append(int(ex[self.label_key]) if self.label_key else -1)
        return images, np.asarray(labels, np.int32)
