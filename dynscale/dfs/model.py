"""Dynamic fractional skipping (SPEC §4): per example and per residual block, a gate chooses to
skip the block or to run it with weights and activations quantized to some bit-width.

The residual blocks are those the model graph finds (``dynscale.graph``: any network whose
additions sum a body of layers and a shortcut, each block a submodule of its own); every one
but the first is gated. The network's own forward runs, each gated block standing in for
itself through a :class:`BlockRunner`.

The gate (``dynscale.dfs.gates``; by default the paper's, after SkipNet: pool, a 1×1
convolution to a small embedding, an LSTM shared by all blocks, a linear layer) scores the
choices; the forward pass takes the best choice (one-hot), the backward pass the softmax's
gradient (straight-through). The stem, the first block, downsampling shortcuts and everything outside
the blocks' bodies stay at full precision.

Each example runs through its own choice, in one pass per block: the shortcut on the whole
batch, the body on the examples that run the block (a skipped block costs its examples
nothing), each convolution regrouped by bit-width. That pass is the only one that updates
statistics: per training step, each batch norm's running statistics and each range tracker
move once, from the examples' own chosen paths. In training, the gate's straight-through
gradient also needs every other choice's output: those are computed as values only, with the
statistics frozen (running batch-norm statistics, stored ranges), on the examples that did not
take that choice (the chosen one is the path itself, not computed twice).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..cost import count_macs, eval_mode
from ..errors import DynscaleError
from ..graph import GraphError, trace
from .blocks import BlockRunner
from .gates import make_gate
from .quant import FULL, INT8, SCHEMES

DEFAULT_CHOICES = (0, 8, 10, 12, 14, 16, FULL)  # 0 skips the block, FULL runs it at full precision
SKIPNET_CHOICES = (0, FULL)
EXECUTE_CHOICES = (0, INT8, FULL)  # what a CPU executes: skip, int8 kernels, float32 kernels


def check_choices(choices: Sequence[int]) -> list[int]:
    """Validates a gate's choices: bit-widths from 1 to 32 (32 is full precision), 0 to skip.

    Raises:
        ValueError: for an empty list, a repeat, or a bit-width outside 0..32.
    """
    choices = list(choices)
    if len(choices) < 2:
        raise ValueError(f"a gate needs at least two choices (0 skips, 1-32 bits, 32 full), got {choices}")
    for c in choices:
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= FULL:
            raise ValueError(f"a choice is 0 (skip) or a bit-width from 1 to {FULL}, got {c!r}")
    if len(set(choices)) != len(choices):
        raise ValueError(f"each choice once, got {choices}")
    return sorted(choices)


def check_executable(choices: Sequence[int], quantization: str) -> None:
    """Validates a quantization scheme for ``choices``: ``uniform`` simulates any bit-width,
    ``int8`` only 8 bits (the choices a CPU executes: skip, int8, full precision).

    Raises:
        ValueError: for an unknown scheme, or the int8 scheme with another bit-width.
    """
    if quantization not in SCHEMES:
        raise ValueError(f"the quantization is one of {', '.join(SCHEMES)}, not {quantization!r}")
    others = [c for c in choices if c not in EXECUTE_CHOICES]
    if quantization == "int8" and others:
        raise ValueError(f"executable choices are 0 (skip), 8 (int8) and 32 (float32); {others} cannot run on "
                         "the CPU's kernels: leave them out, or train without --execute")


def executable(choices: Sequence[int], quantization: str) -> bool:
    """Whether every choice runs as it was trained on real kernels: skip and full precision
    always, 8 bits when trained with the int8 scheme."""
    return set(choices) <= set(SKIPNET_CHOICES) or (quantization == "int8" and set(choices) <= set(EXECUTE_CHOICES))


class _Gated(nn.Module):
    """Stands in for gated block ``index`` in the network's forward: the DFSNet runs it."""

    def __init__(self, net: DFSNet, index: int) -> None:
        super().__init__()
        object.__setattr__(self, "net", net)  # not a submodule: no cycle in the module tree
        self.index = index

    def forward(self, *args, **kwargs) -> torch.Tensor:
        if kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor):
            raise DynscaleError(f"block {self.net.block_names[self.index]!r} is called with other than one tensor; "
                                "fractional skipping gates blocks that take one")
        return self.net._step(self.index, args[0])


