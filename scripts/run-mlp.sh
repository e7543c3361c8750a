#!/bin/bash
# Train models/mlp.cdl on Fashion-MNIST with the generic trainer and print the test
# accuracy (`make run`).  Products go to $B/run/: mlp.c, mlp.h, the program, the
# checkpoint, the per-epoch CSV log and the SVG plot.
# Environment: B (build directory, default build), CC, EPOCHS (default: the model's
# train {} section), ARGS (more trainer options, e.g. ARGS="--workers 2 --threads 2").
set -euo pipefail
B=${B:-build}
CC=${CC:-cc}
out="$B/run"
mkdir -p "$out"
for f in "$B/cdlc" "$B/libcdlrt.a"; do
    [ -e "$f" ] || { echo "run-mlp: $f is missing; run make first" >&2; exit 1; }
done
"$B/cdlc" --main models/mlp.cdl -o "$out/mlp.c"
$CC -std=c11 -O2 -Iruntime "$out/mlp.c" "$B/libcdlrt.a" -o "$out/mlp" $(cat "$B/libcdlrt.libs")
extra=()
[ -n "${EPOCHS:-}" ] && extra+=(--epochs "$EPOCHS")
# Per-epoch lines and the progress bar go to stderr; stdout is the JSON summary.
"$out/mlp" train "${extra[@]}" ${ARGS:-} --save "$out/mlp.ckpt" --log "$out/mlp.csv" \
    --plot "$out/mlp.svg" --json >"$out/result.json"
acc=$(sed -n 's/.*"test_accuracy":\([^,}]*\).*/\1/p' "$out/result.json")
secs=$(sed -n 's/.*"seconds":\([^,}]*\).*/\1/p' "$out/result.json")
[ -n "$acc" ] && [ "$acc" != null ] || { echo "run-mlp: no accuracy in $out/result.json" >&2; exit 1; }
awk -v a="$acc" -v s="$secs" 'BEGIN { printf "mlp on fashion-mnist: test accuracy %.2f%% (%.1f s)\n", 100 * a, s }'
echo "checkpoint $out/mlp.ckpt, log $out/mlp.csv, plot $out/mlp.svg"
