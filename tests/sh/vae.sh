#!/bin/bash
# The VAE showcase end to end, on small slices of Fashion-MNIST (well under a minute):
# models/vae.cdl trains and `sample` writes a PNG; the score entry agrees with the
# compiled eval loss; examples/vae_demo writes its grids and codes; examples/vae_anomaly
# trains on 9 classes and its ROC AUC agrees with one recomputed from its scores.
# Environment: B (build dir), CDLC, CDLRT, CC, CDL_CFLAGS as set by scripts/run-tests.sh.
. "$(dirname "$0")/../lib.sh"
fail() { echo "FAIL: $*"; exit 1; }
png() { [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "$1 is not a PNG"; }
num() { grep -oE "\"$1\": *-?[0-9.eE+-]+" "$2" | tail -1 | sed 's/.*: *//'; }

# the examples: built by `make` (block "vae" of the Makefile); else build them here
demo=$B/examples/vae_demo; anomaly=$B/examples/vae_anomaly
if [ ! -x "$demo" ] || [ ! -x "$anomaly" ]; then
    "$CDLC" models/vae.cdl -o "$t/vae.c" || fail "cdlc models/vae.cdl"
    for p in vae_demo vae_anomaly; do
        cc_rt -O2 -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L -I"$t" \
            examples/$p.c "$t/vae.c" -o "$t/$p" || fail "cc examples/$p.c"
    done
    demo=$t/vae_demo; anomaly=$t/vae_anomaly
fi
demo=$(realpath "$demo"); anomaly=$(realpath "$anomaly")

"$CDLC" models/vae.cdl --exe -o "$t/vae" >"$t/log" 2>&1 || fail "cdlc --exe: $(tail -3 $t/log)"
cd "$t"

# train briefly, sample (the showcase check's commands, on a slice)
./vae train --epochs 1 --limit 3000 --test-limit 500 --workers 0 --threads 1 --save vae.ckpt --json \
    >train.json 2>train.log || fail "vae train: $(tail -2 train.log)"
loss=$(num train_loss train.json)
python3 -c "import sys, math; l = float('$loss'); sys.exit(0 if math.isfinite(l) and 100 < l < 550 else 1)" \
    || fail "train loss $loss not in (100, 550)"
./vae sample --load vae.ckpt -o grid.png >sample.log 2>&1 || fail "vae sample: $(tail -1 sample.log)"
png grid.png

# the score entry with eps = 0 is the eval-mode loss per example
./vae eval --load vae.ckpt --test-limit 500 --json >eval.json 2>&1 || fail "vae eval: $(tail -1 eval.json)"
"$anomaly" --load vae.ckpt --test-limit 500 --holdout 8 --json --quiet --scores s.csv >an0.json 2>an0.log \
    || fail "vae_anomaly --load: $(tail -1 an0.log)"
python3 - "$(num test_loss eval.json)" "$(num nelbo_mean an0.json)" <<'EOF' || fail "score entry vs eval loss"
import sys
a, b = float(sys.argv[1]), float(sys.argv[2])
if abs(a - b) > 1e-4 * abs(a): sys.exit(f"eval test_loss {a} != mean score {b}")
EOF

# vae_demo: three grids and the codes
mkdir out
"$demo" --load vae.ckpt --out out --test-limit 300 --ref 500 --scale 1 >demo.log 2>&1 || fail "vae_demo: $(tail -2 demo.log)"
for f in recon samples interp; do png out/$f.png; done
python3 - <<'EOF' || fail "vae_demo outputs"
import math, struct, sys
rows = [line.split(",") for line in open("out/codes.csv").read().split()]
if len(rows) != 301 or any(len(r) != 21 for r in rows): sys.exit(f"codes.csv: {len(rows)} lines")
v = [float(x) for r in rows[1:] for x in r[1:]]
m = sum(v) / len(v)
if not (all(math.isfinite(x) for x in v) and math.sqrt(sum((x - m) ** 2 for x in v) / len(v)) > 0.05):
    sys.exit("codes are constant or not finite")
w, h = struct.unpack(">II", open("out/recon.png", "rb").read()[16:24])
if (w, h) != (16 * 30 + 2, 8 * 30 + 2): sys.exit(f"recon.png is {w}x{h}")
EOF
grep -qE '5-NN test accuracy .*code [0-9.]+%, 784 raw pixels [0-9.]+%' demo.log || fail "vae_demo prints no k-NN accuracy"

# vae_anomaly: train without bags on a slice; its AUC must match one recomputed from its scores
"$anomaly" --holdout 8 --epochs 1 --limit 4000 --test-limit 1000 --samples 2 --json --quiet --save an.ckpt \
    --scores scores.csv >an.json 2>an.log || fail "vae_anomaly: $(tail -2 an.log)"
[ -s an.ckpt ] || fail "vae_anomaly --save wrote nothing"
python3 - "$(num auc an.json)" <<'EOF' || fail "vae_anomaly AUC"
import math, sys
d = [[float(x) for x in line.split(",")] for line in open("scores.csv").read().split()[1:]]
if len(d) != 1000 or not all(math.isfinite(x) for r in d for x in r): sys.exit(f"scores.csv: {len(d)} rows")
if max(abs(r[1] - r[2] - r[3]) for r in d) > 1e-2: sys.exit("nelbo != rec + kl")
pos = [r[1] for r in d if r[0] == 8]
neg = [r[1] for r in d if r[0] != 8]
auc = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))
got = float(sys.argv[1])
if abs(auc - got) > 1e-4: sys.exit(f"AUC {got} != {auc} recomputed from scores.csv")
if not 0.5 < got <= 1: sys.exit(f"AUC {got}: bags do not score higher than the rest")
EOF

# bad usage is refused, never a crash
"$anomaly" --holdout 12 >/dev/null 2>&1; [ $? -eq 2 ] || fail "vae_anomaly --holdout 12 is not a usage error"
"$demo" >/dev/null 2>&1; [ $? -eq 2 ] || fail "vae_demo without --load is not a usage error"
"$demo" --load missing.ckpt >/dev/null 2>err.log; [ $? -eq 1 ] && grep -q missing.ckpt err.log \
    || fail "vae_demo --load missing.ckpt: $(cat err.log)"
echo "vae: train loss $loss, sample/recon/interp PNGs, score entry = eval loss, anomaly AUC $(num auc an.json) (1 epoch, 4000 images)"
