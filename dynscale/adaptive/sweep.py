"""The adaptive knobs: policies fitted on held-out data at each λ (and thresholds calibrated to
target accuracies), as operating points of the shared engine, run with real exits on the test
split. Each point records where examples leave (and, with jumps, which nodes ran)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..cost import eval_mode
from ..data import Dataset
from ..device import place
from ..errors import DynscaleError
from ..eval import Candidate, Curve, CurveSpec, Measurement, Runner, TimingConfig, accuracy, evaluate
from ..eval.runtime import onnxruntime_runner, timing_copy, torch_runner
from ..export import plain_network
from ..runs import WIDTH, RunConfig, open_run, open_runs, save_run
from .cascade import Cascade
from .graph import AdaptiveGraph
from .policy import calibrate_threshold, check_lambda, fit_policies, threshold_policies
from .runs import CASCADE, EARLY_EXIT

DEFAULT_LAMBDAS = [0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2]
DEFAULT_MAX_LOSSES = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]  # accuracy points below the full network
LEARNED, THRESHOLD, FULL, SINGLE = "learned policy", "confidence threshold", "full network", "single networks"


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


def _parameters(*modules: nn.Module) -> int:
    unique = {id(p): p for m in modules for p in m.parameters()}
    return sum(p.numel() for p in unique.values())


def sweep_graph(graph: AdaptiveGraph, reference: nn.Module, reference_node: int,
                held: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                name: str, data: str, lambdas: Sequence[float], max_losses: Sequence[float],
                estimator=None, timing: TimingConfig | None = None, batch_size: int = 256, singles: bool = False,
                method: str = "early-exit", progress: bool | None = None,
                device: torch.device | str | None = None) -> list[Curve]:
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
        timing: wall-clock settings (``examples`` test examples are run per timed call, in
            batches, on ``timing.device``); None skips timing.
        batch_size: examples per batch for the accuracy and MAC measurement.
        singles: also report each node's network alone (cascades).
        method: the method's name on the points.
        progress: show a progress bar; None shows it only on a terminal.
        device: move the reference and the graph's modules there and run them there (None:
            where they are); the policies decide on the CPU.

    Returns:
        Curves: the full network, the learned policy, the threshold baseline (and single
        networks). The caller's modules keep their modes and memory format.
    """
    lambdas = [check_lambda(v) for v in lambdas]
    for loss in max_losses:
        if not 0 <= loss <= 100:
            raise ValueError(f"an allowed accuracy loss must be between 0 and 100 points, got {loss}")
    if device is not None:
        for module in (reference, *graph.modules):
            place(module, torch.device(device))
    learned_sets, threshold_sets = policy_sets(graph, held, reference_node, lambdas, max_losses, estimator)
    names = graph.names
    jumps = any(len(s) > 1 for s in graph.successors)
    stored = _parameters(*graph.modules)
    channels_last = bool(timing and timing.channels_last)
    timed: list = []  # (reference, graph) as timed, made once

    def timed_view() -> tuple[nn.Module, AdaptiveGraph]:
        if not timed:
            timed.append(timing_copy((reference, graph), channels_last, timing.device if timing else None))
        return timed[0]

    def only_torch(runtime: str) -> None:
        if runtime not in ("torch", "onnxruntime"):
            raise DynscaleError(f"adaptive graphs are timed in eager PyTorch (and their plain networks in ONNX "
                                f"Runtime), not {runtime}; use --runtime torch,onnxruntime")

    def network(net_name: str, net: nn.Module, macs: float, node: int, knobs: dict, index: int | None) -> Candidate:
        def measure(x: torch.Tensor, y: torch.Tensor) -> Measurement:
            return Measurement(accuracy(net, x, y), macs, _parameters(net),
                               extra={"exit": {n: float(j == node) for j, n in enumerate(names)}})

        def runner(runtime: str) -> Runner:
            only_torch(runtime)
            if runtime == "onnxruntime":  # a network alone exports: the plain network a user would ship
                module = reference if index is None else graph.nodes[index].module.network
                return onnxruntime_runner(plain_network(module, test[0][:1]), test[0][:8],
                                          timing.threads if timing else 1, net_name)
            ref, view = timed_view()
            module = ref if index is None else view.nodes[index].module.network
            return torch_runner(module, channels_last=channels_last)

        return Candidate(method, knobs, net_name, measure, runner)

    def routed(label: str, policies: list, knobs: dict, described: dict | None = None) -> Candidate:
        policy_params = sum(p.parameters for p in policies if p is not None)

        def measure(x: torch.Tensor, y: torch.Tensor) -> Measurement:
            outcome = graph.run(x, policies, batch_size)
            extra = {"exit": outcome.exit_fractions(names)}
            if jumps:
                extra["ran"] = outcome.ran_fractions(names)
            if described is not None:
                extra["policies"] = described
            return Measurement(outcome.accuracy(y), outcome.macs.mean().item(), stored + policy_params,
                               extra=extra)

        def runner(runtime: str) -> Runner | None:
            only_torch(runtime)
            if runtime != "torch":
                return None  # the policy decides per example in eager PyTorch: timed there, against the
                # dense network in both runtimes (``versus``)
            view = timed_view()[1]
            return torch_runner(lambda batch: view.run(batch, policies, len(batch)), channels_last=channels_last,
                                device=view.device)

        return Candidate(method, knobs, label, measure, runner)

    full = network("full", reference, graph.full_macs, reference_node, {}, None)
    learned = []
    for label, policies, knobs in learned_sets:
        described = {names[i]: [d.to_dict() for d in p.decisions] for i, p in enumerate(policies) if p is not None}
        learned.append(routed(label, policies, knobs, described))
    threshold = [routed(label, policies, knobs) for label, policies, knobs in threshold_sets]
    curves = [(CurveSpec(f"{Path(name).name}: {FULL}", name, data, FULL), [full]),
              (CurveSpec(f"{Path(name).name}: {LEARNED}", name, data, LEARNED), learned),
              (CurveSpec(f"{Path(name).name}: {THRESHOLD}", name, data, THRESHOLD), threshold)]
    if singles:
        single = [network(node.name, node.module.network, node.macs, i, {"network": node.name}, i)
                  for i, node in enumerate(graph.nodes)]
        curves.append((CurveSpec(f"{Path(name).name}: {SINGLE}", name, data, SINGLE), single))
    with eval_mode(reference, *graph.modules):  # every module's own flag comes back afterwards
        return evaluate(curves, full, test, timing, progress)


