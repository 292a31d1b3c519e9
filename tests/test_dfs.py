"""Dynamic fractional skipping: the quantizer, cost accounting, the gate's gradient, real skipping,
training in three phases, the baselines, and bad input."""

import pytest
import torch

from dynscale import get_model
from dynscale.cost import count_macs
from dynscale.dfs import (
    DFSNet,
    FractionalSkipping,
    check_choices,
    check_target,
    dfs_curves,
    fake_quantize,
    plot_choices,
    quantize_weight,
    train_dfs_run,
)
from dynscale.train import TrainConfig

from tiny import tiny_options


def test_the_quantizer_rounds_to_its_levels_and_passes_the_gradient_straight_through():
    x = torch.tensor([-1.0, 0.0, 0.1, 0.5, 0.74, 0.76, 2.0], requires_grad=True)
    q = fake_quantize(x, 2, 0.0, 1.5)  # 4 levels: 0, 0.5, 1, 1.5
    assert q.tolist() == [0.0, 0.0, 0.0, 0.5, 0.5, 1.0, 1.5]
    q.sum().backward()
    assert x.grad.tolist() == [1.0] * 7  # straight through, clamped values included
    assert torch.equal(fake_quantize(x, 32, 0.0, 1.0), x)  # full precision is the identity
    w = torch.linspace(-1, 1, 101)
    levels = quantize_weight(w, 3).unique()
    assert len(levels) == 8 and levels.min() == -1 and levels.max() == 1


def tiny_dfs(seed=0, choices=(0, 8, 16, 32)):
    torch.manual_seed(seed)
    backbone = get_model("resnet", **tiny_options("resnet"), profile="all-one")  # 3 blocks: 2 gated
    return DFSNet(backbone, choices).calibrate([torch.rand(16, 1, 8, 8)])


def force(net, choice_index):
    with torch.no_grad():
        net.gate.score.weight.zero_()
        net.gate.score.bias.fill_(-10.0)
        net.gate.score.bias[choice_index] = 10.0


def test_cost_accounting_on_a_hand_computed_case():
    net = tiny_dfs()
    x = torch.rand(4, 1, 8, 8)
    # ResNet-8 at width 0.5: 8, 16, 32 channels; the gated blocks are stage 2 (8→16, stride 2,
    # 4×4) and stage 3 (16→32, stride 2, 2×2); their two 3×3 convolutions:
    stage2 = 16 * 8 * 9 * 16 + 16 * 16 * 9 * 16
    stage3 = 32 * 16 * 9 * 4 + 32 * 32 * 9 * 4
    assert net.block_macs == [stage2, stage3]
    assert net.full_macs == count_macs(net.backbone, x[:1])
    gates = net.gate_macs / len(net.block_macs)  # per block
    for index, bits in enumerate(net.choices):
        force(net, index)
        with torch.no_grad():
            net(x)
        expected = (net.fixed_macs + (stage2 + stage3) * (bits / 32) ** 2) / net.full_macs
        expected += sum(net.gate.macs(i) for i in range(2)) / net.full_macs
        assert net.last_bitops.tolist() == pytest.approx([expected] * 4)
        performed = net.fixed_macs + (stage2 + stage3 if bits else 0) + sum(net.gate.macs(i) for i in range(2))
        assert net.last_macs.tolist() == pytest.approx([performed] * 4)
        assert (net.last_choices == index).all()
    assert gates > 0


def test_full_precision_is_the_backbone():
    net = tiny_dfs()
    x = torch.rand(5, 1, 8, 8)
    force(net, len(net.choices) - 1)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.backbone(x))
        net.mode = "full"
        torch.testing.assert_close(net(x), net.backbone(x))


def test_the_gates_straight_through_gradient_reaches_the_gate():
    net = tiny_dfs().train()
    x, y = torch.rand(8, 1, 8, 8), torch.arange(8) % 10
    loss = torch.nn.functional.cross_entropy(net(x), y) + net.last_bitops.mean()
    loss.backward()
    for name, parameter in net.gate.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_a_block_every_example_skips_runs_no_convolution():
    net = tiny_dfs()
    force(net, 0)  # skip
    calls = []
    for runner in net.runners:
        for conv in (runner.block.conv1, runner.block.conv2):
            conv.register_forward_pre_hook(lambda *_: calls.append(1))
    quantized = [0]
    import dynscale.dfs.blocks as blocks

    original = blocks._layer
    blocks._layer = lambda *a: (quantized.__setitem__(0, quantized[0] + 1), original(*a))[1]
    try:
        with torch.no_grad():
            net(torch.rand(6, 1, 8, 8))
    finally:
        blocks._layer = original
    assert calls == [] and quantized == [0]
    assert (net.last_choices == 0).all()


