"""DyVEDeep: the shared primitive, each knob doing nothing and acting (with exact counts), the
effort network, the tuner's bound, runs, and bad settings."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dynscale
from dynscale.effort import (
    SDSS,
    SFMA,
    SPET,
    EffortConv2d,
    EffortLinear,
    EffortNet,
    EffortSettings,
    LayerEffort,
    apply,
    conv_at,
    off,
    tune,
)
from dynscale.effort.kernels import KERNELS

from tiny import tiny_model


@pytest.mark.parametrize("stride, padding, dilation, size", [
    (1, 1, 1, 8), (1, 1, 1, 5), (2, 1, 1, 9), (1, 2, 2, 7), (1, 0, 1, 12), (2, 0, 1, 6)])
def test_the_primitive_is_exact_at_the_positions_it_computes(stride, padding, dilation, size):
    torch.manual_seed(0)
    x = torch.randn(3, 5, size, size)
    w, b = torch.randn(6, 5, 3, 3), torch.randn(6)
    dense = F.conv2d(x, w, b, stride, padding, dilation)  # (3, 6, H', W')
    positions = torch.stack(torch.meshgrid(*[torch.arange(n) for n in (3, *dense.shape[2:])], indexing="ij"),
                            -1).reshape(-1, 3)[::2]  # every other position
    values = conv_at(x, w, b, positions, (stride, stride), (padding, padding), (dilation, dilation))
    assert values.shape == (len(positions), 6)
    torch.testing.assert_close(values, dense[positions[:, 0], :, positions[:, 1], positions[:, 2]],
                               rtol=1e-5, atol=1e-5)


def conv_layer(c_in, c_out, k, padding, weight=None, bias=None, relu=True, stride=1):
    conv = nn.Conv2d(c_in, c_out, k, padding=padding, stride=stride)
    w = conv.weight.detach() if weight is None else weight
    b = conv.bias.detach() if bias is None else bias
    return EffortConv2d(w, b, conv, relu)


@pytest.mark.parametrize("effort", [LayerEffort(spet=SPET(1.0, 0.0)), LayerEffort(sdss=SDSS(2, 0.0, 0.0)),
                                    LayerEffort(sdss=SDSS(1, 5.0, 5.0)), LayerEffort(sfma=SFMA(0.0)), LayerEffort()])
def test_each_knob_at_a_setting_that_does_nothing_is_the_dense_layer(effort):
    torch.manual_seed(0)
    layer = conv_layer(4, 6, 3, 1)
    x = torch.randn(2, 4, 8, 8)
    layer.effort = effort
    dense = F.relu(F.conv2d(x, layer.weight, layer.bias, padding=1))
    assert torch.equal(layer(x), dense)
    assert layer.last_macs.tolist() == [6 * 4 * 9 * 64] * 2


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("batch, size, stride", [(1, 2, 1), (1, 7, 1), (3, 8, 2), (2, 5, 1)])
def test_every_dense_kernel_is_the_convolution(kernel, batch, size, stride):
    torch.manual_seed(0)
    layer = conv_layer(5, 7, 3, 1, stride=stride)
    x = torch.randn(batch, 5, size, size)
    layer.set_kernels({(batch, 1): kernel, (batch, 2): kernel})
    for grid in (1, 2):
        expected = F.relu(F.conv2d(x, layer.weight, layer.bias, stride * grid, 1))
        torch.testing.assert_close(layer.dense(x, grid=grid), expected, rtol=1e-5, atol=1e-5)


def test_spet_finishes_only_the_filters_that_may_fire_and_counts_exactly():
    # A 1×1 convolution, y_f = relu(±x0 + x1 − 10), channel 0 the more significant (first). The
    # partial map of filter 0 is x0 − 10: positive where x0 = 20 (the top-left corner), so filter
    # 0 is finished everywhere; filter 1's, −x0 − 10, is negative everywhere: predicted zero,
    # though x1 − 10 > 0 at some positions. The second example has x0 = 0: both predicted zero.
    weight = torch.tensor([[1.0, 1.0], [-1.0, 1.0]]).view(2, 2, 1, 1)
    layer = conv_layer(2, 2, 1, 0, weight=weight, bias=torch.tensor([-10.0, -10.0]))
    x = torch.zeros(2, 2, 4, 4)
    x[0, 0, :2, :2] = 20.0
    x[:, 1] = torch.arange(16.0).view(4, 4)
    layer.effort = LayerEffort(spet=SPET(0.5, 0.0))
    y = layer(x)
    expected = torch.zeros(2, 2, 4, 4)
    expected[0, 0] = F.relu(x[0, 0] + x[0, 1] - 10)
    assert torch.equal(y, expected)
    # Partial sums: 2 filters × 1 input × 16 positions; the rest: 1 filter × 1 input × 16 (none
    # in the second example), though the batch computes filter 0 for both.
    assert layer.last_macs.tolist() == [32 + 16, 32]
    assert layer.last_active.tolist() == [[True, False], [False, False]]
    assert torch.equal(layer(x[1:]), expected[1:])  # alone, the same output
    assert layer.last_macs.tolist() == [32]


def test_sdss_interpolates_insignificant_regions_and_counts_exactly():
    # ReLU(conv(0) − 1) = 0 everywhere, so every grid value is insignificant: on a 5×5 output
    # the 3×3 grid is computed, the 16 other positions interpolated (4 products per value).
    layer = conv_layer(3, 2, 3, 1, bias=torch.full((2,), -1.0))
    layer.effort = LayerEffort(sdss=SDSS(2, 0.5, 0.0))
    assert torch.equal(layer(torch.zeros(1, 3, 5, 5)), torch.zeros(1, 2, 5, 5))
    assert layer.last_macs.tolist() == [9 * 2 * 3 * 9 + 16 * 2 * 4]
    assert not layer.last_active.any() and layer.last_active.shape == (1, 16)
    # Decisions are per position over all channels: map 0 is 0 everywhere, map 1 about 100
    # (significant, no spread allowed), so the 16 off-grid positions are computed exactly.
    torch.manual_seed(0)
    layer = conv_layer(3, 2, 3, 1, weight=torch.randn(2, 3, 3, 3) * 0.1, bias=torch.tensor([-100.0, 100.0]))
    layer.effort = LayerEffort(sdss=SDSS(2, 0.5, 0.0))
    x = torch.randn(1, 3, 5, 5)
    dense = F.relu(F.conv2d(x, layer.weight, layer.bias, padding=1))
    torch.testing.assert_close(layer(x), dense, rtol=1e-5, atol=1e-5)
    assert layer.last_macs.tolist() == [(9 + 16) * 2 * 3 * 9]


@pytest.mark.parametrize("size, stride, grid, fringe", [(6, 2, 9, 11), (7, 3, 9, 0), (8, 3, 9, 15), (5, 4, 4, 0)])
def test_sdss_computes_positions_past_the_last_grid_cell_exactly(size, stride, grid, fringe):
    # On a blank input every cell is calm: the grid is computed, every position inside a cell
    # is interpolated, and those past the last grid row or column (no cell) computed exactly.
    layer = conv_layer(3, 2, 3, 1, bias=torch.full((2,), -1.0))
    layer.effort = LayerEffort(sdss=SDSS(stride, 0.5, 0.0))
    assert torch.equal(layer(torch.zeros(1, 3, size, size)), torch.zeros(1, 2, size, size))
    filled = size * size - grid - fringe
    assert layer.last_macs.tolist() == [(grid + fringe) * 2 * 3 * 9 + filled * 2 * 4]
    assert layer.last_active.sum().item() == fringe


def test_sdss_interpolates_smooth_maps_and_agrees_with_dense_there():
    # A linear ramp is reproduced exactly by bilinear interpolation: with a spread threshold above
    # its step, every off-grid position is filled and the output still equals the dense one.
    layer = conv_layer(1, 1, 1, 0, weight=torch.ones(1, 1, 1, 1), bias=torch.zeros(1))
    x = torch.arange(9.0).view(1, 1, 1, 9).expand(1, 1, 9, 9) + torch.arange(9.0).view(1, 1, 9, 1)
    layer.effort = LayerEffort(sdss=SDSS(2, 0.0, 4.5))  # cells span 4 in value
    torch.testing.assert_close(layer(x), x, rtol=0, atol=1e-5)
    assert not layer.last_active.any()
    layer.effort = LayerEffort(sdss=SDSS(2, 0.0, 3.5))
    torch.testing.assert_close(layer(x), x, rtol=0, atol=1e-5)
    assert layer.last_active.all()


def test_sfma_reads_uniform_tiles_as_their_mean_and_counts_exactly():
    # On a constant input, without padding, every tile is uniform: mean(x)·Σw is exact. A 4×4
    # output in 2×2 tiles: 4 tiles of 4 positions.
    torch.manual_seed(0)
    layer = conv_layer(3, 4, 3, 0)
    x = torch.full((1, 3, 6, 6), 0.7)
    layer.effort = LayerEffort(sfma=SFMA(1e-6, 2))
    dense = F.relu(F.conv2d(x, layer.weight, layer.bias))
    torch.testing.assert_close(layer(x), dense, rtol=1e-5, atol=1e-5)
    statistics = 3 * (36 + 4)  # x² of every input value, the bound's weighting per tile
    means = 4 * 3 * 4  # mean·Σw of every tile: C_in × C_out products
    assert layer.last_macs.tolist() == [statistics + means]
    # Noise in the top-left 2×2 input corner: only the first tile's input region (rows and
    # columns 0-3) sees it; it is computed exactly, the other three stay uniform.
    x[0, :, :2, :2] = torch.randn(3, 2, 2)
    dense = F.relu(F.conv2d(x, layer.weight, layer.bias))
    torch.testing.assert_close(layer(x), dense, rtol=1e-5, atol=1e-5)
    assert layer.last_active.tolist() == [[True, False, False, False]]
    assert layer.last_macs.tolist() == [statistics + means + 4 * 4 * 3 * 9]


def test_sfma_bounds_the_error_it_allows():
    # The threshold bounds how far any output of a uniform tile may move: with the bound at
    # 0.05, no output differs from the dense layer's by more, on inputs of every spread.
    torch.manual_seed(0)
    layer = conv_layer(4, 6, 3, 0, relu=False)
    layer.effort = LayerEffort(sfma=SFMA(0.05, 4))
    uniform = []
    for scale in (1e-4, 1e-3, 3e-3, 1e-2, 1e-1):
        x = 1.0 + scale * torch.randn(3, 4, 14, 14)
        error = (layer(x) - F.conv2d(x, layer.weight, layer.bias)).abs().max().item()
        assert error <= 0.05 + 1e-5, scale
        uniform.append((~layer.last_active).float().mean().item())
    assert uniform[0] == 1.0 and uniform[-1] == 0.0  # the bound both lets tiles through and stops them


def test_active_knobs_that_find_nothing_to_skip_give_the_dense_layer():
    # Active settings, on inputs where they find nothing: SPET's threshold below every partial
    # sum, SDSS on maps that are neither small nor smooth, SFMA on tiles that are never uniform.
    torch.manual_seed(0)
    layer = conv_layer(4, 3, 3, 1, bias=torch.full((3,), 50.0))
    x = torch.rand(2, 4, 7, 7) * 10  # no region is flat
    dense = F.relu(F.conv2d(x, layer.weight, layer.bias, padding=1))
    full = float(3 * 4 * 9 * 49)
    tiles = 16  # 2×2 tiles over a 7×7 output
    for effort, extra in [(LayerEffort(spet=SPET(0.5, 1e-3)), 0.0),
                          (LayerEffort(sdss=SDSS(2, 1e-3, 1e-6)), 0.0),
                          (LayerEffort(sfma=SFMA(1e-9, 2)), 4 * (81 + tiles) + tiles * 4 * 3)]:
        layer.effort = effort
        torch.testing.assert_close(layer(x), dense, rtol=1e-5, atol=1e-4)
        assert layer.last_macs.tolist() == [full + extra] * 2, effort
        assert layer.last_active.all()


def test_sdss_without_relu_fills_only_small_magnitudes():
    # Large negative outputs are significant: a layer without ReLU keeps them exact.
    torch.manual_seed(0)
    layer = conv_layer(2, 2, 3, 1, weight=-torch.rand(2, 2, 3, 3), bias=torch.full((2,), -40.0), relu=False)
    layer.effort = LayerEffort(sdss=SDSS(2, 1.0, 0.0))
    x = torch.rand(1, 2, 9, 9) * 5
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight, layer.bias, padding=1), rtol=1e-5, atol=1e-4)


def test_linear_spet_with_every_input_in_the_partial_sum_is_dense():
    torch.manual_seed(0)
    layer = EffortLinear(torch.randn(5, 6), torch.randn(5), relu=True)
    x = torch.randn(4, 6)
    layer.effort = LayerEffort(spet=SPET(1.0, 10.0))
    torch.testing.assert_close(layer(x), F.relu(F.linear(x, layer.weight, layer.bias)))


def test_a_batch_norm_after_the_relu_keeps_its_channels():
    # Conv → ReLU → BN cannot fold the BN: the channels are then not permuted through it.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    bn = model[2]
    bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
    x = torch.randn(3, 1, 6, 6)
    net = EffortNet(model, calibration=x)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-5, atol=1e-5)


def test_linear_spet_finishes_only_the_neurons_that_may_fire():
    w = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]])
    layer = EffortLinear(w, torch.zeros(3), relu=True)
    x = torch.tensor([[2.0, 5.0], [-1.0, 5.0]])  # partial sums over the first input: 2, −2, 2 and −1, 1, −1
    layer.effort = LayerEffort(spet=SPET(0.5, 0.0))
    # Neuron 3 is finished for the first example (2 − 5 < 0); the second finishes neuron 2 only.
    assert torch.equal(layer(x), torch.tensor([[7.0, 0.0, 0.0], [0.0, 6.0, 0.0]]))
    assert layer.last_macs.tolist() == [3 * 1 + 2 * 1, 3 * 1 + 1 * 1]


@pytest.mark.parametrize("effort", [LayerEffort(sdss=SDSS(2, 0.5, 0.0)), LayerEffort(sdss=SDSS(3, 0.0, 0.5)),
                                    LayerEffort(sfma=SFMA(0.5, 2)), LayerEffort(spet=SPET(0.5, 0.5))])
def test_each_example_pays_for_its_own_work_and_batching_changes_nothing(effort):
    torch.manual_seed(0)
    layer = conv_layer(3, 4, 3, 1, bias=torch.full((4,), -1.0))
    x = torch.cat([torch.zeros(1, 3, 8, 8), torch.randn(2, 3, 8, 8) * 10])
    layer.effort = effort
    batch = layer(x)
    macs = layer.last_macs.clone()
    alone = [(layer(x[i:i + 1]), layer.last_macs.item()) for i in range(3)]
    torch.testing.assert_close(batch, torch.cat([a for a, _ in alone]), rtol=1e-5, atol=1e-5)
    assert macs.tolist() == [m for _, m in alone]
    assert macs[0] < macs[1]  # the blank example skips most of its work, the others do not


@pytest.fixture(scope="module")
def trained(synthetic):
    from dynscale.idp import IDP
    from dynscale.train import TrainConfig, train

    model = tiny_model("vgg16", input_size=8)
    model.train()
    train(model, synthetic, TrainConfig(epochs=4, train_limit=600, seed=0), IDP(), progress=False)
    return model.eval()


def test_apply_keeps_the_model_and_off_is_bit_identical(trained, synthetic):
    x = synthetic.test_x[:20]
    net = apply(trained, calibration=synthetic.train_x[:64])
    with torch.no_grad():
        expected = trained(x)
        torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-4)  # folded batch-norm, reordered
        assert net.macs()[0].item() == dynscale.cost.count_macs(trained, x[:1])
        net.set_settings(EffortSettings({net.layer_names[2]: LayerEffort(spet=SPET(0.5, 0.0))}))
        net(x)
        off(net)
        assert torch.equal(net(x), expected)
    assert net.layer_names[0] == "features.0" and net.layer_names[-1] == "classifier.3"


def fake_clock(probe, run):
    """Seconds per call computed from the probe, never timed: dense kernels 1 ms (im2col 0.9 ms at
    batch 1), a knob 0.2 ms of decisions plus 0.7 ms of work at all of it."""
    run()  # the probe must run
    if probe.variant.startswith("dense/"):
        return 0.9e-3 if probe.variant == "dense/gemm" and probe.batch == 1 else 1e-3
    return (0.2 + 0.7 * probe.fraction) * 1e-3


@pytest.fixture(autouse=True)
def cost_cache(tmp_path, monkeypatch):
    """Every test's cost cache is its own."""
    monkeypatch.setenv("DYNSCALE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "effort-costs.json"


@pytest.mark.parametrize("objective", ["macs", "time"])
def test_the_tuner_respects_its_bound_on_held_out_data(trained, synthetic, objective):
    from dynscale.effort import CostTable, measure
    from dynscale.effort.tune import evaluate

    net = EffortNet(trained, calibration=synthetic.train_x[:64])
    held = (synthetic.train_x[:300], synthetic.train_y[:300])
    table = measure(net.layers, ["spet", "sdss", "sfma"], [1, 64], 1, CostTable(path=None), fake_clock, False)
    results = tune(net, held, [0.0, 2.0], progress=False, batches=[1, 64], objective=objective, table=table)
    assert [(r.max_loss, r.batch) for r in results] == [(0.0, 1), (0.0, 64), (2.0, 1), (2.0, 64)]
    for result in results:
        assert result.broken <= result.max_loss / 100 + 1e-9
        assert result.dense_accuracy - result.accuracy <= result.broken + 1e-9
        assert all(effort.knob is not None for effort in result.settings.layers.values())
        assert evaluate(net, *held, result.settings) == pytest.approx((result.accuracy, result.macs), rel=1e-4)
        if objective == "time":  # what it saves is time: a knob may count more MACs, if faster
            assert result.seconds <= result.dense_seconds
        else:
            assert result.seconds is None and result.macs <= result.dense_macs
    assert results[2].macs < results[2].dense_macs  # 2 points buy some savings here
    assert results[2].macs <= results[0].macs
    if objective == "time":
        assert results[2].seconds < results[2].dense_seconds


@pytest.mark.parametrize("make, match", [
    (lambda: SPET(0.0, 0.0), r"fraction must be in \(0, 1\]"),
    (lambda: SPET(1.5, 0.0), r"fraction must be in \(0, 1\]"),
    (lambda: SPET(0.5, -1.0), "threshold must be a finite number >= 0"),
    (lambda: SPET(0.5, float("nan")), "threshold must be a finite number >= 0"),
    (lambda: SDSS(2, -0.1, 0.0), "SDSS threshold must be"),
    (lambda: SDSS(5, 0.1, 0.1), "SDSS stride must be a whole number from 1 to 4, got 5"),
    (lambda: SDSS(1.5, 0.1, 0.1), "SDSS stride must be a whole number from 1 to 4"),
    (lambda: SFMA(-1e-3), "SFMA threshold must be"),
    (lambda: SFMA(0.1, 1), "SFMA tile must be a whole number from 2 to 8, got 1"),
    (lambda: SFMA(0.1, 16), "SFMA tile must be a whole number from 2 to 8"),
    (lambda: LayerEffort(spet=SPET(0.5), sdss=SDSS(2, 0.1)), "sets spet and sdss, but a layer takes one knob at"),
    (lambda: EffortSettings.from_json({"features.7": {"spet": {"fraction": 0.5}, "sfma": {"threshold": 0.1}}}),
     "layer 'features.7' sets spet and sfma, but a layer takes one knob at a time.*dynscale effort tune"),
    (lambda: EffortSettings.from_json({"features.0": {"warp": {}}}), "unknown knob warp"),
    (lambda: EffortSettings.from_json({"features.0": {"spet": {"fraction": 2}}}), "fraction must be in"),
])
def test_bad_settings_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_settings_a_network_cannot_take_are_refused(trained):
    net = EffortNet(trained)
    with pytest.raises(ValueError, match="unknown layer 'features.99' in the effort settings; the layers are"):
        net.set_settings(EffortSettings({"features.99": LayerEffort(spet=SPET(0.5))}))
    with pytest.raises(ValueError, match="'classifier.3' cannot take SPET"):  # the classes: no ReLU
        net.set_settings(EffortSettings({"classifier.3": LayerEffort(spet=SPET(0.5))}))
    with pytest.raises(ValueError, match="'classifier.0' is a linear layer; SDSS and SFMA"):
        net.set_settings(EffortSettings({"classifier.0": LayerEffort(sfma=SFMA(0.1))}))
    with pytest.raises(ValueError, match="'features.0' cannot take SPET"):  # one input channel
        net.set_settings(EffortSettings({"features.0": LayerEffort(spet=SPET(0.5))}))
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x  # data-dependent control flow

    with pytest.raises(ValueError, match="torch.fx cannot trace the model"):
        EffortNet(Branchy(), example=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="no convolution or linear layer"):
        EffortNet(nn.Sequential(nn.ReLU()), example=torch.zeros(1, 3))


def prefilled_costs(run, knobs, monkeypatch, batches=(1,)):
    """The cost cache filled for the run's layers from :func:`fake_clock`, and the real clock
    made to fail: `effort tune` then reads every cost from the cache and times nothing."""
    from dynscale.effort import costs, measure

    net = EffortNet(load_run_model(run))
    measure(net.layers, knobs, batches, 1, clock=fake_clock, progress=False)

    def no_timing(*args, **kwargs):
        raise AssertionError("a cost was timed, not read from the cache")

    monkeypatch.setattr(costs, "timed", no_timing)


def test_an_effort_run_round_trips_and_sweeps(tmp_path, synthetic, monkeypatch):
    from dynscale.effort import load_effort, sweep_effort_runs, tune_run
    from dynscale.idp import train_run
    from dynscale.train import TrainConfig

    run = train_run(tmp_path / "mlp", "mlp", synthetic, TrainConfig(epochs=3, holdout=200),
                    model_options={"hidden": [32, 32]}, progress=False)
    prefilled_costs(run, ["spet", "sdss", "sfma"], monkeypatch)
    out = tune_run(run, [1.0], data=synthetic, examples=200, progress=False, threads=1)
    assert out == tmp_path / "mlp-effort"
    net, config = load_effort(out)
    assert config.kind == "effort" and config.section["knobs"] == ["spet", "sdss", "sfma"]
    assert config.section["objective"] == "time" and config.section["threads"] == 1
    (tuned,) = config.section["tuned"]
    assert "held-out split" in config.section["held_out"] and tuned["batch"] == 1
    assert tuned["held_dense_accuracy"] - tuned["held_accuracy"] <= 0.01 + 1e-9
    assert 0 < tuned["held_seconds"] <= tuned["held_dense_seconds"]
    assert set(tuned["settings"]) <= set(net.layer_names)
    assert all(set(v) == {"spet"} for v in tuned["settings"].values())  # an MLP takes SPET only
    curves = sweep_effort_runs([out], progress=False)
    assert [c.curve for c in curves] == ["dense", "knobs off", "static int8", "spet+sdss+sfma @b1"]
    (point,) = curves[-1].points
    assert point.knobs == {"max_loss": 1.0, "knobs": "spet+sdss+sfma", "tuned_batch": 1}
    assert point.accuracy == pytest.approx(tuned["test_accuracy"]) and point.macs == pytest.approx(tuned["test_macs"])
    assert curves[0].points[0].macs_ratio == 1.0 and curves[1].points[0].macs_ratio == 1.0
    assert {p.label for p in curves[2].points} == {"int8 (ONNX Runtime QDQ)", "int8 (PyTorch x86)"}


def test_a_setting_that_keeps_every_layer_dense_runs_as_the_dense_network(tmp_path, synthetic, monkeypatch):
    import dynscale.effort.runs as effort_runs
    from dynscale.effort import sweep_effort_runs, tune_run
    from dynscale.eval import TimingConfig
    from dynscale.idp import train_run
    from dynscale.train import TrainConfig

    run = train_run(tmp_path / "mlp", "mlp", synthetic, TrainConfig(epochs=1, holdout=200),
                    model_options={"hidden": [16]}, progress=False)
    prefilled_costs(run, ["spet"], monkeypatch, batches=(1, 2))
    out = tune_run(run, [1.0], knobs=["spet"], data=synthetic, examples=100, progress=False, threads=1)
    doc = json.loads((out / "config.json").read_text())
    doc["section"]["tuned"][0]["settings"] = {}  # the time tuner's answer where no knob pays
    (out / "config.json").write_text(json.dumps(doc))
    timed = []
    real = effort_runs.torch_runner
    monkeypatch.setattr(effort_runs, "torch_runner", lambda forward, **kw: timed.append(forward) or real(forward, **kw))
    timing = TimingConfig(batch_sizes=[2], rounds=1, warmup=1, min_run_time=0.001, examples=8)
    curves = sweep_effort_runs([out], timing=timing, progress=False)
    kinds = [type(f).__name__ for f in timed]
    assert kinds[0] == "EffortNet"  # knobs off: the effort layers with nothing on
    assert timed[1] is not timed[0] and kinds[1] != "EffortNet"  # the tuned bound: the dense network itself
    assert curves[-1].points[0].latency[0].ms > 0


# ---- any traceable network -------------------------------------------------------------------


class FunctionalNet(nn.Module):
    """ReLUs as functions and one ReLU module called twice: neither can be removed."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.conv2, self.conv3 = nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.act(self.conv2(x))
        x = self.act(self.conv3(x)).mean((2, 3))
        return self.fc(x)


def any_model(name):
    torch.manual_seed(0)
    if name == "sequential":
        return nn.Sequential(nn.Conv2d(1, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(5, 7, 3), nn.ReLU(), nn.Flatten(), nn.Linear(7 * 16, 3)).eval()
    if name == "functional":
        model = FunctionalNet().eval()
        model.bn1.running_mean.uniform_(-0.5, 0.5), model.bn1.running_var.uniform_(0.5, 2)
        return model
    return tiny_model(name, input_size=12, calibrate=True)


ARCHITECTURES = ["vgg16", "resnet", "mobilenet", "mlp", "sequential", "functional"]


def knobs_that_find_nothing(net):
    """SFMA on every convolution that takes it, at a threshold only constant regions pass (read as
    their mean, they give the same sums)."""
    settings = {}
    for name, layer in net.layers.items():
        effort = LayerEffort(sfma=SFMA(1e-30))
        try:
            layer.check(effort, name)
        except ValueError:
            continue
        settings[name] = effort
    return EffortSettings(settings)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_traceable_network_takes_the_knobs_and_off_is_bit_identical(name):
    model = any_model(name)
    x = torch.randn(6, 1, 12, 12) * 2
    net = EffortNet(model, calibration=x)
    assert not net.dense_reasons
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-4)  # folded, reordered
        assert net.macs()[0].item() == dynscale.cost.count_macs(model, x[:1])
        settings = knobs_that_find_nothing(net)
        net.set_settings(settings)
        torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-4)
        segments = net.segments()
        state = x
        for segment in segments:  # what the tuner reruns, piece by piece
            state = segment(state)
        torch.testing.assert_close(state, net(x))
        off(net)
        assert torch.equal(net(x), expected)
    if name != "mlp":
        assert settings.layers, "the test needs layers taking the knobs"


def test_residual_blocks_take_the_knobs_that_apply():
    net = EffortNet(any_model("resnet"))
    layers = net.layers
    assert layers["layers.0.0.conv1"].relu  # conv → BN → ReLU inside the block
    assert not layers["layers.0.0.conv2"].relu  # its output goes into the residual addition
    net.set_settings(EffortSettings({"layers.0.0.conv1": LayerEffort(spet=SPET(0.5)),
                                     "layers.0.0.conv2": LayerEffort(sfma=SFMA(0.1)),
                                     "layers.1.0.shortcut.0": LayerEffort(sdss=SDSS(2, 0.1, 0.1))}))
    with pytest.raises(ValueError, match="'layers.0.0.conv2' cannot take SPET: it needs a layer followed by ReLU"):
        net.set_settings(EffortSettings({"layers.0.0.conv2": LayerEffort(spet=SPET(0.5))}))
    # conv2 reads conv1's outputs alone (the ReLU fused): permuted offline; conv1 reads the
    # block's input, which the shortcut reads too: gathered in order at run time.
    assert layers["layers.0.0.conv1"].input_order is not None
    assert "layers.0.0.conv2" not in net.orders  # no SPET there, no order


def test_depthwise_convolutions_say_why_they_take_no_knob():
    net = EffortNet(any_model("mobilenet"))
    assert net.layers["blocks.0.depthwise"].groups > 1 and net.layers["blocks.0.pointwise"].relu
    net.set_settings(EffortSettings({"blocks.0.pointwise": LayerEffort(sdss=SDSS(2, 0.1, 0.1))}))
    for effort, match in [(LayerEffort(spet=SPET(0.5)), "each neuron reads one input channel"),
                          (LayerEffort(sfma=SFMA(0.1)), "costs as many MACs as the convolution itself"),
                          (LayerEffort(sdss=SDSS(2, 0.1, 0.1)), "one matrix product over all channels")]:
        with pytest.raises(ValueError, match="'blocks.0.depthwise' is a depthwise convolution.*" + match):
            net.set_settings(EffortSettings({"blocks.0.depthwise": effort}))


def test_functional_and_shared_relus_are_fused_and_kept():
    model = any_model("functional")
    x = torch.randn(5, 1, 8, 8)
    net = EffortNet(model, calibration=x)
    assert all(layer.relu for name, layer in net.layers.items() if name != "fc")
    assert isinstance(net.net.act, nn.ReLU)  # called twice: it stays (ReLU of a rectified output)
    assert isinstance(net.net.bn1, nn.Identity)  # folded
    net.set_settings(EffortSettings({"conv2": LayerEffort(spet=SPET(0.5, 0.0))}))
    with torch.no_grad():
        approx = net(x)
        net.set_settings(EffortSettings({"conv2": LayerEffort(spet=SPET(1.0))}))
        torch.testing.assert_close(net(x), model(x), rtol=1e-4, atol=1e-4)
    assert approx.shape == (5, 3)


def test_a_layer_called_twice_stays_dense_and_says_why():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 3, 3, padding=1), nn.Linear(3, 2)

        def forward(self, x):
            return self.head(F.relu(self.conv(F.relu(self.conv(x)))).mean((2, 3)))

    model = Twice().eval()
    net = EffortNet(model, example=torch.zeros(1, 3, 6, 6))
    assert net.layer_names == ["head"] and "called at 2 places" in net.dense_reasons["conv"]
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x))


def test_a_converted_torchvision_resnet_takes_the_knobs(torchvision):
    from dynscale import convert

    torch.manual_seed(0)
    model = convert(torchvision.models.resnet18(num_classes=10), example=torch.randn(2, 3, 32, 32)).eval()
    x = torch.randn(2, 3, 32, 32)
    net = EffortNet(model, calibration=x)
    layers = net.layers
    assert len(layers) == 21 and layers["layer1.0.conv1"].relu and not layers["layer1.0.conv2"].relu
    assert isinstance(net.net.layer1[0].relu, nn.ReLU)  # torchvision calls it twice per block
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(net(x), expected, rtol=1e-3, atol=1e-3)
        net.set_settings(EffortSettings({"layer2.0.conv1": LayerEffort(spet=SPET(0.5)),
                                         "layer2.0.conv2": LayerEffort(sdss=SDSS(2, 0.1, 0.1))}))
        net(x)
        assert (net.macs() < dynscale.cost.count_macs(model, x[:1])).all()
        assert torch.equal(off(net)(x), expected)


@pytest.mark.parametrize("name, knobs", [("resnet", "spet"), ("mobilenet", "sdss")])
def test_effort_runs_of_residual_and_depthwise_networks_round_trip(tmp_path, synthetic, name, knobs, capsys,
                                                                    monkeypatch):
    from dynscale.cli import main
    from dynscale.effort import load_effort
    from dynscale.idp import train_run
    from dynscale.train import TrainConfig

    from tiny import tiny_options

    options = {k: v for k, v in tiny_options(name).items() if k not in ("in_channels", "input_size", "num_classes")}
    run = train_run(tmp_path / name, name, synthetic, TrainConfig(epochs=1, holdout=100, train_limit=300),
                    model_options=options, progress=False)
    prefilled_costs(run, [knobs], monkeypatch, batches=(1, 64))
    assert main(["effort", "tune", str(run), "--max-loss", "5", "--knobs", knobs, "--examples", "100",
                 "--threads", "1", "--batch", "1,64"]) == 0
    out = tmp_path / f"{name}-effort-{knobs}"
    assert "wrote" in capsys.readouterr().out
    net, config = load_effort(out)
    assert [t["batch"] for t in config.section["tuned"]] == [1, 64]
    again = EffortNet(load_run_model(run), orders=config.section["orders"])
    assert net.orders == config.section["orders"] == again.orders
    x = synthetic.test_x[:8]
    for tuned in config.section["tuned"]:
        settings = EffortSettings.from_json(tuned["settings"])
        net.set_settings(settings), again.set_settings(settings)
        with torch.no_grad():
            assert torch.equal(net(x), again(x))
    assert main(["effort", "sweep", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{knobs} (tuned for batch 1)" in printed and "loss≤5 @b64" in printed and "knobs off" in printed


def load_run_model(run):
    from dynscale.runs import load_run

    return load_run(run).model


def test_effort_runs_of_earlier_versions_load_or_ask_to_be_tuned_again(synthetic):
    # Written by `tune_run` before the knobs ran on dense kernels. The MLP's (SPET on linear
    # layers, which decide per neuron as before) still loads and gives its figures; the VGG's
    # has two knobs on one layer, which the dense kernels do not compose: refused, with the fix.
    from pathlib import Path

    from dynscale.effort import load_effort
    from dynscale.effort.tune import evaluate
    from dynscale.errors import DynscaleError

    fixtures = Path(__file__).parent / "fixtures" / "effort"
    net, config = load_effort(fixtures / "mlp-effort")
    assert net.orders == config.section["orders"] and net.objective == "macs"  # tuned for MACs then
    for tuned in config.section["tuned"]:
        accuracy, macs = evaluate(net, synthetic.test_x, synthetic.test_y, EffortSettings.from_json(tuned["settings"]))
        assert (accuracy, macs) == pytest.approx((tuned["test_accuracy"], tuned["test_macs"]), rel=1e-6)
    with pytest.raises(DynscaleError, match="layer 'features.7' of the effort run's tuned bound 0 has spet and sdss; "
                                            ".*one per layer: tune the run again with `dynscale effort tune`"):
        load_effort(fixtures / "vgg16-effort")


class SmallResidual(nn.Module):
    """A user's network for the `converted` family: a residual block with functional ReLUs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv1, self.conv2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = F.relu(x + self.conv2(F.relu(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def small_residual():
    torch.manual_seed(0)
    return SmallResidual()


def test_a_converted_run_takes_effort_tune_and_sweep(tmp_path, capsys, monkeypatch):
    from dynscale.cli import main
    from dynscale.convert import convert_to_run
    from dynscale.effort import load_effort

    run = convert_to_run(f"{__file__}:small_residual", (1, 8, 8), tmp_path / "conv", data="synthetic")
    prefilled_costs(run, ["spet"], monkeypatch)
    assert main(["effort", "tune", str(run), "--data", "synthetic", "--max-loss", "5", "--knobs", "spet",
                 "--examples", "100", "--threads", "1"]) == 0
    out = tmp_path / "conv-effort-spet"
    net, config = load_effort(out)
    assert net.layer_names == ["stem", "conv1", "conv2", "fc"] and net.layers["conv1"].relu
    assert not net.layers["conv2"].relu  # into the residual addition
    assert net.orders == config.section["orders"] and "conv1" in net.orders
    assert main(["effort", "sweep", str(out), "--data", "synthetic"]) == 0
    assert "spet" in capsys.readouterr().out
