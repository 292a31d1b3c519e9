
import numpy as np
import pytest
import torch
from torch import nn

from dynscale import get_model, list_models, width
from dynscale.errors import CheckpointError
from dynscale.export import dense, export_run, load_dense
from dynscale.models import build_multi_profile
from dynscale.runs import RunConfig, save_run

from tiny import tiny_model

PLAIN = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)


def tiny(name, seed=0):
    return tiny_model(name, input_size=12, seed=seed, calibrate=True)


@pytest.mark.parametrize("name", list_models())
def test_dense_holds_only_plain_layers_and_equals_the_model_at_a_quarter(name):
    model = tiny(name)
    out = dense(model, 0.25)
    layers = [m for m in out.modules() if isinstance(m, PLAIN)]
    assert layers and all(type(m) in PLAIN for m in layers)
    x = torch.randn(5, 1, 12, 12)
    with width(model, 0.25), torch.no_grad():
        assert (model(x) - out(x)).abs().max() < 1e-4


def test_dense_is_really_smaller():
    model = tiny("vgg16")
    full, half = dense(model, 1.0), dense(model, 0.5)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(half) < 0.35 * count(full)


def test_dense_multi_profile_exports_the_selected_profile():
    torch.manual_seed(0)
    model = build_multi_profile("mlp", [(0.0, 0.3), (0.3, 1.0)], in_channels=1, input_size=12, hidden=[16, 16])
    x = torch.randn(3, 1, 12, 12)
    for p in (0.25, 0.75):
        with width(model, p), torch.no_grad():
            torch.testing.assert_close(model.eval()(x), dense(model, p)(x))


def test_export_run_both_formats(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = tiny("vgg16")
    save_run(tmp_path / "r", model, "synthetic")
    x = torch.randn(2, 1, 12, 12)
    with width(model, 0.5), torch.no_grad():
        expected = model(x)
    onnx_path = export_run(tmp_path / "r", 0.5, "onnx")
    assert onnx_path == tmp_path / "r-w0.5.onnx"  # beside the run, never inside it
    (got,) = ort.InferenceSession(str(onnx_path)).run(None, {"input": x.numpy()})
    assert np.abs(got - expected.numpy()).max() < 1e-4
    directory = export_run(tmp_path / "r", 0.5, "safetensors", tmp_path / "dense")
    assert RunConfig.read(directory).section == {"width": 0.5} and RunConfig.read(directory).kind == "dense"
    loaded = load_dense(directory)
    with torch.no_grad():
        assert (loaded(x) - expected).abs().max() < 1e-4


def test_export_errors(tmp_path):
    save_run(tmp_path / "r", tiny("mlp"), "synthetic")
    with pytest.raises(ValueError, match="unknown export format"):
        export_run(tmp_path / "r", 0.5, "tflite")
    with pytest.raises(ValueError, match="width"):
        export_run(tmp_path / "r", 1.5, "onnx")
    with pytest.raises(CheckpointError, match="not a dense export"):
        load_dense(tmp_path / "nothing")


def test_a_dense_export_of_a_custom_profile_loads(tmp_path):
    # The profile of a run saved from the Python API with a callable is "custom" in its config.
    model = get_model("mlp", in_channels=1, input_size=12, hidden=[8],
                      profile=lambda n: [1.0 / (i + 1) for i in range(n)])
    save_run(tmp_path / "r", model, "synthetic")
    loaded = load_dense(export_run(tmp_path / "r", 0.5, "safetensors", tmp_path / "d"))
    x = torch.randn(2, 1, 12, 12)
    with width(model, 0.5), torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))


def test_dense_exports_of_the_previous_release_still_load(tmp_path):
    import json as _json

    model = tiny("mlp")
    save_run(tmp_path / "r", model, "synthetic")
    directory = export_run(tmp_path / "r", 0.5, "safetensors", tmp_path / "d")
    doc = _json.loads((directory / "config.json").read_text())
    old = {"format": "dynscale-dense", "model": doc["model"], "width": 0.5, "source_run": "r", "data": "synthetic"}
    (directory / "config.json").write_text(_json.dumps(old))
    x = torch.randn(2, 1, 12, 12)
    with width(model, 0.5), torch.no_grad():
        torch.testing.assert_close(load_dense(directory)(x), model(x))


def vgg11(scale=8, classes=10):
    """VGG-11's layout (channels / ``scale``), its classifier reading C·2·2 features after flatten."""
    layers, c = [], 3
    for item in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, item // scale, 3, padding=1), nn.BatchNorm2d(item // scale), nn.ReLU(inplace=True)]
            c = item // scale
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * 4, 64), nn.ReLU(inplace=True), nn.Dropout(),
                         nn.Linear(64, classes))


def test_dense_and_onnx_of_a_converted_vgg11_at_width_0_3(tmp_path):
    from dynscale.convert import convert
    from dynscale.export import export_onnx

    torch.manual_seed(0)
    net = vgg11().eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 64)
    model = convert(net, example=x).eval()
    flat = model[-4]  # the Linear after flatten: whole 2×2 blocks of each kept channel
    kept = flat.in_plan.indices(0.3)
    assert len(kept) % 4 == 0 and kept[:8].tolist() == list(range(8))
    out = dense(model, 0.3, example=x)
    assert all(type(m) in PLAIN for m in out.modules() if isinstance(m, PLAIN))
    with width(model, 0.3), torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(out(x), expected, atol=1e-5, rtol=1e-4)
    assert out[-4].in_features == len(kept) < 0.35 * flat.in_features
    ort = pytest.importorskip("onnxruntime")
    path = export_onnx(out, tmp_path / "vgg11.onnx", example=x)
    (got,) = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})
    assert np.abs(got - expected.numpy()).max() < 1e-4


def test_calibration_runs_every_module_but_the_width_batch_norms_in_eval_mode():
    from dynscale.convert import convert
    from dynscale.idp import calibrate_bn
    from dynscale.layers import incomplete_batchnorms

    torch.manual_seed(0)
    model = convert(vgg11(scale=16), example=torch.randn(2, 3, 64, 64)).train()
    model[-2].eval()  # one module in eval: it must stay so
    batches = [torch.randn(8, 3, 64, 64) for _ in range(2)]
    calibrate_bn(model, batches, [0.5])
    first = [bn.statistics(bn.seen_channels)[0].clone() for bn in incomplete_batchnorms(model)]
    calibrate_bn(model, batches, [0.5])  # dropout off: the same statistics again
    again = [bn.statistics(bn.seen_channels)[0] for bn in incomplete_batchnorms(model)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert model.training and model[0].training and not model[-2].training
