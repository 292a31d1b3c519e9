"""Running one residual block at a bit-width per example, read from the model graph.

A block (``dynscale.graph``'s ``residual_blocks``) is a submodule whose forward adds a body
branch (the layers that are not the shortcut) to a shortcut. :class:`BlockRunner` runs the
block's own traced graph node by node: the body's convolutions (and linear layers) with weights
and input activations quantized to each example's bit-width, everything else at full
precision, the shortcut on every example, the body only on the examples that run the block
(a skipped example adds zero to its shortcut, and what follows the addition runs as usual).
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..cost import eval_mode
from ..errors import DynscaleError
from ..graph import Block, trace
from .quant import FULL, RangeTracker, quantize_weight

# In-place operations run out of place: a skipped example's shortcut may be the block's own
# input, which the gate and the other choices still read.
_OUT_OF_PLACE = {operator.iadd: operator.add, operator.imul: operator.mul, torch.relu_: torch.relu,
                 F.relu_: F.relu}
_TRACKER_NAMES = ("inputs", "middle")  # the names of runs saved before the graph (two-convolution blocks)


def _ancestors(node: fx.Node) -> set[fx.Node]:
    """The node and every node it is computed from."""
    seen, todo = {node}, [node]
    while todo:
        for a in todo.pop().all_input_nodes:
            if a not in seen:
                seen.add(a)
                todo.append(a)
    return seen


def _layer(module: nn.Module, x: torch.Tensor, bits: int, scheme: str = "uniform") -> torch.Tensor:
    """A (width-1) incomplete or plain convolution or linear layer, weights quantized to ``bits``
    in ``scheme`` (``dynscale.dfs.quant``)."""
    if bits >= FULL:
        return module(x)
    if isinstance(module, nn.Conv2d):
        weight, bias, groups = module.dense_weights() if hasattr(module, "dense_weights") else \
            (module.weight, module.bias, module.groups)
        return F.conv2d(x, quantize_weight(weight, bits, scheme), bias, module.stride, module.padding, module.dilation,
                        groups)
    weight, bias = module.dense_weights() if hasattr(module, "dense_weights") else (module.weight, module.bias)
    return F.linear(x, quantize_weight(weight, bits, scheme), bias)


class BlockGraph:
    """A residual block's own traced graph, read: its addition, the body and shortcut branches.

    Args:
        block: the block's module.
        input_shape: ``(C, H, W)`` of its input.
        name: the block's qualified name, for messages.

    Attributes:
        gm: the block's GraphModule (sharing the block's modules).
        add: the residual addition's node; ``body_arg`` and ``shortcut_arg`` its two inputs.
        body: the nodes that run only for the body.
        layers: the body's layer names (the graph's ``Block.body``), in execution order.

    Raises:
        DynscaleError: when the module does not hold exactly one residual addition of its own.
    """

    def __init__(self, block: nn.Module, input_shape: Sequence[int], name: str) -> None:
        graph = trace(block, torch.zeros(1, *input_shape))
        found = [b for b in graph.residual_blocks() if b.name == ""]
        if len(found) != 1:
            raise DynscaleError(f"block {name!r}: its module holds {len(found)} residual additions of its own; "
                                "fractional skipping gates a module that holds exactly one")
        own = found[0]
        self.gm, self.layers = graph.gm, own.body
        nodes = {n.name: n for n in self.gm.graph.nodes}
        self.add = nodes[own.add]
        body_layers = set(own.body)
        self.body_arg = next(a for a in self.add.args[:2] if any(n.op == "call_module" and n.target in body_layers
                                                                 for n in _ancestors(a)))
        self.shortcut_arg = next(a for a in self.add.args[:2] if a is not self.body_arg)
        self.body = _ancestors(self.body_arg) - _ancestors(self.shortcut_arg)

    def skip_graph(self) -> fx.GraphModule:
        """The block without its body: the shortcut, then what follows the addition, each
        operation out of place (a skipped example's input is still read by others)."""
        graph, env = fx.Graph(), {}
        for node in self.gm.graph.nodes:
            if node in self.body:
                continue
            if node is self.add:
                env[node] = env[self.shortcut_arg]
            elif node.op == "output":
                graph.output(fx.node.map_arg(node.args[0], env.__getitem__))
            elif node.op == "call_module" and type(self.gm.get_submodule(node.target)) is nn.Identity:
                env[node] = env[node.args[0]]
            elif node.op == "call_module" and type(self.gm.get_submodule(node.target)) is nn.ReLU:
                env[node] = graph.call_function(torch.relu, fx.node.map_arg(node.args, env.__getitem__))
            else:
                env[node] = copied = graph.node_copy(node, env.__getitem__)
                if copied.op == "call_function":
                    copied.target = _OUT_OF_PLACE.get(copied.target, copied.target)
                elif copied.op == "call_method" and copied.target in ("relu_", "add_", "mul_"):
                    copied.target = copied.target[:-1]
                if "inplace" in copied.kwargs:
                    copied.kwargs = {**copied.kwargs, "inplace": False}
        return fx.GraphModule(self.gm, graph, "SkipPath")


def passes_input(gm: fx.GraphModule, nonnegative: bool) -> bool:
    """Whether a skip graph returns its input unchanged: it is the input itself, or a ReLU of
    it when the input is ``nonnegative`` (a ReLU's output: ReLU twice is ReLU once)."""
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if isinstance(out, fx.Node) and out.op == "placeholder":
        return True
    relu = isinstance(out, fx.Node) and (out.op == "call_function" and out.target in (torch.relu, F.relu))
    return nonnegative and relu and len(out.args) == 1 and out.args[0].op == "placeholder" and not out.kwargs


class BlockRunner(nn.Module):
    """Runs one residual block with a bit-width per example (0 skips it: only the shortcut and
    what follows the addition run).

    One call is one pass over the batch: the shortcut on every example, the body only on the
    examples that run the block, as one batch (its batch norms normalise over them and update
    their running statistics once, from them); each body layer regroups its input by
    bit-width after its range tracker has been updated once from the whole input. Inside
    :meth:`frozen` nothing is updated.

    Args:
        block: the block's module (shared with the network).
        info: the graph's description of it (its ``input_shape`` is traced here).
        name: the block's qualified name, for messages.
        scheme: how a bit-width is simulated (``dynscale.dfs.quant.SCHEMES``).

    Raises:
        DynscaleError: when the block's own graph does not have one residual addition of a
            body holding convolutions or linear layers.
    """

    def __init__(self, block: nn.Module, info: Block, name: str, scheme: str = "uniform") -> None:
        super().__init__()
        self.block = block
        self.name = name
        self.scheme = scheme
        own = BlockGraph(block, info.input_shape, name)
        # Not a submodule: its layers are the block's own (shared), and the state dict keeps its layout.
        object.__setattr__(self, "gm", own.gm)
        self._add, self._body_arg, self._shortcut_arg, self._body = own.add, own.body_arg, own.shortcut_arg, own.body
        quantized = [t for t in own.layers if isinstance(block.get_submodule(t), (nn.Conv2d, nn.Linear))]
        if not quantized:
            raise DynscaleError(f"block {name!r}: its body has no convolution or linear layer to quantize")
        self.quantized = quantized  # body layers, in execution order
        for i, _ in enumerate(quantized):  # one range per quantized layer's input
            self.add_module(_TRACKER_NAMES[i] if i < len(_TRACKER_NAMES) else f"middle{i}", RangeTracker())
        self._frozen = False

    def trackers(self) -> list[RangeTracker]:
        """The range trackers of the quantized body layers' inputs, in their order."""
        return [getattr(self, _TRACKER_NAMES[i] if i < len(_TRACKER_NAMES) else f"middle{i}")
                for i in range(len(self.quantized))]

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Runs without touching any statistic: batch norms on their running statistics, range
        trackers on their stored ranges (one that has seen nothing is initialised), no gradient."""
        self._frozen = True
        try:
            with eval_mode(self.block), torch.no_grad():
                yield
        finally:
            self._frozen = False

    def forward(self, x: torch.Tensor, bits: torch.Tensor | int) -> torch.Tensor:  # (B, ...) -> (B, ...)
        """Args: x the block's input; bits ``(B,)`` per example, or one int for all.

        Returns: the block's output, each example at its own bit-width.
        """
        bits = torch.full((len(x),), bits, dtype=torch.long) if isinstance(bits, int) else bits
        run = (bits > 0).nonzero().squeeze(1)
        every = len(run) == len(x)
        body_bits = bits if every else bits[run]
        trackers = dict(zip(self.quantized, self.trackers(), strict=True))
        env: dict[fx.Node, object] = {}
        batch = {n for n in self.gm.graph.nodes if n.op == "placeholder"}  # nodes holding one row per example
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                env[node] = x
                continue
            if node.op == "output":
                return fx.node.map_arg(node.args[0], env.__getitem__)
            if node in self._body and not len(run):
                continue  # no example runs the body
            if node is self._add:
                shortcut, body = env[self._shortcut_arg], env.get(self._body_arg)
                if body is None:
                    env[node] = shortcut
                else:  # a skipped example adds zero to its shortcut
                    env[node] = shortcut + body if every else shortcut.index_add(0, run, body)
                batch.add(node)
                continue

            def value(a: fx.Node, node: fx.Node = node) -> object:
                v = env[a]
                # The body runs on the examples that run the block: its inputs from outside it lose the others.
                return v[run] if node in self._body and a not in self._body and a in batch and not every else v

            args = fx.node.map_arg(node.args, value)
            kwargs = fx.node.map_arg(node.kwargs, value)
            if node.op == "call_module" and node.target in trackers:
                env[node] = self._quantized(node.target, trackers[node.target], args[0], body_bits)
            else:
                env[node] = self._run(node, args, kwargs)
            if any(a in batch for a in node.all_input_nodes):
                batch.add(node)
        raise AssertionError("a traced graph ends with its output")

    def _run(self, node: fx.Node, args: tuple, kwargs: dict) -> object:
        if node.op == "get_attr":
            obj = self.gm
            for part in node.target.split("."):
                obj = getattr(obj, part)
            return obj
        if node.op == "call_module":
            module = self.gm.get_submodule(node.target)
            if type(module) is nn.ReLU:
                return torch.relu(*args)
            return module(*args, **kwargs)
        if node.op == "call_function":
            target = _OUT_OF_PLACE.get(node.target, node.target)
            if "inplace" in kwargs:
                kwargs = {**kwargs, "inplace": False}
            return target(*args, **kwargs)
        method = node.target[:-1] if node.target in ("relu_", "add_", "mul_") else node.target
        return getattr(args[0], method)(*args[1:], **kwargs)

    def _quantized(self, target: str, tracker: RangeTracker, x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        """Body layer ``target`` on ``x``, each example's input and weights at its own bit-width."""
        module = self.gm.get_submodule(target)
        widths = bits.unique().tolist()
        if self.training and (not self._frozen or not bool(tracker.seen)):
            tracker.update(x)  # once per step; a frozen pass only initialises a tracker that saw nothing
        if not bool(tracker.seen) and min(widths) < FULL:
            raise DynscaleError(f"the activation ranges of block {self.name!r} have seen no data, so every "
                                "quantized activation would be 0: train the network or calibrate it "
                                "(dynscale.dfs.calibrated) first")
        if len(widths) == 1:
            return _layer(module, tracker.quantize(x, widths[0], self.scheme), widths[0], self.scheme)
        outs = []
        for b in widths:
            index = (bits == b).nonzero().squeeze(1)
            outs.append((index, _layer(module, tracker.quantize(x[index], b, self.scheme), b, self.scheme)))
        out = outs[0][1].new_empty(len(x), *outs[0][1].shape[1:])
        for index, values in outs:
            out[index] = values
        return out
