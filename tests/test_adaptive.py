"""Adaptive inference: policies, real exits, cost accounting, early-exit networks, cascades."""

import dataclasses
import json

import pytest
import torch
from sklearn.tree import DecisionTreeClassifier
from torch import nn

from dynscale import get_model, list_models
from dynscale.adaptive import (
    AdaptiveGraph,
    Cascade,
    EarlyExitNet,
    FixedPolicy,
    LearnedPolicy,
    Node,
    backbone_stages,
    calibrate_threshold,
    confidence_features,
    exit_points,
    fit_policies,
    load_early_exit,
    sweep_cascade,
    sweep_graph,
    threshold_policies,
    train_early_exit,
    train_early_exit_run,
)
from dynscale.adaptive.cascade import check_edges, parse_edges
from dynscale.adaptive.sweep import parse_lambdas
from dynscale.cli import main
from dynscale.cost import count_macs
from dynscale.errors import CheckpointError, DynscaleError
from dynscale.eval import TimingConfig, curves_to_json, format_table
from dynscale.export import dense
from dynscale.idp import train_run
from dynscale.runs import RunConfig, load_run, save_run
from dynscale.train import TrainConfig, training_subset

from tiny import tiny_model, tiny_options

K = 4  # classes of the synthetic graphs


class Lookup(nn.Module):
    """A node that reads its logits from the example: x is (B, nodes·K) of precomputed logits."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index
        self.seen = 0

    def forward(self, x):
        self.seen += len(x)
        return x, x[:, self.index * K:(self.index + 1) * K]


def confident(y, scale):
    """Logits that put ``scale`` on class y."""
    out = torch.zeros(len(y), K)
    out[torch.arange(len(y)), y] = scale
    return out


def three_kinds(n, seed=0):
    """Examples of three kinds with a known best route (see test_learned_policy_finds_the_known_policy).

    kind 0: node 0 right and confident. kind 1: node 0 wrong, half-confident; node 1 right.
    kind 2: node 0 unsure (uniform), node 1 wrong; only node 2 is right.
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (n,), generator=g)
    kind = torch.arange(n) % 3
    wrong = (y + 1) % K
    noise = lambda: 0.1 * torch.randn(n, K, generator=g)  # noqa: E731
    node0 = torch.where((kind == 0)[:, None], confident(y, 6.0), confident(wrong, 1.5)) + noise()
    node0 = torch.where((kind == 2)[:, None], torch.zeros(n, K), node0) + noise()
    node1 = torch.where((kind == 2)[:, None], confident(wrong, 3.0), confident(y, 3.0)) + noise()
    node2 = confident(y, 3.0) + noise()
    return torch.cat([node0, node1, node2], dim=1), y, kind


def lookup_graph(successors, costs=(10.0, 30.0, 100.0)):
    nodes = [Node(f"n{i}", Lookup(i), c) for i, c in enumerate(costs)]
    return AdaptiveGraph(nodes, successors, full_macs=100.0)


def test_learned_policy_finds_the_known_policy():
    # Cascade 0 → 1 → 2 with the jump 0 → 2. Costs 0.1, 0.3, 1.0 of the full network. At λ = 0.5
    # a kind-1 example should go to node 1 (0.15 < 0.5) and a kind-2 example jump straight to
    # node 2 (0.5 < 0.15 + 0.5 + an error at node 1): the best route per kind is 0, 1 and 2.
    graph = lookup_graph([[1, 2], [2], []])
    x, y, kind = three_kinds(900)
    policies = fit_policies(graph, graph.all_logits(x), y, lam=0.5)
    test_x, test_y, test_kind = three_kinds(600, seed=1)
    for node in graph.nodes:
        node.module.seen = 0
    outcome = graph.run(test_x, policies)
    assert torch.equal(outcome.exit_node, test_kind)
    assert outcome.accuracy(test_y) == 1.0
    # Kind 2 jumped: only kind 1 reached node 1.
    assert graph.nodes[1].module.seen == (test_kind == 1).sum()
    assert outcome.ran.tolist() == [600, 200, 200]
    assert outcome.ran_fractions(graph.names) == {"n0": 1.0, "n1": pytest.approx(1 / 3), "n2": pytest.approx(1 / 3)}
    # MACs: the nodes on the route, plus the policy of each node visited that has one.
    p0, p1 = policies[0].macs, policies[1].macs
    assert p0 == 2 * (K + 3) and p1 == K + 3  # two linear decisions at node 0, one at node 1
    expected = torch.tensor([10.0 + p0, 10.0 + p0 + 30.0 + p1, 10.0 + p0 + 100.0], dtype=torch.float64)
    assert torch.allclose(outcome.macs, expected[test_kind])


