import torch
from torch import nn

from dynscale import get_model, set_width
from dynscale.cost import count_macs, count_parameters
from dynscale.models import build_multi_profile


def test_macs_are_per_example():
    model = get_model("mlp", input_size=8, hidden=[10])
    one = count_macs(model, torch.randn(1, 1, 8, 8))
    many = count_macs(model, torch.randn(16, 1, 8, 8))
    assert one == many == 64 * 10 + 10 * 10


def test_macs_count_only_ops_that_run():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert count_macs(model, torch.randn(1, 3, 5, 5)) == 4 * 3 * 9 * 9


def test_count_macs_keeps_training_mode():
    model = get_model("mlp", input_size=8, hidden=[10]).train()
    count_macs(model, torch.randn(1, 1, 8, 8))
    assert model.training


def test_parameters_count_the_sliced_weights_that_run():
    model = get_model("mlp", input_size=8, hidden=[10])  # 64 -> 10 -> 10 classes, with biases
    x = torch.randn(1, 1, 8, 8)
    assert count_parameters(model, x) == sum(p.numel() for p in model.parameters()) == 64 * 10 + 10 + 10 * 10 + 10
    set_width(model, 0.5)  # 5 hidden units: 64·5 + 5, then 5·10 + 10
    assert count_parameters(model, x) == 64 * 5 + 5 + 5 * 10 + 10


def test_parameters_of_a_conv_net_and_of_one_profile():
    vgg = get_model("vgg16", in_channels=1, input_size=8, width_mult=0.125).eval()
    x = torch.randn(1, 1, 8, 8)
    full = count_parameters(vgg, x)
    assert full == sum(p.numel() for p in vgg.parameters())
    set_width(vgg, 0.5)
    assert 0.2 * full < count_parameters(vgg, x) < 0.35 * full
    two = build_multi_profile("mlp", [(0, 0.5), (0.5, 1)], in_channels=1, input_size=8, hidden=[10])
    set_width(two, 1.0)  # only the second member runs
    assert count_parameters(two, x) == sum(p.numel() for p in two.members[1].parameters())
