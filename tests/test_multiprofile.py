import pytest
import torch

from dynscale.checkpoint import load_run, save_run
from dynscale.multiprofile import (
    build_multi_profile,
    freeze_blocks,
    parse_profile_ranges,
    train_multi_profile,
)
from dynscale.sweep import sweep_runs, to_json
from dynscale.training import TrainConfig, seed_everything, train


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
    config = TrainConfig(epochs=2, cut=cut, weight_decay=1e-3, momentum=0.9)
    train(model.members[0], synthetic, config, progress=False, width_range=(0.0, 0.3))
    x = synthetic.test_x
    with width(model, 0.3), torch.no_grad():
        before = model.eval()(x).clone()
    shared = model.members[0].layers[2]
    weight_before = shared.weight.detach().clone()
    with freeze_blocks(model, 1) as restore:
        train(model.members[1], synthetic, config, progress=False, width_range=(0.3, 1.0), step_hook=restore)
    with width(model, 0.3), torch.no_grad():
        after = model.eval()(x)
    assert torch.equal(before, after)
    k = 6  # ceil(0.3 * 20)
    assert torch.equal(shared.weight[:k, :k], weight_before[:k, :k])
    assert not torch.equal(shared.weight[k:], weight_before[k:])  # profile 2 did learn


def test_train_multi_profile_and_round_trip(synthetic, tmp_path):
    model = two_profile_mlp()
    metrics = train_multi_profile(model, synthetic, TrainConfig(epochs=3), progress=False)
    assert [p["range"] for p in metrics["profiles"]] == [[0.0, 0.3], [0.3, 1.0]]
    save_run(tmp_path / "mp", model, "mlp", "synthetic", metrics=metrics)
    run = load_run(tmp_path / "mp")
    assert run.profile_ranges == [(0.0, 0.3), (0.3, 1.0)]
    assert run.model.members[0].layers[2] is run.model.members[1].layers[2]
    x = synthetic.test_x[:16]
    from dynscale import width

    for p in (0.2, 0.8):
        with width(model, p), width(run.model, p), torch.no_grad():
            assert torch.equal(model.eval()(x), run.model(x))


def test_sweep_shows_each_profile_and_the_envelope(synthetic, tmp_path):
    model = two_profile_mlp()
    train_multi_profile(model, synthetic, TrainConfig(epochs=2), progress=False)
    save_run(tmp_path / "mp", model, "mlp", "synthetic")
    results = sweep_runs([str(tmp_path / "mp")], [0.2, 0.3, 0.6, 1.0], progress=False)
    assert [r.curve for r in results] == ["profile 1 (0-0.3)", "profile 2 (0.3-1)", "envelope"]
    assert [p.width for p in results[0].points] == [0.2, 0.3]  # profile 1 stops at its range
    assert [p.width for p in results[1].points] == [0.2, 0.3, 0.6, 1.0]
    for point in results[2].points:
        candidates = [p.accuracy for r in results[:2] for p in r.points if p.width == point.width]
        assert point.accuracy == max(candidates)
    assert to_json(results)["runs"][2]["curve"] == "envelope"
