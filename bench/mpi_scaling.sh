#!/bin/bash
# bench/mpi_scaling.sh -- data-parallel scaling on this machine (issue 16 item 6):
# training throughput of 1 process x 2 threads against 2 processes (mpirun -np 2) x 1
# thread for the MLP, LeNet and the ResNet on Fashion-MNIST, and the time of the
# gradient all-reduce per step against the step's compute.  Prints a markdown table.
#
#   B=build bench/mpi_scaling.sh
#
# Each configuration runs MPI_ROUNDS times (default 3), the two configurations of a
# model alternating; the table shows the best round (the machine is shared: the best
# run is the one least disturbed).  Per step: "all-reduce" is rank 0's time inside
# cdl_dist_sum (the gradient slab, and for the ResNet batch norm's statistics), which
# starts after the step's agreement, so waiting for the slower rank is counted in
# "agreement", not in it; bytes are the reals summed per step.
set -u
cd "$(dirname "$0")/.."
B=${B:-build}; R=${MPI_ROUNDS:-3}
[ -e "$B/libcdlrt_mpi.so" ] || { echo "the runtime was built without MPI (no mpicc)"; exit 1; }
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
MPIRUN="mpirun --allow-run-as-root --oversubscribe -np 2"
echo "| model | examples | 1 proc x 2 threads (ex/s) | 2 procs x 1 thread (ex/s) | 2 procs / 1 proc | all-reduce / step | agreement / step | step (2 procs) | bytes / step |"
echo "|---|---|---|---|---|---|---|---|---|"
for spec in mlp:16384 lenet:4096 resnet:1024; do
    m=${spec%%:*}; n=${spec#*:}
    "$B/cdlc" "models/$m.cdl" --exe -o "$t/$m" >/dev/null 2>&1 || { echo "| $m | build failed |"; continue; }
    A="train --epochs 1 --limit $n --test-limit 64 --quiet --json --optimizer sgd:lr=0.01"
    best1=0; best2=0; line2=""
    for r in $(seq "$R"); do
        for cfg in 1 2; do
            if [ $cfg = 1 ]; then out=$("$t/$m" $A --threads 2 2>/dev/null | tail -1)
            else out=$($MPIRUN "$t/$m" $A --threads 1 2>/dev/null | tail -1); fi
            eps=$(echo "$out" | python3 -c "import json,sys; j=json.load(sys.stdin); print(j['steps']*64/j['seconds'])" 2>/dev/null) || continue
            if [ $cfg = 1 ]; then python3 -c "import sys; sys.exit(not $eps > $best1)" && best1=$eps
            else python3 -c "import sys; sys.exit(not $eps > $best2)" && { best2=$eps; line2=$out; }; fi
        done
    done
    echo "$line2" | python3 -c "
import json, sys
j = json.load(sys.stdin); s = j['steps']
b1, b2 = $best1, $best2
print('| %s | %d | %.0f | %.0f | %.2f | %.2f ms | %.2f ms | %.1f ms | %.2f MB |' % ('$m', $n, b1, b2, b2 / b1,
      1e3 * j['allreduce_seconds'] / s, 1e3 * j['agree_seconds'] / s, 1e3 * j['seconds'] / s,
      j['allreduce_bytes'] / s / 1e6))" 2>/dev/null || echo "| $m | run failed |"
done
