#!/bin/bash
# cdlc --exe runs the C compiler without a shell (issue 11 item 2): any output name is
# taken literally (quotes, $(...), ;), $CC and $CDL_CFLAGS are split at blanks, and a
# quote or backslash in them is refused with a message rather than passed on.
# cdl-compare builds its program with the same $CC and $CDL_CFLAGS, split and refused
# by the same code (compiler/argv.c).
# Environment: B, CDLC, COMPARE (CC and CDL_CFLAGS as the suite sets them are kept).
set -u
B=${B:-build}
CDLC=$(realpath "${CDLC:-$B/cdlc}")
COMPARE=$(realpath "${COMPARE:-$B/cdl-compare}")
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
cd "$t" || exit 1
cat >m.cdl <<'EOF'
model m(B = 4) {
    input x: f32[B, 3]
    loss sum(relu(linear(x, 2)))
}
EOF
fail=0
check() { echo "FAIL: $*"; fail=$((fail + 1)); }

# names a shell would have taken apart
for name in "x'; touch INJECTED; echo '" "bob's prog" 'a $(touch INJECTED2) "b"' '-dash'; do
    if ! "$CDLC" m.cdl --exe -o "./$name" >log 2>&1; then check "--exe -o \"$name\": $(tail -2 log)"; continue; fi
    [ -x "./$name" ] || { check "no program named \"$name\""; continue; }
    "./$name" --help >/dev/null 2>&1 || check "\"$name\" does not run"
done
ls INJECTED* >/dev/null 2>&1 && check "a shell ran the injected command"

# CC and CDL_CFLAGS are split at blanks
CC="${CC:-cc} -DSPLIT_OK" CDL_CFLAGS="${CDL_CFLAGS:-} -O0   -DALSO=1" "$CDLC" m.cdl --exe -o split >log 2>&1 \
    && [ -x split ] || check "CC / CDL_CFLAGS with several words: $(tail -2 log)"
# ... and a word the compiler rejects fails the build with the command in the message
CDL_CFLAGS="${CDL_CFLAGS:-} --no-such-flag" "$CDLC" m.cdl --exe -o bad >log 2>&1 && check "a bad flag was accepted"
grep -q "compiling the generated program failed: .*--no-such-flag" log || check "no command in the message: $(tail -1 log)"
# quotes are not interpreted: refused, and no program is built
CDL_CFLAGS="-DNAME='a b'" "$CDLC" m.cdl --exe -o quoted >log 2>&1 && check "a quoted flag was accepted"
grep -q "CDL_CFLAGS: quotes and backslashes are not interpreted" log || check "quoted flag: $(tail -1 log)"
[ -e quoted ] && check "a program was built from a refused flag"
# a compiler that does not exist
CC=/nonexistent/cc "$CDLC" m.cdl --exe -o none >log 2>&1 && check "a missing compiler was accepted"
grep -q "cannot run /nonexistent/cc" log || check "missing compiler: $(tail -1 log)"

# cdl-compare: the same CDL_CFLAGS (make asan's sanitizer flags reach its program too)
CDL_CFLAGS="${CDL_CFLAGS:-} --no-such-flag" "$COMPARE" m.cdl --steps 1 --data random >log 2>&1 && check "cdl-compare ignored CDL_CFLAGS"
grep -q "compiling the comparison program failed" log || check "cdl-compare with a bad CDL_CFLAGS: $(tail -1 log)"
CDL_CFLAGS="${CDL_CFLAGS:-} -O0 -DALSO=1" "$COMPARE" m.cdl --steps 1 --data random >log 2>&1 || check "cdl-compare with CDL_CFLAGS: $(tail -2 log)"
# ... split as cdlc --exe splits it (the same code, compiler/argv.c): a quote is refused
CDL_CFLAGS="${CDL_CFLAGS:-} -DNAME='a b'" "$COMPARE" m.cdl --steps 1 --data random >log 2>&1 && check "cdl-compare accepted a quoted flag"
grep -q "^cdl-compare: CDL_CFLAGS: quotes and backslashes are not interpreted" log || check "cdl-compare, quoted flag: $(tail -1 log)"
grep -q "compiling the comparison program" log && check "cdl-compare ran the compiler with a refused flag"
CC="${CC:-cc} -DQ=\\x" "$COMPARE" m.cdl --steps 1 --data random >log 2>&1 && check "cdl-compare accepted a backslash in CC"
grep -q "^cdl-compare: CC: quotes and backslashes are not interpreted" log || check "cdl-compare, backslash in CC: $(tail -1 log)"

echo "exe_argv: $fail failures"
[ $fail -eq 0 ]