def policy_sets(graph: AdaptiveGraph, held: tuple[torch.Tensor, torch.Tensor], reference_node: int,
                lambdas: Sequence[float], max_losses: Sequence[float],
                estimator=None) -> tuple[list[tuple[str, list, dict]], list[tuple[str, list, dict]]]:
    """Every node's policies at each operating point, fitted on held-out examples: the learned
    policies at each λ, and the confidence threshold calibrated to lose at most each of
    ``max_losses`` accuracy points against the reference node on them.

    Returns:
        ``(learned, threshold)``: lists of ``(label, policies, knobs)``.
    """
    held_x, held_y = held
    held_logits = graph.all_logits(held_x)
    held_reference = (held_logits[reference_node].argmax(1) == held_y).float().mean().item()
    learned = [(f"λ={lam:g}", fit_policies(graph, held_logits, held_y, lam, estimator), {"lambda": lam})
               for lam in lambdas]
    threshold = []
    for loss in max_losses:
        t = calibrate_threshold(graph, held_logits, held_y, held_reference - loss / 100)
        threshold.append((f"loss≤{loss:g}", threshold_policies(graph, t),
                          {"max_loss": loss, "threshold": t if t != float("inf") else None}))
    return learned, threshold


def costliest_node(graph: AdaptiveGraph) -> int:
    """The node whose network costs the most: a cascade's reference."""
    return max(range(len(graph.nodes)), key=lambda i: graph.nodes[i].macs)


