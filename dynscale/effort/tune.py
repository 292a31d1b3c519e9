"""Tuning the knobs (SPEC §2): per-layer settings searched greedily on held-out data, to save
as much measured time (or, on request, as many counted multiply-accumulates) as an
accuracy-loss bound allows.

First every single move — one layer's knob at one structural setting and one level of
aggressiveness — is measured alone. A level is a quantile of the knob's own decision
statistic on that layer's held-out activations (SPET: each filter's partial maximum; SDSS:
each grid cell's spread; SFMA: each tile's error bound), so the ladder of a layer spans the
shares of work the knob can skip there. Then, per bound and batch size, the moves are tried in
order of time saved per accuracy point lost, each kept only if the network with all kept moves
stays within the bound on the held-out data and is predicted faster.

The time of a setting is predicted per layer from the measured cost table
(:mod:`dynscale.effort.costs`) at the active fraction the knob reached on the held-out data
at that batch size (SPET computes the union of a batch's filters, so its fraction grows with
the batch); a layer whose knob cannot beat its fastest dense kernel stays dense. The batch
size enters only there: a search per batch size gives one set of settings per (bound, batch).

The loss the bound limits is one-sided: the share of held-out examples the dense network
classifies correctly and the knobs get wrong. Examples the knobs happen to fix do not pay for
others they break — a greedy search over many moves would otherwise pick the moves whose
changes cancel by chance on the held-out data, and lose far more on new data (on Fashion-MNIST
VGG-16, net accuracy held within 0.25 points on 2,000 held-out images lost 1.7 on the test split).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from ..progress import progress_bar
from .costs import CostTable, layer_seconds, measure, variants
from .kernels import batch_fraction
from .knobs import cell_spread, first_channels, sfma_tiling, spet_partial, tile_bounds
from .layers import EffortLayer
from .net import EffortNet
from .settings import KNOBS, SDSS, SFMA, SPET, EffortSettings, LayerEffort

LEVELS = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8)  # quantiles of each knob's decision statistic
STATISTICS_EXAMPLES = 256  # held-out examples the ladders are scaled on
OBJECTIVES = ("time", "macs")


@dataclass(frozen=True)
class Move:
    """One layer's knob at one structural setting and level, and what it did alone.

    Attributes:
        layer, knob: where and what.
        variant: the structural setting (SPET's fraction, SDSS's stride, SFMA's tile).
        level: index into :data:`LEVELS`.
        effort: the layer's settings with this move.
        loss: share of the held-out examples it breaks (right when dense, wrong with it).
        active: per tuned batch size, the share of the knob's work it kept on the held-out data.
        saved_macs: mean MACs per example it saves.
    """

    layer: str
    knob: str
    variant: float
    level: int
    effort: LayerEffort
    loss: float = 0.0
    active: dict[int, float] = field(default_factory=dict)
    saved_macs: float = 0.0


@dataclass
class Tuned:
    """The settings chosen for one loss bound and batch size, and what they did on the
    held-out data (``seconds``: the predicted time per batch, None when tuned for MACs)."""

    max_loss: float  # accuracy points
    batch: int
    settings: EffortSettings
    accuracy: float
    broken: float  # share of held-out examples right when dense and wrong with the settings
    macs: float
    dense_accuracy: float
    dense_macs: float
    seconds: float | None = None
    dense_seconds: float | None = None


@dataclass
class Record:
    """What one layer did on the held-out data: MACs ``(N,)`` and active units ``(N, U)`` or None."""

    macs: torch.Tensor
    active: torch.Tensor | None


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
    run in order; the input of every segment and each layer's :class:`Record` are kept for the
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
        self.kept: dict[str, Record] = {}
        self.records: dict[str, Record] = {}  # of the last measured settings
        self.reference_correct: torch.Tensor | None = None  # (N,) bool
        self.broken = 0.0  # of the last measured settings
        self._last: tuple | None = None

    @torch.no_grad()
    def _run(self, settings: EffortSettings, start: int) -> tuple[float, list, dict[str, Record]]:
        self.net.set_settings(settings)
        inputs = self.inputs[:start + 1] if start else [self.x]
        records = {n: r for n, r in self.kept.items() if self.stage_of[n] < start}
        layers = self.net.layers
        h = inputs[start]
        for s in range(start, len(self.stages)):
            if s > start:
                inputs.append(h)
            h = self.stages[s](h)
            for name in (n for n, st in self.stage_of.items() if st == s):
                records[name] = Record(layers[name].last_macs, layers[name].last_active)
        correct = h.argmax(1) == self.y  # (N,)
        if self.reference_correct is None:
            self.reference_correct = correct
        self.broken = (self.reference_correct & ~correct).float().mean().item()
        return correct.float().mean().item(), inputs, records

    def measure(self, settings: EffortSettings, changed: str | None = None, keep: bool = False) -> float:
        """Accuracy of ``settings``, which differ from the last kept ones only in layer
        ``changed`` (None: anywhere); ``keep`` makes them the new base. ``self.broken`` and
        ``self.records`` are then theirs."""
        start = self.stage_of[changed] if changed is not None and self.settings is not None else 0
        accuracy, inputs, self.records = self._run(settings, start)
        self._last = (settings, inputs)
        if keep:
            self.accept()
        return accuracy

    def accept(self) -> None:
        """Makes the last measured settings the new base (without running them again)."""
        self.settings, self.inputs = self._last
        self.kept = self.records

    @property
    def macs(self) -> float:
        """Mean MACs per example of the last measured settings."""
        return mean_macs(self.records)

    @property
    def kept_macs(self) -> float:
        """Mean MACs per example of the kept settings."""
        return mean_macs(self.kept)


def mean_macs(records: dict[str, Record]) -> float:
    """Mean MACs per example over the layers' records."""
    return torch.stack([r.macs for r in records.values()]).sum(0).mean().item()


class Objective:
    """What the search minimises at one batch size: the predicted time per batch from the
    cost table (``table``), or, without one, the counted MACs per example."""

    def __init__(self, net: EffortNet, batch: int, table: CostTable | None, threads: int) -> None:
        self.layers, self.batch, self.table, self.threads = net.layers, batch, table, threads

    def layer(self, name: str, effort: LayerEffort, record: Record | None) -> float:
        """One layer's predicted seconds per batch (0 when tuning for MACs)."""
        if self.table is None:
            return 0.0
        fraction = 1.0 if record is None or record.active is None else \
            batch_fraction(record.active, self.batch, union=effort.knob == "spet")
        return layer_seconds(self.table, self.layers[name], effort, self.batch, self.threads, fraction)

    def total(self, settings: EffortSettings, records: dict[str, Record]) -> float:
        """The network's predicted seconds per batch (its layers'), or its mean MACs."""
        if self.table is None:
            return mean_macs(records)
        return sum(self.layer(n, settings.layers.get(n, LayerEffort()), records.get(n)) for n in self.layers)

    def saving(self, move: Move) -> float:
        """What ``move`` alone saves: seconds per batch, or MACs per example."""
        if self.table is None:
            return move.saved_macs
        dense = self.layer(move.layer, LayerEffort(), None)
        knob = layer_seconds(self.table, self.layers[move.layer], move.effort, self.batch, self.threads,
                             move.active[self.batch])
        return dense - knob


def _above(value: float) -> float:
    """A threshold that lets ``value`` itself pass a strict ``<`` test (float32-safe)."""
    return max(float(value) * (1 + 1e-6), 1e-30)


def _quantiles(values: torch.Tensor) -> list[float]:
    flat = values.flatten().float()
    if flat.numel() > 1_000_000:
        flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000]]
    return torch.quantile(flat, torch.tensor(LEVELS)).tolist()


