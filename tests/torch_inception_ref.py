"""Test-only PyTorch references for the FID Inception (imported by tests that have torch).

* :class:`TorchFIDInception`: an independent PyTorch implementation written from pytorch-fid's documented
  structure (torchvision's InceptionV3 with ``BasicConv2d = conv (no bias) + BatchNorm2d(eps=1e-3) + ReLU``,
  ``FIDInceptionA/C/E_1`` average pools with ``count_include_pad=False``, ``FIDInceptionE_2``'s 3x3 max pool,
  a 1008-way ``fc``), with pytorch-fid's input handling (``F.interpolate`` bilinear, ``align_corners=False``,
  to 299, then ``2x - 1``). Its module names give pytorch-fid's state-dict keys.
* :func:`pytorch_fid_network`: pytorch-fid's own ``InceptionV3`` (block 3, pool3) built around a given state
  dict instead of its download, when pytorch-fid and torchvision are importable. PyPI's torchvision wheels
  do not load beside a local CPU torch build (their C++ ops fail to register); the network code needs none of
  them, so torchvision's package ``__init__`` is then skipped.
"""
from __future__ import annotations

import collections
import importlib.metadata
import importlib.util
import os
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg(x))], 1)


class BlockB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg(x))], 1)


class BlockD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    def __init__(self, cin, max_pool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class TorchFIDInception(nn.Module):
    """Independent reference: ``forward(x: [B, 3, H, W] in [0, 1]) -> (pool3 [B, 2048], logits [B, 1008])``."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = BlockA(192, 32)
        self.Mixed_5c = BlockA(256, 64)
        self.Mixed_5d = BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, 128)
        self.Mixed_6c = BlockC(768, 160)
        self.Mixed_6d = BlockC(768, 160)
        self.Mixed_6e = BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, max_pool=False)
        self.Mixed_7c = BlockE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x):
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        pool3 = x.mean(dim=(2, 3))
        return pool3, self.fc(pool3)


def random_state_dict(seed: int = 0) -> collections.OrderedDict:
    """A state dict with the FID Inception's keys and shapes (from :class:`TorchFIDInception`) and random
    values that keep activations at scale: He-normal conv weights, BN gamma ~ U(0.5, 1.5), beta ~ 0.1 N,
    running mean ~ 0.1 N, running var ~ U(0.5, 2), fc ~ N(0, 1/2048), fc bias ~ 0.1 N. float32 numpy;
    ``num_batches_tracked`` int64 as torch writes it."""
    rng = np.random.default_rng(seed)
    out = collections.OrderedDict()
    for k, v in TorchFIDInception().state_dict().items():
        shape = tuple(v.shape)
        if k.endswith("num_batches_tracked"):
            out[k] = np.array(0, np.int64)
        elif k.endswith("conv.weight"):
            fan_in = int(np.prod(shape[1:]))
            out[k] = rng.standard_normal(shape, np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        elif k.endswith("bn.weight"):
            out[k] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif k.endswith("running_var"):
            out[k] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        elif k == "fc.weight":
            out[k] = rng.standard_normal(shape, np.float32) / np.float32(np.sqrt(shape[1]))
        else:                                      # bn.bias, running_mean, fc.bias
            out[k] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return out


def to_torch(state_dict) -> collections.OrderedDict:
    return collections.OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in state_dict.items())


def _import_torchvision_models():
    """``torchvision.models.inception`` importable even when torchvision's compiled ops do not load."""
    try:
        import torchvision  # noqa: F401
        return
    except Exception:  # noqa: BLE001 (RuntimeError: operator torchvision::nms does not exist)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        raise ImportError("torchvision is not installed")
    stub = types.ModuleType("torchvision")
    stub.__path__ = [os.path.dirname(spec.origin)]
    stub.__version__ = importlib.metadata.version("torchvision")   # pytorch-fid reads it
    sys.modules["torchvision"] = stub


def pytorch_fid_network(state_dict):
    """pytorch-fid's ``InceptionV3(output_blocks=[3])`` (resize + normalise + pool3) with ``state_dict``
    loaded by its own strict ``load_state_dict``; raises ImportError if pytorch-fid is unavailable."""
    _import_torchvision_models()
    from pytorch_fid import inception as pfi

    original = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = lambda *a, **k: to_torch(state_dict)
    try:
        net = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    finally:
        pfi.load_state_dict_from_url = original
    return net.eval()
