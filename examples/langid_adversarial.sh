#!/bin/sh
# langid_adversarial.sh -- the "Text: adversarial examples" figures of docs/results.md
# (issue 14 item 4): the language of a word (models/langid.cdl, six Debian word lists),
# trained undefended and on HotFlip-flipped words (half of each batch), each evaluated
# clean and under HotFlip with 1 and 2 flips.
#
#   examples/langid_adversarial.sh [EPOCHS] [OUTDIR]
#
# EPOCHS defaults to 10 (the table's), OUTDIR to build/langid.  RUNS lists the
# trainings as NAME=SPEC (SPEC an --adversarial spec, or none); more defences (the
# embedding-space FGM/PGD of --adversarial) are one more
# entry, e.g. RUNS="undefended=none flip=hotflip:flips=1,ratio=0.5 fgm=fgm:eps=1"
# (docs/results.md's fgm row).
# Every run is seeded (--seed 1) and single-threaded, so the figures repeat exactly.
# About 12 minutes of CPU (the flip training 8 of them).  Run from the top of the
# source tree after make; runs already done (OUTDIR/NAME.ckpt) are not repeated.
set -eu
EPOCHS=${1:-10}
OUT=${2:-build/langid}
CDLC=${CDLC:-build/cdlc}
RUNS=${RUNS:-"undefended=none flip=hotflip:flips=1,ratio=0.5"}
mkdir -p "$OUT"
[ -s "$OUT/train.tsv" ] || examples/langid_data.sh "$OUT"
"$CDLC" --exe models/langid.cdl -o "$OUT/langid"
data="--data tsv:$OUT/train.tsv --test tsv:$OUT/test.tsv --threads 1 --seed 1"
train() {   # NAME SPEC
    [ -s "$OUT/$1.ckpt" ] && [ -s "$OUT/$1.train.json" ] && return 0
    "$OUT/langid" train $data --epochs "$EPOCHS" --quiet --json --save "$OUT/$1.ckpt" \
        --log "$OUT/$1.csv" --adversarial "$2" >"$OUT/$1.train.json"
}
evaluate() {   # NAME: clean, 1 flip, 2 flips
    for f in 1 2; do
        "$OUT/langid" eval --load "$OUT/$1.ckpt" $data --attack "hotflip:flips=$f" --json >"$OUT/$1.flip$f.json"
    done
}
names=""
for r in $RUNS; do
    train "${r%%=*}" "${r#*=}"
    evaluate "${r%%=*}"
    names="$names ${r%%=*}"
done
# examples of flipped words (the undefended model, when RUNS trained it)
: >"$OUT/examples.txt"
if [ -s "$OUT/undefended.ckpt" ]; then
    "$OUT/langid" eval --load "$OUT/undefended.ckpt" $data --attack hotflip:flips=1,show=12 | grep '^hotflip: .* -> ' \
        >"$OUT/examples.txt"
    "$OUT/langid" eval --load "$OUT/undefended.ckpt" $data --attack hotflip:flips=2,show=400 | grep '\[2 flips\]' |
        head -6 >>"$OUT/examples.txt"
fi
echo "| training | clean | 1 flip | 2 flips | success, 1 flip | success, 2 flips | train s |"
echo "|---|---|---|---|---|---|---|"
for n in $names; do
    python3 - "$OUT" "$n" <<'EOF'
import json, sys
out, n = sys.argv[1], sys.argv[2]
t = json.loads(open("%s/%s.train.json" % (out, n)).read().strip().splitlines()[-1])
r = [json.loads(open("%s/%s.flip%d.json" % (out, n, f)).read()) for f in (1, 2)]
spec = t.get("adversarial", "none")
print("| %s (`%s`) | %.2f%% | %.2f%% | %.2f%% | %.1f%% | %.1f%% | %.0f |" % (
    n, spec, 100 * r[0]["clean_accuracy"], 100 * r[0]["robust_accuracy"], 100 * r[1]["robust_accuracy"],
    100 * r[0]["attack_success"], 100 * r[1]["attack_success"], t["seconds"]))
EOF
done
echo
cat "$OUT/examples.txt"
