import json

import pytest

from dynscale.eval import Controller, TimingConfig, format_table, write_report
from dynscale.idp import parse_widths, sweep_runs
from dynscale.runs import load_run

FAST = {"rounds": 1, "warmup": 1, "min_run_time": 0.01}


def test_sweep_points(mlp_run):
    (curve,) = sweep_runs([str(mlp_run)], [0.25, 0.5, 1.0], progress=False)
    assert [p.knobs for p in curve.points] == [{"width": 0.25}, {"width": 0.5}, {"width": 1.0}]
    ratios = [p.macs_ratio for p in curve.points]
    assert ratios[-1] == 1.0 and ratios[0] < ratios[1] < 1.0
    assert all(0 <= p.accuracy <= 1 for p in curve.points)
    assert curve.points[-1].accuracy > 0.7
    assert all(not p.latency and p.method == "idp" for p in curve.points)
    params = [p.params for p in curve.points]
    assert params[0] < params[1] < params[2] == sum(t.numel() for t in load_run(mlp_run).model.parameters())


def test_sweep_json_with_latency_on_two_runtimes(mlp_run, tmp_path):
    timing = TimingConfig(batch_sizes=[1, 8], runtimes=["torch", "onnxruntime"], **FAST)
    curves = sweep_runs([str(mlp_run), str(mlp_run)], [0.5, 1.0], progress=False, timing=timing)
    write_report(curves, json=tmp_path / "s.json")
    doc = json.loads((tmp_path / "s.json").read_text())
    assert len(doc["curves"]) == 2
    curve = doc["curves"][0]
    assert curve["run"] == str(mlp_run) and curve["data"] == "synthetic" and curve["label"] == "mlp-linear"
    point = curve["points"][0]
    assert point["knobs"] == {"width": 0.5} and point["savings"]["latency"] == "measured"
    assert {(lat["runtime"], lat["batch"]) for lat in point["latency"]} == {
        ("torch", 1), ("onnxruntime", 1), ("torch", 8), ("onnxruntime", 8)}
    full = curve["points"][1]
    assert all(lat["ratio"] == 1.0 for lat in full["latency"])
    assert all(lat["ms"] > 0 and lat["us_per_example"] > 0 for lat in point["latency"])


def test_sweep_leaves_the_model_as_it_found_it(mlp_run, synthetic):
    from dynscale import set_width
    from dynscale.idp import sweep_model

    model = load_run(mlp_run).model.train()
    set_width(model, 0.75)
    sweep_model(model, synthetic, [0.25, 1.0], TimingConfig(batch_sizes=[2], **FAST), progress=False)
    assert model.training and all(m.in_width == 0.75 for m in model.modules() if hasattr(m, "in_width"))


def test_sweep_on_another_dataset(mlp_run):
    (curve,) = sweep_runs([str(mlp_run)], [1.0], data="synthetic", progress=False)
    assert curve.data == "synthetic"


def test_table_puts_runs_side_by_side(mlp_run):
    curves = sweep_runs([str(mlp_run), str(mlp_run)], [0.5, 1.0], progress=False)
    lines = format_table(curves).splitlines()
    assert lines[1].count("acc %") == 2
    assert len(lines) == 3 + 2
    assert lines[-1].lstrip().startswith("1 |")


def test_plot_writes_a_png(mlp_run, tmp_path):
    curves = sweep_runs([str(mlp_run)], [0.25, 1.0], progress=False)
    write_report(curves, png=tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("text", ["", "0", "0.5,1.5", "a,b", "nan"])
def test_bad_widths(text):
    with pytest.raises(ValueError, match="width"):
        parse_widths(text)


def test_markdown_table(mlp_run):
    curves = sweep_runs([str(mlp_run)], [0.5, 1.0], progress=False)
    lines = format_table(curves, markdown=True).splitlines()
    assert lines[0] == "| width | MAC ratio | mlp-linear acc % |"
    assert lines[1] == "|---|---|---|"
    assert lines[2].startswith("| 1 | 1.000 | ") and lines[3].startswith("| 0.5 | 0.")
    long = format_table(curves, markdown=True, layout="long").splitlines()
    assert long[0].startswith("| curve | setting | acc % | MACs | MAC ratio | params |")


def test_the_controller_picks_from_a_measured_run(mlp_run):
    curves = sweep_runs([str(mlp_run)], [0.5, 1.0], timing=TimingConfig(batch_sizes=[1], **FAST), progress=False)
    point = Controller.from_curves(curves).pick(latency_ms=1e6)
    assert point.knobs["width"] in (0.5, 1.0) and point.latency_at("torch", 1).ms > 0


def test_each_width_at_int8_is_its_own_curve_timed_in_onnx_runtime(mlp_run):
    timing = TimingConfig(batch_sizes=[8], min_run_time=0.01, rounds=1, warmup=1, runtimes=["torch", "onnxruntime"])
    plain, int8 = sweep_runs([mlp_run], [0.5, 1.0], timing=timing, progress=False, int8=True)
    assert int8.curve == "at int8" and int8.label == f"{plain.label} at int8"
    for dense_point, quantized in zip(plain.points, int8.points, strict=True):
        assert quantized.knobs == {**dense_point.knobs, "precision": "int8"}
        assert quantized.macs == dense_point.macs  # the same width, the same counted MACs...
        assert quantized.bitops_ratio == pytest.approx(dense_point.macs_ratio / 16)  # ...at (8/32)² the BitOps
        assert quantized.latency_at("torch", 8) is None and quantized.latency_at("onnxruntime", 8).ratio > 0
        assert abs(quantized.accuracy - dense_point.accuracy) < 0.1 and quantized.saving == "measured"