@torch.no_grad()
def _statistic(layer: EffortLayer, x: torch.Tensor, knob: str, variant: float) -> torch.Tensor | None:
    """The knob's decision statistic on the layer's input ``x`` (already in order), or None
    where it has none (a map too small for SDSS's cells)."""
    if knob == "spet":
        partial = spet_partial(layer, x, first_channels(variant, layer.in_features), layer.kernel_for(len(x)))
        return partial.amax((2, 3)) if partial.dim() == 4 else partial
    if knob == "sdss":
        coarse = layer.dense(x, grid=int(variant))
        return cell_spread(coarse) if min(coarse.shape[2:]) >= 2 else None
    return tile_bounds(layer, x, sfma_tiling(layer, x, int(variant)))[0]


def _setting(knob: str, variant: float, quantile: float) -> LayerEffort:
    if knob == "spet":
        return LayerEffort(spet=SPET(variant, max(0.0, quantile)))
    if knob == "sdss":
        return LayerEffort(sdss=SDSS(int(variant), 0.0, _above(quantile)))
    return LayerEffort(sfma=SFMA(_above(quantile), int(variant)))


@torch.no_grad()
def ladders(net: EffortNet, x: torch.Tensor, knobs: Sequence[str]) -> list[list[Move]]:
    """Each (layer, knob, structural setting) the layer can take, as moves of rising
    aggressiveness: thresholds at the :data:`LEVELS` quantiles of the knob's decision statistic
    on the layer's inputs (the dense network on ``x``)."""
    net.set_settings(EffortSettings())
    inputs: dict[str, torch.Tensor] = {}
    layers = net.layers
    hooks = [layer.register_forward_pre_hook(lambda m, args, n=n: inputs.__setitem__(n, m._ordered(args[0])))
             for n, layer in layers.items()]
    try:
        net(x)
    finally:
        for hook in hooks:
            hook.remove()
    out = []
    for name, layer in layers.items():
        for knob in knobs:
            for variant in variants(layer, knob):
                statistic = _statistic(layer, inputs[name], knob, variant)
                if statistic is None:
                    continue
                efforts = list(dict.fromkeys(_setting(knob, variant, q) for q in _quantiles(statistic)))
                out.append([Move(name, knob, variant, i, e) for i, e in enumerate(efforts) if e.active])
    return [ladder for ladder in out if ladder]


