"""DyVEDeep: the shared primitive, each knob doing nothing and acting (with exact counts), the
effort network, the tuner's bound, runs, and bad settings."""

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
    linear_at,
    off,
    tune,
)

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


def test_the_linear_primitive_computes_only_the_pairs_asked():
    torch.manual_seed(0)
    x, w = torch.randn(4, 7), torch.randn(5, 7)
    pairs = torch.tensor([[0, 1], [3, 4], [2, 0]])
    torch.testing.assert_close(linear_at(x, w, pairs), (x @ w.t())[pairs[:, 0], pairs[:, 1]])
    assert linear_at(x, w, pairs[:0]).shape == (0,)


def conv_layer(c_in, c_out, k, padding, weight=None, bias=None, relu=True):
    conv = nn.Conv2d(c_in, c_out, k, padding=padding)
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


@pytest.fixture(params=["numba", "torch"])
def backend(request):
    """Every knob test runs on the compiled kernels and on the PyTorch reference."""
    from dynscale.effort import set_backend

    set_backend(request.param)
    yield request.param
    set_backend("auto")


def test_spet_finishes_only_the_neurons_that_may_fire_and_counts_exactly(backend):
    # A 1×1 convolution, y = relu(x0 + x1 − 10): channel 0 (the more significant) is 20 in the
    # top-left 2×2 corner and 0 elsewhere, so the partial sum x0 − 10 is negative elsewhere.
    layer = conv_layer(2, 1, 1, 0, weight=torch.ones(1, 2, 1, 1), bias=torch.tensor([-10.0]))
    x = torch.zeros(1, 2, 4, 4)
    x[0, 0, :2, :2] = 20.0
    x[0, 1] = torch.arange(16.0).view(4, 4)
    layer.effort = LayerEffort(spet=SPET(0.5, 0.0))
    y = layer(x)
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, :2, :2] = F.relu(20 + x[0, 1, :2, :2] - 10)
    assert torch.equal(y, expected)  # 0 elsewhere, though x1 − 10 > 0 at some of those positions
    # Partial sums: 16 neurons × 1 input; the rest: 4 neurons × 1 input.
    assert layer.last_macs.tolist() == [16 + 4]


def test_sdss_interpolates_insignificant_regions_and_counts_exactly(backend):
    # ReLU(conv(0) − 1) = 0 everywhere, so every grid value is insignificant: on a 5×5 output
    # the 3×3 grid is computed, the 16 other positions interpolated (4 products per value).
    layer = conv_layer(3, 2, 3, 1, bias=torch.full((2,), -1.0))
    layer.effort = LayerEffort(sdss=SDSS(2, 0.5, 0.0))
    assert torch.equal(layer(torch.zeros(1, 3, 5, 5)), torch.zeros(1, 2, 5, 5))
    assert layer.last_macs.tolist() == [9 * 2 * 3 * 9 + 16 * 2 * 4]
    # Each map decides alone: map 0 is 0 everywhere (filled), map 1 is about 100 everywhere
    # (significant, and no spread allowed): its 16 off-grid neurons are computed exactly.
    torch.manual_seed(0)
    layer = conv_layer(3, 2, 3, 1, weight=torch.randn(2, 3, 3, 3) * 0.1, bias=torch.tensor([-100.0, 100.0]))
    layer.effort = LayerEffort(sdss=SDSS(2, 0.5, 0.0))
    x = torch.randn(1, 3, 5, 5)
    dense = F.relu(F.conv2d(x, layer.weight, layer.bias, padding=1))
    torch.testing.assert_close(layer(x), dense, rtol=1e-5, atol=1e-5)
    assert layer.last_macs.tolist() == [9 * 2 * 3 * 9 + 16 * 1 * 4 + 16 * 1 * 3 * 9]


def test_sfma_replaces_uniform_windows_by_their_mean_and_counts_exactly(backend):
    # On a constant input, without padding, every window is uniform: mean(x)·Σw is exact.
    torch.manual_seed(0)
    layer = conv_layer(3, 4, 3, 0)
    x = torch.full((1, 3, 6, 6), 0.7)
    layer.effort = LayerEffort(sfma=SFMA(1e-6))
    dense = F.relu(F.conv2d(x, layer.weight, layer.bias))
    torch.testing.assert_close(layer(x), dense, rtol=1e-5, atol=1e-5)
    positions, statistics = 4 * 4, 3 * 9 * 4 * 4  # the x² window sums of every channel
    assert layer.last_macs.tolist() == [statistics + positions * 4 * 3]  # one Σw product per channel and neuron
    # Each input channel decides alone: channel 0 constant (one product), channels 1, 2 not (9 each).
    x[0, 1:] = torch.randn(2, 6, 6)
    dense = F.relu(F.conv2d(x, layer.weight, layer.bias))
    torch.testing.assert_close(layer(x), dense, rtol=1e-5, atol=1e-5)
    assert layer.last_macs.tolist() == [statistics + positions * 4 * (1 + 2 * 9)]


