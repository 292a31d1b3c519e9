"""Nothing of a user's is lost to a slip of ``--out``, to ``--force`` or to a second command: an
output is never one of the command's inputs (nor inside or around one), ``--force`` removes only
what dynscale wrote, and of two commands writing one output exactly one wins."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from dynscale import files
from dynscale.cli import main
from dynscale.data import make_synthetic
from dynscale.effort import tune_run
from dynscale.errors import DynscaleError
from dynscale.idp import IDP, calibrate_run, train_run
from dynscale.runs import RunConfig, check_file_output, check_output, load_run, release_outputs, save_run
from dynscale.train import TrainConfig, prepare_state, save_state
from dynscale.train.state import is_state_directory

from test_bad_input import write_idx
from test_cli import EXE


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Runs and data the commands read; the outputs below name them."""
    root = tmp_path_factory.mktemp("safety")
    data = make_synthetic(num_train=200, num_test=60)
    quick = TrainConfig(epochs=1, batch_size=64, holdout=40)
    train_run(root / "mlp", "mlp", data, quick, model_options={"hidden": [4]}, progress=False)
    train_run(root / "big", "mlp", data, quick, model_options={"hidden": [32, 32]}, progress=False)
    train_run(root / "vgg", "vgg16", data, TrainConfig(epochs=1), IDP(), {"width_mult": 0.0625}, progress=False)
    train_run(root / "resnet", "resnet", data, TrainConfig(epochs=1),
              model_options={"width_mult": 0.25, "blocks_per_stage": 1, "profile": "all-one"}, progress=False)
    (root / "link").symlink_to(root / "mlp")
    (root / "sub").mkdir()
    write_idx(root / "data", np.random.default_rng(0).integers(0, 255, (30, 8, 8)), np.arange(30) % 3)
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*")) if not p.is_symlink()}


def one_line_error(args: list[str], capsys) -> str:
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


# --- an output is never an input ------------------------------------------------------------

AT = ["adaptive", "train", "--data", "synthetic", "--exits", "layer1", "--holdout", "40", "--epochs", "1"]
DT = ["dfs", "train", "--data", "synthetic", "--target", "50", "--joint-epochs", "1"]

# (arguments, the output as the message names it, how it lies, the input it names)
INPUT_CASES = [
    (["effort", "tune", "{mlp}", "--out", "{mlp}", "--force"], "{mlp}", "is the input", "{mlp}"),
    (["effort", "tune", "{mlp}", "--out", "{root}/link", "--force"], "{root}/link", "is the input", "{mlp}"),
    (["effort", "tune", "{mlp}", "--out", "{root}/sub/../mlp", "--force"], "{root}/sub/../mlp", "is the input",
     "{mlp}"),
    (["effort", "tune", "{root}/link", "--out", "{mlp}", "--force"], "{mlp}", "is the input", "{root}/link"),
    (["effort", "tune", "{mlp}", "--out", "{root}", "--force"], "{root}", "holds the input", "{mlp}"),
    (DT + ["--backbone", "{resnet}", "--out", "{resnet}", "--force"], "{resnet}", "is the input", "{resnet}"),
    (DT + ["--backbone", "{root}/resnet/", "--out", "{resnet}", "--force"], "{resnet}", "is the input",
     "{root}/resnet"),
    (AT + ["--backbone", "{mlp}", "--out", "{mlp}", "--force"], "{mlp}", "is the input", "{mlp}"),
    (["adaptive", "cascade", "{mlp}", "{big}", "--no-timing", "--save", "{big}", "--force"], "{big}",
     "is the input", "{big}"),
    (["adaptive", "cascade", "{mlp}", "{big}", "--no-timing", "--json", "{mlp}/sweep.json"], "{mlp}/sweep.json",
     "lies inside the input", "{mlp}"),
    (["sweep", "{mlp}", "--data", "idx:{root}/data", "--json", "{root}/data/train-labels-idx1-ubyte"],
     "{root}/data/train-labels-idx1-ubyte", "lies inside the input", "{root}/data"),
    (["dfs", "sweep", "{resnet}", "--choices-plot", "{resnet}/choices.png"], "{resnet}/choices.png",
     "lies inside the input", "{resnet}"),
    (["train", "--data", "idx:{root}/data", "--out", "{root}/data", "--force"], "{root}/data", "is the input",
     "{root}/data"),
    (["train", "--data", "idx:{root}/data", "--out", "{root}", "--force"], "{root}", "holds the input",
     "{root}/data"),
    (["compare", "--data", "idx:{root}/data", "--out", "{root}/data/compare"], "{root}/data/compare",
     "lies inside the input", "{root}/data"),
]


@pytest.mark.parametrize("args, out, how, source", INPUT_CASES, ids=[" ".join(c[0])[:60] for c in INPUT_CASES])
def test_an_output_that_is_an_input_is_refused_even_with_force(args, out, how, source, world, capsys):
    subs = {"root": world, **{name: world / name for name in ("mlp", "big", "vgg", "resnet")}}
    before = snapshot(world)
    err = one_line_error([a.format(**subs) for a in args], capsys)
    assert f"{out.format(**subs)} {how} {source.format(**subs)}" in err, err
    assert "even with --force" in err and "choose another" in err
    assert snapshot(world) == before
    assert not list(world.glob(".*.lock"))


