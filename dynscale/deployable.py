"""What a method hands ``dynscale deploy`` for one run: its pieces as plain PyTorch modules (each
becomes an ONNX graph), how they make up the operating points, and each point's PyTorch
reference and counted cost. ``dynscale.deploy`` exports, checks, times and writes them; the
method never touches a file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

INT8_SUFFIX = "-int8"


@dataclass
class GraphSpec:
    """One piece of a network, to become one ONNX graph.

    Attributes:
        module: a plain module (no width-dependent layers) in eval mode.
        example: real inputs by name (batch >= 2): the export's example, and what the graph is
            checked on against ``module``.
        outputs: the graph's output names, one per output of ``module``.
        calibration: feeds (input name -> batch) of real training inputs that calibrate a
            static int8 version ``NAME-int8``; None: the piece has no int8 version.
        int8: ``"option"`` (an int8 version with ``--int8``), ``"always"`` (the plan runs it
            in int8: a DFS block's int8 path) or ``"never"``.
    """

    module: nn.Module
    example: dict[str, torch.Tensor]
    outputs: tuple[str, ...] = ("logits",)
    calibration: list[dict[str, torch.Tensor]] | None = None
    int8: str = "never"


@dataclass
class DeployPoint:
    """One operating point: how the graphs run (the runtime's ``plan`` of it), what it costs and
    what PyTorch computes for it.

    Attributes:
        name: the point's name (``w0.5``, ``λ=0.01``).
        plan: the runtime's description of the point (graph names by role; see
            ``dynscale.runtime.plans``).
        settings: the method's own description (width, λ, threshold).
        reference: PyTorch's logits for inputs ``(N, C, H, W) -> (N, classes)``: what the
            bundle's outputs are checked against.
        count: the counted cost from what the runtime reports of each example's route (None
            for a plain network): ``route -> (MACs per example (N,), BitOps ratio (N,) or None)``.
        macs: MACs per example where they do not depend on the input.
        bitops_ratio: the counted BitOps ratio where it applies and does not depend on the input.
        precision: ``float32``, or ``int8`` for a point whose plan already runs int8 pieces.
        int8_variant: whether ``--int8`` adds the point with every graph in int8.
        eager: the fastest way to run the point in eager PyTorch, where it is not
            ``reference`` (a DFS point on PyTorch's int8 kernels): what a benchmark times the
            bundle against.
    """

    name: str
    plan: dict
    settings: dict
    reference: Callable[[torch.Tensor], torch.Tensor]
    count: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]] | None = None
    macs: float | None = None
    bitops_ratio: float | None = None
    precision: str = "float32"
    int8_variant: bool = True
    eager: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class Deployment:
    """A run, ready to deploy.

    Attributes:
        structure: the runtime plan's fixed part (``kind``: ``single``, ``graph`` or ``dfs``, and
            what that kind needs: successors, the gate's kind).
        graphs: the pieces by graph name.
        points: the operating points, float32 (``--int8`` adds int8 variants).
        full_macs: MACs per example of the full network the ratios are against.
        notes: lines for the manifest (what was left out and why).
    """

    structure: dict
    graphs: dict[str, GraphSpec]
    points: list[DeployPoint]
    full_macs: float
    notes: list[str] = field(default_factory=list)


def int8_plan(plan: object, graphs: set[str]) -> object:
    """``plan`` with every graph name of ``graphs`` replaced by its int8 version's."""
    if isinstance(plan, str):
        return plan + INT8_SUFFIX if plan in graphs else plan
    if isinstance(plan, list):
        return [int8_plan(p, graphs) for p in plan]
    if isinstance(plan, dict):
        return {k: int8_plan(v, graphs) for k, v in plan.items()}
    return plan
