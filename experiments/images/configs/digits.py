"""The CPU default: a small DDPM++ (VP SDE, continuous DSM, the paper's CIFAR-10 recipe scaled down) trained on
scikit-learn's 1,797 real 8x8 handwritten digits (1,438 train / 359 test), minutes on 2 CPU cores.

``python -m experiments.images --workdir runs/digits --mode train`` then ``--mode sample`` and ``--mode eval``.
"""
from experiments.images.configs.common import experiment_fields
from sde_jax import models


def get_config():
    c = experiment_fields(models.get_config("small/ddpmpp"))
    c.seed = 0
    d = c.data
    d.source, d.name, d.train_split, d.eval_split = "digits", "digits", "train", "test"
    d.image_size, d.num_channels, d.centered = 8, 1, True
    d.random_flip = False                # digits are not mirror-symmetric

    m = c.model
    m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions = 16, (1, 2), 1, (4,)
    m.dropout = 0.0

    t = c.training
    t.batch_size = 64
    t.num_steps = 3000
    t.steps_per_call = 1                 # XLA:CPU runs convolutions ~10x slower inside a lax.scan loop
    t.log_every = 50
    t.checkpoint_every = 500
    t.eval_every = 1000
    t.eval_batches = 4
    t.snapshot_every = 3000              # one grid, at the end (a snapshot costs a sampler compile and run)
    t.snapshot_samples = 64

    o = c.optim
    o.lr, o.warmup, o.ema_rate, o.ema_warmup = 2e-3, 200, 0.999, True
    o.decay, o.final_lr_ratio = "cosine", 0.05

    s = c.sampling
    s.method, s.predictor, s.corrector = "pc", "euler_maruyama", "none"
    s.num_steps = 500
    s.eps = 1e-3

    e = c.eval
    e.num_samples, e.batch_size, e.grid_size = 500, 500, 100
    e.enable_bpd = True
    e.bpd_num_examples = 0                # the whole test split (359 images)
    e.bpd_batch_size = 360
    e.bpd_num_repeats = 1
    e.bpd_rtol = e.bpd_atol = 1e-4
    e.classifier_steps = 600

    i = c.inpaint                        # --mode inpaint: the 359 test digits, right half hidden
    i.mask, i.method, i.grid_size = "right_half", "replacement", 16

    g = c.guidance                       # --mode train_classifier / conditional: a WRN-10-2 on the 8x8 digits
    g.scale, g.samples_per_class = 1.0, 10
    g.classifier.model.update(blocks_per_group=1, channel_multiplier=2, embedding_size=64, embedding_width=128)
    g.classifier.training.update(batch_size=128, num_steps=1500, steps_per_call=1, log_every=100,
                                 checkpoint_every=500, eval_every=500, eval_batches=3)
    g.classifier.optim.update(lr=2e-3, warmup=100, ema_rate=0.99)
    return c
