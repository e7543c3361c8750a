#!/bin/bash
# run-tests: alone -- it runs its cases two at a time (xargs -P 2)
# Gradient check of every differentiable op, end to end: for each case in
# tests/opcases.txt ("op | body ; body ; ..."), write a tiny model, compile it with
# cdlc --precision=f64 --exe, and run its trainer's `gradcheck` (central differences in
# f64, |num - ana| <= 1e-5 + 1e-3 |num|).  An OPF_DIFF op of runtime/ops.def without a
# case fails the test.  Every case also runs static and tape side by side (cdl-compare,
# 3 steps, f32) and must agree bit for bit: both call the same kernels in the same order.
# The model's batch is B = 3: a case's inputs are [B, ...], as the datasets feed them.
# Environment: B, CDLC, COMPARE.
. "$(dirname "$0")/../lib.sh"
COMPARE=${COMPARE:-$B/cdl-compare}
# a sanitized runtime needs the compared programs built the same way
san_cc
export CDLC COMPARE t

# one case: $1 = its number, $2 = the line
one() {
    local n=$1 line=$2 op body m
    op=$(echo "${line%%|*}" | tr -d ' ')
    body=${line#*|}
    m="$t/case$n.cdl"
    { echo "model op_${op}(B = 3) {"; echo "$body" | sed 's/ ; /\n/g; s/^ *//' | sed 's/^/    /'; echo "}"; } >"$m"
    if ! "$CDLC" --precision=f64 --exe "$m" -o "$t/case$n" >"$t/log$n" 2>&1; then
        echo "FAIL $op: does not compile: $(head -3 $t/log$n)"; cat "$m"; return
    fi
    if ! timeout 120 "$t/case$n" gradcheck --threads 1 >"$t/log$n" 2>&1; then
        echo "FAIL $op: gradcheck: $(tail -3 $t/log$n)"; return
    fi
    local gc
    gc=$(tail -1 "$t/log$n")
    if ! timeout 300 "$COMPARE" "$m" --steps 3 --data random --tol 0 --json >"$t/cmp$n" 2>"$t/log$n"; then
        echo "FAIL $op: static and tape differ: $(tail -2 $t/log$n) $(head -c 300 $t/cmp$n)"; return
    fi
    echo "ok   $op: gradcheck $gc; static == tape bitwise"
}
export -f one
grep -vE '^(#|$)' tests/opcases.txt | awk '{print NR; print}' | tr '\n' '\0' | xargs -0 -n 2 -P 2 bash -c 'one "$0" "$1"' >"$t/results"
cat "$t/results"
n=$(grep -c . "$t/results"); fail=$(grep -c '^FAIL' "$t/results")
# every differentiable op needs a passing case, except the ones no source can write:
# identity is made only by the pipeline (dropout in eval-mode functions), and an eval
# graph is never differentiated by gradcheck; its rule (pass the gradient through) is
# the same one-liner as stop_gradient's forward.
internal=" identity "
for op in $(grep -E '^OP\(' runtime/ops.def | grep 'OPF_DIFF' | grep -v OPF_CTRL | sed -E 's/^OP\([A-Z_0-9]+, *"([a-z_0-9]+)".*/\1/'); do
    [[ "$internal" == *" $op "* ]] && continue
    grep -q "^ok   $op:" "$t/results" || { echo "FAIL $op: no passing gradient-check case in tests/opcases.txt"; fail=$((fail + 1)); }
done
echo "$n cases (gradient check in f64, static == tape bit for bit), $fail failures"
[ "$fail" -eq 0 ] && [ "$n" -ge 1 ]
