"""Latency per width on several runtimes, through the shared engine (what `dynscale bench` runs)."""

import torch

from dynscale.eval import TimingConfig, format_table
from dynscale.idp import sweep_model

from tiny import tiny_model


def test_bench_reports_each_runtime_beside_the_mac_ratio(synthetic):
    model = tiny_model("vgg16", calibrate=True)
    timing = TimingConfig(batch_sizes=[1, 4], runtimes=["torch", "torch-dense", "onnxruntime"], rounds=2,
                          warmup=1, min_run_time=0.01)
    (curve,) = sweep_model(model, synthetic, [1.0, 0.5], timing, progress=False)
    assert [p.knobs["width"] for p in curve.points] == [1.0, 0.5]
    full, half = curve.points
    assert [(lat.runtime, lat.batch) for lat in full.latency] == [
        ("torch", 1), ("torch-dense", 1), ("onnxruntime", 1), ("torch", 4), ("torch-dense", 4), ("onnxruntime", 4)]
    assert all(lat.ratio == 1.0 for lat in full.latency) and full.macs_ratio == 1.0
    assert 0.2 < half.macs_ratio < 0.3 and all(lat.ms > 0 for lat in half.latency)
    table = format_table([curve], layout="long")
    assert "ratio/MAC onnxruntime@4" in table and len(table.splitlines()) == 2 + 2
    assert torch.is_grad_enabled()  # timing does not leave gradients off
