import copy
import json
from pathlib import Path

import pytest

from dynscale.device import Execution
from dynscale.errors import DataError
from dynscale.models import list_models
from dynscale.reproduce import check_paper_data, load_plan, plan_mode, reproduce, run_settings
from dynscale.runs import RunConfig

from cifar_files import place_archive
from test_bad_input import run


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


# --- the paper's own size: reproduce idp --full ---------------------------------------------------

@pytest.fixture
def no_cifar(monkeypatch, tmp_path):
    """A machine without CIFAR: no $DYNSCALE_DATA, an empty cache, no mirror."""
    monkeypatch.delenv("DYNSCALE_DATA", raising=False)
    monkeypatch.delenv("DYNSCALE_MIRROR", raising=False)
    monkeypatch.setenv("DYNSCALE_CACHE", str(tmp_path / "cache"))


def test_the_paper_plan_is_vgg16_at_full_width_on_cifar10_with_both_profiles():
    plan = load_plan("idp", full=True)
    assert plan["data"] == "cifar10" and plan_mode(full=True) == "paper" and plan_mode() == "full"
    assert plan["widths"][0] == 0.1 and plan["widths"][-1] == 1.0 and 0.5 in plan["widths"]
    runs = plan["experiments"]["vgg16_allone_vs_linear"]["runs"]
    assert runs == ["vgg16-all-one", "vgg16-linear"]
    settings = {name: run_settings(plan, name, "paper") for name in runs}
    for spec, config, options, _ in settings.values():
        assert spec["model"] == "vgg16" and options["width_mult"] == 1.0
        assert (config.epochs, config.batch_size, config.optimizer, config.lr) == (70, 256, "sgd", 0.05)
    assert [s[2]["profile"] for s in settings.values()] == ["all-one", "linear"]
    assert settings["vgg16-all-one"][3].cut == "full" and settings["vgg16-linear"][3].cut == "random"
    assert settings["vgg16-linear"][3].profile_gradient == "straight-through"
    with pytest.raises(ValueError, match="exclude each other"):
        plan_mode(quick=True, full=True)


def test_full_without_cifar_says_in_one_line_how_to_get_it(no_cifar, tmp_path, capsys, monkeypatch):
    code, err = run(["reproduce", "idp", "--full", "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for fragment in ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "$DYNSCALE_DATA/cifar10/",
                     "DYNSCALE_MIRROR", "--device cuda", "hours"):
        assert fragment in err, err
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match="cifar-10-binary.tar.gz"):  # the Python API refuses the same way
        reproduce("idp", tmp_path / "out", full=True)
    monkeypatch.setenv("DYNSCALE_MIRROR", "http://127.0.0.1:9/")  # a mirror will be asked instead
    check_paper_data(load_plan("idp", full=True))


def test_full_and_quick_together_are_refused(tmp_path, capsys):
    code, err = run(["reproduce", "idp", "--full", "--quick", "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--quick" in err and "--full" in err
    with pytest.raises(ValueError, match="exclude each other"):
        reproduce("idp", tmp_path / "out", quick=True, full=True)
    assert not (tmp_path / "out").exists()


def test_full_selects_the_paper_plan_and_the_execution_options(no_cifar, tmp_path, capsys, monkeypatch):
    import dynscale.reproduce

    place_archive(monkeypatch, tmp_path / "data")
    calls = []
    monkeypatch.setattr(dynscale.reproduce, "reproduce", lambda *args, **kwargs: calls.append((args, kwargs)))
    monkeypatch.chdir(tmp_path)
    code, err = run(["reproduce", "idp", "--full", "--device", "cpu", "--only", "vgg16_allone_vs_linear"], capsys)
    assert code == 0, err
    (paper, out), options = calls[0]
    assert paper == "idp" and out == Path("runs/reproduce-idp-full")
    assert options["full"] and not options["quick"] and options["execution"] == Execution(device="cpu")
    code, err = run(["reproduce", "idp", "--full", "--only", "mlp_profiles"], capsys)  # a CPU-scale experiment
    assert code == 2 and "vgg16_allone_vs_linear" in err and len(calls) == 1


def test_the_paper_experiment_runs_end_to_end_on_a_tiny_cifar10(no_cifar, tmp_path, monkeypatch, capsys):
    place_archive(monkeypatch, tmp_path / "data")  # 50 training and 10 test images in the official format
    plan = copy.deepcopy(load_plan("idp", full=True))
    plan["settings"]["paper"]["vgg16"].update(epochs=1, batch_size=25, width_mult=0.125)  # seconds, not hours
    summary = reproduce(plan, tmp_path / "out", full=True, progress=False, execution=Execution(device="cpu"))
    assert set(summary) == {"vgg16_allone_vs_linear"}
    for ext in ("json", "md", "png"):
        assert (tmp_path / "out" / f"vgg16_allone_vs_linear.{ext}").stat().st_size > 0
    doc = json.loads((tmp_path / "out" / "vgg16_allone_vs_linear.json").read_text())
    assert doc["mode"] == "paper" and len(doc["curves"]) == 2
    assert all([p["knobs"]["width"] for p in c["points"]] == plan["widths"] for c in doc["curves"])
    config = RunConfig.read(tmp_path / "out" / "runs" / "vgg16-linear")
    assert config.calibrated_widths == plan["widths"] and config.recipe["cut"] == "random"
    assert config.provenance["reproduce"]["data"] == "cifar10" and config.provenance["reproduce"]["mode"] == "paper"
    assert "paper's Figure 5" in (tmp_path / "out" / "summary.md").read_text()
