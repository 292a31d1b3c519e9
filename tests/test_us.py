import pytest
import torch
import torch.nn.functional as F

from dynscale import get_model, list_models, set_width, width
from dynscale.compare import compare
from dynscale.eval import read_curves
from dynscale.idp import sweep_runs, train_run
from dynscale.layers import kept_channels
from dynscale.runs import RunConfig, load_run
from dynscale.slimmable import Independent, Sandwich
from dynscale.train import TrainConfig, seed_everything, train

from tiny import tiny_options


def sandwich_backward(model, x, y, recipe, rng):
    """One step's gradients, as the trainer computes them: each yielded loss back-propagated."""
    losses = [loss.detach() for loss in _backward_each(recipe.losses(model, x, y, rng, 0))]
    return sum(losses)


def _backward_each(losses):
    for loss in losses:
        loss.backward()
        yield loss


def mlp(seed=0):
    seed_everything(seed)
    return get_model("mlp", in_channels=1, input_size=8, hidden=[20, 20], profile="linear")


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("share", [1.0, 0.5])  # the US-Nets paper's full distillation; the default half
def test_sandwich_accumulates_the_largest_and_smallest_widths(synthetic, share):
    x, y = synthetic.train_x[:32], synthetic.train_y[:32]
    model = mlp()
    sandwich_backward(model, x, y, Sandwich(sandwich=2, distill_weight=share), torch.Generator())
    got = grads(model)
    model.zero_grad()
    logits = model(x)
    (F.cross_entropy(logits, y) / 2).backward()  # the mean over the sandwich's two widths
    teacher = logits.detach().softmax(1)
    with width(model, 0.25):
        student = model(x)
        kd = -(teacher * F.log_softmax(student, 1)).sum(1).mean()
        ((share * kd + (1 - share) * F.cross_entropy(student, y)) / 2).backward()
    for name, grad in grads(model).items():
        torch.testing.assert_close(got[name], grad, msg=name)


def test_gradients_from_every_width_reach_the_weights(synthetic):
    x, y = synthetic.train_x[:32], synthetic.train_y[:32]
    full_only, sandwich = mlp(), mlp()
    (F.cross_entropy(full_only(x), y) / 4).backward()  # the largest width's share of the mean
    sandwich_backward(sandwich, x, y, Sandwich(sandwich=4), torch.Generator().manual_seed(0))
    k = kept_channels(20, 0.25)
    first = "layers.0.weight"
    a, b = full_only.get_parameter(first).grad, sandwich.get_parameter(first).grad
    assert not torch.allclose(a[:k], b[:k])  # narrower widths add to the shared prefix
    # Rows only the full width uses get its gradient alone: the teacher is detached.
    torch.testing.assert_close(a[20 - 2:], b[20 - 2:])


def test_without_distillation_narrow_widths_learn_from_labels(synthetic):
    x, y = synthetic.train_x[:32], synthetic.train_y[:32]
    model = mlp()
    sandwich_backward(model, x, y, Sandwich(sandwich=2, distill=False), torch.Generator())
    got = grads(model)
    model.zero_grad()
    (F.cross_entropy(model(x), y) / 2).backward()
    with width(model, 0.25):
        (F.cross_entropy(model(x), y) / 2).backward()
    for name, grad in grads(model).items():
        torch.testing.assert_close(got[name], grad, msg=name)


def test_us_training_is_good_at_every_width(synthetic):
    seed_everything(0)
    model = get_model("mlp", in_channels=1, input_size=8, hidden=[20, 20], profile="all-one")
    train(model, synthetic, TrainConfig(epochs=20, lr=0.2), Sandwich(), progress=False)
    for p in (0.25, 0.5, 1.0):
        with width(model, p):
            acc = (model.eval()(synthetic.test_x).argmax(1) == synthetic.test_y).float().mean()
        assert acc > 0.8, p


def test_us_run_recalibrates_batchnorm(synthetic, tmp_path):
    config = TrainConfig(epochs=1, train_limit=200)
    run = train_run(tmp_path / "us", "vgg16", synthetic, config, Sandwich(), {"width_mult": 0.0625}, progress=False)
    assert RunConfig.read(run).calibrated_widths == [0.25, 0.5, 0.75, 1.0]


def test_independent_family_trains_one_separate_network_per_width(synthetic, tmp_path):
    seed_everything(0)
    config = TrainConfig(epochs=2)
    run_dir = train_run(tmp_path / "ind", "mlp", synthetic, config, Independent(widths=[0.5, 1.0]),
                        {"hidden": [20, 20]}, progress=False)
    model = load_run(run_dir).model
    narrow, wide = model.members
    assert not model.shared and narrow.layers[2] is not wide.layers[2]
    # The 0.5 network never used its outer channels: they keep their initial values.
    seed_everything(0)
    init = get_model("mlp", in_channels=1, input_size=8, hidden=[20, 20])
    torch.testing.assert_close(narrow.layers[2].weight[10:], init.layers[2].weight[10:])
    assert not torch.equal(narrow.layers[2].weight[:10, :10], init.layers[2].weight[:10, :10])
    set_width(model, 0.5)
    assert model.active_member() is narrow
    (result,) = sweep_runs([str(run_dir)], [0.5, 1.0], progress=False)  # one curve, no envelope
    assert result.curve is None and [p.knobs["width"] for p in result.points] == [0.5, 1.0]
    assert result.points[0].method == "independent"


