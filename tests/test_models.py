import pytest
import torch

from dynscale import get_model, list_models, set_width
from dynscale.cost import count_macs
from dynscale.layers import incomplete_layers


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
    with pytest.raises(ValueError, match="option hidden takes a non-empty list"):
        get_model("mlp", hidden=[])


@pytest.mark.parametrize("name", ["vgg16", "mobilenet"])
def test_conv_models_scale_channels_and_reject_bad_width_mult(name):
    half = get_model(name, width_mult=0.5)
    full = get_model(name)
    assert sum(p.numel() for p in half.parameters()) < 0.3 * sum(p.numel() for p in full.parameters())
    with pytest.raises(ValueError, match="option width_mult takes a number > 0"):
        get_model(name, width_mult=0)


def test_vgg16_has_thirteen_convs_and_the_first_is_never_cut():
    model = get_model("vgg16")
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13 and [c.out_channels for c in convs][:3] == [64, 64, 128]
    assert not convs[0].cut_input and all(c.cut_input for c in convs[1:])
    assert (convs[0].profile == 1).all()


def test_register_model_takes_metadata_and_refuses_a_builder_without_a_config():
    from dynscale.models import model_info, register_model

    with pytest.raises(TypeError, match="must take `config: SomeDataclass`"):
        register_model(lambda config: None)
    with pytest.raises(ValueError, match="already registered"):
        register_model(model_info("mlp").builder)
    with pytest.raises(ValueError, match="unknown input kind"):
        register_model(input_kind="audio")
