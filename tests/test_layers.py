import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dynscale
from dynscale.cost import count_macs
from dynscale.layers import IncompleteConv2d, IncompleteLinear, kept_channels, set_width, width


def test_kept_channels_is_ceil_with_at_least_one():
    assert kept_channels(100, 0.25) == 25
    assert kept_channels(100, 0.251) == 26
    assert kept_channels(10, 0.3) == 3  # 0.3 * 10 is 3.0000000000000004 in floating point
    assert kept_channels(10, 0.01) == 1
    assert kept_channels(7, 1.0) == 7
    assert kept_channels(64, 0.3, multiple=16) == 32


@pytest.mark.parametrize("p", [0, -0.5, 1.0001, 2, float("nan"), float("inf"), "abc", None])
def test_bad_width_raises_value_error(p):
    model = nn.Sequential(IncompleteLinear(4, 4))
    with pytest.raises(ValueError, match="width"):
        set_width(model, p)
    with pytest.raises(ValueError, match="width"):
        with width(model, p):
            pass


def test_linear_slices_weight_and_applies_profile():
    torch.manual_seed(0)
    layer = IncompleteLinear(10, 6, profile="linear")
    set_width(layer, 0.3)  # k_in = 3, k_out = 2
    x = torch.randn(5, 3)
    gamma = torch.tensor([1.0, 0.9, 0.8])
    expected = F.linear(x, layer.weight[:2, :3] * gamma, layer.bias[:2])
    out = layer(x)
    assert out.shape == (5, 2)
    torch.testing.assert_close(out, expected)


def test_slicing_really_shrinks_the_arithmetic():
    layer = IncompleteLinear(100, 100)
    x = torch.randn(1, 100)
    full = count_macs(layer, x)
    set_width(layer, 0.5)
    assert full == 100 * 100
    assert count_macs(layer, x[:, :50]) == 50 * 50


def test_wider_input_is_narrowed_and_narrower_input_is_an_error_in_eval():
    layer = IncompleteLinear(8, 4).eval()
    set_width(layer, 0.5)
    assert layer(torch.randn(2, 8)).shape == (2, 2)
    with pytest.raises(ValueError, match="needs 4 input channels but got 3"):
        layer(torch.randn(2, 3))


def test_narrower_input_in_training_equals_zero_masked_channels():
    # Random cuts draw each layer's width independently; a layer then uses what it is given.
    torch.manual_seed(0)
    layer = IncompleteLinear(8, 4).train()
    set_width(layer, 0.5)
    x = torch.randn(2, 3)
    padded = torch.cat([x, torch.zeros(2, 1)], dim=1)
    torch.testing.assert_close(layer(x), layer(padded))


def test_uncut_sides_keep_full_size():
    layer = IncompleteLinear(8, 5, cut_input=False, cut_output=False)
    set_width(layer, 0.25)
    assert layer(torch.randn(2, 8)).shape == (2, 5)
    assert layer.kept() == (8, 5)


def test_conv_matches_dense_conv_on_the_prefix():
    torch.manual_seed(0)
    conv = IncompleteConv2d(8, 6, 3, padding=1, profile="harmonic")
    set_width(conv, 0.5)  # 4 in, 3 out
    x = torch.randn(2, 4, 5, 5)
    gamma = torch.tensor([1, 1 / 2, 1 / 3, 1 / 4])
    expected = F.conv2d(x, conv.weight[:3, :4] * gamma[None, :, None, None], conv.bias[:3], padding=1)
    torch.testing.assert_close(conv(x), expected)


def test_depthwise_conv_keeps_k_channels_in_and_out():
    torch.manual_seed(0)
    conv = IncompleteConv2d(8, 8, 3, padding=1, groups=8, profile="linear")
    set_width(conv, 0.5)
    x = torch.randn(2, 4, 5, 5)
    gamma = torch.tensor([1, 7 / 8, 6 / 8, 5 / 8])
    expected = F.conv2d(x, conv.weight[:4] * gamma[:, None, None, None], conv.bias[:4],
                        padding=1, groups=4)
    out = conv(x)
    assert out.shape == (2, 4, 5, 5)
    torch.testing.assert_close(out, expected)
    assert count_macs(conv, x) == 4 * 9 * 25


