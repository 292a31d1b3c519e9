import torch

from dynscale import get_model
from dynscale.bench import bench_model, format_bench


def test_bench_reports_ratios_for_dynamic_and_dense():
    torch.manual_seed(0)
    model = get_model("vgg16", in_channels=1, input_size=8, width_mult=0.125).eval()
    points = bench_model(model, [0.5], [1, 4], rounds=2, min_run_time=0.01, progress=False)
    assert [(p.batch, p.width) for p in points] == [(1, 1.0), (1, 0.5), (4, 1.0), (4, 0.5)]
    for p in points:
        assert p.latency_ms > 0 and p.dense_latency_ms > 0
        if p.width == 1.0:
            assert p.latency_ratio == p.dense_latency_ratio == p.macs_ratio == 1.0
        else:
            assert 0.2 < p.macs_ratio < 0.3
    table = format_bench(points)
    assert "ideal" in table and len(table.splitlines()) == 2 + 4
