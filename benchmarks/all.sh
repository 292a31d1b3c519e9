#!/usr/bin/env bash
# `make bench`: every benchmark behind docs/RESULTS.md, in dependency order, then the
# side-by-side report and its browser check. Each step reuses the runs it finds under runs/
# (delete a run to retrain it) and stamps the machine it ran on beside its figures
# (docs/<folder>/machine.md, or docs/<figure>.machine.md for the files at the top of docs/).
# Everything from scratch takes the better part of a day on 2 cores (DFS alone ~4.5 hours);
# ONLY="report us" runs some steps only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DYNSCALE=${DYNSCALE:-.venv/bin/dynscale}
export DYNSCALE PYTHON=$PY

want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
stamp() { $PY benchmarks/machine.py "$1" "$2"; }
step() {  # NAME MACHINE_FILE COMMAND...
    local name=$1 machine=$2
    shift 2
    want "$name" || return 0
    echo "== make bench: $name: $*" >&2
    "$@"
    stamp "$machine" "$*"
}

step demo docs/demo.machine.md bash -c "$DYNSCALE demo --out runs/demo --force && cp runs/demo/demo.png docs/demo.png"
step idp docs/fmnist_mlp_profiles.machine.md bash benchmarks/idp_mlp_fashion.sh
step reproduce docs/reproduce-idp/machine.md bash benchmarks/idp_reproduce.sh
step runtime docs/runtime/machine.md bash benchmarks/runtime_compare.sh
step compare docs/compare/machine.md bash benchmarks/us_compare.sh
us_ablation() {
    for model in mlp vgg16; do  # each option alone and the combinations, seed 0
        $PY benchmarks/us_ablation.py $model > docs/us/ablation-$model.md
    done
    # the candidates over 3 seeds
    $PY benchmarks/us_ablation.py mlp --seeds 0,1,2 --only "us;us widths drawn by MACs;us no distillation;\
us MACs, no distillation;us distill weight 0.5;us MACs, distill weight 0.5" > docs/us/seeds-mlp.md
    $PY benchmarks/us_ablation.py vgg16 --seeds 0,1,2 --only "us;us widths drawn by MACs;us distill weight 0.5;\
us MACs, distill weight 0.5;us switchable BN" > docs/us/seeds-vgg16.md
}
step us docs/us/machine.md us_ablation
step adaptive docs/adaptive/machine.md bash benchmarks/adaptive_fashion.sh
step convert docs/convert/machine.md bash -c "PYTHONPATH=. OMP_NUM_THREADS=1 nice $PY benchmarks/convert_coverage.py"
step effort docs/effort/machine.md bash benchmarks/effort_fashion.sh
step dfs docs/dfs/machine.md bash benchmarks/dfs_execute.sh
step dfs-seeds docs/dfs/seeds.machine.md bash -c "bash benchmarks/dfs_seeds.sh > docs/dfs/seeds.md"
step deploy docs/deploy/machine.md bash benchmarks/deploy_fashion.sh
step ddp docs/ddp/machine.md bash -c "$PY benchmarks/ddp_throughput.py --rounds 3 --examples 4000 > docs/ddp/throughput.md"
step report docs/report/machine.md bash -c "$DYNSCALE report --data fashion-mnist --jobs 2 --out docs/report --force --quiet \
    && $PY benchmarks/browser_check.py docs/report/report.html docs/report/screenshot.png"
step report-quick docs/report-quick/machine.md bash -c "$DYNSCALE report --data fashion-mnist --quick --jobs 2 --out docs/report-quick \
    --force --quiet && $PY benchmarks/browser_check.py docs/report-quick/report.html docs/report-quick/screenshot.png"
