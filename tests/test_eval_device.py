"""Evaluation and timing follow ``--device``: batches go to the model's device, PyTorch times on
the timing's device (a GPU's clock waits for its queued work), CPU-only code stays on the CPU,
and the report says where each measurement ran. The GPU tests run where PyTorch sees one."""

import argparse
import json

import pytest
import torch
from torch import nn

import dynscale.device
import dynscale.eval.metrics
import dynscale.eval.timing
from dynscale.cli import main
from dynscale.command import evaluation_device
from dynscale.device import clock, model_device, place, resolve_device
from dynscale.errors import DynscaleError
from dynscale.eval import Runner, TimingConfig, accuracy, time_points, timing_copy, torch_runner
from dynscale.idp import sweep_runs

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU that PyTorch sees")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="refusing a missing GPU needs a machine without one")
FAST = {"rounds": 1, "warmup": 1, "min_run_time": 0.01}
GPU = torch.device("cuda", 0)


def labelled(model: nn.Module, n: int = 50, wrong: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels the model gets right but for the first ``wrong``."""
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:wrong] = (y[:wrong] + 1) % 2
    return x, y


def test_accuracy_takes_batches_to_the_models_device_without_copies_on_the_cpu(monkeypatch):
    model = place(nn.Linear(3, 2), torch.device("cpu"))
    x, y = labelled(model)
    asked, storages = [], []
    real = dynscale.eval.metrics.to_device
    monkeypatch.setattr(dynscale.eval.metrics, "to_device", lambda t, d: asked.append(d) or real(t, d))
    model.register_forward_pre_hook(lambda m, args: storages.append(args[0].untyped_storage().data_ptr()))
    assert accuracy(model, x, y, batch_size=16) == pytest.approx(40 / 50)
    assert asked == [torch.device("cpu")] * 4
    assert set(storages) == {x.untyped_storage().data_ptr()}  # views of the inputs, never copies


def test_timing_config_records_a_resolved_device():
    assert TimingConfig().device == "cpu"
    assert TimingConfig(device=torch.device("cpu")).device == "cpu"
    assert TimingConfig(device="auto").device == str(resolve_device("auto"))
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
        TimingConfig(device="tpu")


@NO_CUDA
def test_timing_on_a_gpu_pytorch_does_not_see_is_refused():
    with pytest.raises(ValueError, match="--device cuda: PyTorch sees no GPU"):
        TimingConfig(device="cuda")


def test_the_clock_waits_for_a_gpu_and_never_for_the_cpu(monkeypatch):
    waited = []
    monkeypatch.setattr(dynscale.device, "synchronize", waited.append)
    read = clock(GPU)
    assert read() <= read()
    assert waited == [GPU, GPU]
    clock(torch.device("cpu"))()
    assert waited == [GPU, GPU]


def test_timing_reads_the_clock_of_each_runners_device(monkeypatch):
    asked = []
    real = dynscale.eval.timing.clock
    monkeypatch.setattr(dynscale.eval.timing, "clock", lambda d: asked.append(d) or real(d))
    runner = torch_runner(nn.Linear(3, 2))
    assert runner.device == torch.device("cpu")
    (result,) = time_points([{"torch": runner}], {"torch": runner}, torch.randn(4, 3),
                            TimingConfig(batch_sizes=[2], **FAST), progress=False)
    assert asked and set(asked) == {torch.device("cpu")}
    assert [lat.device for lat in result] == ["cpu"]


def test_a_runtimes_points_run_on_its_references_device():
    reference, elsewhere = Runner(lambda batch: None), Runner(lambda batch: None, device=GPU)
    with pytest.raises(ValueError, match="on torch the reference runs on cpu but a point on cuda:0"):
        time_points([{"torch": elsewhere}], {"torch": reference}, torch.zeros(2, 1),
                    TimingConfig(batch_sizes=[1], **FAST), progress=False)


def test_timing_copy_moves_a_copy_and_leaves_the_model_where_it_is():
    model = nn.Linear(3, 2)
    assert timing_copy(model, False, "cpu") is model
    moved = timing_copy(model, False, "meta")  # a device without a GPU
    assert moved is not model and model_device(moved).type == "meta" and model_device(model).type == "cpu"


def test_the_evaluation_device_of_the_options():
    assert evaluation_device(argparse.Namespace(device="cpu")) == torch.device("cpu")
    assert evaluation_device(argparse.Namespace(device=None)) == resolve_device("auto")
    assert evaluation_device(argparse.Namespace(device=None), cpu_only="kernels") == torch.device("cpu")
    with pytest.raises(DynscaleError, match=r"^--device cuda:1: its kernels run on the CPU; use --device cpu$"):
        evaluation_device(argparse.Namespace(device="cuda:1"), cpu_only="its kernels run on the CPU")


def test_a_sweep_on_the_cpu_records_the_device_of_every_measurement(mlp_run, tmp_path):
    out = tmp_path / "s.json"
    assert main(["sweep", str(mlp_run), "--widths", "0.5,1.0", "--device", "cpu", "--latency", "--batch", "2",
                 "--rounds", "1", "--min-run-time", "0.01", "--runtime", "torch,torch-dense", "--quiet",
                 "--json", str(out), "--csv", str(tmp_path / "s.csv")]) == 0
    doc = json.loads(out.read_text())
    assert doc["device"] == "cpu" and doc["timing"]["device"] == "cpu" and "gpu" not in doc
    assert [lat["device"] for p in doc["curves"][0]["points"] for lat in p["latency"]] == ["cpu"] * 4
    assert "torch@2 device" in (tmp_path / "s.csv").read_text().splitlines()[0]


def _refuse_work(*args, **kwargs):
    raise AssertionError("the command started working before checking --device")


@NO_CUDA
@pytest.mark.parametrize("command, work", [
    (["sweep", "{run}", "--latency"], "dynscale.idp.sweep.sweep_runs"),
    (["bench", "{run}"], "dynscale.idp.sweep.sweep_runs"),
    (["adaptive", "sweep", "{run}"], "dynscale.adaptive.sweep.sweep_adaptive_run"),
])
def test_a_gpu_pytorch_does_not_see_is_refused_in_one_line_before_any_work(mlp_run, monkeypatch, capsys,
                                                                           command, work):
    monkeypatch.setattr(work, _refuse_work)
    monkeypatch.setattr("dynscale.data.load_dataset", _refuse_work)
    args = [a.format(run=mlp_run) for a in command] + ["--data", "synthetic", "--device", "cuda"]
    assert main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--device cuda: PyTorch sees no GPU" in line and "use --device cpu or auto" in line


@pytest.mark.parametrize("command, work, why", [
    (["dfs", "sweep"], "dynscale.dfs.sweep.dfs_curves", "the DFS executor's kernels"),
    (["effort", "sweep"], "dynscale.effort.runs.sweep_effort_runs", "the effort knobs' kernels"),
])
def test_cpu_only_sweeps_refuse_a_gpu_in_one_line(mlp_run, monkeypatch, capsys, command, work, why):
    monkeypatch.setattr(work, _refuse_work)
    assert main([*command, str(mlp_run), "--device", "cuda:0", "--latency"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"--device cuda:0: {why}" in line and "run on the CPU only; use --device cpu" in line


@CUDA
def test_accuracy_on_a_gpu_is_the_cpus():
    model = nn.Linear(3, 2)
    x, y = labelled(model)
    assert accuracy(place(model, GPU), x, y) == pytest.approx(40 / 50, abs=0.02)


@CUDA
def test_timing_on_a_gpu_synchronises_it(monkeypatch):
    waited = []
    real = dynscale.device.synchronize
    monkeypatch.setattr(dynscale.device, "synchronize", lambda d: waited.append(d) or real(d))
    runner = torch_runner(place(nn.Linear(3, 2), GPU))
    (result,) = time_points([{"torch": runner}], {"torch": runner}, torch.randn(4, 3),
                            TimingConfig(batch_sizes=[2], device="cuda", **FAST), progress=False)
    assert waited and set(waited) == {GPU}
    assert [lat.device for lat in result] == ["cuda:0"]


@CUDA
def test_a_width_sweep_on_a_gpu_times_onnx_runtime_on_the_cpu(mlp_run):
    pytest.importorskip("onnxruntime")
    timing = TimingConfig(batch_sizes=[2], runtimes=["torch", "torch-dense", "onnxruntime"], device="cuda", **FAST)
    (gpu,) = sweep_runs([str(mlp_run)], [0.5, 1.0], timing=timing, device="cuda", progress=False)
    (cpu,) = sweep_runs([str(mlp_run)], [0.5, 1.0], progress=False)
    for on_gpu, on_cpu in zip(gpu.points, cpu.points, strict=True):
        assert on_gpu.accuracy == pytest.approx(on_cpu.accuracy, abs=0.01)
        assert (on_gpu.macs, on_gpu.params) == (on_cpu.macs, on_cpu.params)
        assert {lat.runtime: lat.device for lat in on_gpu.latency} == {
            "torch": "cuda:0", "torch-dense": "cuda:0", "onnxruntime": "cpu"}


@CUDA
def test_a_cascade_sweep_on_a_gpu(cascade_runs):
    from dynscale.adaptive import sweep_cascade

    timing = TimingConfig(batch_sizes=[64], examples=128, device="cuda", **FAST)
    gpu = sweep_cascade(cascade_runs, lambdas=[0.01], max_losses=[1.0], timing=timing, device="cuda", progress=False)
    cpu = sweep_cascade(cascade_runs, lambdas=[0.01], max_losses=[1.0], progress=False)
    for on_gpu, on_cpu in zip(gpu, cpu, strict=True):
        for a, b in zip(on_gpu.points, on_cpu.points, strict=True):
            assert a.accuracy == pytest.approx(b.accuracy, abs=0.05)
            assert {lat.device for lat in a.latency} == {"cuda:0"}
