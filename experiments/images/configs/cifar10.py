"""CIFAR-10 with the paper's configs: ``--config experiments/images/configs/cifar10.py[:NAME]``.

``NAME`` is one of ``sde_jax.models.config_names()`` for CIFAR-10 (default ``ve/cifar10_ncsnpp_continuous``; e.g.
``vp/cifar10_ddpmpp_continuous``, ``subvp/cifar10_ddpmpp_deep_continuous``, ``vp/ddpm/cifar10``). Data: tfds
``cifar10`` prepared under ``--config.data.data_dir`` (see ``sde_jax.data.tfds_source``); train on ``train``,
bits/dim and eval loss on ``test``.
"""
from experiments.images.configs.common import paper


def get_config(name: str = "ve/cifar10_ncsnpp_continuous"):
    return paper(name, "CIFAR10")
