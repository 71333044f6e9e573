"""Facts about the paper's checkpoints for the CPU-sized configs, written down by hand from reading the paper's
model constructors (yang-song/score_sde_pytorch ``models/{ncsnpp,ddpm,ncsnv2,layers,layerspp}.py`` and
yang-song/score_sde ``models/*.py``), not derived from our code: the order and kind of the top-level modules,
and the names and shapes of some tensors. The checkpoint-import tests hold the importer to them.

Module order (NCSN++/DDPM, ``all_modules.<k>``): embedding, the first conv, per level the residual blocks
(attention after each at resolution 16), a down-sampling block (+ the input-pyramid modules) except at the
last level, middle block/attention/block, per level from the bottom ``num_res_blocks + 1`` blocks,
attention at 16, the output-pyramid modules, an up-sampling block except at the top, and the output
GroupNorm + conv (none with the output_skip pyramid).
"""
from __future__ import annotations

from sde_jax.models import get_config

SKIP = "small/ncsnpp_skip"
"""``small/ncsnpp`` with the pyramids of the paper's 256/1024-pixel configs: progressive output_skip,
progressive_input input_skip, combine sum."""


def small_config(name):
    if name == SKIP:
        cfg = get_config("small/ncsnpp")
        cfg.model.update(dict(progressive="output_skip", progressive_input="input_skip", progressive_combine="sum"))
        return cfg
    return get_config(name)


_NCSNPP = ["fourier", "linear", "linear", "conv",
           "rb", "rb_down", "pyr_down_conv",                      # level 0 (32x32)
           "rb", "attn", "rb_down", "pyr_down_conv",              # level 1 (16x16)
           "rb",                                                  # level 2 (8x8)
           "rb", "attn", "rb",                                    # middle
           "rb", "rb", "rb_up",
           "rb", "rb", "attn", "rb_up",
           "rb", "rb",
           "gn", "conv"]
_DDPMPP = ["linear", "linear", "conv",
           "rb", "rb_down", "rb", "attn", "rb_down", "rb",
           "rb", "attn", "rb",
           "rb", "rb", "rb_up", "rb", "rb", "attn", "rb_up", "rb", "rb",
           "gn", "conv"]
_DDPM = ["linear", "linear", "conv",
         "ddpm_rb", "down", "ddpm_rb", "ddpm_attn", "down", "ddpm_rb",
         "ddpm_rb", "ddpm_attn", "ddpm_rb",
         "ddpm_rb", "ddpm_rb", "up", "ddpm_rb", "ddpm_rb", "ddpm_attn", "up", "ddpm_rb", "ddpm_rb",
         "gn", "conv"]
_SKIP = ["fourier", "linear", "linear", "conv",
         "rb", "rb_down", "pyr_down", "combine",
         "rb", "attn", "rb_down", "pyr_down", "combine",
         "rb",
         "rb", "attn", "rb",
         "rb", "rb", "gn", "conv", "rb_up",
         "rb", "rb", "attn", "pyr_up", "gn", "conv", "rb_up",
         "rb", "rb", "pyr_up", "gn", "conv"]

MODULE_KINDS = {"small/ncsnpp": _NCSNPP, "small/ddpmpp": _DDPMPP, "small/ddpm": _DDPM, SKIP: _SKIP}
"""``all_modules.<k>`` of the PyTorch model is the ``k``-th entry; the same order is the Flax call order."""

NCSNV2_MODULES = [("begin_conv", "ncsn_conv"),
                  ("res1.0", "res"), ("res1.1", "res"), ("res2.0", "res_down"), ("res2.1", "res"),
                  ("res3.0", "res_down_dil2"), ("res3.1", "res_dil2"), ("res4.0", "res_down_dil4"),
                  ("res4.1", "res_dil4"),
                  ("refine1", "refine_start"), ("refine2", "refine"), ("refine3", "refine"), ("refine4", "refine_end"),
                  ("normalizer", "inorm_plus"), ("end_conv", "ncsn_conv")]
"""NCSNv2 (``ncsnv2_64``) modules in the order the forward pass calls them (PyTorch attribute names)."""

