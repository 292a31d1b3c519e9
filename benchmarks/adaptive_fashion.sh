#!/usr/bin/env bash
# Adaptive inference on Fashion-MNIST (docs/RESULTS.md): VGG-16 (width_mult 0.25) with four
# early exits trained jointly — its learned policy vs the threshold baseline vs the full
# network — and the same exits on a frozen, separately trained VGG-16; then network selection
# among an MLP, a ResNet-8 and that VGG-16, with the jump MLP → VGG-16. Every run holds out the
# same 6,000 training examples for the policies. Runs that already exist are not retrained.
# About 50 minutes on 2 cores; the wall-clock timing uses one thread at batch 256.
set -euo pipefail
cd "$(dirname "$0")/.."
DYNSCALE=${DYNSCALE:-.venv/bin/dynscale}
OUT=runs/adaptive
DOCS=docs/adaptive
COMMON=(--data fashion-mnist --holdout 6000 --train-limit 24000)
EXITS=block1,block2,block3,block4
TIMING=(--batch 256 --threads 1 --rounds 5)

[ -d $OUT/ee-vgg16 ] || $DYNSCALE adaptive train --model vgg16 --width-mult 0.25 --exits $EXITS \
    --epochs 8 "${COMMON[@]}" --out $OUT/ee-vgg16
[ -d $OUT/c0-mlp ] || $DYNSCALE train --model mlp --profile all-one --epochs 20 "${COMMON[@]}" --out $OUT/c0-mlp
[ -d $OUT/c1-resnet8 ] || $DYNSCALE train --model resnet --width-mult 0.5 --set blocks_per_stage=1 \
    --profile all-one --epochs 8 "${COMMON[@]}" --out $OUT/c1-resnet8
[ -d $OUT/c2-vgg16 ] || $DYNSCALE train --model vgg16 --width-mult 0.25 --profile all-one --epochs 8 \
    "${COMMON[@]}" --out $OUT/c2-vgg16
[ -d $OUT/ee-frozen-vgg16 ] || $DYNSCALE adaptive train --backbone $OUT/c2-vgg16 --exits $EXITS --epochs 8 \
    "${COMMON[@]}" --out $OUT/ee-frozen-vgg16

mkdir -p $DOCS
# Early exits (joint training): channels-last memory, and PyTorch's default layout.
$DYNSCALE adaptive sweep $OUT/ee-vgg16 "${TIMING[@]}" --channels-last \
    --json $DOCS/early_exit.json --markdown $DOCS/early_exit.md --plot $DOCS/early_exit.png
$DYNSCALE adaptive sweep $OUT/ee-vgg16 "${TIMING[@]}" \
    --json $DOCS/early_exit_contiguous.json --markdown $DOCS/early_exit_contiguous.md
# Network selection with the jump 0 → 2.
$DYNSCALE adaptive cascade $OUT/c0-mlp $OUT/c1-resnet8 $OUT/c2-vgg16 --edges 0-1,1-2,0-2 "${TIMING[@]}" \
    --channels-last --json $DOCS/cascade.json --markdown $DOCS/cascade.md --plot $DOCS/cascade.png
# Exits on the frozen VGG-16 (accuracy and MACs only).
$DYNSCALE adaptive sweep $OUT/ee-frozen-vgg16 --no-timing \
    --json $DOCS/early_exit_frozen.json --markdown $DOCS/early_exit_frozen.md --plot $DOCS/early_exit_frozen.png
