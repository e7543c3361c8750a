#!/bin/bash
# resnet.sh -- the residual CNN of models/resnet.cdl: list its parameters, train it on
# Fashion-MNIST with batch norm, dropout and crop/flip augmentation, then evaluate the
# checkpoint in eval mode (batch norm on its running statistics, no dropout).
#
#   examples/resnet.sh [EPOCHS]      (`make` first)
#
# EPOCHS defaults to 2 (a few minutes); 15 is the model's own default and gives the
# docs/results.md figure (93.1%, about 20 minutes of CPU).  The script passes
# `--schedule cosine`, so that the cosine decay spans the epochs asked for (the
# model's `cosine(epochs=15)` would leave a 2-epoch run at a high learning rate).
#
# Environment: CDLC (build/cdlc), THREADS (BLAS threads, 1), LIMIT (train on the first
# N images only), KEEP (a directory to keep the program, checkpoint, CSV log and SVG
# plot in; default: a temporary directory, removed at the end).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
EPOCHS=${1:-2}
CDLC=${CDLC:-$root/build/cdlc}
THREADS=${THREADS:-1}
MODEL=$root/models/resnet.cdl
[ -x "$CDLC" ] || { echo "resnet.sh: no compiler at $CDLC (run make)" >&2; exit 1; }
if [ -n "${KEEP:-}" ]; then dir=$KEEP; mkdir -p "$dir"
else dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT; fi

"$CDLC" "$MODEL" --exe -o "$dir/resnet"

# The IR dump names every parameter: block instances prefix their layers' names.
echo "parameters of models/resnet.cdl (param: trained; state: batch-norm running statistics)"
"$CDLC" --emit=ir "$MODEL" |
    sed -n 's/.* : f32\(\[[^]]*\]\) "\([^"]*\)" \(param\|state\) .*/  \3  \2 \1/p'

extra=()
[ -n "${LIMIT:-}" ] && extra+=(--limit "$LIMIT")
# The model's train {} section supplies the optimizer, the augmentation (crop=2,flip:
# training batches only) and the batch size.
"$dir/resnet" train --epochs "$EPOCHS" --schedule cosine --threads "$THREADS" "${extra[@]}" \
    --save "$dir/resnet.ckpt" --log "$dir/resnet.csv" --plot "$dir/resnet.svg"
"$dir/resnet" eval --load "$dir/resnet.ckpt" --threads "$THREADS"
[ -n "${KEEP:-}" ] && echo "kept in $dir: resnet, resnet.ckpt, resnet.csv, resnet.svg"
exit 0
