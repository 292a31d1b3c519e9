#!/usr/bin/env bash
# Runtimes side by side (docs/RESULTS.md): VGG-16 (width_mult 0.5) and MobileNet (width_mult 1.0)
# on 28×28 Fashion-MNIST, per width at batch 1 and 64, one thread: the dynamic model in eager
# PyTorch, its dense export in eager PyTorch, and the dense export in ONNX Runtime, all timed in
# the same interleaved rounds, each beside the MAC ratio. A short training run suffices:
# latency does not depend on the weights (the accuracy column is that of a 1-epoch network).
# Runs that already exist are not retrained. About 15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
DYNSCALE=${DYNSCALE:-.venv/bin/dynscale}
OUT=runs/runtime
DOCS=docs/runtime
mkdir -p $DOCS
for spec in "vgg16 0.5" "mobilenet 1.0"; do
    read -r model mult <<<"$spec"
    run=$OUT/$model-w$mult
    [ -d "$run" ] || $DYNSCALE train --model "$model" --data fashion-mnist --width-mult "$mult" --cut random \
        --epochs 1 --train-limit 3000 --calibrate 0.25,0.5,0.75,1.0 --seed 0 --out "$run"
    $DYNSCALE bench "$run" --batch 1,64 --widths 0.25,0.5,0.75 --threads 1 --rounds 7 \
        --runtime torch,torch-dense,onnxruntime --json "$DOCS/$model.json" --csv "$DOCS/$model.csv" \
        --markdown "$DOCS/$model.md"
done