def test_lambda_trades_accuracy_for_cost():
    graph = lookup_graph([[1, 2], [2], []])
    x, y, _ = three_kinds(900)
    logits = graph.all_logits(x)
    # Free compute: everything that a later node gets right goes there. Very costly compute:
    # every example stops at the first node (an error costs less than λ × any further MACs).
    free = graph.simulate(logits, fit_policies(graph, logits, y, lam=0.0))
    costly = graph.simulate(logits, fit_policies(graph, logits, y, lam=50.0))
    assert free.accuracy(y) == 1.0
    assert (costly.exit_node == 0).all()
    assert costly.macs.mean() < free.macs.mean()


def test_any_weighted_sklearn_classifier_can_be_the_policy():
    graph = lookup_graph([[1, 2], [2], []])
    x, y, kind = three_kinds(900)
    policies = fit_policies(graph, graph.all_logits(x), y, lam=0.5, estimator=DecisionTreeClassifier(max_depth=3))
    test_x, _, test_kind = three_kinds(300, seed=2)
    assert (graph.run(test_x, policies).exit_node == test_kind).float().mean() > 0.95


def test_forced_exit_at_the_first_stage_runs_nothing_else():
    torch.manual_seed(0)
    backbone = get_model("vgg16", in_channels=1, input_size=16, width_mult=0.125).eval()
    net = EarlyExitNet(backbone, ["block1", "block2", "block3"]).eval()
    graph = net.graph()
    calls = {name: 0 for name, _ in backbone.stages()}
    for name, module in backbone.stages():  # hook each stage's first layer
        first = next(iter(module.children()))
        first.register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    for name in ("block2", "block3"):
        net.exits[name].register_forward_hook(lambda *_, n=name: calls.__setitem__(n + "-exit", 1))
    x = torch.randn(40, 1, 16, 16)
    outcome = graph.run(x, [FixedPolicy(0), FixedPolicy(0), FixedPolicy(0), None], batch_size=16)
    assert calls["block1"] == 3  # three batches
    assert all(calls[n] == 0 for n in ("block2", "block3", "block4", "block5", "head"))
    assert "block2-exit" not in calls and "block3-exit" not in calls
    assert (outcome.exit_node == 0).all()
    assert torch.allclose(outcome.macs, torch.full((40,), graph.nodes[0].macs, dtype=torch.float64))
    assert torch.equal(outcome.predictions, net(x)[0].argmax(1))


def test_real_exits_work_in_channels_last_memory():
    torch.manual_seed(0)
    net = EarlyExitNet(get_model("vgg16", in_channels=1, input_size=16, width_mult=0.125), ["block1", "block2"]).eval()
    graph = net.graph()
    x = torch.randn(50, 1, 16, 16)
    median = graph.all_logits(x)[0].softmax(1).amax(1).median().item()
    policies = threshold_policies(graph, median)
    plain = graph.run(x, policies, batch_size=16)
    formats = []
    net.exits["block2"].register_forward_pre_hook(
        lambda m, inp: formats.append(inp[0].is_contiguous(memory_format=torch.channels_last)))
    net.to(memory_format=torch.channels_last)
    fast = graph.run(x.contiguous(memory_format=torch.channels_last), policies, batch_size=16)
    assert torch.equal(plain.exit_node, fast.exit_node) and torch.equal(plain.predictions, fast.predictions)
    assert formats and all(formats)  # the gathered batches stayed channels-last


