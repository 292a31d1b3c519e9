"""The evaluation engine: the timing protocol, the report writer, the controller."""

import csv
import io
import json

import pytest
import torch

from dynscale.errors import DynscaleError
from dynscale.eval import (
    Candidate,
    Controller,
    Curve,
    CurveSpec,
    Latency,
    Measurement,
    OperatingPoint,
    Runner,
    TimingConfig,
    curves_from_json,
    evaluate,
    format_table,
    read_curves,
    time_points,
    to_csv,
    write_report,
)
from dynscale.eval.timing import batches_for, median_iqr


class Clock:
    """A simulated clock: runners advance it by their cost, so timings are exact."""

    def __init__(self):
        self.now = 0.0
        self.drift = 1.0  # the machine slows down over time, for every point alike

    def __call__(self):
        return self.now

    def runner(self, seconds_per_example, calls):
        def run(batch):
            calls.append(len(batch))
            self.now += seconds_per_example * len(batch) * self.drift
            self.drift *= 1.0001
        return Runner(run, prepare=lambda: calls.append("block"))


def test_timing_ratios_are_exact_and_the_reference_is_timed_every_round():
    clock, calls = Clock(), {"ref": [], "half": [], "quarter": []}
    ref = clock.runner(1e-3, calls["ref"])
    runners = [{"torch": ref}, {"torch": clock.runner(0.5e-3, calls["half"])},
               {"torch": clock.runner(0.25e-3, calls["quarter"])}]
    config = TimingConfig(batch_sizes=[4, 8], rounds=5, warmup=1, min_run_time=0.01)
    x = torch.arange(6.0)[:, None]  # 6 examples: batch 8 repeats them
    results = time_points(runners, {"torch": ref}, x, config, progress=False, timer=clock)
    assert [[(lat.runtime, lat.batch) for lat in r] for r in results] == [[("torch", 4), ("torch", 8)]] * 3
    for lat_ref, lat_half, lat_quarter in zip(*results, strict=True):
        assert lat_ref.ratio == 1.0 and lat_ref.ratio_iqr == 0.0
        # The drift falls on both sides: the ratio stays at the true one.
        assert lat_half.ratio == pytest.approx(0.5, rel=0.01)
        assert lat_quarter.ratio == pytest.approx(0.25, rel=0.01)
        assert lat_half.ms == pytest.approx(0.5 * lat_half.batch, rel=0.1)
        assert lat_half.us_per_example == pytest.approx(500, rel=0.1)
    assert set(calls["half"]) == {4, 8, "block"}  # real batches of the given sizes
    # Timed blocks per batch size: one warm-up, then every round the reference before and after
    # the points; the reference is never timed as a point of its own.
    assert calls["ref"].count("block") == 2 * (1 + 5 * 2)
    assert calls["half"].count("block") == calls["quarter"].count("block") == 2 * (1 + 5)


def test_runners_prepare_and_convert_once_outside_the_timing():
    clock, seen, prepared = Clock(), [], []

    def run(batch):
        seen.append(type(batch))
        clock.now += 1e-3

    runner = Runner(run, prepare=lambda: prepared.append(1), convert=lambda x: x.numpy())
    ref = Runner(lambda b: setattr(clock, "now", clock.now + 2e-3))
    config = TimingConfig(batch_sizes=[2], rounds=2, warmup=1, min_run_time=0.005)
    (lat_ref,), (lat,) = time_points([{"torch": ref}, {"torch": runner}], {"torch": ref}, torch.zeros(5, 3), config,
                                     progress=False, timer=clock)
    import numpy as np

    assert set(seen) == {np.ndarray} and len(prepared) == 3  # warm-up + one per round
    assert lat.ratio == pytest.approx(0.5)


def test_statistics_are_the_median_and_interquartile_range():
    assert median_iqr([4.0]) == (4.0, 0.0)
    assert median_iqr([1.0, 2.0, 3.0, 10.0]) == (2.5, pytest.approx(3.0))  # not the lower middle value
    assert [len(b) for b in batches_for(torch.zeros(10, 1), 4, 10)] == [4, 4, 2]
    assert [len(b) for b in batches_for(torch.zeros(3, 1), 4, None)] == [4]


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_sizes": [0]}, "batch sizes"), ({"threads": 0}, "threads"), ({"rounds": 0}, "rounds"),
    ({"min_run_time": float("nan")}, "min run time"), ({"examples": 0}, "at least 1"),
    ({"runtimes": ["tflite"]}, "unknown runtime 'tflite'"), ({"runtimes": []}, "at least one runtime"),
])
def test_bad_timing_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TimingConfig(**kwargs)


