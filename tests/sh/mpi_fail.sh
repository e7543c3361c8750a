#!/bin/bash
# run-tests: alone -- two MPI ranks, and it times how fast a failing job ends
# mpi_fail.sh -- a failing rank ends the whole data-parallel job (issue 16 item 4):
#   killed      rank 1 of `mpirun -np 2 mlp train` is killed (SIGKILL) mid-run: the job
#               ends within 10 s, non-zero, with a message naming rank 1, and the last
#               checkpoint rank 0 wrote still loads (eval in one process);
#   bad data    one row's label is outside the classes: the rank whose shard holds it
#               reports the kernel's cause, every rank stops at the same step, exit 1;
#   one rank    results come from rank 0 only (one --json line, one banner).
# Skipped only where mpicc is missing (scripts/deps.sh installs Open MPI).
. "$(dirname "$0")/../lib.sh"
need_mpi
"$CDLC" models/mlp.cdl --exe -o "$t/mlp" >"$t/log" 2>&1 || { echo "FAIL cdlc mlp: $(tail -3 "$t/log")"; exit 1; }

# killed: many short epochs, each saved; kill rank 1 once a checkpoint exists
$MPIRUN "$t/mlp" train --epochs 10000 --limit 512 --test-limit 64 --threads 1 --quiet --save "$t/ck" \
    >"$t/out" 2>"$t/err" &
job=$!
for _ in $(seq 600); do [ -f "$t/ck" ] && break; sleep 0.1; done
r1=""
for p in $(pgrep -f "$t/mlp train"); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && r1=$p
done
if [ ! -f "$t/ck" ] || [ -z "$r1" ]; then
    bad "killed: no checkpoint or no rank 1 after 60 s: $(tail -2 "$t/err")"; kill "$job" 2>/dev/null
else
    kill -9 "$r1"
    t0=$(date +%s.%N)
    for _ in $(seq 100); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$job" 2>/dev/null; then
        bad "killed: the job still runs 10 s after rank 1 was killed"; kill "$job"
    fi
    wait "$job"; rc=$?
    secs=$(echo "$(date +%s.%N) - $t0" | bc)
    [ $rc -ne 0 ] || bad "killed: mpirun exits 0"
    grep -q "rank 1" "$t/err" || bad "killed: no message naming rank 1: $(tail -3 "$t/err")"
    "$t/mlp" eval --load "$t/ck" --test-limit 64 --quiet >"$t/ev" 2>&1 || bad "killed: the last checkpoint does not load: $(tail -1 "$t/ev")"
    echo "killed rank 1: the job ended in ${secs%???????} s, exit $rc"
fi

# bad data on one rank: a label outside [0, 2) in one row
"$CDLC" --exe -D B=8 tests/models/ce2.cdl -o "$t/ce2" >"$t/log" 2>&1 || { echo "FAIL cdlc ce2: $(tail -3 "$t/log")"; exit 1; }
python3 -c "
with open('$t/bad.csv', 'w') as f:
    f.write('a,b,y\n')
    for i in range(64): f.write('%.3f,%.3f,%d\n' % (i / 64, 1 - i / 64, 7 if i == 37 else i % 2))
"
for seed in 1 2 3; do
    timeout 60 $MPIRUN "$t/ce2" train --data "$t/bad.csv" --epochs 1 --batch 16 --seed $seed --quiet >"$t/out" 2>"$t/err"
    rc=$?
    [ $rc -eq 1 ] || bad "bad data (seed $seed): exit status $rc, want 1: $(tail -2 "$t/err")"
    grep -qE "cross_entropy: label 7 at row [0-9]+ is outside \[0, 2\)" "$t/err" ||
        bad "bad data (seed $seed): the cause is not printed: $(tail -2 "$t/err")"
    n=$(grep -c "label 7" "$t/err")
    [ "$n" = 1 ] || bad "bad data (seed $seed): the cause printed $n times, want once"
done
grep -h "label 7" "$t/err"

# results from rank 0 only
$MPIRUN "$t/mlp" train --epochs 1 --limit 256 --test-limit 64 --threads 1 --json >"$t/out" 2>"$t/err" ||
    bad "json run failed: $(tail -2 "$t/err")"
[ "$(grep -c '^{' "$t/out")" = 1 ] || bad "--json: $(grep -c '^{' "$t/out") lines, want 1 (rank 0's)"
[ "$(grep -c '^model mlp' "$t/err")" = 1 ] || bad "banner: $(grep -c '^model mlp' "$t/err") times, want 1"
grep -q '"ranks":2' "$t/out" || bad "--json does not say ranks 2: $(cut -c1-200 "$t/out")"

[ $fail -eq 0 ] || { echo "$fail failed"; exit 1; }
echo "mpi_fail: a killed rank ends the job (named, checkpoint loads); bad data on one rank stops all with its cause; output from rank 0 only"
