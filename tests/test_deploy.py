"""``dynscale deploy`` and ``dynscale.runtime``: every method's bundle runs without PyTorch and
computes what the PyTorch model computes (float32 equal, int8 within the stated tolerance)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dynscale.cli import main
from dynscale.deploy import FLOAT_TOLERANCE, INT8_AGREEMENT, deploy_run
from dynscale.export import dense
from dynscale.runs import load_run
from dynscale.runtime import Bundle, BundleError

ROOT = Path(__file__).resolve().parents[1]
FAST = {"rounds": 1, "min_time": 0.002}  # timing in tests: one short round
BLOCKED = ("torch", "sklearn", "scipy", "safetensors", "tqdm", "matplotlib", "pandas")


def without_torch(code: str, *args: str) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter in which importing torch (and the training stack)
    fails, with dynscale importable."""
    block = f"import sys\nfor _m in {BLOCKED!r}:\n    sys.modules[_m] = None\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", block + code, *args], capture_output=True, text=True, env=env,
                          timeout=120)


RUN_POINTS = """
import json, sys
import numpy as np
from dynscale.runtime import Bundle
bundle = Bundle.load(sys.argv[1])
x = np.load(sys.argv[2])
out = {}
for p in bundle.points:
    r = bundle.run(x, p.name)
    out[p.name] = {"logits": r.logits.tolist(), "route": None if r.route is None else r.route.tolist()}
assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
print(json.dumps(out))
"""


def bundle_outputs(bundle: Path, x: torch.Tensor, tmp_path: Path) -> dict:
    """Every point's logits and routes on ``x``, computed by the runtime where torch cannot load."""
    np.save(tmp_path / "x.npy", x.numpy())
    done = without_torch(RUN_POINTS, str(bundle), str(tmp_path / "x.npy"))
    assert done.returncode == 0, done.stderr
    return {k: {"logits": np.array(v["logits"], dtype=np.float32), "route": v["route"]}
            for k, v in json.loads(done.stdout).items()}


