"""FFHQ / CelebA-HQ with the paper's configs: ``--config experiments/images/configs/ffhq.py[:NAME]``.

``NAME``: ``ve/ffhq_256_ncsnpp_continuous`` (default), ``ve/ffhq_ncsnpp_continuous`` (1024x1024),
``ve/celebahq_256_ncsnpp_continuous``, ``ve/celebahq_ncsnpp_continuous``, ``vp/ddpm/celebahq``. tensorflow-datasets
has no FFHQ and the paper reads its own TFRecords, so the data are a folder of images or an ``.npz``:
``--config.data.path=/data/ffhq/images1024x1024`` (``--config.data.source=array`` for an ``.npz``).
"""
from experiments.images.configs.common import paper


def get_config(name: str = "ve/ffhq_256_ncsnpp_continuous"):
    c = paper(name, "FFHQ")
    c.data.layout = "sharded"
    return c