def test_grouped_conv_keeps_whole_groups():
    torch.manual_seed(0)
    # 8 channels in 4 groups of 2; at width 0.5 two groups: 4 channels in, 6 of 12 out.
    conv = IncompleteConv2d(8, 12, 1, groups=4, profile="linear", bias=False)
    set_width(conv, 0.5)
    assert conv.kept() == (4, 6)
    x = torch.randn(1, 4, 3, 3)
    gamma = torch.tensor([1, 7 / 8, 6 / 8, 5 / 8])
    # Output channel o of group g sees inputs 2g, 2g+1.
    w = conv.weight[:6] * gamma.view(2, 2).repeat_interleave(3, 0)[:, :, None, None]
    torch.testing.assert_close(conv(x), F.conv2d(x, w, None, groups=2))


def test_grouped_conv_fed_by_a_layer_with_matching_out_multiple():
    model = nn.Sequential(IncompleteConv2d(3, 16, 3, cut_input=False, out_multiple=4),
                          IncompleteConv2d(16, 16, 3, groups=4),
                          IncompleteConv2d(16, 8, 1, cut_output=False))
    set_width(model, 0.3)  # 16 * 0.3 = 4.8 -> 5 channels, rounded up to 8 (two groups of 4)
    assert model(torch.randn(1, 3, 9, 9)).shape == (1, 8, 5, 5)


def test_grouped_conv_rejects_mixed_cut_flags():
    with pytest.raises(ValueError, match="whole groups"):
        IncompleteConv2d(8, 8, 3, groups=8, cut_input=True, cut_output=False)


def test_width_context_manager_restores_previous_width():
    model = nn.Sequential(IncompleteLinear(4, 4), IncompleteLinear(4, 2, cut_output=False))
    set_width(model, 0.75)
    with dynscale.width(model, 0.25) as m:
        assert m is model
        assert all(layer.in_width == 0.25 for layer in dynscale.layers.incomplete_layers(model))
    assert all(layer.in_width == 0.75 for layer in dynscale.layers.incomplete_layers(model))
    with pytest.raises(RuntimeError):
        with dynscale.width(model, 0.5):
            raise RuntimeError("boom")
    assert model[0].in_width == 0.75


def test_profile_is_a_buffer():
    layer = IncompleteLinear(4, 3, profile="linear")
    assert "profile" in dict(layer.named_buffers())
    assert "profile" in layer.state_dict()


def test_inference_cache_follows_weight_updates_and_width():
    layer = IncompleteLinear(6, 4, profile="linear").eval()
    x = torch.randn(2, 6)
    with torch.no_grad():
        before = layer(x).clone()
        layer.weight.mul_(2)
        after = layer(x)
        torch.testing.assert_close(after - layer.bias, 2 * (before - layer.bias))
        set_width(layer, 0.5)
        assert layer(x).shape == (2, 2)


def test_gradients_reach_only_the_kept_weights():
    layer = IncompleteLinear(6, 4)
    set_width(layer, 0.5)
    layer(torch.randn(3, 3)).sum().backward()
    grad = layer.weight.grad
    assert grad[:2, :3].abs().sum() > 0
    assert grad[2:].abs().sum() == 0 and grad[:, 3:].abs().sum() == 0


def test_kept_channels_never_exceeds_n():
    for n in (1, 3, 17, 100):
        for p in (1e-6, 0.1, 0.33, 0.5, 0.999, 1.0):
            k = kept_channels(n, p)
            assert 1 <= k <= n and k == max(1, math.ceil(round(p * n, 9)))
