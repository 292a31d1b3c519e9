"""Training in several processes (``torchrun``, gloo on 127.0.0.1): the same weights as one
process with the same global batch, rank 0 alone writes, a run resumes across a changed process
count, and per-width batch-norm statistics are all-reduced."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dynscale.cli import main
from dynscale.runs import RunConfig
from dynscale.train import load_state, save_state

import distributed_worker as worker

WORKER = Path(worker.__file__)
TRAIN = ["train", "--model", "mlp", "--data", "digits", "--set", "hidden=[32,32]", "--epochs", "2", "--batch-size",
         "64", "--seed", "1", "--quiet"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(processes: int, *command: str, module: bool = True) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=N`` on 127.0.0.1, one thread per process."""
    launch = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
              "--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent)}
    return subprocess.run([*launch, *(["-m", "dynscale"] if module else []), *command], capture_output=True,
                          text=True, env=env, timeout=300)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def assert_close(got: dict, want: dict, atol: float = 1e-6) -> None:
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=atol, rtol=1e-5, msg=key)


@pytest.mark.parametrize("recipe", [[], ["--recipe", "us"]], ids=["idp", "us"])
def test_two_processes_train_the_weights_one_process_trains(recipe, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*TRAIN, *recipe, "--threads", "1", "--out", str(one)]) == 0
    done = torchrun(2, *TRAIN, *recipe, "--out", str(two))
    assert done.returncode == 0, done.stderr
    # 1437 digits in batches of 64: the last global batch (29) splits 15/14, weighed by share
    assert_close(weights(two), weights(one))
    assert done.stdout.count("wrote") == 1  # rank 0 alone reports (and writes)
    record = RunConfig.read(two).training["execution"]
    assert record == {"device": "cpu", "amp": None, "channels_last": False, "world_size": 2, "backend": "gloo",
                      "global_batch": 64, "process_batch": 32}
    assert RunConfig.read(one).training["execution"]["world_size"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no state or claim left behind
    loss_one, loss_two = (RunConfig.read(r).metrics["train_loss"] for r in (one, two))
    assert loss_two == pytest.approx(loss_one, rel=1e-5)  # the logged loss is the global batch's


def test_an_error_stops_every_process_and_is_said_once(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    done = torchrun(2, *TRAIN, "--out", str(out))
    lines = [line for line in done.stderr.splitlines() if line.startswith("dynscale:")]
    assert len(lines) == 1 and "not a dynscale run" in lines[0], done.stderr
    assert (out / "notes.txt").read_text() == "mine"


def test_a_command_that_does_not_train_is_refused_under_torchrun(tmp_path):
    assert main([*TRAIN, "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    done = torchrun(2, "sweep", str(tmp_path / "run"), "--json", str(tmp_path / "sweep.json"))
    lines = [line for line in done.stderr.splitlines() if line.startswith("dynscale:")]
    assert done.returncode != 0 and len(lines) == 1 and "run it without torchrun" in lines[0], done.stderr
    assert not (tmp_path / "sweep.json").exists()


def test_a_last_batch_smaller_than_the_process_count_is_refused_before_training(tmp_path):
    out = tmp_path / "run"
    done = torchrun(2, *TRAIN, "--train-limit", "65", "--out", str(out))  # a last batch of 1 example
    lines = [line for line in done.stderr.splitlines() if line.startswith("dynscale:")]
    assert done.returncode != 0 and len(lines) == 1 and "last batch of an epoch holds 1 example" in lines[0], lines
    assert not out.exists()


def test_a_stray_world_size_is_one_line_not_a_traceback():
    env = {**os.environ, "WORLD_SIZE": "abc"}
    done = subprocess.run([sys.executable, "-m", "dynscale", "list"], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "WORLD_SIZE='abc'" in done.stderr


def test_augmentation_does_not_depend_on_the_process_count():
    from dynscale.data.augment import Augment

    x = torch.rand(10, 3, 8, 8)
    augment = Augment(padding=2, flip=True)
    whole = augment(x, torch.Generator().manual_seed(7))
    for rank in range(3):  # three processes' shares of one global batch of 10
        share = augment(x[rank::3], torch.Generator().manual_seed(7), (rank, 3, 10))
        torch.testing.assert_close(share, whole[rank::3])


def test_a_run_resumes_across_a_changed_process_count(tmp_path):
    straight = worker.trainer()
    straight.fit()
    want = {k: v.clone() for k, v in straight.model.state_dict().items()}

    # paused in two processes, finished in one
    paused = torchrun(2, str(WORKER), "pause", str(tmp_path / "two.state"), module=False)
    assert paused.returncode == 0, paused.stderr
    state, _ = load_state(tmp_path / "two.state")
    assert state["step"] == worker.PAUSE_AT
    resumed = worker.trainer()
    resumed.load_state_dict(state)
    resumed.fit()
    assert_close(resumed.model.state_dict(), want)

    # paused in one process, finished in two
    one = worker.trainer()
    one.fit(max_steps=worker.PAUSE_AT)
    save_state(tmp_path / "one.state", one.state_dict(), {})
    finished = torchrun(2, str(WORKER), "resume", str(tmp_path / "one"), module=False)
    assert finished.returncode == 0, finished.stderr
    assert_close(load_file(str(tmp_path / "one")), want)


def test_calibration_statistics_are_all_reduced_across_processes(tmp_path):
    done = torchrun(2, str(WORKER), "calibrate", str(tmp_path / "stats"), module=False)
    assert done.returncode == 0, done.stderr
    got, want = load_file(str(tmp_path / "stats")), worker.calibrated(str(tmp_path / "unused"))
    assert any("calib_mean" in k for k in want)
    assert_close(got, want, atol=1e-5)


def test_batch_size_is_the_global_batch_in_the_config_json(tmp_path):
    out = tmp_path / "run"
    assert main([*TRAIN, "--epochs", "1", "--batch-size", "50", "--out", str(out)]) == 0
    record = json.loads((out / "config.json").read_text())["training"]["execution"]
    assert record["global_batch"] == record["process_batch"] == 50 and record["world_size"] == 1
    metrics = RunConfig.read(out).metrics  # training alone, without the evaluation
    assert metrics["examples_per_second"] > 1437 / metrics["train_seconds"]


@pytest.mark.slow
@pytest.mark.parametrize("command", [
    ["train", "--model", "mlp", "--profiles", "0-0.3,0.3-1.0", "--epochs", "1"],
    ["train", "--model", "mlp", "--recipe", "independent", "--family-widths", "0.5,1.0", "--epochs", "1"],
    ["adaptive", "train", "--model", "mlp", "--exits", "layers.1", "--epochs", "1"],
    ["dfs", "train", "--target", "50", "--pretrain-epochs", "1", "--gate-epochs", "1", "--joint-epochs", "1",
     "--width-mult", "0.25", "--train-limit", "256"],
], ids=["multi-profile", "independent", "early-exit", "dfs"])
def test_every_training_command_runs_under_torchrun(command, tmp_path):
    out = tmp_path / "run"
    done = torchrun(2, *command, "--data", "digits", "--quiet", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert RunConfig.read(out).training["execution"]["world_size"] == 2
    assert done.stdout.count("wrote") == 1


def test_switchable_batchnorm_trains_under_torchrun(tmp_path):
    """Each process's last (synced) backward pass runs one width: the other widths' private
    batch-norm has no gradient in it, which DDP must be told to expect."""
    out = tmp_path / "switchable"
    done = torchrun(2, "train", "--model", "vgg16", "--width-mult", "0.0625", "--data", "digits", "--recipe", "us",
                    "--batchnorm", "switchable", "--epochs", "1", "--train-limit", "256", "--quiet", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert any(name.endswith("switch_weight_02500") for name in weights(out))
