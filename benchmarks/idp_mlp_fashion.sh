#!/usr/bin/env bash
# The IDP paper's four profiles on the MLP (784-100-100-10), Fashion-MNIST, 30 epochs each,
# then one sweep with latency. Writes runs/fmnist-mlp-* and docs/fmnist_mlp_profiles.{json,png}.
set -euo pipefail
cd "$(dirname "$0")/.."
DYNSCALE=${DYNSCALE:-.venv/bin/dynscale}
for profile in all-one linear harmonic half-exp; do
    $DYNSCALE train --model mlp --data fashion-mnist --profile "$profile" --epochs 30 --seed 0 \
        --out "runs/fmnist-mlp-$profile"
done
$DYNSCALE sweep runs/fmnist-mlp-all-one runs/fmnist-mlp-linear runs/fmnist-mlp-harmonic \
    runs/fmnist-mlp-half-exp --widths 0.1,0.2,0.25,0.3,0.4,0.5,0.6,0.75,0.9,1.0 \
    --latency --batch 1,64 --json docs/fmnist_mlp_profiles.json --plot docs/fmnist_mlp_profiles.png \
    --markdown docs/fmnist_mlp_profiles.md --title "IDP MLP on Fashion-MNIST: four profiles"