def lat(ms, ratio, batch=1, runtime="torch"):
    return Latency(runtime, batch, ms, 0.0, ms * 1e3 / batch, ratio, 0.0)


POINTS = [
    OperatingPoint("idp", {"width": 0.25}, 0.70, 100, 0.06, 10, latency=[lat(1.0, 0.25), lat(10.0, 0.1, 64)],
                   label="0.25"),
    OperatingPoint("idp", {"width": 0.5}, 0.85, 400, 0.25, 40, latency=[lat(2.0, 0.5), lat(30.0, 0.25, 64)],
                   label="0.5"),
    OperatingPoint("idp", {"width": 0.75}, 0.85, 900, 0.56, 90, latency=[lat(3.0, 0.75), lat(70.0, 0.6, 64)],
                   label="0.75"),  # no better than 0.5: never picked
    OperatingPoint("idp", {"width": 1.0}, 0.89, 1600, 1.0, 160, latency=[lat(4.0, 1.0), lat(120.0, 1.0, 64)],
                   label="1"),
]


def test_controller_picks_the_most_accurate_point_within_a_budget():
    c = Controller(POINTS)
    assert c.pick(macs_ratio=0.3).knobs == {"width": 0.5}
    assert c.pick(macs_ratio=0.06).knobs == {"width": 0.25}
    assert c.pick(macs_ratio=0.9).knobs == {"width": 0.5}  # 0.75 ties 0.5 on accuracy and costs more
    assert c.pick(latency_ms=2.5).knobs == {"width": 0.5}
    assert c.pick(latency_ms=100, batch=64).knobs == {"width": 0.5}


