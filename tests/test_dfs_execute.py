"""Fractional skipping on real kernels (issue 18): the int8 simulation, the gates, the ceiling
target, and the executor (regrouping by choice, int8 kernels in PyTorch and ONNX Runtime)
against the simulated network; the sweep's executed and counted points. No timing outcome is
asserted."""

import json

import onnx
import pytest
import torch
from test_dfs import force
from torch import nn
from torch.profiler import ProfilerActivity, profile

from dynscale import get_model
from dynscale.dfs import DFSExecutor, DFSNet, FractionalSkipping, LinearGate, make_gate
from dynscale.dfs.quant import RangeTracker, quantize_weight
from dynscale.dfs.recipes import cost_sign
from dynscale.errors import DynscaleError

from tiny import tiny_options

RUNTIMES = ("torch", "onnxruntime")
INT8_TOLERANCE = 0.05  # of a block's largest output: the kernels also round each conv's and the sum's output,
# and PyTorch's x86 engine quantizes activations to 7 bits
FLOAT_TOLERANCE = 1e-5  # float32 sums in another order (channels-last, sub-batches)


class ByInput(LinearGate):
    """A gate whose choice is a fixed function of each example's input (so it is the same alone
    and in any batch), spread over ``allowed`` choice indices; no parameters learn."""

    kind = "by-input"

    def __init__(self, choices, allowed):
        nn.Module.__init__(self)
        self.choices, self.allowed = choices, torch.tensor(allowed)

    def macs(self, index):
        return 1

    def forward(self, index, x, state):
        v = x.flatten(1)[:, 0] * 0.37 + index * 0.29  # the first element of each example
        pick = self.allowed[((v - v.floor()) * len(self.allowed)).long().clamp(0, len(self.allowed) - 1)]
        return nn.functional.one_hot(pick, self.choices).float() * 10, state


def tiny_net(seed=0, choices=(0, 8, 32), quantization="int8", gate="lstm"):
    torch.manual_seed(seed)
    backbone = get_model("resnet", **tiny_options("resnet", blocks_per_stage=2), profile="all-one")
    net = DFSNet(backbone, choices, gate=gate, quantization=quantization)
    return net.calibrate(calibration())


def calibration():
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(16, 1, 8, 8, generator=generator) * 2 for _ in range(2)]


def inputs(n=24):
    generator = torch.Generator().manual_seed(2)
    return torch.rand(n, 1, 8, 8, generator=generator) * 2


# --- the int8 simulation ------------------------------------------------------------------------

def test_the_int8_scheme_matches_pytorchs_quantizers():
    from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver

    w = torch.randn(6, 4, 3, 3)
    observer = PerChannelMinMaxObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    observer(w)
    scale, zero_point = observer.calculate_qparams()
    expected = torch.fake_quantize_per_channel_affine(w, scale, zero_point.int(), 0, -128, 127)
    torch.testing.assert_close(quantize_weight(w, 8, "int8"), expected)
    x = torch.rand(8, 3, 5, 5) * 4 - 0.5
    tracker = RangeTracker()
    tracker.update(x)
    activations = MinMaxObserver(dtype=torch.quint8)
    activations(x)
    scale, zero_point = activations.calculate_qparams()
    expected = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zero_point), 0, 255)
    torch.testing.assert_close(tracker.quantize(x, 8, "int8"), expected)
    with pytest.raises(ValueError, match="8 bits only"):
        quantize_weight(w, 10, "int8")


def test_the_int8_scheme_takes_executable_choices_only():
    with pytest.raises(ValueError, match="cannot run on the CPU's kernels"):
        tiny_net(choices=(0, 10, 32))
    assert tiny_net().executable and tiny_net(choices=(0, 32), quantization="uniform").executable
    assert not tiny_net(choices=(0, 8, 32), quantization="uniform").executable
    with pytest.raises(DynscaleError, match="counted, not executed"):
        DFSExecutor(tiny_net(quantization="uniform"), calibration())


