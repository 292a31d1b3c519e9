#!/usr/bin/env bash
# One network vs a family of networks on Fashion-MNIST: `dynscale compare` for the MLP and for
# VGG-16 (width_mult 0.25), then the tables and plots copied into docs/compare/.
set -euo pipefail
cd "$(dirname "$0")/.."
DYNSCALE=${DYNSCALE:-.venv/bin/dynscale}
$DYNSCALE compare --model mlp --data fashion-mnist --epochs 30 --out runs/compare-mlp
$DYNSCALE compare --model vgg16 --data fashion-mnist --width-mult 0.25 --epochs 5 --train-limit 12000 \
    --out runs/compare-vgg16
mkdir -p docs/compare
for m in mlp vgg16; do
    for ext in json md png; do cp "runs/compare-$m/compare.$ext" "docs/compare/$m.$ext"; done
done
