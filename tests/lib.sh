# tests/lib.sh -- the preamble the tests/sh scripts share (not itself a test: every file
# in tests/sh/ is run as one).  A script starts with
#     . "$(dirname "$0")/../lib.sh"
# and then has:
#   set -u, the repository root as the working directory;
#   B (build), CDLC, CDLRT, COMPARE, CC: the build's compiler, runtime, cdl-compare and
#     C compiler, as scripts/run-tests.sh sets them (defaults for a script run by hand);
#     the script fails at once if $CDLC is not there;
#   t: a temporary directory, removed on exit;
#   fail=0 and bad MSG: print "FAIL MSG" and count it (end with [ $fail -eq 0 ]);
#   skip MSG: print "skipped: MSG" and exit 0 (the test passes: what it needs is absent);
#   sanitized: true if the runtime was built with AddressSanitizer (make asan);
#     san_cc: then also export CC as the sanitizing clang, so that programs the script
#     (or cdlc --exe, cdl-compare) builds link with that runtime;
#   cc_rt ARGS...: $CC -std=c11 $CDL_CFLAGS -Iruntime ARGS..., linked with the runtime
#     and the libraries its build lists in libcdlrt.libs;
#   need_mpi: skip without MPI (fail if mpicc is installed but the runtime lacks it),
#     and set MPIRUN to run a command as two ranks.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
B=${B:-build}
CDLC=${CDLC:-$B/cdlc}
CDLRT=${CDLRT:-$B/libcdlrt.a}
COMPARE=${COMPARE:-$B/cdl-compare}
CC=${CC:-cc}
[ -x "$CDLC" ] || { echo "$(basename "$0"): no compiler at $CDLC"; exit 1; }
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
fail=0
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
skip() { echo "skipped: $*"; exit 0; }
sanitized() { nm "$CDLRT" 2>/dev/null | grep -q __asan_init; }
san_cc() { if sanitized; then export CC="clang -fsanitize=address,undefined -fno-omit-frame-pointer"; fi; }
cc_rt() { $CC -std=c11 ${CDL_CFLAGS:-} -Iruntime "$@" "$CDLRT" $(cat "${CDLRT%.a}.libs"); }
need_mpi() {
    if [ ! -e "$(dirname "$CDLRT")/libcdlrt_mpi.so" ]; then   # the MPI plugin (runtime/dist_int.h)
        command -v mpicc >/dev/null && { echo "FAIL: mpicc is installed but $CDLRT was built without MPI"; exit 1; }
        skip "no MPI (mpicc not found; scripts/deps.sh installs Open MPI)"
    fi
    # Under make asan: Open MPI leaks at MPI_Finalize, from plugins it has unloaded by
    # then (no names to suppress), so the ranks run without leak detection; the same
    # trainer code keeps it in the one-process runs.
    MPIRUN="env ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 mpirun --allow-run-as-root --oversubscribe -np 2"
}
