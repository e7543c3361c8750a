#!/bin/bash
# grad_file.sh -- `grad` writes a file that alone reproduces its computation (issue 10
# item 7), through generated code:
#  1. models/charlm.cdl, whose inputs are token ids, takes `--data random`: the file
#     holds x.<b>, y.<b> (i32 [B, T], ids < V), rows.<b>, loss.<b>, param.*, grad.*
#     and the metadata (mode, step, seed, precision, feeds, normalize);
#  2. with numpy (/usr/bin/python3; skipped without it): models/mlp.cdl in f64, WITH
#     its dropout, at trained weights (step 4), is recomputed in numpy from the file
#     alone -- parameters from param.*, inputs from x.<b>/y.<b>, the dropout masks
#     redrawn in Python from the mapping docs/trainer.md documents (Philox-4x32-10,
#     key (seed, step, stream), stream k the k-th dropout) -- and the loss and every
#     gradient must agree to 1e-12; so must its `grad --eval` files (no dropout), and
#     the tape build's files of both modes;
#  3. `grad --eval` on a model with batch norm (running statistics) and dropout: the
#     static build's eval-mode gradient function and the tape's agree to 1e-12, and
#     differ from train mode's.
set -u
B=${B:-build}
CDLC=${CDLC:-$B/cdlc}
[ -x "$CDLC" ] || { echo "grad_file.sh: no compiler at $CDLC"; exit 1; }
t=$(mktemp -d); trap 'rm -rf $t' EXIT
fail=0
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
"$CDLC" --exe models/charlm.cdl -o "$t/charlm" >"$t/log" 2>&1 || { echo "FAIL cdlc charlm: $(tail -3 $t/log)"; exit 1; }
"$t/charlm" grad --data random --batches 2 --seed 5 -o "$t/c.st" >"$t/out" 2>&1 || bad "charlm grad: $(tail -2 $t/out)"
# a safetensors reader with the standard library alone
cat >"$t/st.py" <<'EOF'
import json, struct
DT = {"F32": ("f", 4), "F64": ("d", 8), "I32": ("i", 4)}
def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__", {})
    out = {}
    for k, v in h.items():
        c, w = DT[v["dtype"]]
        s, e = v["data_offsets"]
        out[k] = (v["dtype"], v["shape"], struct.unpack("<%d%s" % ((e - s) // w, c), b[8 + n + s:8 + n + e]))
    return out, meta
EOF
[ -s "$t/c.st" ] && python3 - "$t" <<'EOF' || bad "charlm's grad file"
import sys; sys.path.insert(0, sys.argv[1])
import math, st
T, m = st.load(sys.argv[1] + "/c.st")
for b in (0, 1):
    for name in ("x", "y"):
        dt, shape, v = T["%s.%d" % (name, b)]
        assert dt == "I32" and shape == [32, 64], (name, dt, shape)
        assert min(v) >= 0 and max(v) < 96 and len(set(v)) > 50, (name, min(v), max(v))
    assert T["rows.%d" % b][2] == (32,) and math.isfinite(T["loss.%d" % b][2][0])
assert T["x.0"][2] != T["x.1"][2]
for p in ("embed.weight", "cell.weight_ih", "out.weight"):
    assert "param." + p in T and "grad.0." + p in T and "grad.1." + p in T, p
want = {"format": "cdl-grad 1", "model": "charlm", "mode": "train", "precision": "f32", "step": "0",
        "seed": "5", "feeds": "x=x,y=y", "normalize": "none", "data": "random", "batches": "2"}
for k, v in want.items():
    assert m.get(k) == v, (k, m.get(k), v)
EOF
# grad --eval on batch norm (running statistics) and dropout (off): the static build's
# eval-mode gradient function and the tape's agree, and differ from train mode's
cat >"$t/bn.cdl" <<'EOF'
model bn(B = 16) {
    input x: f32[B, 6]
    input y: i32[B]
    logits = x |> linear(8) |> batchnorm |> relu |> dropout(0.3) |> linear(3)
    output logits
    loss cross_entropy(logits, y)
}
EOF
for tg in c tape; do
    "$CDLC" --exe --precision=f64 --target=$tg "$t/bn.cdl" -o "$t/bn_$tg" >"$t/log" 2>&1 || bad "cdlc bn $tg: $(tail -3 $t/log)"
done
"$t/bn_c" train --data random:64 --epochs 2 --save "$t/bn.ckpt" --quiet >"$t/out" 2>&1 || bad "bn train: $(tail -1 $t/out)"
for v in "c --eval" "tape --eval" "c"; do
    set -- $v
    "$t/bn_$1" grad ${2:-} --data random --load "$t/bn.ckpt" --batches 2 -o "$t/bn_$1${2:-}.st" >"$t/out" 2>&1 ||
        bad "bn_$1 grad ${2:-}: $(tail -1 $t/out)"
done
python3 - "$t" <<'EOF' || bad "grad --eval: static and tape disagree on batch norm, or eval equals train"
import sys; sys.path.insert(0, sys.argv[1])
import st
d = sys.argv[1]
S, ms = st.load(d + "/bn_c--eval.st")
T, mt = st.load(d + "/bn_tape--eval.st")
R, mr = st.load(d + "/bn_c.st")
assert ms["mode"] == "eval" and mt["mode"] == "eval" and mr["mode"] == "train"
n = 0
for k, (dt, shape, v) in S.items():
    if not (k.startswith("grad.") or k.startswith("loss.")):
        continue
    w = T[k][2]
    scale = max(max(abs(a) for a in v), 1e-300)
    assert max(abs(a - b) for a, b in zip(v, w)) <= 1e-12 * scale, k
    n += 1
assert n == 2 * 7, n                          # loss + 6 gradients, 2 batches
assert R["loss.0"][2] != S["loss.0"][2] and R["grad.0.linear1.weight"][2] != S["grad.0.linear1.weight"][2]
EOF
if /usr/bin/python3 -c "import numpy" 2>/dev/null; then
    "$CDLC" --exe --precision=f64 models/mlp.cdl -o "$t/mlp64" >"$t/log" 2>&1 || bad "cdlc mlp f64: $(tail -3 $t/log)"
    "$CDLC" --exe --precision=f64 --target=tape models/mlp.cdl -o "$t/mlp64t" >"$t/log" 2>&1 || bad "cdlc mlp f64 tape: $(tail -3 $t/log)"
    "$t/mlp64" train --data random:256 --epochs 1 --batch 64 --save "$t/m.ckpt" --quiet >"$t/out" 2>&1 || bad "mlp train: $(tail -1 $t/out)"
    # train and eval mode (grad --eval: no dropout), static and tape
    for v in "mlp64 m" "mlp64t mt"; do
        set -- $v
        "$t/$1" grad --data random --load "$t/m.ckpt" --batches 2 --batch 50 -o "$t/$2.st" >"$t/out" 2>&1 || bad "$1 grad: $(tail -1 $t/out)"
        "$t/$1" grad --eval --data random --load "$t/m.ckpt" --batches 2 --batch 50 -o "$t/${2}e.st" >"$t/out" 2>&1 ||
            bad "$1 grad --eval: $(tail -1 $t/out)"
    done
    /usr/bin/python3 - "$t" <<'EOF' || bad "numpy does not reproduce mlp's grad file"
import sys; sys.path.insert(0, sys.argv[1])
import numpy as np, st
M64 = (1 << 64) - 1
def mix(x):                                   # splitmix64
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)
def philox(c, k0, k1):                        # Philox-4x32-10 on counter c (4 words)
    c = list(c)
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k0) & 0xFFFFFFFF, p1 & 0xFFFFFFFF, ((p0 >> 32) ^ c[3] ^ k1) & 0xFFFFFFFF, p0 & 0xFFFFFFFF]
        k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return c
