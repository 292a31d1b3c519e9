import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dynscale import get_model
from dynscale.idp import calibrate_bn, calibrate_run, sweep_runs
from dynscale.layers import IncompleteBatchNorm2d, IncompleteConv2d, calibrated_widths, set_width, width
from dynscale.runs import load_run, save_run


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(IncompleteConv2d(1, 8, 3, padding=1, cut_input=False), IncompleteBatchNorm2d(8),
                         nn.ReLU(), IncompleteConv2d(8, 4, 3, padding=1, cut_output=False))


def test_batchnorm_is_sliced_with_the_layer_before():
    net = tiny_net().eval()
    bn = net[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    set_width(net, 0.5)
    x = torch.randn(2, 1, 5, 5)
    h = net[0](x)  # (2, 4, 5, 5)
    assert h.shape[1] == 4
    expected = F.batch_norm(h, bn.running_mean[:4], bn.running_var[:4], bn.weight[:4], bn.bias[:4], False)
    torch.testing.assert_close(bn(h), expected)


def test_training_mode_updates_only_the_kept_running_statistics():
    bn = IncompleteBatchNorm2d(6).train()
    bn(torch.randn(4, 3, 2, 2) + 5)
    assert (bn.running_mean[:3] > 0.1).all() and (bn.running_mean[3:] == 0).all()


def loader(n=64, batch=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g) * 3 + 1
    return [(x[i:i + batch], None) for i in range(0, n, batch)], x


def test_calibration_stores_the_statistics_of_each_width():
    net = tiny_net()
    batches, x = loader()
    before = net[1].running_mean.clone()
    calibrate_bn(net, batches, [0.5, 1.0])
    assert calibrated_widths(net) == [0.5, 1.0]
    torch.testing.assert_close(net[1].running_mean, before)  # own statistics untouched
    for w in (0.5, 1.0):
        with width(net, w), torch.no_grad():
            h = net[0].eval()(x)  # the batch-norm input at this width: (N, c, H, W)
        c = h.shape[1]
        mean = getattr(net[1], f"calib_mean_{round(w * 10000):05d}")
        var = getattr(net[1], f"calib_var_{round(w * 10000):05d}")
        assert mean.shape == (c,)
        torch.testing.assert_close(mean, h.mean(dim=(0, 2, 3)), atol=1e-5, rtol=1e-4)
        # Cumulative average of per-batch unbiased variances: close to the population variance.
        torch.testing.assert_close(var, h.var(dim=(0, 2, 3)), atol=0.05, rtol=0.05)


def test_evaluation_uses_calibrated_statistics_at_calibrated_widths_only():
    net = tiny_net()
    batches, x = loader()
    net.eval()
    with width(net, 0.5), torch.no_grad():
        uncalibrated = net(x[:4])
    calibrate_bn(net, batches, [0.5])
    with width(net, 0.5), torch.no_grad():
        calibrated = net(x[:4])
        h = net[0](x[:4])
        bn = net[1]
        manual = net[3](F.relu(F.batch_norm(h, bn.calib_mean_05000, bn.calib_var_05000, bn.weight[:4], bn.bias[:4],
                                            False, 0.0, bn.eps)))
    assert not torch.allclose(uncalibrated, calibrated)
    torch.testing.assert_close(calibrated, manual)
    with width(net, 0.75), torch.no_grad():  # uncalibrated width: sliced running statistics
        h = net[0](x[:4])
        torch.testing.assert_close(net[1](h), F.batch_norm(h, bn.running_mean[:6], bn.running_var[:6],
                                                            bn.weight[:6], bn.bias[:6], False, 0.0, bn.eps))


def test_calibration_needs_batchnorm():
    with pytest.raises(ValueError, match="no IncompleteBatchNorm"):
        calibrate_bn(get_model("mlp", input_size=4, hidden=[4]), [(torch.randn(2, 1, 4, 4), None)], [0.5])


def test_calibrated_statistics_are_saved_with_the_run_and_used_by_sweep(tmp_path, synthetic):
    torch.manual_seed(0)
    model = get_model("vgg16", in_channels=1, input_size=8, width_mult=0.0625)
    save_run(tmp_path / "r", model, "synthetic")
    assert calibrate_run(str(tmp_path / "r"), [0.5, 1.0], batches=2) == [0.5, 1.0]
    run = load_run(tmp_path / "r")
    assert run.config.calibrated_widths == [0.5, 1.0]
    assert hasattr(run.model.features[1], "calib_mean_05000")
    # The sweep evaluates the loaded model, whose batch-norm now uses the stored statistics.
    x = synthetic.test_x
    bn = run.model.features[1]
    with width(run.model, 0.5), torch.no_grad():
        logits = run.model(x)
        bn.clear_statistics()
        assert not torch.allclose(run.model(x), logits)
    (point,) = sweep_runs([str(tmp_path / "r")], [0.5], progress=False)[0].points
    assert point.accuracy == (logits.argmax(1) == synthetic.test_y).sum().item() / len(synthetic.test_y)