def test_never_exiting_gives_the_backbones_predictions_and_pays_for_every_exit():
    torch.manual_seed(0)
    backbone = get_model("resnet", in_channels=1, input_size=12, width_mult=0.25).eval()
    net = EarlyExitNet(backbone, ["stage1", "stage2"]).eval()
    graph = net.graph()
    x = torch.randn(30, 1, 12, 12)
    outcome = graph.run(x, [FixedPolicy(1), FixedPolicy(1), None], batch_size=7)
    assert torch.equal(outcome.predictions, backbone(x).argmax(1))
    assert (outcome.exit_node == 2).all()
    exit_macs = sum(h[-1].in_features * h[-1].out_features for h in net.exits.values())
    assert sum(n.macs for n in graph.nodes) == pytest.approx(graph.full_macs + exit_macs)
    assert torch.allclose(outcome.macs, torch.full((30,), graph.full_macs + exit_macs, dtype=torch.float64))


def test_real_exits_keep_the_original_order_and_match_the_simulation():
    graph = lookup_graph([[1, 2], [2], []])
    x, y, _ = three_kinds(600)
    policies = fit_policies(graph, graph.all_logits(x), y, lam=0.5)
    perm = torch.randperm(600, generator=torch.Generator().manual_seed(3))
    test_x = x[perm]
    real = graph.run(test_x, policies, batch_size=64)
    simulated = graph.simulate(graph.all_logits(test_x), policies)
    assert torch.equal(real.predictions, simulated.predictions)
    assert torch.equal(real.exit_node, simulated.exit_node)
    assert torch.allclose(real.macs, simulated.macs)
    assert torch.equal(real.ran, simulated.ran)
    # Each prediction is the argmax of the node where that example stopped.
    per_node = torch.stack(graph.all_logits(test_x)).argmax(2)  # (nodes, N)
    assert torch.equal(real.predictions, per_node[real.exit_node, torch.arange(600)])


@pytest.fixture(scope="module")
def exit_run(tmp_path_factory, synthetic):
    out = tmp_path_factory.mktemp("adaptive") / "ee-mlp"
    config = TrainConfig(epochs=8, batch_size=64, holdout=200)
    return train_early_exit_run(out, "mlp", synthetic, config, ["layer1", "layer2"],
                                model_options={"hidden": [32, 32], "profile": "all-one"}, progress=False)


def test_batch_1_and_batch_256_give_identical_predictions(exit_run, synthetic):
    net, config = load_early_exit(exit_run)
    graph = net.graph()
    held = synthetic.split_holdout(config.holdout)[1]
    logits = graph.all_logits(held[0])
    # A threshold at the median confidence of the first exit sends half the examples on.
    median = logits[0].softmax(1).amax(1).median().item()
    for policies in (fit_policies(graph, logits, held[1], 0.05), threshold_policies(graph, median)):
        big = graph.run(synthetic.test_x, policies, batch_size=256)
        one = graph.run(synthetic.test_x, policies, batch_size=1)
        assert torch.equal(big.predictions, one.predictions)
        assert torch.equal(big.exit_node, one.exit_node)
        assert torch.allclose(big.macs, one.macs)
    assert len(set(big.exit_node.tolist())) > 1, "the test needs examples leaving at several exits"


def test_early_exit_run_round_trips_through_load_run(exit_run, synthetic):
    net, config = load_early_exit(exit_run)
    assert config.kind == "early-exit" and config.section["exits"] == ["layer1", "layer2"]
    assert set(config.metrics["exit_accuracy"]) == {"layer1", "layer2", "final"}
    assert config.metrics["exit_accuracy"]["final"] > 0.8
    assert config.recipe == {"name": "early-exit", "exit_weights": [1.0, 1.0, 1.0]}
    run = load_run(exit_run)
    assert isinstance(run.model, EarlyExitNet) and run.kind == "early-exit"
    with torch.no_grad():
        for a, b in zip(run.model(synthetic.test_x[:4]), net(synthetic.test_x[:4]), strict=True):
            assert torch.equal(a, b)


def test_cli_info_describes_an_early_exit_run(exit_run, capsys):
    assert main(["info", str(exit_run)]) == 0
    out = capsys.readouterr().out
    assert "exits:      layer1, layer2" in out and "200 training examples held out" in out


