"""The adaptive sweep: policies fitted on held-out data at each λ (and thresholds calibrated
to target accuracies), run with real exits on the test split; accuracy, mean MACs, MAC ratio,
wall-clock ratio and where examples leave. Reported as a table, JSON and the shared plot."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..checkpoint import atomic_write, load_run
from ..cost import LatencyConfig, median_seconds
from ..data import Dataset, load_dataset
from ..errors import DynscaleError
from ..evaluation import accuracy
from ..sweep import check_compatible, human_count
from .cascade import Cascade
from .graph import AdaptiveGraph
from .policy import calibrate_threshold, check_lambda, fit_policies, threshold_policies
from .runs import load_early_exit

DEFAULT_LAMBDAS = [0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2]
DEFAULT_MAX_LOSSES = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]  # accuracy points below the full network
LEARNED, THRESHOLD, FULL, SINGLE = "learned policy", "confidence threshold", "full network", "single networks"


@dataclass
class AdaptivePoint:
    """One operating point of an adaptive method on the test split."""

    setting: str  # "λ=0.01", "loss ≤ 0.5", "full", a network's name
    accuracy: float
    macs: float  # mean per example, policies included
    macs_ratio: float  # macs / the full network's
    exits: dict[str, float]  # node -> fraction of test examples that stop there
    ran: dict[str, float] | None = None  # node -> fraction of test examples it computed
    wall_us: dict[str, float] | None = None  # batch size -> median µs per example
    wall_ratio: dict[str, float] | None = None  # batch size -> wall-clock / the full network's
    lam: float | None = None
    threshold: float | None = None
    policies: dict[str, list[dict]] | None = None  # node -> its decisions (linear: weight, bias)


@dataclass
class AdaptiveCurve:
    """One method's curve on one run or cascade."""

    run: str
    data: str
    curve: str  # LEARNED, THRESHOLD, FULL or SINGLE
    points: list[AdaptivePoint] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{Path(self.run).name}: {self.curve}"


def parse_lambdas(text: str) -> list[float]:
    """Parses ``"0,0.01,0.1"`` into validated λ values.

    Raises:
        ValueError: for an empty list, a non-number or a negative λ.
    """
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts:
        raise ValueError("give at least one λ, e.g. --lambdas 0,0.01,0.1")
    values = []
    for part in parts:
        try:
            values.append(check_lambda(float(part)))
        except ValueError as e:
            raise ValueError(f"bad λ {part!r}: {e}") from None
    return values


def sweep_graph(graph: AdaptiveGraph, reference: nn.Module, reference_node: int,
                held: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                name: str, data: str, lambdas: Sequence[float], max_losses: Sequence[float],
                estimator=None, timing: LatencyConfig | None = None, timing_examples: int = 2560,
                rounds: int = 3, batch_size: int = 256, singles: bool = False,
                channels_last: bool = False, progress: bool | None = None) -> list[AdaptiveCurve]:
    """Sweeps learned policies over λ and the threshold baseline over target accuracies.

    Args:
        graph: the adaptive graph (early exits or a cascade).
        reference: the full network the costs are compared to, run on its own.
        reference_node: the node whose logits are the reference network's.
        held: held-out ``(x, y)`` the policies and thresholds are fitted on.
        test: ``(x, y)`` the points are measured on, with real exits.
        name: the run's label; data: the dataset name.
        lambdas: cost weights of the learned policies.
        max_losses: accuracy points below the reference's held-out accuracy that each calibrated
            threshold may lose.
        estimator: the policies' scikit-learn classifier (logistic regression by default).
        timing: batch sizes, threads and timing seconds for wall-clock; None skips it.
        timing_examples: the first this many test examples are timed.
        rounds: timing rounds; ratios are medians over rounds.
        batch_size: examples per batch for the accuracy and MAC measurement.
        singles: also report each node's network alone (cascades).
        channels_last: time with channels-last memory (inputs and convolution weights, for
            the full network and the adaptive one alike); often faster on CPU.
        progress: show a progress bar; None shows it only on a terminal.

    Returns:
        Curves: the full network, the learned policy, the threshold baseline (and single networks).
    """
    lambdas = [check_lambda(v) for v in lambdas]
    for loss in max_losses:
        if not 0 <= loss <= 100:
            raise ValueError(f"an allowed accuracy loss must be between 0 and 100 points, got {loss}")
    reference.eval()
    held_x, held_y = held
    test_x, test_y = test
    held_logits = graph.all_logits(held_x)
    held_reference = (held_logits[reference_node].argmax(1) == held_y).float().mean().item()
    names = graph.names
    timed: list[tuple[AdaptivePoint, Callable[[torch.Tensor, int], object]]] = []

    full = AdaptivePoint("full", accuracy(reference, test_x, test_y), graph.full_macs, 1.0,
                         {n: float(i == reference_node) for i, n in enumerate(names)})
    curves = [AdaptiveCurve(name, data, FULL, [full])]
    timed.append((full, _batched(reference)))

    def measure(setting: str, node_policies: list, **fields) -> AdaptivePoint:
        outcome = graph.run(test_x, node_policies, batch_size)
        mean = outcome.macs.mean().item()
        point = AdaptivePoint(setting, outcome.accuracy(test_y), mean, mean / graph.full_macs,
                              outcome.exit_fractions(names), outcome.ran_fractions(names), **fields)
        timed.append((point, lambda x, b, p=node_policies: graph.run(x, p, b)))
        return point

    bar = tqdm(total=len(lambdas) + len(max_losses), desc="policies", unit="point",
               disable=None if progress is None else not progress)
    learned = AdaptiveCurve(name, data, LEARNED)
    for lam in lambdas:
        policies = fit_policies(graph, held_logits, held_y, lam, estimator)
        described = {names[i]: [d.to_dict() for d in p.decisions] for i, p in enumerate(policies) if p is not None}
        learned.points.append(measure(f"λ={lam:g}", policies, lam=lam, policies=described))
        bar.update()
    threshold = AdaptiveCurve(name, data, THRESHOLD)
    for loss in max_losses:
        t = calibrate_threshold(graph, held_logits, held_y, held_reference - loss / 100)
        threshold.points.append(measure(f"loss≤{loss:g}", threshold_policies(graph, t),
                                        threshold=t if t != float("inf") else None))
        bar.update()
    bar.close()
    curves += [learned, threshold]
    if singles:
        single = AdaptiveCurve(name, data, SINGLE)
        for i, node in enumerate(graph.nodes):
            net = node.module.network
            point = AdaptivePoint(node.name, accuracy(net, test_x, test_y), node.macs, node.macs / graph.full_macs,
                                  {n: float(j == i) for j, n in enumerate(names)})
            single.points.append(point)
            timed.append((point, _batched(net)))
        curves.append(single)
    if timing is not None:
        x = test_x[:timing_examples]
        if channels_last:
            for module in [reference, *graph.modules]:
                module.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        measure_wall_clock(timed, x, timing, rounds, progress)
    return curves


