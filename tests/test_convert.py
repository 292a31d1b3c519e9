"""convert() on a small ResNet and on torchvision-style ResNet code written here."""

import pytest
import torch
from torch import nn

from dynscale import set_width, width
from dynscale.convert import convert
from dynscale.cost import count_macs
from dynscale.layers import IncompleteConv2d, IncompleteLinear, kept_channels


class BasicBlock(nn.Module):
    """A residual block, with a 1×1 projection when the shape changes."""

    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class TinyResNet(nn.Module):
    """The layout of torchvision's ResNet (conv1, bn1, relu, maxpool, layer1-2, avgpool, fc)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 16))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, stride=2), BasicBlock(32, 32))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def randomize_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def sequential_net():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 16, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 32), nn.ReLU(),
                         nn.Dropout(0.1), nn.Linear(32, 5))


@pytest.mark.parametrize("build, shape", [(TinyResNet, (4, 3, 16, 16)), (sequential_net, (4, 1, 9, 9))])
@pytest.mark.parametrize("profile", ["all-one", "linear", "harmonic"])
def test_full_width_outputs_are_unchanged(build, shape, profile):
    torch.manual_seed(0)
    original = randomize_bn(build())
    converted = convert(original, profile=profile).eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), original(x), atol=1e-5, rtol=1e-4)
    assert not any(type(m) in (nn.Conv2d, nn.Linear) for m in converted.modules())
    assert any(isinstance(m, nn.Conv2d) for m in original.modules())  # the original is untouched


def test_half_width_really_cuts_the_macs():
    torch.manual_seed(0)
    converted = convert(randomize_bn(TinyResNet())).eval()
    x = torch.randn(1, 3, 16, 16)
    full = count_macs(converted, x)
    with width(converted, 0.5):
        half = count_macs(converted, x)
        assert converted(x).shape == (1, 10)
    assert half < 0.3 * full


def test_first_and_last_layers_are_kept():
    converted = convert(TinyResNet())
    assert not converted.conv1.cut_input and (converted.conv1.profile == 1).all()
    assert not converted.fc.cut_output
    assert isinstance(converted.layer1[0].conv1, IncompleteConv2d) and isinstance(converted.fc, IncompleteLinear)
    kept = convert(sequential_net(), keep=("0", "8"))
    assert not kept[8].cut_output and kept[11].cut_output


def sliced_bn(bn, h, k):
    return nn.functional.batch_norm(h, bn.running_mean[:k], bn.running_var[:k], bn.weight[:k], bn.bias[:k],
                                    False, 0.0, bn.eps)


def test_residual_branches_keep_the_same_channel_prefix():
    torch.manual_seed(0)
    block = randomize_bn(nn.Sequential(BasicBlock(8, 8)))
    converted = convert(block, profile="all-one", keep=("0.conv1", "0.conv2")).eval()
    converted[0].conv1.cut_input = True  # a block inside a network: its input is cut too
    converted[0].conv2.cut_output = True
    x = torch.randn(2, 8, 5, 5)
    for p in (0.25, 0.5, 0.75):
        k = kept_channels(8, p)
        set_width(converted, p)
        with torch.no_grad():
            got = converted(x[:, :k])
            # The same block computed by hand on the first k channels of every tensor.
            b = block[0]
            h = torch.relu(sliced_bn(b.bn1, nn.functional.conv2d(x[:, :k], b.conv1.weight[:k, :k], padding=1), k))
            h = sliced_bn(b.bn2, nn.functional.conv2d(h, b.conv2.weight[:k, :k], padding=1), k)
            expected = torch.relu(h + x[:, :k])
        assert got.shape == (2, k, 5, 5)
        torch.testing.assert_close(got, expected)


def test_residual_shapes_agree_at_every_width():
    converted = convert(TinyResNet()).eval()
    seen = []
    for block in [*converted.layer1, *converted.layer2]:
        block.register_forward_hook(lambda m, i, o: seen.append((i[0].shape[1], o.shape[1], m.conv2.out_channels)))
    for pct in range(5, 101, 5):
        seen.clear()
        with width(converted, pct / 100), torch.no_grad():
            converted(torch.randn(1, 3, 16, 16))
        for _, c_out, n in seen:
            assert c_out == kept_channels(n, pct / 100)


class WithNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)


class WithOwnTensor(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.scale = nn.Parameter(torch.ones(4))


@pytest.mark.parametrize("model, match", [
    (WithNorm(), r"'norm' \(LayerNorm\): it normalizes across channels"),
    (WithOwnTensor(), r"'<root>' \(WithOwnTensor\): it holds its own tensors \(scale\)"),
    (nn.Sequential(nn.Conv2d(8, 8, 3, groups=2)), r"'0' \(Conv2d\): grouped convolutions other than depthwise"),
    (nn.Sequential(nn.Conv2d(1, 4, 3, padding_mode="reflect", padding=1)), "padding_mode 'reflect'"),
    (nn.Sequential(nn.ReLU()), "no Conv2d or Linear"),
    (nn.Sequential(nn.LSTM(4, 4)), r"'0' \(LSTM\): recurrent layers"),
])
def test_unconvertible_modules_are_named_with_a_reason(model, match):
    with pytest.raises(ValueError, match=match):
        convert(model)


def test_bad_keep_name():
    with pytest.raises(ValueError, match="keep names 'head'"):
        convert(TinyResNet(), keep=(None, "head"))
