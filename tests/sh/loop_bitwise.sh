#!/bin/bash
# Static graph vs dynamic tape bit for bit on loops (tests/bitwise/*.cdl): loop bodies
# where a captured parameter or a carried value gets its gradient in several parts
# (a broadcast parameter read by + and * in one step, read again after the loop, GEMM
# parts with a long inner dimension, a carried value also collected, an initial value
# read after the loop, GRU and LSTM cells collecting their state).  Each model runs
# 3 SGD steps (cdl-compare, f32, random inputs) at its full batch, a partial batch and
# batch 1: losses, every parameter gradient and the outputs must be identical
# (--tol 0).  The gradients themselves are checked elsewhere (gradcheck_ops.sh,
# gradcheck_models.sh); this is about summation order, which f64 gradchecks cannot see.
# Environment: B (build directory), COMPARE.
. "$(dirname "$0")/../lib.sh"
COMPARE=${COMPARE:-$B/cdl-compare}
# a sanitized runtime needs the compared programs built the same way
san_cc
kept=""; trap 'rm -rf "$t" $kept' EXIT
fail=0; n=0
for m in tests/bitwise/*.cdl; do
    b=$(basename "$m" .cdl)
    full=$(sed -nE 's/^model [a-z_0-9]+\(B = ([0-9]+).*/\1/p' "$m")
    [ -n "$full" ] || { echo "FAIL $b: no 'model NAME(B = N' header"; fail=$((fail + 1)); continue; }
    prog=""
    for nb in "$full" $((full - 1)) 1; do
        n=$((n + 1))
        # the first run builds the comparison program (kept), the others rerun it
        if [ -z "$prog" ]; then
            timeout 300 "$COMPARE" "$m" --keep --batch "$nb" --steps 3 --data random --tol 0 --json >"$t/cmp.json" 2>"$t/log"
            rc=$?
            dir=$(sed -n 's/^cdl-compare: files kept in //p' "$t/log")
            [ -n "$dir" ] && kept="$kept $dir" && prog="$dir/compare"
        else
            timeout 300 "$prog" --batch "$nb" --steps 3 --data random --tol 0 --json >"$t/cmp.json" 2>"$t/log"
            rc=$?
        fi
        if [ $rc -ne 0 ]; then
            echo "FAIL $b batch $nb: static and tape differ: $(grep -v 'files kept' $t/log | tail -2) $(head -c 800 $t/cmp.json)"
            fail=$((fail + 1)); continue
        fi
        # the comparison saw every parameter and three steps of losses
        if ! python3 - "$t/cmp.json" "$m" <<'PY'
import json, re, sys
d = json.load(open(sys.argv[1]))
params = re.findall(r"^\s*param (\w+)", open(sys.argv[2]).read(), re.M)
assert len(d["static_loss"]) == 3 and d["static_loss"] == d["tape_loss"], d
assert all(p in d["grad_rel_diff"] for p in params), (params, d["grad_rel_diff"])
assert max(d["grad_rel_diff"].values()) == 0 and d["max_loss_rel_diff"] == 0, d
PY
        then
            echo "FAIL $b batch $nb: $(head -c 800 $t/cmp.json)"; fail=$((fail + 1)); continue
        fi
        echo "ok   $b batch $nb: static == tape bitwise"
    done
done
echo "$n comparisons, $fail failures"
[ $fail -eq 0 ] && [ $n -ge 1 ]
