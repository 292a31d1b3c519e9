"""The width method's part of ``dynscale deploy``: one dense graph per width (a dense export is
one graph), each with its calibrated batch-norm statistics and the profile folded in."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..cost import count_macs
from ..deployable import Deployment, DeployPoint, GraphSpec
from ..errors import DynscaleError
from ..runs import Run

DEPLOY_WIDTHS = (0.25, 0.5, 0.75, 1.0)


def deploy(run: Run, *, calibration: Sequence[torch.Tensor], widths: Sequence[float] | None = None) -> Deployment:
    """A width run as one graph per width (a dense export: its one width).

    Args:
        run: an opened width or dense run, with its dataset.
        calibration: training inputs for the int8 graphs.
        widths: the widths to deploy (default 0.25, 0.5, 0.75, 1); a dense export has one.
    """
    from ..export import dense  # the dense copy of a width is the export's

    example = run.dataset.test_x[:8]
    feeds = [{"input": x} for x in calibration]
    if run.kind == "dense" and widths:
        raise DynscaleError(f"--widths does nothing for {run.path}, a dense export of one width; leave it out")
    if widths and len({f"{w:g}" for w in widths}) != len(set(widths)):
        raise DynscaleError(f"--widths {','.join(map(str, widths))}: two widths print the same; give each once")
    if run.kind == "dense":
        plains = {f"w{run.config.section['width']:g}": (run.model, float(run.config.section["width"]))}
    else:
        plains = {f"w{w:g}": (dense(run.model, w, example[:1]), w) for w in sorted(set(widths or DEPLOY_WIDTHS))}
    macs = {name: count_macs(plain, example[:1]) for name, (plain, _) in plains.items()}
    # Ratios are against width 1 (a dense export: its own width), counted once.
    full_macs = next((macs[n] for n, (_, w) in plains.items() if w == 1.0 or run.kind == "dense"), None)
    if full_macs is None:
        full_macs = count_macs(dense(run.model, 1.0, example[:1]), example[:1])
    graphs, points = {}, []
    for name, (plain, width) in plains.items():
        graphs[name] = GraphSpec(plain.eval(), {"input": example}, calibration=feeds, int8="option")
        points.append(DeployPoint(name, {"graph": name}, {"width": width}, reference=plain, macs=macs[name]))
    return Deployment({"kind": "single"}, graphs, points, full_macs)
