"""Image data: sources (tensorflow-datasets, image folders, arrays, the packaged digits and MNIST-5k), the paper's
preprocessing, and batches on the device mesh as a pure function of ``(key, step)``.

* :mod:`~sde_jax.data.sources`: :class:`ArraySource`, :class:`FolderSource`, :func:`load_array_file`,
  :func:`digits`, :func:`mnist_5k`, :class:`DataNotFoundError`.
* :mod:`~sde_jax.data.tfds_source`: :class:`TfdsSource` (random access, no TensorFlow, fails fast when the set
  is not prepared).
* :mod:`~sde_jax.data.preprocess`: host geometry (:func:`fit_image`) and device scaling, flips and
  dequantisation (:func:`to_model_space`), :func:`to_uint8` for samples.
* :mod:`~sde_jax.data.pipeline`: ``config.data`` -> :func:`load_images` (host) and :func:`device_batches`
  (the ``batch_fn`` of :func:`sde_jax.training.fit`).
"""
from sde_jax.data.preprocess import RESIZE_FILTERS, data_range, fit_image, fit_images, to_model_space, to_uint8
from sde_jax.data.sources import (SPLITS, ArraySource, DataNotFoundError, FolderSource, class_histogram, digits,
                                  load_array_file, mnist_5k)
from sde_jax.data.tfds_source import TfdsSource
from sde_jax.data.pipeline import (LAYOUTS, SOURCES, DeviceBatches, check_data_config, device_batches, load_images,
                                   open_source, read_fitted, to_device)
