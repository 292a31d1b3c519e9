"""dynscale.graph: one traced graph of a model, and its structure queries."""

import pytest
import torch
from torch import nn

from dynscale import list_models
from dynscale.graph import GraphError, trace

from tiny import tiny_model

SIZE = 16


def example(name):
    return torch.randn(2, 1, SIZE, SIZE)


def registered(name):
    return tiny_model(name, input_size=SIZE)


def run_segments(segments, x):
    """The output of each segment (cloned: a later in-place ReLU must not change them)."""
    values = []
    with torch.no_grad():
        for segment in segments:
            x = segment(x)
            values.append(x.clone() if isinstance(x, torch.Tensor) else x)
    return values


@pytest.mark.parametrize("name", list_models())
def test_split_at_every_boundary_composes_to_the_forward(name):
    model, x = registered(name), example(name)
    g = trace(model, x)
    assert g.module is model and g.layers()
    boundaries = g.stage_boundaries()
    assert boundaries and all(b.shape[0] == 2 for b in boundaries)
    segments = g.split([b.name for b in boundaries])
    assert len(segments) == len(boundaries) + 1
    values = run_segments(segments, x)
    with torch.no_grad():
        assert torch.equal(values[-1], model(x))
    for b, v in zip(boundaries, values, strict=False):
        assert tuple(v.shape) == b.shape
    # Sharing, not copying: the segments hold the model's own parameters.
    params = {id(p) for p in model.parameters()}
    assert {id(p) for s in segments for p in s.parameters()} <= params


@pytest.mark.parametrize("name", list_models())
def test_the_boundaries_include_every_stage_of_the_registered_models(name):
    model, x = registered(name), example(name)
    g = trace(model, x)
    values = run_segments(g.split([b.name for b in g.stage_boundaries()]), x)
    stages = [stage for _, stage in model.stages()]
    with torch.no_grad():
        h = x
        for stage in stages[:-1]:
            h = stage(h)
            assert any(v.shape == h.shape and torch.equal(v, h) for v in values[:-1]), stage


def test_layers_are_in_execution_order_and_chains_end_in_relu():
    g = trace(registered("vgg16"), example("vgg16"))
    assert g.layers()[:2] == ["features.0", "features.3"] and g.layers()[-1] == "classifier.3"
    chains = g.relu_chains()
    assert len(chains) == 14  # 13 convolutions and the hidden linear layer
    assert chains[0].layer == "features.0" and chains[0].bn == "features.1" and chains[0].act == "features.2"
    assert chains[0].act_is_module
    mlp = trace(registered("mlp"), example("mlp"))
    assert [(c.layer, c.bn, c.act) for c in mlp.relu_chains()] == [("layers.0", None, "layers.1"),
                                                                    ("layers.2", None, "layers.3")]


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        x = torch.relu(self.a(x))
        y = self.b(x)  # used twice: not a chain
        return self.c(nn.functional.relu(y) + y)


def test_functional_relu_chains():
    chains = trace(Functional(), torch.randn(2, 4)).relu_chains()
    assert [(c.layer, c.act, c.act_is_module) for c in chains] == [("a", "relu", False)]


@pytest.mark.parametrize("name, blocks, projections", [("resnet", 3, 2), ("resnet38", 18, 2), ("resnet74", 36, 2)])
def test_residual_blocks_of_the_registered_resnets(name, blocks, projections):
    model = registered(name)
    found = trace(model, example(name)).residual_blocks()
    assert len(found) == blocks
    assert sum(bool(b.shortcut) for b in found) == projections
    first = found[0]
    assert first.name == "layers.0.0" and first.body == ["layers.0.0.conv1", "layers.0.0.conv2"]
    assert first.shortcut == [] and first.input_shape == first.output_shape
    down = [b for b in found if b.shortcut][0]
    assert down.shortcut == [f"{down.name}.shortcut.0"] and down.output_shape[1] == down.input_shape[1] // 2
    assert all(isinstance(model.get_submodule(b.name), type(model.layers[0][0])) for b in found)


@pytest.mark.parametrize("arch, blocks, projections, body", [("resnet18", 8, 3, 2), ("resnet50", 16, 4, 3)])
def test_residual_blocks_of_torchvision_resnets(torchvision, arch, blocks, projections, body):
    model = getattr(torchvision.models, arch)().eval()
    found = trace(model, torch.randn(1, 3, 64, 64)).residual_blocks()
    assert len(found) == blocks and sum(bool(b.shortcut) for b in found) == projections
    assert all(len(b.body) == body for b in found)
    assert found[0].name == "layer1.0" and found[-1].name == ("layer4.1" if arch == "resnet18" else "layer4.2")
    assert [b.name for b in found if b.shortcut][-1] == "layer4.0"
    assert found[-1].shortcut == [] and found[-1].body[0] == f"{found[-1].name}.conv1"


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "squeezenet1_1"])
def test_torchvision_models_split_at_their_boundaries(torchvision, arch):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)().eval()
    x = torch.randn(1, 3, 64, 64)
    g = trace(model, x)
    names = [b.name for b in g.stage_boundaries()]
    assert len(names) >= 5
    with torch.no_grad():
        assert torch.equal(run_segments(g.split(names), x)[-1], model(x))
        assert torch.equal(run_segments(g.split(names[1::3]), x)[-1], model(x))


def test_tracing_leaves_the_model_as_it_was():
    model = registered("resnet").train()
    model.layers[0].eval()
    trace(model, example("resnet"))
    assert model.training and not model.layers[0].training and model.layers[1].training


