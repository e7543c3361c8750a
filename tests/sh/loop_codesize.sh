#!/bin/bash
# Loops are not unrolled: the generated C of a model with a `for t in 0..T` loop does not
# grow with T.  Compiles models/lstm.cdl (and the other recurrent models) at T=28 and
# T=512 and checks that the two C files (and headers) are within 10% of each other's
# size, and that the T=512 file has no more `for (` loops than the T=28 one.
# Environment: B (build directory), CDLC.
set -u
B=${B:-build}
CDLC=${CDLC:-$B/cdlc}
t=$(mktemp -d); trap 'rm -rf $t' EXIT
fail=0; n=0
for m in models/lstm.cdl models/rnn.cdl models/gru.cdl models/birnn.cdl models/lstm2.cdl \
         models/bilstm.cdl models/charlm.cdl; do
    [ -f "$m" ] || continue
    b=$(basename "$m" .cdl); n=$((n + 1))
    ok=1
    for T in 28 512; do
        if ! "$CDLC" -D T=$T "$m" -o "$t/${b}_$T.c" >"$t/log" 2>&1; then
            echo "FAIL $b: cdlc -D T=$T: $(head -3 "$t/log")"; ok=0
        fi
    done
    if [ $ok = 1 ]; then
        s28=$(( $(stat -c %s "$t/${b}_28.c") + $(stat -c %s "$t/${b}_28.h") ))
        s512=$(( $(stat -c %s "$t/${b}_512.c") + $(stat -c %s "$t/${b}_512.h") ))
        l28=$(grep -c 'for (' "$t/${b}_28.c"); l512=$(grep -c 'for (' "$t/${b}_512.c")
        # |s512 - s28| * 10 <= min(s28, s512): within 10% of each other
        d=$(( s512 > s28 ? s512 - s28 : s28 - s512 )); lo=$(( s512 < s28 ? s512 : s28 ))
        if [ $(( d * 10 )) -gt $lo ]; then
            echo "FAIL $b: generated code grows with T: $s28 bytes at T=28, $s512 at T=512"; ok=0
        elif [ "$l512" -gt "$l28" ]; then
            echo "FAIL $b: $l28 C loops at T=28 but $l512 at T=512"; ok=0
        else
            echo "ok   $b: $s28 bytes at T=28, $s512 at T=512"
        fi
    fi
    [ $ok = 1 ] || fail=$((fail + 1))
done
echo "$n models, $fail grow with T"
[ $fail -eq 0 ] && [ $n -ge 1 ] && [ -f models/lstm.cdl ]
