"""Tuning the knobs (SPEC §2): per-layer settings searched greedily on held-out data, to save
as many multiply-accumulates as an accuracy-loss bound allows.

First every single move — one layer's knob at one level of a ladder of rising aggressiveness,
scaled to that layer's own activations — is measured alone. Then, per bound, the moves are
tried in order of MACs saved per accuracy point lost, each kept only if the network with all
kept moves still stays within the bound on the held-out data.

The loss the bound limits is one-sided: the share of held-out examples the dense network
classifies correctly and the knobs get wrong. Examples the knobs happen to fix do not pay for
others they break — a greedy search over many moves would otherwise pick the moves whose
changes cancel by chance on the held-out data, and lose far more on new data (on Fashion-MNIST
VGG-16, net accuracy held within 0.25 points on 2,000 held-out images lost 1.7 on the test split).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from ..progress import progress_bar
from .layers import EffortConv2d
from .net import EffortNet
from .settings import KNOBS, SDSS, SFMA, SPET, EffortSettings, LayerEffort

# Ladders of aggressiveness, in units of each layer's own statistics (see `layer_statistics`).
SPET_LADDER = [(0.9, 0.0), (0.75, 0.0), (0.6, 0.0), (0.5, 0.0), (0.4, 0.0), (0.25, 0.0), (0.25, 0.1)]
SDSS_LADDER = [0.05, 0.1, 0.2, 0.4, 0.8]
SFMA_LADDER = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]


@dataclass(frozen=True)
class Move:
    """One layer's knob set to one level (index into its ladder), and what it did alone."""

    layer: str
    knob: str
    level: int
    setting: object
    loss: float = 0.0  # share of the held-out examples it breaks (right when dense, wrong with it)
    saved: float = 0.0  # mean MACs per example saved


@dataclass
class Tuned:
    """The settings chosen for one loss bound, and what they did on the held-out data."""

    max_loss: float  # accuracy points
    settings: EffortSettings
    accuracy: float
    broken: float  # share of held-out examples right when dense and wrong with the settings
    macs: float
    dense_accuracy: float
    dense_macs: float


@torch.no_grad()
def evaluate(net: EffortNet, x: torch.Tensor, y: torch.Tensor, settings: EffortSettings,
             batch_size: int = 500) -> tuple[float, float]:
    """Accuracy and mean MACs per example of ``net`` with ``settings`` on ``(x, y)``."""
    net.set_settings(settings)
    correct, macs = 0, 0.0
    for start in range(0, len(x), batch_size):
        logits = net(x[start:start + batch_size])
        correct += (logits.argmax(1) == y[start:start + batch_size]).sum().item()
        macs += net.macs().sum().item()
    return correct / len(x), macs / len(x)


class StagedEvaluator:
    """Measures settings on held-out data, recomputing only from the stage a move changes.

    The network's segments (:meth:`EffortNet.segments`, cut at stage boundaries of its graph)
    run in order; the input of every segment and the MACs of every segment are kept for the
    settings last accepted, so a move in a late layer reruns only the end. The first settings
    measured are the reference whose correct examples ``broken`` counts against.
    """

    def __init__(self, net: EffortNet, x: torch.Tensor, y: torch.Tensor) -> None:
        self.net, self.x, self.y = net, x, y
        self.stages = net.segments()
        layers = net.layers
        self.stage_of = {name: next(i for i, stage in enumerate(self.stages)
                                    if any(m is layer for m in stage.modules())) for name, layer in layers.items()}
        self.settings: EffortSettings | None = None
        self.inputs: list[torch.Tensor] = []
        self.stage_macs: list[torch.Tensor] = []
        self.reference_correct: torch.Tensor | None = None  # (N,) bool
        self.broken = 0.0  # of the last measured settings

    @torch.no_grad()
    def _run(self, settings: EffortSettings, start: int) -> tuple[float, float, list, list]:
        self.net.set_settings(settings)
        inputs = self.inputs[:start + 1] if start else [self.x]
        stage_macs = self.stage_macs[:start]
        layers = self.net.layers
        h = inputs[start]
        for s in range(start, len(self.stages)):
            if s > start:
                inputs.append(h)
            h = self.stages[s](h)
            counts = [layers[n].last_macs for n, st in self.stage_of.items() if st == s]
            stage_macs.append(torch.stack(counts).sum(0) if counts else torch.zeros(len(self.x), dtype=torch.float64))
        correct = h.argmax(1) == self.y  # (N,)
        if self.reference_correct is None:
            self.reference_correct = correct
        self.broken = (self.reference_correct & ~correct).float().mean().item()
        return correct.float().mean().item(), torch.stack(stage_macs).sum(0).mean().item(), inputs, stage_macs

    def measure(self, settings: EffortSettings, changed: str | None = None, keep: bool = False) -> tuple[float, float]:
        """Accuracy and mean MACs of ``settings``, which differ from the last kept ones only in
        layer ``changed`` (None: anywhere); ``keep`` makes them the new base. ``self.broken``
        is then their share of broken examples."""
        start = self.stage_of[changed] if changed is not None and self.settings is not None else 0
        accuracy, macs, inputs, stage_macs = self._run(settings, start)
        if keep:
            self.settings, self.inputs, self.stage_macs = settings, inputs, stage_macs
        return accuracy, macs


