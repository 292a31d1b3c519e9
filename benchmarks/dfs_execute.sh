#!/usr/bin/env bash
# Fractional skipping on the CPU's real kernels (issue 18; docs/dfs/README.md, docs/RESULTS.md):
# from the trained ResNet-38 backbones on Fashion-MNIST, gates trained with the executable
# choices (skip, int8, float32: `dfs train --execute`) and SkipNet-style gates (skip or float32),
# then one sweep per backbone that executes them (regrouped per block, int8 blocks on PyTorch's
# x86 engine and in ONNX Runtime) and times them against the dense network in eager PyTorch and
# ONNX Runtime and static int8 in both (same rounds), with the paper's simulated bit-widths
# counted beside them.
#
#   width 1.0 (16/32/64 channels, where int8 pays): DFS --execute with the linear gate at targets
#     ${TARGETS_W1} × seeds ${SEEDS}; SkipNet-style (linear gate) at targets ${SKIP_TARGETS} ×
#     seeds ${SEEDS} (so that "equal measured time" can be read off); the paper's LSTM gate and
#     the upfront gate at ${GATE_TARGET}, seed 0 (what the gate costs at batch 1); the paper's
#     simulated choice set (skip, 8-16 bits, full) at 50% of the BitOps, seed 0 (counted).
#   width 0.5: DFS --execute and SkipNet-style (linear gate) at ${TARGETS_W05} and 50, seed 0.
#
# The executed DFS runs count an int8 block at 0.3 of a float32 one (--int8-cost 0.3, about
# the time it takes on this CPU): their targets are shares of the network's time as the CPU
# runs it, every gated block in int8 being about 34%, so targets below that must skip blocks
# (by BitOps int8 is nearly free and the gates hardly learn to skip: docs/dfs/README.md). The
# SkipNet-style targets are shares of the BitOps (there, time and BitOps agree).
#
# Recipe settings that differ from the recipe's defaults (the paper's), declared here: the gate
# phase trained towards the target (--gate-objective target) with β 4.0 (DFS, lr 0.02) or 2.0
# (SkipNet-style, lr 0.05, where it did best in issue 17), the target as a ceiling
# (--target-mode ceiling) for the executed runs: at this budget, one gate epoch and
# ${JOINT_EPOCHS} joint epochs on ${GATE_LIMIT} training images (the backbone's own 24,000; the
# authors train the joint phase for 64k iterations on CIFAR), the defaults (β 0.02, the gate
# phase towards full execution) leave every gate at full precision (docs/dfs/README.md). Pilot
# runs on 4,000-6,000 images (docs/dfs/README.md) reached their targets with these settings but
# lost 1.6 points; on 24,000 images with 2 joint epochs the same run lost 0.2.
#
# Cost (one core): a gated step at batch 128 takes about 1.2 s at width 1.0 with three choices
# (every choice's output is computed for the gate's gradient), 0.7 s at 0.5, so a width-1.0 run
# of 3 epochs on 24,000 images is about 13 minutes (SkipNet-style about 9, the paper's seven
# choices about 25), a width-0.5 run about 7: about 4 hours of training in all, which runs
# fastest as two processes (e.g. SEEDS=0 and SEEDS="1 2" EXTRAS=0 side by side, TRAIN_ONLY=1);
# the sweeps (two executors per executable run, each calibrated on 512 training images and
# measured on the 10,000 test images; timing at batch 1 and 64, ${ROUNDS} rounds) take about 40
# minutes, on a quiet machine; the profile about 3. Runs that exist are not retrained.
set -euo pipefail
cd "$(dirname "$0")/.."
DYNSCALE=${DYNSCALE:-.venv/bin/dynscale}
OUT=${OUT:-runs/dfs}
DOCS=${DOCS:-docs/dfs}
W1=${W1:-$OUT/resnet38-w1}
W05=${W05:-$OUT/resnet38}
SEEDS=${SEEDS:-0 1 2}
TARGETS_W1=${TARGETS_W1:-20 25 30}
SKIP_TARGETS=${SKIP_TARGETS:-30 50 70}
TARGETS_W05=${TARGETS_W05:-25}
GATE_TARGET=${GATE_TARGET:-25}
GATE_LIMIT=${GATE_LIMIT:-24000}
JOINT_EPOCHS=${JOINT_EPOCHS:-2}
ROUNDS=${ROUNDS:-5}
COMMON=(--data fashion-mnist --batch-size 128 --threads ${THREADS:-1} --quiet)
PHASES=(--gate-epochs 1 --joint-epochs $JOINT_EPOCHS --train-limit $GATE_LIMIT --gate-objective target)
EXECUTE=(--execute --int8-cost 0.3 --target-mode ceiling --beta 4.0 --lr 0.02)
SKIPNET=(--choices 0,32 --beta 2.0 --lr 0.05)
for backbone in $W1 $W05; do
    [ -d $backbone ] || { echo "train the backbone $backbone first (dynscale train --model resnet38 ...)"; exit 2; }
