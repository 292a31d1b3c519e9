import json
import subprocess

import pytest

from test_cli import EXE


@pytest.mark.slow
def test_demo_trains_both_profiles_and_linear_wins_at_low_width(tmp_path):
    proc = subprocess.run([EXE, "demo", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "all-one" in proc.stdout and "linear" in proc.stdout and "acc %" in proc.stdout
    assert (tmp_path / "demo.png").read_bytes()[:4] == b"\x89PNG"
    doc = json.loads((tmp_path / "demo.json").read_text())
    curves = {c["label"].split(" ")[0]: {p["knobs"]["width"]: p["accuracy"] for p in c["points"]}
              for c in doc["curves"]}
    assert set(curves) == {"all-one", "linear"}
    assert curves["all-one"][1.0] > 0.9 and curves["linear"][1.0] > 0.9
    for w in (0.25, 0.5):
        assert curves["linear"][w] > curves["all-one"][w] + 0.15, (w, curves)
