#!/bin/bash
# text_data.sh -- `--data text:FILE` trains a language model with the generic trainer
# (issue 14 item 1): models/charlm.cdl (x, y: i32[B, T]) on a text file of fewer
# distinct characters than its V = 96, through the same loader as images: windows of
# T + 1 at shuffled offsets, the last tenth held out for the test loss; grad records
# the windows, y being x shifted by one; bytes:FILE numbers by byte value (V = 96
# cannot take ids up to 't' = 116: the first step stops naming the id out of range);
# a model without an i32 input x is refused by name.
set -u
B=${B:-build}
CDLC=${CDLC:-$B/cdlc}
[ -x "$CDLC" ] || { echo "text_data.sh: no compiler at $CDLC"; exit 1; }
t=$(mktemp -d); trap 'rm -rf $t' EXIT
fail=0
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
"$CDLC" --exe models/charlm.cdl -o "$t/charlm" >"$t/log" 2>&1 || { echo "FAIL cdlc charlm: $(tail -3 $t/log)"; exit 1; }
python3 -c "
import random
r = random.Random(3)
words = ['the', 'cat', 'sat', 'on', 'a', 'mat', 'and', 'dog', 'ran', 'far']
open('$t/corpus.txt', 'w').write('\n'.join(' '.join(r.choice(words) for _ in range(8)) for _ in range(300)) + '\n')
"
"$t/charlm" train --data "text:$t/corpus.txt" --epochs 1 --limit 640 --json --quiet >"$t/out" 2>"$t/err" ||
    bad "train on text: $(tail -2 $t/err)"
python3 - "$t/out" <<'EOF' || bad "train on text: $(cat $t/out)"
import json, math, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
assert math.isfinite(r["train_loss"]) and math.isfinite(r["test_loss"]), r
assert r["train_loss"] < math.log(96), r          # it learnt something in 20 steps
EOF
"$t/charlm" grad --data "text:$t/corpus.txt" --batches 1 -o "$t/g.st" --quiet >"$t/out" 2>&1 || bad "grad on text: $(tail -1 $t/out)"
python3 - "$t/g.st" <<'EOF' || bad "grad's windows"
import json, struct, sys
b = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
def ids(k):
    s, e = h[k]["data_offsets"]
    return struct.unpack("<%di" % ((e - s) // 4), b[8 + n + s:8 + n + e])
x, y = ids("x.0"), ids("y.0")
assert h["x.0"]["shape"] == [32, 64] and h["y.0"]["shape"] == [32, 64]
for r in range(32):                                # y is x shifted by one, row by row
    assert x[r * 64 + 1:r * 64 + 64] == y[r * 64:r * 64 + 63], r
assert 0 <= min(x) and max(x) < 15                 # 15 distinct characters: 13 letters, space, newline
EOF
"$t/charlm" train --data "bytes:$t/corpus.txt" --epochs 1 --limit 64 --quiet >"$t/out" 2>&1 &&
    bad "bytes: ids up to t = 116 accepted by a model of V = 96"
grep -q "is outside \[0, 96)" "$t/out" || bad "bytes: no message naming the id out of range: $(tail -1 $t/out)"
"$CDLC" --exe models/mlp.cdl -o "$t/mlp" >"$t/log" 2>&1 || bad "cdlc mlp: $(tail -3 $t/log)"
"$t/mlp" train --data "text:$t/corpus.txt" --epochs 1 --quiet >"$t/out" 2>&1 && bad "mlp (f32 x) trained on text"
grep -q "input x: i32" "$t/out" || bad "mlp on text: $(tail -1 $t/out)"
# The vocabulary goes into the checkpoint and numbers every file the checkpoint meets:
# a file of fewer characters keeps the training ids (t stays 14, not the 1 of its own
# vocabulary), one with a character the vocabulary lacks is an error naming its line.
"$t/charlm" train --data "text:$t/corpus.txt" --epochs 1 --limit 320 --save "$t/a.ckpt" --quiet >"$t/out" 2>&1 ||
    bad "train --save: $(tail -1 $t/out)"
python3 - "$t" <<'EOF' || bad "vocabulary in the checkpoint"
import json, struct, sys
b = open(sys.argv[1] + "/a.ckpt", "rb").read(); n = struct.unpack("<Q", b[:8])[0]
assert json.loads(b[8:8 + n])["__metadata__"]["vocab"] == "text:0a,20,61,63,64,65,66,67,68,6d,6e,6f,72,73,74"
open(sys.argv[1] + "/tt.txt", "w").write("tt\n" * 100)
open(sys.argv[1] + "/zz.txt", "w").write("tt\n" * 10 + "zebra\n" + "tt\n" * 100)
EOF
"$t/charlm" grad --load "$t/a.ckpt" --data "text:$t/tt.txt" --batches 1 --batch 2 -o "$t/g2.st" --quiet >"$t/out" 2>&1 ||
    bad "grad --load on a file of fewer characters: $(tail -1 $t/out)"
python3 - "$t/g2.st" <<'EOF' || bad "a file of fewer characters renumbered"
import json, struct, sys
b = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
s, e = h["x.0"]["data_offsets"]
x = struct.unpack("<%di" % ((e - s) // 4), b[8 + n + s:8 + n + e])
assert sorted(set(x)) == [0, 14], sorted(set(x))    # newline and t under the corpus's vocabulary
EOF
"$t/charlm" eval --load "$t/a.ckpt" --data "text:$t/zz.txt" --quiet >"$t/out" 2>&1 && bad "eval: a character the vocabulary lacks"
grep -q "zz.txt:11: character 'z' (byte 0x7a) is not in the vocabulary (the vocabulary of .*a.ckpt)" "$t/out" ||
    bad "eval: unknown character message: $(tail -1 $t/out)"
"$t/charlm" train --resume "$t/a.ckpt" --data "text:$t/zz.txt" --epochs 2 --quiet >"$t/out" 2>&1 &&
    bad "train --resume: a character the vocabulary lacks"
grep -q "zz.txt:11: character 'z'" "$t/out" || bad "resume: unknown character message: $(tail -1 $t/out)"
"$t/charlm" train --resume "$t/a.ckpt" --data "text:$t/corpus.txt" --epochs 2 --limit 320 --save "$t/b.ckpt" --quiet \
    >"$t/out" 2>&1 || bad "train --resume: $(tail -1 $t/out)"
"$t/charlm" eval --load "$t/a.ckpt" --data "bytes:$t/corpus.txt" --quiet >"$t/out" 2>&1 && bad "eval: bytes: under a text: vocabulary"
grep -q "bytes: numbers tokens by byte value, but the vocabulary given is text:" "$t/out" ||
    bad "bytes: under text: vocabulary message: $(tail -1 $t/out)"
[ $fail -eq 0 ] && echo "charlm trains on text:FILE (train and held-out loss), grad's y is x shifted, bytes: and non-token models refused by name; the checkpoint's vocabulary numbers other files (unknown characters named by line)"
[ $fail -eq 0 ]
