"""The effort knobs' measured costs: the cache (written, read back, keyed by batch size and
threads, a damaged file never trusted), the dense kernel each layer runs on, and the tuner's
dispatch from the table. Costs come from hand-written clocks: no test depends on timing."""

import json

import pytest
import torch

from dynscale.effort import SDSS, CostTable, EffortNet, EffortSettings, LayerEffort, measure, tune
from dynscale.effort.costs import Probe, entry_key, layer_seconds, machine, signature

from tiny import tiny_model


class Clock:
    """A clock that computes seconds from the probe (dense 1 ms; a knob 0.2 ms plus 0.7 ms at
    all of its work), counting its calls; ``slow`` names layer signatures whose knobs take 2 ms,
    ``kernels`` the dense kernel that is fastest at each batch size."""

    def __init__(self, slow=(), kernels=None):
        self.calls, self.slow, self.kernels = 0, set(slow), kernels or {}

    def __call__(self, probe, run):
        run()
        self.calls += 1
        if probe.variant.startswith("dense/"):
            return 0.5e-3 if self.kernels.get(probe.batch) == probe.variant[6:] else 1e-3
        return 2e-3 if probe.signature in self.slow else (0.2 + 0.7 * probe.fraction) * 1e-3


@pytest.fixture
def net():
    model = tiny_model("vgg16", input_size=8)
    return EffortNet(model, calibration=torch.randn(16, 1, 8, 8))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNSCALE_CACHE", str(tmp_path))
    return tmp_path / "effort-costs.json"


def test_the_table_is_written_read_back_and_keyed_by_batch_and_threads(net, cache):
    clock = Clock()
    table = measure(net.layers, ["spet", "sdss", "sfma"], [1], 1, clock=clock, progress=False)
    assert cache.is_file() and clock.calls > 0
    doc = json.loads(cache.read_text())
    assert doc["format"] == "dynscale-effort-costs" and list(doc["machines"]) == [machine()]
    again = CostTable.load()
    assert again.entries == table.entries
    first = clock.calls
    measure(net.layers, ["spet", "sdss", "sfma"], [1], 1, clock=clock, progress=False)
    assert clock.calls == first  # everything read from the cache
    measure(net.layers, ["spet", "sdss", "sfma"], [1, 64], 1, clock=clock, progress=False)
    after_batch = clock.calls
    assert after_batch > first  # another batch size is measured, the first one not again
    measure(net.layers, ["spet", "sdss", "sfma"], [64], 2, clock=clock, progress=False)
    assert clock.calls - after_batch == after_batch - first  # another thread count: all of it again
    layer = net.layers["features.3"]
    keys = {entry_key(signature(layer), "dense/conv", b, t) for b, t in ((1, 1), (64, 1), (64, 2))}
    assert keys <= set(CostTable.load().entries)


@pytest.mark.parametrize("damage", [
    "{not json",
    json.dumps({"format": "something else", "schema_version": 1, "machines": {}}),
    json.dumps({"format": "dynscale-effort-costs", "schema_version": 1,
                "machines": {machine(): {"k": {"fractions": [0.0, 1.0], "seconds": [1e-3]}}}}),
    json.dumps({"format": "dynscale-effort-costs", "schema_version": 1,
                "machines": {machine(): {"k": {"fractions": [1.0, 0.0], "seconds": [1e-3, 2e-3]}}}}),
    '{"format": "dynscale-effort-costs", "schema_version": 1, "machines": {"m": {"k": '
    '{"fractions": [1.0], "seconds": [NaN]}}}}',
    json.dumps({"format": "dynscale-effort-costs", "schema_version": 1,
                "machines": {machine(): {"k": {"fractions": [1.0], "seconds": [-1.0]}}}}),
])
def test_a_damaged_cache_is_not_trusted_but_measured_again(net, cache, capsys, damage):
    cache.write_text(damage)
    table = CostTable.load()
    assert table.entries == {} and table.others == {}
    assert "ignoring the effort cost cache" in capsys.readouterr().err
    clock = Clock()
    measure(net.layers, ["spet"], [1], 1, clock=clock, progress=False)
    assert clock.calls > 0 and CostTable.load().entries  # rebuilt, and valid now


def test_other_machines_entries_are_kept(net, cache):
    other = {"Another CPU | torch 0": {"x | dense/conv | batch 1 | threads 1": {"fractions": [1.0],
                                                                               "seconds": [0.01]}}}
    cache.write_text(json.dumps({"format": "dynscale-effort-costs", "schema_version": 1, "machines": other}))
    measure(net.layers, ["sdss"], [1], 1, clock=Clock(), progress=False)
    machines = json.loads(cache.read_text())["machines"]
    assert machines["Another CPU | torch 0"] == other["Another CPU | torch 0"] and machine() in machines


def test_each_layer_runs_the_dense_kernel_measured_fastest_at_its_batch_size(net, cache):
    measure(net.layers, ["sdss"], [1, 64], 1, clock=Clock(kernels={1: "gemm", 64: "conv"}), progress=False)
    layer = net.layers["features.3"]
    assert layer.kernels[1, 1] == "gemm" and layer.kernels[64, 1] == "conv"
    assert layer.kernels[1, 2] == "gemm"  # SDSS's grid convolution, measured on its own
    assert layer.kernel_for(2) == "gemm" and layer.kernel_for(32) == "conv"  # the nearest batch size measured
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        net.set_settings(EffortSettings())
        torch.testing.assert_close(net(x), net.original(x), rtol=1e-4, atol=1e-4)


def test_costs_are_interpolated_between_the_measured_fractions(net):
    layer = net.layers["features.3"]
    table = CostTable(path=None)
    sig = signature(layer)
    for fraction, seconds in ((0.0, 1.0), (0.5, 2.0), (1.0, 4.0)):
        table.put(Probe(sig, "sdss/2", 1, 1, fraction), seconds)
    for variant, seconds in (("dense/conv", 3.0), ("dense/gemm", 2.5), ("dense/onednn", 3.5)):
        table.put(Probe(sig, variant, 1, 1), seconds)
    effort = LayerEffort(sdss=SDSS(2, 0.1))
    assert layer_seconds(table, layer, effort, 1, 1, 0.25) == pytest.approx(1.5)
    assert layer_seconds(table, layer, effort, 1, 1, 0.75) == pytest.approx(3.0)
    assert layer_seconds(table, layer, LayerEffort(), 1, 1) == 2.5  # the fastest dense kernel
    with pytest.raises(KeyError, match="no measured cost for .* batch 64"):
        layer_seconds(table, layer, effort, 64, 1, 0.5)


def test_the_tuner_keeps_a_layer_dense_where_the_table_says_its_knobs_are_slower(net, synthetic):
    held = (synthetic.train_x[:150], synthetic.train_y[:150])
    knobs = ["sfma"]
    fast = tune(net, held, [5.0], knobs, progress=False,
                table=measure(net.layers, knobs, [1], 1, CostTable(path=None), Clock(), False))[0]
    assert fast.settings.layers, "the test needs a layer the knobs speed up"
    chosen = next(iter(fast.settings.layers))
    slow = Clock(slow={signature(net.layers[chosen])})
    result = tune(net, held, [5.0], knobs, progress=False,
                  table=measure(net.layers, knobs, [1], 1, CostTable(path=None), slow, False))[0]
    same_shape = {n for n, layer in net.layers.items() if signature(layer) == signature(net.layers[chosen])}
    assert not same_shape & set(result.settings.layers)  # dense, though its knobs save MACs
    assert result.settings.layers  # the other layers still take knobs
    assert result.seconds < result.dense_seconds
