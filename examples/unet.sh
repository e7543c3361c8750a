#!/bin/bash
# unet.sh -- the denoising U-Net of models/unet.cdl: list its parameters, train it on
# Fashion-MNIST (Gaussian noise sigma 0.3 added inside the model in train mode, MSE of
# the sigmoid output against the clean image), evaluate the checkpoint (eval mode: no
# noise, so the test loss is the reconstruction error of clean images), then run
# build/examples/unet_demo: the MSE and PSNR of noisy and denoised test images, and a
# PNG of clean / noisy / denoised images, one column per class.
#
#   examples/unet.sh [EPOCHS]      (`make` first)
#
# EPOCHS defaults to the model's 3 (about 5 minutes of CPU); docs/results.md has the
# figures of this run.  The PNG is written to unet.png in the current directory (OUT
# overrides).
#
# Environment: CDLC (build/cdlc), DEMO (build/examples/unet_demo), THREADS (BLAS
# threads, 1), LIMIT (train on the first N images only), OUT (the PNG), KEEP (a
# directory to keep the program, checkpoint, CSV log and SVG plot in; default: a
# temporary directory, removed at the end).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
EPOCHS=${1:-3}
CDLC=${CDLC:-$root/build/cdlc}
DEMO=${DEMO:-$root/build/examples/unet_demo}
THREADS=${THREADS:-1}
OUT=${OUT:-unet.png}
MODEL=$root/models/unet.cdl
[ -x "$CDLC" ] && [ -x "$DEMO" ] || { echo "unet.sh: no compiler at $CDLC or no $DEMO (run make)" >&2; exit 1; }
if [ -n "${KEEP:-}" ]; then dir=$KEEP; mkdir -p "$dir"
else dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT; fi

"$CDLC" "$MODEL" --exe -o "$dir/unet"

echo "parameters of models/unet.cdl (names and layouts of nn.Conv2d, nn.GroupNorm, nn.ConvTranspose2d)"
"$CDLC" --emit=ir "$MODEL" | sed -n 's/.* : f32\(\[[^]]*\]\) "\([^"]*\)" param .*/  \2 \1/p' | awk '!seen[$0]++'

extra=()
[ -n "${LIMIT:-}" ] && extra+=(--limit "$LIMIT")
# The model's train {} section supplies the optimizer (Adam 2e-3), the cosine schedule
# and the batch size; --schedule cosine spans the epochs asked for.
"$dir/unet" train --epochs "$EPOCHS" --schedule cosine --threads "$THREADS" "${extra[@]}" \
    --save "$dir/unet.ckpt" --log "$dir/unet.csv" --plot "$dir/unet.svg"
"$dir/unet" eval --load "$dir/unet.ckpt" --threads "$THREADS"
"$DEMO" --load "$dir/unet.ckpt" --out "$OUT" --threads "$THREADS"
[ -n "${KEEP:-}" ] && echo "kept in $dir: unet, unet.ckpt, unet.csv, unet.svg"
exit 0
