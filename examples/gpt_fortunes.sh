#!/bin/bash
# gpt_fortunes.sh -- models/gpt.cdl against models/charlm.cdl (the LSTM) on the Debian
# `fortunes` corpus, character level, at the same wall time, with the validation curve.
#
#   examples/gpt_fortunes.sh [SECONDS [CHUNKS]]     (default 900 s in 10 chunks; `make` first)
#
# The corpus is every fortune file of /usr/share/games/fortunes (package fortunes,
# installed by scripts/deps.sh) concatenated: 2.58 MB, 114 distinct bytes, so both
# models are built with V = 128 (charlm: -D V=128).  `--data text:FILE` holds out the
# last tenth.  Both programs train side by side (--threads 1, one core each) in CHUNKS
# chunks of SECONDS / CHUNKS of wall time: each chunk is stopped by SIGINT (the trainer
# saves a mid-epoch checkpoint, and `--resume` continues from the next batch exactly),
# then both checkpoints are scored by `eval` on the first TEST_LIMIT windows of the
# held-out tail (windows of T = 64 characters at every offset; the mean is over every
# position of every window), outside the budget.  The mean cross-entropy in nats / ln 2
# is bits per character.  A run is less than an epoch of this text (2.3 M windows), so
# the trainer's own --plot (a point per epoch) would be empty: the script draws the
# curve (validation bits/char against training seconds, both models) as an SVG.
#
# The GPT uses its model's recipe (AdamW, no decay on biases and layer norms, warm-up,
# cosine, clipping); the cosine's horizon is the number of steps the GPT will take in
# the budget, estimated from the second chunk's rate, or GPT_STEPS (--schedule
# cosine:min=2e-4,steps=N).  A chunk whose SIGINT comes before the trainer has started
# (a heavily loaded machine) trains nothing: its step column is empty.
# charlm uses its own defaults (Adam, lr 1e-3).  Then the GPT writes a sample.
#
# Environment: CDLC (build/cdlc), TEST_LIMIT (4096), KEEP (a directory to keep the
# corpus, programs, checkpoints, curve.csv and curve.svg in), SVG (also copy the curve
# there).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
BUDGET=${1:-900}
CHUNKS=${2:-10}
CDLC=${CDLC:-$root/build/cdlc}
TEST_LIMIT=${TEST_LIMIT:-4096}
F=/usr/share/games/fortunes
[ -x "$CDLC" ] || { echo "gpt_fortunes.sh: no compiler at $CDLC (run make)" >&2; exit 1; }
[ -f $F/fortunes ] || { echo "gpt_fortunes.sh: no $F (apt-get install fortunes)" >&2; exit 1; }
if [ -n "${KEEP:-}" ]; then dir=$KEEP; mkdir -p "$dir"
else dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT; fi
cd "$dir"
# shellcheck disable=SC2046  # file names without spaces
cat $(ls $F/* | grep -v '\.dat$' | grep -v '\.u8$') > fortunes.txt
"$CDLC" --exe "$root/models/gpt.cdl" -o gpt
"$CDLC" --exe -D V=128 "$root/models/charlm.cdl" -o charlm
chunk=$((BUDGET / CHUNKS))
echo "corpus: $(wc -c < fortunes.txt) bytes; gpt and charlm side by side, $CHUNKS chunks of $chunk s"
rm -f gpt.ckpt charlm.ckpt
echo "model,chunk,seconds,step,bits_per_char" > curve.csv
sched="cosine:min=2e-4,steps=1000000"   # chunk 1 is (mostly) warm-up; its horizon is set after it
steps_of() { grep -o 'step [0-9]*' "$1" | tail -1 | cut -d' ' -f2; }
s1=0
for ((c = 1; c <= CHUNKS; c++)); do
    for m in gpt charlm; do
        res=(); [ -f $m.ckpt ] && res=(--resume $m.ckpt)
        opt=(); [ $m = gpt ] && opt=(--schedule "$sched")
        (timeout -s INT "$chunk" ./$m train --data text:fortunes.txt --threads 1 --save $m.ckpt "${res[@]}" \
            "${opt[@]}" --quiet >$m.log 2>&1 || true) &
    done
    wait
    for m in gpt charlm; do
        [ -f $m.ckpt ] || { echo "$m: no checkpoint: $(tail -2 $m.log)"; exit 1; }
        (./$m eval --load $m.ckpt --data text:fortunes.txt --test-limit "$TEST_LIMIT" --threads 1 --json >$m.eval) &
    done
    wait
    for m in gpt charlm; do
        python3 -c 'import json, math, sys
e = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
print("%s,%s,%s,%s,%.4f" % (sys.argv[1], sys.argv[3], sys.argv[4], sys.argv[5], e["test_loss"] / math.log(2)))' \
            $m $m.eval $c $((c * chunk)) "$(steps_of $m.log)" >> curve.csv
    done
    # the GPT's steps in the budget, at the second chunk's rate (the first one's
    # includes the start-up), unless GPT_STEPS gives them
    [ $c = 1 ] && s1=$(steps_of gpt.log)
    if [ $c = 2 ] || { [ $c = 1 ] && [ -n "${GPT_STEPS:-}" ]; }; then
        s2=$(steps_of gpt.log)
        sched="cosine:min=2e-4,steps=${GPT_STEPS:-$((s2 + (s2 - s1) * (CHUNKS - 2)))}"
        echo "gpt: steps $s1, ${s2}: --schedule $sched"
    fi
    tail -2 curve.csv
done
python3 - curve.csv curve.svg "$BUDGET" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
W, H, L, R, T, Bm = 640, 400, 60, 20, 30, 50
xmax = float(sys.argv[3])
ys = [float(r["bits_per_char"]) for r in rows]
ylo, yhi = min(ys) - 0.1, max(ys) + 0.1
px = lambda x: L + (W - L - R) * x / xmax
py = lambda y: T + (H - T - Bm) * (yhi - y) / (yhi - ylo)
out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H),
       '<rect width="100%" height="100%" fill="white"/>',
       '<text x="%d" y="18">validation bits/char on the fortunes corpus (held-out tail)</text>' % L,
       '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (L, H - Bm, W - R, H - Bm),
       '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (L, T, L, H - Bm),
       '<text x="%d" y="%d" text-anchor="middle">training wall time (s)</text>' % ((L + W - R) / 2, H - 12)]
for i in range(6):
    x = xmax * i / 5
    out.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (px(x), H - Bm + 16, x))
    y = ylo + (yhi - ylo) * i / 5
    out.append('<text x="%d" y="%.1f" text-anchor="end">%.2f</text>' % (L - 6, py(y) + 4, y))
    out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (L, py(y), W - R, py(y)))
for k, (m, col) in enumerate((("gpt", "#c0392b"), ("charlm", "#2471a3"))):
    pts = [(float(r["seconds"]), float(r["bits_per_char"])) for r in rows if r["model"] == m]
    out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (
        col, " ".join("%.1f,%.1f" % (px(x), py(y)) for x, y in pts)))
    out += ['<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (px(x), py(y), col) for x, y in pts]
    name = "GPT (models/gpt.cdl)" if m == "gpt" else "LSTM (models/charlm.cdl)"
    out.append('<text x="%d" y="%d" fill="%s">%s: %.3f</text>' % (W - 260, T + 20 + 16 * k, col, name, pts[-1][1]))
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
EOF
[ -n "${SVG:-}" ] && cp curve.svg "$SVG"
for m in gpt charlm; do
    tail -1 curve.csv | grep -q . && grep "^$m," curve.csv | tail -1 |
        awk -F, -v m=$m '{ printf "%-7s step %s: %.3f bits/char on the held-out windows after %s s\n", m, $4, $5, $3 }'
done
echo "sample (gpt generate --prompt 'Q: ' --tokens 60 --temperature 0.8 --seed 1):"
./gpt generate --load gpt.ckpt --prompt 'Q: ' --tokens 60 --temperature 0.8 --seed 1
