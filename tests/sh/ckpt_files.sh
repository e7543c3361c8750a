#!/bin/bash
# ckpt_files.sh -- checkpoints at the edges, through a generated trainer (models/mlp.cdl,
# f32 and f64 builds, 256 Fashion-MNIST images):
#   - `eval --load` and `train --resume` on a FIFO are refused at once (they used to
#     block forever in open()); `train --save` onto a symbolic link or a FIFO is refused
#     before training and leaves both alone;
#   - a temp file of a process killed mid-save (planted: a dead pid) is removed by the
#     next save, another live process's is not;
#   - a checkpoint with a NaN weight and valid checksums is refused by eval and resume,
#     naming the tensor and the element;
#   - the f32 checkpoint loads into the f64 build (eval agrees, gradcheck runs at the
#     trained weights), and a build with another shape says which tensor differs.
set -u
B=${B:-build}
CDLC=${CDLC:-$B/cdlc}
t=$(mktemp -d)
sleeper=""
trap '[ -n "$sleeper" ] && kill $sleeper 2>/dev/null; rm -rf "$t"' EXIT
fail=0
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
# expect CODE NEEDLE CMD...: CMD exits with CODE (within 60 s) and its stderr has NEEDLE.
expect() {
    local code=$1 needle=$2
    shift 2
    timeout 60 "$@" >"$t/out" 2>"$t/err"
    local rc=$?
    if [ $rc -ne "$code" ]; then bad "$*: exit $rc, expected $code: $(tail -2 "$t/err")"; return; fi
    grep -qF -- "$needle" "$t/err" || bad "$*: no '$needle' in: $(tail -2 "$t/err")"
}

"$CDLC" --exe models/mlp.cdl -o "$t/mlp" >"$t/log" 2>&1 || { echo "FAIL cdlc: $(tail -2 "$t/log")"; exit 1; }
"$CDLC" --exe --precision=f64 models/mlp.cdl -o "$t/mlp64" >"$t/log" 2>&1 || { echo "FAIL cdlc f64: $(tail -2 "$t/log")"; exit 1; }
"$CDLC" --exe -D H2=64 models/mlp.cdl -o "$t/mlp_h64" >"$t/log" 2>&1 || { echo "FAIL cdlc -D: $(tail -2 "$t/log")"; exit 1; }
data=(--limit 256 --test-limit 256 --quiet)
ev=(--test-limit 256)
cd "$t"
./mlp train --epochs 1 "${data[@]}" --save a.ckpt >/dev/null 2>err || { echo "FAIL train: $(tail -2 err)"; exit 1; }
cp a.ckpt a.orig

# FIFOs and links.
mkfifo fifo
expect 1 "fifo: is a FIFO, not a regular file" ./mlp eval --load fifo "${ev[@]}"
expect 1 "fifo: is a FIFO, not a regular file" ./mlp train --resume fifo --epochs 2 "${data[@]}"
ln -s a.ckpt link.ckpt
expect 1 "link.ckpt: is a symbolic link" ./mlp train --epochs 1 "${data[@]}" --save link.ckpt
[ -L link.ckpt ] || bad "the symbolic link was replaced"
cmp -s a.ckpt a.orig || bad "the link's target changed"
expect 1 "fifo: is a FIFO; a save replaces only regular files" ./mlp train --epochs 1 "${data[@]}" --save fifo
[ -p fifo ] || bad "the FIFO was replaced"

# Stale temp files: a dead pid's goes at the next save, a live one's stays.
dead=$(sh -c 'echo $$')
sleep 300 & sleeper=$!
echo junk >"c.ckpt.tmp.$dead"
echo junk >"c.ckpt.tmp.$sleeper"
./mlp train --epochs 1 "${data[@]}" --save c.ckpt >/dev/null 2>err || bad "train --save c.ckpt: $(tail -1 err)"
[ -e "c.ckpt.tmp.$dead" ] && bad "the dead process's temp file is still there"
[ -e "c.ckpt.tmp.$sleeper" ] || bad "a live process's temp file was removed"

# A NaN weight with valid checksums (python3: stdlib only).
python3 - a.ckpt nan.ckpt <<'PY' || bad "could not make nan.ckpt"
import json, struct, sys, zlib
b = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = b[8:8 + n].decode()
hdr = json.loads(h)
s, e = hdr["linear1.weight"]["data_offsets"]
base = 8 + n
struct.pack_into("<f", b, base + s + 4 * 785, float("nan"))      # element [1, 1]
old = hdr["__metadata__"]["crc32:linear1.weight"]
new = "%08x" % zlib.crc32(bytes(b[base + s:base + e]))
h = h.replace('"crc32:linear1.weight":"%s"' % old, '"crc32:linear1.weight":"%s"' % new)
i = h.index('"header_crc32":"') + 16
z = h[:i] + "00000000" + h[i + 8:]
h = z[:i] + "%08x" % zlib.crc32(z.encode()) + z[i + 8:]
b[8:8 + n] = h.encode()
open(sys.argv[2], "wb").write(b)
PY
expect 1 "tensor 'linear1.weight': element 785 [1, 1] is nan" ./mlp eval --load nan.ckpt "${ev[@]}"
expect 1 "tensor 'linear1.weight': element 785 [1, 1] is nan" ./mlp train --resume nan.ckpt --epochs 2 "${data[@]}"

# f32 -> f64: eval agrees to f32 rounding; gradcheck runs at the trained weights.
./mlp eval --load a.ckpt "${ev[@]}" --json >e32 2>err || bad "eval f32: $(tail -1 err)"
./mlp64 eval --load a.ckpt "${ev[@]}" --json >e64 2>err || bad "eval f64 of the f32 checkpoint: $(tail -1 err)"
python3 - e32 e64 <<'PY' || bad "f32 and f64 evals of one checkpoint differ"
import json, sys
a, b = (json.loads(open(p).read().strip().splitlines()[-1])["test_loss"] for p in sys.argv[1:])
print("test_loss f32 %.9f, f64 %.9f" % (a, b))
sys.exit(0 if abs(a - b) <= 1e-5 * abs(b) else 1)
PY
./mlp64 gradcheck --load a.ckpt --n 40 --batch 4 >gc 2>&1 || bad "gradcheck --load of the f32 checkpoint: $(tail -2 gc)"
expect 1 "tensor 'linear2.weight': shape [128, 256] in the file, the model has [64, 256]" \
    ./mlp_h64 eval --load a.ckpt "${ev[@]}"
grep -qF "checkpoint of another build of 'mlp'" err || bad "no fingerprint explanation: $(tail -1 err)"

[ $fail -eq 0 ] && echo "fifo, links, stale temps, NaN weights, f32 -> f64: all as expected"
[ $fail -eq 0 ]
