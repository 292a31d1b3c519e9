#!/usr/bin/env bash
# DyVEDeep on Fashion-MNIST (docs/RESULTS.md): VGG-16 at width_mult 0.5 and 0.25 (6,000 training
# images held out; trained here, with benchmarks/adaptive_fashion.sh's commands, when missing),
# the effort knobs tuned on those held-out images for each accuracy-loss bound and for batch 1
# and 64 (one search per bound and batch size, maximising the time saved as measured on this
# machine: the cost table is cached in $DYNSCALE_CACHE, else ~/.cache/dynscale), then every tuned
# setting measured on the test split: accuracy, MACs counted, and wall-clock at batch 1 and 64
# (one thread) in eager PyTorch, beside the dense network in eager PyTorch and in ONNX Runtime,
# the knobs off (batch-norm folded, each layer on its fastest dense kernel: that gain is not the
# knobs'), and static int8. Beside them, the same knobs tuned for the counted MACs saved
# (--objective macs, the paper's objective, batch 1): counted savings whose measured time the
# sweep shows. The MLP takes SPET alone. Then a profile of where the time goes, at the MAC-tuned
# setting (the time-tuned ones may keep every layer dense: then there is nothing of the knobs
# to profile), and the cost table behind the tuning (benchmarks/effort_costs.py).
# Runs that already exist are not retuned; run it on a quiet machine (TUNE_ONLY=1 stops before
# the timing, to tune while the machine is busy).
set -euo pipefail
cd "$(dirname "$0")/.."
DYNSCALE=${DYNSCALE:-.venv/bin/dynscale}
PYTHON=${PYTHON:-.venv/bin/python}
OUT=runs/effort
BASE=runs/adaptive
DOCS=docs/effort
COMMON=(--data fashion-mnist --holdout 6000 --train-limit 24000 --profile all-one --threads 1)
BOUNDS=0.25,0.5,1,2
TUNE=(--max-loss $BOUNDS --batch 1,64 --threads 1)
TIMING=(--latency --batch 1,64 --threads 1 --rounds 5 --runtime torch,onnxruntime)
mkdir -p $OUT $BASE $DOCS

[ -d $BASE/c2-vgg16 ] || $DYNSCALE train --model vgg16 --width-mult 0.25 --epochs 8 "${COMMON[@]}" --out $BASE/c2-vgg16
[ -d $OUT/vgg16-w0.5 ] || $DYNSCALE train --model vgg16 --width-mult 0.5 --epochs 8 "${COMMON[@]}" --out $OUT/vgg16-w0.5
[ -d $BASE/c0-mlp ] || $DYNSCALE train --model mlp --epochs 20 "${COMMON[@]}" --out $BASE/c0-mlp

[ -d $OUT/vgg16-w0.5-effort ] || $DYNSCALE effort tune $OUT/vgg16-w0.5 "${TUNE[@]}" --out $OUT/vgg16-w0.5-effort
[ -d $OUT/vgg16-w0.25-effort ] || $DYNSCALE effort tune $BASE/c2-vgg16 "${TUNE[@]}" --out $OUT/vgg16-w0.25-effort
[ -d $OUT/vgg16-w0.5-effort-macs ] || $DYNSCALE effort tune $OUT/vgg16-w0.5 --objective macs --max-loss $BOUNDS \
    --batch 1 --threads 1 --out $OUT/vgg16-w0.5-effort-macs
[ -d $OUT/vgg16-w0.25-effort-macs ] || $DYNSCALE effort tune $BASE/c2-vgg16 --objective macs --max-loss $BOUNDS \
    --batch 1 --threads 1 --out $OUT/vgg16-w0.25-effort-macs
[ -d $OUT/mlp-spet ] || $DYNSCALE effort tune $BASE/c0-mlp --knobs spet "${TUNE[@]}" --out $OUT/mlp-spet
[ -z "${TUNE_ONLY:-}" ] || exit 0

for width in 0.5 0.25; do
    $DYNSCALE effort sweep $OUT/vgg16-w$width-effort $OUT/vgg16-w$width-effort-macs "${TIMING[@]}" \
        --json $DOCS/vgg16-w$width.json --csv $DOCS/vgg16-w$width.csv --markdown $DOCS/vgg16-w$width.md \
        --plot $DOCS/vgg16-w$width.png --title "DyVEDeep on VGG-16 (width_mult $width), Fashion-MNIST"
done
$DYNSCALE effort sweep $OUT/mlp-spet "${TIMING[@]}" \
    --json $DOCS/mlp.json --csv $DOCS/mlp.csv --markdown $DOCS/mlp.md --plot $DOCS/mlp.png \
    --title "DyVEDeep (SPET) on the MLP, Fashion-MNIST"
$PYTHON benchmarks/effort_profile.py $OUT/vgg16-w0.5-effort-macs 0.5 > $DOCS/profile.md
for width in 0.5 0.25; do  # what each knob costs against each layer's fastest dense kernel (the cost table)
    $PYTHON benchmarks/effort_costs.py $OUT/vgg16-w$width-effort 1 64 > $DOCS/costs-w$width.md
done
