"""Running a trained fractional-skipping network for real: each example takes only its chosen path.

:class:`DFSExecutor` is made from a trained :class:`~dynscale.dfs.DFSNet` whose choices the CPU
executes (skip, float32, and int8 when the network was trained with the int8 scheme). The
network's dense copy (``dynscale.export.dense``) is cut at each gated block's input and output
(``dynscale.graph``'s stage boundaries): fixed segments (the stem, the first block, the head)
run in float32 as trained, or in int8 like the int8 blocks (``fixed``); at each gated block the
gate decides on the whole batch, the batch is split by choice and each group runs its own path:

- skip: the shortcut and what follows the addition (for an identity shortcut followed by a
  ReLU of a ReLU's output, nothing at all: the input passes on);
- float32: the block's float kernels;
- int8: the block on int8 kernels (``dynscale.dfs.kernels``), calibrated on training inputs.

A batch all in one group runs without any index operation; otherwise each group is gathered
(``x[index]``, which keeps channels-last memory where ``index_select`` would not), computed and
scattered back (``index_copy_``) into the block's output. Nothing is masked: a skipped example
costs its block nothing. Spans ``dfs.gate``, ``dfs.gather``, ``dfs.kernel``, ``dfs.scatter`` and
``dfs.quantize`` (``dynscale.eval.profiling``) say where the time goes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..cost import count_macs
from ..errors import DynscaleError
from ..eval.profiling import span
from ..export import dense
from ..graph import GraphError, trace
from ..graph.nodes import is_relu
from ..schema import Str
from .blocks import BlockGraph, passes_input
from .kernels import RUNTIMES, Kernel, TorchKernel, float_kernel, has_layers, int8_kernel, ort_float
from .model import DFSNet
from .quant import FULL, INT8

DEFAULT_RUNTIME = "onnxruntime"  # the faster of the two on the benchmark's machine (docs/dfs/README.md)
FIXED = ("auto", "float32", "int8")  # how the fixed segments run (auto: int8 when a block may run in int8)


def cut_pieces(net: DFSNet, plain: nn.Module,
               example: torch.Tensor) -> list[tuple[str, nn.Module, tuple[str, bool] | None]]:
    """``plain`` (the dense copy of ``net``'s backbone) cut at every gated block's input and
    output: ``("fixed", segment, None)`` and ``("gated", block module, (name, input is a ReLU's
    output))`` in order.

    Raises:
        DynscaleError: for a gated block the network cannot be cut around.
    """
    try:
        graph = trace(plain, example)
        blocks = {b.name: b for b in graph.residual_blocks()}
        order = {n.name: i for i, n in enumerate(graph.nodes())}
        cuts_at = {b.node for b in graph.stage_boundaries()}
        ends = []
        for name in net.block_names:
            block = blocks[name]
            outside = [n.name for n in graph.nodes()[order[block.input] + 1:order[block.output] + 1]
                       if n in graph.dynamic() and not any(q == name for q, _ in
                                                            (n.meta.get("nn_module_stack") or {}).values())]
            if block.input not in cuts_at or block.output not in cuts_at or outside:
                raise DynscaleError(f"block {name!r} cannot be cut out of the network (another tensor lives "
                                    "across it); the DFS executor runs networks whose gated blocks pass one "
                                    "tensor on")
            ends.append((block.input, block.output))
        cuts = sorted(dict.fromkeys(c for pair in ends for c in pair), key=order.__getitem__)
        segments = graph.split(cuts)
    except GraphError as e:
        raise DynscaleError(f"the DFS executor cuts the network at its gated blocks: {e}") from None
    gated = {pair: i for i, pair in enumerate(ends)}
    pieces = []
    for k, segment in enumerate(segments):
        span_of = (cuts[k - 1] if k else None, cuts[k] if k < len(cuts) else None)
        if span_of in gated:
            name = net.block_names[gated[span_of]]
            pieces.append(("gated", plain.get_submodule(name), (name, is_relu(graph.node(span_of[0]), graph.gm))))
        else:
            pieces.append(("fixed", segment, None))
    return pieces


def skip_path(block: nn.Module, input_shape: tuple[int, ...], name: str, nonnegative: bool) -> nn.Module | None:
    """What a skipped example runs through a gated block: the shortcut and what follows the
    addition, or None where that passes the input on unchanged (an identity shortcut followed by
    a ReLU of a ReLU's output, ``nonnegative``)."""
    skip = BlockGraph(block, input_shape, name).skip_graph()
    return None if passes_input(skip, nonnegative) else skip


def counted_costs(net: DFSNet, chosen: torch.Tensor, int8_fixed_macs: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each example's MACs and BitOps ratio from its choices (``DFSNet.counted``), with the
    fixed segments that run in int8 (``int8_fixed_macs`` of them per example) at (8/32)² of
    their float32 BitOps."""
    macs, bitops = net.counted(chosen)
    return macs, bitops - int8_fixed_macs * (1 - (INT8 / FULL) ** 2) / net.full_macs


class DFSExecutor:
    """A trained DFSNet on real kernels, each example on its own path.

    Args:
        net: a trained network whose choices are executable (``net.executable``); its gate
            is shared (not copied), its backbone copied.
        calibration: training inputs ``(B, C, H, W)`` that calibrate the int8 kernels.
        runtime: ``torch`` (eager PyTorch, channels-last, ``torch.ao`` int8) or
            ``onnxruntime`` (a session per piece).
        threads: ONNX Runtime's intra-op threads (PyTorch's are the caller's).
        fixed: how the fixed segments (stem, first block, head: trained in float32) run:
            ``float32``, ``int8`` (statically quantized like the int8 blocks, calibrated on the
            same inputs: what a deployment that runs int8 kernels at all does with them) or
            ``auto`` (int8 when the choices hold int8, else float32).

    Attributes:
        last_choices: ``(B, gated blocks)`` the choice index of each example at each block,
            from the last call.

    Raises:
        DynscaleError: for choices the CPU does not execute (bit-widths other than 8, or 8
            simulated the paper's way), or a gated block the network cannot be cut around.
    """

    def __init__(self, net: DFSNet, calibration: Sequence[torch.Tensor], runtime: str = DEFAULT_RUNTIME,
                 threads: int = 1, fixed: str = "auto") -> None:
        if not net.executable:
            raise DynscaleError(f"choices {net.choices} ({net.quantization} quantization) are counted, not executed: "
                                "the CPU runs skip, float32 and int8 trained as int8 (dynscale dfs train --execute)")
        self.net, self.runtime = net, Str(RUNTIMES).check(runtime, "the executor's runtime")
        self.fixed = self.resolve_fixed(net, fixed)
        self.channels_last = runtime == "torch"
        self.int8_fixed_macs = 0.0  # MACs per example of the fixed segments run in int8
        batches = [self.layout(x) for x in calibration]
        with torch.no_grad():
            plain = dense(net.backbone, 1.0, batches[0][:1])
            if self.channels_last:
                plain = plain.to(memory_format=torch.channels_last)
            self.plan: list[tuple[str, object]] = []
            self.paths: list[list[Kernel | None]] = []
            self.shapes: list[tuple[int, ...]] = []
            for kind, piece, about in cut_pieces(net, plain, batches[0][:1]):
                if kind == "fixed":
                    self.plan.append(("fixed", self._fixed(piece, batches, threads)))
                else:
                    self.plan.append(("gated", len(self.paths)))
                    self.paths.append(self._paths(piece, about, batches, threads))
                batches = [piece(x) for x in batches]  # the next piece's calibration inputs, on the float path
        self.last_choices = torch.empty(0, len(self.paths), dtype=torch.long)

    @staticmethod
    def resolve_fixed(net: DFSNet, fixed: str) -> str:
        """``fixed`` with ``auto`` resolved for ``net``: int8 when its choices hold int8.

        Raises:
            ValueError: for an unknown setting.
        """
        fixed = Str(FIXED).check(fixed, "fixed (how the fixed segments run)")
        return ("int8" if INT8 in net.choices else "float32") if fixed == "auto" else fixed

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the executor's memory layout (channels-last on PyTorch, contiguous NCHW on ONNX
        Runtime); a call converts its input itself, a timed runner converts it beforehand."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else \
            x.contiguous()

    def _fixed(self, segment: nn.Module, batches: list[torch.Tensor], threads: int) -> Kernel:
        if self.fixed == "float32":
            return float_kernel(self.runtime, segment, batches, "a fixed segment of the DFS executor", threads)
        self.int8_fixed_macs += count_macs(segment, batches[0][:1])
        return int8_kernel(self.runtime, segment, batches, threads)

    def _paths(self, block: nn.Module, about: tuple[str, bool], batches: list[torch.Tensor],
               threads: int) -> list[Kernel | None]:
        """A gated block's kernel per choice (None: its input passes on unchanged); ``about`` is
        its name and whether its input is a ReLU's output."""
        name, nonnegative = about
        self.shapes.append(tuple(block(batches[0][:1]).shape[1:]))
        paths: list[Kernel | None] = []
        for bits in self.net.choices:
            if bits == 0:
                skip = skip_path(block, tuple(batches[0].shape[1:]), name, nonnegative)
                if skip is None:
                    paths.append(None)
                elif self.runtime == "onnxruntime" and has_layers(skip):
                    paths.append(ort_float(skip, batches, f"the skip path of block {name!r}", threads))
                else:
                    paths.append(TorchKernel(skip))
            elif bits == FULL:
                paths.append(float_kernel(self.runtime, block, batches, f"block {name!r}", threads))
            else:
                paths.append(int8_kernel(self.runtime, block, batches, threads))
        return paths

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        x = self.layout(x)
        state, chosen = None, []
        for kind, item in self.plan:
            if kind == "fixed":
                x = item(x)
                continue
            with span("dfs.gate"):
                choice, state = self.net.gate.choose(item, x, state)  # (B,)
            chosen.append(choice)
            x = self._block(item, x, choice)
        self.last_choices = torch.stack(chosen, 1)
        return x

    def _block(self, i: int, x: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
        """Gated block ``i`` on ``x``, each example through its ``choice`` (index into the choices)."""
        paths = self.paths[i]
        if len(x) == 1:
            path = paths[int(choice)]
            return x if path is None else path(x)
        groups = [c for c, count in enumerate(torch.bincount(choice, minlength=len(paths)).tolist()) if count]
        if len(groups) == 1:  # one group: no index operation
            path = paths[groups[0]]
            return x if path is None else path(x)
        out = torch.empty((len(x), *self.shapes[i]), dtype=x.dtype,
                          memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        for c in groups:
            with span("dfs.gather"):
                index = (choice == c).nonzero().squeeze(1)
                part = x[index]
            if paths[c] is not None:
                part = paths[c](part)
            with span("dfs.scatter"):
                out.index_copy_(0, index, part)
        return out

    def measure(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> tuple[float, float, float,
                                                                                         torch.Tensor]:
        """On ``(x, y)``: accuracy, mean MACs and mean BitOps ratio (counted from the choices, as
        :meth:`DFSNet.measure` counts them, the fixed segments in int8 at (8/32)² of theirs),
        and each example's choice index per gated block."""
        correct, chosen = 0, []
        for start in range(0, len(x), batch_size):
            logits = self(x[start:start + batch_size])
            if not torch.isfinite(logits).all():
                raise DynscaleError("the DFS executor computed non-finite logits; the network or its calibration "
                                    "is broken")
            correct += (logits.argmax(1) == y[start:start + batch_size]).sum().item()
            chosen.append(self.last_choices)
        chosen = torch.cat(chosen)
        macs, bitops = counted_costs(self.net, chosen, self.int8_fixed_macs)
        return correct / len(x), macs.mean().item(), bitops.mean().item(), chosen