# --- gates and the target -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["lstm", "linear", "upfront"])
def test_every_gate_starts_at_full_precision_and_learns(kind):
    net = tiny_net(gate=kind)
    assert net.gate.kind == kind
    x = inputs(8)
    with torch.no_grad():
        net.eval()(x)
    assert (net.last_choices == len(net.choices) - 1).all()  # every block at full precision to start
    net.train()
    loss = nn.functional.cross_entropy(net(x), torch.arange(8) % 10) + net.last_bitops.mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.gate.parameters())
    assert net.gate_macs == sum(net.gate.macs(i) for i in range(len(net.runners))) > 0


def test_the_upfront_gate_decides_every_block_at_the_first():
    gate = make_gate("upfront", [8, 16, 16], 3)
    assert gate.macs(1) == gate.macs(2) == 0 < gate.macs(0)
    choice, state = gate.choose(0, torch.rand(4, 8, 4, 4), None)
    later, _ = gate.choose(2, torch.zeros(4, 16, 2, 2), state)  # its input is not read
    assert state.shape == (4, 3) and torch.equal(later, state[:, 2])
    with pytest.raises(ValueError, match="lstm, linear, upfront"):
        make_gate("gru", [8], 3)


@pytest.mark.parametrize("mode, below", [("two-sided", -1.0), ("ceiling", 0.0)])
def test_the_ceiling_never_pushes_the_cost_up_below_the_target(mode, below):
    assert cost_sign(0.7, 0.5, mode) == 1.0  # above the target: pushed down in both modes
    assert cost_sign(0.3, 0.5, mode) == below
    net = tiny_net(choices=(0, 32), quantization="uniform").eval()
    force(net, 0)  # every gated block skipped: the cost is below any target above it
    x, y = inputs(4), torch.arange(4)
    with torch.no_grad():
        ce = nn.functional.cross_entropy(net(x), y).item()
    cost = net.last_bitops.mean().item()
    recipe = FractionalSkipping(target=100 * cost + 20, pretrain=0, gates=0, joint=1, beta=0.5, target_mode=mode,
                                choices=[0, 32])
    with torch.no_grad():
        loss = next(recipe.losses(net, x, y, None, 0)).item()
    assert loss == pytest.approx(ce + below * 0.5 * cost, abs=1e-6)


def test_an_int8_cost_weighs_int8_blocks_in_the_cost_and_leaves_the_bitops():
    net = tiny_net().eval()
    force(net, net.choices.index(8))  # every gated block in int8
    recipe = FractionalSkipping(target=50, pretrain=0, gates=0, joint=1, execute=True, int8_cost=0.3)
    recipe.begin(net, 0)
    with torch.no_grad():
        net(inputs(4))
    fixed = (net.fixed_macs + net.gate_macs) / net.full_macs
    blocks = sum(net.block_macs) / net.full_macs
    assert net.last_bitops.tolist() == pytest.approx([fixed + blocks / 16] * 4)
    assert net.last_cost.tolist() == pytest.approx([fixed + 0.3 * blocks] * 4)
    with pytest.raises(ValueError, match="needs 8 among the choices"):
        FractionalSkipping(choices=[0, 32], int8_cost=0.3)
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        FractionalSkipping(execute=True, int8_cost=2.0)


# --- the executor -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built():
    """One tiny int8-scheme network and its executor on each runtime (they read the network's gate
    at every call: a test sets the gate it needs with :func:`gated`)."""
    net = tiny_net()  # the fixed segments in float32, as trained: the simulation's outputs exactly
    return net, {runtime: DFSExecutor(net, calibration(), runtime, fixed="float32") for runtime in RUNTIMES}


