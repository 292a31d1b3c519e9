#!/usr/bin/env bash
# Deploy bundles on Fashion-MNIST, one network of each method (docs/RESULTS.md, "Deploy bundles"):
# each bundle's points in ONNX Runtime (float32 and, with --int8, static int8) beside the same
# points in eager PyTorch, at batch 1 and 64, one thread, interleaved rounds in one run
# (benchmarks/deploy_compare.py). The networks:
#   width:      the IDP MLP (linear profile, 10 epochs), widths 0.25-1;
#   early exit: exit heads after VGG-16 (width_mult 0.25)'s blocks 1-4, trained on the frozen
#               backbone of the adaptive benchmark (runs/adaptive/c2-vgg16);
#   cascade:    the adaptive benchmark's MLP → VGG-16 (runs/adaptive/c0-mlp, c2-vgg16);
#   DFS:        ResNet-38 (width 1.0) with executed choices, linear gate, 25% target, seed 0
#               (benchmarks/dfs_execute.sh);
#   effort:     the time-tuned VGG-16 (width_mult 0.5): every layer dense (benchmarks/effort_fashion.sh).
# About 10 minutes of training when the runs are missing and 25 minutes of deploying and timing,
# on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DYNSCALE=${DYNSCALE:-.venv/bin/dynscale}
PYTHON=${PYTHON:-.venv/bin/python}
OUT=runs/deploy
DOCS=docs/deploy
ROUNDS=${ROUNDS:-5}
mkdir -p $OUT $DOCS
for run in runs/adaptive/c0-mlp runs/adaptive/c2-vgg16 runs/dfs/x-w1-linear-25-s0 runs/effort/vgg16-w0.5-effort; do
    [ -d $run ] || { echo "make $run first (benchmarks/adaptive_fashion.sh, dfs_execute.sh, effort_fashion.sh)"; exit 2; }
done
[ -d $OUT/mlp-linear ] || $DYNSCALE train --model mlp --data fashion-mnist --profile linear --epochs 10 \
    --holdout 6000 --train-limit 24000 --threads 1 --quiet --out $OUT/mlp-linear
[ -d $OUT/ee-vgg16 ] || $DYNSCALE adaptive train --backbone runs/adaptive/c2-vgg16 --exits block1,block2,block3,block4 \
    --epochs 3 --data fashion-mnist --threads 1 --quiet --out $OUT/ee-vgg16
[ -d $OUT/cascade ] || $DYNSCALE adaptive cascade runs/adaptive/c0-mlp runs/adaptive/c2-vgg16 --no-timing --quiet \
    --lambdas 0 --max-loss 1 --save $OUT/cascade

deploy() {  # NAME RUN OPTIONS...
    local name=$1 run=$2
    shift 2
    $DYNSCALE deploy $run --out $OUT/bundle-$name --int8 --rounds $ROUNDS --force --quiet "$@" | tee $DOCS/$name.txt
    $PYTHON benchmarks/deploy_compare.py $run $OUT/bundle-$name --rounds $ROUNDS > $DOCS/$name.md
}
deploy width $OUT/mlp-linear --widths 0.25,0.5,0.75,1
deploy early-exit $OUT/ee-vgg16
deploy cascade $OUT/cascade
deploy dfs runs/dfs/x-w1-linear-25-s0
deploy effort runs/effort/vgg16-w0.5-effort
