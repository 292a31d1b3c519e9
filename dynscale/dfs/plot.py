"""What the gates chose: a stacked bar per block and operating point (``dfs sweep --choices-plot``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DynscaleError
from ..eval import Curve


def plot_choices(curves: Sequence[Curve], path: str | Path, title: str = "What the gates chose, per block") -> Path:
    """A stacked bar per block: the fraction of test examples that skip it or run it at each
    bit-width, one panel per gated run (its first operating point: a run executed on several
    runtimes has one per runtime), grouped by method, the budget falling from top to bottom
    within each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..files import atomic_write

    order = {id(c): i for i, c in enumerate(curves)}
    # A run executed on several runtimes chose alike on each: one panel per run (its first).
    first = {p.label: (c, p) for c in reversed(curves) for p in reversed(c.points) if "choices" in p.extra}
    points = sorted(first.values(), key=lambda cp: (order[id(cp[0])], -cp[1].bitops_ratio))  # budget falling
    if not points:
        raise DynscaleError("no gated operating point to plot the choices of; give DFS runs")
    fig, axes = plt.subplots(len(points), 1, figsize=(8, 1.9 * len(points) + 0.8), squeeze=False, sharex=True)
    labels = list(next(iter(points[0][1].extra["choices"].values())))
    colors = plt.get_cmap("viridis")(np.linspace(0, 1, len(labels)))
    colors[0] = (0.85, 0.85, 0.85, 1.0)  # skip: grey
    for ax, (curve, point) in zip(axes[:, 0], points, strict=True):
        blocks = list(point.extra["choices"])
        bottom = np.zeros(len(blocks))
        for label, color in zip(labels, colors, strict=True):
            values = np.array([point.extra["choices"][b].get(label, 0.0) for b in blocks])
            ax.bar(range(len(blocks)), values, bottom=bottom, color=color, label=label, width=0.85)
            bottom += values
        ax.set_ylabel("examples")
        ax.set_ylim(0, 1)
        ax.set_title(f"{curve.label} {point.label}: {100 * point.accuracy:.2f}%, BitOps {point.bitops_ratio:.2f}",
                     fontsize=9)
    axes[-1, 0].set_xticks(range(len(blocks)), blocks, rotation=90, fontsize=7)
    axes[-1, 0].set_xlabel("block (stage.block)")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(title, fontsize=10)
    fig.legend(handles, names, fontsize=7, ncol=len(labels), loc="lower center")
    fig.tight_layout(rect=(0, 0.35 / fig.get_figheight(), 1, 1 - 0.3 / fig.get_figheight()))
    atomic_write(Path(path), lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return Path(path)
