#!/bin/bash
# Gradient check of every model in models/, through its generated f64 code (at the
# smaller sizes of tests/zoo_sizes.txt where it lists the model).
set -u
B=${B:-build}
CDLC=${CDLC:-$B/cdlc}
t=$(mktemp -d); trap 'rm -rf $t' EXIT
fail=0; n=0
for m in models/*.cdl; do
    b=$(basename $m .cdl); n=$((n + 1))
    defs=$(awk -v m="$b" '$1 == m { $1 = ""; print }' tests/zoo_sizes.txt)   # smaller sizes
    if ! "$CDLC" --precision=f64 --exe -D B=4 $defs "$m" -o "$t/$b" >"$t/log" 2>&1; then
        echo "FAIL $b: does not compile: $(head -3 $t/log)"; fail=$((fail + 1)); continue
    fi
    if ! timeout 300 "$t/$b" gradcheck --threads 1 >"$t/log" 2>&1; then
        echo "FAIL $b: $(tail -3 $t/log)"; fail=$((fail + 1)); continue
    fi
    echo "ok   $b: $(tail -1 $t/log)"
done
echo "$n models, $fail failures"
[ $fail -eq 0 ] && [ $n -ge 9 ]
