"""Dynamic fractional skipping (SPEC §4): per example and per residual block, a gate chooses to
skip the block or to run it with weights and activations quantized to some bit-width.

The gate (after SkipNet) pools the block's input, projects it to a small embedding with a 1×1
convolution, feeds an LSTM shared by all blocks, and a linear layer scores the choices; the
forward pass takes the best choice (one-hot), the backward pass the softmax's gradient
(straight-through). The stem, the first block and downsampling shortcuts stay at full precision.

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

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..cost import count_macs, eval_mode
from ..errors import DynscaleError
from .quant import FULL, RangeTracker, quantize_weight

DEFAULT_CHOICES = (0, 8, 10, 12, 14, 16, FULL)  # 0 skips the block, FULL runs it at full precision
SKIPNET_CHOICES = (0, FULL)


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


def _conv(layer: nn.Module, x: torch.Tensor, bits: int) -> torch.Tensor:
    """A (width-1) incomplete or plain convolution with its weights quantized to ``bits``."""
    if bits >= FULL:
        return layer(x)
    weight, bias, groups = layer.dense_weights() if hasattr(layer, "dense_weights") else \
        (layer.weight, layer.bias, layer.groups)
    return F.conv2d(x, quantize_weight(weight, bits), bias, layer.stride, layer.padding, layer.dilation, groups)


class BlockRunner(nn.Module):
    """Runs one basic block with a bit-width per example (0 skips it: only the shortcut runs).

    One call is one pass over the batch: the shortcut runs on every example; the body only on
    the examples that run the block, as one batch (its batch norms normalise over them, and
    update their running statistics once, from them); each body convolution regroups its
    input by bit-width, after its range tracker has been updated once from the whole input.
    With ``frozen`` (a context manager), nothing is updated: batch norms use their running
    statistics and the trackers their stored ranges.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.inputs = RangeTracker()  # the block's input, quantized for conv1
        self.middle = RangeTracker()  # conv1's output, quantized for conv2
        self.name = ""  # the block's name in the network, for messages
        self._frozen = False

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

    def trackers(self) -> list[RangeTracker]:
        return [self.inputs, self.middle]

    def forward(self, x: torch.Tensor, bits: torch.Tensor | int) -> torch.Tensor:  # (B, C, H, W) -> (B, C', H', W')
        """Args: x the block's input; bits ``(B,)`` per example (or one int for all).

        Returns: the block's output per example at its bit-width.
        """
        block = self.block
        bits = torch.full((len(x),), bits, dtype=torch.long) if isinstance(bits, int) else bits
        shortcut = block.shortcut(x)  # full precision, every example
        run = (bits > 0).nonzero().squeeze(1)
        if len(run) == 0:
            return F.relu(shortcut)
        every = len(run) == len(x)
        body_bits = bits if every else bits[run]
        out = self._quantized(block.conv1, self.inputs, x if every else x[run], body_bits)
        out = F.relu(block.bn1(out))
        out = block.bn2(self._quantized(block.conv2, self.middle, out, body_bits))
        out = shortcut + out if every else shortcut.index_add(0, run, out)  # a skipped example adds 0
        return F.relu(out)

    def _quantized(self, conv: nn.Module, tracker: RangeTracker, x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        """``conv`` on ``x`` with each example's input and weights at its own bit-width."""
        widths = bits.unique().tolist()
        if self.training and (not self._frozen or not bool(tracker.seen)):
            tracker.update(x)  # once per step; a frozen pass only initialises a tracker that saw nothing
        if not bool(tracker.seen) and min(widths) < FULL:
            raise DynscaleError(f"the activation ranges of block {self.name or '?'} have seen no data, so every "
                                "quantized activation would be 0: train the network or calibrate it "
                                "(dynscale.dfs.calibrated) first")
        if len(widths) == 1:
            return _conv(conv, tracker.quantize(x, widths[0]), widths[0])
        parts = [((bits == b).nonzero().squeeze(1), b) for b in widths]
        outs = [(index, _conv(conv, tracker.quantize(x[index], b), b)) for index, b in parts]
        out = outs[0][1].new_empty(len(x), *outs[0][1].shape[1:])
        for index, values in outs:
            out[index] = values
        return out


class Gate(nn.Module):
    """Pool → 1×1 conv to an embedding → an LSTM shared by all blocks → linear → a score per choice."""

    def __init__(self, channels: Sequence[int], choices: int, embedding: int = 16, hidden: int = 16) -> None:
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(c, embedding, 1) for c in channels)
        self.lstm = nn.LSTMCell(embedding, hidden)
        self.score = nn.Linear(hidden, choices)
        # Start by running every block at full precision: the last choice scores highest.
        with torch.no_grad():
            self.score.bias.zero_()
            self.score.bias[-1] = 2.0

    def macs(self, index: int) -> int:
        """Multiply-accumulates of one gate step per example (pooling aside)."""
        projection = self.project[index].in_channels * self.project[index].out_channels
        hidden = self.lstm.hidden_size
        return projection + 4 * hidden * (self.lstm.input_size + hidden) + hidden * self.score.out_features

    def forward(self, index: int, x: torch.Tensor, state):
        pooled = F.adaptive_avg_pool2d(x, 1)  # (B, C, 1, 1)
        h, c = self.lstm(self.project[index](pooled).flatten(1), state)
        return self.score(h), (h, c)  # (B, choices)


