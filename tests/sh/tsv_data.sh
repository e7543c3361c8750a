#!/bin/bash
# tsv_data.sh -- `--data tsv:FILE` (label<TAB>text lines) trains a character classifier
# with the generic trainer (issue 14): a bag-of-characters model over x: i32[B, T]
# (the ids, padded and truncated to T) and mask: f32[B, T] (fed by name), three
# "languages" of made-up words (one alphabet each, one with non-ASCII letters);
#   - it learns (test accuracy on the held-out tenth far above chance);
#   - the checkpoint holds the vocabulary (chars:...) and the class names;
#   - eval --load with --test FILE numbers another file with them; a label the
#     checkpoint does not know is an error naming its line;
#   - a run split in two (--resume) ends with the same parameters as an unsplit one,
#     and --workers 0 and 3 train alike;
#   - bad files: file:line errors (no tab, invalid UTF-8); len: i32[B] is fed too, and
#     accuracy is still measured against y.
. "$(dirname "$0")/../lib.sh"
cat >"$t/cls.cdl" <<'EOF'
# the mean of the characters' embeddings (mask: 1 for a character, 0 for padding)
model cls(B = 16, T = 12, V = 40, E = 16, C = 3) {
    input x: i32[B, T]
    input mask: f32[B, T]
    input y: i32[B]
    e = embedding(x, V, E, name="embed")
    pooled = sum(e * reshape(mask, [B, T, 1]), axis=1) / reshape(sum(mask, axis=1), [B, 1])
    logits = linear(tanh(linear(pooled, 32, name="hidden")), C, name="out")
    output logits
    loss cross_entropy(logits, y)
}
EOF
"$CDLC" --exe "$t/cls.cdl" -o "$t/cls" >"$t/log" 2>&1 || { echo "FAIL cdlc cls: $(tail -3 $t/log)"; exit 1; }
python3 - "$t" <<'EOF'
import random, sys
d = sys.argv[1]
r = random.Random(11)
alpha = {"north": "aeiklmnrst", "south": "bdgopuyz", "east": "cfhjqvwx\u00e9\u00e8\u00fc"}
def lines(n):
    out = []
    for _ in range(n):
        lab = r.choice(sorted(alpha))
        out.append(lab + "\t" + "".join(r.choice(alpha[lab]) for _ in range(r.randint(1, 18))))
    return out
open(d + "/train.tsv", "w", encoding="utf-8").write("\n".join(lines(640)) + "\n")
open(d + "/other.tsv", "w", encoding="utf-8").write("\n".join(lines(100)) + "\n")
open(d + "/unknown.tsv", "w", encoding="utf-8").write("north\tabc\nwest\tabc\n")
EOF
run() { "$t/cls" train --data "tsv:$t/train.tsv" --quiet --lr 0.01 "$@"; }
run --epochs 4 --json --save "$t/full.ckpt" >"$t/out" 2>"$t/err" || bad "train: $(tail -2 $t/err)"
python3 - "$t" <<'EOF' || bad "trained classifier: $(cat $t/out)"
import json, struct, sys
d = sys.argv[1]
r = json.loads(open(d + "/out").read().strip().splitlines()[-1])
assert r["test_accuracy"] > 0.8, r                 # three classes: chance is 1/3
b = open(d + "/full.ckpt", "rb").read(); n = struct.unpack("<Q", b[:8])[0]
m = json.loads(b[8:8 + n])["__metadata__"]
assert m["labels"] == "east\nnorth\nsouth", m["labels"]
chars = [chr(int(c, 16)) for c in m["vocab"][6:].split(",")]
assert m["vocab"].startswith("chars:") and chars == sorted(set("aeiklmnrstbdgopuyzcfhjqvwx\u00e9\u00e8\u00fc")), chars
EOF
"$t/cls" eval --load "$t/full.ckpt" --data "tsv:$t/train.tsv" --test "tsv:$t/other.tsv" --json >"$t/out" 2>"$t/err" ||
    bad "eval --test: $(tail -1 $t/err)"
python3 -c "
import json, sys
r = json.loads(open('$t/out').read())
assert r['examples'] == 100 and r['test_accuracy'] > 0.8, r
" || bad "eval on another file: $(cat $t/out)"
"$t/cls" eval --load "$t/full.ckpt" --data "tsv:$t/train.tsv" --test "tsv:$t/unknown.tsv" >"$t/out" 2>&1 &&
    bad "eval: a label the checkpoint does not know"