def gated(built, gate=None):
    """The shared network with ``gate`` (a fresh LSTM gate at full precision by default)."""
    net, executors = built
    net.gate = gate if gate is not None else make_gate("lstm", [b.input_shape[0] for b in net.blocks], 3)
    return net.eval(), executors

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_float_and_skip_groups_equal_the_simulation_choice_for_choice(runtime, built):
    net, executors = gated(built, ByInput(3, [0, 2]))  # skip or float32, mixed in every batch
    x, executor = inputs(), executors[runtime]
    with torch.no_grad():
        expected = net.eval()(x)
    got = executor(x)
    assert torch.equal(executor.last_choices, net.last_choices) and len(net.last_choices.unique()) == 2
    torch.testing.assert_close(got, expected, rtol=FLOAT_TOLERANCE, atol=FLOAT_TOLERANCE)
    accuracy, macs, bitops, chosen = executor.measure(x, torch.arange(len(x)) % 10)
    simulated = net.measure(x, torch.arange(len(x)) % 10)
    assert (accuracy, torch.equal(chosen, simulated[3])) == (simulated[0], True)
    assert macs == pytest.approx(simulated[1]) and bitops == pytest.approx(simulated[2])


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_int8_block_is_within_the_stated_tolerance_of_its_simulation(runtime, built):
    net, executors = gated(built)
    executor = executors[runtime]
    x = calibration()[1]  # within the calibrated ranges (the kernels clip outside them, as the simulation does)
    seen = {}
    hooks = [net.backbone.get_submodule(name).register_forward_pre_hook(
        lambda module, args, name=name: seen.__setitem__(name, args[0])) for name in net.block_names]
    with torch.no_grad():
        net.backbone(x)
    for hook in hooks:
        hook.remove()
    int8 = net.choices.index(8)
    for i, name in enumerate(net.block_names):
        state = seen[name]
        with torch.no_grad():
            simulated = net.runners[i](state, 8)
        got = executor.paths[i][int8](executor.layout(state))
        assert (got - simulated).abs().max() <= INT8_TOLERANCE * simulated.abs().max(), name
    force(net, int8)  # the whole network with every gated block in int8
    with torch.no_grad():
        expected = net(x)
    got = executor(x)
    assert (executor.last_choices == int8).all()
    assert (got - expected).abs().max() <= 2 * INT8_TOLERANCE * expected.abs().max()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_examples_output_is_the_same_alone_and_in_any_batch(runtime, built):
    net, executors = gated(built, ByInput(3, [0, 1, 2]))
    executor = executors[runtime]
    x = inputs()
    batch = executor(x)
    assert len(executor.last_choices.unique()) == 3
    alone = torch.cat([executor(x[i:i + 1]) for i in range(len(x))])
    torch.testing.assert_close(alone, batch, rtol=FLOAT_TOLERANCE, atol=FLOAT_TOLERANCE)
    reordered = executor(x.flip(0)).flip(0)
    torch.testing.assert_close(reordered, batch, rtol=FLOAT_TOLERANCE, atol=FLOAT_TOLERANCE)


def _operators(executor, x):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        executor(x)
    return {e.name for e in prof.events()}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_batch_all_in_one_group_runs_without_any_index_operation(runtime, built):
    net, executors = gated(built)
    executor = executors[runtime]
    indexing = {"aten::index", "aten::index_select", "aten::index_copy_", "aten::nonzero"}
    for choice in range(len(net.choices)):
        force(net, choice)
        assert not indexing & _operators(executor, inputs(6))
    net.gate = ByInput(3, [0, 1, 2])
    assert {"aten::index", "aten::index_copy_"} <= _operators(executor, inputs(12))


def test_a_skipped_identity_block_passes_its_input_and_a_projection_runs_its_shortcut(built):
    executor = built[1]["torch"]
    names = executor.net.block_names  # layers.0.1 (identity), layers.1.0 (projection)…
    assert executor.paths[names.index("layers.0.1")][0] is None
    assert executor.paths[names.index("layers.1.0")][0] is not None


