import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dynscale.cli import main
from dynscale.eval import read_curves
from dynscale.runs import RunConfig

EXE = shutil.which("dynscale") or str(Path(sys.executable).parent / "dynscale")


def run_cli(*args, env=None):
    """Runs the installed ``dynscale`` executable, as a user would."""
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_train_sweep_info(tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["train", "--model", "mlp", "--data", "synthetic", "--profile", "linear",
                 "--epochs", "2", "--seed", "0", "--set", "hidden=[16,16]", "--out", str(out)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["sweep", str(out), str(out), "--widths", "0.5,1.0", "--json", str(tmp_path / "s.json"),
                 "--plot", str(tmp_path / "s.png"), "--latency", "--batch", "1,4", "--rounds", "1",
                 "--min-run-time", "0.01", "--csv", str(tmp_path / "s.csv"),
                 "--markdown", str(tmp_path / "s.md"), "--title", "mine"]) == 0
    printed = capsys.readouterr().out
    assert "ms torch@4" in printed and "acc %" in printed
    doc = json.loads((tmp_path / "s.json").read_text())
    assert [p["knobs"]["width"] for p in doc["curves"][0]["points"]] == [0.5, 1.0]
    assert doc["curves"][1]["points"][0]["latency"][1]["batch"] == 4
    assert doc["curves"][1]["points"][0]["latency"][1]["ms"] > 0
    assert doc["timing"]["rounds"] == 1 and doc["timing"]["threads"] == 1
    assert (tmp_path / "s.png").stat().st_size > 1000
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 1 + 4
    markdown = (tmp_path / "s.md").read_text().splitlines()
    assert markdown[0].startswith("| width | MAC ratio | a (mlp, linear) acc %") and len(markdown) == 4
    assert "latency ratio torch@4" in markdown[0] and markdown[2].startswith("| 1 | 1.000 |")
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "mlp" in info and "linear" in info and "test_accuracy" in info and '"name": "idp"' in info


def test_train_with_adam_step_schedule_and_numeric_profile(tmp_path):
    out = tmp_path / "b"
    assert main(["train", "--data", "synthetic", "--profile", "1,0.5,0.25", "--optimizer", "adam",
                 "--schedule", "step", "--epochs", "1", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["config"]["profile"] == [1.0, 0.5, 0.25] and cfg["training"]["optimizer"] == "adam"


def test_list(capsys):
    assert main(["list"]) == 0
    assert "mlp" in capsys.readouterr().out


def test_bad_train_leaves_an_existing_run_intact(mlp_run, tmp_path):
    run = tmp_path / "keep"
    shutil.copytree(mlp_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    proc = run_cli("train", "--data", "nowhere", "--out", run)
    assert proc.returncode == 2
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "dynscale", "list"], capture_output=True, text=True)
    assert proc.returncode == 0 and "profiles" in proc.stdout


def test_sweep_on_data_of_another_shape_is_refused(mlp_run, tmp_path):
    from test_data import make_idx_dir

    make_idx_dir(tmp_path / "small", gz=True)  # 4x4 images, 3 classes
    proc = run_cli("sweep", mlp_run, "--data", f"idx:{tmp_path / 'small'}")
    assert_one_line_error(proc, "--data", "input_size=8 but dataset idx:", "has 4")


@pytest.mark.slow
def test_conv_training_calibrate_export_bench(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    run = tmp_path / "vgg"
    assert main(["train", "--model", "vgg16", "--data", "synthetic", "--width-mult", "0.0625", "--cut", "random",
                 "--profile-gradient", "straight-through", "--epochs", "1", "--train-limit", "200",
                 "--calibrate", "0.5,1.0", "--out", str(run)]) == 0
    cfg = RunConfig.read(run)
    assert cfg.calibrated_widths == [0.5, 1.0] and cfg.recipe["cut"] == "random"
    assert cfg.model.config["width_mult"] == 0.0625
    assert main(["calibrate", str(run), "--widths", "0.25", "--batches", "1"]) == 0
    assert "0.25, 0.5, 1" in capsys.readouterr().out
    assert main(["export", str(run), "--width", "0.5", "--out", str(tmp_path / "v.onnx")]) == 0
    assert main(["export", str(run), "--width", "0.5", "--out", str(tmp_path / "v.onnx"), "--force"]) == 0
    ort.InferenceSession(str(tmp_path / "v.onnx"))
    assert main(["export", str(run), "--width", "0.25", "--format", "safetensors"]) == 0
    assert (tmp_path / "vgg-w0.25" / "model.safetensors").is_file()
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "model.safetensors"]
    assert main(["bench", str(run), "--widths", "0.5", "--batch", "2", "--rounds", "1", "--min-run-time", "0.01",
                 "--runtime", "torch,onnxruntime", "--json", str(tmp_path / "b.json")]) == 0
    assert "ratio/MAC onnxruntime@2" in capsys.readouterr().out
    (curve,) = read_curves(tmp_path / "b.json")
    assert [p.knobs["width"] for p in curve.points] == [1.0, 0.5] and curve.label.startswith("vgg")


def test_train_two_profiles_and_sweep(tmp_path, capsys):
    run = tmp_path / "mp"
    assert main(["train", "--data", "synthetic", "--profiles", "0-0.3,0.3-1.0", "--epochs", "1",
                 "--set", "hidden=[12,12]", "--out", str(run)]) == 0
    assert main(["sweep", str(run), "--widths", "0.2,1.0", "--plot", str(tmp_path / "p.png")]) == 0
    printed = capsys.readouterr().out
    assert "[profile 1 (0-0.3)]" in printed and "[envelope]" in printed


@pytest.mark.slow
def test_recipes_pick_and_compare(tmp_path, capsys):
    us = tmp_path / "us"
    assert main(["train", "--data", "synthetic", "--recipe", "us", "--sandwich", "3", "--min-width", "0.3",
                 "--no-distill", "--epochs", "1", "--out", str(us)]) == 0
    recipe = RunConfig.read(us).recipe
    assert recipe == {"name": "us", "sandwich": 3, "min_width": 0.3, "distill": False, "profile_gradient": "chain",
                      "distill_weight": 0.5, "temperature": 1.0, "sampling": "macs", "label_smoothing": 0.0,
                      "resolutions": [], "batchnorm": "shared"}
    family = tmp_path / "family"
    assert main(["train", "--data", "synthetic", "--recipe", "independent", "--family-widths", "0.5,1",
                 "--epochs", "1", "--out", str(family)]) == 0
    assert RunConfig.read(family).model.shared is False
    assert main(["sweep", str(us), "--widths", "0.5,1.0", "--latency", "--batch", "1", "--rounds", "1",
                 "--min-run-time", "0.01", "--json", str(tmp_path / "s.json")]) == 0
    capsys.readouterr()
    assert main(["pick", "us", "--sweep", str(tmp_path / "s.json"), "--macs-ratio", "1.0"]) == 0
    assert "expected accuracy" in capsys.readouterr().out
    assert main(["pick", str(us), "--latency-ms", "1000", "--widths", "0.5,1.0", "--rounds", "1",
                 "--min-run-time", "0.01"]) == 0
    assert "ms at batch 1 on torch" in capsys.readouterr().out
    out = tmp_path / "cmp"
    assert main(["compare", "--data", "synthetic", "--epochs", "1", "--widths", "0.5,1", "--out", str(out)]) == 0
    assert "us-linear" in capsys.readouterr().out and (out / "compare.json").is_file()


def test_train_from_a_width_run_starts_from_its_weights(mlp_run, tmp_path, capsys):
    from dynscale.runs import load_run

    out = tmp_path / "us"
    assert main(["train", "--from", str(mlp_run), "--recipe", "us", "--data", "synthetic", "--epochs", "1",
                 "--lr", "1e-9", "--out", str(out)]) == 0
    capsys.readouterr()
    run, source = load_run(out), load_run(mlp_run)
    assert run.config.provenance["start_run"] == str(mlp_run) and run.config.recipe["name"] == "us"
    assert run.config.model.config == source.config.model.config
    # A step of 1e-9 leaves the weights where the start run had them: training started from them.
    for (name, a), (_, b) in zip(run.model.state_dict().items(), source.model.state_dict().items(), strict=True):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    for extra, fragment in ((["--model", "vgg16"], "--model"), (["--recipe", "independent"], "several networks"),
                            (["--profile", "all-one"], "--profile")):
        assert main(["train", "--from", str(mlp_run), "--data", "synthetic", "--out", str(tmp_path / "x"), *extra]) == 2
        assert fragment in capsys.readouterr().err


def test_an_option_of_another_recipe_is_refused(capsys, tmp_path):
    for args, flag in ((["--sandwich", "3"], "--sandwich"), (["--recipe", "us", "--cut", "random"], "--cut"),
                       (["--family-widths", "0.5,1"], "--family-widths")):
        assert main(["train", "--data", "synthetic", "--out", str(tmp_path / "x"), *args]) == 2
        err = capsys.readouterr().err
        assert f"{flag} does nothing with --recipe" in err, err


def test_convert_calls_the_library_with_the_options(monkeypatch, tmp_path, capsys):
    import importlib

    module = importlib.import_module("dynscale.convert")  # the package's `convert` attribute is the function
    calls = []

    def convert_to_run(factory, input_shape, out, profile="linear", force=False):
        calls.append((factory, input_shape, out, profile, force))
        return out

    monkeypatch.setattr(module, "convert_to_run", convert_to_run, raising=False)
    assert main(["convert", "mine:make", "--input-shape", "3,32,32", "--out", str(tmp_path / "c"), "--profile",
                 "all-one", "--force"]) == 0
    assert calls == [("mine:make", (3, 32, 32), tmp_path / "c", "all-one", True)]
    assert "dynscale train --from" in capsys.readouterr().out
    assert main(["convert", "mine:make", "--input-shape", "3,32", "--out", str(tmp_path / "c")]) == 2
    assert "--input-shape" in capsys.readouterr().err
    from dynscale.cli import build_parser

    text = " ".join(build_parser()._subparsers._group_actions[0].choices["convert"].format_help().split())
    assert "imports the module and calls the function" in text
