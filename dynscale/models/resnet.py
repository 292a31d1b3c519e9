"""A CIFAR-style ResNet (He et al.): a 3×3 stem, three stages of basic blocks (16, 32, 64
channels scaled by ``width_mult``), global average pool, linear classifier.

IDP applies to every convolution but the stem. A residual sum adds the kept prefix of the
shortcut to the kept prefix of the block, so both sides keep the same channels at every width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers import IncompleteBatchNorm2d, IncompleteConv2d, IncompleteLinear
from ..profiles import ProfileSpec
from .common import ConvNetConfig, scaled
from .registry import register_model

STAGE_CHANNELS = (16, 32, 64)


@dataclass
class ResNetConfig(ConvNetConfig):
    """Config of the resnet family: ``ConvNetConfig`` plus basic blocks per stage (3 is
    ResNet-20, 1 is ResNet-8)."""

    blocks_per_stage: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be at least 1, got {self.blocks_per_stage}")


class BasicBlock(nn.Module):
    """conv 3×3 + BN + ReLU, conv 3×3 + BN, plus the shortcut (a 1×1 conv + BN when the shape
    changes), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, profile: ProfileSpec) -> None:
        super().__init__()
        self.conv1 = IncompleteConv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False, profile=profile)
        self.bn1 = IncompleteBatchNorm2d(c_out)
        self.conv2 = IncompleteConv2d(c_out, c_out, 3, padding=1, bias=False, profile=profile)
        self.bn2 = IncompleteBatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                IncompleteConv2d(c_in, c_out, 1, stride=stride, bias=False, profile=profile),
                IncompleteBatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, k_in, H, W) -> (B, k_out, H/s, W/s)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        c = scaled(STAGE_CHANNELS[0], config.width_mult)
        self.stem = nn.Sequential(
            IncompleteConv2d(config.in_channels, c, 3, padding=1, bias=False, cut_input=False),
            IncompleteBatchNorm2d(c), nn.ReLU(inplace=True))
        stages = []
        for index, channels in enumerate(STAGE_CHANNELS):
            c_out = scaled(channels, config.width_mult)
            blocks = []
            for b in range(config.blocks_per_stage):
                stride = 2 if index > 0 and b == 0 else 1
                blocks.append(BasicBlock(c, c_out, stride, config.profile))
                c = c_out
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = IncompleteLinear(c, config.num_classes, profile=config.profile, cut_output=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        x = self.layers(self.stem(x))  # (B, k, H/4, W/4)
        return self.classifier(self.pool(x).flatten(1))

    def stages(self) -> list[tuple[str, nn.Module]]:
        """``stem``, ``stage1``…``stage3``, then ``head``; run in order they compute ``forward``."""
        stages = [(f"stage{i + 1}", stage) for i, stage in enumerate(self.layers)]
        return [("stem", self.stem), *stages, ("head", nn.Sequential(self.pool, nn.Flatten(), self.classifier))]


@register_model
def resnet(config: ResNetConfig) -> ResNet:
    """A CIFAR-style ResNet (ResNet-20 by default; ``blocks_per_stage`` sets the depth)."""
    return ResNet(config)


@dataclass
class ResNet38Config(ResNetConfig):
    """ResNet-38: six basic blocks per stage."""

    blocks_per_stage: int = 6


@dataclass
class ResNet74Config(ResNetConfig):
    """ResNet-74: twelve basic blocks per stage."""

    blocks_per_stage: int = 12


@register_model
def resnet38(config: ResNet38Config) -> ResNet:
    """The CIFAR-style ResNet-38 (6 basic blocks per stage): fractional skipping's backbone."""
    return ResNet(config)


@register_model
def resnet74(config: ResNet74Config) -> ResNet:
    """The CIFAR-style ResNet-74 (12 basic blocks per stage)."""
    return ResNet(config)
