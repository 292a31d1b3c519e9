import pytest
import torch

from dynscale.eval import curves_to_json
from dynscale.idp import MultiProfile, sweep_runs
from dynscale.models import build_multi_profile, parse_profile_ranges
from dynscale.runs import load_run, save_run
from dynscale.train import TrainConfig, Trainer, seed_everything, train


def test_parse_profile_ranges():
    assert parse_profile_ranges("0-0.3,0.3-1.0") == [(0.0, 0.3), (0.3, 1.0)]
    assert parse_profile_ranges("0-1") == [(0.0, 1.0)]


@pytest.mark.parametrize("text, match", [
    ("0.1-1", "start at 0"), ("0-0.5", "end at 1"), ("0-0.3,0.4-1", "contiguous"),
    ("0-0.5,0.5-0.5,0.5-1", "empty"), ("0-x", "LOW-HIGH"), ("0.5", "LOW-HIGH"),
])
def test_bad_profile_ranges(text, match):
    with pytest.raises(ValueError, match=match):
        parse_profile_ranges(text)


def two_profile_mlp(seed=0):
    seed_everything(seed)
    return build_multi_profile("mlp", [(0.0, 0.3), (0.3, 1.0)], in_channels=1, input_size=8, hidden=[20, 20])


def test_members_share_middle_layers_and_keep_first_and_last():
    model = two_profile_mlp()
    a, b = model.members
    assert a.layers[2] is b.layers[2]  # the middle layer
    assert a.layers[0] is not b.layers[0] and a.layers[4] is not b.layers[4]


def test_profile_is_chosen_from_the_width():
    model = two_profile_mlp()
    from dynscale import set_width

    for p, expected in [(0.1, 0), (0.3, 0), (0.31, 1), (1.0, 1)]:
        set_width(model, p)
        assert model.active_profile == expected
    with model.use_profile(0):
        assert model.active_profile == 0
    with pytest.raises(ValueError, match="does not exist"):
        with model.use_profile(2):
            pass


@pytest.mark.parametrize("cut", ["full", "random"])
def test_training_profile_two_leaves_profile_one_bit_identical(synthetic, cut):
    from dynscale import width

    model = two_profile_mlp()
    config = TrainConfig(epochs=2, weight_decay=1e-3, momentum=0.9)
    trainer = Trainer(model, synthetic, config, MultiProfile(cut=cut, profiles=[(0.0, 0.3), (0.3, 1.0)]),
                      progress=False)
    assert trainer.fit(max_steps=2 * trainer.steps_per_epoch) is None  # profile 1 done, profile 2 not begun
    assert trainer.phase == 1 and trainer.step == 0
    x = synthetic.test_x
    with width(model, 0.3), torch.no_grad():
        before = model.eval()(x).clone()
    shared = model.members[0].layers[2]
    weight_before = shared.weight.detach().clone()
    trainer.fit()
    with width(model, 0.3), torch.no_grad():
        after = model.eval()(x)
    assert torch.equal(before, after)
    k = 6  # ceil(0.3 * 20)
    assert torch.equal(shared.weight[:k, :k], weight_before[:k, :k])
    assert not torch.equal(shared.weight[k:], weight_before[k:])  # profile 2 did learn


def test_train_multi_profile_and_round_trip(synthetic, tmp_path):
    model = two_profile_mlp()
    metrics = train(model, synthetic, TrainConfig(epochs=3), MultiProfile(profiles=[(0, 0.3), (0.3, 1)]),
                    progress=False)
    assert [p["range"] for p in metrics["phases"]] == [[0.0, 0.3], [0.3, 1.0]]
    assert [p["phase"] for p in metrics["phases"]] == ["profile 1 (0-0.3)", "profile 2 (0.3-1)"]
    save_run(tmp_path / "mp", model, "synthetic", metrics=metrics)
    run = load_run(tmp_path / "mp")
    assert run.config.profile_ranges == [(0.0, 0.3), (0.3, 1.0)]
    assert run.model.members[0].layers[2] is run.model.members[1].layers[2]
    x = synthetic.test_x[:16]
    from dynscale import width

    for p in (0.2, 0.8):
        with width(model, p), width(run.model, p), torch.no_grad():
            assert torch.equal(model.eval()(x), run.model(x))


def test_sweep_shows_each_profile_and_the_envelope(synthetic, tmp_path):
    model = two_profile_mlp()
    train(model, synthetic, TrainConfig(epochs=2), MultiProfile(profiles=[(0, 0.3), (0.3, 1)]), progress=False)
    save_run(tmp_path / "mp", model, "synthetic")
    results = sweep_runs([str(tmp_path / "mp")], [0.2, 0.3, 0.6, 1.0], progress=False)
    assert [r.curve for r in results] == ["profile 1 (0-0.3)", "profile 2 (0.3-1)", "envelope"]
    assert [p.knobs["width"] for p in results[0].points] == [0.2, 0.3]  # profile 1 stops at its range
    assert [p.knobs["width"] for p in results[1].points] == [0.2, 0.3, 0.6, 1.0]
    for point in results[2].points:
        candidates = [p.accuracy for r in results[:2] for p in r.points if p.knobs == point.knobs]
        assert point.accuracy == max(candidates)
    assert curves_to_json(results)["curves"][2]["curve"] == "envelope"
