#!/bin/bash
# run-tests: alone -- it builds two programs at a time (xargs -P 2)
# Every construct cdlc --check accepts builds in every target (issue 10 item 3): each
# .cdl file of models/, tests/ (the error corpus included: the files it accepts) and
# examples/ that passes --check is built with --exe twice, static C and --target=tape,
# and the programs start (--help).  The compiles use -O0 (appended to CDL_CFLAGS): the
# test is about whether the C compiles and links, and -O0 changes neither.
# Environment: B, CDLC, CDL_CFLAGS (the ASan suite's sanitizer flags are kept).
set -u
B=${B:-build}
CDLC=$(realpath "${CDLC:-$B/cdlc}")
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
export CDLC t CDL_CFLAGS="${CDL_CFLAGS:-} -O0"

one() {
    local f=$1 k=$2 tgt
    "$CDLC" --check "$f" >/dev/null 2>&1 || { echo "rejected $f"; return 0; }
    for tgt in c tape; do
        if ! "$CDLC" --target=$tgt "$f" --exe -o "$t/p$k.$tgt" >"$t/log$k" 2>&1; then
            echo "FAIL $f: --target=$tgt --exe: $(grep -m3 -E 'error|failed' "$t/log$k")"; return 0
        fi
        "$t/p$k.$tgt" --help >/dev/null 2>&1 || { echo "FAIL $f: the $tgt program does not start"; return 0; }
    done
    echo "built $f"
}
export -f one
{ ls models/*.cdl; find tests examples -name '*.cdl' | sort; } | awk '{print $0, NR}' |
    xargs -P 2 -L 1 bash -c 'one "$0" "$1"' >"$t/results"
grep -v '^rejected' "$t/results"
built=$(grep -c '^built' "$t/results"); fail=$(grep -c '^FAIL' "$t/results"); rej=$(grep -c '^rejected' "$t/results")
echo "$built accepted models built static and tape, $fail failed ($rej files rejected by --check)"
[ "$fail" -eq 0 ] && [ "$built" -ge 13 ]
