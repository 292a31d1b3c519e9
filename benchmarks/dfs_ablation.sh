#!/usr/bin/env bash
# DFS recipe options at one target (docs/dfs/README.md): from the benchmark's ResNet-38 backbone
# (benchmarks/dfs_fashion.sh trains it), the defaults (β 0.02, the authors' scale; the gate phase
# towards full execution; one joint epoch) and one change at a time: β 2.0 (the earlier
# default), the gate phase towards the target (the earlier behaviour), two joint epochs.
set -euo pipefail
cd "$(dirname "$0")/.."
DYNSCALE=${DYNSCALE:-.venv/bin/dynscale}
OUT=runs/dfs
DOCS=docs/dfs
TARGET=${TARGET:-50}
COMMON=(--data fashion-mnist --batch-size 128 --threads ${THREADS:-1} --quiet)
GATES=(--target $TARGET --gate-epochs 1 --train-limit ${GATE_LIMIT:-4000} --lr 0.01)
[ -d $OUT/resnet38 ] || { echo "train the backbone first: benchmarks/dfs_fashion.sh"; exit 2; }
declare -A VARIANTS=(
    [defaults]="--joint-epochs 1"
    [beta2]="--joint-epochs 1 --beta 2.0"
    [gates-to-target]="--joint-epochs 1 --gate-objective target"
    [joint2]="--joint-epochs 2"
)
runs=()
for name in defaults beta2 gates-to-target joint2; do
    [ -d $OUT/ablation-$TARGET-$name ] || $DYNSCALE dfs train --backbone $OUT/resnet38 "${GATES[@]}" \
        ${VARIANTS[$name]} "${COMMON[@]}" --out $OUT/ablation-$TARGET-$name
    runs+=($OUT/ablation-$TARGET-$name)
done
$DYNSCALE dfs sweep "${runs[@]}" --json $DOCS/ablation.json --markdown $DOCS/ablation.md --quiet
