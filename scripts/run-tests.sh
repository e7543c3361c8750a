#!/bin/bash
# Run every test program (build/tests/test_*, cmocka) and every tests/sh/*.sh script,
# then print the totals as the last line: "N passed, N failed".
# Arguments: names (test_rt_core, entries.sh, entries) run only those tests.
# Environment: B = build directory (build or build/asan); JOBS = tests run at a time (2).
#
# Most tests are one single-threaded compile-and-run after another, so two of them run at
# a time (CI has two cores).  Each test's output is buffered and its block printed in the
# fixed order (programs, then scripts, by name) as soon as it and every test before it are
# done, with its own wall time.  A script whose text has a line starting with
# "# run-tests: alone" runs with nothing beside it: it uses both cores itself (two MPI
# ranks, `--jobs 2`, xargs -P 2) or measures time.  Today: build_all, codegen_equiv,
# compile_scaling, deploy, difftest, gradcheck_ops, mpi_equiv and mpi_fail.
B=${B:-build}
JOBS=${JOBS:-2}
export B CDLC="$B/cdlc" CDLRT="$B/libcdlrt.a"
export CMOCKA_MESSAGE_OUTPUT=stdout
pass=0; fail=0; failed_names=""
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
# the IDX cache (runtime/data_stream.c) of this run, not the user's ~/.cache/cdl
export CDL_CACHE_DIR="$out/cdl-cache"
# seconds since t0 (one decimal), for the per-test times on each line
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

# chosen PATH: no arguments, or PATH's name (with or without .sh) is one of them
chosen() {
    local a n; n=$(basename "$1")
    [ ${#args[@]} -eq 0 ] && return 0
    for a in "${args[@]}"; do [ "$a" = "$n" ] || [ "$a.sh" = "$n" ] && return 0; done
    return 1
}
args=("$@")
tests=()
for t in "$B"/tests/test_*; do [ -x "$t" ] && [ -f "$t" ] && chosen "$t" && tests+=("$t"); done
for s in tests/sh/*.sh; do [ -f "$s" ] && chosen "$s" && tests+=("$s"); done

# run_one I PATH: run test I, its output to $out/I.log; then write "rc passed failed time"
# to $out/I.res (renamed into place, so a .res file is always complete).
run_one() {
    local i=$1 t=$2 t0 rc p f
    t0=$(now)
    case $t in
    *.sh) bash "$t" >"$out/$i.log" 2>&1; rc=$?
          if [ $rc -eq 0 ]; then p=1 f=0; else p=0 f=1; fi ;;
    *)    "$t" >"$out/$i.log" 2>&1; rc=$?
          p=$(grep -E '^\[  PASSED  \] [0-9]+ test' "$out/$i.log" | grep -oE '[0-9]+' | head -1)
          f=$(grep -E '^\[  FAILED  \] [0-9]+ test' "$out/$i.log" | grep -oE '[0-9]+' | head -1)
          p=${p:-0}; f=${f:-0}
          if [ $rc -ne 0 ] && [ "$f" = 0 ]; then f=1; fi ;;   # crashed or exited badly
    esac
    echo "$rc $p $f $(secs "$t0")" >"$out/$i.tmp" && mv "$out/$i.tmp" "$out/$i.res"
}

# report: print, in order, the block of every finished test not printed yet.
next=0
report() {
    local rc p f time name
    while [ $next -lt ${#tests[@]} ] && [ -f "$out/$next.res" ]; do
        read -r rc p f time <"$out/$next.res"
        name=$(basename "${tests[$next]}")
        pass=$((pass + p)); fail=$((fail + f))
        if [ "$f" != 0 ]; then
            failed_names="$failed_names $name"
            echo "---- $name (exit $rc, $time)"; tail -40 "$out/$next.log"
        elif [[ $name == *.sh ]]; then
            echo "ok   $name [$time]: $(tail -1 "$out/$next.log")"
        else
            echo "ok   $name ($p, $time)"
        fi
        next=$((next + 1))
    done
}

running=0
for i in "${!tests[@]}"; do
    t=${tests[$i]}
    alone=0
    [[ $t == *.sh ]] && grep -q '^# run-tests: alone' "$t" && alone=1
    # wait for a free slot (for every slot, before a test that runs alone)
    while [ $running -gt 0 ] && { [ $alone = 1 ] || [ $running -ge "$JOBS" ]; }; do
        wait -n; running=$((running - 1)); report
    done
    if [ $alone = 1 ]; then
        run_one "$i" "$t"; report
    else
        run_one "$i" "$t" & running=$((running + 1))
    fi
done
wait; report
[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ] && [ $pass -gt 0 ]
