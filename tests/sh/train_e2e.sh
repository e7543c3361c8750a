#!/bin/bash
# End to end on real data: compile models/mlp.cdl and models/lenet.cdl, build them with
# the runtime, train a few hundred steps on Fashion-MNIST, and require the training loss
# to fall well below its start (ln 10 = 2.30 for 10 classes) and the test accuracy to
# beat chance by far.
set -u
B=${B:-build}
CDLC=${CDLC:-$B/cdlc}
t=$(mktemp -d); trap 'rm -rf $t' EXIT
fail=0
for b in mlp lenet; do
    "$CDLC" --exe models/$b.cdl -o "$t/$b" >"$t/log" 2>&1 || { echo "FAIL $b: cdlc --exe: $(tail -2 $t/log)"; fail=$((fail+1)); continue; }
    # 300 steps of 64: the first 19200 training images, 2000 test images
    "$t/$b" train --epochs 1 --limit 19200 --test-limit 2000 --optimizer adam:lr=0.001 --schedule const \
        --json --quiet >"$t/out" 2>"$t/err" || { echo "FAIL $b: train: $(tail -2 $t/err)"; fail=$((fail+1)); continue; }
    read -r loss acc < <(python3 -c "import json,sys; d=json.loads(open('$t/out').read().strip().splitlines()[-1]); print(d['train_loss'], d['test_accuracy'])")
    if python3 -c "import sys; sys.exit(0 if $loss < 1.0 and $acc > 0.6 else 1)"; then
        echo "ok   $b: 300 steps: mean train loss $loss (start 2.30), test accuracy $acc"
    else
        echo "FAIL $b: train loss $loss, test accuracy $acc after 300 steps"; fail=$((fail+1))
    fi
done
[ $fail -eq 0 ]
