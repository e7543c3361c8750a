#!/bin/bash
# adversarial.sh -- an undefended and an adversarially trained Fashion-MNIST classifier,
# side by side under FGSM and PGD attacks.
#
#   examples/adversarial.sh [EPOCHS]          (default 3; `make` first)
#
# It builds the trainer program of models/mlp.cdl with `cdlc --exe`, trains it twice
# with the same optimizer, seed and epochs -- once plainly, once with
# `--adversarial fgsm:eps=EPS,rand=1` (half of every batch replaced by FGSM examples
# from a random start, Wong et al.'s "fast" adversarial training) -- and evaluates both
# with `eval --attack` on the test split: clean accuracy, FGSM and PGD (7 steps, random
# start) robust accuracy at EPS.  Robust accuracy counts an example when it is classified
# correctly both clean and attacked.  Both attacks use the compiled input-gradient
# function of the model (no parameter gradients).
#
# Environment: CDLC (build/cdlc), MODEL (models/mlp.cdl), EPS (0.1), SEED (1),
# OPTIMIZER (adam:lr=1e-3), DEFENSE (fgsm:eps=$EPS,rand=1), PGD_LIMIT (0 = the whole
# test split; N = its first N examples), KEEP (a directory to keep the program and the
# checkpoints in).  Exit status 0 when the adversarially trained model beats the
# undefended one by >= 30 points under FGSM and >= 20 points under PGD, 1 otherwise.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
EPOCHS=${1:-3}
CDLC=${CDLC:-$root/build/cdlc}
MODEL=${MODEL:-$root/models/mlp.cdl}
EPS=${EPS:-0.1}
SEED=${SEED:-1}
OPTIMIZER=${OPTIMIZER:-adam:lr=1e-3}
DEFENSE=${DEFENSE:-fgsm:eps=$EPS,rand=1}
PGD_LIMIT=${PGD_LIMIT:-0}
[ -x "$CDLC" ] || { echo "adversarial.sh: no compiler at $CDLC (run make)" >&2; exit 1; }
if [ -n "${KEEP:-}" ]; then dir=$KEEP; mkdir -p "$dir"
else dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT; fi

t0=$(date +%s)
"$CDLC" "$MODEL" --exe -o "$dir/model"
prog="$dir/model"
common=(--epochs "$EPOCHS" --optimizer "$OPTIMIZER" --seed "$SEED" --quiet)

echo "training $(basename "$MODEL" .cdl): $EPOCHS epochs, $OPTIMIZER, undefended ..."
"$prog" train "${common[@]}" --adversarial none --save "$dir/undefended.ckpt"
echo "training $(basename "$MODEL" .cdl): $EPOCHS epochs, $OPTIMIZER, --adversarial $DEFENSE ..."
"$prog" train "${common[@]}" --adversarial "$DEFENSE" --save "$dir/adversarial.ckpt"

# json KEY: the number after "KEY": on stdin's JSON line
json() { grep -oE "\"$1\":[-+0-9.eE]+" | head -1 | cut -d: -f2; }
pct() { awk -v a="$1" 'BEGIN { printf "%.2f", 100 * a }'; }

limit=()
[ "$PGD_LIMIT" -gt 0 ] && limit=(--test-limit "$PGD_LIMIT")
declare -A R
for m in undefended adversarial; do
    out=$("$prog" eval --load "$dir/$m.ckpt" --attack "fgsm:eps=$EPS" --json)
    R[$m.clean]=$(echo "$out" | json clean_accuracy)
    R[$m.fgsm]=$(echo "$out" | json robust_accuracy)
    out=$("$prog" eval --load "$dir/$m.ckpt" --attack "pgd:eps=$EPS,steps=7" "${limit[@]}" --json)
    R[$m.pgd]=$(echo "$out" | json robust_accuracy)
done

pgd_what="PGD-7"
[ "$PGD_LIMIT" -gt 0 ] && pgd_what="PGD-7 (first $PGD_LIMIT)"
echo
printf '%-22s %10s %14s %22s\n' "$(basename "$MODEL" .cdl), eps $EPS" "clean" "FGSM" "$pgd_what"
for m in undefended adversarial; do
    name=$m; [ $m = adversarial ] && name="adv. trained"
    printf '%-22s %9s%% %13s%% %21s%%\n' "$name" "$(pct "${R[$m.clean]}")" "$(pct "${R[$m.fgsm]}")" \
        "$(pct "${R[$m.pgd]}")"
done
gf=$(awk -v a="${R[adversarial.fgsm]}" -v b="${R[undefended.fgsm]}" 'BEGIN { printf "%.2f", 100 * (a - b) }')
gp=$(awk -v a="${R[adversarial.pgd]}" -v b="${R[undefended.pgd]}" 'BEGIN { printf "%.2f", 100 * (a - b) }')
printf '%-22s %10s %13s  %21s\n' "gain (points)" "" "+$gf" "+$gp"
echo "($(( $(date +%s) - t0 )) s; test split of fashion-mnist, 10000 examples)"
if awk -v f="$gf" -v p="$gp" 'BEGIN { exit !(f >= 30 && p >= 20) }'; then
    echo "ok: adversarial training gains >= 30 points under FGSM and >= 20 under PGD"
else
    echo "NOT MET: want >= 30 points under FGSM and >= 20 under PGD"
    exit 1
fi