class Conv2dSame(nn.Conv2d):
    """As in timm: 'same' padding inside forward."""

    def forward(self, x):
        return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))


class KeepsForward(nn.Conv2d):
    """A subclass that keeps Conv2d's forward: a Conv2d to the graph."""


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x):
        return self.a(x) if x.sum() > 0 else x  # data-dependent control flow


def test_refusals_name_the_module_and_the_place():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), Conv2dSame(4, 4, 3))
    with pytest.raises(GraphError, match=r"module '1' \(Conv2dSame\) subclasses Conv2d but overrides forward.*"
                                         r"fx node '_1'"):
        trace(net, torch.randn(1, 1, 8, 8))
    assert trace(nn.Sequential(KeepsForward(1, 4, 3)), torch.randn(1, 1, 8, 8)).layers() == ["0"]
    with pytest.raises(GraphError, match="torch.fx cannot trace the model"):
        trace(Branchy(), torch.randn(2, 4))
    with pytest.raises(GraphError, match=r"example input of shape \(2, 5\) does not run"):
        trace(Branchy().a, torch.randn(2, 5))
    with pytest.raises(GraphError, match="'head' is not a stage boundary"):
        trace(registered("mlp"), example("mlp")).split(["head"])


# ---- channel-dependency groups ------------------------------------------------------------------

def group_of(g, tensor, start=0):
    """The group holding channel ``start`` of ``tensor`` (a layer name or an fx node name)."""
    for group in g.groups():
        for s in group.segments:
            if s.tensor == tensor and s.start <= start < s.start + s.size:
                return group
    raise AssertionError(f"no group holds {tensor}[{start}]")


def test_a_residual_stream_is_one_group_and_the_ends_stay_whole():
    g = trace(registered("resnet"), example("resnet"))
    stream = group_of(g, "stem.0")
    assert {s.tensor for s in stream.segments} == {"stem.0", "layers.0.0.conv2"} and not stream.whole
    assert group_of(g, "x").whole == "it is the network's input"
    assert "output" in group_of(g, "classifier").whole
    inner = group_of(g, "layers.0.0.conv1")
    assert [s.tensor for s in inner.segments] == ["layers.0.0.conv1"] and inner.kept(0.5) == inner.size // 2


class Mixed(nn.Module):
    """A concatenation, a squeeze-excitation product, a depthwise and a grouped convolution,
    a flatten into a linear layer, and two outputs."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
        self.dw = nn.Conv2d(10, 10, 3, padding=1, groups=10)
        self.se = nn.Conv2d(10, 10, 1)
        self.pw, self.grouped = nn.Conv2d(10, 10, 1), nn.Conv2d(10, 8, 1, groups=2)
        self.fc = nn.Linear(8 * 2 * 2, 5)
        self.aux = nn.Linear(10, 3)

    def forward(self, x):
        y = torch.cat([self.a(x), torch.relu(self.b(x))], dim=1)  # (B, 10, 4, 4)
        y = self.dw(y)
        y = y * torch.sigmoid(self.se(y.mean((2, 3), keepdim=True)))
        z = nn.functional.max_pool2d(self.grouped(self.pw(y)), 2).flatten(1)  # (B, 8·2·2)
        return self.fc(z), self.aux(y.mean((2, 3)))


def test_concatenation_squeeze_excitation_depthwise_grouped_and_flatten():
    g = trace(Mixed(), torch.randn(2, 3, 4, 4))
    channels = g.channels()
    # The depthwise output and the SE scale hold the channels of both concatenated parts.
    part_a, part_b = group_of(g, "a"), group_of(g, "b")
    assert {s.tensor for s in part_a.segments} == {"a", "dw", "se"} and part_a.size == 6
    assert part_b.size == 4 and ("dw", 6, 4) in [(s.tensor, s.start, s.size) for s in part_b.segments]
    dw_in, _ = channels.layer_plans("dw")
    assert dw_in.indices(0.5).tolist() == [0, 1, 2, 6, 7]  # each part keeps its own prefix
    # The grouped convolution keeps whole groups of its input (5 per group) and output (4).
    grouped_in, grouped_out = channels.layer_plans("grouped")
    assert grouped_in.count(0.5) == 5 and grouped_out.count(0.5) == 4
    assert group_of(g, "pw").unit == 5 and group_of(g, "grouped").unit == 4
    # Flatten into the linear layer: the kept channels' 2×2 blocks.
    fc_in, fc_out = channels.layer_plans("fc")
    assert fc_in.indices(0.5).tolist() == list(range(16)) and not fc_out.cuts()  # one group of 4, 2×2 each
    assert not channels.layer_plans("aux")[1].cuts()  # both outputs stay whole


class Normed(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.norm, self.b, self.c = nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.c(torch.relu(self.b(self.norm(self.a(x)))))


def test_an_operation_that_mixes_channels_keeps_its_group_whole_with_the_reason():
    g = trace(Normed(), torch.randn(2, 4))
    assert group_of(g, "a").whole.startswith("layer normalisation mixes the channels")
    assert not group_of(g, "b").whole


def opaque(x):
    return x * 2


torch.fx.wrap("opaque")


class Opaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(opaque(self.a(x)))


def test_an_unknown_operation_on_channels_is_refused_with_its_place():
    with pytest.raises(GraphError, match=r"function opaque \(fx node 'opaque' in module '<root>'\)"):
        trace(Opaque(), torch.randn(2, 4)).groups()
