#!/bin/bash
# generate.sh -- `PROG generate` writes text with a model's next-token entry (issue 14,
# docs/trainer.md "Text"): models/charlm.cdl trained briefly on a small text, then
#   - the output is the prompt and N tokens of the checkpoint's vocabulary;
#   - the same seed gives the same text, another seed another text;
#   - --top-k 1 and --temperature 0 are greedy: the argmax of every step, checked
#     against the LSTM recomputed in Python from the checkpoint's weights (carrying h
#     and c from call to call is what makes it agree);
#   - --top-k 3 draws only among the 3 most likely, --top-p 0.5 only inside the
#     nucleus, and a high temperature strays from the greedy text;
#   - bad use is an error naming the cause: no vocabulary in the checkpoint, a prompt
#     character the vocabulary lacks, an entry whose state input no output carries.
set -u
B=${B:-build}
CDLC=${CDLC:-$B/cdlc}
[ -x "$CDLC" ] || { echo "generate.sh: no compiler at $CDLC"; exit 1; }
t=$(mktemp -d); trap 'rm -rf $t' EXIT
fail=0
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
"$CDLC" --exe models/charlm.cdl -o "$t/charlm" >"$t/log" 2>&1 || { echo "FAIL cdlc charlm: $(tail -3 $t/log)"; exit 1; }
python3 -c "
import random
r = random.Random(5)
words = ['the', 'cat', 'sat', 'on', 'a', 'mat', 'and', 'dog', 'ran', 'far']
open('$t/corpus.txt', 'w').write('\n'.join(' '.join(r.choice(words) for _ in range(8)) for _ in range(300)) + '\n')
"
"$t/charlm" train --data "text:$t/corpus.txt" --epochs 1 --limit 1280 --save "$t/lm.ckpt" --quiet >"$t/out" 2>&1 ||
    { echo "FAIL train: $(tail -2 $t/out)"; exit 1; }
