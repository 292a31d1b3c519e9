"""Nothing lost: a training killed at any moment resumes to the weights an uninterrupted one
ends with; a diverging training stops with a message and keeps its last good state."""

import json
import os
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file

from dynscale.cli import main
from dynscale.runs import RunConfig
from dynscale.train import load_state

from test_cli import EXE

# Long enough (about 100 steps a second) to be stopped mid-epoch: 63 steps per epoch.
TRAIN = ["train", "--data", "synthetic", "--set", "hidden=[256,256]", "--epochs", "12", "--batch-size", "16",
         "--seed", "3", "--checkpoint-every", "5", "--threads", "1", "--quiet"]


def start(out, *extra):
    return subprocess.Popen([EXE, *TRAIN, "--out", str(out), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_state(state_dir, proc, at_least_step=20, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"training ended before it could be stopped: {proc.communicate()}"
        try:
            state, _ = load_state(state_dir)
            if state["epoch"] * 63 + state["epoch_step"] >= at_least_step:
                return state
        except Exception:  # not written yet
            pass
        time.sleep(0.05)
    raise AssertionError("no training state appeared")


def weights(run):
    return load_file(str(run / "model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(uninterrupted, tmp_path):
    out = tmp_path / "run"
    proc = start(out)
    state = wait_for_state(tmp_path / "run.resume", proc, at_least_step=70)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # a run appears only when finished
    state, _ = load_state(tmp_path / "run.resume")
    assert state["epoch_step"] % 63 != 0 or state["epoch"] > 0
    resumed = subprocess.run([EXE, *TRAIN, "--out", str(out), "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    got, want = weights(out), weights(uninterrupted)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert not (tmp_path / "run.resume").exists()  # the state is gone once the run is written
    assert RunConfig.read(out).metrics["test_accuracy"] == RunConfig.read(uninterrupted).metrics["test_accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_save_the_state_and_say_how_to_resume(sig, uninterrupted, tmp_path):
    out = tmp_path / "run"
    proc = start(out)
    wait_for_state(tmp_path / "run.resume", proc, at_least_step=10)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "saved in" in err and "--resume" in err and err.strip().count("\n") == 0
    state, _ = load_state(tmp_path / "run.resume")
    assert 0 < state["epoch"] * 63 + state["epoch_step"] < 12 * 63
    assert main([*TRAIN, "--out", str(out), "--resume"]) == 0
    got, want = weights(out), weights(uninterrupted)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_an_unfinished_training_is_neither_lost_nor_resumed_with_other_settings(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", "synthetic", "--epochs", "3", "--set", "hidden=[8]", "--quiet", "--out", str(out)]
    from dynscale.data import make_synthetic
    from dynscale.idp import IDP, train_run
    from dynscale.train import TrainConfig, Trainer

    # Stop one after 20 steps by hand, as a signal would.
    original = Trainer.checkpoint

    def stop_at_20(self):
        original(self)
        if self.step >= 20:
            self.request_stop()

    Trainer.checkpoint = stop_at_20
    try:
        assert main([*args, "--checkpoint-every", "10"]) == 130
    finally:
        Trainer.checkpoint = original
    assert "saved in" in capsys.readouterr().err
    assert main(args) == 2  # without --resume or --force the state would be lost
    assert "--resume" in capsys.readouterr().err
    assert main([*args[:-2], "--lr", "0.1", "--out", str(out), "--resume"]) == 2
    assert "saved with other settings (training.lr: 0.05 then, 0.1 now)" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert not (tmp_path / "run.resume").exists()
    # The same training, uninterrupted, in the Python API:
    data = make_synthetic()
    train_run(tmp_path / "straight", "mlp", data, TrainConfig(epochs=3), IDP(), {"hidden": [8]}, progress=False)
    got, want = weights(out), weights(tmp_path / "straight")
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_divergence_stops_training_and_keeps_the_last_good_state(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", "synthetic", "--epochs", "3", "--lr", "1e6", "--momentum", "0.99",
                 "--checkpoint-every", "2", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0
    assert "became" in err and "at epoch 1, step" in err and "lower the learning rate (--lr, now 1e+06)" in err
    assert "the last good state" in err and "run.resume" in err
    assert not out.exists()
    state, _ = load_state(tmp_path / "run.resume")
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_nan_is_never_written_as_json(tmp_path):
    from dynscale.files import dumps_json

    with pytest.raises(ValueError, match="non-finite number"):
        dumps_json({"a": [1.0, float("nan")]})
    run = tmp_path / "run"
    assert main(["train", "--data", "synthetic", "--epochs", "1", "--quiet", "--out", str(run)]) == 0
    assert main(["sweep", str(run), "--quiet", "--json", str(tmp_path / "s.json")]) == 0
    written = list(tmp_path.rglob("*.json"))
    assert len(written) == 2

    def refuse(constant):
        raise AssertionError(f"a JSON file holds {constant}")

    for path in written:
        json.loads(path.read_text(), parse_constant=refuse)


def test_a_state_with_optimizer_schedule_and_rng_round_trips(tmp_path):
    from dynscale import get_model
    from dynscale.data import make_synthetic
    from dynscale.idp import IDP
    from dynscale.train import TrainConfig, Trainer, save_state

    for optimizer, schedule in (("sgd", "step"), ("adam", "cosine")):
        trainer = Trainer(get_model("mlp", in_channels=1, input_size=8, hidden=[8]), make_synthetic(),
                          TrainConfig(epochs=2, optimizer=optimizer, schedule=schedule), IDP(), progress=False)
        trainer.fit(max_steps=5)
        state = trainer.state_dict()
        save_state(tmp_path / optimizer, state, {"what": optimizer})
        loaded, meta = load_state(tmp_path / optimizer)
        assert meta == {"what": optimizer}
        assert loaded["schedule"] == state["schedule"]
        assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
        for key, value in state["optimizer"]["state"].items():
            for name, tensor in value.items():
                assert torch.equal(loaded["optimizer"]["state"][key][name], tensor)
        assert torch.equal(loaded["recipe_rng"], state["recipe_rng"])
        assert sorted(os.listdir(tmp_path / optimizer)) == ["state.json", "state.safetensors"]  # no pickle
