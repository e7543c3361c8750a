#!/bin/bash
# Run every test program (build/tests/test_*, cmocka) and every tests/sh/*.sh script,
# then print the totals as the last line: "N passed, N failed".
# Environment: B = build directory (build or build/asan).
B=${B:-build}
export B CDLC="$B/cdlc" CDLRT="$B/libcdlrt.a"
export CMOCKA_MESSAGE_OUTPUT=stdout
pass=0; fail=0; failed_names=""
log=$(mktemp); trap 'rm -f $log' EXIT
# seconds since t0 (one decimal), for the per-test times on each line
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
for t in "$B"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    t0=$(now)
    "$t" >"$log" 2>&1; rc=$?
    p=$(grep -E '^\[  PASSED  \] [0-9]+ test' "$log" | grep -oE '[0-9]+' | head -1)
    f=$(grep -E '^\[  FAILED  \] [0-9]+ test' "$log" | grep -oE '[0-9]+' | head -1)
    p=${p:-0}; f=${f:-0}
    if [ $rc -ne 0 ] && [ "$f" = 0 ]; then f=1; fi   # crashed or exited badly
    pass=$((pass + p)); fail=$((fail + f))
    if [ "$f" != 0 ]; then
        failed_names="$failed_names $name"
        echo "---- $name (exit $rc)"; tail -40 "$log"
    else
        echo "ok   $name ($p, $(secs $t0))"
    fi
done
for s in tests/sh/*.sh; do
    [ -f "$s" ] || continue
    name=$(basename "$s")
    t0=$(now)
    bash "$s" >"$log" 2>&1; rc=$?
    if [ $rc -eq 0 ]; then pass=$((pass + 1)); echo "ok   $name [$(secs $t0)]: $(tail -1 $log)"
    else fail=$((fail + 1)); failed_names="$failed_names $name"; echo "---- $name (exit $rc, $(secs $t0))"; tail -40 "$log"; fi
done
[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ] && [ $pass -gt 0 ]
