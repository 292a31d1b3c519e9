import json

import pytest

from dynscale.cost import LatencyConfig
from dynscale.sweep import format_markdown, format_table, parse_widths, plot, sweep_runs, to_json, write_json


def test_sweep_points(mlp_run):
    (result,) = sweep_runs([str(mlp_run)], [0.25, 0.5, 1.0], progress=False)
    assert [p.width for p in result.points] == [0.25, 0.5, 1.0]
    ratios = [p.macs_ratio for p in result.points]
    assert ratios[-1] == 1.0 and ratios[0] < ratios[1] < 1.0
    assert all(0 <= p.accuracy <= 1 for p in result.points)
    assert result.points[-1].accuracy > 0.7
    assert all(p.latency_ms is None for p in result.points)


def test_sweep_json_schema(mlp_run, tmp_path):
    results = sweep_runs([str(mlp_run), str(mlp_run)], [0.5, 1.0], progress=False,
                         latency=LatencyConfig(batch_sizes=[1, 8], min_run_time=0.02))
    path = tmp_path / "s.json"
    write_json(results, path)
    doc = json.loads(path.read_text())
    assert doc == to_json(results)
    assert len(doc["runs"]) == 2
    run = doc["runs"][0]
    assert set(run) == {"run", "model", "profile", "data", "points"}
    assert run["model"] == "mlp" and run["profile"] == "linear" and run["data"] == "synthetic"
    point = run["points"][0]
    assert set(point) == {"width", "accuracy", "macs", "macs_ratio", "latency_ms"}
    assert set(point["latency_ms"]) == {"1", "8"} and all(v > 0 for v in point["latency_ms"].values())


def test_sweep_on_another_dataset(mlp_run):
    (result,) = sweep_runs([str(mlp_run)], [1.0], data="synthetic", progress=False)
    assert result.data == "synthetic"


def test_table_puts_runs_side_by_side(mlp_run):
    results = sweep_runs([str(mlp_run), str(mlp_run)], [0.5, 1.0], progress=False)
    table = format_table(results)
    lines = table.splitlines()
    assert lines[1].count("acc %") == 2
    assert len(lines) == 3 + 2
    assert lines[-1].lstrip().startswith("1 |")


def test_plot_writes_a_png(mlp_run, tmp_path):
    results = sweep_runs([str(mlp_run)], [0.25, 1.0], progress=False)
    path = tmp_path / "curve.png"
    plot(results, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("text", ["", "0", "0.5,1.5", "a,b", "nan"])
def test_bad_widths(text):
    with pytest.raises(ValueError, match="width"):
        parse_widths(text)


def test_markdown_table(mlp_run):
    results = sweep_runs([str(mlp_run)], [0.5, 1.0], progress=False)
    lines = format_markdown(results).splitlines()
    assert lines[0] == "| width | MAC ratio | mlp-linear acc % |"
    assert lines[1] == "|---|---|---|"
    assert lines[2].startswith("| 1 | 1.000 | ") and lines[3].startswith("| 0.5 | 0.")