def test_active_knobs_that_find_nothing_to_skip_give_the_dense_layer(backend):
    # Active settings, on inputs where they find nothing: SPET's threshold below every partial
    # sum, SDSS on maps that are neither small nor smooth, SFMA on windows that are never uniform.
    torch.manual_seed(0)
    layer = conv_layer(4, 3, 3, 1, bias=torch.full((3,), 50.0))
    x = torch.rand(2, 4, 7, 7) * 10  # no window is flat
    dense = F.relu(F.conv2d(x, layer.weight, layer.bias, padding=1))
    full = float(3 * 4 * 9 * 49)
    for effort, extra in [(LayerEffort(spet=SPET(0.5, 1e-3)), 0.0),
                          (LayerEffort(sdss=SDSS(2, 1e-3, 1e-6)), 0.0),
                          (LayerEffort(sfma=SFMA(1e-9)), 4 * 9 * 49)]:  # SFMA pays for its x² window sums
        layer.effort = effort
        torch.testing.assert_close(layer(x), dense, rtol=1e-5, atol=1e-4)
        assert layer.last_macs.tolist() == [full + extra] * 2, effort


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


@pytest.mark.parametrize("stride, padding, dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 2), (1, 0, 1)])
@pytest.mark.parametrize("first, threshold", [(6, float("-inf")), (3, 0.0), (2, 0.5)])
@pytest.mark.parametrize("masks", [False, True])
def test_the_kernels_equal_the_pytorch_reference(stride, padding, dilation, first, threshold, masks):
    from dynscale.effort import conv_at_positions, set_backend
    from dynscale.effort.kernels import simulate_positions

    torch.manual_seed(0)
    x, w, b = torch.randn(2, 6, 9, 9), torch.randn(5, 6, 3, 3), torch.randn(5)
    dense = F.conv2d(x, w, b, stride, padding, dilation)
    positions = torch.stack(torch.meshgrid(*[torch.arange(n) for n in (2, *dense.shape[2:])], indexing="ij"),
                            -1).reshape(-1, 3)[1::3]
    extra = {}
    if masks:  # SDSS's filled neurons, SFMA's uniform windows and their means
        extra = {"skip": torch.rand(dense.shape) < 0.3, "uniform": torch.rand(2, 6, *dense.shape[2:]) < 0.3,
                 "means": torch.randn(2, 6, *dense.shape[2:])}
    results = {}
    for name in ("numba", "torch", "simulate"):
        set_backend("torch" if name == "simulate" else name)
        out, macs = torch.full_like(dense, -7.0), torch.zeros(2, dtype=torch.float64)
        compute = simulate_positions if name == "simulate" else conv_at_positions
        compute(x, w, b, positions, (stride,) * 2, (padding,) * 2, (dilation,) * 2, out, macs, first, threshold,
                True, **extra)
        results[name] = (out, macs)
    set_backend("auto")
    for name in ("numba", "simulate"):
        torch.testing.assert_close(results[name][0], results["torch"][0], rtol=1e-4, atol=1e-4)
        assert torch.equal(results[name][1], results["torch"][1])
    out = results["torch"][0]
    if masks:  # filled neurons are left as they were
        skipped = extra["skip"].clone()
        assert (out[skipped] == -7.0).all()
    if first == 6 and not masks:  # no SPET: exactly the convolution where computed
        picked = out[positions[:, 0], :, positions[:, 1], positions[:, 2]]
        want = F.relu(dense)[positions[:, 0], :, positions[:, 1], positions[:, 2]]
        torch.testing.assert_close(picked, want, rtol=1e-5, atol=1e-5)
        assert results["torch"][1].sum().item() == len(positions) * 5 * 6 * 9


def test_linear_spet_finishes_only_the_neurons_that_may_fire():
    w = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]])
    layer = EffortLinear(w, torch.zeros(3), relu=True)
    x = torch.tensor([[2.0, 5.0]])  # partial sums over the first input: 2, −2, 2
    layer.effort = LayerEffort(spet=SPET(0.5, 0.0))
    assert torch.equal(layer(x), torch.tensor([[7.0, 0.0, 0.0]]))  # neuron 3 finished: 2 − 5 < 0
    assert layer.last_macs.tolist() == [3 * 1 + 2 * 1]


