#!/usr/bin/env bash
# The IDP paper's experiments on Fashion-MNIST (full settings, under an hour on 2 cores), then
# the tables, JSON and plots copied into docs/reproduce-idp/.
set -euo pipefail
cd "$(dirname "$0")/.."
DYNSCALE=${DYNSCALE:-.venv/bin/dynscale}
$DYNSCALE reproduce idp --out runs/reproduce-idp
mkdir -p docs/reproduce-idp
cp runs/reproduce-idp/*.json runs/reproduce-idp/*.md runs/reproduce-idp/*.png docs/reproduce-idp/
