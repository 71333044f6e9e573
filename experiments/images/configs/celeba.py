"""CelebA 64x64 with the paper's configs: ``--config experiments/images/configs/celeba.py[:NAME]``.

``NAME``: ``ve/celeba_ncsnpp`` (default) or ``ve/ncsnv2/celeba``. Data: tfds ``celeb_a`` (train / validation),
central 140x140 crop then resized to 64 as in the paper.
"""
from experiments.images.configs.common import paper


def get_config(name: str = "ve/celeba_ncsnpp"):
    return paper(name, "CELEBA")
