import json

import numpy as np
import pytest
import torch
from torch import nn

from dynscale import get_model, list_models, width
from dynscale.calibration import calibrate_bn
from dynscale.checkpoint import save_run
from dynscale.errors import CheckpointError
from dynscale.export import dense, export_onnx, export_run, load_dense
from dynscale.layers import WidthScaled
from dynscale.multiprofile import build_multi_profile

TINY = {"vgg16": {"width_mult": 0.125}, "mobilenet": {"width_mult": 0.25}, "mlp": {"hidden": [16, 16]}}
PLAIN = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)


def tiny(name, seed=0):
    torch.manual_seed(seed)
    model = get_model(name, in_channels=1, input_size=12, **TINY.get(name, {}))
    # Non-trivial batch-norm statistics, calibrated per width, so the export must carry them.
    batches = [(torch.randn(16, 1, 12, 12) * 2 + 0.5, None) for _ in range(3)]
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        calibrate_bn(model, batches, [0.25, 0.5, 1.0])
    return model.eval()


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("p", [1.0, 0.5, 0.25])
def test_dense_equals_dynamic(name, p):
    model = tiny(name)
    out = dense(model, p)
    assert not any(isinstance(m, WidthScaled) for m in out.modules())
    layers = [m for m in out.modules() if isinstance(m, PLAIN)]
    assert layers and all(type(m) in PLAIN for m in layers)
    x = torch.randn(5, 1, 12, 12)
    with width(model, p), torch.no_grad():
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


@pytest.mark.parametrize("name", ["vgg16", "mobilenet", "binarynet"])
def test_onnx_runs_in_onnxruntime_with_the_same_outputs(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = tiny(name)
    path = export_onnx(dense(model, 0.5), tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        x = torch.randn(batch, 1, 12, 12)
        (got,) = session.run(None, {"input": x.numpy()})
        with width(model, 0.5), torch.no_grad():
            expected = model(x).numpy()
        assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4


def test_export_run_both_formats(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = tiny("vgg16")
    save_run(tmp_path / "r", model, "vgg16", "synthetic")
    x = torch.randn(2, 1, 12, 12)
    with width(model, 0.5), torch.no_grad():
        expected = model(x)
    onnx_path = export_run(tmp_path / "r", 0.5, "onnx")
    assert onnx_path.name == "export-w0.5.onnx"
    (got,) = ort.InferenceSession(str(onnx_path)).run(None, {"input": x.numpy()})
    assert np.abs(got - expected.numpy()).max() < 1e-4
    directory = export_run(tmp_path / "r", 0.5, "safetensors", tmp_path / "dense")
    assert json.loads((directory / "config.json").read_text())["width"] == 0.5
    loaded = load_dense(directory)
    with torch.no_grad():
        assert (loaded(x) - expected).abs().max() < 1e-4


def test_export_errors(tmp_path):
    save_run(tmp_path / "r", tiny("mlp"), "mlp", "synthetic")
    with pytest.raises(ValueError, match="unknown export format"):
        export_run(tmp_path / "r", 0.5, "tflite")
    with pytest.raises(ValueError, match="width"):
        export_run(tmp_path / "r", 1.5, "onnx")
    with pytest.raises(CheckpointError, match="not a dense export"):
        load_dense(tmp_path / "nothing")
