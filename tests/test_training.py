import copy

import pytest
import torch

from dynscale import get_model
from dynscale.eval import accuracy
from dynscale.idp import IDP, MultiProfile, apply_random_cuts, draw_cut
from dynscale.models import build_multi_profile
from dynscale.train import TrainConfig, Trainer, get_recipe, list_recipes, seed_everything, train


def fresh_model(seed=0):
    seed_everything(seed)
    return get_model("mlp", in_channels=1, input_size=8, hidden=[32, 32])


@pytest.mark.parametrize("optimizer, schedule", [("sgd", "cosine"), ("adam", "step"), ("sgd", "constant")])
def test_training_learns(synthetic, optimizer, schedule):
    model = fresh_model()
    before = accuracy(model, synthetic.test_x, synthetic.test_y)
    metrics = train(model, synthetic, TrainConfig(epochs=10, optimizer=optimizer, schedule=schedule), IDP(),
                    progress=False)
    assert metrics["test_accuracy"] > max(0.7, before + 0.3)
    assert metrics["train_loss"] < 2.0 and metrics["train_seconds"] > 0


def test_training_is_deterministic_for_a_seed(synthetic):
    states = []
    for _ in range(2):
        model = fresh_model(seed=3)
        train(model, synthetic, TrainConfig(epochs=2, seed=3), IDP(), progress=False)
        states.append(model.state_dict())
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name


def test_the_training_seed_changes_the_result_from_the_same_start(synthetic):
    # Both start from identical weights: only the training seed (data order) differs.
    start = fresh_model(seed=1)
    a, b = copy.deepcopy(start), copy.deepcopy(start)
    train(a, synthetic, TrainConfig(epochs=1, seed=1), IDP(), progress=False)
    train(b, synthetic, TrainConfig(epochs=1, seed=2), IDP(), progress=False)
    assert not torch.equal(a.layers[0].weight, b.layers[0].weight)
    c = copy.deepcopy(start)
    train(c, synthetic, TrainConfig(epochs=1, seed=1), IDP(), progress=False)
    assert torch.equal(a.layers[0].weight, c.layers[0].weight)


def test_the_trainer_never_changes_the_callers_config(synthetic):
    config = TrainConfig(epochs=1, holdout=100)
    before = copy.deepcopy(config)
    Trainer(fresh_model(), synthetic, config, IDP(), progress=False).fit()
    assert config == before


@pytest.mark.parametrize("recipe", [IDP(), IDP(cut="random"), MultiProfile(profiles=[(0, 0.5), (0.5, 1.0)])])
def test_a_resumed_trainer_ends_where_an_uninterrupted_one_does(synthetic, recipe):
    def build():
        seed_everything(0)
        if isinstance(recipe, MultiProfile):
            return build_multi_profile("mlp", recipe.profiles, in_channels=1, input_size=8, hidden=[12, 12])
        return get_model("mlp", in_channels=1, input_size=8, hidden=[12, 12])

    config = TrainConfig(epochs=2, batch_size=64, seed=5, train_limit=300)
    straight = build()
    expected = Trainer(straight, synthetic, config, recipe, progress=False).fit()
    # 7 steps in (mid-epoch: 5 steps per epoch), save, and continue in a new trainer.
    first = Trainer(build(), synthetic, config, recipe, progress=False)
    assert first.fit(max_steps=7) is None
    state = copy.deepcopy(first.state_dict())
    assert (state["epoch"], state["epoch_step"]) == (1, 2)
    fresh = build()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)  # whatever it held, loading the state replaces it
    second = Trainer(fresh, synthetic, config, recipe, progress=False)
    second.load_state_dict(state)
    got = second.fit()
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, fresh.state_dict()[name]), name
    assert got["test_accuracy"] == expected["test_accuracy"]
    assert got["train_loss"] == pytest.approx(expected["train_loss"])


def test_progress_bar_is_off_when_not_a_terminal(synthetic, capsys):
    train(fresh_model(), synthetic, TrainConfig(epochs=1), IDP(), progress=None)  # pytest's stderr is no TTY
    assert "step" not in capsys.readouterr().err


def test_progress_bar_counts_steps_with_loss_and_speed(synthetic, capsys):
    config = TrainConfig(epochs=2, batch_size=100)
    train(fresh_model(), synthetic, config, IDP(), progress=True)
    err = capsys.readouterr().err
    assert "20/20" in err and "loss=" in err and "ex_s=" in err  # 1000 examples / 100 × 2 epochs


def test_default_learning_rates():
    assert TrainConfig().lr == 0.05
    assert TrainConfig(optimizer="adam").lr == 1e-3


@pytest.mark.parametrize("kwargs, match", [
    ({"optimizer": "rmsprop"}, "unknown optimizer"),
    ({"schedule": "linear"}, "unknown schedule"),
    ({"train_limit": 0}, "train limit"),
    ({"epochs": 0}, "at least 1"),
    ({"lr": -1.0}, "learning rate"),
    ({"lr": float("inf")}, "learning rate"),
])
def test_bad_training_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("name, settings, match", [
    ("idp", {"cut": "sometimes"}, "unknown cut"),
    ("idp", {"profile_gradient": "none"}, "unknown profile gradient"),
    ("idp", {"sandwich": 3}, "has no setting sandwich"),
    ("rmsprop", {}, "unknown recipe"),
])
def test_bad_recipe_settings(name, settings, match):
    with pytest.raises(ValueError, match=match):
        get_recipe(name, **settings)


def test_every_recipe_is_registered_and_round_trips_through_its_dict():
    from dynscale.train import recipe_from_dict

    assert set(list_recipes()) >= {"idp", "multi-profile", "us", "independent", "early-exit", "frozen-exits"}
    for name in list_recipes():
        recipe = get_recipe(name)
        assert recipe_from_dict(recipe.to_dict()) == recipe


def test_random_cut_draws_follow_the_authors_distribution():
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([draw_cut(g) for _ in range(4000)])
    assert (draws > 0).all() and (draws <= 1).all()
    assert abs((1 - draws).mean().item() - 0.1) < 0.01  # d ~ Exponential(scale 0.1)
    ranged = [draw_cut(g, 0.3, 1.0) for _ in range(500)]
    assert min(ranged) > 0.3 and max(ranged) <= 1.0


def test_random_cuts_set_each_cut_layer_its_own_width():
    from dynscale.layers import incomplete_layers

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
        metrics = train(model, synthetic, TrainConfig(epochs=10), IDP(cut="random"), progress=False)
        states.append(model.state_dict())
    assert metrics["test_accuracy"] > 0.7
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_a_diverging_loss_stops_training_with_the_epoch_and_step(synthetic):
    from dynscale.errors import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=r"at epoch 1, step \d+.*lower the learning rate"):
        train(fresh_model(), synthetic, TrainConfig(epochs=3, lr=1e30, momentum=0.0), IDP(), progress=False)


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
