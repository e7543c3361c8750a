#!/bin/bash
# fuzz_cdlc.sh -- the compiler's fuzz target ($B/fuzz/fuzz_cdlc from tests/fuzz/fuzz_cdlc.c,
# built by make test) for FUZZ_TIME seconds (default 10), seeded with every model,
# example and error-corpus file and the inputs it once failed on (tests/fuzz/cdlc_cases/,
# each kept when its bug was fixed), with the CDL dictionary tests/fuzz/cdl.dict.  Fails on
# anything the fuzzer finds: a crash, an internal error, a sanitizer report, a leak, an
# input that runs over 10 s or a memory blow-up; the input is kept as
# $B/fuzz/{crash,leak,timeout,oom}-<sha1> (replay: $B/fuzz/fuzz_cdlc FILE, with
# CDL_FUZZ_VERBOSE=1 to see the diagnostics).  make fuzz runs it for $(FUZZ_TIME) with
# the corpus kept in FUZZ_CORPUS; here a temporary one.
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root" || exit 1
B=${B:-build}
f=$B/fuzz/fuzz_cdlc
[ -x "$f" ] || { echo "fuzz_cdlc.sh: no $f (make test builds it)"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
corpus=${FUZZ_CORPUS:-$tmp/corpus}
mkdir -p "$corpus" "$tmp/seeds"
for s in models/*.cdl examples/*.cdl tests/errors/*.cdl tests/fuzz/cdlc_cases/*; do
    [ -f "$s" ] && cp "$s" "$tmp/seeds/$(echo "$s" | tr / _)"
done
nseeds=$(ls "$tmp/seeds" | wc -l)
"$f" -dict=tests/fuzz/cdl.dict -max_total_time="${FUZZ_TIME:-10}" -timeout=10 -rss_limit_mb=2048 \
    -max_len=16384 -print_final_stats=1 -artifact_prefix="$B/fuzz/" "$corpus" "$tmp/seeds" >"$tmp/log" 2>&1
rc=$?
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$tmp/log")
if [ $rc -ne 0 ] || [ -z "$runs" ]; then
    echo "FAIL: fuzz_cdlc exited with status $rc"
    grep -E 'ERROR|error:|SUMMARY|artifact|Test unit written|internal error' "$tmp/log" | head -20
    tail -5 "$tmp/log"
    exit 1
fi
echo "fuzz_cdlc: $runs inputs in ${FUZZ_TIME:-10} s from $nseeds seeds, corpus $(ls "$corpus" | wc -l), nothing found"