# kind -> (our Flax class, the paper's Flax class); Flax names are '<class>_<count of that class so far>'.
KIND_CLASSES = {
    "fourier": ("GaussianFourierProjection", "GaussianFourierProjection"), "linear": ("Dense", "Dense"),
    "conv": ("DDPMConv", "Conv"), "gn": ("GroupNorm", "GroupNorm"),
    "rb": ("ResnetBlockBigGAN", "ResnetBlockBigGANpp"), "rb_down": ("ResnetBlockBigGAN", "ResnetBlockBigGANpp"),
    "rb_up": ("ResnetBlockBigGAN", "ResnetBlockBigGANpp"), "attn": ("AttnBlock", "AttnBlockpp"),
    "pyr_down_conv": ("Downsample", "Downsample"), "pyr_down": ("Downsample", "Downsample"),
    "pyr_up": ("Upsample", "Upsample"), "combine": ("Combine", "Combine"),
    "ddpm_rb": ("ResnetBlockDDPM", "ResnetBlockDDPM"), "ddpm_attn": ("AttnBlock", "AttnBlock"),
    "down": ("Downsample", "Downsample"), "up": ("Upsample", "Upsample"),
    "ncsn_conv": ("NCSNConv", "Conv"), "res": ("ResidualBlock", "ResidualBlock"),
    "res_down": ("ResidualBlock", "ResidualBlock"), "res_down_dil2": ("ResidualBlock", "ResidualBlock"),
    "res_dil2": ("ResidualBlock", "ResidualBlock"), "res_down_dil4": ("ResidualBlock", "ResidualBlock"),
    "res_dil4": ("ResidualBlock", "ResidualBlock"), "refine_start": ("RefineBlock", "RefineBlock"),
    "refine": ("RefineBlock", "RefineBlock"), "refine_end": ("RefineBlock", "RefineBlock"),
    "inorm_plus": ("InstanceNorm2dPlus", "InstanceNorm2dPlus"),
}


def modules(name):
    """``[(torch prefix, kind, our Flax name, the paper's Flax name)]`` in call order."""
    if name == "small/ncsnv2":
        pairs = NCSNV2_MODULES
    else:
        pairs = [(f"all_modules.{k}", kind) for k, kind in enumerate(MODULE_KINDS[name])]
    ours, theirs, out = {}, {}, []
    for prefix, kind in pairs:
        a, b = KIND_CLASSES[kind]
        out.append((prefix, kind, f"{a}_{ours.get(a, 0)}", f"{b}_{theirs.get(b, 0)}"))
        ours[a], theirs[b] = ours.get(a, 0) + 1, theirs.get(b, 0) + 1
    return out


def _gn(p, c):
    return [(f"{p}.weight", (c,)), (f"{p}.bias", (c,))]


def _conv(p, o, i, k=3, bias=True):
    return [(f"{p}.weight", (o, i, k, k))] + ([(f"{p}.bias", (o,))] if bias else [])


def _in_plus(p, c):
    return [(f"{p}.alpha", (c,)), (f"{p}.gamma", (c,)), (f"{p}.beta", (c,))]


