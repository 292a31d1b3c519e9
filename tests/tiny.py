"""Tiny configurations of every registered model, shared by the tests.

Sizes are small enough for a forward pass in milliseconds on 8×8 to 16×16 inputs, and large
enough that every width in the tests keeps a different number of channels.
"""

from __future__ import annotations

import torch

from dynscale import get_model
from dynscale.idp import calibrate_bn

# Per registered model: the options that make it tiny.
TINY = {
    "mlp": {"hidden": [16, 16]},
    "vgg16": {"width_mult": 0.125},
    "mobilenet": {"width_mult": 0.25},
    "resnet": {"width_mult": 0.5, "blocks_per_stage": 1},
    "resnet38": {"width_mult": 0.25},
    "resnet74": {"width_mult": 0.25},
    "binarynet": {},
}


def tiny_options(name: str, input_size: int = 8, **extra) -> dict:
    """Options of a tiny ``name`` for one-channel ``input_size``² images and 10 classes."""
    return {"in_channels": 1, "input_size": input_size, "num_classes": 10, **TINY.get(name, {}), **extra}


def tiny_model(name: str, input_size: int = 8, seed: int = 0, calibrate: bool = False, **extra):
    """A tiny model in eval mode; with ``calibrate``, its batch-norm holds non-trivial
    statistics at widths 0.25, 0.5 and 1.0 (so an export must carry them)."""
    torch.manual_seed(seed)
    model = get_model(name, **tiny_options(name, input_size, **extra))
    if calibrate and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        batches = [(torch.randn(16, 1, input_size, input_size) * 2 + 0.5, None) for _ in range(3)]
        calibrate_bn(model, batches, [0.25, 0.5, 1.0])
    return model.eval()
