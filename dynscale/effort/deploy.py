"""The effort method's part of ``dynscale deploy``. A knob's saving comes from a decision per
example and position (which positions SDSS computes exactly, which filters SPET finishes, which
tiles SFMA fills): data-dependent gathers that an ONNX graph would run as masks over the dense
work, saving nothing. So a tuned setting deploys only where it keeps every layer dense (what the
time-objective tuner picks where no knob beats the dense kernel: the dense network, one graph);
a setting with an active knob is named and left out, and a run with no dense setting is refused."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..cost import count_macs
from ..deployable import Deployment, DeployPoint, GraphSpec
from ..errors import DynscaleError
from ..runs import Run
from .settings import EffortSettings


def _active(settings: dict) -> list[str]:
    """``knob on layer`` for every active knob of a tuned setting."""
    layers = EffortSettings.from_json(settings).layers
    return [f"{layer.knob} on {name}" for name, layer in layers.items() if layer.active]


def deploy(run: Run, *, calibration: Sequence[torch.Tensor]) -> Deployment:
    """An effort run's dense settings as one graph (the trained network).

    Raises:
        DynscaleError: when every tuned setting runs a knob (naming them).
    """
    tuned = run.config.section["tuned"]
    if not tuned:
        raise DynscaleError(f"{run.path} holds no tuned setting; tune it with `dynscale effort tune`")
    label = [f"loss≤{t['max_loss']:g} (batch {t.get('batch', 1)})" for t in tuned]
    refused = {label[i]: _active(t["settings"]) for i, t in enumerate(tuned) if _active(t["settings"])}
    dense = [label[i] for i, t in enumerate(tuned) if label[i] not in refused]
    if not dense:
        first, knobs = next(iter(refused.items()))
        raise DynscaleError(f"{run.path}: every tuned setting runs effort knobs ({first}: {', '.join(knobs[:3])}"
                            f"{', …' if len(knobs) > 3 else ''}), whose per-example gathers an ONNX graph cannot "
                            "express as a saving; tune for time (`dynscale effort tune --objective time`), which keeps "
                            "a layer dense where no knob pays, or deploy the trained network (`dynscale deploy` on "
                            "its run)")
    net = run.model.off()  # every layer dense: the network as trained, bit for bit
    example = run.dataset.test_x[:8]
    plain = net.original.eval()
    graphs = {"dense": GraphSpec(plain, {"input": example}, calibration=[{"input": x} for x in calibration],
                                 int8="option")}
    macs = count_macs(plain, example[:1])
    point = DeployPoint("dense", {"graph": "dense"}, {"settings": dense, "knobs": "none active"}, reference=plain,
                        macs=macs)
    notes = [f"left out {name}: {', '.join(knobs)} (not expressible as an ONNX saving)"
             for name, knobs in refused.items()]
    return Deployment({"kind": "single"}, graphs, [point], macs, notes)
