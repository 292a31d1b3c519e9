"""Run a deploy bundle (``dynscale deploy``) with ONNX Runtime and NumPy only: no PyTorch, no
training library. ::

    from dynscale.runtime import Bundle

    bundle = Bundle.load("bundle/")
    bundle.pick(latency_ms=2.0)          # the most accurate point within 2 ms at batch 1
    result = bundle.run(x)               # x: (N, C, H, W) float32
    result.predictions, result.point

``python -m dynscale.runtime DIR --input x.npy --latency-ms 2`` does the same from a shell.
"""

from .bundle import Bundle, Point, cpu_model, cpu_session, machine, measure_latency, sample_batches
from .manifest import FORMAT, MANIFEST_VERSION, BundleError, check_manifest
from .plans import Result

__all__ = ["FORMAT", "MANIFEST_VERSION", "Bundle", "BundleError", "Point", "Result", "check_manifest", "cpu_model",
           "cpu_session", "machine", "measure_latency", "sample_batches"]
