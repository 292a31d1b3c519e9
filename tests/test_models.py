import pytest
import torch

from dynscale import get_model, list_models, set_width
from dynscale.cost import count_macs
from dynscale.layers import incomplete_layers

SMALL = {"mlp": {"hidden": [16, 16]}}


def build(name, **extra):
    cfg = {"in_channels": 1, "input_size": 8, "num_classes": 10, **SMALL.get(name, {}), **extra}
    return get_model(name, **cfg)


@pytest.mark.parametrize("name", list_models())
def test_every_model_scales_and_keeps_its_class_outputs(name):
    torch.manual_seed(0)
    model = build(name).eval()
    x = torch.randn(3, 1, 8, 8)
    assert incomplete_layers(model), "a registered model must have incomplete layers"
    assert model.config is not None
    macs = []
    for p in (1.0, 0.5, 0.1):
        set_width(model, p)
        assert model(x).shape == (3, 10)
        macs.append(count_macs(model, x[:1]))
    assert macs[0] > macs[1] > macs[2] > 0


@pytest.mark.parametrize("name", list_models())
def test_every_model_accepts_a_profile(name):
    model = build(name, profile="harmonic")
    assert any(torch.any(layer.profile < 1) for layer in incomplete_layers(model))


def test_registry_lists_the_mlp():
    assert "mlp" in list_models()


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="unknown model 'resnet9000'; choose one of .*mlp"):
        get_model("resnet9000")


def test_unknown_model_option_names_the_options():
    with pytest.raises(ValueError, match="no option depth.*hidden"):
        get_model("mlp", depth=3)


def test_mlp_default_is_784_100_100_10():
    model = get_model("mlp")
    shapes = [tuple(m.weight.shape) for m in incomplete_layers(model)]
    assert shapes == [(100, 784), (100, 100), (10, 100)]


def test_mlp_macs_equal_the_analytic_count_at_every_width():
    model = get_model("mlp", profile="linear")
    x = torch.randn(1, 1, 28, 28)
    for pct in range(1, 101):
        p = pct / 100
        set_width(model, p)
        k = max(1, -(-pct * 100 // 100))  # ceil(p * 100) in integers
        assert count_macs(model, x) == 784 * k + k * k + 10 * k, p


def test_mlp_hidden_sizes_and_input_size_are_configurable():
    model = get_model("mlp", in_channels=3, input_size=4, hidden=[20, 10, 5], num_classes=7)
    assert model(torch.randn(2, 3, 4, 4)).shape == (2, 7)
    with pytest.raises(ValueError, match="at least one hidden layer"):
        get_model("mlp", hidden=[])


@pytest.mark.parametrize("name", ["vgg16", "mobilenet"])
def test_conv_models_scale_channels_and_reject_bad_width_mult(name):
    half = get_model(name, width_mult=0.5)
    full = get_model(name)
    assert sum(p.numel() for p in half.parameters()) < 0.3 * sum(p.numel() for p in full.parameters())
    with pytest.raises(ValueError, match="width_mult must be > 0"):
        get_model(name, width_mult=0)


def test_vgg16_has_thirteen_convs_and_the_first_is_never_cut():
    model = get_model("vgg16")
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13 and [c.out_channels for c in convs][:3] == [64, 64, 128]
    assert not convs[0].cut_input and all(c.cut_input for c in convs[1:])
    assert (convs[0].profile == 1).all()