def _apply(settings: EffortSettings, move: Move) -> EffortSettings:
    """The settings with ``move``'s knob on its layer (replacing any other knob there)."""
    return EffortSettings({**settings.layers, move.layer: move.effort})


def _bound_checked(max_losses: Sequence[float], knobs: Sequence[str], batches: Sequence[int], objective: str) -> None:
    for bound in max_losses:
        if not (math.isfinite(bound) and 0 <= bound <= 100):
            raise ValueError(f"an accuracy-loss bound must be between 0 and 100 points, got {bound}")
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise ValueError(f"unknown knob {unknown[0]!r}; the knobs are {', '.join(KNOBS)}")
    if not batches or any(int(b) != b or b < 1 for b in batches):
        raise ValueError(f"batch sizes must be whole numbers >= 1, got {list(batches)}")
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose from {', '.join(OBJECTIVES)}")


def tune(net: EffortNet, held: tuple[torch.Tensor, torch.Tensor], max_losses: Sequence[float],
         knobs: Sequence[str] = KNOBS, progress: bool | None = None, batches: Sequence[int] = (1,),
         objective: str = "time", threads: int = 1, table: CostTable | None = None) -> list[Tuned]:
    """Searches per-layer knob settings for each accuracy-loss bound and batch size.

    Args:
        net: the effort network.
        held: held-out ``(x, y)`` the search measures on (never the test split).
        max_losses: the bounds, in points: the share of ``held`` that the dense network gets
            right and the knobs may get wrong.
        knobs: the knobs to use.
        progress: show progress bars; None shows them only on a terminal.
        batches: the batch sizes to tune for (one search per bound and batch size).
        objective: ``"time"`` (the measured cost table's predicted time) or ``"macs"``.
        threads: the thread count the time is measured and predicted at.
        table: the cost table (default: the cache's, measured where it lacks an entry).

    Returns:
        One :class:`Tuned` per (bound, batch size), bounds outermost in the order given; the
        network is left with no knobs and with each layer's fastest dense kernel set.

    Raises:
        ValueError: for a bound outside [0, 100], an unknown knob or objective, or a bad batch size.
    """
    _bound_checked(max_losses, knobs, batches, objective)
    if objective == "time":
        table = measure(net.layers, knobs, batches, threads, table, progress=progress)
    else:
        table = None
    x, y = held
    staged = StagedEvaluator(net, x, y)
    dense_acc = staged.measure(EffortSettings(), keep=True)
    dense_macs = staged.macs
    all_ladders = ladders(net, x[:STATISTICS_EXAMPLES], knobs)
    measured: list[Move] = []
    bar = progress_bar(total=sum(len(ladder) for ladder in all_ladders), progress=progress, desc="effort moves",
                       unit="move")
    for ladder in all_ladders:  # each move alone; a ladder stops at its first move past every bound
        for move in ladder:
            staged.measure(_apply(EffortSettings(), move), move.layer)
            record = staged.records[move.layer]
            active = {b: batch_fraction(record.active, b, union=move.knob == "spet") for b in batches}
            measured.append(replace(move, loss=staged.broken, active=active, saved_macs=dense_macs - staged.macs))
            bar.update()
            if staged.broken > max(max_losses) / 100:
                break
    bar.close()
    results = []
    for bound in max_losses:
        for batch in batches:
            goal = Objective(net, batch, table, threads)
            results.append(_greedy(staged, goal, measured, bound, batch, progress))
            results[-1].dense_accuracy, results[-1].dense_macs = dense_acc, dense_macs
    net.set_settings(EffortSettings())
    return results


def _greedy(staged: StagedEvaluator, goal: Objective, measured: list[Move], bound: float, batch: int,
            progress: bool | None) -> Tuned:
    """The moves, best saving per loss first, each kept if the bound holds and the cost falls."""
    savings = {id(m): goal.saving(m) for m in measured}
    ranked = sorted((m for m in measured if savings[id(m)] > 0),
                    key=lambda m: -savings[id(m)] / max(m.loss, 1e-4))
    settings = EffortSettings()
    accuracy = staged.measure(settings, keep=True)
    cost, broken = goal.total(settings, staged.records), 0.0
    dense_cost = cost
    levels: dict[tuple[str, str, float], int] = {}
    for move in progress_bar(ranked, progress, desc=f"bound {bound:g}, batch {batch}", unit="move"):
        key = (move.layer, move.knob, move.variant)
        # Losses nearly add up: a move that alone breaks more than the bound has left is not tried.
        if broken + move.loss > bound / 100 or levels.get(key, -1) >= move.level:
            continue
        trial = _apply(settings, move)
        trial_accuracy = staged.measure(trial, move.layer)
        trial_cost = goal.total(trial, staged.records)
        if staged.broken <= bound / 100 and trial_cost < cost:
            settings, accuracy, cost, broken = trial, trial_accuracy, trial_cost, staged.broken
            staged.accept()
            levels[key] = move.level
    timed = goal.table is not None
    return Tuned(bound, batch, settings, accuracy, broken, staged.kept_macs, 0.0, 0.0,
                 cost if timed else None, dense_cost if timed else None)
