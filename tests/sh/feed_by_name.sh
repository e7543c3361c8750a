#!/bin/bash
# feed_by_name.sh -- the trainer feeds a generated model's inputs by name from the
# dataset's columns (issue 10 item 5): a regression written the PyTorch way
# (`input t: f32[B]`, `loss mse(pred, t)`) learns from a CSV's real-valued target
# column (checked on the weights in the checkpoint, not only on a loss), an input the
# dataset does not provide is an error naming it (never zeros), and --feed maps it.
. "$(dirname "$0")/../lib.sh"
cat >"$t/reg.cdl" <<'EOF'
model reg(B = 16) {
    input x: f32[B, 2]
    input t: f32[B]
    pred = reshape(linear(x, 1, name="fc"), [B])
    output pred
    loss mse(pred, t)
}
EOF
"$CDLC" --exe "$t/reg.cdl" -o "$t/reg" >"$t/log" 2>&1 || { echo "FAIL cdlc --exe: $(tail -3 $t/log)"; exit 1; }
cd "$t"
# t = 2a - b + 0.5, real-valued; and the same features with an integer column y
python3 - <<'EOF'
import random
r = random.Random(7)
with open("reg.csv", "w") as f, open("noty.csv", "w") as g:
    f.write("a,b,t\n"); g.write("a,b,y\n")
    for i in range(400):
        a, b = r.gauss(0, 1), r.gauss(0, 1)
        f.write("%.6f,%.6f,%.6f\n" % (a, b, 2 * a - b + 0.5))
        g.write("%.6f,%.6f,%d\n" % (a, b, i % 3))
EOF
# the checkpoint's fc.weight and fc.bias, read with the safetensors layout alone
params() {
    python3 - "$1" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
def get(k):
    s, e = h[k]["data_offsets"]
    return struct.unpack("<%df" % ((e - s) // 4), b[8 + n + s:8 + n + e])
w, c = get("fc.weight"), get("fc.bias")
print("%.4f %.4f %.4f" % (w[0], w[1], c[0]))
EOF
}
if ./reg train --data reg.csv --epochs 30 --optimizer sgd:lr=0.1 --save r.ckpt --json --quiet >out 2>err; then
    read -r w0 w1 c < <(params r.ckpt)
    awk -v a="$w0" -v b="$w1" -v c="$c" 'BEGIN { d = (a-2)^2 + (b+1)^2 + (c-0.5)^2; exit !(d < 1e-4) }' ||
        bad "regression learnt w = ($w0, $w1), c = $c; want (2, -1), 0.5"
else
    bad "train on a real-valued target: $(tail -2 err)"
fi
# an input the dataset does not provide: an error naming it, not zeros
if ./reg train --data noty.csv --epochs 1 --quiet >out 2>err; then
    bad "input t was not in noty.csv but training ran"
else
    grep -q "input t f32\[B\] has no column of that name" err || bad "unfed input: $(tail -1 err)"
fi
# --feed maps it (an integer column may feed a real input)
./reg train --data noty.csv --feed t=y --epochs 1 --quiet >out 2>err || bad "--feed t=y: $(tail -1 err)"
[ $fail -eq 0 ] && echo "regression on a real target: w = ($w0, $w1), c = $c; unfed input named; --feed maps it"
[ $fail -eq 0 ]