def test_a_loaded_early_exit_backbone_exports_dense(tmp_path):
    # Regression: the exits' shape probe filled the layers' inference cache before the weights
    # were loaded; deep-copying (dense export) then failed on the cached view.
    torch.manual_seed(0)
    net = EarlyExitNet(get_model("vgg16", in_channels=1, input_size=8, width_mult=0.125), ["block2"])
    save_run(tmp_path / "ee", net, "synthetic")
    loaded, _ = load_early_exit(tmp_path / "ee")
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(dense(loaded.backbone, 1.0)(x), loaded.backbone(x))
        torch.testing.assert_close(loaded(x)[-1], net.eval()(x)[-1])


def test_load_early_exit_rejects_a_width_run(mlp_run):
    with pytest.raises(CheckpointError, match="not an early-exit run"):
        load_early_exit(mlp_run)


def test_threshold_calibration_reaches_its_held_out_target():
    graph = lookup_graph([[1], [2], []])
    x, y, _ = three_kinds(900)
    logits = graph.all_logits(x)
    for target in (0.5, 0.7, 0.95):
        t = calibrate_threshold(graph, logits, y, target)
        outcome = graph.simulate(logits, threshold_policies(graph, t))
        assert outcome.accuracy(y) >= target
    # 100% is reached (node 2 is always right) by stopping early only where that is right;
    # a target above 1 is refused.
    perfect = threshold_policies(graph, calibrate_threshold(graph, logits, y, 1.0))
    assert graph.simulate(logits, perfect).accuracy(y) == 1
    with pytest.raises(ValueError, match=r"target accuracy must be in \[0, 1\]"):
        calibrate_threshold(graph, logits, y, 1.5)


def test_sweep_reports_every_curve_with_wall_clock(exit_run, synthetic):
    net, config = load_early_exit(exit_run)
    graph = net.graph()
    held = synthetic.split_holdout(config.holdout)[1]
    timing = TimingConfig(batch_sizes=[64], min_run_time=0.01, examples=128, rounds=1, warmup=1)
    net.train()
    curves = sweep_graph(graph, net.backbone, 2, held, (synthetic.test_x, synthetic.test_y), "ee", "synthetic",
                         [0.0, 0.1], [0.0, 5.0], timing=timing, progress=False)
    assert [c.curve for c in curves] == ["full network", "learned policy", "confidence threshold"]
    full = curves[0].points[0]
    assert full.macs_ratio == 1.0 and full.latency_at("torch", 64).ratio == 1.0 and full.extra["exit"]["final"] == 1
    for point in curves[1].points + curves[2].points:
        assert sum(point.extra["exit"].values()) == pytest.approx(1.0) and "ran" not in point.extra  # no jumps
        lat = point.latency_at("torch", 64)
        assert lat.ratio > 0 and lat.us_per_example > 0 and point.measured
        assert point.macs == pytest.approx(point.macs_ratio * graph.full_macs)
        assert point.method == "early-exit"
    assert curves[1].points[0].extra["policies"] and "layer1" in curves[1].points[0].extra["policies"]
    doc = curves_to_json(curves)
    assert doc["curves"][1]["points"][0]["knobs"] == {"lambda": 0.0}
    assert set(doc["curves"][2]["points"][0]["knobs"]) == {"max_loss", "threshold"}
    table = format_table(curves)
    assert "% exit layer1" in table and "ratio torch@64" in table
    # The caller's modules keep their modes.
    assert net.training and all(m.training for m in net.modules())


def test_policies_are_timed_against_the_dense_network_in_onnx_runtime_too(exit_run, synthetic):
    net, config = load_early_exit(exit_run)
    held = synthetic.split_holdout(config.holdout)[1]
    timing = TimingConfig(batch_sizes=[64], min_run_time=0.01, examples=128, rounds=1, warmup=1,
                          runtimes=["torch", "onnxruntime"])
    curves = sweep_graph(net.graph(), net.backbone, 2, held, (synthetic.test_x, synthetic.test_y), "ee",
                         "synthetic", [0.0], [5.0], timing=timing, progress=False)
    full = curves[0].points[0]
    assert full.latency_at("onnxruntime", 64).ratio == 1.0  # the full network exports: ONNX Runtime times it
    for point in curves[1].points + curves[2].points:
        assert point.latency_at("onnxruntime", 64) is None  # a policy runs in eager PyTorch only...
        assert point.latency_at("torch", 64).versus["onnxruntime"] > 0  # ...against the dense network in ORT
    with pytest.raises(DynscaleError, match="torch,onnxruntime"):
        sweep_graph(net.graph(), net.backbone, 2, held, (synthetic.test_x, synthetic.test_y), "ee", "synthetic",
                    [0.0], [5.0], timing=dataclasses.replace(timing, runtimes=["torch-dense"]), progress=False)