gen() { "$t/charlm" generate --load "$t/lm.ckpt" --prompt "the " --tokens 40 "$@"; }
gen --seed 7 >"$t/s7" 2>"$t/err" || bad "generate: $(tail -1 $t/err)"
grep -Eq "^40 tokens in [0-9.]+ s \([0-9.]+ tokens/s\)$" "$t/err" || bad "no tokens/s on stderr: $(cat $t/err)"
gen --seed 7 >"$t/s7b" 2>/dev/null
gen --seed 8 >"$t/s8" 2>/dev/null
cmp -s "$t/s7" "$t/s7b" || bad "the same seed gave different texts"
cmp -s "$t/s7" "$t/s8" && bad "seeds 7 and 8 gave the same text"
gen --top-k 1 --seed 1 >"$t/k1" 2>/dev/null
gen --top-k 1 --seed 2 >"$t/k1b" 2>/dev/null
gen --temperature 0 >"$t/t0" 2>/dev/null
gen --temperature 0.01 --seed 3 >"$t/t001" 2>/dev/null
cmp -s "$t/k1" "$t/k1b" && cmp -s "$t/k1" "$t/t0" || bad "top-k 1 and temperature 0 are not the same greedy text"
gen --top-k 3 --seed 4 >"$t/k3" 2>/dev/null
gen --top-p 0.5 --seed 4 >"$t/p5" 2>/dev/null
gen --temperature 5 --seed 4 >"$t/hot" 2>/dev/null
python3 - "$t" <<'EOF' || bad "generated text"
import json, math, struct, sys
d = sys.argv[1]
b = open(d + "/lm.ckpt", "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
def w(k):
    s, e = h[k]["data_offsets"]
    v = struct.unpack("<%df" % ((e - s) // 4), b[8 + n + s:8 + n + e])
    shp = h[k]["shape"]
    return [v[i * shp[1]:(i + 1) * shp[1]] for i in range(shp[0])] if len(shp) == 2 else v
vocab = [chr(int(x, 16)) for x in h["__metadata__"]["vocab"][5:].split(",")]
assert "".join(vocab) == "\n acdefghmnorst", vocab
E, Wih, bih, Whh, bhh, Wo, bo = (w(k) for k in ("embed.weight", "cell.weight_ih", "cell.bias_ih", "cell.weight_hh",
                                                "cell.bias_hh", "out.weight", "out.bias"))
H = len(Whh[0])
sig = lambda x: 1 / (1 + math.exp(-x))
def logits_of(text):
    """the logits after each character of text (the vocabulary's ids only), h and c carried"""
    hh, cc, out = [0.0] * H, [0.0] * H, []
    for ch in text:
        e = E[vocab.index(ch)]
        g = [sum(a * x for a, x in zip(Wih[r], e)) + bih[r] + sum(a * x for a, x in zip(Whh[r], hh)) + bhh[r]
             for r in range(4 * H)]
        i, f, gg, o = ([sig(v) for v in g[0:H]], [sig(v) for v in g[H:2 * H]], [math.tanh(v) for v in g[2 * H:3 * H]],
                       [sig(v) for v in g[3 * H:]])
        cc = [f[k] * cc[k] + i[k] * gg[k] for k in range(H)]
        hh = [o[k] * math.tanh(cc[k]) for k in range(H)]
        out.append([sum(a * x for a, x in zip(Wo[r], hh)) + bo[r] for r in range(len(vocab))])
    return out
def text(name):
    s = open(d + "/" + name).read()
    assert s.endswith("\n") and s.startswith("the "), (name, s)
    s = s[:-1]
    assert len(s) == 4 + 40, (name, len(s), s)        # the prompt, 40 tokens
    assert set(s) <= set(vocab), (name, set(s) - set(vocab))
    return s
def ranks(s):
    """the rank of each drawn token among the logits before it, and that step's probabilities"""
    lg = logits_of(s[:-1])
    out = []
    for k in range(3, len(s) - 1):
        l, c = lg[k], vocab.index(s[k + 1])
        order = sorted(range(len(l)), key=lambda i: (-l[i], i))
        out.append((order.index(c), l[order[0]] - l[order[1]], l, order))
    return out
greedy = text("k1")
for r, margin, _, _ in ranks(greedy):
    assert r == 0 or margin < 1e-4, ("top-k 1 is not the argmax", greedy, r, margin)
assert text("t001") == greedy, "temperature 0.01 strays from greedy"
for r, _, _, _ in ranks(text("k3")):
    assert r < 3, ("top-k 3 drew a token of rank", r)
for r, _, l, order in ranks(text("p5")):
    p = [math.exp(l[i] - l[order[0]]) for i in order]
    mass = sum(p[:r]) / sum(p)                       # the probability of the more likely ones
    assert mass < 0.5 + 1e-4, ("top-p 0.5 drew outside the nucleus", r, mass)
hot = text("hot")
assert hot != greedy and len(set(hot)) > len(set(greedy)), (hot, greedy)
for f in ("s7", "s8"):
    text(f)
EOF
# bad use
"$t/charlm" train --data random:64 --epochs 1 --save "$t/r.ckpt" --quiet >"$t/out" 2>&1 || bad "train on random: $(tail -1 $t/out)"
"$t/charlm" generate --load "$t/r.ckpt" --tokens 5 >"$t/out" 2>&1 && bad "generate without a vocabulary"
grep -q "r.ckpt has no vocabulary: train on text:FILE or bytes:FILE" "$t/out" || bad "no vocabulary: $(tail -1 $t/out)"
"$t/charlm" generate --load "$t/lm.ckpt" --prompt "the zebra" --tokens 5 >"$t/out" 2>&1 && bad "a prompt character outside the vocabulary"
grep -q "prompt: character 'z' (U+007A) is not in the vocabulary of" "$t/out" || bad "prompt character: $(tail -1 $t/out)"
"$t/charlm" generate --tokens 5 >"$t/out" 2>&1 && bad "generate without --load"
grep -q "needs --load" "$t/out" || bad "no --load: $(tail -1 $t/out)"
"$t/charlm" generate --load "$t/lm.ckpt" --top-p 1.5 >"$t/out" 2>&1 && bad "--top-p 1.5"
grep -q "top-p: 1.5 is not in (0, 1\]" "$t/out" || bad "--top-p 1.5: $(tail -1 $t/out)"
cat >"$t/nostate.cdl" <<'EOF'
model nostate(B = 2, V = 8, H = 4) {
    input x: i32[B]
    input y: i32[B]
    loss cross_entropy(linear(embedding(x, V, H, name="e"), V, name="o"), y)
    entry next(ids: i32[B], q: f32[B, H]) {
        output linear(embedding(ids, V, H, name="e") + q, V, name="o") as logits
    }
}
EOF
"$CDLC" --exe "$t/nostate.cdl" -o "$t/nostate" >"$t/log" 2>&1 || bad "cdlc nostate: $(tail -3 $t/log)"
"$t/nostate" generate --load "$t/lm.ckpt" --tokens 5 >"$t/out" 2>&1 && bad "an entry whose state no output carries"
grep -q "entry next: state input q has no output q to carry it" "$t/out" || bad "uncarried state: $(tail -1 $t/out)"
[ $fail -eq 0 ] && echo "charlm generates from its vocabulary: deterministic per seed, top-k 1 = temperature 0 = argmax (Python LSTM), top-k/top-p/temperature draw where they should, bad use named"
[ $fail -eq 0 ]
