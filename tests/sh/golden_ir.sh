#!/bin/bash
# Golden IR dumps: `cdlc --emit=ir` of every model in models/ must equal
# tests/golden/<model>.ir (one node a line: op, inputs, attributes, shape, name, source
# location).  After an intended change, regenerate with:  tests/sh/golden_ir.sh --update
set -u -o pipefail
B=${B:-build}
CDLC=${CDLC:-$B/cdlc}
mkdir -p tests/golden
fail=0; n=0
for m in models/*.cdl; do
    b=$(basename $m .cdl); n=$((n + 1))
    # a library block is located where this cdlc found it (build/../lib, an install
    # dir): the dumps say lib/<module>.cdl, so they do not depend on the checkout
    out=$("$CDLC" --emit=ir "$m" 2>&1 | sed -E "s#@ [^ ]*/lib/([A-Za-z_0-9]+\.cdl):#@ lib/\1:#") || { echo "FAIL $b: cdlc failed: $(echo "$out" | head -2)"; fail=$((fail + 1)); continue; }
    if [ "${1:-}" = --update ]; then echo "$out" > tests/golden/$b.ir; continue; fi
    [ -f tests/golden/$b.ir ] || { echo "FAIL $b: no tests/golden/$b.ir (run with --update)"; fail=$((fail + 1)); continue; }
    if ! diff -u tests/golden/$b.ir <(echo "$out") > /tmp/golden_$$.diff; then
        echo "FAIL $b: IR differs from tests/golden/$b.ir:"; head -20 /tmp/golden_$$.diff; fail=$((fail + 1))
    fi
done
rm -f /tmp/golden_$$.diff
echo "$n models, $fail differ"
[ $fail -eq 0 ]
