import json

import pytest

from dynscale.models import list_models
from dynscale.reproduce import load_plan, reproduce, run_settings
from dynscale.runs import RunConfig


def test_the_idp_plan_is_complete():
    plan = load_plan("idp")
    for experiment in plan["experiments"].values():
        assert set(experiment["runs"]) <= set(plan["runs"])
    for mode in ("quick", "full"):
        for name, spec in plan["runs"].items():
            assert spec["model"] in list_models()
            run_settings(plan, name, mode)  # builds a valid TrainConfig and recipe
    assert {"mlp_profiles", "mlp_one_vs_two_profiles", "vgg16_one_vs_two_profiles"} <= set(plan["experiments"])
    assert {f"{m}_allone_vs_linear" for m in ("mlp", "vgg16", "mobilenet", "binarynet")} <= set(plan["experiments"])


def test_unknown_paper_and_experiment(tmp_path):
    with pytest.raises(ValueError, match="unknown paper"):
        load_plan("alexnet")
    with pytest.raises(ValueError, match="unknown experiment"):
        reproduce("idp", tmp_path, quick=True, only=["nope"])


TINY_PLAN = {
    "name": "tiny", "data": "synthetic", "widths": [0.25, 0.5, 1.0], "two_profiles": "0-0.5,0.5-1.0",
    "settings": {"quick": {"mlp": {"epochs": 2}, "vgg16": {"epochs": 1, "width_mult": 0.0625, "train_limit": 200}}},
    "runs": {"a": {"model": "mlp", "profile": "all-one"}, "b": {"model": "mlp", "profile": "linear", "profiles": "two"},
             "c": {"model": "vgg16", "profile": "linear", "cut": "random"}},
    "experiments": {"ab": {"title": "A vs B", "runs": ["a", "b"]}, "c": {"title": "C", "runs": ["c"]}},
}


@pytest.mark.slow
def test_reproduce_trains_sweeps_and_reuses(tmp_path, capsys):
    summary = reproduce(TINY_PLAN, tmp_path, quick=True, progress=False)
    assert set(summary) == {"ab", "c"}
    for key in ("ab", "c"):
        for ext in ("json", "md", "png"):
            assert (tmp_path / f"{key}.{ext}").stat().st_size > 0
    doc = json.loads((tmp_path / "ab.json").read_text())
    assert doc["title"] == "A vs B" and doc["mode"] == "quick"
    assert [r["curve"] for r in doc["curves"]] == [None, "profile 1 (0-0.5)", "profile 2 (0.5-1)", "envelope"]
    config = RunConfig.read(tmp_path / "runs" / "c")
    assert config.calibrated_widths == [0.25, 0.5, 1.0] and config.recipe["cut"] == "random"
    assert config.provenance["reproduce"]["data"] == "synthetic"
    assert "## A vs B" in (tmp_path / "summary.md").read_text()
    capsys.readouterr()
    reproduce(TINY_PLAN, tmp_path, quick=True, progress=False, only=["c"])
    assert "c: reusing" in capsys.readouterr().out
