"""The width knob: a width run's operating points at a list of widths, for the shared engine.

Every width recipe (IDP, multiple profiles, universally slimmable, an independent family)
yields the same kind of point: accuracy, MACs and parameters at a width, timed on PyTorch (the
dynamic model, or its dense export, on the timing's device) or ONNX Runtime (the dense export,
on the CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ..cost import count_macs, count_parameters
from ..data import Dataset
from ..device import model_device, place, to_device
from ..eval import Candidate, Curve, CurveSpec, Measurement, Runner, TimingConfig, accuracy, evaluate
from ..eval.baselines import INT8_BITOPS, int8_calibration, int8_candidate
from ..eval.runtime import onnxruntime_runner, timing_copy, torch_runner
from ..export import dense
from ..layers import check_width, set_width, width, width_scaled
from ..models.multiprofile import MultiProfileModel
from ..runs import WIDTH, Run, open_runs

DEFAULT_WIDTHS = [0.1, 0.25, 0.5, 0.75, 1.0]
# Test examples ONNX Runtime's outputs are checked on before a width is timed there.
CHECK_EXAMPLES = 16


def parse_widths(text: str) -> list[float]:
    """Parses ``"0.1,0.25,1.0"`` into validated widths.

    Raises:
        ValueError: for an empty list, a non-number, or a width outside (0, 1].
    """
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts:
        raise ValueError("give at least one width, e.g. --widths 0.25,0.5,1.0")
    return [check_width(p) for p in parts]


@contextlib.contextmanager
def at_width(model: nn.Module, p: float, profile: int | None = None) -> Iterator[nn.Module]:
    """The model at width ``p`` (and, for multiple profiles, forced to ``profile``)."""
    with width(model, p), (model.use_profile(profile) if profile is not None else contextlib.nullcontext()):
        yield model


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Restores the model's widths, forced profile and training flags afterwards."""
    widths = [(m, m.in_width, m.out_width) for m in width_scaled(model)]
    forced = getattr(model, "forced_profile", None)
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, w_in, w_out in widths:
            m.in_width, m.out_width = w_in, w_out
        if isinstance(model, MultiProfileModel):
            model.forced_profile = forced
        for m, training in flags:
            m.training = training


def width_candidates(model: nn.Module, widths: list[float], test_x: torch.Tensor, method: str = "idp",
                     profile: int | None = None, timing: TimingConfig | None = None) -> list[Candidate]:
    """One candidate per width of a width-scalable model.

    Args:
        model: the model (left as it was: widths are set inside each measurement).
        widths: the widths.
        test_x: test inputs; the first ones check ONNX Runtime's outputs before timing.
        method: the method's name on the points.
        profile: force this profile of a multiple-profile model.
        timing: the timing settings (channels-last, thread count, device), if timing.
    """
    timed: list[nn.Module] = []  # the module the torch runtime times, made once
    device = timing.device if timing else None

    def timed_module() -> nn.Module:
        if not timed:
            timed.append(timing_copy(model, bool(timing and timing.channels_last), device))
        return timed[0]

    def plain(p: float) -> nn.Module:
        member = model.members[profile] if profile is not None else model
        return dense(member, p)

    def candidate(p: float) -> Candidate:
        def measure(x: torch.Tensor, y: torch.Tensor) -> Measurement:
            example = to_device(x[:1], model_device(model))  # counted where the model is
            with at_width(model, p, profile):
                extra = {"bytes_sent": model.bytes_sent(example)} if hasattr(model, "bytes_sent") else {}
                return Measurement(accuracy(model, x, y), count_macs(model, example),
                                   count_parameters(model, example), extra=extra)

        def runner(runtime: str) -> Runner:
            channels_last = bool(timing and timing.channels_last)
            if runtime == "torch":
                module = timed_module()

                def prepare() -> None:
                    set_width(module.eval(), p)
                    if profile is not None:
                        module.forced_profile = profile
                return torch_runner(module, prepare, channels_last)
            if runtime == "torch-dense":
                return torch_runner(timing_copy(plain(p), channels_last, device), channels_last=channels_last)
            return onnxruntime_runner(plain(p), test_x[:CHECK_EXAMPLES], timing.threads if timing else 1,
                                      f"width {p:g}")

        return Candidate(method, {"width": p}, f"{p:g}", measure, runner)

    return [candidate(check_width(p)) for p in widths]


def run_label(run: Run) -> str:
    """A run's label: its directory name, plus its model and profile unless the name says them."""
    name = run.path.name
    profile = run.profile if isinstance(run.profile, str) else "custom"
    missing = [part for part in (run.model_name, profile) if part and part not in name]
    return f"{name} ({', '.join(missing)})" if missing else name