class DFSNet(nn.Module):
    """A CIFAR-style ResNet with a fractional-skipping gate on every block but the first.

    Args:
        backbone: a registered ``resnet``/``resnet38``/``resnet74`` model (width 1).
        choices: the gate's choices: 0 skips a block, b runs it at b bits, 32 at full precision.
        embedding, hidden: the gate's sizes.

    Attributes:
        mode: ``"gated"`` (the gates decide), ``"full"`` (every block at full precision) or
            ``"static"`` (every gated block at ``static_bits``).
        last_bitops: ``(B,)`` the BitOps of the last forward relative to the full-precision
            network (differentiable in training: the cost in the loss).
        last_macs: ``(B,)`` multiply-accumulates performed (quantized ones count as one).
        last_choices: ``(B, gated blocks)`` the index of each block's choice.
    """

    def __init__(self, backbone: nn.Module, choices: Sequence[int] = DEFAULT_CHOICES, embedding: int = 16,
                 hidden: int = 16) -> None:
        super().__init__()
        if not hasattr(backbone, "layers") or not hasattr(backbone, "stem"):
            raise ValueError(f"fractional skipping takes the registered ResNets, not {type(backbone).__name__}")
        self.backbone = backbone
        self.choices = check_choices(choices)
        blocks = [block for stage in backbone.layers for block in stage]
        if len(blocks) < 2:
            raise ValueError("fractional skipping needs at least two residual blocks (the first is never gated)")
        self.runners = nn.ModuleList(BlockRunner(b) for b in blocks[1:])
        for runner, name in zip(self.runners, self.block_names, strict=True):
            runner.name = name
        self.gate = Gate([b.conv1.in_channels for b in blocks[1:]], len(self.choices), embedding, hidden)
        self.mode = "gated"
        self.static_bits = FULL
        self._measure_costs()

    @property
    def config(self):
        return self.backbone.config

    @property
    def model_name(self) -> str | None:
        return getattr(self.backbone, "model_name", None)

    @property
    def block_names(self) -> list[str]:
        """``stage.block`` of each gated block (the first block is ``1.1``)."""
        names = [f"{s + 1}.{b + 1}" for s, stage in enumerate(self.backbone.layers) for b in range(len(stage))]
        return names[1:]

    @torch.no_grad()
    def _measure_costs(self) -> None:
        with eval_mode(self.backbone):  # measuring must not move the batch norms' statistics
            self._count()

    def _count(self) -> None:
        size = self.backbone.config.input_size
        x = torch.zeros(1, self.backbone.config.in_channels, size, size)
        self.full_macs = count_macs(self.backbone, x)
        state = self.backbone.stem(x)
        first = True
        self.block_macs = []  # the two convolutions of each gated block, per example
        for stage in self.backbone.layers:
            for block in stage:
                if not first:
                    conv = count_macs(block, state) - (count_macs(block.shortcut, state)
                                                       if not isinstance(block.shortcut, nn.Identity) else 0.0)
                    self.block_macs.append(conv)
                first = False
                state = block(state)
        self.fixed_macs = self.full_macs - sum(self.block_macs)  # stem, first block, shortcuts, head
        self.gate_macs = sum(self.gate.macs(i) for i in range(len(self.runners)))

    def choice_costs(self) -> torch.Tensor:
        """``(gated blocks, choices)``: each choice's BitOps relative to the full network."""
        scale = torch.tensor([(c / FULL) ** 2 for c in self.choices])
        return torch.tensor(self.block_macs)[:, None] * scale[None] / self.full_macs

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        backbone = self.backbone
        state = backbone.stem(x)
        blocks = [block for stage in backbone.layers for block in stage]
        state = blocks[0](state)
        costs = self.choice_costs()
        b = len(x)
        bitops = torch.full((b,), self.fixed_macs / self.full_macs)
        macs = torch.full((b,), self.fixed_macs, dtype=torch.float64)
        chosen = torch.zeros(b, len(self.runners), dtype=torch.long)
        gate_state = None
        for i, runner in enumerate(self.runners):
            if self.mode != "gated":
                bits = FULL if self.mode == "full" else self.static_bits
                column = self.choices.index(bits) if bits in self.choices else None
                state = runner(state, bits)
                bitops = bitops + self.block_macs[i] * (min(bits, FULL) / FULL) ** 2 / self.full_macs
                macs += self.block_macs[i] if bits else 0.0
                chosen[:, i] = -1 if column is None else column
                continue
            scores, gate_state = self.gate(i, state, gate_state)  # (B, choices)
            choice = scores.argmax(1)
            chosen[:, i] = choice
            macs += self.gate.macs(i) + torch.tensor([self.block_macs[i] if self.choices[c] else 0.0
                                                      for c in range(len(self.choices))],
                                                     dtype=torch.float64)[choice]
            # Each example through its own choice, in one pass: the only update of the statistics.
            path = runner(state, torch.tensor(self.choices)[choice])
            if self.training:
                soft = scores.softmax(1)
                hard = F.one_hot(choice, len(self.choices)).to(soft.dtype) + soft - soft.detach()
                values = self._counterfactuals(runner, state, choice, path)  # (choices, B, ...)
                # Forward: the chosen path; backward: the softmax's gradient over every choice's
                # value (straight-through) for the gate, the chosen path's for the backbone.
                straight = (soft - soft.detach()).t()[(...,) + (None,) * (values.dim() - 2)]
                state = path + (straight * values).sum(0)
                bitops = bitops + (hard * costs[i]).sum(1) + self.gate.macs(i) / self.full_macs
            else:
                state = path
                bitops = bitops + costs[i][choice] + self.gate.macs(i) / self.full_macs
        self.last_bitops, self.last_macs, self.last_choices = bitops, macs, chosen
        return backbone.classifier(backbone.pool(state).flatten(1))

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
