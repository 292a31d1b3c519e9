"""The README's path for a user's own network, through the command line: convert a torchvision
ResNet-18 (examples/tv_resnet18.py), fine-tune it, then DFS gates and the effort knobs on it,
and deploy it as a bundle that runs without PyTorch."""

from pathlib import Path

import pytest

from dynscale.cli import main
from dynscale.runs import RunConfig, load_run

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tv_resnet18.py"


@pytest.mark.slow
def test_a_converted_torchvision_resnet18_trains_and_takes_dfs_and_effort(torchvision, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DYNSCALE_CACHE", str(tmp_path / "cache"))  # effort tune measures its costs there
    r18, tuned = tmp_path / "r18", tmp_path / "r18-ft"
    assert main(["convert", f"{EXAMPLE}:resnet18", "--input-shape", "1,8,8", "--out", str(r18)]) == 0
    assert load_run(r18).config.model_name == "converted"
    assert main(["train", "--from", str(r18), "--data", "synthetic", "--epochs", "1", "--holdout", "100",
                 "--quiet", "--out", str(tuned)]) == 0
    assert main(["dfs", "train", "--backbone", str(tuned), "--data", "synthetic", "--target", "50",
                 "--gate-epochs", "1", "--joint-epochs", "1", "--quiet", "--out", str(tmp_path / "dfs")]) == 0
    dfs = RunConfig.read(tmp_path / "dfs")
    assert len(dfs.section["blocks"]) == 7  # ResNet-18's 8 basic blocks, all but the first gated
    assert main(["effort", "tune", str(tuned), "--max-loss", "1", "--examples", "100", "--knobs", "spet",
                 "--quiet", "--out", str(tmp_path / "effort")]) == 0
    assert main(["dfs", "sweep", str(tmp_path / "dfs"), str(tuned), "--static-bits", "8",
                 "--json", str(tmp_path / "dfs.json")]) == 0
    assert main(["effort", "sweep", str(tmp_path / "effort"), "--json", str(tmp_path / "effort.json")]) == 0
    assert (tmp_path / "dfs.json").is_file() and (tmp_path / "effort.json").is_file()


@pytest.mark.slow
def test_a_converted_torchvision_resnet18_deploys_and_runs_without_torch(torchvision, tmp_path, synthetic):
    import numpy as np
    import torch
    from test_deploy import bundle_outputs

    from dynscale.deploy import FLOAT_TOLERANCE, INT8_AGREEMENT
    from dynscale.export import dense

    r18, tuned, bundle = tmp_path / "r18", tmp_path / "r18-ft", tmp_path / "bundle"
    assert main(["convert", f"{EXAMPLE}:resnet18", "--input-shape", "1,8,8", "--out", str(r18)]) == 0
    assert main(["train", "--from", str(r18), "--data", "synthetic", "--epochs", "1", "--quiet", "--out",
                 str(tuned)]) == 0
    assert main(["deploy", str(tuned), "--out", str(bundle), "--int8", "--widths", "0.5,1", "--rounds", "1",
                 "--min-run-time", "0.001", "--calibration-batches", "2", "--quiet"]) == 0
    x = synthetic.test_x[:64]
    got = bundle_outputs(bundle, x, tmp_path)
    model = load_run(tuned).model
    with torch.no_grad():
        for w in (0.5, 1.0):
            want = dense(model, w)(x).numpy()
            assert np.abs(got[f"w{w:g}"]["logits"] - want).max() <= FLOAT_TOLERANCE * max(1.0, np.abs(want).max())
    with torch.no_grad():
        full = dense(model, 1.0)(x).numpy()
    assert (got["w1-int8"]["logits"].argmax(1) == full.argmax(1)).mean() >= INT8_AGREEMENT - 0.05
