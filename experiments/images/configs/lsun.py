"""LSUN 256x256 (128 for NCSNv2) with the paper's configs: ``--config experiments/images/configs/lsun.py[:NAME]``.

``NAME``: ``ve/church_ncsnpp_continuous`` (default), ``ve/bedroom_ncsnpp_continuous``, ``vp/ddpm/church``,
``ve/ncsnv2/bedroom``. Data: tfds ``lsun/<category>`` (train / validation), square central crop and bicubic
resize. These sets are too large to replicate on every device: ``data.layout='sharded'`` deals them to the
devices (each process loads only its devices' part).
"""
from experiments.images.configs.common import paper


def get_config(name: str = "ve/church_ncsnpp_continuous"):
    c = paper(name, "LSUN")
    c.data.layout = "sharded"
    return c
