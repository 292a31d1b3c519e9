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