def test_each_example_pays_for_its_own_work(backend):
    torch.manual_seed(0)
    layer = conv_layer(3, 2, 3, 1, bias=torch.full((2,), -1.0))
    x = torch.cat([torch.zeros(1, 3, 8, 8), torch.randn(1, 3, 8, 8) * 10])
    layer.effort = LayerEffort(sdss=SDSS(2, 0.5, 0.0))
    batch = layer(x)
    macs = layer.last_macs.clone()
    alone = [layer(x[i:i + 1]) for i in range(2)]
    torch.testing.assert_close(batch, torch.cat(alone))
    assert macs[0] < macs[1]  # the blank example skips most of its positions, the other does not


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


def test_the_tuner_respects_its_bound_on_held_out_data(trained, synthetic):
    net = EffortNet(trained, calibration=synthetic.train_x[:64])
    held = (synthetic.train_x[:300], synthetic.train_y[:300])
    results = tune(net, held, [0.0, 2.0], progress=False)
    for result in results:
        assert result.broken <= result.max_loss / 100 + 1e-9
        assert result.dense_accuracy - result.accuracy <= result.broken + 1e-9
        assert result.macs <= result.dense_macs
        from dynscale.effort.tune import evaluate

        # As reported; the search simulates the kernels, whose float sums may tip a rare
        # borderline decision the other way.
        assert evaluate(net, *held, result.settings) == pytest.approx((result.accuracy, result.macs), rel=1e-4)
    assert results[1].macs < results[1].dense_macs  # 2 points buy some savings here
    assert results[1].macs <= results[0].macs


