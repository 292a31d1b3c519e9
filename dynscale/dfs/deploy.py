"""The DFS method's part of ``dynscale deploy``: a network trained with executable choices
(skip, int8, float32: ``dfs train --execute``) as the pieces the runtime regroups: the fixed
segments, each gated block's paths (the skip path, float32 and int8 graphs) and the gate's step
per block. Beside the gated point, the full-precision network as one graph (and, with
``--int8``, its static int8 version): what a user would run instead."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..cost import count_macs
from ..deployable import INT8_SUFFIX, Deployment, DeployPoint, GraphSpec
from ..errors import DynscaleError
from ..runs import Run
from .execute import DFSExecutor, counted_costs, cut_pieces, skip_path
from .model import DFSNet
from .quant import FULL, INT8


class GateStep(nn.Module):
    """One gated block's call of the gate, as a graph: ``lstm``: ``(input, h, c) -> (scores, h,
    c)``; ``linear``: ``input -> scores``; ``upfront`` (first block only): ``input -> scores
    (B, blocks, choices)``."""

    def __init__(self, gate: nn.Module, index: int) -> None:
        super().__init__()
        self.gate, self.index = gate, index

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None, c: torch.Tensor | None = None):
        if self.gate.kind == "lstm":
            scores, (h, c) = self.gate(self.index, x, (h, c))
            return scores, h, c
        scores, state = self.gate(self.index, x, None)
        return state if self.gate.kind == "upfront" else scores


class _Lazy:
    """A callable made on its first call (the eager executor, which only a benchmark runs)."""

    def __init__(self, make) -> None:
        self.make, self.made = make, None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.made is None:
            self.made = self.make()
        return self.made(x)


def deploy(run: Run, *, calibration: Sequence[torch.Tensor]) -> Deployment:
    """A DFS run as fixed segments, gated blocks' paths and gate steps.

    Raises:
        DynscaleError: for a network whose choices are simulated (counted, not executed).
    """
    from ..export import dense  # the executor's cut of the dense copy

    net: DFSNet = run.model.eval()
    if not net.executable:
        raise DynscaleError(f"{run.path}: choices {net.choices} ({net.quantization} quantization) are simulated, so "
                            "their saving is only counted; a bundle ships executed choices: train with `dynscale dfs "
                            "train --execute` (skip, int8, float32)")
    example = run.dataset.test_x[:8]
    with torch.no_grad():
        plain = dense(net.backbone, 1.0, example[:1]).eval()
        pieces = cut_pieces(net, plain, example[:1])
    fixed_int8 = DFSExecutor.resolve_fixed(net, "auto") == "int8"
    graphs: dict[str, GraphSpec] = {}
    gated_plan, gates = [], []
    graphs["full"] = GraphSpec(plain, {"input": example}, calibration=[{"input": f} for f in calibration],
                               int8="option")
    state_h = state_c = None
    xs, feeds = example, list(calibration)
    int8_fixed_macs, block = 0.0, 0
    hidden = getattr(net.gate, "lstm", None)
    with torch.no_grad():
        for kind, module, about in pieces:
            if kind == "fixed":
                name = f"segment{len(gated_plan)}"
                graphs[name] = GraphSpec(module, {"input": xs}, calibration=[{"input": f} for f in feeds],
                                         int8="always" if fixed_int8 else "never")
                gated_plan.append(name + INT8_SUFFIX if fixed_int8 else name)
                if fixed_int8:
                    int8_fixed_macs += count_macs(module, xs[:1])
            else:
                block_name, nonnegative = about
                name = f"block{block}-{block_name}".replace(".", "-")
                graphs[name] = GraphSpec(module, {"input": xs}, calibration=[{"input": f} for f in feeds],
                                         int8="always" if INT8 in net.choices else "never")
                paths = []
                for bits in net.choices:
                    if bits == 0:
                        skip = skip_path(module, tuple(xs.shape[1:]), block_name, nonnegative)
                        if skip is None:
                            paths.append(None)
                        else:
                            graphs[name + "-skip"] = GraphSpec(skip, {"input": xs})
                            paths.append(name + "-skip")
                    else:
                        paths.append(name if bits == FULL else name + INT8_SUFFIX)
                gated_plan.append(paths)
                step = GateStep(net.gate, block)
                if net.gate.kind == "lstm":
                    if state_h is None:
                        state_h = state_c = torch.zeros(len(xs), hidden.hidden_size)
                    graphs[f"gate{block}"] = GraphSpec(step, {"input": xs, "h": state_h, "c": state_c},
                                                       ("scores", "h_next", "c_next"))
                    _, state_h, state_c = step(xs, state_h, state_c)
                    gates.append(f"gate{block}")
                elif net.gate.kind == "upfront" and block:
                    gates.append(None)  # every block's choice was made at the first
                else:
                    graphs[f"gate{block}"] = GraphSpec(step, {"input": xs}, ("scores",))
                    gates.append(f"gate{block}")
                block += 1
            xs, feeds = module(xs), [module(f) for f in feeds]

    def count(chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        macs, bitops = counted_costs(net, torch.from_numpy(chosen), int8_fixed_macs)
        return macs.numpy(), bitops.numpy()

    structure = {"kind": "dfs", "gate": net.gate.kind, "hidden": hidden.hidden_size if hidden is not None else 0,
                 "choices": list(net.choices)}
    points = [DeployPoint("gated", {"pieces": gated_plan, "gates": gates},
                          {"choices": list(net.choices), "gate": net.gate.kind,
                           "fixed": "int8" if fixed_int8 else "float32"},
                          reference=net, count=count, precision="int8" if INT8 in net.choices else "float32",
                          int8_variant=False, eager=_Lazy(lambda: DFSExecutor(net, calibration, runtime="torch"))),
              DeployPoint("full precision", {"pieces": ["full"], "gates": []}, {"gated": False}, reference=plain,
                          macs=net.full_macs, bitops_ratio=1.0)]
    return Deployment(structure, graphs, points, net.full_macs)
