#!/bin/bash
# threads_bitwise.sh -- training gives the same bits at any thread count: every kernel
# that splits over the runtime's pool (direct convolutions, pooling, large elementwise
# ops and reductions) and every large GEMM (cut into blocks of C by its shape alone,
# runtime/blas.c) computes each element the same way whichever thread runs it.  A few
# steps of the MLP (its 64x784x256 product is over the GEMM split size), LeNet, the
# LSTM and the transformer, static (c) and tape builds, at --threads 1, 2 and 3: the saved
# checkpoints are equal byte for byte.  Environment: B, CDLC (tests/lib.sh).
. "$(dirname "$0")/../lib.sh"
san_cc
for m in mlp lenet lstm transformer; do
    defs=$(awk -v m="$m" '$1 == m { $1 = ""; print }' tests/zoo_sizes.txt)
    for target in c tape; do
        # shellcheck disable=SC2086  # $defs is a list of -D options
        if ! "$CDLC" --target=$target --exe $defs "models/$m.cdl" -o "$t/$m" >"$t/log" 2>&1; then
            bad "$m $target: cdlc --exe: $(tail -3 "$t/log")"; continue
        fi
        for n in 1 2 3; do
            if ! "$t/$m" train --data random:192 --batch 64 --epochs 1 --threads $n --quiet \
                 --save "$t/$m.$n.ckpt" >"$t/log" 2>&1; then
                bad "$m $target --threads $n: $(tail -3 "$t/log")"; continue 2
            fi
        done
        if cmp -s "$t/$m.1.ckpt" "$t/$m.2.ckpt" && cmp -s "$t/$m.1.ckpt" "$t/$m.3.ckpt"; then
            echo "ok   $m $target: the same checkpoint at 1, 2 and 3 threads"
        else
            bad "$m $target: the checkpoints differ between thread counts"
        fi
    done
done
[ $fail -eq 0 ] && echo "threads_bitwise: 8 builds, the same bits at 1, 2 and 3 threads"
