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
    assert not kept[8].cut_output and not kept[11].cut_output and kept[4].cut_output  # outputs stay whole


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


@pytest.mark.parametrize("model, match", [
    (nn.Sequential(nn.Conv2d(1, 4, 3, padding_mode="reflect", padding=1)), "padding_mode 'reflect'"),
    (nn.Sequential(nn.ReLU()), "no Conv2d or Linear"),
])
def test_unconvertible_modules_are_named_with_a_reason(model, match):
    with pytest.raises(ValueError, match=match):
        convert(model)


class Unknown(nn.Module):
    """A layer whose output goes through an operation the graph does not know."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(mystery(self.a(x)))


def mystery(x):
    return x.flip(-1) * 2


torch.fx.wrap("mystery")


def test_an_unknown_operation_on_cut_channels_is_refused_with_its_place():
    with pytest.raises(ValueError, match=r"function mystery \(fx node 'mystery' in module '<root>'\) works on "
                                         "channels that a width would cut"):
        convert(Unknown(), example=torch.randn(2, 4))


def test_bad_keep_name():
    with pytest.raises(ValueError, match="keep names 'head'"):
        convert(TinyResNet(), keep=(None, "head"))


class Channels(nn.Module):
    """conv → an operation on the channels → conv → pool → linear; `op` picks the operation."""

    def __init__(self, op):
        super().__init__()
        self.op = op
        self.a = nn.Conv2d(1, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(16 if op in ("cat", "cat-method") else 4 if op in ("split", "chunk") else 8, 8, 1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.a(x)
        y = self.b(x)
        if self.op == "cat":
            x = torch.cat([x, y], dim=1)  # DenseNet, Inception, SqueezeNet
        elif self.op == "cat-method":
            x = torch.cat((x, y), 1)
        elif self.op == "split":
            x = torch.split(y, 4, dim=1)[0]  # ShuffleNet
        elif self.op == "chunk":
            x = y.chunk(2, dim=1)[1]
        elif self.op == "normalize":
            x = F.normalize(y)  # over channels by default
        elif self.op == "softmax":
            x = y.softmax(dim=1)
        elif self.op == "layer_norm":
            x = F.layer_norm(y, y.shape[1:])
        elif self.op == "channel-mean":
            x = y * y.mean(dim=1, keepdim=True)  # CBAM-style channel pooling
        elif self.op == "batch-cat":
            x = torch.cat([y[:1], y[1:]], dim=0)  # along the batch: fine
        elif self.op == "spatial-mean":
            x = y - y.mean(dim=(2, 3), keepdim=True)  # per channel: fine
        x = self.c(x)
        out = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return out.softmax(dim=1)  # over the classes, after the last layer: fine


F = torch.nn.functional


@pytest.mark.parametrize("op", ["cat", "cat-method", "split", "chunk", "normalize", "softmax", "layer_norm",
                                "channel-mean", "batch-cat", "spatial-mean", "none"])
def test_operations_on_channels_convert_exactly(op):
    torch.manual_seed(0)
    net = Channels(op).eval()
    inc = convert(net, profile="linear").eval()
    x = torch.randn(3, 1, 6, 6)
    torch.testing.assert_close(inc(x), net(x), atol=1e-5, rtol=1e-5)
    if op in ("cat", "cat-method"):  # each part of the concatenation keeps its own prefix
        assert inc.c.in_plan is not None and inc.c.in_plan.indices(0.5).tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    if op in ("normalize", "softmax", "layer_norm", "channel-mean"):  # mixed: kept whole
        assert not inc.b.cut_output and inc.a.cut_output


class BatchNormAct2d(nn.BatchNorm2d):
    """As in timm: batch-norm and an activation in one layer."""

    def forward(self, x):
        return torch.relu(super().forward(x))


class Conv2dSame(nn.Conv2d):
    """As in timm: TensorFlow-style 'same' padding in forward."""

    def forward(self, x):
        return super().forward(F.pad(x, (1, 1, 1, 1)))


class PlainSubclass(nn.Conv2d):
    """A subclass that keeps Conv2d's forward: converts like a Conv2d."""


@pytest.mark.parametrize("layer, match", [
    (BatchNormAct2d(4), "subclasses BatchNorm2d but overrides forward"),
    (Conv2dSame(4, 4, 3), "subclasses Conv2d but overrides forward"),
])
def test_subclasses_that_override_forward_are_refused(layer, match):
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), layer, nn.Conv2d(4, 4, 1), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=f"'1' \\({type(layer).__name__}\\) {match}"):
        convert(net)
    ok = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), PlainSubclass(4, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                       nn.Flatten(), nn.Linear(4, 2)).eval()
    x = torch.randn(2, 1, 5, 5)
    torch.testing.assert_close(convert(ok).eval()(x), ok(x), atol=1e-5, rtol=1e-5)