def _batched(model: nn.Module) -> Callable[[torch.Tensor, int], None]:
    def run(x: torch.Tensor, b: int) -> None:
        for start in range(0, len(x), b):
            model(x[start:start + b])
    return run


@torch.no_grad()
def measure_wall_clock(timed: list[tuple[AdaptivePoint, Callable]], x: torch.Tensor, timing: LatencyConfig,
                       rounds: int, progress: bool | None = None) -> None:
    """Times every point's inference over ``x`` (``cost.median_seconds``).

    The first point is the full network, the reference. Each round times the reference, every
    other point, then the reference again; a point's ratio in a round is to the mean of the two
    reference timings, so slow drift of a shared machine falls on both sides. Stores µs per
    example and the ratio, medians over rounds.
    """
    if rounds < 1:
        raise ValueError(f"timing rounds must be at least 1, got {rounds}")

    def seconds(fn: Callable, b: int) -> float:
        return median_seconds(lambda: fn(x, b), timing.threads, timing.min_run_time)

    us: dict[int, dict[str, list[float]]] = {i: {} for i in range(len(timed))}
    ratios: dict[int, dict[str, list[float]]] = {i: {} for i in range(len(timed))}
    bar = tqdm(total=rounds * (len(timed) + 1) * len(timing.batch_sizes), desc="wall-clock", unit="timing",
               disable=None if progress is None else not progress)
    for _ in range(rounds):
        for b in timing.batch_sizes:
            measured = [seconds(fn, b) for _, fn in timed] + [seconds(timed[0][1], b)]
            bar.update(len(measured))
            reference = (measured[0] + measured[-1]) / 2
            for i, t in enumerate(measured[:-1]):
                us[i].setdefault(str(b), []).append(t * 1e6 / len(x))
                ratios[i].setdefault(str(b), []).append(1.0 if i == 0 else t / reference)
    bar.close()
    for i, (point, _) in enumerate(timed):
        point.wall_us = {b: round(_median(v), 3) for b, v in us[i].items()}
        point.wall_ratio = {b: round(_median(v), 4) for b, v in ratios[i].items()}


def _median(values: list[float]) -> float:
    return float(torch.tensor(values, dtype=torch.float64).median())


