"""Independent PyTorch computations of the paper networks' blocks, on the checkpoint's own tensors (OIHW convs,
(out, in) linear weights, GroupNorm ``weight``, NIN ``W``), for the checkpoint-import tests.

Written from the blocks' definitions (Ho et al. 2020; Song et al. 2021, Appendix H; Song & Ermon 2020) with
``torch.nn.functional``, NCHW, no code of ours and none of the paper's: if an imported tensor went to the
wrong place or was transposed the wrong way, our block and these disagree.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

FIR_KERNEL = (1.0, 3.0, 3.0, 1.0)


def conv(sd, p, x, *, stride=1, padding=1, dilation=1):
    return F.conv2d(x, sd[f"{p}.weight"], sd.get(f"{p}.bias"), stride=stride, padding=padding, dilation=dilation)


def linear(sd, p, x):
    return F.linear(x, sd[f"{p}.weight"], sd[f"{p}.bias"])


def group_norm(sd, p, x, groups):
    return F.group_norm(x, groups, sd[f"{p}.weight"], sd[f"{p}.bias"], eps=1e-6)


def nin(sd, p, x):
    """Per-pixel ``x W + b`` with ``W: [in, out]`` (kept as stored)."""
    return torch.einsum("bchw,cd->bdhw", x, sd[f"{p}.W"]) + sd[f"{p}.b"][None, :, None, None]


def fourier(sd, p, x):
    """``[sin(2 pi W x), cos(2 pi W x)]`` of the (already log-transformed) noise level ``x: [B]``."""
    proj = x[:, None] * sd[f"{p}.W"][None, :] * (2 * math.pi)
    return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


# --- FIR resampling (StyleGAN2's upfirdn2d) -------------------------------------------------------------------
def _fir(k, gain):
    k = np.outer(k, k)
    return torch.tensor(k / k.sum() * gain, dtype=torch.float32)


def upfirdn2d(x, k, *, up=1, down=1, pad=(0, 0)):
    """Insert ``up - 1`` zeros after each pixel, zero-pad, convolve (flipped kernel), keep every ``down``-th."""
    b, c, h, w = x.shape
    if up > 1:
        y = torch.zeros(b, c, h * up, w * up, dtype=x.dtype)
        y[:, :, ::up, ::up] = x
        x = y
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    weight = torch.flip(k, [0, 1])[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, weight, groups=c)[:, :, ::down, ::down]


def fir_up(x):
    return upfirdn2d(x, _fir(FIR_KERNEL, 4.0), up=2, pad=(2, 1))


def fir_down(x):
    return upfirdn2d(x, _fir(FIR_KERNEL, 1.0), down=2, pad=(1, 1))


def fir_conv_down(sd, p, x):
    """FIR filter (padding 2 each side) then a stride-2 3x3 conv, no further padding."""
    x = upfirdn2d(x, _fir(FIR_KERNEL, 1.0), pad=(2, 2))
    return conv(sd, p, x, stride=2, padding=0)


def naive_up(x):
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def naive_down(x):
    return F.avg_pool2d(x, 2)


# --- NCSN++ / DDPM++ / DDPM blocks ----------------------------------------------------------------------------
def biggan_block(sd, p, x, temb, *, up=False, down=False, fir=True):
    """BigGAN residual block with skip rescaling; GroupNorm groups ``min(C // 4, 32)``; swish."""
    act = F.silu
    cin = x.shape[1]
    h = act(group_norm(sd, f"{p}.GroupNorm_0", x, min(cin // 4, 32)))
    if up or down:
        resample = (fir_up if up else fir_down) if fir else (naive_up if up else naive_down)
        h, x = resample(h), resample(x)
    h = conv(sd, f"{p}.Conv_0", h)
    h = h + linear(sd, f"{p}.Dense_0", act(temb))[:, :, None, None]
    cout = h.shape[1]
    h = act(group_norm(sd, f"{p}.GroupNorm_1", h, min(cout // 4, 32)))
    h = conv(sd, f"{p}.Conv_1", h)
    if f"{p}.Conv_2.weight" in sd:
        x = conv(sd, f"{p}.Conv_2", x, padding=0)
    return (x + h) / math.sqrt(2.0)


def ddpm_block(sd, p, x, temb):
    """The DDPM model's residual block: GroupNorm(32), swish, NIN shortcut when channels change, no rescale."""
    act = F.silu
    h = act(group_norm(sd, f"{p}.GroupNorm_0", x, 32))
    h = conv(sd, f"{p}.Conv_0", h) + linear(sd, f"{p}.Dense_0", act(temb))[:, :, None, None]
    h = conv(sd, f"{p}.Conv_1", act(group_norm(sd, f"{p}.GroupNorm_1", h, 32)))
    if f"{p}.NIN_0.W" in sd:
        x = nin(sd, f"{p}.NIN_0", x)
    return x + h


def attention(sd, p, x, *, groups, skip_rescale):
    """Single-head self-attention over the H W pixels of each image."""
    b, c, hh, ww = x.shape
    h = group_norm(sd, f"{p}.GroupNorm_0", x, groups)
    q, k, v = (nin(sd, f"{p}.NIN_{i}", h).reshape(b, c, hh * ww) for i in range(3))
    w = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c), dim=-1)
    h = nin(sd, f"{p}.NIN_3", torch.einsum("bij,bcj->bci", w, v).reshape(b, c, hh, ww))
    return (x + h) / math.sqrt(2.0) if skip_rescale else x + h


def ddpm_downsample(sd, p, x):
    """One pixel of zero padding after the image, then a stride-2 3x3 conv."""
    return conv(sd, p, F.pad(x, (0, 1, 0, 1)), stride=2, padding=0)


def ddpm_upsample(sd, p, x):
    return conv(sd, p, F.interpolate(x, scale_factor=2, mode="nearest"))


# --- NCSNv2 (PyTorch conventions: unbiased variance of channel means, corner-aligned bilinear) ------------------
def instance_norm_plus(sd, p, x):
    means = x.mean(dim=(2, 3))
    m, v = means.mean(dim=-1, keepdim=True), means.var(dim=-1, keepdim=True)       # unbiased, as torch.var
    h = F.instance_norm(x, eps=1e-5) + ((means - m) / torch.sqrt(v + 1e-5))[..., None, None] \
        * sd[f"{p}.alpha"][None, :, None, None]
    return sd[f"{p}.gamma"][None, :, None, None] * h + sd[f"{p}.beta"][None, :, None, None]


def ncsnv2_residual(sd, p, x, *, down, dilation):
    act = F.elu
    pad = dilation
    h = act(instance_norm_plus(sd, f"{p}.normalize1", x))
    h = conv(sd, f"{p}.conv1", h, padding=pad, dilation=dilation)
    h = act(instance_norm_plus(sd, f"{p}.normalize2", h))
    if down and dilation == 1:
        h = F.avg_pool2d(conv(sd, f"{p}.conv2.conv", h), 2)
        shortcut = F.avg_pool2d(conv(sd, f"{p}.shortcut.conv", x, padding=0), 2)
    else:
        h = conv(sd, f"{p}.conv2", h, padding=pad, dilation=dilation)
        shortcut = conv(sd, f"{p}.shortcut", x, padding=pad, dilation=dilation) if f"{p}.shortcut.weight" in sd \
            else x
    return shortcut + h


def _rcu(sd, p, x, n_blocks, act):
    for i in range(1, n_blocks + 1):
        residual = x
        for j in (1, 2):
            x = conv(sd, f"{p}.{i}_{j}_conv", act(x))
        x = x + residual
    return x


def refine_block(sd, p, xs, shape, *, end):
    act = F.elu
    hs = [_rcu(sd, f"{p}.adapt_convs.{i}", x, 2, act) for i, x in enumerate(xs)]
    if len(hs) > 1:
        h = sum(F.interpolate(conv(sd, f"{p}.msf.convs.{i}", x), size=shape, mode="bilinear", align_corners=True)
                for i, x in enumerate(hs))
    else:
        h = hs[0]
    h = act(h)
    path = h
    for i in (0, 1):
        path = conv(sd, f"{p}.crp.convs.{i}", F.max_pool2d(path, 5, stride=1, padding=2))
        h = path + h
    return _rcu(sd, f"{p}.output_convs", h, 3 if end else 1, act)