@pytest.mark.parametrize("make, match", [
    (lambda: SPET(0.0, 0.0), r"fraction must be in \(0, 1\]"),
    (lambda: SPET(1.5, 0.0), r"fraction must be in \(0, 1\]"),
    (lambda: SPET(0.5, -1.0), "threshold must be a finite number >= 0"),
    (lambda: SPET(0.5, float("nan")), "threshold must be a finite number >= 0"),
    (lambda: SDSS(2, -0.1, 0.0), "SDSS threshold must be"),
    (lambda: SDSS(3, 0.1, 0.1), "stride must be 1 or 2"),
    (lambda: SFMA(-1e-3), "SFMA threshold must be"),
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


def test_an_effort_run_round_trips_and_sweeps(tmp_path, synthetic):
    from dynscale.effort import load_effort, sweep_effort_runs, tune_run
    from dynscale.idp import train_run
    from dynscale.train import TrainConfig

    run = train_run(tmp_path / "mlp", "mlp", synthetic, TrainConfig(epochs=3, holdout=200),
                    model_options={"hidden": [32, 32]}, progress=False)
    out = tune_run(run, [1.0], data=synthetic, examples=200, progress=False)
    assert out == tmp_path / "mlp-effort"
    net, config = load_effort(out)
    assert config.kind == "effort" and config.section["knobs"] == ["spet", "sdss", "sfma"]
    (tuned,) = config.section["tuned"]
    assert "held-out split" in config.section["held_out"]
    assert tuned["held_dense_accuracy"] - tuned["held_accuracy"] <= 0.01 + 1e-9
    assert set(tuned["settings"]) <= set(net.layer_names)
    assert all(set(v) == {"spet"} for v in tuned["settings"].values())  # an MLP takes SPET only
    curves = sweep_effort_runs([out], progress=False)
    assert [c.curve for c in curves] == ["dense", "spet+sdss+sfma"]
    (point,) = curves[1].points
    assert point.knobs == {"max_loss": 1.0, "knobs": "spet+sdss+sfma"}
    assert point.accuracy == pytest.approx(tuned["test_accuracy"]) and point.macs == pytest.approx(tuned["test_macs"])
    assert curves[0].points[0].macs_ratio == 1.0


def test_simulation_gives_the_real_outputs_and_counts(trained, synthetic):
    net = EffortNet(trained, calibration=synthetic.train_x[:64])
    settings = EffortSettings({"features.3": LayerEffort(spet=SPET(0.5, 0.0), sdss=SDSS(2, 0.3, 0.3)),
                               "features.7": LayerEffort(sfma=SFMA(0.05)), "classifier.0": LayerEffort(spet=SPET(0.5))})
    net.set_settings(settings)
    x = synthetic.test_x[:16]
    with torch.no_grad():
        real, real_macs = net(x), net.macs()
        net.simulate()
        simulated, simulated_macs = net(x), net.macs()
        net.simulate(False)
    torch.testing.assert_close(simulated, real, rtol=1e-4, atol=1e-4)
    assert torch.equal(simulated_macs, real_macs)
    assert real_macs.min() < dynscale.cost.count_macs(trained, x[:1])


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
    """SFMA on every convolution that takes it, at a threshold only constant windows pass (read as
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
def test_every_traceable_network_takes_the_knobs_and_off_is_bit_identical(name, backend):
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
    net.set_settings(EffortSettings({"layers.0.0.conv1": LayerEffort(spet=SPET(0.5), sdss=SDSS(2, 0.1, 0.1)),
                                     "layers.0.0.conv2": LayerEffort(sdss=SDSS(2, 0.1, 0.1), sfma=SFMA(0.1)),
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
    net.set_settings(EffortSettings({"blocks.0.pointwise": LayerEffort(spet=SPET(0.5), sdss=SDSS(2, 0.1, 0.1))}))
    for effort, match in [(LayerEffort(spet=SPET(0.5)), "each neuron reads one input channel"),
                          (LayerEffort(sfma=SFMA(0.1)), "costs as many MACs as the convolution itself"),
                          (LayerEffort(sdss=SDSS(2, 0.1, 0.1)), "sparse kernels take ungrouped convolutions")]:
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
        net.set_settings(EffortSettings({"layer2.0.conv1": LayerEffort(spet=SPET(0.5), sdss=SDSS(2, 0.1, 0.1))}))
        net(x)
        assert (net.macs() < dynscale.cost.count_macs(model, x[:1])).all()
        assert torch.equal(off(net)(x), expected)


@pytest.mark.parametrize("name, knobs", [("resnet", "spet"), ("mobilenet", "sdss")])
def test_effort_runs_of_residual_and_depthwise_networks_round_trip(tmp_path, synthetic, name, knobs, capsys):
    from dynscale.cli import main
    from dynscale.effort import load_effort
    from dynscale.idp import train_run
    from dynscale.train import TrainConfig

    from tiny import tiny_options

    options = {k: v for k, v in tiny_options(name).items() if k not in ("in_channels", "input_size", "num_classes")}
    run = train_run(tmp_path / name, name, synthetic, TrainConfig(epochs=1, holdout=100, train_limit=300),
                    model_options=options, progress=False)
    assert main(["effort", "tune", str(run), "--max-loss", "5", "--knobs", knobs, "--examples", "100",
                 "--threads", "1"]) == 0
    out = tmp_path / f"{name}-effort-{knobs}"
    assert "wrote" in capsys.readouterr().out
    net, config = load_effort(out)
    again = EffortNet(load_run_model(run), orders=config.section["orders"])
    assert net.orders == config.section["orders"] == again.orders
    x = synthetic.test_x[:8]
    for tuned in config.section["tuned"]:
        settings = EffortSettings.from_json(tuned["settings"])
        net.set_settings(settings), again.set_settings(settings)
        with torch.no_grad():
            assert torch.equal(net(x), again(x))
    assert main(["effort", "sweep", str(out)]) == 0
    assert knobs in capsys.readouterr().out


def load_run_model(run):
    from dynscale.runs import load_run

    return load_run(run).model


@pytest.mark.parametrize("run", ["mlp-effort", "vgg16-effort"])
def test_effort_runs_saved_before_the_graph_still_load_and_give_their_figures(run, synthetic):
    # Written by `tune_run` before effort knobs read the traced graph (chain networks only).
    from pathlib import Path

    from dynscale.effort import load_effort
    from dynscale.effort.tune import evaluate

    net, config = load_effort(Path(__file__).parent / "fixtures" / "effort" / run)
    assert net.orders == config.section["orders"]
    for tuned in config.section["tuned"]:
        accuracy, macs = evaluate(net, synthetic.test_x, synthetic.test_y, EffortSettings.from_json(tuned["settings"]))
        assert (accuracy, macs) == pytest.approx((tuned["test_accuracy"], tuned["test_macs"]), rel=1e-6)


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


def test_a_converted_run_takes_effort_tune_and_sweep(tmp_path, capsys):
    from dynscale.cli import main
    from dynscale.convert import convert_to_run
    from dynscale.effort import load_effort

    run = convert_to_run(f"{__file__}:small_residual", (1, 8, 8), tmp_path / "conv", data="synthetic")
    assert main(["effort", "tune", str(run), "--data", "synthetic", "--max-loss", "5", "--knobs", "spet",
                 "--examples", "100", "--threads", "1"]) == 0
    out = tmp_path / "conv-effort-spet"
    net, config = load_effort(out)
    assert net.layer_names == ["stem", "conv1", "conv2", "fc"] and net.layers["conv1"].relu
    assert not net.layers["conv2"].relu  # into the residual addition
    assert net.orders == config.section["orders"] and "conv1" in net.orders
    assert main(["effort", "sweep", str(out), "--data", "synthetic"]) == 0
    assert "spet" in capsys.readouterr().out