def test_each_example_takes_its_own_choice_in_one_batch():
    net = tiny_dfs(seed=3)
    x = torch.rand(12, 1, 8, 8) * torch.linspace(0.1, 3, 12)[:, None, None, None]
    with torch.no_grad():
        net.gate.score.bias.zero_()
        torch.nn.init.normal_(net.gate.score.weight, std=100.0)  # choices that differ between examples
        batch = net(x)
        choices = net.last_choices.clone()
        alone = torch.cat([net(x[i:i + 1]) for i in range(12)])
    assert len(choices.unique()) > 1
    torch.testing.assert_close(batch, alone, rtol=1e-4, atol=1e-4)


def _statistics(net):
    """Every batch-norm buffer and range of the gated blocks, by name."""
    return {k: v.clone() for k, v in net.state_dict().items()
            if k.startswith("runners.") and k.rsplit(".", 1)[1] in
            ("running_mean", "running_var", "num_batches_tracked", "low", "high", "seen")}


def test_one_training_step_updates_the_statistics_once_from_the_chosen_path():
    import copy

    net = tiny_dfs()
    force(net, net.choices.index(8))  # every example at 8 bits
    reference = copy.deepcopy(net)
    x, y = torch.rand(8, 1, 8, 8), torch.arange(8) % 10
    net.train()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    # A single update: each block run once, at 8 bits, on the whole batch.
    reference.mode, reference.static_bits = "static", 8
    reference.train()
    with torch.no_grad():
        reference(x)
    got, want = _statistics(net), _statistics(reference)
    assert set(got) == set(want) and any("num_batches_tracked" in k for k in got)
    for name in want:
        torch.testing.assert_close(got[name], want[name], msg=name)


def test_mixed_choices_update_each_statistic_once_from_the_examples_that_run_the_block():
    net = tiny_dfs(seed=3)
    with torch.no_grad():
        net.gate.score.bias.zero_()
        torch.nn.init.normal_(net.gate.score.weight, std=100.0)  # choices that differ between examples
    before = _statistics(net)
    calls = []
    for runner in net.runners:
        runner.register_forward_pre_hook(lambda m, args: calls.append((m, args[0].clone(), args[1])))
    x = torch.rand(12, 1, 8, 8) * torch.linspace(0.1, 3, 12)[:, None, None, None]
    net.train()
    net(x)
    assert len(net.last_choices.unique()) > 1
    after = _statistics(net)
    for name, value in after.items():
        if name.endswith("num_batches_tracked"):
            assert value == before[name] + 1, name  # one update per step, the all-choices pass aside
    for i, runner in enumerate(net.runners):
        module, inputs, bits = next(c for c in calls if c[0] is runner)  # the chosen path comes first
        running = inputs[bits > 0]
        if len(running):
            expected = before[f"runners.{i}.inputs.high"].lerp(running.max(), runner.inputs.momentum)
            torch.testing.assert_close(after[f"runners.{i}.inputs.high"], expected)


def test_the_all_choices_pass_leaves_the_statistics_alone():
    net = tiny_dfs()
    before = _statistics(net)
    runner = net.runners[0]
    state = torch.rand(3, 8, 8, 8)
    runner.train()
    with runner.frozen():
        for bits in net.choices:
            runner(state, bits)
    assert runner.training and runner.block.training
    for name, value in _statistics(net).items():
        torch.testing.assert_close(value, before[name], msg=name)


def test_quantizing_with_ranges_that_saw_no_data_is_an_error():
    from dynscale.errors import DynscaleError

    torch.manual_seed(0)
    net = DFSNet(get_model("resnet", **tiny_options("resnet"), profile="all-one"), (0, 8, 32)).eval()
    with torch.no_grad():
        net.mode = "full"
        net(torch.rand(2, 1, 8, 8))  # full precision needs no range
        net.mode, net.static_bits = "static", 8
        with pytest.raises(DynscaleError, match="have seen no data.*calibrate"):
            net(torch.rand(2, 1, 8, 8))


def test_calibration_works_on_a_copy(synthetic):
    from dynscale.dfs import calibrated

    backbone = get_model("resnet", **tiny_options("resnet"), profile="all-one")
    backbone.train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    net = calibrated(backbone, synthetic)
    assert net.backbone is not backbone and backbone.training
    for name, value in backbone.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(bool(r.inputs.seen) and bool(r.middle.seen) for r in net.runners)
    # Its batch-norm statistics are the backbone's: calibration sets only the activation ranges.
    copied = net.backbone.state_dict()
    assert all(torch.equal(copied[k], v) for k, v in before.items())


