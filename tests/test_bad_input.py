"""Every bad invocation: one line on stderr naming the option to fix, exit 2, nothing changed
on disk (the runs it read are byte-identical, and nothing new was written)."""

import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from dynscale.adaptive import train_early_exit_run
from dynscale.cli import main
from dynscale.data import make_synthetic
from dynscale.eval import Curve, OperatingPoint, write_report
from dynscale.idp import IDP, train_run
from dynscale.train import TrainConfig

from test_data import make_idx_dir


def write_idx(directory: Path, train_images: np.ndarray, train_labels: np.ndarray) -> None:
    """Four MNIST-format files; the test split repeats the training one."""
    directory.mkdir(parents=True)

    def write(name: str, array: np.ndarray) -> None:
        header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        (directory / name).write_bytes(header + array.astype(np.uint8).tobytes())

    for prefix in ("train", "t10k"):
        write(f"{prefix}-images-idx3-ubyte", train_images)
        write(f"{prefix}-labels-idx1-ubyte", train_labels)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Runs, reports and data files the bad invocations point at."""
    root = tmp_path_factory.mktemp("world")
    data = make_synthetic(num_train=200, num_test=60)
    quick = TrainConfig(epochs=1, batch_size=64)
    train_run(root / "mlp", "mlp", data, quick, model_options={"hidden": [8]}, progress=False)
    train_run(root / "vgg", "vgg16", data, quick, IDP(cut="random"), {"width_mult": 0.0625}, calibrate=[0.5, 1.0],
              progress=False)
    train_early_exit_run(root / "ee", "mlp", data, TrainConfig(epochs=1, holdout=40), ["layer1"],
                         model_options={"hidden": [8, 8]}, progress=False)
    train_run(root / "resnet", "resnet", data, quick,
              model_options={"width_mult": 0.25, "blocks_per_stage": 1, "profile": "all-one"}, progress=False)
    for name, hidden, holdout in (("c0", [4], 40), ("c1", [32, 32], 40), ("c2", [64], 20)):
        train_run(root / name, "mlp", data, TrainConfig(epochs=1, holdout=holdout), model_options={"hidden": hidden},
                  progress=False)
    report = root / "report.json"
    write_report([Curve("mlp", [OperatingPoint("idp", {"width": 1.0}, 0.9, 10.0, 1.0, 5)], "mlp")], json=report)
    (root / "notreport.json").write_text('{"runs": []}')
    (root / "file.txt").write_text("a file")
    (root / "notrun").mkdir()
    (root / "notrun" / "keep.txt").write_text("someone's data")
    rng = np.random.default_rng(0)
    write_idx(root / "wide", rng.integers(0, 255, (30, 4, 6)), np.arange(30) % 3)
    write_idx(root / "stray", rng.integers(0, 255, (30, 8, 8)), np.where(np.arange(30) == 5, 200, np.arange(30) % 3))
    make_idx_dir(root / "small", gz=True)  # 4×4 images, 3 classes
    (root / "onnx").mkdir()
    (root / "onnx" / "exists.onnx").write_bytes(b"an older export")
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


T = ["train", "--data", "synthetic", "--epochs", "1"]
AT = ["adaptive", "train", "--model", "mlp", "--data", "synthetic", "--epochs", "1"]
AS = ["adaptive", "sweep", "{ee}", "--no-timing"]
AC = ["adaptive", "cascade", "{c0}", "{c1}", "--no-timing"]
NEW = "{root}/new"

CASES = [
    # --- train: the output -------------------------------------------------------------------
    (["train", "--data", "synthetic"], "--out"),
    (T + ["--out", ""], "--out"),
    (T + ["--out", " "], "--out"),
    (T + ["--out", "{root}/file.txt"], "--out"),
    (T + ["--out", "{root}/notrun"], "--out"),
    (T + ["--out", "{mlp}"], "--force"),
    (T + ["--out", "{mlp}/inside"], "--out"),
    (T + ["--out", "{root}/file.txt/sub"], "--out"),
    (T + ["--out", NEW, "--resume"], "--resume"),
    # --- train: model and data -----------------------------------------------------------------
    (["train", "--model", "nope", "--out", NEW], "--model"),
    (["train", "--data", "imagenet", "--out", NEW], "--data"),
    (["train", "--data", "", "--out", NEW], "--data"),
    (["train", "--data", "idx:{root}/missing", "--out", NEW], "--data"),
    (["train", "--data", "idx:{root}/notrun", "--out", NEW], "--data"),
    (["train", "--data", "idx:{root}/wide", "--out", NEW], "--data"),
    (["train", "--data", "idx:{root}/stray", "--out", NEW], "--data"),
    (T + ["--profile", "cubic", "--out", NEW], "--profile"),
    (T + ["--profile", "", "--out", NEW], "--profile"),
    (T + ["--profile", "2,1,3", "--out", NEW], "--profile"),
    (T + ["--profile", "1,0,0.5", "--out", NEW], "--profile"),
    (T + ["--profile", "1,nan", "--out", NEW], "--profile"),
    (T + ["--profile", "1,-1", "--out", NEW], "--profile"),
    (T + ["--profile", "1,,0.5", "--out", NEW], "--profile"),
    (T + ["--model", "vgg16", "--width-mult", "0", "--out", NEW], "--width-mult"),
    (T + ["--model", "vgg16", "--width-mult", "-1", "--out", NEW], "--width-mult"),
    (T + ["--model", "vgg16", "--width-mult", "nan", "--out", NEW], "--width-mult"),
    (T + ["--model", "vgg16", "--width-mult", "inf", "--out", NEW], "--width-mult"),
    (T + ["--model", "vgg16", "--width-mult", "wide", "--out", NEW], "--width-mult"),
    (T + ["--width-mult", "0.5", "--out", NEW], "--width-mult"),  # the MLP has no width_mult
    (T + ["--set", "depth=3", "--out", NEW], "--set depth"),
    (T + ["--set", "hidden=abc", "--out", NEW], "--set hidden"),
    (T + ["--set", "hidden=[-1]", "--out", NEW], "--set hidden"),
    (T + ["--set", "hidden=[]", "--out", NEW], "--set hidden"),
    (T + ["--set", "hidden=[1.5]", "--out", NEW], "--set hidden"),
    (T + ["--set", "num_classes=5", "--out", NEW], "--set num_classes"),
    (T + ["--set", "in_channels=3", "--out", NEW], "--set in_channels"),
    (T + ["--set", "input_size=0", "--out", NEW], "--set input_size"),
    (T + ["--set", "hidden=", "--out", NEW], "--set"),
    (T + ["--set", "=5", "--out", NEW], "--set"),
    (T + ["--set", "hidden", "--out", NEW], "--set"),
    (T + ["--model", "resnet", "--set", "blocks_per_stage=0", "--out", NEW], "--set blocks_per_stage"),
    (T + ["--model", "binarynet", "--set", "filters=[8,32]", "--out", NEW], "--set"),
    # --- train: numbers ----------------------------------------------------------------------
    (["train", "--data", "synthetic", "--epochs", "0", "--out", NEW], "--epochs"),
    (["train", "--data", "synthetic", "--epochs", "-1", "--out", NEW], "--epochs"),
    (["train", "--data", "synthetic", "--epochs", "zero", "--out", NEW], "--epochs"),
    (["train", "--data", "synthetic", "--epochs", "1.5", "--out", NEW], "--epochs"),
    (["train", "--data", "synthetic", "--epochs", "", "--out", NEW], "--epochs"),
    (T + ["--batch-size", "0", "--out", NEW], "--batch-size"),
    (T + ["--lr", "0", "--out", NEW], "--lr"),
    (T + ["--lr", "-1", "--out", NEW], "--lr"),
    (T + ["--lr", "nan", "--out", NEW], "--lr"),
    (T + ["--lr", "inf", "--out", NEW], "--lr"),
    (T + ["--lr", "1e999", "--out", NEW], "--lr"),
    (T + ["--momentum", "7", "--out", NEW], "--momentum"),
    (T + ["--momentum", "nan", "--out", NEW], "--momentum"),
    (T + ["--momentum", "-0.1", "--out", NEW], "--momentum"),
    (T + ["--momentum", "1", "--out", NEW], "--momentum"),
    (T + ["--weight-decay", "nan", "--out", NEW], "--weight-decay"),
    (T + ["--weight-decay", "-1", "--out", NEW], "--weight-decay"),
    (T + ["--optimizer", "rmsprop", "--out", NEW], "--optimizer"),
    (T + ["--schedule", "linear", "--out", NEW], "--schedule"),
    (T + ["--train-limit", "0", "--out", NEW], "--train-limit"),
    (T + ["--seed", "-1", "--out", NEW], "--seed"),
    (T + ["--holdout", "-1", "--out", NEW], "--holdout"),
    (T + ["--holdout", "1000", "--out", NEW], "--holdout"),
    (T + ["--cut", "sometimes", "--out", NEW], "--cut"),
    (T + ["--profile-gradient", "none", "--out", NEW], "--profile-gradient"),
    (T + ["--profiles", "", "--out", NEW], "--profiles"),
    (T + ["--profiles", "0-0.5", "--out", NEW], "--profiles"),
    (T + ["--profiles", "0.5-1", "--out", NEW], "--profiles"),
    (T + ["--profiles", "0-x", "--out", NEW], "--profiles"),
    (T + ["--calibrate", "", "--out", NEW], "--calibrate"),
    (T + ["--calibrate", "0", "--out", NEW], "--calibrate"),
    (T + ["--calibrate", "1.5", "--out", NEW], "--calibrate"),
    (T + ["--calibrate", "0.5", "--out", NEW], "--calibrate"),  # the MLP has no batch-norm
    (T + ["--recipe", "slimmable", "--out", NEW], "--recipe"),
    (T + ["--recipe", "us", "--sandwich", "1", "--out", NEW], "--sandwich"),
    (T + ["--recipe", "us", "--min-width", "0", "--out", NEW], "--min-width"),
    (T + ["--recipe", "us", "--profiles", "0-0.5,0.5-1", "--out", NEW], "--profiles"),
    (T + ["--recipe", "independent", "--family-widths", "", "--out", NEW], "--family-widths"),
    (T + ["--recipe", "independent", "--family-widths", "0.5", "--out", NEW], "--family-widths"),
    (T + ["--recipe", "independent", "--profiles", "0-0.5,0.5-1", "--out", NEW], "--profiles"),
    (T + ["--checkpoint-every", "0", "--out", NEW], "--checkpoint-every"),
    (T + ["--threads", "0", "--out", NEW], "--threads"),
    (T + ["--threads", "two", "--out", NEW], "--threads"),
    # --- sweep -------------------------------------------------------------------------------
    (["sweep"], "runs"),
    (["sweep", "{root}/missing"], "{root}/missing"),
    (["sweep", "{root}/file.txt"], "{root}/file.txt"),
    (["sweep", "{root}/notrun"], "{root}/notrun"),
    (["sweep", "{ee}"], "adaptive sweep"),
    (["sweep", "{mlp}", "--widths", ""], "--widths"),
    (["sweep", "{mlp}", "--widths", "0"], "--widths"),
    (["sweep", "{mlp}", "--widths", "0.5,1.5"], "--widths"),
    (["sweep", "{mlp}", "--widths", "nan"], "--widths"),
    (["sweep", "{mlp}", "--widths", "a,b"], "--widths"),
    (["sweep", "{mlp}", "--widths", "0.5,,1"], "--widths"),
    (["sweep", "{mlp}", "--data", "imagenet"], "--data"),
    (["sweep", "{mlp}", "--data", "idx:{root}/small"], "--data"),
    (["sweep", "{mlp}", "--latency", "--batch", "0"], "--batch"),
    (["sweep", "{mlp}", "--latency", "--batch", "-3"], "--batch"),
    (["sweep", "{mlp}", "--latency", "--batch", ""], "--batch"),
    (["sweep", "{mlp}", "--latency", "--threads", "0"], "--threads"),
    (["sweep", "{mlp}", "--latency", "--rounds", "0"], "--rounds"),
    (["sweep", "{mlp}", "--latency", "--min-run-time", "0"], "--min-run-time"),
    (["sweep", "{mlp}", "--latency", "--min-run-time", "nan"], "--min-run-time"),
    (["sweep", "{mlp}", "--runtime", "tflite"], "--runtime"),
    (["sweep", "{mlp}", "--runtime", ""], "--runtime"),
    (["sweep", "{mlp}", "--json", "{mlp}/config.json"], "--json"),
    (["sweep", "{mlp}", "--json", "{mlp}/new.json"], "--json"),
    (["sweep", "{mlp}", "--json", "{root}/notrun"], "--json"),
    (["sweep", "{mlp}", "--json", ""], "--json"),
    (["sweep", "{mlp}", "--json", "{root}/same", "--csv", "{root}/same"], "--csv"),
    (["sweep", "{mlp}", "--plot", "{vgg}/model.safetensors"], "--plot"),
    (["sweep", "{mlp}", "--csv", "{root}/file.txt/x.csv"], "--csv"),
    (["sweep", "{mlp}", "--title", ""], "--title"),
    # --- calibrate ---------------------------------------------------------------------------
    (["calibrate", "{root}/missing"], "{root}/missing"),
    (["calibrate", "{vgg}", "--widths", ""], "--widths"),
    (["calibrate", "{vgg}", "--widths", "0,1"], "--widths"),
    (["calibrate", "{vgg}", "--batches", "0"], "--batches"),
    (["calibrate", "{vgg}", "--batches", "-1"], "--batches"),
    (["calibrate", "{vgg}", "--data", "idx:{root}/small"], "--data"),
    (["calibrate", "{vgg}", "--data", "imagenet"], "--data"),
    (["calibrate", "{mlp}"], "calibrate"),
    (["calibrate", "{ee}"], "calibrate"),
    (["calibrate", "{vgg}", "--threads", "0"], "--threads"),
    # --- export ------------------------------------------------------------------------------
    (["export", "{vgg}"], "--width"),
    (["export", "{vgg}", "--width", "0"], "--width"),
    (["export", "{vgg}", "--width", "2"], "--width"),
    (["export", "{vgg}", "--width", "nan"], "--width"),
    (["export", "{vgg}", "--width", "0.5", "--format", "tflite"], "--format"),
    (["export", "{vgg}", "--width", "0.5", "--out", "{mlp}"], "--out"),
    (["export", "{vgg}", "--width", "0.5", "--format", "safetensors", "--out", "{mlp}"], "--out"),
    (["export", "{vgg}", "--width", "0.5", "--format", "safetensors", "--out", "{mlp}", "--force"], "--out"),
    (["export", "{vgg}", "--width", "0.5", "--out", "{vgg}/export.onnx"], "--out"),
    (["export", "{vgg}", "--width", "0.5", "--out", "{root}/onnx/exists.onnx"], "--force"),
    (["export", "{vgg}", "--width", "0.5", "--out", ""], "--out"),
    (["export", "{ee}", "--width", "0.5", "--out", "{root}/ee.onnx"], "export"),
    # --- bench -------------------------------------------------------------------------------
    (["bench", "{root}/missing"], "{root}/missing"),
    (["bench", "{vgg}", "--widths", "1.5"], "--widths"),
    (["bench", "{vgg}", "--batch", "0"], "--batch"),
    (["bench", "{vgg}", "--runtime", "tensorrt"], "--runtime"),
    (["bench", "{vgg}", "--rounds", "0"], "--rounds"),
    (["bench", "{vgg}", "--min-run-time", "-1"], "--min-run-time"),
    (["bench", "{vgg}", "--threads", "0"], "--threads"),
    (["bench", "{vgg}", "--markdown", "{vgg}/bench.md"], "--markdown"),
    (["bench", "{ee}"], "bench"),
    # --- pick --------------------------------------------------------------------------------
    (["pick", "{mlp}"], "--macs-ratio"),
    (["pick", "{mlp}", "--macs-ratio", "0.5", "--latency-ms", "1"], "--latency-ms"),
    (["pick", "{mlp}", "--macs-ratio", "0"], "--macs-ratio"),
    (["pick", "{mlp}", "--macs-ratio", "-1"], "--macs-ratio"),
    (["pick", "{mlp}", "--macs-ratio", "nan"], "--macs-ratio"),
    (["pick", "{mlp}", "--macs-ratio", "0.001", "--widths", "0.5,1"], "--macs-ratio"),
    (["pick", "{mlp}", "--latency-ms", "0"], "--latency-ms"),
    (["pick", "{mlp}", "--latency-ms", "inf"], "--latency-ms"),
    (["pick", "{mlp}", "--macs-ratio", "0.5", "--batch", "0"], "--batch"),
    (["pick", "{mlp}", "--macs-ratio", "0.5", "--batch", "-3"], "--batch"),
    (["pick", "{mlp}", "--macs-ratio", "0.5", "--runtime", "tflite"], "--runtime"),
    (["pick", "{mlp}", "--macs-ratio", "0.5", "--widths", ""], "--widths"),
    (["pick", "x", "--sweep", "{root}/none.json", "--macs-ratio", "0.5"], "--sweep"),
    (["pick", "x", "--sweep", "{root}/notreport.json", "--macs-ratio", "0.5"], "--sweep"),
    (["pick", "x", "--sweep", "{root}/file.txt", "--macs-ratio", "0.5"], "--sweep"),
    (["pick", "other", "--sweep", "{root}/report.json", "--macs-ratio", "0.5"], "--sweep"),
    (["pick", "mlp", "--sweep", "{root}/report.json", "--latency-ms", "5"], "--latency-ms"),
    (["pick", "{root}/missing", "--macs-ratio", "0.5"], "{root}/missing"),
    (["pick", "{ee}", "--macs-ratio", "0.5", "--widths", "0.5,1"], "--widths"),
    # --- reproduce and compare ---------------------------------------------------------------
    (["reproduce", "alexnet"], "paper"),
    (["reproduce", "idp", "--only", ""], "--only"),
    (["reproduce", "idp", "--only", "nope"], "--only"),
    (["reproduce", "idp", "--out", "{root}/file.txt"], "--out"),
    (["reproduce", "idp", "--out", "{mlp}"], "--out"),
    (["reproduce", "idp", "--threads", "0"], "--threads"),
    (["compare", "--model", "nope"], "--model"),
    (["compare", "--widths", ""], "--widths"),
    (["compare", "--widths", "0.5"], "--widths"),
    (["compare", "--epochs", "0"], "--epochs"),
    (["compare", "--model", "vgg16", "--width-mult", "0"], "--width-mult"),
    (["compare", "--data", "imagenet"], "--data"),
    (["compare", "--out", "{root}/file.txt"], "--out"),
    (["compare", "--batch-size", "0"], "--batch-size"),
    (["compare", "--train-limit", "0"], "--train-limit"),
    # --- report ------------------------------------------------------------------------------
    (["report", "--out", "{root}/file.txt"], "--out"),
    (["report", "--out", "{mlp}"], "--out"),
    (["report", "--out", "{root}/notrun"], "--out"),
    (["report", "--out", "{root}/c", "--cache", "{root}/c"], "--out"),
    (["report", "--out", NEW, "--cache", "{mlp}"], "--cache"),
    (["report", "--out", NEW, "--cache", "{root}/file.txt"], "--cache"),
    (["report", "--data", "imagenet", "--out", NEW], "--data"),
    (["report", "--plan", "{root}/missing.yaml", "--out", NEW], "--plan"),
    (["report", "--plan", "{root}/file.txt", "--out", NEW], "--plan"),
    (["report", "--plan", "{root}/notreport.json", "--out", NEW], "--plan"),
    (["report", "--threads", "0", "--out", NEW], "--threads"),
    (["report"], "--out"),
    # --- demo --------------------------------------------------------------------------------
    (["demo", "--epochs", "0"], "--epochs"),
    (["demo", "--out", "{root}/file.txt"], "--out"),
    (["demo", "--out", "{mlp}"], "--out"),
    (["demo", "--seed", "-1"], "--seed"),
    # --- adaptive train ----------------------------------------------------------------------
    (AT + ["--out", NEW], "--exits"),
    (AT + ["--exits", "", "--out", NEW], "--exits"),
    (AT + ["--exits", "block7", "--out", NEW], "--exits"),
    (AT + ["--exits", "head", "--out", NEW], "--exits"),
    (AT + ["--exits", "layer1,layer1", "--out", NEW], "--exits"),
    (AT + ["--exits", "layer1", "--exit-weights", "", "--out", NEW], "--exit-weights"),
    (AT + ["--exits", "layer1", "--exit-weights", "1", "--out", NEW], "--exit-weights"),
    (AT + ["--exits", "layer1", "--exit-weights", "1,-1", "--out", NEW], "--exit-weights"),
    (AT + ["--exits", "layer1", "--exit-weights", "1,nan", "--out", NEW], "--exit-weights"),
    (AT + ["--exits", "layer1", "--exit-weights", "0,0", "--out", NEW], "--exit-weights"),
    (AT + ["--exits", "layer1", "--backbone", "{root}/missing", "--out", NEW], "--backbone"),
    (AT + ["--exits", "layer1", "--backbone", "{ee}", "--out", NEW], "--backbone"),
    (AT[:2] + AT[4:] + ["--exits", "layer1", "--backbone", "{c0}", "--holdout", "30", "--out", NEW], "--holdout"),
    (AT + ["--exits", "layer1", "--backbone", "{c0}", "--out", NEW], "--model does nothing with --backbone"),
    (AS + ["--channels-last"], "--channels-last does nothing with --no-timing"),
    (T + ["--sandwich", "3", "--out", NEW], "--sandwich does nothing with --recipe idp"),
    (T + ["--from", "{mlp}", "--set", "hidden=[4]", "--out", NEW], "--set does nothing with --from"),
    (["dfs", "train", "--data", "synthetic", "--target", "50", "--backbone", "{resnet}", "--pretrain-epochs", "2",
      "--out", NEW], "--pretrain-epochs does nothing with --backbone"),
    (AT + ["--exits", "layer1", "--holdout", "0", "--out", NEW], "--holdout"),
    (AT + ["--exits", "layer1", "--out", "{mlp}"], "--force"),
    (AT + ["--exits", "layer1", "--lr", "nan", "--out", NEW], "--lr"),
    (AT + ["--exits", "layer1", "--set", "depth=3", "--out", NEW], "--set depth"),
    (["adaptive", "train", "--model", "nope", "--exits", "block1", "--out", NEW], "--model"),
    # --- adaptive sweep ----------------------------------------------------------------------
    (["adaptive", "sweep", "{root}/missing"], "{root}/missing"),
    (["adaptive", "sweep", "{mlp}"], "not an early-exit run"),
    (AS + ["--lambdas", "-1"], "--lambdas"),
    (AS + ["--lambdas", ""], "--lambdas"),
    (AS + ["--lambdas", "nan"], "--lambdas"),
    (AS + ["--lambdas", "a"], "--lambdas"),
    (AS + ["--max-loss", "150"], "--max-loss"),
    (AS + ["--max-loss", ""], "--max-loss"),
    (AS + ["--max-loss", "-1"], "--max-loss"),
    (["adaptive", "sweep", "{ee}", "--timing-examples", "0"], "--timing-examples"),
    (["adaptive", "sweep", "{ee}", "--batch", "0"], "--batch"),
    (AS + ["--data", "idx:{root}/small"], "--data"),
    (AS + ["--json", "{ee}/sweep.json"], "--json"),
    # --- adaptive cascade --------------------------------------------------------------------
    (["adaptive", "cascade", "{c0}", "--no-timing"], "two runs"),
    (["adaptive", "cascade", "{c1}", "{c0}", "--no-timing"], "rising cost"),
    (["adaptive", "cascade", "{c0}", "{c0}", "--no-timing"], "each run once"),
    (["adaptive", "cascade", "{c0}", "{c2}", "--no-timing"], "--holdout"),
    (["adaptive", "cascade", "{c0}", "{ee}", "--no-timing"], "{ee}"),
    (AC + ["--edges", ""], "--edges"),
    (AC + ["--edges", "1-0"], "--edges"),
    (AC + ["--edges", "0-5"], "--edges"),
    (AC + ["--edges", "0>1"], "--edges"),
    (AC + ["--save", "{mlp}"], "--save"),
    (AC + ["--name", ""], "--name"),
    # --- effort ------------------------------------------------------------------------------
    (["effort", "tune", "{root}/missing"], "{root}/missing"),
    (["effort", "tune", "{ee}"], "effort tune"),
    (["effort", "tune", "{mlp}", "--max-loss", ""], "--max-loss"),
    (["effort", "tune", "{mlp}", "--max-loss", "-1"], "--max-loss"),
    (["effort", "tune", "{mlp}", "--max-loss", "nan"], "--max-loss"),
    (["effort", "tune", "{mlp}", "--max-loss", "101"], "--max-loss"),
    (["effort", "tune", "{mlp}", "--knobs", ""], "--knobs"),
    (["effort", "tune", "{mlp}", "--knobs", "spet,warp"], "--knobs"),
    (["effort", "tune", "{mlp}", "--examples", "0"], "--examples"),
    (["effort", "tune", "{mlp}", "--batch", "0"], "--batch"),
    (["effort", "tune", "{mlp}", "--batch", "1,1"], "--batch"),
    (["effort", "tune", "{mlp}", "--objective", "speed"], "--objective"),
    (["effort", "sweep", "{mlp}", "--runtime", "tensorrt"], "--runtime"),
    (["effort", "tune", "{mlp}", "--data", "idx:{root}/small"], "--data"),
    (["effort", "tune", "{mlp}", "--out", "{vgg}"], "--out"),
    (["effort", "tune", "{mlp}", "--out", "{root}/file.txt"], "--out"),
    (["effort", "sweep", "{mlp}"], "not an effort run"),
    (["effort", "sweep", "{root}/missing"], "{root}/missing"),
    (["effort", "sweep", "{mlp}", "--batch", "0"], "--batch"),
    # --- dfs ---------------------------------------------------------------------------------
    (["dfs", "train", "--data", "synthetic", "--out", NEW], "--target"),
    (["dfs", "train", "--data", "synthetic", "--target", "0", "--out", NEW], "--target"),
    (["dfs", "train", "--data", "synthetic", "--target", "150", "--out", NEW], "--target"),
    (["dfs", "train", "--data", "synthetic", "--target", "nan", "--out", NEW], "--target"),
    (["dfs", "train", "--data", "synthetic", "--target", "50", "--choices", "", "--out", NEW], "--choices"),
    (["dfs", "train", "--data", "synthetic", "--target", "50", "--choices", "16", "--out", NEW], "--choices"),
    (["dfs", "train", "--data", "synthetic", "--target", "50", "--choices", "0,-4", "--out", NEW], "--choices"),
    (["dfs", "train", "--data", "synthetic", "--target", "50", "--choices", "0,64", "--out", NEW], "--choices"),
    (["dfs", "train", "--data", "synthetic", "--target", "50", "--choices", "0,8,8", "--out", NEW], "--choices"),
    (["dfs", "train", "--data", "synthetic", "--target", "50", "--beta", "-1", "--out", NEW], "--beta"),
    (["dfs", "train", "--model", "vgg16", "--data", "synthetic", "--target", "50", "--out", NEW], "--model"),
    (["dfs", "train", "--data", "synthetic", "--target", "50", "--backbone", "{mlp}", "--out", NEW], "ResNet"),
    (["dfs", "train", "--data", "synthetic", "--target", "50", "--pretrain-epochs", "0", "--gate-epochs", "0",
      "--joint-epochs", "0", "--out", NEW], "--joint-epochs"),
    (["dfs", "train", "--data", "synthetic", "--target", "50", "--out", "{mlp}"], "--force"),
    (["dfs", "train", "--data", "synthetic", "--target", "50", "--backbone", "{resnet}", "--width-mult", "0.5",
      "--out", NEW], "leave out --model, --width-mult and --set"),
    (["dfs", "train", "--data", "synthetic", "--target", "50", "--backbone", "{resnet}", "--model", "resnet74",
      "--out", NEW], "leave out --model"),
    (["dfs", "train", "--data", "synthetic", "--target", "50", "--gate", "gru", "--out", NEW], "--gate"),
    (["dfs", "train", "--data", "synthetic", "--target", "50", "--target-mode", "floor", "--out", NEW],
     "--target-mode"),
    (["dfs", "train", "--data", "synthetic", "--target", "50", "--execute", "--choices", "0,10,32", "--out", NEW],
     "--choices"),
    (["dfs", "train", "--data", "synthetic", "--target", "50", "--backbone", "{resnet}", "--execute",
      "--choices", "0,16", "--out", NEW], "--choices"),
    (["dfs", "train", "--data", "synthetic", "--target", "50", "--int8-cost", "0", "--out", NEW], "--int8-cost"),
    (["dfs", "train", "--data", "synthetic", "--target", "50", "--choices", "0,32", "--int8-cost", "0.3",
      "--out", NEW], "--int8-cost"),
    (["dfs", "sweep", "{resnet}", "--choices-plot", "{root}/choices.png"], "--choices-plot"),
    (["dfs", "sweep", "{mlp}"], "ResNet runs"),
    (["dfs", "sweep", "{root}/missing"], "{root}/missing"),
    (["dfs", "sweep", "{ee}", "--static-bits", "0"], "--static-bits"),
    (["dfs", "sweep", "{ee}", "--static-bits", "32"], "--static-bits"),
    (["dfs", "sweep", "{ee}", "--choices-plot", "{mlp}/x.png"], "--choices-plot"),
    # --- info, list and the command itself ---------------------------------------------------
    (["info", "{root}/missing"], "{root}/missing"),
    (["info", "{root}/file.txt"], "{root}/file.txt"),
    (["list", "extra"], "unrecognized"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
]


def run(args: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err


def test_there_are_at_least_150_cases():
    assert len(CASES) >= 150
    commands = {next((a for a in args if not a.startswith("-")), "") for args, _ in CASES}
    assert {"train", "sweep", "calibrate", "export", "bench", "pick", "reproduce", "compare", "demo", "adaptive",
            "effort", "dfs", "info", "list"} <= commands


@pytest.mark.parametrize("args, fragment", CASES, ids=[" ".join(a)[:70] for a, _ in CASES])
def test_bad_input_is_one_line_naming_the_option_and_changes_nothing(args, fragment, world, capsys, monkeypatch):
    monkeypatch.chdir(world)  # commands with default outputs (compare, demo, reproduce) would write here
    subs = {"root": world, **{name: world / name for name in ("mlp", "vgg", "ee", "c0", "c1", "c2", "resnet")}}
    before = snapshot(world)
    code, err = run([a.format(**subs) for a in args], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err
    assert fragment.format(**subs) in lines[0], lines[0]
    assert snapshot(world) == before


def test_a_bug_is_one_line_that_says_so(capsys, monkeypatch):
    from dynscale.cli import commands

    def broken(args):
        raise KeyError("oops")

    monkeypatch.setattr(commands, "list_all", broken)
    from dynscale import cli

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["list"].set_defaults(func=broken)
    code, err = run(["list"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "a bug in dynscale" in err and "KeyError" in err and "DYNSCALE_DEBUG=1" in err


def test_every_option_has_help_and_shows_its_default():
    import argparse

    from dynscale.cli import build_parser

    def parsers(p):
        yield p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    missing = []
    for p in parsers(build_parser()):
        for action in p._actions:
            if not action.help and not isinstance(action, argparse._SubParsersAction):
                missing.append(f"{p.prog} {action.dest}")
    assert not missing, missing
    text = " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    assert "(default: 30)" in text and "(default: 0.9)" in text and "(default: 0.25,0.5,0.75,1)" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == "dynscale 0.2.0"


def test_the_installed_command_behaves_the_same(world):
    import subprocess

    from test_cli import EXE

    proc = subprocess.run([EXE, "train", "--data", "synthetic", "--lr", "nan", "--out", str(world / "x")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--lr" in proc.stderr
    assert not (world / "x").exists()


def test_a_json_report_is_strict(world):
    doc = json.loads((world / "report.json").read_text())
    assert doc["schema"] == "dynscale-curves"
    shutil.rmtree(world / "new", ignore_errors=True)
