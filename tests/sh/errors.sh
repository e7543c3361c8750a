#!/bin/bash
# errors.sh -- golden diagnostics.  Every tests/errors/*.cdl begins with the line
#   # expect: <first diagnostic line, without the leading file path>
# `$CDLC --check` must exit with status 1 and print exactly that line first.  Optional
# header lines that follow it:
#   # args: <more cdlc arguments, e.g. -D B=2.5>
#   # also: <a later line of the output, without the leading file path> (each must appear)
# (tests/errors/inc/ holds helper files that the cases import.)
root=$(cd "$(dirname "$0")/../.." && pwd)
CDLC=${CDLC:-build/cdlc}
case $CDLC in /*) ;; *) CDLC="$PWD/$CDLC" ;; esac
cd "$root" || exit 1
[ -x "$CDLC" ] || { echo "errors.sh: no compiler at $CDLC"; exit 1; }
pass=0; fail=0
for f in tests/errors/*.cdl; do
    want=$(head -1 "$f" | sed -n 's/^# expect: //p')
    if [ -z "$want" ]; then
        echo "FAIL $f: the first line must be '# expect: ...'"; fail=$((fail + 1)); continue
    fi
    args=$(sed -n '2,5s/^# args: //p' "$f")
    # shellcheck disable=SC2086  # args are words
    out=$(timeout 20 "$CDLC" --check $args "$f" 2>&1 >/dev/null); rc=$?
    lines=$(printf '%s\n' "$out" | sed -E 's/^[^: ]*:([0-9]+:[0-9]+: )/\1/')
    got=$(printf '%s\n' "$lines" | head -1)
    missing=$(sed -n '2,12s/^# also: //p' "$f" | while IFS= read -r l; do
        printf '%s\n' "$lines" | grep -qxF -- "$l" || printf '%s\n' "$l"; done)
    if [ $rc -ne 1 ]; then
        echo "FAIL $f: exit status $rc, want 1"; printf '%s\n' "$out" | head -5; fail=$((fail + 1))
    elif [ "$got" != "$want" ]; then
        echo "FAIL $f"; echo "  want: $want"; echo "  got:  $got"; fail=$((fail + 1))
    elif [ -n "$missing" ]; then
        echo "FAIL $f: missing lines:"; printf '  %s\n' "$missing"; echo "  output:"; printf '%s\n' "$out" | head -20
        fail=$((fail + 1))
    else
        pass=$((pass + 1))
    fi
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ] && [ $pass -gt 0 ]
