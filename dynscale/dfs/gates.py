"""The gates of fractional skipping: what scores each choice of each gated block, per example.

Every gate is called once per gated block, in order, with the block's input and the state the
previous call returned: ``gate(i, x, state) -> (scores (B, choices), state)``. The forward pass
takes the best choice, the backward pass the softmax's gradient (``dynscale.dfs.model``).

- ``lstm`` (the paper's, after SkipNet; the default): pool → 1×1 convolution to an embedding
  → an LSTM cell shared by all blocks → linear.
- ``linear``: pool → a linear layer of the block's own; no recurrence.
- ``upfront``: one decision for every block, at the first gated block: pool → linear →
  ReLU → linear to a score per block and choice; later blocks read their row (no work).

Each starts by running every block at full precision: the last choice scores highest. At
inference :meth:`choose` gives each example's choice index (``argmax``; the upfront gate takes
every block's at once and hands out a column per block).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

GATES = ("lstm", "linear", "upfront")
FULL_BIAS = 2.0  # the initial score of the last choice (full precision) over the others


def _towards_full(linear: nn.Linear, choices: int) -> None:
    """Zeroes ``linear``'s bias but the last choice's of each row of ``choices`` scores."""
    with torch.no_grad():
        linear.bias.zero_()
        linear.bias.view(-1, choices)[:, -1] = FULL_BIAS


class _Choosing:
    """``choose``: the best choice per example, for inference."""

    def choose(self, index: int, x: torch.Tensor, state) -> tuple[torch.Tensor, object]:
        """``(B,)`` each example's choice index at gated block ``index``, and the next state."""
        scores, state = self(index, x, state)
        return scores.argmax(1), state


class Gate(_Choosing, nn.Module):
    """Pool → 1×1 conv to an embedding → an LSTM shared by all blocks → linear → a score per choice.

    Args:
        channels: the input channels of each gated block.
        choices: how many choices each block has.
        embedding, hidden: the projection's and the LSTM's sizes.
    """

    kind = "lstm"

    def __init__(self, channels: Sequence[int], choices: int, embedding: int = 16, hidden: int = 16) -> None:
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(c, embedding, 1) for c in channels)
        self.lstm = nn.LSTMCell(embedding, hidden)
        self.score = nn.Linear(hidden, choices)
        _towards_full(self.score, choices)

    def macs(self, index: int) -> int:
        """Multiply-accumulates of one gate step per example (pooling aside)."""
        projection = self.project[index].in_channels * self.project[index].out_channels
        hidden = self.lstm.hidden_size
        return projection + 4 * hidden * (self.lstm.input_size + hidden) + hidden * self.score.out_features

    def forward(self, index: int, x: torch.Tensor, state):  # (B, C, H, W) -> (B, choices)
        pooled = F.adaptive_avg_pool2d(x, 1)  # (B, C, 1, 1)
        h, c = self.lstm(self.project[index](pooled).flatten(1), state)
        return self.score(h), (h, c)


class LinearGate(_Choosing, nn.Module):
    """Pool → a linear layer per block → a score per choice; no state between blocks."""

    kind = "linear"

    def __init__(self, channels: Sequence[int], choices: int, embedding: int = 16, hidden: int = 16) -> None:
        super().__init__()
        self.score = nn.ModuleList(nn.Linear(c, choices) for c in channels)
        for linear in self.score:
            _towards_full(linear, choices)

    def macs(self, index: int) -> int:
        return self.score[index].in_features * self.score[index].out_features

    def forward(self, index: int, x: torch.Tensor, state):  # (B, C, H, W) -> (B, choices)
        return self.score[index](x.mean((2, 3))), None


class UpfrontGate(nn.Module):
    """One decision for every gated block, made on the first one's input: pool → linear to
    ``hidden`` → ReLU → linear to a score per block and choice. The later blocks read their
    scores from the state."""

    kind = "upfront"

    def __init__(self, channels: Sequence[int], choices: int, embedding: int = 16, hidden: int = 16) -> None:
        super().__init__()
        self.blocks, self.choices = len(channels), choices
        self.hidden = nn.Linear(channels[0], hidden)
        self.score = nn.Linear(hidden, len(channels) * choices)
        _towards_full(self.score, choices)

    def macs(self, index: int) -> int:
        return self.hidden.in_features * self.hidden.out_features + self.score.in_features * self.score.out_features \
            if index == 0 else 0

    def forward(self, index: int, x: torch.Tensor, state):  # (B, C, H, W) -> (B, choices)
        if index == 0:
            hidden = torch.relu(self.hidden(x.mean((2, 3))))  # (B, hidden)
            state = self.score(hidden).view(-1, self.blocks, self.choices)  # (B, blocks, choices)
        return state[:, index], state

    def choose(self, index: int, x: torch.Tensor, state) -> tuple[torch.Tensor, object]:
        """``(B,)`` the choice indices at block ``index``: every block's taken at the first one."""
        if index == 0:
            state = self(0, x, None)[1].argmax(2)  # (B, blocks)
        return state[:, index], state


def make_gate(kind: str, channels: Sequence[int], choices: int, embedding: int = 16, hidden: int = 16) -> nn.Module:
    """A gate of ``kind`` (one of :data:`GATES`) for blocks of ``channels`` input channels.

    Raises:
        ValueError: for an unknown kind.
    """
    classes = {cls.kind: cls for cls in (Gate, LinearGate, UpfrontGate)}
    if kind not in classes:
        raise ValueError(f"the gate is one of {', '.join(GATES)}, not {kind!r}")
    return classes[kind](channels, choices, embedding, hidden)
