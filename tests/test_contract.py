"""The contract every registered model keeps (timm style: one test, parametrized over
`list_models()`): it builds from its metadata, runs at several widths with non-decreasing MACs,
exports to a dense network equal to it at two widths, runs the same in ONNX Runtime, and
survives a save/load round trip."""

import numpy as np
import pytest
import torch

from dynscale import list_models, model_info, width
from dynscale.cost import count_macs, count_parameters
from dynscale.eval.runtime import check_onnx_equal, onnx_bytes, onnxruntime_session
from dynscale.export import dense
from dynscale.layers import WidthScaled, incomplete_layers
from dynscale.runs import load_run, save_run

from tiny import tiny_model

MODELS = list_models()


def test_the_registry_holds_every_family():
    assert set(MODELS) == {"mlp", "vgg16", "mobilenet", "resnet", "resnet38", "resnet74", "binarynet"}


@pytest.mark.parametrize("name", MODELS)
def test_metadata(name):
    info = model_info(name)
    assert info.input_kind == "image" and info.scales_width and info.description
    assert info.convolutional == (name != "mlp")
    stages = info.stages()
    assert stages[-1] == "head" and info.exit_points() == stages[:-1] and len(stages) >= 2
    model = tiny_model(name)
    assert [n for n, _ in model.stages()] == info.stages(**{k: v for k, v in model.config.__dict__.items()})
    assert model.model_name == name


@pytest.mark.parametrize("name", MODELS)
def test_forward_and_costs_at_every_width(name):
    model = tiny_model(name)
    x = torch.rand(3, 1, 8, 8)
    assert incomplete_layers(model), "a registered model must have incomplete layers"
    macs, params = [], []
    for p in (0.1, 0.25, 0.5, 0.75, 1.0):
        with width(model, p), torch.no_grad():
            assert model(x).shape == (3, 10)
            macs.append(count_macs(model, x[:1]))
            params.append(count_parameters(model, x[:1]))
    assert all(a <= b for a, b in zip(macs, macs[1:], strict=False)) and macs[0] < macs[-1]
    assert all(a <= b for a, b in zip(params, params[1:], strict=False))
    assert params[-1] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("p", [1.0, 0.5])
def test_dense_export_equals_the_dynamic_model_in_torch_and_onnxruntime(name, p):
    model = tiny_model(name, input_size=12, calibrate=True)
    plain = dense(model, p)
    assert not any(isinstance(m, WidthScaled) for m in plain.modules())
    x = torch.rand(5, 1, 12, 12) * 2 - 0.5
    with width(model, p), torch.no_grad():
        expected = model(x)
        assert (plain(x) - expected).abs().max() < 1e-4
    session = onnxruntime_session(onnx_bytes(plain, x[:2]))
    check_onnx_equal(session, plain, x, name)  # raises if ONNX Runtime differs
    (got,) = session.run(None, {"input": x[:1].numpy()})  # the batch dimension is dynamic
    assert np.abs(got - expected[:1].numpy()).max() < 1e-4


@pytest.mark.parametrize("name", MODELS)
def test_save_and_load_round_trip(name, tmp_path):
    model = tiny_model(name, calibrate=True)
    save_run(tmp_path / "r", model, "synthetic")
    run = load_run(tmp_path / "r")
    assert run.model_name == name and run.kind == "width"
    x = torch.rand(2, 1, 8, 8)
    for p in (1.0, 0.25):
        with width(model, p), width(run.model, p), torch.no_grad():
            assert torch.equal(model(x), run.model(x))