def test_a_model_fx_cannot_trace_is_refused():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                x = x * 2
            return self.b(self.a(x))

    with pytest.raises(ValueError, match="torch.fx cannot trace the model"):
        convert(Branchy())


def test_layers_keep_the_callers_modes():
    net = TinyResNet().train()
    net.layer1.eval()
    converted = convert(net, example=torch.randn(2, 3, 16, 16))
    assert converted.training and converted.conv1.training and converted.bn1.training
    assert not converted.layer1[0].conv1.training and not converted.layer1[0].bn1.training


class Wrong(nn.Module):
    """A small network with a squeeze-like product, broken on purpose in the test below."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(1, 8, 1), nn.Conv2d(8, 8, 1), nn.Linear(8, 2)

    def forward(self, x):
        y = self.a(x)
        return self.fc((self.b(y) * y).mean((2, 3)))


def test_the_self_check_names_the_first_layer_that_differs(monkeypatch):
    import dynscale.models.converted as converted_module

    # Break the plans the check trusts: the converted layers drop their index, the reference does not.
    original = converted_module._incomplete_linear

    def broken(linear, profile, plans):
        new = original(linear, profile, plans)
        with torch.no_grad():
            new.weight.mul_(1.5)
        return new

    monkeypatch.setattr(converted_module, "_incomplete_linear", broken)
    with pytest.raises(ValueError, match="differs from the original with the same channels masked, first at layer "
                                         "'fc'"):
        convert(Wrong(), example=torch.randn(2, 1, 4, 4))


# A representative dozen of torchvision's classification models (random weights, small inputs);
# the benchmark benchmarks/convert_coverage.py runs all of them.
FAST = [("mobilenet_v3_small", 32), ("squeezenet1_1", 32), ("resnet18", 32)]
SLOW = [("densenet121", 32), ("googlenet", 32), ("inception_v3", 96), ("shufflenet_v2_x0_5", 32),
        ("regnet_y_400mf", 32), ("efficientnet_b0", 32), ("resnet50", 32), ("mnasnet0_5", 32), ("alexnet", 64)]


@pytest.mark.parametrize("arch, size", FAST + [pytest.param(*a, marks=pytest.mark.slow) for a in SLOW])
def test_torchvision_models_convert_exactly(torchvision, arch, size):
    torch.manual_seed(0)
    net = torchvision.models.get_model(arch).eval()
    x = torch.randn(2, 3, size, size)
    converted = convert(net, example=x).eval()  # checked against the masked original at four widths
    with torch.no_grad():
        torch.testing.assert_close(converted(x), net(x), atol=1e-4, rtol=1e-4)
        full = count_macs(converted, x[:1])
        with width(converted, 0.5):
            assert count_macs(converted, x[:1]) < 0.6 * full


def tiny_factory():
    """A factory for the `converted` family: a small network with a concatenation."""
    return Channels("cat")


def test_convert_to_run_writes_a_width_run_that_loads(tmp_path):
    from dynscale.convert import convert_to_run
    from dynscale.errors import DynscaleError
    from dynscale.models.common import input_shape
    from dynscale.runs import load_run

    factory = f"{__file__}:tiny_factory"
    run = convert_to_run(factory, (1, 6, 6), tmp_path / "run")
    loaded = load_run(run)
    assert loaded.kind == "width" and input_shape(loaded.model) == (1, 6, 6)
    x = torch.randn(2, 1, 6, 6)
    torch.manual_seed(0)
    with torch.no_grad():
        assert loaded.model(x).shape == (2, 3)
        with width(loaded.model, 0.5):
            assert loaded.model(x).shape == (2, 3)
    with pytest.raises(DynscaleError, match="exists|already|--force"):
        convert_to_run(factory, (1, 6, 6), tmp_path / "run")
    for bad, match in [("nocolon", "MODULE:FACTORY"), ("no_such_module_xyz:f", "cannot import"),
                       (f"{__file__}:nothing", "has no function 'nothing'"),
                       (f"{__file__}:sequential_net_shape", "has no function")]:
        with pytest.raises(DynscaleError, match=match):
            convert_to_run(bad, (1, 6, 6), tmp_path / "other")
    with pytest.raises(DynscaleError, match="--input-shape takes"):
        convert_to_run(factory, "1,x,6", tmp_path / "other")
    assert not (tmp_path / "other").exists()