def sweep_model(model: nn.Module, data: Dataset, widths: list[float], timing: TimingConfig | None = None,
                label: str = "model", method: str = "idp", run: str | None = None,
                progress: bool | None = None, device: torch.device | str | None = None,
                int8: bool = False) -> list[Curve]:
    """Evaluates a width-scalable model on the test split of ``data`` at each width.

    A shared multiple-profile model gives one curve per profile (at the widths up to its
    range's top) and their envelope (the best profile at each width).

    Args:
        device: move the model there and evaluate there (None: where it is); the timing's
            PyTorch runtimes time on ``timing.device``.
        int8: also each width exported, statically quantized to int8 and run in ONNX Runtime
            (a width and int8 stacked: their own curve, timed on ``onnxruntime``).

    Returns:
        The curves; MAC and time ratios are relative to width 1.0.
    """
    widths = [check_width(w) for w in widths]
    if device is not None:
        place(model, torch.device(device))
    test = (data.test_x, data.test_y)
    with preserved(model):
        if isinstance(model, MultiProfileModel) and model.shared:
            curves = []
            for i, (low, high) in enumerate(model.ranges):
                inside = [w for w in widths if w <= high + 1e-9]
                name = f"profile {i + 1} ({low:g}-{high:g})"
                curves.append((CurveSpec(f"{label} [{name}]", run, data.name, name),
                               width_candidates(model, inside, data.test_x, method, i, timing)))
            last = curves[-1][1]
            reference = next((c for c in last if c.knobs["width"] == 1.0), None) \
                or width_candidates(model, [1.0], data.test_x, method, len(model.ranges) - 1, timing)[0]
            result = evaluate(curves, reference, test, timing, progress)
            return result + [envelope(result, widths, label, run, data.name)]
        candidates = width_candidates(model, widths, data.test_x, method, None, timing)
        reference = next((c for c in candidates if c.knobs["width"] == 1.0), None) \
            or width_candidates(model, [1.0], data.test_x, method, None, timing)[0]
        curves = [(CurveSpec(label, run, data.name), candidates)]
        if int8:
            curves.append((CurveSpec(f"{label} at int8", run, data.name, "at int8"),
                           int8_candidates(model, widths, data, method, timing)))
        return evaluate(curves, reference, test, timing, progress)


def int8_candidates(model: nn.Module, widths: list[float], data: Dataset, method: str,
                    timing: TimingConfig | None) -> list[Candidate]:
    """Each width's dense export statically quantized to int8 in ONNX Runtime (QDQ), its
    activation ranges calibrated on training batches; BitOps counted as int8 at that width."""
    example = data.test_x[:CHECK_EXAMPLES].cpu()
    calibration = int8_calibration(data.train_x)
    full = count_macs(dense(model, 1.0), example[:1])
    out = []
    for p in widths:
        plain = dense(model, p)
        macs = count_macs(plain, example[:1])
        out.append(int8_candidate(plain, example, calibration, macs=macs, bitops=INT8_BITOPS * macs / full,
                                  method=f"{method}+int8", knobs={"width": p, "precision": "int8"},
                                  label=f"{p:g} int8", threads=timing.threads if timing else 1))
    return out


def envelope(curves: list[Curve], widths: list[float], label: str, run: str | None, data: str) -> Curve:
    """The best point of any curve at each width."""
    points = []
    for w in widths:
        candidates = [p for c in curves for p in c.points if p.knobs["width"] == w]
        if candidates:
            points.append(dataclasses.replace(max(candidates, key=lambda p: p.accuracy)))
    return Curve(f"{label} [envelope]", points, run, data, "envelope")


def sweep_runs(run_dirs: list[str | Path], widths: list[float], data: str | Dataset | None = None,
               timing: TimingConfig | None = None, progress: bool | None = None, what: str = "sweep",
               device: torch.device | str = "cpu", int8: bool = False) -> list[Curve]:
    """Loads and sweeps each run directory (each on its own dataset unless ``data``, a name or
    a loaded dataset, is given), its model evaluated on ``device``.

    Raises:
        DynscaleError: if a run does not fit the dataset, or is not a width run.
    """
    curves = []
    for run in open_runs(run_dirs, (WIDTH,), data, with_data=True, what=what):
        method = run.config.recipe.get("name", "idp")
        curves += sweep_model(run.model, run.dataset, widths, timing, run_label(run), method, str(run.path), progress,
                              device, int8)
    return curves