def _swapped(root: nn.Module, replacements: dict[str, nn.Module]) -> tuple[nn.Module, list[tuple[nn.Module,
                                                                                             nn.Module]]]:
    """A shallow copy of ``root`` running ``replacements`` (qualified name -> module) in place
    of its submodules: the containers on the way are copied, every other module and every
    tensor is shared, and ``root`` is unchanged. Returns it and (copy, original) pairs."""
    top = copy.copy(root)
    top._modules = dict(root._modules)
    copies = {"": (top, root)}
    for name, new in replacements.items():
        parts = name.split(".")
        parent, path = top, ""
        for part in parts[:-1]:
            path = f"{path}.{part}" if path else part
            if path not in copies:
                original = parent._modules[part]
                child = copy.copy(original)
                child._modules = dict(original._modules)
                parent._modules[part] = child
                copies[path] = (child, original)
            parent = copies[path][0]
        parent._modules[parts[-1]] = new
    return top, list(copies.values())


def config_input_shape(backbone: nn.Module) -> tuple[int, ...] | None:
    """One input's shape from the backbone's config (a registered or a converted model), or None."""
    config = getattr(backbone, "config", None)
    if hasattr(config, "input_shape"):
        return tuple(config.input_shape)
    if hasattr(config, "input_size"):
        return (config.in_channels, config.input_size, config.input_size)
    return None


def residual_blocks(backbone: nn.Module, input_shape: Sequence[int]) -> list:
    """The residual blocks of ``backbone`` the model graph finds, each a submodule of its own.

    Raises:
        DynscaleError: for a network the graph cannot trace, with fewer than two residual
            blocks, or with an addition that is not inside a submodule of its own.
    """
    try:
        blocks = trace(backbone, torch.zeros(1, *input_shape)).residual_blocks()
    except GraphError as e:
        raise DynscaleError(f"fractional skipping reads the network's residual blocks from its graph: {e}") from None
    kind = type(backbone).__name__
    if len(blocks) < 2:
        raise DynscaleError(f"{kind} has {len(blocks) or 'no'} residual block{'s' if len(blocks) != 1 else ''}; "
                            "fractional skipping gates every residual block but the first, so it needs two or more "
                            "(a ResNet, say)")
    names = [b.name for b in blocks]
    for block in blocks:
        if block.name == "":
            raise DynscaleError(f"{kind}: the residual addition {block.add!r} is not inside a submodule of its own; "
                                "fractional skipping gates a block module")
        if names.count(block.name) > 1:
            raise DynscaleError(f"{kind}: module {block.name!r} holds several residual additions; fractional "
                                "skipping gates a module per block")
    return blocks


