#!/usr/bin/env bash
# Dynamic fractional skipping on Fashion-MNIST (docs/RESULTS.md): a ResNet-38 at a CPU-trainable
# width, trained once at full precision; then, from that backbone, gates trained at computation
# targets of 20-80% of its BitOps with the DFS choices (skip, 8-16 bits, full) and with the
# SkipNet-style choices (skip or full); and static quantization of the backbone at each
# bit-width, and real int8 in ONNX Runtime. Runs that already exist are not retrained.
set -euo pipefail
cd "$(dirname "$0")/.."
DYNSCALE=${DYNSCALE:-.venv/bin/dynscale}
OUT=runs/dfs
DOCS=docs/dfs
# The backbone trains on 24,000 images at lr 0.05. The gates and the joint phase start from it
# at lr 0.01 (at 0.05 the 50% target lost 0.5 points more), on ${GATE_LIMIT:-12000} training images:
# a gated step costs several plain ones, as every choice of every block is computed.
# TRAIN_ONLY=1 stops before the timed sweep (train while the machine is busy, time on a quiet one).
COMMON=(--data fashion-mnist --batch-size 128)
THREADS=(--threads ${THREADS:-1})
MODEL=(--model resnet38 --width-mult ${WIDTH:-0.5})
TARGETS=${TARGETS:-20 35 50 65 80}
GATES=(--gate-epochs ${GATE_EPOCHS:-1} --joint-epochs ${JOINT_EPOCHS:-1} --train-limit ${GATE_LIMIT:-12000} \
       --lr ${GATE_LR:-0.01})
TIMING=(--latency --batch 1,64 --threads 1 --rounds 5)
mkdir -p $OUT $DOCS

[ -d $OUT/resnet38 ] || $DYNSCALE train "${MODEL[@]}" --profile all-one --epochs ${EPOCHS:-8} --train-limit 24000 "${COMMON[@]}" \
    --out $OUT/resnet38
runs=()
for target in $TARGETS; do
    [ -d $OUT/dfs-$target ] || $DYNSCALE dfs train --backbone $OUT/resnet38 --target $target "${GATES[@]}" \
        "${COMMON[@]}" "${THREADS[@]}" --out $OUT/dfs-$target
    [ -d $OUT/skipnet-$target ] || $DYNSCALE dfs train --backbone $OUT/resnet38 --target $target --choices 0,32 \
        "${GATES[@]}" "${COMMON[@]}" "${THREADS[@]}" --out $OUT/skipnet-$target
    # SkipNet-style gates lose far more at lr 0.01 than at 0.05, so they get both.
    [ -d $OUT/skipnet-lr0.05-$target ] || $DYNSCALE dfs train --backbone $OUT/resnet38 --target $target \
        --choices 0,32 "${GATES[@]}" --lr 0.05 "${COMMON[@]}" "${THREADS[@]}" --out $OUT/skipnet-lr0.05-$target
    runs+=($OUT/dfs-$target $OUT/skipnet-$target $OUT/skipnet-lr0.05-$target)
done
[ -z "${TRAIN_ONLY:-}" ] || exit 0

$DYNSCALE dfs sweep $OUT/resnet38 "${runs[@]}" --static-bits 4,6,8,10,12,16 --int8 "${TIMING[@]}" \
    --json $DOCS/dfs.json --csv $DOCS/dfs.csv --markdown $DOCS/dfs.md --plot $DOCS/dfs.png \
    --choices-plot $DOCS/choices.png --title "DFS vs SkipNet vs static quantization: ResNet-38, Fashion-MNIST"