def test_confidence_features():
    logits = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    f = confidence_features(logits)
    assert f.shape == (2, 6)
    assert f[0, 3] == pytest.approx(1.0, abs=1e-3) and f[0, 4] == pytest.approx(1.0, abs=1e-3)
    assert f[1, 3] == pytest.approx(1 / 3) and f[1, 4] == 0 and f[1, 5] == pytest.approx(torch.log(torch.tensor(3.0)))


def test_linear_policy_counts_its_macs():
    graph = lookup_graph([[1], [2], []])
    x, y, _ = three_kinds(300)
    policies = fit_policies(graph, graph.all_logits(x), y, lam=0.2)
    learned = [p for p in policies if isinstance(p, LearnedPolicy) and p.decisions[0].constant is None]
    assert learned and all(p.macs == K + 3 for p in learned)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_takes_exits_after_every_stage(name):
    torch.manual_seed(0)
    backbone = get_model(name, **tiny_options(name, input_size=12))
    own = [n for n, _ in backbone.stages()[:-1]]
    assert exit_points(backbone)[:len(own)] == own  # the model's own stage names come first
    stages = backbone_stages(backbone, own)
    assert [n for n, _ in stages] == [*own, "final"]
    x = torch.randn(5, 1, 12, 12)
    backbone.eval()
    state = expected = x
    for (_, module), (_, stage) in zip(stages, backbone.stages(), strict=True):  # each cut where its stage ends
        state, expected = module(state), stage(expected)
        torch.testing.assert_close(state, expected)
    torch.testing.assert_close(state, backbone(x))
    net = EarlyExitNet(backbone, own)
    outputs = net.train()(x)
    assert len(outputs) == len(stages) and all(o.shape == (5, 10) for o in outputs)
    sum(o.sum() for o in outputs).backward()
    assert all(p.grad is not None for p in net.exits.parameters())
    graph = net.eval().graph()
    assert graph.full_macs == pytest.approx(count_macs(backbone, x[:1]))


@pytest.mark.parametrize("name, exits", [("vgg16", ["features.3", "block2", "classifier.0"]),
                                         ("resnet", ["stem.1", "add", "layers.1"]),
                                         ("mobilenet", ["blocks.0.relu", "blocks.2.pointwise", "blocks.4"])])
def test_exits_attach_at_any_stage_boundary(name, exits):
    # Boundaries that are no stage of the model's own: inside a block, after a residual
    # addition before its ReLU, after a batch-norm.
    torch.manual_seed(0)
    backbone = tiny_model(name, input_size=12, calibrate=True)
    assert not set(exits) - set(exit_points(backbone))
    net = EarlyExitNet(backbone, list(reversed(exits))).eval()
    assert net.exit_names == exits  # in execution order
    x = torch.randn(6, 1, 12, 12)
    with torch.no_grad():
        outputs = net(x)
        assert len(outputs) == 4 and torch.equal(outputs[-1], backbone(x))
        graph = net.graph()
        never = graph.run(x, [FixedPolicy(1)] * 3 + [None], batch_size=4)
        first = graph.run(x, [FixedPolicy(0)] * 3 + [None], batch_size=4)
    assert torch.equal(never.predictions, backbone(x).argmax(1))
    assert torch.equal(first.predictions, outputs[0].argmax(1))
    assert sum(n.macs for n in graph.nodes) > graph.full_macs > graph.nodes[0].macs


