"""``--device``, ``--amp`` and ``--channels-last``: the CPU path everywhere, the GPU path where
one exists (those tests skip here otherwise)."""

import pytest
import torch
from safetensors.torch import load_file

from dynscale.cli import main
from dynscale.device import Execution, amp_dtype, autocast, grad_scaler, place, resolve_device, to_device
from dynscale.runs import RunConfig

TRAIN = ["train", "--data", "digits", "--epochs", "1", "--batch-size", "64", "--threads", "1", "--quiet"]
VGG = ["--model", "vgg16", "--width-mult", "0.125", "--train-limit", "256"]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def test_device_names_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    for bad in ("gpu", "cpu:0", "cuda:x", ""):
        with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    with pytest.raises(ValueError):
        Execution(device="tpu")


@no_gpu
def test_a_gpu_asked_for_where_there_is_none_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--device cuda" in err and "no GPU" in err and "--device cpu" in err
    assert not out.exists() and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="no GPU"):
        resolve_device("cuda:1")


def test_mixed_precision_runs_the_training_forward_in_bfloat16():
    from dynscale.data import load_dataset
    from dynscale.models import get_model
    from dynscale.train import TrainConfig, Trainer, get_recipe, sized_for

    data = load_dataset("digits")
    seen = {}
    for amp in (False, True):
        model = get_model("vgg16", **sized_for(data, {"width_mult": 0.125}))
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        def record(module, inputs, out, amp=amp) -> None:
            if module.training:
                seen.setdefault(amp, out.dtype)

        conv.register_forward_hook(record)
        trainer = Trainer(model, data, TrainConfig(epochs=1, batch_size=32), get_recipe("idp"), progress=False,
                          execution=Execution(amp=amp))
        trainer.fit(max_steps=1)
        assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay float32
    assert seen == {False: torch.float32, True: torch.bfloat16}


def test_mixed_precision_on_the_cpu_autocasts_to_bfloat16(tmp_path):
    out = tmp_path / "run"
    assert main([*TRAIN, *VGG, "--amp", "--out", str(out)]) == 0
    config = RunConfig.read(out)
    assert config.training["execution"]["amp"] == "bfloat16"
    assert all(t.dtype in (torch.float32, torch.int64) for t in load_file(str(out / "model.safetensors")).values())
    assert 0 <= config.metrics["test_accuracy"] <= 1
    cpu = torch.device("cpu")
    assert amp_dtype(cpu) == torch.bfloat16 and grad_scaler(cpu, True) is None  # bfloat16 needs no scaler
    with autocast(cpu, True):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast(cpu, False):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_channels_last_trains_the_same_network_and_writes_standard_weights(tmp_path):
    plain, last = tmp_path / "plain", tmp_path / "last"
    one_step = [*VGG, "--train-limit", "64"]  # later steps amplify the layouts' rounding differences
    assert main([*TRAIN, *one_step, "--out", str(plain)]) == 0
    assert main([*TRAIN, *one_step, "--channels-last", "--out", str(last)]) == 0
    assert RunConfig.read(last).training["execution"]["channels_last"] is True
    got, want = load_file(str(last / "model.safetensors")), load_file(str(plain / "model.safetensors"))
    assert all(t.is_contiguous() for t in got.values())
    for key in want:  # the same computation in another memory layout: equal up to summation order
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-4, msg=key)


def test_to_device_and_place_set_the_memory_format():
    x = to_device(torch.zeros(2, 3, 4, 4), torch.device("cpu"), channels_last=True)
    assert x.is_contiguous(memory_format=torch.channels_last)
    conv = place(torch.nn.Conv2d(3, 4, 3), torch.device("cpu"), channels_last=True)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert place(conv, torch.device("cpu")).weight.is_contiguous()


@gpu
@pytest.mark.parametrize("extra", [[], ["--amp", "--channels-last"]], ids=["fp32", "amp-channels-last"])
def test_training_on_the_gpu(extra, tmp_path):
    out = tmp_path / "run"
    assert main([*TRAIN, *VGG, "--device", "cuda", *extra, "--out", str(out)]) == 0
    config = RunConfig.read(out)
    assert config.training["execution"]["device"].startswith("cuda")
    assert all(t.device.type == "cpu" for t in load_file(str(out / "model.safetensors")).values())
