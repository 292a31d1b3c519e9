"""MobileNet for small images (SPEC §1): a 3×3 conv, then depthwise-separable blocks.

IDP applies to the inputs of both the depthwise and the pointwise convolution of each block.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import IncompleteBatchNorm2d, IncompleteConv2d, IncompleteLinear
from ..profiles import ProfileSpec
from .common import ConvNetConfig, scaled
from .registry import register_model

# (output channels, stride) of each depthwise-separable block.
MOBILENET_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (256, 1)]


class MobileNetConfig(ConvNetConfig):
    """Config of the mobilenet family (see ``ConvNetConfig``)."""


class DepthwiseSeparable(nn.Module):
    """Depthwise 3×3 + BN + ReLU, then pointwise 1×1 + BN + ReLU, IDP on both inputs."""

    def __init__(self, c_in: int, c_out: int, stride: int, profile: ProfileSpec) -> None:
        super().__init__()
        self.depthwise = IncompleteConv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in,
                                          bias=False, profile=profile)
        self.bn1 = IncompleteBatchNorm2d(c_in)
        self.pointwise = IncompleteConv2d(c_in, c_out, 1, bias=False, profile=profile)
        self.bn2 = IncompleteBatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, k_in, H, W) -> (B, k_out, H/s, W/s)
        x = self.relu(self.bn1(self.depthwise(x)))
        return self.relu(self.bn2(self.pointwise(x)))


class MobileNet(nn.Module):
    def __init__(self, config: MobileNetConfig) -> None:
        super().__init__()
        self.config = config
        c = scaled(64, config.width_mult)
        self.stem = nn.Sequential(
            IncompleteConv2d(config.in_channels, c, 3, padding=1, bias=False, cut_input=False),
            IncompleteBatchNorm2d(c), nn.ReLU(inplace=True))
        blocks = []
        for channels, stride in MOBILENET_BLOCKS:
            c_out = scaled(channels, config.width_mult)
            blocks.append(DepthwiseSeparable(c, c_out, stride, config.profile))
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = IncompleteLinear(c, config.num_classes, profile=config.profile, cut_output=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        x = self.blocks(self.stem(x))
        return self.classifier(self.pool(x).flatten(1))

    def stages(self) -> list[tuple[str, nn.Module]]:
        """``stem``, ``block1``…``block6``, then ``head``; run in order they compute ``forward``."""
        blocks = [(f"block{i + 1}", block) for i, block in enumerate(self.blocks)]
        return [("stem", self.stem), *blocks, ("head", nn.Sequential(self.pool, nn.Flatten(), self.classifier))]


@register_model
def mobilenet(config: MobileNetConfig) -> MobileNet:
    """The IDP paper's CIFAR MobileNet (channels scaled by ``width_mult``)."""
    return MobileNet(config)