def test_the_gate_phase_trains_towards_full_execution_or_the_target():
    net = tiny_dfs()  # in eval mode: the same loss on each call
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy(net(x), y).item()
    cost = net.last_bitops.mean().item()  # every block at full precision: above the 50% target
    assert cost > 0.5
    for objective, sign in (("full", -1.0), ("target", 1.0)):  # below 100% pushed up; above 50% down
        recipe = FractionalSkipping(target=50, pretrain=0, gates=1, joint=1, beta=0.5, gate_objective=objective)
        with torch.no_grad():
            gates, joint = (next(recipe.losses(net, x, y, None, phase)).item() for phase in (0, 1))
        assert gates == pytest.approx(ce + sign * 0.5 * cost, abs=1e-5), objective
        assert joint == pytest.approx(ce + 0.5 * cost, abs=1e-5), objective  # the joint phase: the target


@pytest.mark.parametrize("make, match", [
    (lambda: check_target(0), r"in \(0, 100\]"),
    (lambda: check_target(120), r"in \(0, 100\]"),
    (lambda: check_target(float("nan")), r"in \(0, 100\]"),
    (lambda: check_choices([]), "at least two choices"),
    (lambda: check_choices([16]), "at least two choices"),
    (lambda: check_choices([0, -4]), "a bit-width from 1 to 32"),
    (lambda: check_choices([0, 64]), "a bit-width from 1 to 32"),
    (lambda: check_choices([0, 8, 8]), "each choice once"),
    (lambda: FractionalSkipping(beta=-1), "beta"),
    (lambda: FractionalSkipping(pretrain=0, gates=0, joint=0), "at least one phase"),
    (lambda: FractionalSkipping(gate_objective="half"), "full or target"),
    (lambda: FractionalSkipping(target_mode="floor"), "two-sided or ceiling"),
    (lambda: FractionalSkipping(gate="gru"), "lstm, linear, upfront"),
    (lambda: FractionalSkipping(execute=True, choices=[0, 10, 32]), "cannot run on the CPU's kernels"),
])
def test_bad_settings_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_network_without_residual_blocks_is_refused_in_one_line():
    from dynscale.errors import DynscaleError

    with pytest.raises(DynscaleError, match="^VGG has no residual blocks; .* two or more") as info:
        DFSNet(get_model("vgg16", width_mult=0.125))
    assert "\n" not in str(info.value)


def test_a_run_saved_before_the_model_graph_loads_and_gives_the_same_outputs():
    from pathlib import Path

    from safetensors.torch import load_file

    from dynscale.runs import load_run

    run = Path(__file__).parent / "fixtures" / "dfs-before-graph"  # written by dynscale at f5878d8
    expected = load_file(str(run / "expected.safetensors"))
    net = load_run(run).model.eval()
    assert net.block_names == ["layers.1.0", "layers.2.0"]
    with torch.no_grad():
        net.gate.score.weight.copy_(expected["score"])
        net.gate.score.bias.copy_(expected["bias"])
        logits = net(expected["x"])
    assert torch.equal(net.last_choices, expected["choices"]) and len(expected["choices"].unique()) == 3
    torch.testing.assert_close(logits, expected["logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net.last_bitops, expected["bitops"])


def test_a_torchvision_resnet18_takes_gates_on_the_blocks_the_graph_finds(torchvision):
    torch.manual_seed(0)
    backbone = torchvision.models.resnet18(num_classes=10).eval()
    net = DFSNet(backbone, (0, 8, 32), input_shape=(3, 32, 32))
    assert net.block_names == ["layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0", "layer4.1"]
    x = torch.rand(6, 3, 32, 32)
    net.calibrate([torch.rand(8, 3, 32, 32)])
    with torch.no_grad():
        force(net, 2)  # full precision: the network itself
        torch.testing.assert_close(net(x), backbone(x), rtol=1e-4, atol=1e-4)
        force(net, 0)  # every gated block skipped: only its shortcut (a downsampling projection or x) runs
        skipped = net(x)
    def shortcut_only(block, x):
        return torch.relu(block.downsample(x) if block.downsample is not None else x)
    with torch.no_grad():
        h = backbone.layer1[0](backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x)))))
        for name in net.block_names:
            h = shortcut_only(backbone.get_submodule(name), h)
        reference = backbone.fc(torch.flatten(backbone.avgpool(h), 1))
    torch.testing.assert_close(skipped, reference, rtol=1e-4, atol=1e-4)
    # Training: one update per step, and the gate's gradient arrives.
    net.train()
    with torch.no_grad():
        net.gate.score.bias.zero_()
        torch.nn.init.normal_(net.gate.score.weight, std=100.0)
    tracked = backbone.layer2[0].downsample[1].num_batches_tracked.item()
    loss = torch.nn.functional.cross_entropy(net(x), torch.arange(6)) + net.last_bitops.mean()
    loss.backward()
    assert backbone.layer2[0].downsample[1].num_batches_tracked.item() == tracked + 1
    assert net.gate.score.weight.grad.abs().sum() > 0