@pytest.mark.parametrize("recipe, kwargs, match", [
    (Sandwich, {"sandwich": 1}, "at least 2"),
    (Independent, {"widths": [0.25, 0.5]}, "must include 1.0"),
    (Sandwich, {"min_width": 0}, "width must be in"),
])
def test_bad_recipe_settings(recipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        recipe(**kwargs)


@pytest.mark.slow
def test_compare_trains_and_sweeps_the_five_contenders(tmp_path):
    compare("mlp", "synthetic", tmp_path, widths=[0.5, 1.0], epochs=2, progress=False)
    curves = read_curves(tmp_path / "compare.json")
    names = [c.run.split("/")[-1] for c in curves]
    assert names == ["independent", "idp-all-one", "idp-linear", "us-all-one", "us-linear"]
    assert all([p.knobs["width"] for p in c.points] == [0.5, 1.0] for c in curves)
    assert (tmp_path / "compare.png").stat().st_size > 0 and "independent" in (tmp_path / "compare.md").read_text()
    recipes = {n: RunConfig.read(tmp_path / "runs" / n).recipe for n in names}
    assert {n: r["name"] for n, r in recipes.items()} == {
        "independent": "independent", "idp-all-one": "idp", "idp-linear": "idp", "us-all-one": "us",
        "us-linear": "us"}
    assert recipes["idp-linear"]["cut"] == "full"  # the MLP: the paper trained it at full width


def test_compare_trains_convolutional_models_with_random_cuts():
    from dynscale.compare import comparison_plan
    from dynscale.models import list_models, model_info
    from dynscale.reproduce import run_settings

    for name in list_models():
        plan = comparison_plan(name, "synthetic", [0.5, 1.0], epochs=1)
        recipe = run_settings(plan, "idp-linear", "full")[3]
        assert recipe.cut == ("random" if model_info(name).convolutional else "full"), name
    assert comparison_plan("resnet", "synthetic", [1.0], 1)["runs"]["idp-linear"]["cut"] == "random"


@pytest.mark.parametrize("name", list_models())
def test_a_sandwich_step_works_for_every_registered_model(name):
    seed_everything(0)
    model = get_model(name, **tiny_options(name)).train()
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    loss = sandwich_backward(model, x, y, Sandwich(), torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("budget, epochs", [
    ("equal-epochs", {"independent": 3, "idp-all-one": 3, "idp-linear": 3, "us-all-one": 3, "us-linear": 3}),
    ("equal-passes", {"independent": 3, "idp-all-one": 12, "idp-linear": 12, "us-all-one": 3, "us-linear": 3}),
])
def test_compare_states_and_can_equalise_the_training_passes(budget, epochs):
    from dynscale.compare import comparison_plan
    from dynscale.reproduce import run_settings

    plan = comparison_plan("mlp", "synthetic", [0.25, 0.5, 0.75, 1.0], epochs=3, budget=budget, train_examples=640)
    trained = {name: run_settings(plan, name, "full")[1].epochs for name in plan["runs"]}
    assert trained == epochs
    budgets = plan["experiments"]["compare"]["meta"]["training_budgets"]
    totals = {name: b["passes_per_batch"] for name, b in budgets.items()}
    if budget == "equal-passes":  # 4 widths × 3 epochs of the us network, the family's 4 × 3 together
        assert set(totals.values()) == {12}
    else:
        assert totals == {"independent": 12, "idp-all-one": 3, "idp-linear": 3, "us-all-one": 12, "us-linear": 12}
    note = plan["experiments"]["compare"]["note"]
    assert f"**{budget}**" in note and "10 batches per epoch" in note
    assert budget.replace("-", " ") in plan["experiments"]["compare"]["title"]
    with pytest.raises(ValueError, match="equal-epochs or equal-passes"):
        comparison_plan("mlp", "synthetic", [1.0], 1, budget="equal-time")


@pytest.mark.parametrize("settings", [
    {"distill_weight": 0.5, "temperature": 2.0}, {"sampling": "macs"}, {"label_smoothing": 0.1},
    {"distill": False}, {"sandwich": 3},
])
def test_sandwich_ablation_options_train(settings):
    seed_everything(0)
    model = get_model("vgg16", **tiny_options("vgg16")).train()
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    recipe = Sandwich(**settings)
    losses = list(recipe.losses(model, x, y, torch.Generator().manual_seed(0), 0))
    assert len(losses) == recipe.passes(0) and all(torch.isfinite(loss) for loss in losses)


def test_sandwich_defaults_are_the_plain_recipe_and_resolution_mixing_needs_global_pooling():
    seed_everything(0)
    model = get_model("mlp", in_channels=1, input_size=8, hidden=[20, 20]).train()
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6) % 4
    plain = [loss.item() for loss in Sandwich().losses(model, x, y, torch.Generator().manual_seed(0), 0)]
    same = [loss.item() for loss in Sandwich(temperature=1.0, distill_weight=0.5, label_smoothing=0.0)
            .losses(model, x, y, torch.Generator().manual_seed(0), 0)]
    assert plain == same
    with pytest.raises(ValueError, match="global pooling"):
        Sandwich(resolutions=[6]).check(model)
    conv = get_model("vgg16", **tiny_options("vgg16")).train()
    Sandwich(resolutions=[6, 8]).check(conv)
    losses = list(Sandwich(resolutions=[6]).losses(conv, torch.rand(4, 1, 8, 8), torch.arange(4),
                                                  torch.Generator().manual_seed(0), 0))
    assert all(torch.isfinite(loss) for loss in losses)
    for bad, match in [({"sampling": "log"}, "uniform or macs"), ({"temperature": 0}, "> 0"),
                       ({"distill_weight": 2}, r"\[0, 1\]"), ({"label_smoothing": 1.0}, r"\[0, 1\)")]:
        with pytest.raises(ValueError, match=match):
            Sandwich(**bad)


def test_no_weight_decay_on_batch_norm_and_bias():
    from dynscale.train import make_optimizer

    model = get_model("vgg16", **tiny_options("vgg16"))
    decayed = make_optimizer(model.parameters(), TrainConfig(weight_decay=5e-4, decay_bn_bias=False))
    groups = decayed.param_groups
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    assert all(p.dim() > 1 for p in groups[0]["params"]) and all(p.dim() == 1 for p in groups[1]["params"])
    assert len(make_optimizer(model.parameters(), TrainConfig(weight_decay=5e-4)).param_groups) == 1


def test_switchable_batchnorm_trains_a_private_scale_and_shift_per_width(synthetic, tmp_path):
    from dynscale.export import dense
    from dynscale.layers import incomplete_batchnorms, switchable_widths

    config = TrainConfig(epochs=1, train_limit=200)
    recipe = Sandwich(batchnorm="switchable")
    run = train_run(tmp_path / "sw", "vgg16", synthetic, config, recipe, {"width_mult": 0.0625}, progress=False)
    model = load_run(run).model.eval()
    assert switchable_widths(model) == [0.25, 0.5, 0.75, 1.0]
    bn = incomplete_batchnorms(model)[0]
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))  # the shared scale serves untrained widths only
    private = {w: getattr(bn, f"switch_weight_{k}") for w, k in [(0.25, "02500"), (1.0, "10000")]}
    assert not torch.equal(private[0.25], private[1.0])  # each width learned its own
    x = synthetic.test_x[:8]
    for w in (0.25, 1.0):
        with width(model, w):
            expected = model(x)
        set_width(model, w)
        bn_w, _ = bn.affine_parameters(kept_channels(bn.num_features, w))
        assert torch.equal(bn_w, private[w][:len(bn_w)])
        assert torch.allclose(dense(model, w, x[:1])(x), expected, atol=1e-5)  # the export keeps the private ones
    set_width(model, 1.0)
    with pytest.raises(ValueError, match="needs a model with batch-norm"):
        Sandwich(batchnorm="switchable").check(mlp())
    with pytest.raises(ValueError, match="shared or switchable"):
        Sandwich(batchnorm="private")


def test_switchable_batchnorm_steps_run_only_the_private_widths():
    seed_everything(0)
    model = get_model("vgg16", **tiny_options("vgg16")).train()
    recipe = Sandwich(batchnorm="switchable")
    recipe.prepare(model)
    seen = []
    first_bn = next(m for m in model.modules() if hasattr(m, "switchable_widths"))
    hook = first_bn.register_forward_pre_hook(lambda m, _: seen.append(m.in_width))
    losses = list(recipe.losses(model, torch.rand(4, 1, 8, 8), torch.arange(4), torch.Generator().manual_seed(0), 0))
    hook.remove()
    assert len(losses) == 4 and sorted(seen) == [0.25, 0.5, 0.75, 1.0]


def test_switchable_widths_start_at_the_smallest_trained_width_and_ddp_looks_for_unused_ones():
    assert Sandwich(batchnorm="switchable", min_width=0.6).switch_widths() == [0.6, 0.75, 1.0]
    assert Sandwich(batchnorm="switchable").unused_parameters  # one synced backward runs one width
    assert not Sandwich().unused_parameters