def test_the_int8_blocks_really_are_quantized(built):
    net, executors = built
    int8 = net.choices.index(8)
    kernel = executors["torch"].paths[0][int8]
    modules = {type(m).__module__ for m in kernel.int8.modules()}
    assert any(m.startswith("torch.ao.nn.quantized") for m in modules)
    x = torch.rand(2, 8, 8, 8).contiguous(memory_format=torch.channels_last)
    q = torch.quantize_per_tensor(x, kernel.int8.input_scale, kernel.int8.input_zero_point, torch.quint8)
    assert kernel.int8(q).dtype == torch.quint8
    session = executors["onnxruntime"].paths[0][int8]
    graph = onnx.load_from_string(session.model_bytes).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    weights = [t for t in graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == onnx.TensorProto.INT8 for t in weights)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_fixed_segments_run_in_int8_when_the_blocks_may(runtime, built):
    net, executors = gated(built, ByInput(3, [0, 2]))
    executor = DFSExecutor(net, calibration(), runtime)  # auto: int8 among the choices
    assert executor.fixed == "int8" and executors[runtime].fixed == "float32"
    fixed = [item for kind, item in executor.plan if kind == "fixed"]
    assert len(fixed) == 2 and all(type(k).__name__ in ("TorchQuantized", "OrtKernel") for k in fixed)
    x, y = calibration()[1], torch.arange(16) % 10
    float_fixed = executors[runtime](x)
    got = executor(x)
    assert torch.equal(executor.last_choices, executors[runtime].last_choices)
    assert (got - float_fixed).abs().max() <= 2 * INT8_TOLERANCE * float_fixed.abs().max()
    counted = executor.measure(x, y)[2], executors[runtime].measure(x, y)[2]
    assert counted[0] < counted[1]  # the fixed segments' BitOps at (8/32)²
    assert DFSExecutor(tiny_net(choices=(0, 32), quantization="uniform"), calibration(), runtime).fixed == "float32"
    with pytest.raises(ValueError, match="auto, float32, int8"):
        DFSExecutor(net, calibration(), runtime, fixed="int4")


@pytest.mark.parametrize("kind", ["linear", "upfront"])
def test_the_executor_runs_the_cheaper_gates_as_trained(kind):
    net = tiny_net(gate=kind)
    with torch.no_grad():
        for p in net.gate.parameters():
            p.normal_(0, 3.0)
    x = inputs()
    with torch.no_grad():
        expected = net.eval()(x)
    executor = DFSExecutor(net, calibration(), "onnxruntime", fixed="float32")
    got = executor(x)
    float_or_skip = (net.last_choices != net.choices.index(8)).all(1)
    assert torch.equal(executor.last_choices[float_or_skip], net.last_choices[float_or_skip])
    torch.testing.assert_close(got[float_or_skip], expected[float_or_skip], rtol=FLOAT_TOLERANCE,
                               atol=FLOAT_TOLERANCE)


def test_a_torchvision_resnet18_runs_on_the_executor(torchvision):
    torch.manual_seed(0)
    backbone = torchvision.models.resnet18(num_classes=10).eval()
    net = DFSNet(backbone, (0, 8, 32), input_shape=(3, 32, 32), quantization="int8")
    batches = [torch.rand(8, 3, 32, 32) for _ in range(2)]
    net.calibrate(batches)
    net.gate = ByInput(3, [0, 2])
    x = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        expected = net.eval()(x)
    for runtime in RUNTIMES:
        executor = DFSExecutor(net, batches, runtime, fixed="float32")
        torch.testing.assert_close(executor(x), expected, rtol=1e-4, atol=1e-4)
        assert torch.equal(executor.last_choices, net.last_choices)


# --- runs, the sweep and the command line -------------------------------------------------------