def test_the_library_refuses_an_output_that_is_an_input(world):
    before = snapshot(world)
    with pytest.raises(DynscaleError, match="is the input"):
        tune_run(world / "mlp", [0.5], out=world / "link", force=True, progress=False)
    with pytest.raises(DynscaleError, match="holds the input"):
        check_output(world, force=True, inputs=[world / "mlp"])
    with pytest.raises(DynscaleError, match="lies inside the input"):
        check_file_output(world / "data" / "x.json", "--json", inputs=[world / "data"])
    assert check_output(world / "mlp-2", inputs=[world / "mlp"]) == world / "mlp-2"  # a sibling is fine
    release_outputs()
    assert snapshot(world) == before


def test_the_last_line_of_defence_refuses_to_replace_a_run_in_use(world, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(world / "mlp", copy)
    before = snapshot(tmp_path)
    run = load_run(copy)
    with pytest.raises(DynscaleError, match=re.escape(f"it is {os.path.realpath(copy)}, which this command read")):
        save_run(copy, run.model, "synthetic")  # no check before it: as a method's own code might
    with pytest.raises(DynscaleError, match="lies inside"):
        files.atomic_write(copy / "notes.txt", lambda p: p.write_text("x"))
    with pytest.raises(DynscaleError, match="holds"):
        files.atomic_directory(tmp_path, lambda p: None)
    assert snapshot(tmp_path) == before
    model = run.model
    del run
    with pytest.raises(DynscaleError, match="still uses"):
        save_run(copy, model, "synthetic")  # the model is still in use
    del model
    save_run(copy, load_run(world / "big").model, "synthetic")  # no longer used: replacing it is the user's call
    assert RunConfig.read(copy).model_config["hidden"] == [32, 32]


def test_calibrate_still_updates_its_own_run(world, tmp_path):
    run = tmp_path / "vgg"
    shutil.copytree(world / "vgg", run)
    assert 0.3 in calibrate_run(run, [0.3], data=make_synthetic(num_train=200, num_test=60), batches=1)
    assert 0.3 in RunConfig.read(run).calibrated_widths
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vgg"]  # no lock file, no temporary left


# --- --force removes only a training state dynscale wrote -------------------------------------

TRAIN = ["train", "--data", "synthetic", "--epochs", "1", "--set", "hidden=[4]", "--quiet", "--force"]


@pytest.mark.parametrize("what", ["user files", "a file", "a run", "a state with more files", "a symlink",
                                  "a state.json of another program"])
def test_force_never_removes_an_out_resume_that_dynscale_did_not_write(what, world, tmp_path, capsys):
    out, resume = tmp_path / "out", tmp_path / "out.resume"
    if what == "user files":
        resume.mkdir()
        (resume / "thesis.tex").write_text("years of work")
    elif what == "a file":
        resume.write_text("a file")
    elif what == "a run":
        shutil.copytree(world / "mlp", resume)
    elif what == "a state with more files":
        save_state(resume, {"step": 1}, {})
        (resume / "notes.txt").write_text("mine")
    elif what == "a symlink":
        save_state(tmp_path / "elsewhere", {"step": 1}, {})
        resume.symlink_to(tmp_path / "elsewhere")
    else:
        resume.mkdir()
        (resume / "state.json").write_text(json.dumps({"format": "someone-else"}))
    before = snapshot(tmp_path)
    for extra in ([], ["--resume"]):
        err = one_line_error(TRAIN + ["--out", str(out), *extra], capsys)
        assert f"{resume} is not a training state written by dynscale" in err or \
            (extra and "no training state to resume" in err), err
        assert snapshot(tmp_path) == before


def test_force_removes_a_training_state_dynscale_wrote(tmp_path, capsys):
    out, resume = tmp_path / "out", tmp_path / "out.resume"
    save_state(resume, {"step": 1}, {"other": "settings"})
    assert is_state_directory(resume)
    assert "unfinished training" in one_line_error(TRAIN[:-1] + ["--out", str(out)], capsys)
    assert main(TRAIN + ["--out", str(out)]) == 0
    assert not resume.exists() and RunConfig.read(out).kind == "width"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_is_state_directory(tmp_path):
    assert not is_state_directory(tmp_path / "missing")
    save_state(tmp_path / "s", {"step": 1}, {})
    assert is_state_directory(tmp_path / "s")
    (tmp_path / "s" / "state.safetensors").unlink()  # damaged, but dynscale's: --force may remove it
    assert is_state_directory(tmp_path / "s")
    (tmp_path / "s" / "state.json").write_text("not json")
    assert not is_state_directory(tmp_path / "s")
    with pytest.raises(DynscaleError, match="not a training state"):
        prepare_state(tmp_path / "s", force=True)
    assert (tmp_path / "s" / "state.json").exists()


# --- two writers of one output: exactly one wins --------------------------------------------

SLOW = ["train", "--data", "synthetic", "--set", "hidden=[64]", "--epochs", "3", "--batch-size", "16", "--threads",
        "1", "--quiet"]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_lock(out: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    lock = files.lock_path(out)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lock.exists() and lock.read_text().strip() == str(proc.pid):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"{proc.pid} never locked {out}")


def test_a_second_writer_fails_at_once_while_the_first_writes(tmp_path):
    out = tmp_path / "run"
    first = start(*SLOW, "--seed", "1", "--out", str(out), "--force")
    try:
        wait_for_lock(out, first)
        first.send_signal(signal.SIGSTOP)  # holds its claim as long as the test wants
        second = subprocess.run([EXE, *SLOW, "--seed", "2", "--out", str(out), "--force"], capture_output=True,
                                text=True, timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
    assert (f"another dynscale command is writing {out} (pid {first.pid}); wait for it or choose another --out"
            in second.stderr)
    assert RunConfig.read(out).training["seed"] == 1 and load_run(out).kind == "width"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no lock file, no state, no temporary


def test_two_writers_racing_on_one_out_exactly_one_wins(tmp_path):
    out = tmp_path / "run"
    procs = {seed: start(*SLOW, "--seed", str(seed), "--out", str(out)) for seed in (1, 2)}
    results = {seed: (p.wait(timeout=300), p.communicate()[1]) for seed, p in procs.items()}
    winners = [seed for seed, (code, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    (code, err), = [r for seed, r in results.items() if seed not in winners]
    assert code == 2 and err.count("\n") == 1, err
    assert "another dynscale command is writing" in err or "already holds a run" in err, err
    assert RunConfig.read(out).training["seed"] == winners[0] and load_run(out).kind == "width"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_claimed_output_refuses_another_process_and_then_frees_it(tmp_path):
    out = tmp_path / "run"
    check_output(out)
    try:
        proc = subprocess.run([EXE, "train", "--data", "synthetic", "--epochs", "1", "--out", str(out)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert f"another dynscale command is writing {out} (pid {os.getpid()})" in proc.stderr
    finally:
        release_outputs()
    assert not files.lock_path(out).exists() and not out.exists()


def test_calibrate_holds_its_run_while_it_updates_it(world, tmp_path):
    run = tmp_path / "vgg"
    shutil.copytree(world / "vgg", run)
    before = snapshot(run)
    files.claim_output(run)  # as a `train --out RUN --force` still running would
    try:
        proc = subprocess.run([EXE, "calibrate", str(run), "--widths", "0.3", "--batches", "1"], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert f"another dynscale command is writing {run} (pid {os.getpid()}); wait for it, then try again" \
            in proc.stderr
    finally:
        release_outputs()
    assert snapshot(run) == before and sorted(p.name for p in tmp_path.iterdir()) == ["vgg"]


def test_a_stale_lock_file_does_not_block(tmp_path, capsys):
    out = tmp_path / "run"
    files.lock_path(out).write_text("999999\n")  # left by a process that died: no one holds its lock
    assert main(TRAIN + ["--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_failed_command_leaves_no_lock_and_no_directories(tmp_path, capsys):
    out = tmp_path / "a" / "b" / "run"
    one_line_error(["train", "--data", "synthetic", "--set", "hidden=[-1]", "--out", str(out)], capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "without renameat2"])
def test_without_force_a_run_that_appeared_meanwhile_is_kept(renameat2, world, tmp_path, monkeypatch):
    if not renameat2:
        monkeypatch.setattr(files, "_renameat2", lambda a, b, flags: None)
    model = load_run(world / "big").model
    out = tmp_path / "run"
    check_output(out)  # nothing there yet
    shutil.copytree(world / "mlp", out)  # another writer, that took no lock, finishes first
    before = snapshot(out)
    with pytest.raises(DynscaleError, match=re.escape(f"{out} was written by another command while this one ran")):
        save_run(out, model, "synthetic")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    # Nothing there (or an empty directory), and the same write goes through:
    for empty in (False, True):
        shutil.rmtree(out)
        if empty:
            out.mkdir()
        check_output(out)
        save_run(out, model, "synthetic")
        assert RunConfig.read(out).model_config["hidden"] == [32, 32]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "without renameat2"])
def test_without_force_a_file_that_appeared_meanwhile_is_kept(renameat2, tmp_path, monkeypatch):
    if not renameat2:
        monkeypatch.setattr(files, "_renameat2", lambda a, b, flags: None)
    out = tmp_path / "model.onnx"
    check_file_output(out, "--out", force=False)
    out.write_bytes(b"someone else's export")
    with pytest.raises(DynscaleError, match="was written by another command"):
        files.atomic_write(out, lambda p: p.write_bytes(b"ours"))
    assert out.read_bytes() == b"someone else's export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    out.unlink()
    check_file_output(out, "--out", force=False)
    files.atomic_write(out, lambda p: p.write_bytes(b"ours"))
    assert out.read_bytes() == b"ours" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
