"""The tiny image config of the experiment tests (also a config file for the command line:
``--config tests/images_tiny_config.py``): a DDPM++ with 16 channels at one resolution on the 8x8 digits, one
device, a few steps."""
from experiments.images import configs


def tiny_digits_config(num_steps: int = 4, batch_size: int = 16):
    c = configs.load("digits")
    c.model.nf, c.model.ch_mult, c.model.num_res_blocks, c.model.attn_resolutions = 16, (1,), 1, ()
    t = c.training
    t.batch_size, t.num_steps, t.steps_per_call, t.log_every = batch_size, num_steps, 2, 2
    t.checkpoint_every, t.eval_every, t.eval_batches, t.snapshot_every = 2, 0, 1, 0
    t.snapshot_samples = 8
    c.optim.warmup = 2
    c.sampling.num_steps = 8
    c.eval.num_samples, c.eval.batch_size, c.eval.grid_size = 24, 16, 24
    c.eval.bpd_num_examples, c.eval.bpd_batch_size, c.eval.bpd_num_repeats = 8, 8, 1
    c.eval.bpd_rtol = c.eval.bpd_atol = 1e-2
    c.eval.classifier_steps = 60
    c.training.num_devices = 1
    return c


def get_config():
    return tiny_digits_config()
