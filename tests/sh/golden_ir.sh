#!/bin/bash
# Golden IR dumps: `cdlc --emit=ir` of every model in models/ must equal
# tests/golden/<model>.ir (one node a line: op, inputs, attributes, shape, name, source
# location: a standard-library block's is lib/<module>.cdl wherever the library was found,
# so the dumps do not depend on the checkout).  Then a diagnostic inside a library block
# names it the same way.  After an intended change, regenerate with:
#   tests/sh/golden_ir.sh --update
set -u -o pipefail
B=${B:-build}
CDLC=${CDLC:-$B/cdlc}
mkdir -p tests/golden
fail=0; n=0
for m in models/*.cdl; do
    b=$(basename $m .cdl); n=$((n + 1))
    out=$("$CDLC" --emit=ir "$m" 2>&1) || { echo "FAIL $b: cdlc failed: $(echo "$out" | head -2)"; fail=$((fail + 1)); continue; }
    if [ "${1:-}" = --update ]; then echo "$out" > tests/golden/$b.ir; continue; fi
    [ -f tests/golden/$b.ir ] || { echo "FAIL $b: no tests/golden/$b.ir (run with --update)"; fail=$((fail + 1)); continue; }
    if ! diff -u tests/golden/$b.ir <(echo "$out") > /tmp/golden_$$.diff; then
        echo "FAIL $b: IR differs from tests/golden/$b.ir:"; head -20 /tmp/golden_$$.diff; fail=$((fail + 1))
    fi
done
rm -f /tmp/golden_$$.diff
# an error inside lib/nn.cdl (embedding 6 is not divisible by 4 heads), from another directory
t=$(mktemp -d)
printf 'import "nn"\nmodel m(B = 2) {\n    input x: f32[B, 4, 6]\n    output multi_head_attention(x, x, x, 4) as y\n}\n' >"$t/m.cdl"
cdlc=$(realpath "$CDLC")
(cd "$t" && "$cdlc" --check m.cdl) >"$t/log" 2>&1
grep -q '^lib/nn\.cdl:[0-9]*:[0-9]*: error: reshape' "$t/log" && ! grep -q '/lib/nn\.cdl' "$t/log" ||
    { echo "FAIL a diagnostic in a library block: $(head -1 "$t/log")"; fail=$((fail + 1)); }
rm -rf "$t"
echo "$n models, $fail differ"
[ $fail -eq 0 ]