def cdl_philox(seed, step, stream, index):    # cdl_philox((seed, step, stream), index)
    h = mix(mix(mix(seed) ^ stream) ^ step)
    return philox([index & 0xFFFFFFFF, index >> 32, step & 0xFFFFFFFF, step >> 32], h & 0xFFFFFFFF, h >> 32)
def keep_mask(seed, step, stream, n, p):      # docs/trainer.md, "Dropout mask"
    k0, k1, s0, s1 = cdl_philox(seed, step, stream, M64)
    words = []
    for c in range((n + 3) // 4):
        words += philox([c & 0xFFFFFFFF, c >> 32, s0, s1], k0, k1)
    return np.array(words[:n], dtype=np.uint64) >= int(p * 2**32)
def check(T, m, mode):                         # the file's losses and gradients, redone in numpy
    assert m["mode"] == mode and m["precision"] == "f64" and m["normalize"] == "none", m
    seed, step0 = int(m["seed"]), int(m["step"])
    assert step0 == 4, step0                  # 256 examples at batch 64: 4 steps taken
    P = {k[6:]: np.array(v[2]).reshape(v[1]) for k, v in T.items() if k.startswith("param.")}
    W1, b1, W2, b2, W3, b3 = (P["linear%d.%s" % (l, w)] for l in (1, 2, 3) for w in ("weight", "bias"))
    worst = 0.0
    for b in range(int(m["batches"])):
        n = T["rows.%d" % b][2][0]
        x = np.array(T["x.%d" % b][2]).reshape(n, 784)
        y = np.array(T["y.%d" % b][2])
        s = 1 / (1 - 0.1)                     # kept values are scaled by 1 / (1 - p)
        if mode == "train":                   # stream 0: the first dropout, stream 1: the second
            d1 = keep_mask(seed, step0 + b, 0, n * 256, 0.1).reshape(n, 256) * s
            d2 = keep_mask(seed, step0 + b, 1, n * 128, 0.1).reshape(n, 128) * s
        else:                                 # grad --eval: no dropout
            d1, d2 = np.ones((n, 256)), np.ones((n, 128))
        a1 = x @ W1.T + b1; h1 = np.maximum(a1, 0) * d1
        a2 = h1 @ W2.T + b2; h2 = np.maximum(a2, 0) * d2
        z = h2 @ W3.T + b3
        e = np.exp(z - z.max(1, keepdims=True)); p = e / e.sum(1, keepdims=True)
        loss = -np.log(p[np.arange(n), y]).mean()
        dz = p.copy(); dz[np.arange(n), y] -= 1; dz /= n
        dh2 = dz @ W3; da2 = dh2 * d2 * (a2 > 0)
        dh1 = da2 @ W2; da1 = dh1 * d1 * (a1 > 0)
        G = {"linear3.weight": dz.T @ h2, "linear3.bias": dz.sum(0), "linear2.weight": da2.T @ h1,
             "linear2.bias": da2.sum(0), "linear1.weight": da1.T @ x, "linear1.bias": da1.sum(0)}
        got = T["loss.%d" % b][2][0]
        assert abs(loss - got) <= 1e-12 * abs(got), (b, loss, got)
        for k, g in G.items():
            c = np.array(T["grad.%d.%s" % (b, k)][2]).reshape(g.shape)
            d = np.abs(c - g).max() / max(np.abs(g).max(), 1e-300)
            worst = max(worst, d)
            assert d <= 1e-12, (mode, b, k, d)
    return worst
worst = 0.0
for f, mode in (("m", "train"), ("me", "eval"), ("mt", "train"), ("mte", "eval")):
    T, m = st.load(sys.argv[1] + "/" + f + ".st")
    worst = max(worst, check(T, m, mode))
tr, ev = st.load(sys.argv[1] + "/m.st")[0], st.load(sys.argv[1] + "/me.st")[0]
assert tr["loss.0"] != ev["loss.0"]           # dropout was on in one and off in the other
print("worst relative gradient difference %.2g" % worst)
EOF
    py_note="numpy recomputes mlp from its grad files (train mode: dropout masks redrawn from docs/trainer.md; --eval), static and tape, to 1e-12"
else
    py_note="(numpy absent: the recomputation of mlp was skipped)"
fi
[ $fail -eq 0 ] && echo "charlm: ids from --data random recorded with everything; grad --eval: batch norm static == tape; $py_note"
[ $fail -eq 0 ]
