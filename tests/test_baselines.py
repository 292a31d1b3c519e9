"""The baselines every sweep of a dynamic method holds: the dense network in eager PyTorch and in
ONNX Runtime, and static int8 in ONNX Runtime and in PyTorch's x86 engine."""

import onnx
import pytest
import torch
from torch import nn

from dynscale.eval import TimingConfig, evaluate
from dynscale.eval.baselines import INT8_BITOPS, dense_baselines, int8_onnx
from dynscale.export import dense

from tiny import tiny_model


@pytest.fixture(scope="module")
def network():
    model = tiny_model("resnet", input_size=12, calibrate=True)
    return dense(model, 1.0)


def test_the_dense_network_runs_in_both_runtimes_and_int8_in_its_own(network):
    torch.manual_seed(0)
    x, y = torch.randn(40, 1, 12, 12), torch.randint(0, 10, (40,))
    baselines = dense_baselines(network, x[:8], [torch.randn(16, 1, 12, 12) for _ in range(3)], name="tiny")
    assert baselines.notes == []
    assert [c.label for c in baselines.int8] == ["int8 (ONNX Runtime QDQ)", "int8 (PyTorch x86)"]
    assert baselines.reference.runner("torch") is not None and baselines.reference.runner("onnxruntime") is not None
    ort8, torch8 = baselines.int8
    assert ort8.runner("torch") is None and torch8.runner("onnxruntime") is None
    timing = TimingConfig(batch_sizes=[2], rounds=1, warmup=1, min_run_time=0.001, runtimes=["torch", "onnxruntime"])
    (dense_curve, int8_curve) = evaluate(baselines.curves("tiny"), baselines.reference, (x, y), timing,
                                         progress=False)
    (reference,) = dense_curve.points
    with torch.no_grad():
        expected = (network(x).argmax(1) == y).float().mean().item()
    assert reference.accuracy == pytest.approx(expected) and reference.macs_ratio == 1.0
    assert {lat.runtime for lat in reference.latency} == {"torch", "onnxruntime"}
    for point, runtime in zip(int8_curve.points, ["onnxruntime", "torch"], strict=True):
        assert [lat.runtime for lat in point.latency] == [runtime] and point.saving == "measured"
        assert point.bitops_ratio == INT8_BITOPS and point.macs == reference.macs
        assert abs(point.accuracy - reference.accuracy) <= 0.15  # int8 keeps most decisions of float32


def test_int8_really_is_quantized(network):
    calibration = [torch.randn(16, 1, 12, 12) for _ in range(2)]
    graph = onnx.load_from_string(int8_onnx(network, torch.randn(4, 1, 12, 12), calibration))
    ops = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    from dynscale.eval.baselines import int8_torch

    quantized = int8_torch(network, torch.randn(4, 1, 12, 12), calibration)
    kinds = {type(m).__module__ for m in quantized.modules()}
    assert any("quantized" in k for k in kinds)


class Branchy(nn.Module):
    """Control flow on a tensor's value: FX cannot trace it, so PyTorch's quantizer cannot take it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = self.conv(x)
        if h.sum() > 0:
            h = h.relu()
        return self.head(h.mean((2, 3)))


def test_a_network_the_quantizer_cannot_take_gets_a_note_not_a_failure():
    baselines = dense_baselines(Branchy().eval(), torch.randn(4, 1, 8, 8), [torch.randn(8, 1, 8, 8)], name="branchy")
    assert [c.label for c in baselines.int8] == ["int8 (ONNX Runtime QDQ)"]
    (note,) = baselines.notes
    assert note.startswith("branchy: no static int8 in PyTorch (")


def test_onnx_runtime_runs_every_convolution_of_the_int8_graph_in_int8(tmp_path):
    """The exporter's Identity nodes (here for batch norms left at their identical initial values)
    kept ONNX Runtime from fusing convolutions (float32 between a dequantize and a quantize); the
    pre-processed graph has none left in float."""
    import onnxruntime as ort

    network = dense(tiny_model("resnet", input_size=12), 1.0)
    calibration = [torch.randn(16, 1, 12, 12) for _ in range(2)]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(int8_onnx(network, torch.randn(4, 1, 12, 12), calibration), options,
                         providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "QLinearConv" in ops and "Conv" not in ops, ops