@torch.no_grad()
def layer_statistics(net: EffortNet, x: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per layer, on ``x`` with the knobs off: the spread of its pre-activations (SPET's scale),
    the mean of its outputs (SDSS's) and the mean variance of its input windows (SFMA's)."""
    net.set_settings(EffortSettings())
    stats: dict[str, dict[str, float]] = {}

    def record(name: str, layer, inputs, output) -> None:
        (inp,) = inputs
        entry = {"output": output.abs().mean().item()}
        if isinstance(layer, EffortConv2d):
            pre = torch.nn.functional.conv2d(inp, layer.weight, layer.bias, layer.stride, layer.padding,
                                             layer.dilation, layer.groups)
            kernel = tuple(layer.weight.shape[2:])
            mean = torch.nn.functional.avg_pool2d(inp, kernel, layer.stride, layer.padding)
            square = torch.nn.functional.avg_pool2d(inp * inp, kernel, layer.stride, layer.padding)
            entry["window_variance"] = (square - mean * mean).clamp_min(0).mean().item()
        else:
            pre = torch.nn.functional.linear(inp, layer.weight, layer.bias)
        entry["pre_std"] = pre.std().item()
        stats[name] = entry

    layers = net.layers
    hooks = [layer.register_forward_hook(lambda m, i, o, n=n: record(n, m, i, o)) for n, layer in layers.items()]
    try:
        net(x)
    finally:
        for hook in hooks:
            hook.remove()
    return stats


def ladders(net: EffortNet, stats: dict[str, dict[str, float]], knobs: Sequence[str]) -> list[list[Move]]:
    """Each (layer, knob) the layer can take, as a list of moves of rising aggressiveness."""
    out = []
    for name, layer in net.layers.items():
        s = stats[name]
        options = {
            "spet": [SPET(f, t * s["pre_std"]) for f, t in SPET_LADDER],
            "sdss": [SDSS(2, a * s["output"], a * s["output"]) for a in SDSS_LADDER],
            "sfma": [SFMA(a * s.get("window_variance", 0.0)) for a in SFMA_LADDER],
        }
        for knob in knobs:
            moves = [Move(name, knob, i, setting) for i, setting in enumerate(options[knob])]
            try:
                layer.check(_with(LayerEffort(), knob, moves[-1].setting), name)
            except ValueError:
                continue  # this layer cannot take this knob (a linear layer and SDSS, the classes)
            if knob == "sfma" and not stats[name].get("window_variance"):
                continue
            out.append(moves)
    return out


def _with(effort: LayerEffort, knob: str, setting: object) -> LayerEffort:
    return replace(effort, **{knob: setting})


def _apply(settings: EffortSettings, move: Move) -> EffortSettings:
    layers = dict(settings.layers)
    layers[move.layer] = _with(layers.get(move.layer, LayerEffort()), move.knob, move.setting)
    return EffortSettings(layers)


def tune(net: EffortNet, held: tuple[torch.Tensor, torch.Tensor], max_losses: Sequence[float],
         knobs: Sequence[str] = KNOBS, progress: bool | None = None) -> list[Tuned]:
    """Searches per-layer knob settings for each accuracy-loss bound.

    Args:
        net: the effort network.
        held: held-out ``(x, y)`` the search measures on (never the test split).
        max_losses: the bounds, in points: the share of ``held`` that the dense network gets
            right and the knobs may get wrong.
        knobs: the knobs to use.
        progress: show progress bars; None shows them only on a terminal.

    Returns:
        One :class:`Tuned` per bound, in the order given; the network is left with no knobs.

    Raises:
        ValueError: for a negative or non-finite bound, or an unknown knob.
    """
    for bound in max_losses:
        if not 0 <= bound <= 100:
            raise ValueError(f"an accuracy-loss bound must be between 0 and 100 points, got {bound}")
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise ValueError(f"unknown knob {unknown[0]!r}; the knobs are {', '.join(KNOBS)}")
    x, y = held
    net.simulate()  # the search needs outputs and counts, not the sparse kernels' speed
    staged = StagedEvaluator(net, x, y)
    dense_acc, dense_macs = staged.measure(EffortSettings(), keep=True)
    stats = layer_statistics(net, x)
    measured: list[Move] = []
    all_ladders = ladders(net, stats, knobs)
    bar = progress_bar(total=sum(len(ladder) for ladder in all_ladders), progress=progress, desc="effort moves",
                       unit="move")
    for ladder in all_ladders:  # each move alone; a ladder stops at its first move past every bound
        for move in ladder:
            _, macs = staged.measure(_apply(EffortSettings(), move), move.layer)
            measured.append(replace(move, loss=staged.broken, saved=dense_macs - macs))
            bar.update()
            if staged.broken > max(max_losses) / 100:
                break
    bar.close()
    ranked = sorted((m for m in measured if m.saved > 0), key=lambda m: -m.saved / max(m.loss, 1e-4))
    results = []
    for bound in max_losses:
        settings, acc, macs, broken = EffortSettings(), dense_acc, dense_macs, 0.0
        staged.measure(settings, keep=True)
        levels: dict[tuple[str, str], int] = {}
        for move in progress_bar(ranked, progress, desc=f"bound {bound:g}", unit="move"):
            key = (move.layer, move.knob)
            # Losses nearly add up: a move that alone breaks more than the bound has left is not tried.
            if broken + move.loss > bound / 100 or levels.get(key, -1) >= move.level:
                continue
            trial = _apply(settings, move)
            trial_acc, trial_macs = staged.measure(trial, move.layer)
            if staged.broken <= bound / 100 and trial_macs < macs:
                settings, acc, macs, broken = trial, trial_acc, trial_macs, staged.broken
                staged.measure(settings, move.layer, keep=True)
                levels[key] = move.level
        results.append(Tuned(bound, settings, acc, broken, macs, dense_acc, dense_macs))
    net.set_settings(EffortSettings())
    net.simulate(False)
    return results
