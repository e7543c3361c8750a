#!/bin/bash
# Run every test program (build/tests/test_*, cmocka) and every tests/sh/*.sh script,
# then print the totals as the last line: "N passed, N failed".
# Arguments: names (test_rt_core, entries.sh, entries) run only those tests.
# Environment: B = build directory (build or build/asan); JOBS = tests run at a time (2).
#
# Most tests are one single-threaded compile-and-run after another, so two of them run at
# a time (CI has two cores).  Each test's output is buffered and its block printed as soon
# as it is done (so in the order tests finish, which the start order below decides), with
# how many are done of how many, its own wall time and CPU time (user + system of
# everything it ran); a failing test prints the end of its output there and its name
# again in the "failed:" line at the end.
# A script whose text has a line starting with "# run-tests: alone" runs with nothing
# beside it: it uses both cores itself (two MPI ranks, `--jobs 2`, xargs -P 2) or measures
# time.  Today: build_all, codegen_equiv, compile_scaling, deploy, difftest, gradcheck_ops,
# mpi_equiv and mpi_fail.
# Start order (not the printed order): the "alone" scripts first, one after the other, then
# the others longest first (tests/times.txt: each test's wall seconds on the idle machine;
# a test it does not list counts as 30 s, a program as 1 s), so that no slot idles while a
# long test finishes last or waits for a free machine.  Each run writes its own times to
# $B/test-times.txt, in the format of tests/times.txt, to copy there when the order is stale.
B=${B:-build}
JOBS=${JOBS:-2}
export B CDLC="$B/cdlc" CDLRT="$B/libcdlrt.a"
export CMOCKA_MESSAGE_OUTPUT=stdout
pass=0; fail=0; failed_names=""
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
t_start=$(date +%s.%N)
# the IDX cache (runtime/data_stream.c) of this run, not the user's ~/.cache/cdl
export CDL_CACHE_DIR="$out/cdl-cache"
# The programs the tests build (cdlc --exe, cdl-compare, the scripts' $CC) link with gold
# where it works: libcdlrt.a's objects carry -g, and gold links a model's program in about
# 0.14 s of CPU where bfd ld takes 0.35 s, several hundred times a run (abi.sh 28% and
# entries.sh 23% less CPU).  Only when CC is not set: make asan sets its clang.
if [ -z "${CC:-}" ] && printf 'int main(void) { return 0; }\n' | cc -fuse-ld=gold -x c - -o "$out/gold" 2>/dev/null; then
    export CC="cc -fuse-ld=gold"
fi
# python3 resolved once: through a pyenv shim on PATH each call costs about 0.6 s of CPU
# (the shim's bash finds the version), the interpreter itself 0.05 s, and the scripts call
# python3 dozens of times (static_vs_tape.sh once a model).  The same interpreter, linked
# into $out/bin.
if py=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) && [ -x "$py" ] &&
   mkdir -p "$out/bin" && ln -s "$py" "$out/bin/python3"; then
    export PATH="$out/bin:$PATH"
fi
# seconds since t0 (one decimal), for the per-test times on each line
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
# cpu FILE: the children's seconds (user + system) in FILE, the output of bash's `times`
cpu() { awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] }
                       printf "%.1f", s }' "$1"; }

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

# run_one I PATH: run test I, its output to $out/I.log; then write "rc passed failed wall
# cpu" to $out/I.res (renamed into place, so a .res file is always complete).  Run it in a
# subshell of its own (&): `times` then counts the CPU time of this test's processes only.
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
    times >"$out/$i.times"   # line 2: the children's user and system time, "1m2.5s 0m0.3s"
    echo "$rc $p $f $(secs "$t0" | cut -d' ' -f1) $(cpu "$out/$i.times")" >"$out/$i.tmp" &&
        mv "$out/$i.tmp" "$out/$i.res"
}

# report: print the block of every finished test not printed yet.
done_n=0; cpu_sum=0; printed=()
report() {
    local i rc p f wall cpu name
    for i in "${started[@]}"; do
        [ -z "${printed[i]:-}" ] && [ -f "$out/$i.res" ] || continue
        printed[i]=1; done_n=$((done_n + 1))
        read -r rc p f wall cpu <"$out/$i.res"
        name=$(basename "${tests[$i]}")
        pass=$((pass + p)); fail=$((fail + f))
        echo "$name $wall $cpu" >>"$out/times"
        cpu_sum=$(awk -v a="$cpu_sum" -v b="$cpu" 'BEGIN { print a + b }')
        local n="[$done_n/${#tests[@]}]"
        if [ "$f" != 0 ]; then
            failed_names="$failed_names $name"
            echo "---- $n $name (exit $rc, $wall s, cpu $cpu s)"; tail -40 "$out/$i.log"
        elif [[ $name == *.sh ]]; then
            echo "ok   $n $name [$wall s, cpu $cpu s]: $(tail -1 "$out/$i.log")"
        else
            echo "ok   $n $name ($p, $wall s, cpu $cpu s)"
        fi
    done
}

# the start order: "alone" scripts first, then the others by tests/times.txt, longest first
declare -A est
if [ -f tests/times.txt ]; then
    while read -r n w _; do [[ -z $n || $n == \#* ]] || est[$n]=$w; done <tests/times.txt
fi
need=()   # slots a test takes: JOBS for an "alone" script, else 1
order=$(for i in "${!tests[@]}"; do
            t=${tests[$i]} n=$(basename "${tests[$i]}") a=0 e=1
            [[ $t == *.sh ]] && { e=30; grep -q '^# run-tests: alone' "$t" && a=1; }
            echo "$a ${est[$n]:-$e} $i"
        done | sort -k1,1nr -k2,2gr -k3,3n | awk '{ print $1, $3 }')
used=0; running=(); started=()
while read -r -u 3 a i; do
    need[$i]=1; [ "$a" = 1 ] && need[$i]=$JOBS
    # wait until the slots it needs are free (all of them, for an "alone" script)
    while [ $used -gt 0 ] && [ $((used + need[i])) -gt "$JOBS" ]; do
        wait -n
        left=()
        for j in "${running[@]}"; do
            if [ -f "$out/$j.res" ]; then used=$((used - need[j])); else left+=("$j"); fi
        done
        running=("${left[@]}")
        report
    done
    run_one "$i" "${tests[$i]}" &
    running+=("$i"); started+=("$i"); used=$((used + need[i]))
done 3<<<"$order"
wait; report
cp "$out/times" "$B/test-times.txt" 2>/dev/null
echo "wall $(secs "$t_start"), CPU $cpu_sum s (the tests' sum)"
[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ] && [ $pass -gt 0 ]
