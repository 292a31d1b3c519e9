"""Where the time of executed fractional skipping goes: each run's executor, on PyTorch and on ONNX
Runtime, profiled by span (``dfs.gate``, ``dfs.gather``, ``dfs.kernel``, ``dfs.scatter``,
``dfs.quantize``) on real test images at batch 1 and 64, one thread. Prints Markdown
(benchmarks/dfs_execute.sh writes it to docs/dfs/execute-profile.md): per run, what its gates
chose, then a profile per runtime and batch size.

Usage: python benchmarks/dfs_profile.py DFS_RUN [DFS_RUN...]   (runs of `dynscale dfs train --execute`)
"""

import sys

import torch

from dynscale.dfs.execute import DFSExecutor
from dynscale.dfs.kernels import RUNTIMES
from dynscale.dfs.sweep import calibration_batches
from dynscale.eval import profile_point, profiles_markdown
from dynscale.runs import open_run

BATCHES = {1: 200, 64: 4}  # batch size -> batches profiled


def main(runs: list[str]) -> None:
    torch.set_num_threads(1)
    print("# Where the time of executed DFS goes (one thread)\n")
    print(f"Command: `python benchmarks/dfs_profile.py {' '.join(runs)}`\n")
    print("Spans are inclusive: `dfs.kernel` holds the block's (and the fixed segments') kernels, ONNX Runtime's "
          "quantize/dequantize included; `dfs.quantize` is PyTorch's quantize_per_tensor and dequantize around "
          "its int8 blocks; `dfs.gate` the gate and its argmax on the whole batch.\n")
    for path in runs:
        run = open_run(path, ("dfs",), with_data=True, what="dfs_profile")
        net, data = run.model, run.dataset
        print(f"## `{path}`: gate {net.gate.kind}, choices {net.choices}, target {run.config.recipe['target']:g}%\n")
        for runtime in RUNTIMES:
            executor = DFSExecutor(net, calibration_batches(data), runtime)
            profiles = []
            for batch, count in BATCHES.items():
                x = data.test_x[:batch * count]
                batches = [executor.layout(x[i:i + batch]) for i in range(0, len(x), batch)]
                profiles.append(profile_point(executor, batches, f"{runtime}"))
            shares = (executor.last_choices[:, :, None] == torch.arange(len(net.choices))).float().mean((0, 1))
            print(f"Choices on the last batch ({runtime}): "
                  + ", ".join(f"{c}: {100 * s:.0f}%" for c, s in zip(net.choices, shares.tolist(), strict=True))
                  + " (0 skip, 8 int8, 32 float32)\n")
            print(profiles_markdown(profiles))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    main(sys.argv[1:])
