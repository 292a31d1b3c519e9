"""The IDP paper's multilayer perceptron: 784-100-100-10 with ReLU, every size configurable."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..layers import IncompleteLinear
from ..profiles import ProfileSpec
from .registry import register_model


@dataclass
class MLPConfig:
    in_channels: int = 1
    input_size: int = 28  # images are input_size × input_size
    num_classes: int = 10
    hidden: list[int] = field(default_factory=lambda: [100, 100])
    profile: ProfileSpec = "linear"


class MLP(nn.Module):
    """Flatten, then incomplete linear layers with ReLU; the first input and the classes are
    never cut, and the first layer carries no profile since its input is the image itself."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        if not config.hidden:
            raise ValueError("the MLP needs at least one hidden layer")
        self.config = config
        sizes = [config.in_channels * config.input_size**2, *config.hidden, config.num_classes]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            first, last = i == 0, i == len(sizes) - 2
            layers.append(IncompleteLinear(
                n_in, n_out, profile=None if first else config.profile,
                cut_input=not first, cut_output=not last))
            if not last:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        return self.layers(x.flatten(1))

    def stages(self) -> list[tuple[str, nn.Module]]:
        """``layer1``… (each linear with its ReLU; the first flattens the image), then ``head``;
        run in order they compute ``forward``."""
        layers = list(self.layers)
        stages = [(f"layer{i // 2 + 1}", nn.Sequential(*([nn.Flatten()] if i == 0 else []), *layers[i:i + 2]))
                  for i in range(0, len(layers) - 1, 2)]
        return stages + [("head", layers[-1])]


@register_model(convolutional=False)
def mlp(config: MLPConfig) -> MLP:
    """The IDP paper's MLP (default 784-100-100-10)."""
    return MLP(config)
