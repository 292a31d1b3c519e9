#!/usr/bin/env bash
# Dynamic fractional skipping on Fashion-MNIST (docs/RESULTS.md): a ResNet-38 at a CPU-trainable
# width, trained once at full precision; then, from that backbone and for each of 3 seeds, gates
# trained at computation targets of 20, 50 and 80% of its BitOps with the DFS choices (skip,
# 8-16 bits, full) and with the SkipNet-style choices (skip or full, at lr 0.05, where they do
# best); and static quantization of the backbone at each bit-width, and real int8 in ONNX
# Runtime. Runs that already exist are not retrained. About 2 hours of one core
# (not run in full yet: docs/dfs/README.md says what was).
set -euo pipefail
cd "$(dirname "$0")/.."
DYNSCALE=${DYNSCALE:-.venv/bin/dynscale}
OUT=runs/dfs
DOCS=docs/dfs
# The backbone trains on 24,000 images at lr 0.05. The gated runs start from it on
# ${GATE_LIMIT:-12000} training images (a gated step costs several plain ones: every choice of
# every block is computed for the gate's gradient), one epoch of gates and ${JOINT_EPOCHS:-1}
# joint, the gate phase towards full execution (the recipe's default) and β ${BETA:-2.0}: at
# this budget the recipe's default β 0.02 (the authors' scale) leaves every gate at full
# precision (docs/dfs/README.md, benchmarks/dfs_ablation.sh), as does 4,000 images with β 2.0.
COMMON=(--data fashion-mnist --batch-size 128 --threads ${THREADS:-1} --quiet)
MODEL=(--model resnet38 --width-mult ${WIDTH:-0.5})
TARGETS=${TARGETS:-20 50 80}
SEEDS=${SEEDS:-0 1 2}
GATES=(--gate-epochs ${GATE_EPOCHS:-1} --joint-epochs ${JOINT_EPOCHS:-1} --train-limit ${GATE_LIMIT:-12000} --beta ${BETA:-2.0} ${EXTRA:-})
mkdir -p $OUT $DOCS

[ -d $OUT/resnet38 ] || $DYNSCALE train "${MODEL[@]}" --profile all-one --epochs ${EPOCHS:-8} --train-limit 24000 \
    "${COMMON[@]}" --out $OUT/resnet38
runs=()
for seed in $SEEDS; do
    for target in $TARGETS; do
        [ -d $OUT/dfs-$target-s$seed ] || $DYNSCALE dfs train --backbone $OUT/resnet38 --target $target \
            "${GATES[@]}" --lr 0.01 --seed $seed "${COMMON[@]}" --out $OUT/dfs-$target-s$seed
        [ -d $OUT/skipnet-$target-s$seed ] || $DYNSCALE dfs train --backbone $OUT/resnet38 --target $target \
            --choices 0,32 "${GATES[@]}" --lr 0.05 --seed $seed "${COMMON[@]}" --out $OUT/skipnet-$target-s$seed
        runs+=($OUT/dfs-$target-s$seed $OUT/skipnet-$target-s$seed)
    done
done
[ -z "${TRAIN_ONLY:-}" ] || exit 0

# TIMING="--latency --batch 1,64 --threads 1 --rounds 5" adds wall-clock (on a quiet machine).
$DYNSCALE dfs sweep $OUT/resnet38 "${runs[@]}" --static-bits 4,6,8,16 --int8 ${TIMING:-} --quiet \
    --json $DOCS/dfs.json --csv $DOCS/dfs.csv --markdown $DOCS/dfs.md --plot $DOCS/dfs.png \
    --choices-plot $DOCS/choices.png --title "DFS vs SkipNet vs static quantization: ResNet-38, Fashion-MNIST"
