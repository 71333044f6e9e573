"""Image experiments: ``python -m experiments.images --workdir DIR --config FILE --mode train|sample|eval``.

:mod:`experiments.images.experiment` holds the modes, :mod:`experiments.images.configs` the configs (the CPU
default ``digits.py``, ``mnist_small.py``, and the paper's ``cifar10.py``/``celeba.py``/``lsun.py``/``ffhq.py``).
"""
