import pytest
import torch

from dynscale import get_model
from dynscale.evaluation import accuracy
from dynscale.training import TrainConfig, seed_everything, train


def fresh_model(seed=0):
    seed_everything(seed)
    return get_model("mlp", in_channels=1, input_size=8, hidden=[32, 32])


@pytest.mark.parametrize("optimizer, schedule", [("sgd", "cosine"), ("adam", "step"), ("sgd", "constant")])
def test_training_learns(synthetic, optimizer, schedule):
    model = fresh_model()
    before = accuracy(model, synthetic.test_x, synthetic.test_y)
    metrics = train(model, synthetic, TrainConfig(epochs=10, optimizer=optimizer, schedule=schedule),
                    progress=False)
    assert metrics["test_accuracy"] > max(0.7, before + 0.3)
    assert metrics["train_loss"] < 2.0 and metrics["train_seconds"] > 0


def test_training_is_deterministic_for_a_seed(synthetic):
    states = []
    for _ in range(2):
        model = fresh_model(seed=3)
        train(model, synthetic, TrainConfig(epochs=2, seed=3), progress=False)
        states.append(model.state_dict())
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name


def test_different_seeds_differ(synthetic):
    a, b = fresh_model(seed=1), fresh_model(seed=2)
    train(a, synthetic, TrainConfig(epochs=1, seed=1), progress=False)
    train(b, synthetic, TrainConfig(epochs=1, seed=2), progress=False)
    assert not torch.equal(a.layers[0].weight, b.layers[0].weight)


def test_progress_bar_is_off_when_not_a_terminal(synthetic, capsys):
    train(fresh_model(), synthetic, TrainConfig(epochs=1), progress=None)  # pytest's stderr is no TTY
    assert "epoch" not in capsys.readouterr().err


def test_progress_bar_can_be_forced_on(synthetic, capsys):
    train(fresh_model(), synthetic, TrainConfig(epochs=1), progress=True)
    assert "epoch" in capsys.readouterr().err


def test_default_learning_rates():
    assert TrainConfig().lr == 0.05
    assert TrainConfig(optimizer="adam").lr == 1e-3


@pytest.mark.parametrize("kwargs, match", [
    ({"optimizer": "rmsprop"}, "unknown optimizer"),
    ({"schedule": "linear"}, "unknown schedule"),
    ({"cut": "sometimes"}, "unknown cut"),
    ({"profile_gradient": "none"}, "unknown profile gradient"),
    ({"train_limit": 0}, "train limit"),
    ({"epochs": 0}, "at least 1"),
    ({"lr": -1.0}, "learning rate"),
])
def test_bad_training_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_random_cut_draws_follow_the_authors_distribution():
    from dynscale.training import draw_cut

    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([draw_cut(g) for _ in range(4000)])
    assert (draws > 0).all() and (draws <= 1).all()
    assert abs((1 - draws).mean().item() - 0.1) < 0.01  # d ~ Exponential(scale 0.1)
    ranged = [draw_cut(g, 0.3, 1.0) for _ in range(500)]
    assert min(ranged) > 0.3 and max(ranged) <= 1.0


def test_random_cuts_set_each_cut_layer_its_own_width():
    from dynscale.layers import incomplete_layers
    from dynscale.training import apply_random_cuts

    model = get_model("vgg16", in_channels=1, input_size=8, width_mult=0.125)
    apply_random_cuts(model, torch.Generator().manual_seed(0))
    layers = incomplete_layers(model)
    widths = [m.in_width for m in layers if m.cut_input]
    assert len(set(widths)) == len(widths) and all(0 < w <= 1 for w in widths)
    assert all(m.in_width == 1.0 for m in layers if not m.cut_input)
    assert all(m.out_width == 1.0 for m in layers)
    model.train()
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_random_cut_training_learns_and_is_deterministic(synthetic):
    states = []
    for _ in range(2):
        model = fresh_model()
        metrics = train(model, synthetic, TrainConfig(epochs=10, cut="random"), progress=False)
        states.append(model.state_dict())
    assert metrics["test_accuracy"] > 0.7
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_straight_through_profile_gradient_ignores_gamma():
    from dynscale.layers import IncompleteLinear, set_profile_gradient

    x = torch.randn(3, 4)
    grads = {}
    for mode in ("chain", "straight-through"):
        torch.manual_seed(0)
        layer = IncompleteLinear(4, 2, profile="linear")
        set_profile_gradient(layer, mode)
        out = layer(x)
        out.sum().backward()
        grads[mode] = layer.weight.grad
    gamma = torch.tensor([1, 0.75, 0.5, 0.25])
    plain = torch.ones(2, 1) * x.sum(0, keepdim=True)
    torch.testing.assert_close(grads["chain"], plain * gamma)
    torch.testing.assert_close(grads["straight-through"], plain)
    with pytest.raises(ValueError, match="unknown profile gradient"):
        set_profile_gradient(layer, "sideways")