def held_out(data: Dataset, config: dict, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out examples a run's training left out.

    Raises:
        DynscaleError: if the run held nothing out.
    """
    n = config.get("training", {}).get("holdout", 0)
    if not n:
        raise DynscaleError(f"{what} was trained on every training example, so there is no held-out data to fit "
                            "policies on; retrain it with --holdout N")
    return data.split_holdout(n)[1]


def sweep_early_exit(run_dir: str | Path, lambdas: Sequence[float] = DEFAULT_LAMBDAS,
                     max_losses: Sequence[float] = DEFAULT_MAX_LOSSES, data: str | Dataset | None = None,
                     **options) -> list[AdaptiveCurve]:
    """Loads an early-exit run and sweeps it (see :func:`sweep_graph` for ``options``)."""
    net, config = load_early_exit(run_dir)
    dataset = data if isinstance(data, Dataset) else load_dataset(data or config["data"])
    check_compatible(config["model"]["config"], dataset, str(run_dir))
    graph = net.graph()
    return sweep_graph(graph, net.backbone, len(graph.nodes) - 1, held_out(dataset, config, str(run_dir)),
                       (dataset.test_x, dataset.test_y), str(run_dir), dataset.name, lambdas, max_losses, **options)


def sweep_cascade(run_dirs: Sequence[str | Path], edges: Sequence[tuple[int, int]] | None = None,
                  lambdas: Sequence[float] = DEFAULT_LAMBDAS, max_losses: Sequence[float] = DEFAULT_MAX_LOSSES,
                  data: str | Dataset | None = None, name: str = "cascade", **options) -> list[AdaptiveCurve]:
    """Loads separately trained runs into a :class:`Cascade` and sweeps it.

    The runs must share a dataset and a held-out split (``dynscale train --holdout N``).

    Raises:
        DynscaleError: if the runs disagree on their data or held-out split.
    """
    runs = [load_run(r) for r in run_dirs]
    holdouts = {r.config.get("training", {}).get("holdout", 0) for r in runs}
    if len(holdouts) > 1:
        raise DynscaleError(f"the cascade's runs hold out different numbers of examples ({sorted(holdouts)}); "
                            "train them all with the same --holdout N")
    names = [r.path.name for r in runs]
    if len(set(names)) != len(names):
        names = [f"{i}:{n}" for i, n in enumerate(names)]
    dataset = data if isinstance(data, Dataset) else load_dataset(data or runs[0].data)
    for r in runs:
        check_compatible(r.config["model"]["config"], dataset, str(r.path))
    cascade = Cascade([r.model for r in runs], edges, names=names)
    graph = cascade.graph()
    costliest = max(range(len(graph.nodes)), key=lambda i: graph.nodes[i].macs)
    return sweep_graph(graph, runs[costliest].model, costliest, held_out(dataset, runs[0].config, str(runs[0].path)),
                       (dataset.test_x, dataset.test_y), name, dataset.name, lambdas, max_losses,
                       singles=True, **options)


def to_json(curves: list[AdaptiveCurve]) -> dict:
    """The JSON document: ``{"runs": [{"run", "data", "curve", "points"}]}`` (unset fields left out)."""
    runs = []
    for c in curves:
        doc = asdict(c)
        doc["points"] = [{k: v for k, v in p.items() if v is not None} for p in doc["points"]]
        runs.append(doc)
    return {"runs": runs}


def write_json(curves: list[AdaptiveCurve], path: str | Path, **extra) -> None:
    """Writes :func:`to_json` (plus ``extra`` top-level fields) atomically."""
    doc = {**to_json(curves), **extra}
    atomic_write(Path(path), lambda p: p.write_text(json.dumps(doc, indent=2) + "\n"))


def format_table(curves: list[AdaptiveCurve], markdown: bool = False, ran: bool = False) -> str:
    """One row per point: accuracy, mean MACs, MAC ratio, wall-clock ratio per batch size, the
    percentage of examples leaving at each node and, with ``ran``, the percentage each node
    computed (which shows jumps in a cascade)."""
    nodes = list(dict.fromkeys(n for c in curves for p in c.points for n in p.exits))
    batches = sorted({b for c in curves for p in c.points for b in (p.wall_ratio or {})}, key=int)
    header = ["curve", "setting", "acc %", "mean MACs", "MAC ratio", *(f"wall ratio @{b}" for b in batches),
              *(f"% exit {n}" for n in nodes), *(f"% ran {n}" for n in nodes if ran)]
    rows = []
    for c in curves:
        for p in c.points:
            rows.append([c.curve, p.setting, f"{100 * p.accuracy:.2f}", human_count(p.macs), f"{p.macs_ratio:.3f}",
                         *(f"{(p.wall_ratio or {}).get(b, float('nan')):.3f}" for b in batches),
                         *(f"{100 * p.exits.get(n, 0.0):.1f}" for n in nodes),
                         *(f"{100 * (p.ran or p.exits).get(n, 0.0):.1f}" for n in nodes if ran)])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(f"{v:>{w}}" for v, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([fmt(header), "-" * len(fmt(header))] + [fmt(r) for r in rows])
