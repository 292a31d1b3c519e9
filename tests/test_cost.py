import torch
from torch import nn

from dynscale import get_model, set_width
from dynscale.cost import count_macs, measure_latency


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


def test_latency_is_a_positive_median_in_ms():
    model = get_model("mlp", input_size=8, hidden=[10])
    set_width(model, 0.5)
    ms = measure_latency(model, (1, 8, 8), batch_size=4, threads=1, min_run_time=0.05)
    assert 0 < ms < 1000
