#!/usr/bin/env bash
# Adaptive inference on Fashion-MNIST (docs/RESULTS.md): VGG-16 (width_mult 0.25) with four
# early exits trained jointly, its learned policy vs the threshold baseline vs the full network;
# then network selection among an MLP, a ResNet-8 and a VGG-16, with the jump MLP → VGG-16.
# Every run holds out the same 6,000 training examples for the policies. About 40 minutes on
# 2 cores; the wall-clock timing uses one thread at batch 256.
set -euo pipefail
cd "$(dirname "$0")/.."
DYNSCALE=${DYNSCALE:-.venv/bin/dynscale}
OUT=runs/adaptive
COMMON=(--data fashion-mnist --holdout 6000 --train-limit 24000)

$DYNSCALE adaptive train --model vgg16 --width-mult 0.25 --exits block1,block2,block3,block4 \
    --epochs 8 "${COMMON[@]}" --out $OUT/ee-vgg16
$DYNSCALE train --model mlp --profile all-one --epochs 20 "${COMMON[@]}" --out $OUT/c0-mlp
$DYNSCALE train --model resnet --width-mult 0.5 --set blocks_per_stage=1 --profile all-one --epochs 8 \
    "${COMMON[@]}" --out $OUT/c1-resnet8
$DYNSCALE train --model vgg16 --width-mult 0.25 --profile all-one --epochs 8 "${COMMON[@]}" --out $OUT/c2-vgg16

mkdir -p docs/adaptive
$DYNSCALE adaptive sweep $OUT/ee-vgg16 --batch 256 --threads 1 --rounds 3 \
    --json docs/adaptive/early_exit.json --markdown docs/adaptive/early_exit.md --plot docs/adaptive/early_exit.png
$DYNSCALE adaptive cascade $OUT/c0-mlp $OUT/c1-resnet8 $OUT/c2-vgg16 --edges 0-1,1-2,0-2 --batch 256 \
    --threads 1 --rounds 3 \
    --json docs/adaptive/cascade.json --markdown docs/adaptive/cascade.md --plot docs/adaptive/cascade.png