def test_exits_on_a_converted_torchvision_resnet(torchvision, synthetic):
    from dynscale import convert

    torch.manual_seed(0)
    model = convert(torchvision.models.resnet18(num_classes=10)).eval()
    points = exit_points(model, (3, 32, 32))
    assert {"layer1", "layer2", "layer3"} <= set(points)
    net = EarlyExitNet(model, ["layer3", "layer1"], input_shape=(3, 32, 32)).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        outputs = net(x)
        assert net.exit_names == ["layer1", "layer3"] and torch.equal(outputs[-1], model(x))
        outcome = net.graph().run(x, [FixedPolicy(1), FixedPolicy(0), None])
    assert torch.equal(outcome.predictions, outputs[1].argmax(1)) and (outcome.exit_node == 1).all()
    state = net.state_dict()
    assert {"exits.layer1.2.weight", "exits.layer3.2.weight"} <= set(state)


def test_frozen_backbone_keeps_its_weights_and_statistics(synthetic):
    torch.manual_seed(0)
    backbone = get_model("resnet", in_channels=1, input_size=8, width_mult=0.25, blocks_per_stage=1)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    net = EarlyExitNet(backbone, ["stage1"])
    exit_before = net.exits["stage1"][-1].weight.clone()
    train_early_exit(net, synthetic, TrainConfig(epochs=1, holdout=100), freeze_backbone=True, progress=False)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert not torch.equal(exit_before, net.exits["stage1"][-1].weight)
    assert all(p.requires_grad for p in backbone.parameters())


def test_holdout_is_kept_out_of_training(synthetic):
    rest, (held_x, _) = synthetic.split_holdout(100)
    again, (held_again, _) = synthetic.split_holdout(100)
    assert torch.equal(held_x, held_again) and len(rest.train_y) == 900
    used = training_subset(synthetic, TrainConfig(holdout=100, train_limit=500, seed=3)).train_x
    flat = lambda t: {tuple(r.flatten().tolist()) for r in t}  # noqa: E731
    assert len(used) == 500 and not flat(used) & flat(held_x)
    with pytest.raises(ValueError, match=r"held-out split \(--holdout\) must be between 1 and 999"):
        synthetic.split_holdout(1000)


@pytest.mark.parametrize("exits, match", [
    ([], "at least one exit"),
    (["block9"], "unknown stage 'block9'; exits can follow block1, block2"),
    (["final"], "'final' is the backbone's own output"),
    (["head"], "unknown stage 'head'"),
    (["block5", "features"], "exits 'block5' and 'features' name one place"),
    (["block1", "block1"], "at most one exit"),
])
def test_bad_exits_are_named(exits, match):
    with pytest.raises(ValueError, match=match):
        EarlyExitNet(get_model("vgg16", width_mult=0.125), exits)


def test_a_backbone_the_graph_cannot_trace_is_refused_and_a_sequential_is_split():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x  # data-dependent control flow

    with pytest.raises(ValueError, match="torch.fx cannot trace the model"):
        EarlyExitNet(Branchy(), ["a"], input_shape=(1, 4, 4))
    seq = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    net = EarlyExitNet(seq, ["2"], input_shape=(1, 4, 4))
    assert [o.shape for o in net(torch.randn(2, 1, 4, 4))] == [(2, 3), (2, 3)]


@pytest.mark.parametrize("lam", [-0.1, float("nan"), float("inf")])
def test_bad_lambda_is_refused(lam):
    graph = lookup_graph([[1], [2], []])
    x, y, _ = three_kinds(30)
    with pytest.raises(ValueError, match="λ .* must be a finite number >= 0"):
        fit_policies(graph, graph.all_logits(x), y, lam)


def test_parse_lambdas():
    assert parse_lambdas("0, 0.01,1") == [0.0, 0.01, 1.0]
    for bad, match in [("", "at least one λ"), ("a", "bad λ 'a'"), ("0.1,-1", "bad λ '-1'")]:
        with pytest.raises(ValueError, match=match):
            parse_lambdas(bad)


@pytest.mark.parametrize("edges, match", [
    ([(0, 3)], "unknown network; the networks are 0..2"),
    ([(1, 0), (0, 2)], "goes backwards"),
    ([(0, 1), (0, 1), (1, 2)], "given twice"),
    ([(0, 2)], "no edge leads to network 1"),
])
def test_bad_cascade_edges_are_named(edges, match):
    with pytest.raises(ValueError, match=match):
        check_edges(edges, 3)


