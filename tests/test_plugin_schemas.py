"""Every method's settings in ``config.json`` are checked on load, by the one ``open_run``: a
hand-edited or damaged config is one line naming the file and the field (exit 2), never a wrong
figure or a Python exception; a run used with data of another kind is refused."""

import json
import shutil

import pytest

from dynscale.adaptive import train_early_exit_run
from dynscale.cli import main
from dynscale.data import make_synthetic
from dynscale.dfs import FractionalSkipping, train_dfs_run
from dynscale.effort import tune_run
from dynscale.idp import train_run
from dynscale.train import TrainConfig


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One small run of each kind (a few seconds each)."""
    root = tmp_path_factory.mktemp("schemas")
    data = make_synthetic(num_train=300, num_test=60)
    quick = TrainConfig(epochs=1, batch_size=50)
    width = train_run(root / "mlp", "mlp", data, TrainConfig(epochs=1, holdout=100), model_options={"hidden": [8, 8]},
                      progress=False)
    effort = tune_run(width, [1.0], data=data, examples=100, progress=False)
    early = train_early_exit_run(root / "ee", "mlp", data, TrainConfig(epochs=1, holdout=40), ["layer1"],
                                 model_options={"hidden": [8, 8]}, progress=False)
    dfs = train_dfs_run(root / "dfs", "resnet", data, quick, FractionalSkipping(target=50, pretrain=1, gates=0, joint=1,
                                                                                 choices=[0, 8, 32]),
                        {"width_mult": 0.25, "blocks_per_stage": 1}, progress=False)
    return {"width": width, "effort": effort, "early-exit": early, "dfs": dfs}


def _set(path: str, value):
    def edit(doc: dict) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is KeyError:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return edit


def _first_order(value):
    def edit(doc: dict) -> None:
        orders = doc["section"]["orders"]
        name = next(iter(orders))
        orders[name] = value(orders[name])
    return edit


CASES = [
    # a missing key, null, a string where a number belongs, a negative size
    ("dfs", _set("section.choices", KeyError), "section.choices is missing"),
    ("width", _set("training.epochs", None), "training.epochs takes a whole number >= 1, got None"),
    ("dfs", _set("recipe.target", "50"), "recipe.target takes a finite number, got '50'"),
    ("dfs", _set("section.embedding", -4), "section.embedding takes a whole number >= 1, got -4"),
    ("width", _set("training.lr", -0.1), "training.lr takes a finite number > 0"),
    ("width", _set("recipe.cut", "sometimes"), "recipe.cut takes one of full, random"),
    ("width", _set("recipe.name", "nope"), "recipe.name: unknown recipe 'nope'"),
    ("width", _set("recipe.sandwich", 4), "recipe.sandwich is not a setting of the idp recipe"),
    ("early-exit", _set("section.exits", []), "section.exits takes at least 1 values"),
    # inconsistent values: a target of 500%, choices that disagree between two sections
    ("dfs", _set("recipe.target", 500), "recipe.target: the target is a percentage"),
    ("dfs", _set("section.choices", [0, 16, 32]), "section.choices [0, 16, 32] and recipe.choices [0, 8, 32] disagree"),
    ("early-exit", _set("recipe.exit_weights", [1, 1, 1]), "recipe.exit_weights has 3 weights for 1 exits"),
    # an out-of-range or float index, a wrong length, a zero divisor
    ("effort", _first_order(lambda o: [*o[:-1], len(o) + 5]), "is not a permutation"),
    ("effort", _first_order(lambda o: [float(o[0]), *o[1:]]), "takes a whole number >= 0, got "),
    ("effort", _first_order(lambda o: list(range(len(o) - 1))), "section.orders does not fit the network"),
    ("effort", _set("section.tuned.0.test_macs", 0), "section.tuned[0].test_macs takes a finite number > 0, got 0"),
    ("effort", _set("section.tuned.0.max_loss", "1"), "section.tuned[0].max_loss takes a finite number"),
    ("effort", _set("section.knobs", ["spet", "warp"]), "section.knobs[1] takes one of spet, sdss, sfma"),
    ("effort", _set("section.tuned.0.settings", {"fc1": {"spet": {"fraction": 2}}}), "section.tuned[0].settings"),
]


@pytest.mark.parametrize("kind, edit, fragment", CASES, ids=[f"{k}: {f}"[:60] for k, _, f in CASES])
def test_an_edited_config_is_one_line_naming_the_file_and_the_field(runs, kind, edit, fragment, tmp_path, capsys):
    run = tmp_path / kind
    shutil.copytree(runs[kind], run)
    doc = json.loads((run / "config.json").read_text())
    edit(doc)
    (run / "config.json").write_text(json.dumps(doc))
    assert main(["info", str(run)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "internal error" not in err and "Traceback" not in err
    assert f"{run / 'config.json'}: " in lines[0] and fragment in lines[0], lines[0]


def test_every_kind_opens_unedited(runs, capsys):
    for run in runs.values():
        assert main(["info", str(run)]) == 0
    capsys.readouterr()


def test_a_run_is_not_tuned_on_data_of_another_kind(runs, capsys):
    # digits has the synthetic data's shape (1×8×8, 10 classes): only its name tells them apart.
    assert main(["effort", "tune", str(runs["width"]), "--data", "digits", "--out", str(runs["width"]) + "-x"]) == 2
    err = capsys.readouterr().err
    assert "was trained on synthetic, not digits" in err and "leave out --data" in err


def test_quantizing_baselines_without_a_resnet_run_are_refused(runs, capsys):
    for option in (["--static-bits", "8"], ["--int8"]):
        assert main(["dfs", "sweep", str(runs["dfs"]), *option]) == 2
        assert f"{option[0]} quantizes ResNet runs" in capsys.readouterr().err

