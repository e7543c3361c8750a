#!/bin/bash
# Gradient check of every differentiable op, end to end: for each case in
# tests/opcases.txt ("op | body ; body ; ..."), write a tiny model, compile it with
# cdlc --precision=f64 --exe, and run its trainer's `gradcheck` (central differences in
# f64, |num - ana| <= 1e-5 + 1e-3 |num|).  An OPF_DIFF op of runtime/ops.def without a
# case fails the test.
set -u
B=${B:-build}
CDLC=${CDLC:-$B/cdlc}
t=$(mktemp -d); trap 'rm -rf $t' EXIT
fail=0; n=0
declare -A covered
while IFS= read -r line; do
    case "$line" in ''|'#'*) continue;; esac
    op=$(echo "${line%%|*}" | tr -d ' ')
    body=${line#*|}
    n=$((n + 1))
    m="$t/case$n.cdl"
    { echo "model op_${op}() {"; echo "$body" | sed 's/ ; /\n/g; s/^ *//' | sed 's/^/    /'; echo "}"; } >"$m"
    if ! "$CDLC" --precision=f64 --exe "$m" -o "$t/case$n" >"$t/log" 2>&1; then
        echo "FAIL $op: does not compile: $(head -3 $t/log)"; cat "$m"; fail=$((fail + 1)); continue
    fi
    if ! timeout 120 "$t/case$n" gradcheck --threads 1 >"$t/log" 2>&1; then
        echo "FAIL $op: gradcheck: $(tail -3 $t/log)"; fail=$((fail + 1)); continue
    fi
    covered[$op]=1
    echo "ok   $op: $(tail -1 $t/log)"
done < tests/opcases.txt
# every differentiable op needs a case
for op in $(grep -E '^OP\(' runtime/ops.def | grep 'OPF_DIFF' | grep -v OPF_CTRL | sed -E 's/^OP\([A-Z_0-9]+, *"([a-z_0-9]+)".*/\1/'); do
    if [ -z "${covered[$op]:-}" ]; then echo "FAIL $op: no passing gradient-check case in tests/opcases.txt"; fail=$((fail + 1)); fi
done
echo "$n cases, $fail failures"
[ $fail -eq 0 ]
