import json

import pytest
import torch

from dynscale import get_model, set_width
from dynscale.checkpoint import atomic_write, load_run, save_run
from dynscale.errors import CheckpointError


def test_round_trip_gives_identical_outputs(mlp_run, synthetic):
    run = load_run(mlp_run)
    assert run.model_name == "mlp" and run.data == "synthetic" and run.profile == "linear"
    assert set(run.config) >= {"model", "profile", "data", "training", "metrics"}
    assert run.config["training"]["seed"] == 0 and "test_accuracy" in run.config["metrics"]
    again = load_run(mlp_run)
    x = synthetic.test_x[:8]
    for p in (1.0, 0.5):
        set_width(run.model, p)
        set_width(again.model, p)
        torch.testing.assert_close(run.model(x), again.model(x), rtol=0, atol=0)


def test_weights_are_safetensors_and_config_is_json(mlp_run):
    raw = (mlp_run / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])
    assert "layers.0.weight" in header and "layers.0.profile" in header
    assert json.loads((mlp_run / "config.json").read_text())["model"]["config"]["hidden"] == [32, 32]


def test_custom_profile_round_trips_through_the_weights(tmp_path):
    model = get_model("mlp", input_size=4, hidden=[6], profile=lambda n: [1.0 / (i + 1) ** 2 for i in range(n)])
    save_run(tmp_path / "r", model, "mlp", "synthetic")
    loaded = load_run(tmp_path / "r").model
    torch.testing.assert_close(loaded.layers[2].profile, model.layers[2].profile)


def test_writes_leave_no_temporary_files(mlp_run):
    assert sorted(p.name for p in mlp_run.iterdir()) == ["config.json", "model.safetensors"]


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old and good")

    def broken(path):
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old and good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def copy_run(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_truncated_weights(mlp_run, tmp_path):
    run = copy_run(mlp_run, tmp_path / "r")
    w = run / "model.safetensors"
    w.write_bytes(w.read_bytes()[: len(w.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        load_run(run)


def test_foreign_weights_file(mlp_run, tmp_path):
    run = copy_run(mlp_run, tmp_path / "r")
    (run / "model.safetensors").write_bytes(b"\x80\x04\x95 a pickle, never unpickled")
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        load_run(run)


def test_weights_that_do_not_match_the_config(mlp_run, tmp_path):
    run = copy_run(mlp_run, tmp_path / "r")
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["config"]["hidden"] = [32, 16]
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="has shape .*needs"):
        load_run(run)
    cfg["model"]["config"]["hidden"] = [32]
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match its config"):
        load_run(run)


@pytest.mark.parametrize("text, match", [
    ("{not json", "not valid JSON"),
    ('{"format": "something-else"}', "not a dynscale run config"),
    ('{"format": "dynscale-run", "version": 99}', "format version 99"),
])
def test_bad_config(mlp_run, tmp_path, text, match):
    run = copy_run(mlp_run, tmp_path / "r")
    (run / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=match):
        load_run(run)


def test_unknown_model_in_config(mlp_run, tmp_path):
    run = copy_run(mlp_run, tmp_path / "r")
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["name"] = "transformer"
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="cannot build the model: unknown model 'transformer'"):
        load_run(run)


def test_missing_run(tmp_path):
    with pytest.raises(CheckpointError, match="no run directory"):
        load_run(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_run(tmp_path)
