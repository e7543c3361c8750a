#!/bin/bash
# Kernel backends (docs/design.md, Backends): the runtime in $CDLRT links with the
# libraries its build lists in libcdlrt.libs, reports the backend it was built with
# (oneDNN exactly when it links libdnnl), CDL_BACKEND=openblas turns a oneDNN build
# back to OpenBLAS, an unknown or unavailable CDL_BACKEND is reported and ignored, and
# the f32 GEMMs of every backend the build has agree with OpenBLAS's f64 ones on the
# bench shapes, every transpose, padded rows, beta 0 and 1 (tests/drivers/backend.c),
# and a oneDNN runtime loads OpenBLAS only when a product needs it: not at the start,
# not for a large f32 product, and (the f64 checks pass) when an f64 one comes.
set -u
B=${B:-build}
CDLRT=${CDLRT:-$B/libcdlrt.a}
CC=${CC:-cc}
t=$(mktemp -d); trap 'rm -rf $t' EXIT
fail=0
libs=$(cat "${CDLRT%.a}.libs") || { echo "FAIL: no ${CDLRT%.a}.libs next to $CDLRT"; exit 1; }
if ! $CC -std=c11 -O1 -Wall -Wextra -Werror ${CDL_CFLAGS:-} -Iruntime tests/drivers/backend.c "$CDLRT" $libs \
    -o "$t/backend" 2>"$t/log"; then
    echo "FAIL: driver does not link with '$libs': $(head -3 "$t/log")"; exit 1
fi
case " $libs " in *" -ldnnl "*) built=onednn ;; *) built=openblas ;; esac
nm "$CDLRT" 2>/dev/null | grep -q ' U dnnl_sgemm' && has=onednn || has=openblas
[ "$has" = "$built" ] || { echo "FAIL: libcdlrt.libs says $built, the library's symbols say $has"; fail=1; }

# run NAME EXPECTED [ENV=VALUE]: the driver under that environment reports EXPECTED
# and its GEMMs pass
run() {
    local what=$1 want=$2
    shift 2
    env -u CDL_BACKEND "$@" "$t/backend" >"$t/out" 2>"$t/err"
    local rc=$? got
    got=$(sed -n 's/^backend //p' "$t/out")
    if [ $rc -ne 0 ] || [ "$got" != "$want" ]; then
        echo "FAIL $what: backend '$got' (want $want), exit $rc: $(grep FAIL "$t/out" | head -3) $(head -2 "$t/err")"
        fail=1
    fi
}
run "default" "$built"
want="openblas mapped: 1 1"; [ "$built" = onednn ] && want="openblas mapped: 0 0"
grep -qx "$want" "$t/out" || { echo "FAIL: default run: '$(grep mapped "$t/out")' (want '$want')"; fail=1; }
[ -s "$t/err" ] && { echo "FAIL: the default run wrote to stderr: $(head -2 "$t/err")"; fail=1; }
run "CDL_BACKEND=openblas" openblas CDL_BACKEND=openblas
run "CDL_BACKEND=$built" "$built" CDL_BACKEND="$built"
run "CDL_BACKEND=mkl" "$built" CDL_BACKEND=mkl
grep -q "CDL_BACKEND=mkl" "$t/err" || { echo "FAIL: CDL_BACKEND=mkl was not reported"; fail=1; }
if [ "$built" = openblas ]; then
    run "CDL_BACKEND=onednn without oneDNN" openblas CDL_BACKEND=onednn
    grep -q "make BACKEND=onednn" "$t/err" || { echo "FAIL: CDL_BACKEND=onednn in an OpenBLAS build was not reported"; fail=1; }
fi
[ $fail = 0 ] && echo "backend $built: $(tail -1 "$t/out")"
exit $fail