# config -> (tensors, scalars = the paper code's parameter count, {module prefix: [(name, shape)] in order})
TENSORS = {
    "small/ncsnpp": (217, 1_284_067, {
        "all_modules.0": [("all_modules.0.W", (32,))],
        "all_modules.1": [("all_modules.1.weight", (128, 64)), ("all_modules.1.bias", (128,))],
        "all_modules.3": _conv("all_modules.3", 32, 3),
        "all_modules.4": (_gn("all_modules.4.GroupNorm_0", 32) + _conv("all_modules.4.Conv_0", 32, 32)
                          + [("all_modules.4.Dense_0.weight", (32, 128)), ("all_modules.4.Dense_0.bias", (32,))]
                          + _gn("all_modules.4.GroupNorm_1", 32) + _conv("all_modules.4.Conv_1", 32, 32)),
        "all_modules.5": (_gn("all_modules.5.GroupNorm_0", 32) + _conv("all_modules.5.Conv_0", 32, 32)
                          + [("all_modules.5.Dense_0.weight", (32, 128)), ("all_modules.5.Dense_0.bias", (32,))]
                          + _gn("all_modules.5.GroupNorm_1", 32) + _conv("all_modules.5.Conv_1", 32, 32)
                          + _conv("all_modules.5.Conv_2", 32, 32, k=1)),
        "all_modules.6": _conv("all_modules.6.Conv2d_0", 32, 3),
        "all_modules.8": (_gn("all_modules.8.GroupNorm_0", 64)
                          + [x for i in range(4) for x in ((f"all_modules.8.NIN_{i}.W", (64, 64)),
                                                            (f"all_modules.8.NIN_{i}.b", (64,)))]),
        "all_modules.25": _conv("all_modules.25", 3, 32),
    }),
    "small/ddpmpp": (212, 1_260_547, {
        "all_modules.0": [("all_modules.0.weight", (128, 32)), ("all_modules.0.bias", (128,))],
        "all_modules.2": _conv("all_modules.2", 32, 3),
        "all_modules.22": _conv("all_modules.22", 3, 32),
    }),
    "small/ddpm": (172, 1_097_187, {
        "all_modules.0": [("all_modules.0.weight", (128, 32)), ("all_modules.0.bias", (128,))],
        "all_modules.4": _conv("all_modules.4.Conv_0", 32, 32),
        "all_modules.5": (_gn("all_modules.5.GroupNorm_0", 32) + _gn("all_modules.5.GroupNorm_1", 64)
                          + _conv("all_modules.5.Conv_0", 64, 32) + _conv("all_modules.5.Conv_1", 64, 64)
                          + [("all_modules.5.Dense_0.weight", (64, 128)), ("all_modules.5.Dense_0.bias", (64,)),
                             ("all_modules.5.NIN_0.W", (32, 64)), ("all_modules.5.NIN_0.b", (64,))]),
        "all_modules.22": _conv("all_modules.22", 3, 32),
    }),
    "small/ncsnv2": (153, 466_451, {
        "begin_conv": _conv("begin_conv", 16, 3),
        "normalizer": _in_plus("normalizer", 16),
        "end_conv": _conv("end_conv", 3, 16),
        "res2.0": (_conv("res2.0.conv1", 16, 16) + _in_plus("res2.0.normalize2", 16)
                   + _conv("res2.0.conv2.conv", 32, 16) + _conv("res2.0.shortcut.conv", 32, 16, k=1)
                   + _in_plus("res2.0.normalize1", 16)),
        "res3.0": (_conv("res3.0.conv1", 32, 32) + _in_plus("res3.0.normalize2", 32) + _conv("res3.0.conv2", 32, 32)
                   + _conv("res3.0.shortcut", 32, 32) + _in_plus("res3.0.normalize1", 32)),
        "refine1": ([x for s in ("1_1", "1_2", "2_1", "2_2")
                     for x in _conv(f"refine1.adapt_convs.0.{s}_conv", 32, 32, bias=False)]
                    + _conv("refine1.output_convs.1_1_conv", 32, 32, bias=False)
                    + _conv("refine1.output_convs.1_2_conv", 32, 32, bias=False)
                    + _conv("refine1.crp.convs.0", 32, 32, bias=False)
                    + _conv("refine1.crp.convs.1", 32, 32, bias=False)),
        "refine4": ([x for i in (0, 1) for s in ("1_1", "1_2", "2_1", "2_2")
                     for x in _conv(f"refine4.adapt_convs.{i}.{s}_conv", 16, 16, bias=False)]
                    + [x for s in ("1_1", "1_2", "2_1", "2_2", "3_1", "3_2")
                       for x in _conv(f"refine4.output_convs.{s}_conv", 16, 16, bias=False)]
                    + _conv("refine4.msf.convs.0", 16, 16) + _conv("refine4.msf.convs.1", 16, 16)
                    + _conv("refine4.crp.convs.0", 16, 16, bias=False)
                    + _conv("refine4.crp.convs.1", 16, 16, bias=False)),
    }),
}
"""The PyTorch state dicts of the small configs: tensor count, parameter count (the paper code's), and the
exact names, shapes and order of some modules' tensors (registration order inside a module: e.g. the DDPM
model's block lists both GroupNorms before its convs; NCSNv2's residual block lists ``normalize1`` last)."""

FIRST_LAST = {
    "small/ncsnpp": ("all_modules.0.W", "all_modules.25.bias"),
    "small/ddpmpp": ("all_modules.0.weight", "all_modules.22.bias"),
    "small/ddpm": ("all_modules.0.weight", "all_modules.22.bias"),
    "small/ncsnv2": ("begin_conv.weight", "refine4.crp.convs.1.weight"),
}