def test_a_converted_torchvision_resnet18_takes_gates(torchvision):
    from dynscale.models.converted import convert

    torch.manual_seed(0)
    converted = convert(torchvision.models.resnet18(num_classes=10).eval()).eval()
    net = DFSNet(converted, (0, 8, 32), input_shape=(3, 32, 32))
    assert len(net.block_names) == 7 and net.block_names[0] == "layer1.1"
    x = torch.rand(4, 3, 32, 32)
    net.calibrate([torch.rand(8, 3, 32, 32)])
    with torch.no_grad():
        force(net, 2)
        torch.testing.assert_close(net(x), converted(x), rtol=1e-4, atol=1e-4)
        force(net, 1)
        eight = net(x)
    assert not torch.allclose(eight, converted(x)) and net.last_bitops.mean() < 0.5


@pytest.mark.slow
def test_three_phases_train_and_sweep_with_the_baselines(tmp_path, synthetic):
    from dynscale.idp import train_run
    from dynscale.runs import load_run

    options = {"width_mult": 0.5, "blocks_per_stage": 1}
    config = TrainConfig(epochs=2, train_limit=600, batch_size=50)
    recipe = FractionalSkipping(target=40, pretrain=1, gates=1, joint=1, choices=[0, 8, 32])
    run = train_dfs_run(tmp_path / "dfs", "resnet", synthetic, config, recipe, options, progress=False)
    loaded = load_run(run)
    assert loaded.kind == "dfs" and loaded.model.choices == [0, 8, 32]
    assert [p["phase"] for p in loaded.metrics["phases"]] == ["pretrain", "gates", "joint"]
    assert 0 < loaded.metrics["bitops_ratio"] <= 1.1
    backbone = train_run(tmp_path / "backbone", "resnet", synthetic, config,
                         model_options={"profile": "all-one", **options}, progress=False)
    skipnet = train_dfs_run(tmp_path / "skipnet", "resnet", synthetic, config,
                            FractionalSkipping(target=60, gates=1, joint=0, choices=[0, 32]), backbone_run=backbone,
                            progress=False)
    assert [p["phase"] for p in load_run(skipnet).metrics.get("phases", [{"phase": "gates"}])] == ["gates"]
    curves = dfs_curves([run, skipnet, backbone, run], static_bits=[8, 16], int8=True, progress=False)
    methods = [(c.curve, [p.label for p in c.points]) for c in curves]
    # The gated runs of one method form one curve per way they ran (here the same run twice), the baselines follow;
    # the paper's bit-widths are simulated, SkipNet-style choices executed on both runtimes.
    assert methods[:3] == [("dfs (simulated)", ["dfs (target 40%)"] * 2),
                           ("skipnet (executed, torch)", ["skipnet (target 60%)"]),
                           ("skipnet (executed, onnxruntime)", ["skipnet (target 60%)"])]
    assert methods[3:] == [("dense", ["dense"]), ("static int8", ["int8 (ONNX Runtime QDQ)", "int8 (PyTorch x86)"]),
                           ("static", ["8 bits", "16 bits"])]
    static = curves[5].points
    assert static[0].bitops_ratio < static[1].bitops_ratio < 1 and static[0].saving == "counted"
    dense_point, (ort8, torch8) = curves[3].points[0], curves[4].points
    assert ort8.bitops_ratio == pytest.approx(1 / 16) and ort8.executed and not static[0].executed
    assert ort8.accuracy > dense_point.accuracy - 0.1 and torch8.accuracy > dense_point.accuracy - 0.1
    assert "choices" in curves[0].points[0].extra and len(curves[0].points[0].extra["choices"]) == 2
    assert plot_choices(curves, tmp_path / "choices.png").read_bytes()[:4] == b"\x89PNG"