done
mkdir -p $DOCS

train() {  # OUT_DIR BACKBONE TARGET SEED OPTIONS...
    local out=$1 backbone=$2 target=$3 seed=$4
    shift 4
    [ -d $out ] || $DYNSCALE dfs train --backbone $backbone --target $target --seed $seed "${PHASES[@]}" "$@" \
        "${COMMON[@]}" --out $out
}

w1=()
for seed in $SEEDS; do
    for target in $TARGETS_W1; do
        train $OUT/x-w1-linear-$target-s$seed $W1 $target $seed "${EXECUTE[@]}" --gate linear
        w1+=($OUT/x-w1-linear-$target-s$seed)
    done
    for target in $SKIP_TARGETS; do
        train $OUT/x-w1-skipnet-$target-s$seed $W1 $target $seed "${SKIPNET[@]}" --gate linear
        w1+=($OUT/x-w1-skipnet-$target-s$seed)
    done
done
[ "${EXTRAS:-1}" = 1 ] || exit 0  # a second training process: the seeds only
for gate in lstm upfront; do
    train $OUT/x-w1-$gate-$GATE_TARGET-s0 $W1 $GATE_TARGET 0 "${EXECUTE[@]}" --gate $gate
    w1+=($OUT/x-w1-$gate-$GATE_TARGET-s0)
done
train $OUT/x-w1-paper-50-s0 $W1 50 0 --beta 2.0 --lr 0.01  # skip, 8-16 bits, full: simulated, counted
w1+=($OUT/x-w1-paper-50-s0)
w05=()
for target in $TARGETS_W05; do
    train $OUT/x-w05-linear-$target-s0 $W05 $target 0 "${EXECUTE[@]}" --gate linear
    w05+=($OUT/x-w05-linear-$target-s0)
done
for target in 50; do
    train $OUT/x-w05-skipnet-$target-s0 $W05 $target 0 "${SKIPNET[@]}" --gate linear
    w05+=($OUT/x-w05-skipnet-$target-s0)
done
[ -z "${TRAIN_ONLY:-}" ] || exit 0

TIMING=(--latency --batch 1,64 --threads 1 --rounds $ROUNDS)
$DYNSCALE dfs sweep $W1 "${w1[@]}" --int8 --static-bits 4,6,8,16 "${TIMING[@]}" --quiet \
    --json $DOCS/execute-w1.json --csv $DOCS/execute-w1.csv --markdown $DOCS/execute-w1.md \
    --plot $DOCS/execute-w1.png --choices-plot $DOCS/execute-w1-choices.png \
    --title "DFS executed vs SkipNet vs static int8: ResNet-38 (width 1.0), Fashion-MNIST"
$DYNSCALE dfs sweep $W05 "${w05[@]}" --int8 "${TIMING[@]}" --quiet \
    --json $DOCS/execute-w05.json --csv $DOCS/execute-w05.csv --markdown $DOCS/execute-w05.md \
    --title "DFS executed vs SkipNet vs static int8: ResNet-38 (width 0.5), Fashion-MNIST"
# Where the time goes at batch 1 and 64: the first seed's middle target, on both runtimes.
middle=$(echo $TARGETS_W1 | awk '{print $(int((NF + 1) / 2))}')
.venv/bin/python benchmarks/dfs_profile.py $OUT/x-w1-linear-$middle-s0 $OUT/x-w1-lstm-$GATE_TARGET-s0 \
    $OUT/x-w1-upfront-$GATE_TARGET-s0 > $DOCS/execute-profile.md