def test_parse_edges():
    assert parse_edges("0-1, 1-2,0-2") == [(0, 1), (1, 2), (0, 2)]
    with pytest.raises(ValueError, match="FROM-TO"):
        parse_edges("0>1")


def test_cascade_with_a_jump_runs_only_the_networks_each_example_needs():
    torch.manual_seed(0)
    nets = [get_model("mlp", in_channels=1, input_size=8, hidden=[h]) for h in (4, 16, 64)]
    cascade = Cascade(nets, [(0, 1), (1, 2), (0, 2)])
    graph = cascade.graph()
    assert graph.successors == [[1, 2], [2], []] and graph.full_macs == graph.nodes[2].macs
    x = torch.randn(20, 1, 8, 8)
    calls = [0, 0, 0]
    for i, n in enumerate(nets):
        n.register_forward_hook(lambda m, inp, out, i=i: calls.__setitem__(i, calls[i] + len(inp[0])))
    outcome = graph.run(x, [FixedPolicy(2), FixedPolicy(0), None])  # jump 0 → 2 for all
    assert calls == [20, 0, 20]
    assert torch.equal(outcome.predictions, nets[2](x).argmax(1))
    route = graph.nodes[0].macs + graph.nodes[2].macs
    assert torch.allclose(outcome.macs, torch.full((20,), route, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least two networks"):
        Cascade(nets[:1])


def test_graphs_leave_every_module_in_its_mode_and_evaluate_in_eval_mode():
    # Regression: node wrappers are built in training mode; restoring only their own flag
    # switched the batch-norm networks inside to training mode (batch statistics).
    torch.manual_seed(0)
    nets = [get_model("resnet", in_channels=1, input_size=8, width_mult=0.25, blocks_per_stage=1).eval()
            for _ in range(2)]
    for net in nets:  # non-trivial running statistics
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
    x = torch.randn(9, 1, 8, 8)
    expected = [net(x) for net in nets]
    graph = Cascade(nets).graph()
    logits = graph.all_logits(x)
    graph.run(x, [FixedPolicy(1), None])
    assert not any(m.training for net in nets for m in net.modules())
    for got, want in zip(logits, expected, strict=True):
        torch.testing.assert_close(got, want)
    nets[0].train()
    graph.all_logits(x)
    assert all(m.training for m in nets[0].modules())


def test_run_checks_its_policies():
    graph = lookup_graph([[1], [2], []])
    x, _, _ = three_kinds(6)
    with pytest.raises(ValueError, match="one policy per node"):
        graph.run(x, [FixedPolicy(0)])
    with pytest.raises(ValueError, match="has successors but no policy"):
        graph.run(x, [None, FixedPolicy(0), None])
    with pytest.raises(ValueError, match="chose an option outside 0..1"):
        graph.run(x, [FixedPolicy(2), FixedPolicy(0), None])


# ---- command line -------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_adaptive_train_and_sweep(tmp_path, capsys):
    run = tmp_path / "ee"
    assert main(["adaptive", "train", "--model", "mlp", "--data", "synthetic", "--set", "hidden=[32,32]",
                 "--exits", "layer1", "--exit-weights", "0.5,1", "--epochs", "3", "--out", str(run)]) == 0
    assert "layer1" in capsys.readouterr().out
    assert RunConfig.read(run).holdout == 100  # 10% default
    out = tmp_path / "sweep"
    assert main(["adaptive", "sweep", str(run), "--lambdas", "0,0.05", "--max-loss", "1", "--batch", "64",
                 "--timing-examples", "64", "--rounds", "1", "--min-run-time", "0.01",
                 "--json", f"{out}.json", "--plot", f"{out}.png", "--markdown", f"{out}.md"]) == 0
    text = capsys.readouterr().out
    assert "learned policy" in text and "confidence threshold" in text and "ratio torch@64" in text
    doc = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["curve"] for r in doc["curves"]] == ["full network", "learned policy", "confidence threshold"]
    assert doc["timing"]["batch_sizes"] == [64] and doc["timing"]["examples"] == 64
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "sweep.md").read_text().startswith("| curve | setting |")