grep -q "unknown.tsv:2: label 'west' is not one of the 3 classes" "$t/out" || bad "unknown label: $(tail -1 $t/out)"
# exact resume, any worker count
run --epochs 2 --save "$t/a.ckpt" --workers 0 >/dev/null 2>&1 || bad "train 2 epochs"
run --epochs 1 --save "$t/h.ckpt" --workers 3 >/dev/null 2>&1 || bad "train 1 epoch"
run --epochs 2 --resume "$t/h.ckpt" --save "$t/h.ckpt" --workers 2 >/dev/null 2>&1 || bad "resume"
python3 - "$t/a.ckpt" "$t/h.ckpt" <<'EOF' || bad "a resumed run differs from an unsplit one"
import json, struct, sys
def tensors(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items() if k != "__metadata__"}
a, h = tensors(sys.argv[1]), tensors(sys.argv[2])
assert a.keys() == h.keys() and all(a[k] == h[k] for k in a), [k for k in a if a[k] != h.get(k)]
EOF
# bad files
printf 'north\tabc\nnorth abc\n' >"$t/notab.tsv"
run --data "tsv:$t/notab.tsv" --epochs 1 >"$t/out" 2>&1 && bad "a line without a tab"
grep -q "notab.tsv:2: no tab: a line is label<TAB>text" "$t/out" || bad "no tab: $(tail -1 $t/out)"
printf 'north\tab\xffc\n' >"$t/utf.tsv"
run --data "tsv:$t/utf.tsv" --epochs 1 >"$t/out" 2>&1 && bad "invalid UTF-8"
grep -q "utf.tsv:1: invalid UTF-8 at byte 9 of the line" "$t/out" || bad "invalid UTF-8: $(tail -1 $t/out)"
"$t/cls" train --data "tsv:$t/train.tsv" --test "tsv:$t/other.tsv" --epochs 1 --quiet --json >"$t/out" 2>&1 ||
    bad "train with --test: $(tail -1 $t/out)"
# len: i32[B] is fed from its column (grad records it)
sed -e 's/input mask: f32\[B, T\]/input mask: f32[B, T]\n    input len: i32[B]/' \
    -e 's|C, name="out")|C, name="out") + embedding(len, T + 1, C, name="by_len")|' \
    "$t/cls.cdl" >"$t/cls2.cdl"
"$CDLC" --exe "$t/cls2.cdl" -o "$t/cls2" >"$t/log" 2>&1 || bad "cdlc cls2: $(tail -3 $t/log)"
"$t/cls2" grad --data "tsv:$t/train.tsv" --batches 1 -o "$t/g.st" --quiet >"$t/out" 2>&1 || bad "grad with len: $(tail -1 $t/out)"
python3 - "$t/g.st" "$t/train.tsv" <<'EOF' || bad "len and mask fed"
import json, struct, sys
b = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
def arr(k, f):
    s, e = h[k]["data_offsets"]
    return struct.unpack("<%d%s" % ((e - s) // 4, f), b[8 + n + s:8 + n + e])
ln, mask = arr("len.0", "i"), arr("mask.0", "f")
lines = open(sys.argv[2], encoding="utf-8").read().splitlines()
want = [min(len(l.split("\t", 1)[1]), 12) for i, l in enumerate(lines) if i % 10 != 9][:16]
assert list(ln) == want, (ln, want)                # grad takes the first batch in order
assert all(mask[r * 12 + k] == (1.0 if k < ln[r] else 0.0) for r in range(16) for k in range(12))
EOF
# accuracy is measured against y (the target column), not len, the first i32[B] input
"$t/cls2" train --data "tsv:$t/train.tsv" --epochs 4 --lr 0.01 --quiet --json >"$t/out" 2>&1 || bad "cls2 train: $(tail -1 $t/out)"
python3 -c "
import json
r = json.loads(open('$t/out').read().strip().splitlines()[-1])
assert r['test_accuracy'] > 0.8, r
" || bad "accuracy of the model with len: $(tail -1 $t/out)"
[ $fail -eq 0 ] && echo "a character classifier trains on tsv:FILE (x, mask, len fed by name), vocabulary and classes in the checkpoint, --test FILE, exact resume for any worker count, bad lines named"
[ $fail -eq 0 ]