@pytest.fixture(scope="module")
def width_bundle(mlp_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "mlp"
    deploy_run(mlp_run, out, int8=True, widths=[0.5, 1.0], calibration=2, progress=False, **FAST)
    return out


def test_a_width_bundle_runs_without_torch_and_equals_the_pytorch_model(width_bundle, mlp_run, synthetic, tmp_path):
    x = synthetic.test_x[:64]
    got = bundle_outputs(width_bundle, x, tmp_path)
    assert list(got) == ["w0.5", "w1", "w0.5-int8", "w1-int8"]
    model = load_run(mlp_run).model
    with torch.no_grad():
        for w in (0.5, 1.0):
            want = dense(model, w)(x).numpy()
            scale = max(1.0, float(np.abs(want).max()))
            assert np.abs(got[f"w{w:g}"]["logits"] - want).max() <= FLOAT_TOLERANCE * scale
            agree = (got[f"w{w:g}-int8"]["logits"].argmax(1) == want.argmax(1)).mean()
            assert agree >= INT8_AGREEMENT


def test_the_manifest_records_what_each_point_costs_and_where_it_was_measured(width_bundle, mlp_run):
    doc = json.loads((width_bundle / "manifest.json").read_text())
    assert doc["format"] == "dynscale-bundle" and doc["schema_version"] == 1
    assert doc["input"]["shape"] == [1, 8, 8] and doc["classes"] == [str(k) for k in range(10)]
    assert doc["machine"]["cpu"] and doc["machine"]["onnxruntime"]
    config = load_run(mlp_run).config
    points = {p["name"]: p for p in doc["points"]}
    assert points["w1"]["macs_ratio"] == 1.0 and points["w0.5"]["macs_ratio"] < 0.5
    assert points["w1"]["accuracy"] == pytest.approx(config.metrics["test_accuracy"], abs=1e-6)
    assert points["w1-int8"]["precision"] == "int8" and doc["graphs"]["w1-int8"]["precision"] == "int8"
    assert all(set(p["latency_ms"]) == {"1", "64"} for p in doc["points"])
    assert sorted(p.name for p in (width_bundle / "graphs").iterdir()) == sorted(
        f"{g}.onnx" for g in doc["graphs"])


def test_pick_takes_one_budget_and_names_the_nearest_point_when_none_fits(width_bundle):
    bundle = Bundle.load(width_bundle)
    assert bundle.pick(macs_ratio=0.5).name in ("w0.5", "w0.5-int8")
    assert bundle.point.macs_ratio <= 0.5
    fastest = min(bundle.points, key=lambda p: p.latency_ms[64])
    assert bundle.pick(latency_ms=fastest.latency_ms[64], batch=64).latency_ms[64] <= fastest.latency_ms[64]
    best = max(p.accuracy for p in bundle.points)
    assert bundle.pick(accuracy=best).accuracy == best
    with pytest.raises(BundleError, match="exactly one budget"):
        bundle.pick(macs_ratio=0.5, accuracy=0.5)
    with pytest.raises(BundleError, match="no operating point fits macs_ratio 0.01; the cheapest"):
        bundle.pick(macs_ratio=0.01)
    with pytest.raises(BundleError, match="no latency at batch 7"):
        bundle.pick(latency_ms=5, batch=7)
    with pytest.raises(BundleError, match="input has shape"):
        bundle.run(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(BundleError, match="NaN"):
        bundle.run(np.full((2, 1, 8, 8), np.nan, np.float32))
    assert bundle.run(np.zeros((1, 8, 8), np.float32)).logits.shape == (1, 10)  # one example


def test_latencies_are_measured_again_on_the_machine_that_runs_the_bundle(width_bundle):
    bundle = Bundle.load(width_bundle)
    measured = bundle.calibrate_latency(batches=(1, 8), rounds=1, min_time=0.001)
    assert set(measured) == {p.name for p in bundle.points}
    assert all(set(p.latency_ms) == {1, 8} and all(v > 0 for v in p.latency_ms.values()) for p in bundle.points)
    assert bundle.pick(latency_ms=1e6, batch=8) is not None


def test_the_runtime_command_prints_predictions_and_the_point_it_chose_without_torch(width_bundle, tmp_path):
    x = np.load(width_bundle / "sample.npy")[:3]
    np.save(tmp_path / "x.npy", x)
    done = without_torch("import runpy\nrunpy.run_module('dynscale.runtime', run_name='__main__')", str(width_bundle),
                         "--input", str(tmp_path / "x.npy"), "--macs-ratio", "0.5", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["point"].startswith("w0.5") and len(doc["predictions"]) == 3
    done = without_torch("import runpy\nrunpy.run_module('dynscale.runtime', run_name='__main__')", str(width_bundle),
                         "--input", str(tmp_path / "missing.npy"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--input" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_damaged_bundle_is_refused_with_the_fix(width_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(width_bundle, copy)
    graph = copy / "graphs" / "w1.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\0")
    with pytest.raises(BundleError, match="checksum does not match"):
        Bundle.load(copy)
    shutil.rmtree(copy)
    shutil.copytree(width_bundle, copy)
    doc = json.loads((copy / "manifest.json").read_text())
    doc["schema_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="newer than this runtime"):
        Bundle.load(copy)
    doc["schema_version"] = 1
    doc["points"][0]["accuracy"] = "high"
    (copy / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"points\[0\].accuracy is str"):
        Bundle.load(copy)
    doc["points"][0]["accuracy"] = 0.5
    doc["points"][0]["plan"]["graph"] = "elsewhere"
    (copy / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="names the graph 'elsewhere'"):
        Bundle.load(copy)
    with pytest.raises(BundleError, match="not a bundle"):
        Bundle.load(tmp_path)


def test_deploy_checks_its_output_before_any_work_and_writes_whole_or_nothing(mlp_run, tmp_path, capsys,
                                                                             monkeypatch):
    assert main(["deploy", str(mlp_run), "--out", str(Path(mlp_run) / "bundle")]) == 2
    assert "lies inside the input" in capsys.readouterr().err
    assert main(["deploy", str(mlp_run), "--out", str(mlp_run), "--force"]) == 2
    capsys.readouterr()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    assert main(["deploy", str(mlp_run), "--out", str(existing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a dynscale bundle" in err
    assert main(["deploy", str(mlp_run), "--out", str(tmp_path / "b"), "--lambdas", "0"]) == 2  # not an option

    def broken(*args, **kwargs):
        raise RuntimeError("the machine fell over while timing")

    monkeypatch.setattr("dynscale.deploy.measure_latency", broken)
    with pytest.raises(RuntimeError):
        deploy_run(mlp_run, tmp_path / "half", widths=[1.0], progress=False, **FAST)
    assert not (tmp_path / "half").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["existing"]  # no temporary directory left behind
    assert (existing / "keep.txt").read_text() == "mine"


# --- early exits and cascades ----------------------------------------------------------------

@pytest.fixture(scope="module")
def exit_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("exits")
    assert main(["adaptive", "train", "--model", "mlp", "--data", "synthetic", "--set", "hidden=[32,32]",
                 "--exits", "layer1", "--epochs", "3", "--quiet", "--out", str(root / "ee")]) == 0
    deploy_run(root / "ee", root / "bundle", int8=True, calibration=2, progress=False, **FAST)
    return root / "ee", root / "bundle"


def test_examples_leave_an_early_exit_bundle_at_their_exit_as_in_pytorch(exit_bundle, synthetic, tmp_path):
    from dynscale.adaptive.deploy import deploy as adaptive_deploy

    run_dir, bundle = exit_bundle
    x = synthetic.test_x
    got = bundle_outputs(bundle, x, tmp_path)
    run = load_run(run_dir)
    run.dataset = synthetic
    points = {p.name: p for p in adaptive_deploy(run, calibration=[x[:8]]).points}
    graph = run.model.graph()
    assert {"full", "λ=0", "λ=0.05", "loss≤1"} <= set(got)
    left_early = 0
    full = points.pop("full").reference(x).numpy()  # the backbone alone, no exit heads
    assert np.abs(got["full"]["logits"] - full).max() <= FLOAT_TOLERANCE * max(1.0, np.abs(full).max())
    for name, point in points.items():
        predictions = point.reference(x).numpy()
        outcome = graph.run(x, _policies(point, graph), len(x))
        ran = np.array(got[name]["route"], dtype=bool)  # (N, nodes)
        exit_node = ran.shape[1] - 1 - ran[:, ::-1].argmax(1)
        assert (got[name]["logits"].argmax(1) == predictions).mean() >= 0.995
        assert (exit_node == outcome.exit_node.numpy()).mean() >= 0.995
        left_early += int((exit_node == 0).sum())
        int8 = got[f"{name}-int8"]["logits"].argmax(1)
        assert (int8 == predictions).mean() >= INT8_AGREEMENT - 0.05  # tiny net, 300 examples
    assert left_early > 0  # some points really stop examples at the first exit
    manifest = json.loads((bundle / "manifest.json").read_text())
    costs = {p["name"]: p["macs_ratio"] for p in manifest["points"]}
    assert min(costs.values()) < costs["full"]


def _policies(point, graph):
    """The PyTorch policies a deployed point was made from (read back from its plan)."""
    from dynscale.adaptive.policy import Decision, FixedPolicy, LearnedPolicy, ThresholdPolicy

    out = []
    for data in point.plan["policies"]:
        if data is None:
            out.append(None)
        elif data["kind"] == "threshold":
            out.append(ThresholdPolicy(data["threshold"]))
        elif data["kind"] == "fixed":
            out.append(FixedPolicy(data["option"]))
        else:
            decisions = []
            for d in data["decisions"]:
                if "constant" in d:
                    decisions.append(Decision(constant=d["constant"]))
                else:
                    decision = Decision(constant=None)
                    decision._linear = (torch.tensor(d["weight"]), d["bias"], True)
                    decisions.append(decision)
            out.append(LearnedPolicy(decisions))
    return out


@pytest.mark.slow
def test_a_cascade_bundle_selects_networks_as_in_pytorch(cascade_runs, tmp_path, synthetic):
    saved = tmp_path / "cascade"
    assert main(["adaptive", "cascade", *cascade_runs, "--lambdas", "0", "--max-loss", "1", "--edges", "0-1",
                 "--no-timing", "--quiet", "--save", str(saved)]) == 0
    deploy_run(saved, tmp_path / "bundle", progress=False, **FAST)
    got = bundle_outputs(tmp_path / "bundle", synthetic.test_x, tmp_path)
    run = load_run(saved)
    nets = run.model.networks
    with torch.no_grad():
        full = nets[1](synthetic.test_x).numpy()
    assert np.abs(got["full"]["logits"] - full).max() <= FLOAT_TOLERANCE * max(1.0, np.abs(full).max())
    assert all(r == [True, True] for r in got["full"]["route"])
    assert any(r == [True, False] for r in got["λ=0.1"]["route"])  # some examples stop at the small network


# --- fractional skipping and effort --------------------------------------------------------------

@pytest.mark.parametrize("gate", ["lstm", "upfront"])
def test_a_dfs_bundle_regroups_each_block_by_the_gates_choice_as_in_pytorch(gate, dfs_runs, synthetic, tmp_path):
    run = dfs_runs["lstm" if gate == "lstm" else "execute"]
    out = tmp_path / "bundle"
    deploy_run(run, out, int8=True, calibration=2, progress=False, **FAST)
    got = bundle_outputs(out, synthetic.test_x, tmp_path)
    assert set(got) == {"gated", "full precision", "full precision-int8"}
    net = load_run(run).model.eval()
    with torch.no_grad():
        want = net(synthetic.test_x)
    chosen = np.array(got["gated"]["route"])  # (N, gated blocks)
    assert chosen.shape == tuple(net.last_choices.shape)
    assert (chosen == net.last_choices.numpy()).mean() >= 0.97  # the gates see int8 blocks' outputs
    assert (got["gated"]["logits"].argmax(1) == want.argmax(1).numpy()).mean() >= INT8_AGREEMENT
    manifest = json.loads((out / "manifest.json").read_text())
    points = {p["name"]: p for p in manifest["points"]}
    assert points["gated"]["precision"] == "int8" and 0 < points["gated"]["bitops_ratio"] < 1
    assert points["full precision"]["bitops_ratio"] == 1.0
    assert points["full precision-int8"]["bitops_ratio"] == pytest.approx(1 / 16)
    assert manifest["plan"] == {"kind": "dfs", "gate": gate, "hidden": 16 if gate == "lstm" else 0,
                                "choices": [0, 8, 32]}


def test_a_dfs_run_of_simulated_bit_widths_is_refused(dfs_runs, tmp_path, capsys):
    assert main(["deploy", str(dfs_runs["paper"]), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "simulated" in err and "--execute" in err and err.count("\n") == 1
    assert not (tmp_path / "b").exists()


def test_an_effort_run_deploys_its_dense_settings_and_names_the_knobs_it_cannot(mlp_run, tmp_path, capsys,
                                                                               monkeypatch):
    monkeypatch.setenv("DYNSCALE_CACHE", str(tmp_path / "cache"))
    tuned = tmp_path / "effort"
    assert main(["effort", "tune", str(mlp_run), "--knobs", "spet", "--max-loss", "100", "--examples", "100",
                 "--objective", "macs", "--quiet", "--out", str(tuned)]) == 0
    doc = json.loads((tuned / "config.json").read_text())
    doc["section"]["tuned"][0]["settings"] = {"layer1": {"spet": {"fraction": 0.5, "threshold": 0.1}}}
    (tuned / "config.json").write_text(json.dumps(doc))
    assert main(["deploy", str(tuned), "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "spet on layer1" in err and "--objective time" in err and err.count("\n") == 1
    doc["section"]["tuned"].append({**doc["section"]["tuned"][0], "max_loss": 0.0, "settings": {}})
    (tuned / "config.json").write_text(json.dumps(doc))
    deploy_run(tuned, tmp_path / "dense", progress=False, **FAST)
    manifest = json.loads((tmp_path / "dense" / "manifest.json").read_text())
    assert [p["name"] for p in manifest["points"]] == ["dense"]
    assert manifest["notes"] == ["left out loss≤100 (batch 1): spet on layer1 (not expressible as an ONNX saving)"]


def test_latency_is_measured_over_many_real_inputs_not_one():
    from dynscale.runtime import measure_latency, sample_batches

    sample = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    batches = sample_batches(sample, (1, 4, 16))
    assert [len(batches[b]) for b in (1, 4, 16)] == [10, 2, 1]
    assert batches[16][0].shape == (16, 1, 1, 1)  # repeated to fill a batch larger than the sample
    seen = []
    measure_latency({"p": lambda x: seen.append(float(x[0, 0, 0, 0]))}, {1: batches[1]}, rounds=1, min_time=1e-6)
    assert sorted(set(seen)) == list(range(10))  # every example's route is timed
    with pytest.raises(BundleError, match="rounds >= 1"):
        measure_latency({"p": print}, {1: batches[1]}, rounds=0)


def test_a_policy_or_gate_plan_the_runtime_cannot_run_is_refused_at_load(exit_bundle, tmp_path):
    _, bundle = exit_bundle
    doc = json.loads((bundle / "manifest.json").read_text())
    cases = {
        "finite numbers only": lambda d: _policy(d, "loss≤1").update(threshold=float("nan")),
        "not one of threshold": lambda d: _policy(d, "loss≤1").update(kind="magic"),
        "finite numbers \\(softmax": lambda d: _policy(d, "λ=0.05")["decisions"][0].update(weight=[1.0]),
        "must list nodes after": lambda d: _point(d, "λ=0.05")["plan"]["successors"].__setitem__(0, [0]),
    }
    for i, (message, damage) in enumerate(cases.items()):
        copy = tmp_path / f"case{i}"
        shutil.copytree(bundle, copy)
        broken = json.loads(json.dumps(doc))
        damage(broken)
        (copy / "manifest.json").write_text(json.dumps(broken))
        with pytest.raises(BundleError, match=message):
            Bundle.load(copy)


def _point(doc, name):
    return next(p for p in doc["points"] if p["name"] == name)


def _policy(doc, name):
    policy = _point(doc, name)["plan"]["policies"][0]
    if policy.get("kind") == "learned" and "constant" in policy["decisions"][0]:
        policy["decisions"][0] = {"weight": [0.0] * 13, "bias": 0.0}
    return policy
