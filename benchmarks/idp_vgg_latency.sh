#!/usr/bin/env bash
# Latency of VGG-16 (width_mult 0.5, 28x28 Fashion-MNIST inputs) per width at batch 1 and 64,
# for the dynamic model and its dense export. A short training run suffices: latency does not
# depend on the weights. Writes runs/vgg16-w0.5 and docs/vgg16_latency.json.
set -euo pipefail
cd "$(dirname "$0")/.."
DYNSCALE=${DYNSCALE:-.venv/bin/dynscale}
$DYNSCALE train --model vgg16 --data fashion-mnist --width-mult 0.5 --cut random --epochs 1 \
    --train-limit 3000 --calibrate 0.25,0.5,0.75,1.0 --seed 0 --out runs/vgg16-w0.5
$DYNSCALE bench runs/vgg16-w0.5 --batch 1,64 --widths 0.25,0.5,0.75 --threads 1 --rounds 7 \
    --json docs/vgg16_latency.json