def test_gate_and_quantization_are_saved_reloaded_and_checked(dfs_runs, tmp_path):
    import shutil

    from dynscale.errors import CheckpointError
    from dynscale.runs import load_run

    net = load_run(dfs_runs["execute"]).model
    assert (net.gate.kind, net.quantization, net.choices, net.executable) == ("upfront", "int8", [0, 8, 32], True)
    paper = load_run(dfs_runs["paper"]).model
    assert (paper.gate.kind, paper.quantization, paper.executable) == ("lstm", "uniform", False)
    for key, value, match in (("gate", "gru", "section.gate"), ("quantization", "int4", "section.quantization")):
        bad = tmp_path / f"bad-{key}"
        shutil.copytree(dfs_runs["execute"], bad)
        doc = json.loads((bad / "config.json").read_text())
        doc["section"][key] = value
        (bad / "config.json").write_text(json.dumps(doc))
        with pytest.raises(CheckpointError, match=match):
            load_run(bad)
    bad = tmp_path / "bad-choices"
    shutil.copytree(dfs_runs["execute"], bad)
    doc = json.loads((bad / "config.json").read_text())
    doc["section"]["choices"] = doc["recipe"]["choices"] = [0, 10, 32]
    (bad / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="cannot run on the CPU's kernels"):
        load_run(bad)


def test_the_sweep_executes_what_runs_and_counts_what_is_simulated(dfs_runs):
    from dynscale.dfs import dfs_curves
    from dynscale.eval import TimingConfig

    timing = TimingConfig(batch_sizes=[2], rounds=1, warmup=1, min_run_time=0.001, runtimes=list(RUNTIMES))
    curves = {c.label: c for c in dfs_curves([dfs_runs["execute"], dfs_runs["paper"], dfs_runs["backbone"]], int8=True,
                                             timing=timing, progress=False)}
    assert list(curves) == ["dfs (executed, torch)", "dfs (executed, onnxruntime)", "dfs (simulated)",
                            "backbone: dense", "backbone: static int8"]
    for runtime in RUNTIMES:
        (point,) = curves[f"dfs (executed, {runtime})"].points
        assert point.saving == "measured" and [lat.runtime for lat in point.latency] == [runtime]
        assert point.knobs == {"target": 40.0, "runtime": runtime, "fixed": "int8"}
        assert "simulated_accuracy" in point.extra
    (simulated,) = curves["dfs (simulated)"].points
    assert simulated.saving == "counted" and not simulated.executed and simulated.latency == []
    assert [p.label for p in curves["backbone: static int8"].points] == ["int8 (ONNX Runtime QDQ)",
                                                                          "int8 (PyTorch x86)"]


def test_dfs_train_execute_and_sweep_from_the_command_line(dfs_runs, tmp_path, capsys):
    from dynscale.cli import main

    out = tmp_path / "cli"
    main(["dfs", "train", "--backbone", str(dfs_runs["backbone"]), "--data", "synthetic", "--target", "50",
          "--execute", "--gate", "linear", "--target-mode", "ceiling", "--gate-epochs", "1", "--joint-epochs", "0",
          "--train-limit", "200", "--threads", "1", "--quiet", "--out", str(out)])
    config = json.loads((out / "config.json").read_text())
    assert config["section"]["gate"] == "linear" and config["section"]["quantization"] == "int8"
    assert config["recipe"]["target_mode"] == "ceiling" and config["recipe"]["choices"] == [0, 8, 32]
    report = tmp_path / "sweep.json"
    main(["dfs", "sweep", str(out), "--latency", "--batch", "1", "--rounds", "1", "--min-run-time", "0.001",
          "--quiet", "--json", str(report)])
    doc = json.loads(report.read_text())
    savings = {(c["label"], p["saving"]) for c in doc["curves"] for p in c["points"]}
    assert savings == {("dfs (executed, torch)", "measured"), ("dfs (executed, onnxruntime)", "measured")}
    assert "dfs (executed, onnxruntime)" in capsys.readouterr().out
