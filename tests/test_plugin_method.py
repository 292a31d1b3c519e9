"""The proof that a method is a plugin: a method defined in the tests folder (random block
skipping, ``plugin_blockskip.py``) registers itself, then trains, sweeps, ``info``s and ``pick``s
through the command line, with no line of ``dynscale`` changed; its registration is undone."""

import json

import plugin_blockskip
import pytest

from dynscale.cli import build_parser, main
from dynscale.methods import list_methods
from dynscale.runs import list_kinds
from dynscale.train import list_recipes


@pytest.fixture
def block_skip():
    undo = plugin_blockskip.register()
    try:
        yield
    finally:
        undo()


def test_a_plugin_method_trains_sweeps_infos_and_picks_through_the_command_line(block_skip, tmp_path, capsys):
    run = tmp_path / "skip"
    assert main(["skip", "train", "--data", "synthetic", "--width-mult", "0.25", "--set", "blocks_per_stage=2",
                 "--epochs", "1", "--train-limit", "200", "--drop", "0.3", "--seed-order", "1", "--out",
                 str(run)]) == 0
    assert f"wrote {run}" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "block-skip" and config["recipe"] == {"name": "block-drop", "drop": 0.3}
    assert len(config["section"]["order"]) == 4  # the identity blocks: stage 1 keeps its width

    report = tmp_path / "skip.json"
    assert main(["skip", "sweep", str(run), "--json", str(report)]) == 0
    assert "skipped |" in capsys.readouterr().out
    (curve,) = json.loads(report.read_text())["curves"]
    macs = [p["macs"] for p in curve["points"]]
    assert [p["knobs"]["skipped"] for p in curve["points"]] == [0, 1, 2, 3, 4] and macs == sorted(macs, reverse=True)

    assert main(["info", str(run)]) == 0
    assert "skips:" in capsys.readouterr().out
    assert main(["pick", str(run), "--macs-ratio", "0.9"]) == 0  # measured now, by the plugin's own points
    assert "expected accuracy" in capsys.readouterr().out
    assert main(["pick", "skip", "--sweep", str(report), "--macs-ratio", "0.9"]) == 0
    assert "block-skip skip" in capsys.readouterr().out
    assert "skip " in (main(["list"]), capsys.readouterr().out)[1]

    # Its settings schema is checked on load, with the file and the field named.
    config["section"]["order"] = config["section"]["order"][:1] * 2
    (run / "config.json").write_text(json.dumps(config))
    assert main(["skip", "sweep", str(run)]) == 2
    err = capsys.readouterr().err
    assert "config.json: section.order lists a value twice" in err and len(err.strip().splitlines()) == 1
    # Another method's command refuses it by its kind, naming the command that takes it.
    assert main(["sweep", str(run)]) == 2
    assert "a block-skip run, not a width run" in capsys.readouterr().err


def test_the_registration_is_undone():
    assert "skip" not in [m.name for m in list_methods()]
    assert "block-skip" not in list_kinds() and "block-drop" not in list_recipes()
    assert "skip" not in build_parser()._subparsers._group_actions[0].choices
