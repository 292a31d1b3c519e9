import math

import torch

from dynscale import get_model, set_width
from dynscale.layers import BinaryConv2d, BinaryLinear, binarize


def test_binarize_forward_and_clipped_straight_through_gradient():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.7, 1.0, 3.0], requires_grad=True)
    y = binarize(x)
    assert y.tolist() == [-1, -1, 1, 1, 1, 1]
    y.sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 1, 0]  # zero where |x| > 1


def test_binary_linear_uses_sign_weights_and_sign_inputs():
    torch.manual_seed(0)
    layer = BinaryLinear(6, 3, profile="linear")
    x = torch.randn(2, 6)
    gamma = torch.tensor([1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    expected = torch.sign(x) @ (torch.sign(layer.weight) * gamma).T
    torch.testing.assert_close(layer(x), expected)


def test_binary_conv_first_layer_keeps_real_inputs():
    torch.manual_seed(0)
    conv = BinaryConv2d(1, 4, 3, binarize_input=False, cut_input=False)
    x = torch.randn(1, 1, 5, 5)
    expected = torch.nn.functional.conv2d(x, torch.sign(conv.weight))
    torch.testing.assert_close(conv(x), expected)


def test_binary_weight_gradient_is_straight_through_and_weights_are_clipped():
    torch.manual_seed(0)
    layer = BinaryLinear(4, 2, binarize_input=False)
    x = torch.randn(3, 4)
    layer(x).sum().backward()
    # d/dW of sign(W)·x passed straight through: the gradient of a plain linear layer.
    torch.testing.assert_close(layer.weight.grad, torch.ones(2, 1) * x.sum(0, keepdim=True))
    with torch.no_grad():
        layer.weight.mul_(10)
    layer.after_step()
    assert layer.weight.abs().max() <= 1.0


def test_training_clips_binary_weights(synthetic):
    from dynscale.idp import IDP
    from dynscale.train import TrainConfig, train

    model = get_model("binarynet", in_channels=1, input_size=8)
    train(model, synthetic, TrainConfig(epochs=1, lr=5.0, train_limit=200), IDP(), progress=False)
    for m in model.modules():
        if isinstance(m, (BinaryConv2d, BinaryLinear)):
            assert m.weight.abs().max() <= 1.0


def test_device_to_cloud_bytes_follow_the_width():
    model = get_model("binarynet", in_channels=1, input_size=28, filters=[8, 32, 64]).eval()
    x = torch.randn(1, 1, 28, 28)
    sent = {}
    for p in (1.0, 0.5, 0.25, 0.1):
        set_width(model, p)
        sent[p] = model.bytes_sent(x)
    # The device block pools 28 -> 14; each kept channel sends 14·14 sign bits.
    assert sent == {p: math.ceil(math.ceil(8 * p) * 14 * 14 / 8) for p in sent}
    assert sent[1.0] == 196 and sent[0.5] == 98


def test_only_the_device_block_and_the_cloud_input_are_cut():
    model = get_model("binarynet", in_channels=1, input_size=8)
    set_width(model, 0.5)
    cloud_first, *cloud_rest = [m for m in model.cloud.modules() if isinstance(m, BinaryConv2d)]
    assert cloud_first.kept() == (4, 32)
    assert all(m.kept() == (m.in_channels, m.out_channels) for m in cloud_rest)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