class DFSNet(nn.Module):
    """A network with a fractional-skipping gate on every residual block but the first.

    Args:
        backbone: a network with two or more residual blocks (width 1 if it is width-scalable).
        choices: the gate's choices: 0 skips a block, b runs it at b bits, 32 at full precision.
        embedding, hidden: the gate's sizes.
        input_shape: ``(C, H, W)`` of one input (default: the backbone's ``config``).
        gate: the gate's kind (``dynscale.dfs.gates.GATES``; ``lstm`` is the paper's).
        quantization: how a bit-width is simulated (``dynscale.dfs.quant.SCHEMES``): ``uniform``
            (the paper's) or ``int8`` (as the CPU's int8 kernels compute; choices 0, 8, 32).

    Attributes:
        mode: ``"gated"`` (the gates decide), ``"full"`` (every block at full precision) or
            ``"static"`` (every gated block at ``static_bits``).
        last_bitops: ``(B,)`` the BitOps of the last forward relative to the full-precision
            network (differentiable in training).
        cost_weights: ``(choices,)`` what each choice's BitOps count for in :attr:`last_cost`
            (ones: the cost is the BitOps; a recipe may weigh int8 by the time it takes).
        last_cost: ``(B,)`` the cost of the last forward, the BitOps with each choice's counted
            at its weight (differentiable in training: the cost in the loss).
        last_macs: ``(B,)`` multiply-accumulates performed (quantized ones count as one).
        last_choices: ``(B, gated blocks)`` the index of each block's choice.

    Raises:
        DynscaleError: for a network without two residual blocks (see :func:`residual_blocks`).
        ValueError: for bad choices, an unknown gate or a quantization the choices cannot take.
    """

    def __init__(self, backbone: nn.Module, choices: Sequence[int] = DEFAULT_CHOICES, embedding: int = 16,
                 hidden: int = 16, input_shape: Sequence[int] | None = None, gate: str = "lstm",
                 quantization: str = "uniform") -> None:
        super().__init__()
        check_executable(check_choices(choices), quantization)
        input_shape = input_shape or config_input_shape(backbone)
        if input_shape is None:
            raise DynscaleError(f"give the input shape (C, H, W) of {type(backbone).__name__}")
        self.input_shape = tuple(int(d) for d in input_shape)
        self.backbone = backbone
        self.choices = check_choices(choices)
        self.quantization, self.embedding, self.hidden = quantization, embedding, hidden
        blocks = residual_blocks(backbone, self.input_shape)[1:]  # the first block is never gated
        self.blocks = blocks
        self.block_names = [b.name for b in blocks]
        self.runners = nn.ModuleList(BlockRunner(backbone.get_submodule(b.name), b, b.name, quantization)
                                     for b in blocks)
        self.gate = make_gate(gate, [b.input_shape[0] for b in blocks], len(self.choices), embedding, hidden)
        flow, pairs = _swapped(backbone, {b.name: _Gated(self, i) for i, b in enumerate(blocks)})
        object.__setattr__(self, "_flow", flow)  # not a submodule: its tensors are the backbone's
        object.__setattr__(self, "_containers", pairs)
        self.mode = "gated"
        self.static_bits = FULL
        self.cost_weights = torch.ones(len(self.choices))
        self._measure_costs(blocks)

    @property
    def config(self):
        return self.backbone.config

    @property
    def executable(self) -> bool:
        """Whether every choice runs on real kernels as trained (see :func:`executable`)."""
        return executable(self.choices, self.quantization)

    @property
    def model_name(self) -> str | None:
        return getattr(self.backbone, "model_name", None)

    @torch.no_grad()
    def _measure_costs(self, blocks: list) -> None:
        """MACs per example: the full network, each gated block's quantizable body layers, the
        rest (stem, first block, shortcuts, head) and the gates."""
        x = torch.zeros(1, *self.input_shape)
        layers = {f"{b.name}.{t}": i for i, (b, runner) in enumerate(zip(blocks, self.runners, strict=True))
                  for t in runner.quantized}
        seen: list[tuple[str, torch.Tensor]] = []  # each body layer's input, as it runs
        self.full_macs = count_macs(self.backbone, x)
        handles = [self.backbone.get_submodule(name).register_forward_hook(
            lambda module, inputs, output, name=name: seen.append((name, inputs[0]))) for name in layers]
        try:
            with eval_mode(self.backbone):  # measuring must not move the batch norms' statistics
                self.backbone(x)
        finally:
            for handle in handles:
                handle.remove()
        self.block_macs = [0.0] * len(blocks)
        for name, inputs in seen:
            self.block_macs[layers[name]] += count_macs(self.backbone.get_submodule(name), inputs)
        self.fixed_macs = self.full_macs - sum(self.block_macs)
        self.gate_macs = sum(self.gate.macs(i) for i in range(len(self.runners)))

    def choice_costs(self) -> torch.Tensor:
        """``(gated blocks, choices)``: each choice's BitOps relative to the full network."""
        scale = torch.tensor([(c / FULL) ** 2 for c in self.choices])
        return torch.tensor(self.block_macs)[:, None] * scale[None] / self.full_macs

    def counted(self, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What ``chosen`` ``(B, gated blocks)`` choice indices cost, counted as a forward in
        eval mode counts them: ``(B,)`` MACs performed and ``(B,)`` BitOps relative to the
        full-precision network (gates included)."""
        blocks = torch.arange(len(self.runners))[None]  # (1, gated blocks)
        gates = sum(self.gate.macs(i) for i in range(len(self.runners)))
        bitops = self.choice_costs()[blocks, chosen].sum(1) + (self.fixed_macs + gates) / self.full_macs
        runs = torch.tensor([float(c > 0) for c in self.choices], dtype=torch.float64)[chosen]  # (B, gated blocks)
        macs = (runs * torch.tensor(self.block_macs, dtype=torch.float64)).sum(1) + self.fixed_macs + gates
        return macs, bitops

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        for copied, original in self._containers:
            copied.training = original.training
        b = len(x)
        self._pass = {"costs": self.choice_costs(), "next": 0, "gate_state": None,
                      "bitops": torch.full((b,), self.fixed_macs / self.full_macs),
                      "cost": torch.full((b,), self.fixed_macs / self.full_macs),
                      "macs": torch.full((b,), self.fixed_macs, dtype=torch.float64),
                      "chosen": torch.zeros(b, len(self.runners), dtype=torch.long)}
        try:
            out = self._flow(x)
            if self._pass["next"] != len(self.runners):
                raise DynscaleError(f"the network ran {self._pass['next']} of its {len(self.runners)} gated blocks")
            self.last_bitops, self.last_cost, self.last_macs, self.last_choices = (
                self._pass[k] for k in ("bitops", "cost", "macs", "chosen"))
        finally:
            del self._pass
        return out

    def _step(self, i: int, state: torch.Tensor) -> torch.Tensor:
        """Gated block ``i`` on its input ``state``, in the current mode."""
        p = self._pass
        if p["next"] != i:
            raise DynscaleError(f"block {self.block_names[i]!r} ran out of order or twice; fractional skipping "
                                "gates blocks that run once each, in the order of the graph")
        p["next"] += 1
        runner = self.runners[i]
        if self.mode != "gated":
            bits = FULL if self.mode == "full" else self.static_bits
            column = self.choices.index(bits) if bits in self.choices else None
            spent = self.block_macs[i] * (min(bits, FULL) / FULL) ** 2 / self.full_macs
            p["bitops"] = p["bitops"] + spent
            p["cost"] = p["cost"] + spent * (1.0 if column is None else float(self.cost_weights[column]))
            p["macs"] += self.block_macs[i] if bits else 0.0
            p["chosen"][:, i] = -1 if column is None else column
            return runner(state, bits)
        scores, p["gate_state"] = self.gate(i, state, p["gate_state"])  # (B, choices)
        choice = scores.argmax(1)
        p["chosen"][:, i] = choice
        performed = torch.tensor([self.block_macs[i] if c else 0.0 for c in self.choices], dtype=torch.float64)
        p["macs"] += self.gate.macs(i) + performed[choice]
        # Each example through its own choice, in one pass: the only update of the statistics.
        path = runner(state, torch.tensor(self.choices)[choice])
        costs, gate = p["costs"][i], self.gate.macs(i) / self.full_macs
        weighted = costs * self.cost_weights
        if not self.training:
            p["bitops"] = p["bitops"] + costs[choice] + gate
            p["cost"] = p["cost"] + weighted[choice] + gate
            return path
        soft = scores.softmax(1)
        hard = F.one_hot(choice, len(self.choices)).to(soft.dtype) + soft - soft.detach()
        values = self._counterfactuals(runner, state, choice, path)  # (choices, B, ...)
        # Forward: the chosen path; backward: the softmax's gradient over every choice's value
        # (straight-through) for the gate, the chosen path's for the backbone.
        straight = (soft - soft.detach()).t()[(...,) + (None,) * (values.dim() - 2)]
        p["bitops"] = p["bitops"] + (hard * costs).sum(1) + gate
        p["cost"] = p["cost"] + (hard * weighted).sum(1) + gate
        return path + (straight * values).sum(0)

    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor]) -> DFSNet:
        """Sets the activation ranges from ``batches`` of inputs, each block at full precision;
        batch-norm statistics and weights are not touched. Returns the network, in eval mode."""
        mode = self.mode
        self.mode = "full"
        self.train()
        try:
            with eval_mode(self.backbone):  # batch norms on their running statistics
                for x in batches:
                    self(x)
        finally:
            self.mode = mode
        return self.eval()

    @torch.no_grad()
    def measure(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> tuple[float, float, float,
                                                                                        torch.Tensor]:
        """In eval mode, in the current ``mode``, on ``(x, y)``: accuracy, mean MACs, mean BitOps
        ratio, and each example's choice index per gated block, ``(N, gated blocks)``."""
        correct, macs, bitops, chosen = 0, 0.0, 0.0, []
        with eval_mode(self):
            for start in range(0, len(x), batch_size):
                logits = self(x[start:start + batch_size])
                correct += (logits.argmax(1) == y[start:start + batch_size]).sum().item()
                macs += self.last_macs.sum().item()
                bitops += self.last_bitops.sum().item()
                chosen.append(self.last_choices)
        return correct / len(x), macs / len(x), bitops / len(x), torch.cat(chosen)

    def _counterfactuals(self, runner: BlockRunner, state: torch.Tensor, choice: torch.Tensor,
                         path: torch.Tensor) -> torch.Tensor:
        """``(choices, B, ...)``: every choice's output, as values for the gate's gradient: the
        chosen path where an example took that choice, otherwise the block run with its
        statistics frozen (running batch-norm statistics, stored ranges: nothing updated)."""
        values = path.detach().unsqueeze(0).repeat(len(self.choices), *([1] * path.dim()))
        with runner.frozen():
            for c, bits in enumerate(self.choices):
                others = (choice != c).nonzero().squeeze(1)
                if len(others):
                    values[c, others] = runner(state[others], bits)
        return values