@pytest.mark.parametrize("kwargs, match", [
    ({"macs_ratio": 0.01}, r"nothing fits a budget of 0.01 of the full network's MACs; the smallest cost "
                           r"available is 0.06 of the full network's MACs \(width 0.25\)"),
    ({"latency_ms": 0.5}, r"smallest cost available is 1 ms at batch 1 on torch \(width 0.25\)"),
    ({"latency_ms": 5, "batch": 8}, "no latency at batch 8"),
    ({"latency_ms": 5, "runtime": "onnxruntime"}, "no latency at batch 1 on onnxruntime"),
    ({"bitops_ratio": 0.5}, "counts no BitOps"),
    ({}, "exactly one budget"),
    ({"macs_ratio": 0.5, "latency_ms": 1}, "exactly one budget"),
    ({"macs_ratio": -1}, "must be > 0"),
])
def test_impossible_or_bad_budgets(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Controller(POINTS).pick(**kwargs)


def test_reports_round_trip_through_json_and_the_controller_reads_them(tmp_path):
    curves = [Curve("a", POINTS, "runs/a", "digits"), Curve("b", POINTS[:2], "runs/b", "digits")]
    path = tmp_path / "s.json"
    write_report(curves, json=path, meta={"title": "t"})
    doc = json.loads(path.read_text())
    assert doc["schema"] == "dynscale-curves" and doc["schema_version"] == 1 and doc["title"] == "t"
    assert doc["curves"][0]["points"][0]["savings"] == {"macs": "counted", "latency": "measured"}
    assert curves_from_json(doc) == curves == read_curves(path)
    assert Controller.from_file(path, run="b").pick(macs_ratio=1.0).knobs == {"width": 0.5}
    assert Controller.from_file(path, run="runs/a").pick(macs_ratio=1.0).knobs == {"width": 1.0}
    with pytest.raises(DynscaleError, match="several runs"):
        Controller.from_file(path)
    with pytest.raises(DynscaleError, match="no run 'c'"):
        Controller.from_file(path, run="c")
    for text, match in [("{}", "not a report written by dynscale"), ("nope", "cannot read"),
                        ('{"schema": "dynscale-curves", "schema_version": 7}', "schema version 7")]:
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(DynscaleError, match=match):
            read_curves(tmp_path / "bad.json")


def test_a_nan_never_reaches_a_report(tmp_path):
    bad = OperatingPoint("idp", {"width": 1.0}, float("nan"), 1, 1.0, 1)
    with pytest.raises(ValueError, match="non-finite number.*curves.0.points.0.accuracy"):
        write_report([Curve("a", [bad])], json=tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_the_controller_reads_any_methods_curves():
    learned = [OperatingPoint("early-exit", {"lambda": lam}, acc, 1, ratio, 1, label=f"λ={lam:g}")
               for lam, acc, ratio in [(0.0, 0.9, 0.8), (0.1, 0.88, 0.4)]]
    full = [OperatingPoint("early-exit", {}, 0.9, 1, 1.0, 1, label="full")]
    c = Controller.from_curves([Curve("x: full", full, "x"), Curve("x: learned", learned, "x")])
    assert c.pick(macs_ratio=0.5).label == "λ=0.1"
    assert c.pick(macs_ratio=1.0).label == "λ=0"  # as accurate as the full network, cheaper


def test_tables_wide_long_markdown_and_csv():
    curves = [Curve("a", POINTS, "runs/a"), Curve("b", POINTS[:2], "runs/b")]
    wide = format_table(curves).splitlines()
    assert wide[1].split()[0] == "width" and wide[1].count("acc %") == 2 and "ms torch@64" in wide[1]
    assert len(wide) == 3 + 4 and wide[-1].lstrip().startswith("1 |") and wide[-1].rstrip().endswith("-")
    long = format_table(curves, layout="long").splitlines()
    assert "ratio/MAC torch@1" in long[0] and len(long) == 2 + 6
    markdown = format_table(curves, markdown=True).splitlines()
    assert markdown[0] == ("| width | MAC ratio | a acc % | b acc % | a latency ratio torch@1 | "
                           "a latency ratio torch@64 | b latency ratio torch@1 | b latency ratio torch@64 |")
    assert markdown[2].startswith("| 1 | 1.000 | 89.00 | – |")
    rows = list(csv.DictReader(io.StringIO(to_csv(curves))))
    assert len(rows) == 6 and rows[1]["knob:width"] == "0.5" and rows[1]["torch@64 ms"] == "30.0"
    assert rows[0]["measured"] == "True"
    with pytest.raises(ValueError, match="unknown table layout"):
        format_table(curves, layout="diagonal")


def test_extras_become_columns():
    p = OperatingPoint("early-exit", {"lambda": 0.1}, 0.9, 10, 0.5, 5, label="λ=0.1",
                       extra={"exit": {"block1": 0.25, "final": 0.75}, "bytes_sent": 12.0, "policies": {"x": []}})
    table = format_table([Curve("ee", [p])])
    assert "% exit block1" in table and "75.0" in table and "bytes sent" in table and "policies" not in table


def test_evaluate_measures_each_candidate_once_and_relates_costs_to_the_reference():
    measured = []

    def candidate(name, macs, acc):
        def measure(x, y):
            measured.append(name)
            return Measurement(acc, macs, 7, extra={"note": 1.0})
        return Candidate("toy", {"size": macs}, name, measure, lambda runtime: Runner(lambda b: None))

    full, half = candidate("full", 200.0, 0.9), candidate("half", 100.0, 0.8)
    curves = evaluate([(CurveSpec("one", "r", "d"), [half, full]), (CurveSpec("two", curve="again"), [half])],
                      full, (torch.zeros(3, 1), torch.zeros(3)), progress=False)
    assert measured == ["half", "full"]
    assert [p.macs_ratio for p in curves[0].points] == [0.5, 1.0] and curves[1].points[0].macs_ratio == 0.5
    assert curves[0].run == "r" and curves[1].curve == "again" and not curves[0].points[0].measured


def test_points_run_only_where_they_can_and_relate_to_the_reference_on_every_runtime():
    """A point without a runner on a runtime is not timed there; every point's time is also
    related, round by round, to the reference on the other runtimes (an eager network against
    the dense network in ONNX Runtime)."""
    clock = Clock()
    calls = {name: [] for name in ("ref-torch", "ref-ort", "eager", "ort-only")}
    ref = {"torch": clock.runner(1e-3, calls["ref-torch"]), "onnxruntime": clock.runner(0.25e-3, calls["ref-ort"])}
    eager = {"torch": clock.runner(0.5e-3, calls["eager"]), "onnxruntime": None}
    ort_only = {"torch": None, "onnxruntime": clock.runner(0.125e-3, calls["ort-only"])}
    config = TimingConfig(batch_sizes=[4], rounds=3, warmup=1, min_run_time=0.01, runtimes=["torch", "onnxruntime"])
    (r_ref, r_eager, r_ort) = time_points([ref, eager, ort_only], ref, torch.zeros(4, 1), config, progress=False,
                                          timer=clock)
    assert [lat.runtime for lat in r_ref] == ["torch", "onnxruntime"]
    assert [lat.runtime for lat in r_eager] == ["torch"] and [lat.runtime for lat in r_ort] == ["onnxruntime"]
    (eager_lat,), (ort_lat,) = r_eager, r_ort
    assert eager_lat.ratio == pytest.approx(0.5, rel=0.01)
    assert eager_lat.versus == {"onnxruntime": pytest.approx(2.0, rel=0.01)}  # twice the dense ORT time
    assert ort_lat.ratio == pytest.approx(0.5, rel=0.01) and ort_lat.versus == {"torch": pytest.approx(0.125, rel=0.01)}
    assert r_ref[0].versus == {"onnxruntime": pytest.approx(4.0, rel=0.01)}
    with pytest.raises(ValueError, match="reference point does not run on onnxruntime"):
        time_points([eager], eager, torch.zeros(4, 1), config, progress=False, timer=clock)


def test_a_simulated_saving_is_counted_never_measured(tmp_path):
    timed = [lat(1.0, 0.5)]
    executed = OperatingPoint("dfs", {"target": 50}, 0.9, 10, 0.5, 5, 0.3, timed, "executed")
    simulated = OperatingPoint("dfs", {"target": 50}, 0.9, 10, 0.5, 5, 0.3, timed, "8-16 bits", executed=False)
    untimed = OperatingPoint("dfs", {"target": 50}, 0.9, 10, 0.5, 5, 0.3, [], "untimed")
    assert (executed.saving, simulated.saving, untimed.saving) == ("measured", "counted", "counted")
    curves = [Curve("dfs", [executed, simulated, untimed])]
    header, *rows = [[cell.strip() for cell in line.strip("|").split("|")]
                     for line in format_table(curves, markdown=True, layout="long").splitlines() if "---" not in line]
    assert [row[header.index("saving")] for row in rows] == ["measured", "counted", "counted"]
    assert [r["saving"] for r in csv.DictReader(io.StringIO(to_csv(curves)))] == ["measured", "counted", "counted"]
    write_report(curves, json=tmp_path / "c.json")
    back = read_curves(tmp_path / "c.json")
    assert back == curves and [p.executed for p in back[0].points] == [True, False, True]


def test_tables_show_the_ratio_against_the_reference_on_another_runtime():
    point = OperatingPoint("effort", {}, 0.9, 10, 0.5, 5, latency=[
        Latency("torch", 1, 2.0, 0.0, 2000.0, 0.6, 0.0, {"onnxruntime": 4.5})], label="knobs")
    header = format_table([Curve("e", [point])], layout="long").splitlines()[0]
    assert "ratio torch@1 vs onnxruntime" in header
    assert "4.500" in format_table([Curve("e", [point])], layout="long")


def test_a_profile_sums_the_spans_and_the_rest():
    from dynscale.eval.profiling import profile_point, profiles_markdown, span

    layer = torch.nn.Linear(32, 32)

    def forward(x):
        with span("toy.decide"):
            keep = x.abs() > 0.5
        with span("toy.kernel"):
            with span("toy.gather"):  # inside another span: counts towards the outer one only
                y = layer(x)
        return y.relu() * keep

    profile = profile_point(forward, [torch.randn(4, 32) for _ in range(5)], "toy")
    assert profile.batch == 4 and profile.ms_per_batch > 0
    assert set(profile.parts) == {"toy.decide", "toy.kernel", "operators outside spans", "Python between operators"}
    assert sum(profile.parts.values()) == pytest.approx(1.0)
    assert "aten::addmm" in [name for name, _, _ in profile.operators]
    text = profiles_markdown([profile])
    assert text.startswith("### toy, batch 4:") and "| `toy.kernel` |" in text
