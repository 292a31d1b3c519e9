"""`dynscale report`: every method trained (or reused), measured in one process, one report."""

import base64
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from dynscale.cli import main
from dynscale.errors import DynscaleError
from dynscale.eval import Curve, OperatingPoint, read_curves
from dynscale.eval.points import Latency
from dynscale.report import (
    Row,
    budget_table,
    check_plan,
    cost,
    load_report_plan,
    machine,
    pareto,
    write_report,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from browser_check import browser_missing, check_page  # noqa: E402

TINY = {"backbone": ["--model", "resnet", "--set", "blocks_per_stage=1", "--width-mult", "0.25"],
        "train": ["--train-limit", "400", "--holdout", "200", "--epochs", "1"],
        "exits": ["--epochs", "1", "--holdout", "200"],
        "gates": ["--train-limit", "400", "--gate-epochs", "1", "--joint-epochs", "1"],
        "test_limit": 120, "rounds": 1, "min_run_time": 0.01, "targets": [50]}


def tiny_plan(only: list[str] | None = None) -> dict:
    """The shipped plan, its quick mode cut to seconds on digits (and to some runs)."""
    plan = load_report_plan()
    plan["modes"]["quick"] = dict(TINY)
    if only:
        plan["runs"] = {k: v for k, v in plan["runs"].items() if k in only}
    return plan


def latency(runtime, batch, ratio, versus=None):
    return Latency(runtime, batch, 1.0, 0.0, 1.0, ratio, 0.0, versus or {})


def point(acc, macs, lats=(), method="m", label=""):
    return OperatingPoint(method, {}, acc, macs, macs / 100, 1, latency=list(lats), label=label)


def test_the_shipped_plan_is_valid_and_covers_every_method():
    plan = load_report_plan()
    labels = " ".join(spec.get("label", "") for spec in plan["runs"].values())
    for method in ("IDP linear", "us", "independent", "early exit", "cascade", "DyVEDeep", "DFS", "SkipNet",
                   "dense network"):
        assert method in labels
    assert any(spec.get("stacked") for spec in plan["runs"].values())
    assert any(spec.get("measure", {}).get("int8") for spec in plan["runs"].values())  # a width at int8
    assert set(plan["modes"]) == {"quick", "full"}


@pytest.mark.parametrize("change, match", [
    (lambda p: p.pop("runs"), "modes and runs"),
    (lambda p: p["modes"]["quick"].pop("backbone"), "backbone and train"),
    (lambda p: p["modes"]["quick"].update(rounds="three"), "'rounds'"),
    (lambda p: p["runs"]["us"].update(colour="red"), "'colour'"),
    (lambda p: p["runs"]["us"].update(command=[]), "needs a command"),
    (lambda p: p["runs"]["us"].update(baseline=True), "exactly one run"),
    (lambda p: p["runs"]["mlp"].update(command=["train", "--from", "{cascade}"]), "listed after it"),
    (lambda p: p["runs"]["mlp"].update(command=["train", "--from", "{nope}"]), "{nope} is neither"),
    (lambda p: p["runs"]["mlp"].update(command=["train", "--seed", "{target}"]), "without per_target"),
    (lambda p: p.update(data="mnist"), "'data' is not a part"),
    (lambda p: p["modes"]["quick"].update(targets=["half"]), "targets must be a list"),
    (lambda p: p["modes"]["quick"].update(targets=[]), "no targets for the per_target runs"),
    (lambda p: p["runs"]["early-exit-us"].update(command=["x", "{dfs}"]), "reads a per_target run"),
    (lambda p: p["runs"]["us"].update(measure={"width": [0.5]}), "measure.width"),
    (lambda p: p["runs"]["us"].update(keep=[1]), "keep is a list"),
    (lambda p: p.update(widths=[0.5, 2]), "widths must be"),
])
def test_a_bad_plan_is_refused_naming_the_field(change, match):
    plan = load_report_plan()
    change(plan)
    with pytest.raises(DynscaleError, match=match):
        check_plan(plan)


def test_costs_pareto_front_and_budget_winners():
    dense_macs = 100.0
    fast_ort = point(0.80, 30, [latency("onnxruntime", 1, 0.4), latency("torch", 1, 0.9, {"onnxruntime": 5.0})])
    eager_only = point(0.85, 20, [latency("torch", 1, 0.5, {"onnxruntime": 0.45})])
    assert cost(fast_ort, "macs", dense_macs) == (0.3, "")
    assert cost(fast_ort, "ort@1", dense_macs) == (0.4, "onnxruntime")
    assert cost(eager_only, "ort@1", dense_macs) == (0.45, "torch")  # vs the dense network in ONNX Runtime
    assert cost(eager_only, "torch@1", dense_macs) == (0.5, "torch")
    assert cost(eager_only, "ort@64", dense_macs) == (None, "")
    assert pareto([(0.5, 80), (0.3, 70), (0.4, 60), (1.0, 90), (0.9, 85)]) == [(0.3, 70), (0.5, 80), (0.9, 85),
                                                                                 (1.0, 90)]
    reference = Row("dense", Curve("dense", [point(0.99, 100, [latency("onnxruntime", 1, 0.1)])]), reference=True)
    rows = [reference, Row("a", Curve("a", [fast_ort])), Row("b", Curve("b", [eager_only]))]
    budgets = budget_table(rows, dense_macs)  # the reference never competes, however it was timed
    assert budgets["macs"]["0.25"]["method"] == "b"  # 20% of the MACs
    assert budgets["ort@1"]["0.25"] is None  # nothing under a quarter of the dense ONNX Runtime time
    assert budgets["ort@1"]["0.5"]["method"] == "b" and budgets["ort@1"]["0.5"]["runtime"] == "torch"
    assert budgets["ort@64"]["0.75"] is None


def synthetic_rows():
    dense = point(0.9, 100, [latency("torch", b, 1.0, {"onnxruntime": 3.0}) for b in (1, 64)]
                  + [latency("onnxruntime", b, 1.0, {"torch": 0.3}) for b in (1, 64)], "dense", "dense")
    width = [point(0.8 + 0.02 * i, 25 * i, [latency("onnxruntime", b, 0.3 * i, {"torch": 0.1}) for b in (1, 64)],
                   "us", f"{0.25 * i:g}") for i in range(1, 5)]
    counted = [point(0.85, 50, [], "dfs", "simulated")]
    counted[0].executed = False
    return [Row("dense network", Curve("dense network", [dense])), Row("us", Curve("us", width)),
            Row("us at int8", Curve("us at int8", width[:2]), stacked=True), Row("DFS", Curve("DFS", counted))]


def report_meta(tmp_path):
    return {"title": "test report", "command": "dynscale report --data digits", "mode": "quick", "data": "digits",
            "date": "today", "machine": machine(), "backbone": ["--model", "resnet"], "test_examples": 10,
            "timing": {"batch_sizes": [1, 64], "threads": 1, "rounds": 1, "examples": 64},
            "runs": [{"name": "us", "command": "dynscale train --recipe us", "seconds": 1.0, "reused": False}],
            "seconds": {"runs": 1.0, "total": 2.0}}


def test_the_report_is_one_self_contained_page_with_markdown_and_json(tmp_path):
    rows = synthetic_rows()
    out = tmp_path / "report"
    budgets = budget_table(rows, 100.0)
    write_report(out, rows, 100.0, report_meta(tmp_path), budgets, force=False)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 5  # MACs, ONNX Runtime and PyTorch at batch 1 and 64
    page = (out / "report.html").read_text()
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == len(pngs) and all(base64.b64decode(e)[:4] == b"\x89PNG" for e in embedded)
    assert "src=\"http" not in page and "<table" in page and "Best accuracy under a budget" in page
    assert "counted (simulated)" in page and "(stacked)" in page and "torch 2.13" in page
    md = (out / "report.md").read_text()
    assert all(f"]({name})" in md for name in pngs) and "dynscale train --recipe us" in md
    doc = json.loads((out / "report.json").read_text())
    assert doc["budgets"] == json.loads(json.dumps(budgets)) and doc["machine"]["versions"]["torch"]
    assert [c.label for c in read_curves(out / "report.json")] == [r.label for r in rows]  # pick --sweep reads it
    with pytest.raises(DynscaleError, match="written by another command"):  # two writers: the first one wins
        write_report(out, rows, 100.0, report_meta(tmp_path), budgets, force=False)


@pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")
def test_the_report_renders_in_headless_chromium(tmp_path):
    rows = synthetic_rows()
    out = tmp_path / "report"
    write_report(out, rows, 100.0, report_meta(tmp_path), budget_table(rows, 100.0), force=False)
    found = check_page(out / "report.html", tmp_path / "screenshot.png")
    assert found["images"] == 5 and found["loaded"] == 5
    assert found["tables"] == 3 and found["rows"] >= 8 and found["title"] == "test report"
    assert (tmp_path / "screenshot.png").read_bytes()[:4] == b"\x89PNG"


def run_cli(args, capsys):
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_report_trains_measures_reuses_and_refuses_to_overwrite(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = tiny_plan(["dense", "us", "early-exit"])
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    args = ["report", "--data", "digits", "--quick", "--plan", "plan.yaml", "--out", "rep", "--cache", "cache",
            "--quiet"]
    code, out, err = run_cli(args, capsys)
    assert code in (0, None), err
    assert out.count("[report]") == 3 and "wrote rep/report.html" in out
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    labels = [r["label"] for r in doc["rows"]]
    assert labels[0] == "dense network" and "us" in labels and "us at int8" in labels
    assert "early exit (learned policy)" in labels
    for curve in doc["curves"]:
        for p in curve["points"]:
            assert p["latency"] and p["saving"] == "measured"  # every row timed in the same run
    assert {lat["runtime"] for c in doc["curves"] for p in c["points"] for lat in p["latency"]} == {"torch",
                                                                                                   "onnxruntime"}
    assert [r["reused"] for r in doc["runs"]] == [False, False, False]
    assert all(r["command"].startswith("dynscale ") for r in doc["runs"])

    code, _, err = run_cli(args, capsys)  # the report exists: refused before any work
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli([*args, "--force"], capsys)  # replaced; every run reused from the cache
    assert code in (0, None), err
    assert "[report]" not in out
    assert [r["reused"] for r in json.loads((tmp_path / "rep" / "report.json").read_text())["runs"]] == [True] * 3

    code, out, err = run_cli([*args[:-1], "--threads", "2", "--force"], capsys)  # threads: the same runs
    assert code in (0, None) and "[report]" not in out, err

    plan["modes"]["quick"]["train"] = ["--train-limit", "300", "--holdout", "200", "--epochs", "1"]
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    code, _, err = run_cli([*args[:-5], "--out", "rep2", "--cache", "cache", "--quiet"], capsys)  # dense changed
    assert code == 2 and "made by another command" in err and "--force" in err
    assert not (tmp_path / "rep2").exists()
    code, out, err = run_cli([*args[:-5], "--out", "rep2", "--cache", "cache", "--quiet", "--force"], capsys)
    assert code in (0, None), err
    assert "[report] dense" in out and "[report] early-exit" in out  # what reads a remade run is remade too

    (tmp_path / "cache" / "early-exit.command.json").write_text("{not json")  # a damaged record: not trusted
    code, _, err = run_cli([*args[:-5], "--out", "rep3", "--cache", "cache", "--quiet"], capsys)
    assert code == 2 and "early-exit was made by another command" in err


@pytest.mark.slow
def test_report_runs_every_method_of_the_shipped_plan(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(tiny_plan(), sort_keys=False))
    code, out, err = run_cli(["report", "--data", "digits", "--quick", "--plan", "plan.yaml", "--out", "rep",
                              "--cache", "cache", "--quiet", "--jobs", "2"], capsys)
    assert code in (0, None), err
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    labels = " | ".join(r["label"] for r in doc["rows"])
    for method in ("dense network", "static int8", "IDP linear", "us", "us at int8", "independent networks",
                   "early exit", "cascade", "DyVEDeep", "DFS", "SkipNet", "early exits on the us network"):
        assert method in labels, labels
    assert {b for axis in doc["budgets"].values() for b in axis} == {"0.25", "0.5", "0.75"}


def test_a_failing_run_stops_the_report_in_one_line_naming_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = tiny_plan(["dense", "us"])
    plan["runs"]["us"]["command"] = ["train", "--model", "nope"]
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    (tmp_path / "cache").mkdir()
    code, _, err = run_cli(["report", "--data", "digits", "--quick", "--plan", "plan.yaml", "--out", "rep",
                            "--cache", "cache", "--quiet", "--jobs", "2"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "report run us failed" in err and "--model" in err
    assert not (tmp_path / "rep").exists() and (tmp_path / "cache" / "us.log").is_file()


def test_a_stopped_report_resumes_its_trainings(tmp_path, monkeypatch):
    """SIGTERM stops the report and its running training, which saves its state; the next report
    with the same commands resumes that training instead of refusing or starting over."""
    import signal
    import subprocess
    import time

    monkeypatch.chdir(tmp_path)
    plan = tiny_plan(["dense"])
    plan["modes"]["quick"]["train"] = ["--train-limit", "1000", "--holdout", "200", "--epochs", "30",
                                       "--checkpoint-every", "5"]
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    args = [sys.executable, "-m", "dynscale", "report", "--data", "digits", "--quick", "--plan", "plan.yaml",
            "--out", "rep", "--cache", "cache", "--quiet"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = tmp_path / "cache" / "dense.resume" / "state.json"
    deadline = time.time() + 120
    while not state.is_file() and time.time() < deadline:
        time.sleep(0.2)
    assert state.is_file(), process.communicate()[1]
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert not (tmp_path / "cache" / "dense").exists() and state.is_file()  # stopped, its state kept
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "[report] dense (resuming)" in result.stdout
    assert (tmp_path / "cache" / "dense").is_dir() and not state.parent.exists()


def test_a_runs_curves_are_kept_by_name_or_method_and_told_apart_by_their_names():
    from dynscale.report import _kept, _suffix

    executed = Curve("dfs-25", [point(0.9, 50, method="dfs")], curve="dfs (executed, torch)")
    mixed = Curve("effort", [point(0.9, 100, method="dense"), point(0.8, 60, method="dyvedeep")], curve="x")
    policy = Curve("ee", [point(0.9, 80, method="early-exit")], curve="learned policy")
    assert _kept([executed, mixed, policy], ["learned policy"]) == [policy]
    kept = _kept([executed, mixed, policy], ["dyvedeep", "dfs"])
    assert [c.label for c in kept] == ["dfs-25", "effort"] and [p.method for p in kept[1].points] == ["dyvedeep"]
    assert _kept([policy], None) == [policy]
    assert _suffix(executed) == "(executed, torch)" and _suffix(policy) == "learned policy"
    assert _suffix(Curve("us", [point(0.9, 10)])) == ""
