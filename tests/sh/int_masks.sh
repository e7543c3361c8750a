#!/bin/bash
# int_masks.sh -- masks built from i32 ids in CDL (tests/models/int_masks.cdl): each
# term of its loss sums p over the positions a mask selects (ids == 0, ids > 2 through
# masked_fill, lengths <= ids broadcast, 1 <= ids, an i32 cond of where, ids < 2.5,
# ids != 3), so d loss / d p[j] is a weighted count that plain Python recomputes from
# the batch's ids and lengths (in the grad file); the f64 gradient check and static ==
# tape run too.  Environment: B, CDLC, COMPARE.
. "$(dirname "$0")/../lib.sh"
san_cc
M=tests/models/int_masks.cdl
"$CDLC" --precision=f64 --exe $M -o $t/im >$t/log 2>&1 || { echo "FAIL cdlc: $(tail -3 $t/log)"; exit 1; }
$t/im gradcheck --threads 1 >$t/log 2>&1 && echo "ok   gradcheck" || { echo "FAIL gradcheck: $(tail -3 $t/log)"; fail=1; }
"$COMPARE" $M --steps 2 --data random --tol 0 >$t/log 2>&1 && echo "ok   static == tape bitwise" ||
    { echo "FAIL static vs tape: $(tail -3 $t/log)"; fail=1; }
$t/im grad --data random:6 --eval --batches 1 -o $t/g.safetensors >$t/log 2>&1 || { echo "FAIL grad: $(tail -3 $t/log)"; exit 1; }
PY=$(command -v python3 || echo /usr/bin/python3)
$PY - "$t/g.safetensors" <<'PYEOF' || fail=1
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
hdr = json.loads(b[8:8 + n])
def get(k):
    v = hdr[k]; lo, hi = v["data_offsets"]; raw = b[8 + n + lo:8 + n + hi]
    f = {"F64": "d", "I32": "i"}[v["dtype"]]
    return list(struct.unpack("<%d%s" % (len(raw) // struct.calcsize(f), f), raw)), v["shape"]
ids, (B, S) = get("ids.0")
lengths, _ = get("lengths.0")
gp, _ = get("grad.0.p")
want = [0.0] * S
for r in range(B):
    for j in range(S):
        i = ids[r * S + j]
        want[j] += (i == 0) + 2 * (i <= 2) + 3 * (lengths[r] <= i) + 4 * (i >= 1) + 5 * (i != 0) + 6 * (i < 2.5) + 7 * (i == 3)
ok = gp == want and len(set(ids)) > 2 and len(set(lengths)) > 1
print(("ok   " if ok else "FAIL ") + "d loss / d p = the masks' counts %s (want %s)" % (gp, want))
sys.exit(0 if ok else 1)
PYEOF
[ $fail -eq 0 ] && echo "i32 masks: all checks passed"
[ $fail -eq 0 ]
