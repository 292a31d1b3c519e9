"""The IDP paper's binarized network, split between a device and the cloud (SPEC §1).

Three blocks of two binary 3×3 convolutions (8, 32 and 64 filters), then a binary linear
classifier. The first block runs on the device with IDP; the cloud runs the rest at 100%, so
IDP also cuts what the device sends: its binary output, one bit per value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..layers import BinaryConv2d, BinaryLinear, IncompleteBatchNorm1d, IncompleteBatchNorm2d
from ..profiles import ProfileSpec
from .registry import register_model


@dataclass
class BinaryNetConfig:
    in_channels: int = 1
    input_size: int = 28
    num_classes: int = 10
    filters: list[int] = field(default_factory=lambda: [8, 32, 64])
    profile: ProfileSpec = "linear"


def _block(c_in: int, c_out: int, image_input: bool, reads_device: bool, device: bool,
           profile: ProfileSpec) -> nn.Sequential:
    # Device block: IDP on both convs (the image input is never cut). The cloud's first conv
    # reads the device's kept channels (input cut, with the profile); the rest is full width.
    conv1 = BinaryConv2d(c_in, c_out, 3, padding=1, binarize_input=not image_input,
                         cut_input=device and not image_input or reads_device, cut_output=device,
                         profile=profile if (device and not image_input) or reads_device else None)
    conv2 = BinaryConv2d(c_out, c_out, 3, padding=1, cut_input=device, cut_output=device,
                         profile=profile if device else None)
    return nn.Sequential(conv1, IncompleteBatchNorm2d(c_out), conv2, IncompleteBatchNorm2d(c_out),
                         nn.MaxPool2d(2, ceil_mode=True))


class BinaryNet(nn.Module):
    def __init__(self, config: BinaryNetConfig) -> None:
        super().__init__()
        if len(config.filters) != 3:
            raise ValueError(f"BinaryNet has three blocks; give three filter counts, got {config.filters}")
        self.config = config
        f1, f2, f3 = config.filters
        self.device = _block(config.in_channels, f1, image_input=True, reads_device=False, device=True,
                             profile=config.profile)
        self.cloud = nn.Sequential(
            _block(f1, f2, image_input=False, reads_device=True, device=False, profile=config.profile),
            _block(f2, f3, image_input=False, reads_device=False, device=False, profile=None),
            nn.Flatten())
        side = config.input_size
        for _ in range(3):
            side = math.ceil(side / 2)
        self.classifier = nn.Sequential(
            BinaryLinear(f3 * side * side, config.num_classes, cut_input=False, cut_output=False),
            IncompleteBatchNorm1d(config.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        return self.classifier(self.cloud(self.device(x)))

    def stages(self) -> list[tuple[str, nn.Module]]:
        """``block1`` (the device), ``block2``, ``block3`` (flattened), then ``head``; run in
        order they compute ``forward``."""
        return [("block1", self.device), ("block2", self.cloud[0]), ("block3", self.cloud[1:]),
                ("head", self.classifier)]

    @torch.no_grad()
    def bytes_sent(self, x: torch.Tensor) -> float:
        """Bytes per example the device sends to the cloud at the current width.

        The cloud's first layer binarizes its input, so the device sends sign bits:
        ⌈k·h·w / 8⌉ bytes for k kept channels of h×w.
        """
        from ..cost import eval_mode

        with eval_mode(self):
            out = self.device(x[:1])  # (1, k, h, w)
        return float(math.ceil(out[0].numel() / 8))


@register_model
def binarynet(config: BinaryNetConfig) -> BinaryNet:
    """The IDP paper's binarized device/cloud network (8, 32, 64 filters)."""
    return BinaryNet(config)