def held_out(data: Dataset, config: RunConfig, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out examples a run's training left out.

    Raises:
        DynscaleError: if the run held nothing out.
    """
    if not config.holdout:
        raise DynscaleError(f"{what} was trained on every training example, so there is no held-out data to fit "
                            "policies on; retrain it with --holdout N")
    return data.split_holdout(config.holdout)[1]


def sweep_adaptive_run(run_dir: str | Path, lambdas: Sequence[float] = DEFAULT_LAMBDAS,
                       max_losses: Sequence[float] = DEFAULT_MAX_LOSSES, data: str | Dataset | None = None,
                       **options) -> list[Curve]:
    """Loads an early-exit or cascade run and sweeps it (see :func:`sweep_graph` for ``options``).

    Raises:
        DynscaleError: for another kind of run, or data that does not fit.
    """
    run = open_run(run_dir, (EARLY_EXIT, CASCADE), data, with_data=True, what="adaptive sweep")
    dataset = run.dataset
    if run.kind == CASCADE:
        return _sweep_cascade(run.model, str(run_dir), dataset, run.config, lambdas, max_losses, **options)
    graph = run.model.graph()
    return sweep_graph(graph, run.model.backbone, len(graph.nodes) - 1, held_out(dataset, run.config, str(run_dir)),
                       (dataset.test_x, dataset.test_y), str(run_dir), dataset.name, lambdas, max_losses, **options)


def _sweep_cascade(cascade: Cascade, name: str, dataset: Dataset, config: RunConfig, lambdas: Sequence[float],
                   max_losses: Sequence[float], **options) -> list[Curve]:
    graph = cascade.graph()
    costliest = costliest_node(graph)
    return sweep_graph(graph, cascade.networks[costliest], costliest, held_out(dataset, config, name),
                       (dataset.test_x, dataset.test_y), name, dataset.name, lambdas, max_losses, singles=True,
                       method="network-selection", **options)


def build_cascade(run_dirs: Sequence[str | Path], edges: Sequence[tuple[int, int]] | None = None,
                  data: str | Dataset | None = None) -> tuple[Cascade, RunConfig, Dataset]:
    """Loads separately trained runs into a :class:`Cascade`.

    The runs must be width runs of one dataset, listed by rising cost, each once, and share a
    held-out split (``dynscale train --holdout N``).

    Returns:
        The cascade, the config it is saved with, and the dataset.

    Raises:
        DynscaleError: if the runs disagree on their data or held-out split, repeat, or are
            not in order of rising cost.
    """
    if len({str(Path(r).resolve()) for r in run_dirs}) != len(run_dirs):
        raise DynscaleError("a cascade lists each run once; remove the repeated run")
    runs = open_runs(run_dirs, (WIDTH,), data, with_data=True, what="a cascade")
    if data is None and len({r.data for r in runs}) > 1:
        trained = ", ".join(sorted({r.data for r in runs}))
        raise DynscaleError(f"the cascade's runs were trained on different data ({trained}); give runs of one "
                            "dataset")
    holdouts = {r.config.holdout for r in runs}
    if len(holdouts) > 1:
        raise DynscaleError(f"the cascade's runs hold out different numbers of examples ({sorted(holdouts)}); "
                            "train them all with the same --holdout N")
    names = [r.path.name for r in runs]
    if len(set(names)) != len(names):
        names = [f"{i}:{n}" for i, n in enumerate(names)]
    dataset = runs[0].dataset
    cascade = Cascade([r.model for r in runs], edges, names=names)
    macs = [node.macs for node in cascade.graph().nodes]
    for i in range(1, len(macs)):
        if macs[i] < macs[i - 1]:
            raise DynscaleError(f"list the cascade's runs by rising cost: {names[i]} ({macs[i]:.4g} MACs) is "
                                f"cheaper than {names[i - 1]} ({macs[i - 1]:.4g} MACs) before it")
    config = RunConfig("cascade", None, dataset.name, training={"holdout": runs[0].config.holdout})
    config = config.replace(provenance={"runs": [str(r.path) for r in runs]})
    return cascade, config, dataset


def sweep_cascade(run_dirs: Sequence[str | Path], edges: Sequence[tuple[int, int]] | None = None,
                  lambdas: Sequence[float] = DEFAULT_LAMBDAS, max_losses: Sequence[float] = DEFAULT_MAX_LOSSES,
                  data: str | Dataset | None = None, name: str = "cascade", save: str | Path | None = None,
                  **options) -> list[Curve]:
    """Loads separately trained runs into a :class:`Cascade` (:func:`build_cascade`) and sweeps
    it; with ``save`` the cascade is also written as a run of kind ``cascade``."""
    cascade, config, dataset = build_cascade(run_dirs, edges, data)
    if save is not None:
        save_run(save, cascade, dataset.name, training=config.training, provenance=config.provenance)
    return _sweep_cascade(cascade, name, dataset, config, lambdas, max_losses, **options)
