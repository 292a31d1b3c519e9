"""A user's own network for `dynscale convert`: torchvision's ResNet-18, for 1×28×28 images.

    dynscale convert examples/tv_resnet18.py:resnet18 --input-shape 1,28,28 --out runs/r18

torchvision is not a dependency of dynscale; install it yourself (`pip install torchvision`).
"""

import sys
import types


def _import_torchvision():
    # The registry's torchvision wheels are CUDA builds: with the CPU torch, `import torchvision`
    # fails while it registers the fake kernel of torchvision::nms. The models need no C++ op,
    # so an empty module stands in for that registration file.
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision

    return torchvision


def resnet18(num_classes: int = 10, in_channels: int = 1):
    """ResNet-18 with a grey-scale stem and ``num_classes`` outputs (random weights)."""
    from torch import nn

    model = _import_torchvision().models.resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model
