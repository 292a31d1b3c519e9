import json

import pytest

from dynscale.controller import Controller
from dynscale.errors import DynscaleError
from dynscale.sweep import SweepPoint, SweepResult, to_json

POINTS = [
    SweepPoint(0.25, 0.70, 100, 0.06, {"1": 1.0, "64": 10.0}),
    SweepPoint(0.5, 0.85, 400, 0.25, {"1": 2.0, "64": 30.0}),
    SweepPoint(0.75, 0.85, 900, 0.56, {"1": 3.0, "64": 70.0}),  # no better than 0.5: never picked
    SweepPoint(1.0, 0.89, 1600, 1.0, {"1": 4.0, "64": 120.0}),
]


def test_picks_the_most_accurate_width_within_a_mac_budget():
    c = Controller(POINTS)
    assert c.pick(macs_ratio=0.3).width == 0.5
    assert c.pick(macs_ratio=0.06).width == 0.25
    assert c.pick(macs_ratio=0.9).width == 0.5  # 0.75 ties 0.5 on accuracy and costs more
    choice = c.pick(macs_ratio=1.0)
    assert (choice.width, choice.accuracy, choice.latency_ms) == (1.0, 0.89, 4.0)


def test_picks_within_a_latency_budget_at_a_batch_size():
    c = Controller(POINTS)
    assert c.pick(latency_ms=2.5).width == 0.5
    choice = c.pick(latency_ms=100, batch=64)
    assert (choice.width, choice.latency_ms) == (0.5, 30.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"macs_ratio": 0.01}, r"no width fits a budget of 0.01 of the full-width MACs; the smallest cost "
                           r"available is 0.06 of the full-width MACs \(width 0.25\)"),
    ({"latency_ms": 0.5}, r"smallest cost available is 1 ms at batch 1 \(width 0.25\)"),
    ({"latency_ms": 5, "batch": 8}, "no latency at batch 8"),
    ({}, "exactly one budget"),
    ({"macs_ratio": 0.5, "latency_ms": 1}, "exactly one budget"),
    ({"macs_ratio": -1}, "must be > 0"),
])
def test_impossible_or_bad_budgets(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Controller(POINTS).pick(**kwargs)


def test_from_sweep_json(tmp_path):
    results = [SweepResult("runs/a", "mlp", "linear", "digits", POINTS),
               SweepResult("runs/b", "mlp", "all-one", "digits", POINTS[:2])]
    path = tmp_path / "s.json"
    path.write_text(json.dumps(to_json(results)))
    assert Controller.from_sweep(path, run="b").pick(macs_ratio=1.0).width == 0.5
    assert Controller.from_sweep(path, run="runs/a").pick(macs_ratio=1.0).width == 1.0
    with pytest.raises(DynscaleError, match="several runs"):
        Controller.from_sweep(path)
    with pytest.raises(DynscaleError, match="no run 'c'"):
        Controller.from_sweep(path, run="c")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DynscaleError, match="not a sweep JSON"):
        Controller.from_sweep(tmp_path / "bad.json")


def test_from_sweep_uses_the_envelope_of_multiple_profiles(tmp_path):
    low = SweepResult("runs/m", "mlp", "linear", "d", POINTS[:1], curve="profile 1 (0-0.3)")
    env = SweepResult("runs/m", "mlp", "linear", "d", POINTS, curve="envelope")
    path = tmp_path / "s.json"
    path.write_text(json.dumps(to_json([low, env])))
    assert Controller.from_sweep(path).pick(macs_ratio=1.0).width == 1.0


def test_from_a_run_directory_measures_a_sweep(mlp_run):
    c = Controller.from_sweep(mlp_run, widths=[0.5, 1.0], batch_sizes=[1])
    choice = c.pick(latency_ms=1e6)
    assert choice.width in (0.5, 1.0) and choice.latency_ms > 0
