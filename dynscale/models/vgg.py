"""VGG-16 for small images (SPEC §1): 13 conv 3×3 + BN + ReLU, FC 512 + BN, FC classes.

IDP applies to every convolution but the first (whose input is the image). Max-pools use
``ceil_mode`` and a global average pool precedes the classifier, so 28×28 and 8×8 inputs work
as well as 32×32.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import IncompleteBatchNorm1d, IncompleteBatchNorm2d, IncompleteConv2d, IncompleteLinear
from .common import ConvNetConfig, scaled
from .registry import register_model

# Output channels per conv, "M" for a 2×2 max-pool.
VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGGConfig(ConvNetConfig):
    """Config of the vgg family (see ``ConvNetConfig``)."""


class VGG(nn.Module):
    def __init__(self, config: VGGConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in, first = config.in_channels, True
        for item in VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                continue
            c_out = scaled(item, config.width_mult)
            layers += [IncompleteConv2d(c_in, c_out, 3, padding=1, bias=False, cut_input=not first,
                                        profile=None if first else config.profile),
                       IncompleteBatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in, first = c_out, False
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        hidden = scaled(512, config.width_mult)
        self.classifier = nn.Sequential(
            IncompleteLinear(c_in, hidden, bias=False, profile=config.profile),
            IncompleteBatchNorm1d(hidden), nn.ReLU(inplace=True),
            IncompleteLinear(hidden, config.num_classes, profile=config.profile, cut_output=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        x = self.features(x)  # (B, k, h, w)
        return self.classifier(self.pool(x).flatten(1))  # (B, k) -> (B, classes)

    def stages(self) -> list[tuple[str, nn.Module]]:
        """``block1``…``block5`` (each ending in its max-pool), then ``head``; run in order they
        compute ``forward``."""
        stages, current = [], []
        for layer in self.features:
            current.append(layer)
            if isinstance(layer, nn.MaxPool2d):
                stages.append((f"block{len(stages) + 1}", nn.Sequential(*current)))
                current = []
        return stages + [("head", nn.Sequential(self.pool, nn.Flatten(), self.classifier))]


@register_model
def vgg16(config: VGGConfig) -> VGG:
    """The IDP paper's CIFAR VGG-16 (widths 64…512 scaled by ``width_mult``)."""
    return VGG(config)
