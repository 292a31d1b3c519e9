import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import dynscale
from dynscale import get_model, set_width
from dynscale.errors import CheckpointError
from dynscale.files import atomic_directory, atomic_write
from dynscale.runs import RunConfig, create_model, list_kinds, load_run, save_run

from conftest import FIXTURES

V1_RUNS = ["width-mlp", "multi-profile", "independent", "us-vgg", "random-vgg", "early-exit", "custom-profile"]


def test_round_trip_gives_identical_outputs(mlp_run, synthetic):
    run = load_run(mlp_run)
    assert run.model_name == "mlp" and run.data == "synthetic" and run.profile == "linear" and run.kind == "width"
    assert run.config.training["seed"] == 0 and "test_accuracy" in run.metrics
    assert run.config.recipe == {"name": "idp", "cut": "full", "profile_gradient": "chain"}
    again = load_run(mlp_run)
    x = synthetic.test_x[:8]
    for p in (1.0, 0.5):
        set_width(run.model, p)
        set_width(again.model, p)
        torch.testing.assert_close(run.model(x), again.model(x), rtol=0, atol=0)


def test_weights_are_safetensors_and_config_is_typed_json(mlp_run):
    raw = (mlp_run / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])
    assert "layers.0.weight" in header and "layers.0.profile" in header
    doc = json.loads((mlp_run / "config.json").read_text())
    assert doc["schema_version"] == 2 and doc["kind"] == "width"
    assert doc["model"]["config"]["hidden"] == [32, 32]
    assert RunConfig.from_json(doc) == RunConfig.read(mlp_run)


@pytest.mark.parametrize("name", V1_RUNS)
def test_run_directories_of_the_previous_release_still_load(name):
    # tests/fixtures/v1 was written by dynscale 0.1 (schema version 1), with the logits its
    # models gave on the inputs in expected.safetensors.
    run = load_run(FIXTURES / "v1" / name)
    expected = load_file(str(FIXTURES / "v1" / "expected.safetensors"))
    x = expected["x"]
    with torch.no_grad():
        if run.kind == "early-exit":
            for i, out in enumerate(run.model(x)):
                torch.testing.assert_close(out, expected[f"{name}@{i}"], rtol=1e-5, atol=1e-6)
            assert run.config.section["exits"] == ["layer1"] and run.config.holdout == 30
            assert run.config.recipe["name"] == "early-exit"
        elif name == "custom-profile":
            assert run.config.profile == "custom"
            assert run.model.layers[2].profile[1].item() == pytest.approx(0.25)
        else:
            for w in (0.5, 1.0):  # (not bit-equal: convolutions sum in another order on other thread counts)
                with dynscale.width(run.model, w):
                    torch.testing.assert_close(run.model(x), expected[f"{name}@{w}"], rtol=1e-5, atol=1e-6)
    migrated = {"width-mlp": "idp", "multi-profile": "multi-profile", "independent": "independent", "us-vgg": "us",
                "random-vgg": "idp"}
    if name in migrated:
        assert run.config.recipe["name"] == migrated[name]
        assert "cut" not in run.config.training and "recipe" not in run.config.training


def test_every_kind_of_run_loads_through_one_function(tmp_path, synthetic):
    from dynscale.adaptive import Cascade, EarlyExitNet
    from dynscale.dfs import DFSNet
    from dynscale.effort import EffortNet
    from dynscale.export import dense
    from dynscale.models import build_multi_profile

    torch.manual_seed(0)
    mlp = get_model("mlp", in_channels=1, input_size=8, hidden=[8])
    vgg = get_model("vgg16", in_channels=1, input_size=8, width_mult=0.0625)
    models = {"width": mlp, "multi": build_multi_profile("mlp", [(0, 0.5), (0.5, 1)], in_channels=1, input_size=8,
                                                          hidden=[8, 8]),
              "early-exit": EarlyExitNet(vgg, ["block2"]), "cascade": Cascade([mlp, vgg], names=["m", "v"]),
              "dense": dense(vgg, 0.5), "effort": EffortNet(vgg),
              "dfs": DFSNet(get_model("resnet", in_channels=1, input_size=8, width_mult=0.25, blocks_per_stage=1))}
    x = synthetic.test_x[:4]
    assert set(list_kinds()) == {"width", "early-exit", "cascade", "dense", "effort", "dfs"}
    for name, model in models.items():
        save_run(tmp_path / name, model, "synthetic", kind="dense" if name == "dense" else None)
        run = load_run(tmp_path / name)
        assert type(run.model) is type(model)
        assert run.kind == {"multi": "width"}.get(name, name)
        if name != "cascade":
            with torch.no_grad():
                got, want = run.model(x), model.eval()(x)
            for a, b in zip(got if isinstance(got, list) else [got], want if isinstance(want, list) else [want],
                            strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert type(create_model(run.config)) is type(model)
    cascade = load_run(tmp_path / "cascade")
    assert cascade.model.names == ["m", "v"] and cascade.model.successors == [[1], []]
    assert cascade.config.model is None and len(cascade.config.section["members"]) == 2


def test_custom_profile_round_trips_through_the_weights(tmp_path):
    model = get_model("mlp", input_size=4, hidden=[6], profile=lambda n: [1.0 / (i + 1) ** 2 for i in range(n)])
    save_run(tmp_path / "r", model, "synthetic")
    loaded = load_run(tmp_path / "r").model
    torch.testing.assert_close(loaded.layers[2].profile, model.layers[2].profile)


def test_a_run_directory_holds_exactly_its_two_files(mlp_run):
    assert sorted(p.name for p in mlp_run.iterdir()) == ["config.json", "model.safetensors"]


def test_a_nan_is_refused_before_anything_is_written(tmp_path):
    model = get_model("mlp", input_size=4, hidden=[6])
    with pytest.raises(ValueError, match="non-finite number.*metrics.loss"):
        save_run(tmp_path / "r", model, "synthetic", metrics={"loss": float("nan")})
    assert not (tmp_path / "r").exists() and list(tmp_path.iterdir()) == []


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


def test_a_failed_directory_write_keeps_the_previous_run_whole(mlp_run, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(mlp_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}

    def broken(directory):
        (directory / "model.safetensors").write_bytes(b"new weights")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_directory(run, broken)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_files_follow_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        save_run(tmp_path / "r", get_model("mlp", input_size=4, hidden=[6]), "synthetic")
    finally:
        os.umask(old)
    assert (tmp_path / "r" / "config.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "r").stat().st_mode & 0o777 == 0o755


def copy_run(src, dst):
    shutil.copytree(src, dst)
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
    ('{"format": "dynscale-run", "schema_version": 99}', "format version 99"),
    ('{"format": "dynscale-run", "schema_version": 2, "kind": "width"}', "incomplete"),
    ('{"format": "dynscale-run", "schema_version": 2, "kind": "hologram", "model": null, "data": "x"}',
     "unknown run kind 'hologram'"),
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
