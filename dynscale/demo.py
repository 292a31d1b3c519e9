"""The demo: the IDP paper's MLP on the bundled digits, all-one against linear profile."""

from __future__ import annotations

from pathlib import Path

from .data import load_dataset
from .eval import Curve, format_table, write_report
from .idp import DEFAULT_WIDTHS, sweep_runs, train_run
from .runs import check_directory, check_output
from .train import TrainConfig

DEMO_PROFILES = ("all-one", "linear")


def run_demo(out: str | Path = "runs/demo", epochs: int = 30, seed: int = 0,
             widths: list[float] | None = None, progress: bool | None = None, force: bool = False) -> list[Curve]:
    """Trains the MLP on ``digits`` with each demo profile, sweeps both, writes
    ``demo.json`` and ``demo.png`` in ``out``, and returns the curves.

    Args:
        out: output directory; each run goes in ``out/<profile>``.
        epochs: training epochs per run.
        seed: seed of both runs.
        widths: widths to sweep (default 0.1, 0.25, 0.5, 0.75, 1.0).
        progress: show progress bars; None shows them only on a terminal.
        force: replace the runs of an earlier demo in ``out``.
    """
    out = check_directory(out)
    for profile in DEMO_PROFILES:  # both checked before either trains
        check_output(out / profile, force)
    data = load_dataset("digits")
    config = TrainConfig(epochs=epochs, seed=seed)
    runs = [str(train_run(out / profile, "mlp", data, config, model_options={"profile": profile}, progress=progress,
                          force=force)) for profile in DEMO_PROFILES]
    curves = sweep_runs(runs, widths or DEFAULT_WIDTHS, progress=progress)
    write_report(curves, json=out / "demo.json", png=out / "demo.png",
                 title="IDP MLP on digits: all-one vs linear profile")
    return curves


def demo_report(curves: list[Curve], out: str | Path) -> str:
    """The text the demo prints: the side-by-side table and where its files went."""
    return f"{format_table(curves)}\n\nwrote {Path(out) / 'demo.json'} and {Path(out) / 'demo.png'}"
