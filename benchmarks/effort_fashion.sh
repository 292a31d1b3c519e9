#!/usr/bin/env bash
# DyVEDeep on Fashion-MNIST (docs/RESULTS.md): VGG-16 (width_mult 0.25) and the MLP of the
# adaptive benchmark (6,000 training images held out; trained here, with its commands, when
# benchmarks/adaptive_fashion.sh has not trained them), then the effort knobs
# tuned on those held-out images for each accuracy-loss bound — each knob alone, and all three —
# and every tuned setting measured on the test split: accuracy, MACs really performed, and
# wall-clock at batch 1 and 64 (one thread), against the same network without knobs.
# Then a profile of where the time goes. Runs that already exist are not retrained.
set -euo pipefail
cd "$(dirname "$0")/.."
DYNSCALE=${DYNSCALE:-.venv/bin/dynscale}
PYTHON=${PYTHON:-.venv/bin/python}
OUT=runs/effort
BASE=runs/adaptive
DOCS=docs/effort
COMMON=(--data fashion-mnist --holdout 6000 --train-limit 24000 --profile all-one)
BOUNDS=0.25,0.5,1,2
TIMING=(--latency --batch 1,64 --threads 1 --rounds 5)
mkdir -p $OUT $BASE $DOCS

[ -d $BASE/c2-vgg16 ] || $DYNSCALE train --model vgg16 --width-mult 0.25 --epochs 8 "${COMMON[@]}" --out $BASE/c2-vgg16
[ -d $BASE/c0-mlp ] || $DYNSCALE train --model mlp --epochs 20 "${COMMON[@]}" --out $BASE/c0-mlp

for knobs in spet sdss sfma spet,sdss,sfma; do
    name=${knobs//,/-}
    [ -d $OUT/vgg16-$name ] || $DYNSCALE effort tune $BASE/c2-vgg16 --knobs $knobs --max-loss $BOUNDS --threads 1 --out $OUT/vgg16-$name
done
[ -d $OUT/mlp-spet ] || $DYNSCALE effort tune $BASE/c0-mlp --knobs spet --max-loss $BOUNDS --threads 1 --out $OUT/mlp-spet
[ -z "${TUNE_ONLY:-}" ] || exit 0  # tune while the machine is busy; time later on a quiet one

$DYNSCALE effort sweep $OUT/vgg16-spet $OUT/vgg16-sdss $OUT/vgg16-sfma $OUT/vgg16-spet-sdss-sfma "${TIMING[@]}" \
    --json $DOCS/vgg16.json --csv $DOCS/vgg16.csv --markdown $DOCS/vgg16.md --plot $DOCS/vgg16.png \
    --title "DyVEDeep on VGG-16 (width_mult 0.25), Fashion-MNIST"
$DYNSCALE effort sweep $OUT/mlp-spet "${TIMING[@]}" \
    --json $DOCS/mlp.json --csv $DOCS/mlp.csv --markdown $DOCS/mlp.md --plot $DOCS/mlp.png \
    --title "DyVEDeep (SPET) on the MLP, Fashion-MNIST"
$PYTHON benchmarks/effort_profile.py $OUT/vgg16-spet-sdss-sfma 0.5 > $DOCS/profile.md