@pytest.mark.slow
def test_cli_adaptive_cascade(cascade_runs, tmp_path, capsys):
    assert main(["adaptive", "cascade", *cascade_runs, "--lambdas", "0,0.1", "--max-loss", "0,2", "--edges", "0-1",
                 "--no-timing", "--json", str(tmp_path / "c.json"), "--save", str(tmp_path / "saved")]) == 0
    out = capsys.readouterr().out
    assert "single networks" in out and "% exit c1" in out
    doc = json.loads((tmp_path / "c.json").read_text())
    assert [r["curve"] for r in doc["curves"]][-1] == "single networks"
    assert all(p["latency"] == [] and p["method"] == "network-selection" for r in doc["curves"] for p in r["points"])
    # The saved cascade is a run of its own: it loads, and sweeps to the same points.
    assert load_run(tmp_path / "saved").kind == "cascade"
    assert main(["adaptive", "sweep", str(tmp_path / "saved"), "--lambdas", "0,0.1", "--max-loss", "0,2",
                 "--no-timing", "--json", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert [p["accuracy"] for c in again["curves"] for p in c["points"]] == \
        [p["accuracy"] for c in doc["curves"] for p in c["points"]]


def test_cli_adaptive_frozen_backbone(cascade_runs, tmp_path, capsys):
    run = tmp_path / "frozen"
    assert main(["adaptive", "train", "--backbone", cascade_runs[1], "--data", "synthetic", "--exits", "layer1",
                 "--holdout", "200", "--epochs", "2", "--out", str(run)]) == 0
    config = RunConfig.read(run)
    assert config.provenance["backbone_run"] == cascade_runs[1] and config.model.name == "mlp"
    assert config.recipe["name"] == "frozen-exits"
    assert main(["adaptive", "train", "--backbone", cascade_runs[1], "--data", "synthetic", "--exits", "layer1",
                 "--epochs", "1", "--out", str(tmp_path / "bad")]) == 2
    assert "held out 200 training examples but this run holds out 100" in capsys.readouterr().err


def test_cascade_runs_must_share_their_holdout(cascade_runs, exit_run, tmp_path):
    other = tmp_path / "other"
    train_run(other, "mlp", "synthetic", TrainConfig(epochs=1, holdout=50), model_options={"hidden": [8]},
              progress=False)

    with pytest.raises(DynscaleError, match="hold out different numbers"):
        sweep_cascade([cascade_runs[0], other])


def test_channels_last_timing_leaves_the_callers_model_as_it_was(synthetic):
    torch.manual_seed(0)
    net = EarlyExitNet(get_model("vgg16", **tiny_options("vgg16")), ["block1"]).eval()
    graph = net.graph()
    held = (synthetic.train_x[:64], synthetic.train_y[:64])
    timing = TimingConfig(batch_sizes=[32], min_run_time=0.01, examples=64, rounds=1, warmup=1, channels_last=True)
    sweep_graph(graph, net.backbone, 1, held, (synthetic.test_x[:64], synthetic.test_y[:64]), "ee", "synthetic",
                [0.1], [], timing=timing, progress=False)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.weight.stride() == torch.empty(m.weight.shape).stride() for m in convs)
    assert not any(m.training for m in net.modules())


def test_cli_adaptive_train_takes_any_stage_boundary(tmp_path, capsys):
    run = tmp_path / "ee"
    assert main(["adaptive", "train", "--model", "mlp", "--data", "synthetic", "--set", "hidden=[16,16]",
                 "--exits", "layers.2", "--epochs", "1", "--threads", "1", "--out", str(run)]) == 0
    net, config = load_early_exit(run)
    assert config.section["exits"] == ["layers.2"] and net.exit_names == ["layers.2"]  # before the 2nd ReLU
    assert main(["adaptive", "train", "--model", "mlp", "--data", "synthetic", "--exits", "layers.9",
                 "--epochs", "1", "--out", str(tmp_path / "bad")]) == 2
    assert "--exits: unknown stage 'layers.9'; exits can follow layer1, layer2, flatten" in capsys.readouterr().err
