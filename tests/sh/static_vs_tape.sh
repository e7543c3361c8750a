#!/bin/bash
# Static graph vs dynamic tape, for every model in models/:
#  1. the tape build (cdlc --target=tape) compiles with -std=c11 -Wall -Wextra -Werror
#     (cdl-compare builds it, with the static build, under those warnings);
#  2. cdl-compare: 10 training steps of both builds on the same Fashion-MNIST batches
#     (random inputs where the model does not take images) agree on every loss and every
#     parameter gradient to 1e-5 relative (scale-aware: |a - b| <= 1e-5 max|.| per
#     tensor), and on the train-mode outputs (same dropout masks, same noise);
#  3. the tape's backward passes the trainer's gradcheck (central differences) in an f64
#     build of the tape target at batch 4.
# Models listed in tests/zoo_sizes.txt run at the smaller sizes given there.
# Environment: B (build directory), CDLC, COMPARE; CMP_ARGS adds options to cdl-compare.
. "$(dirname "$0")/../lib.sh"
CMP_ARGS=${CMP_ARGS:-}
LIB=$CDLRT
# a sanitized runtime needs the generated programs built the same way
san_cc
if sanitized; then SLOW=1; else SLOW=0; fi
CCMD=$CC
n=0
for m in models/*.cdl; do
    b=$(basename "$m" .cdl); n=$((n + 1))
    defs=$(awk -v m="$b" '$1 == m { $1 = ""; print }' tests/zoo_sizes.txt)   # smaller sizes
    # 1 and 2. static vs tape over 10 steps, both builds compiled with -Werror
    extra="$defs"
    [ $SLOW = 1 ] && extra="$extra -D B=16"
    if ! CDL_CFLAGS="${CDL_CFLAGS:-} -Wall -Wextra -Werror" \
         timeout 900 "$COMPARE" "$m" $extra --steps 10 --json --tol 1e-5 $CMP_ARGS >"$t/cmp.json" 2>"$t/log"; then
        grep -q "compiling the comparison program failed" "$t/log" &&
            { echo "FAIL $b: static and tape builds do not compile cleanly: $(head -5 $t/log)"; fail=$((fail + 1)); continue; }
        echo "FAIL $b: static and tape differ: $(tail -3 $t/log) $(head -c 600 $t/cmp.json)"; fail=$((fail + 1)); continue
    fi
    if ! summary=$(python3 - "$t/cmp.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
assert len(d["static_loss"]) == 10 and len(d["tape_loss"]) == 10
for a, b in zip(d["static_loss"], d["tape_loss"]):
    assert abs(a - b) <= 1e-5 * max(abs(a), abs(b)) + 1e-12, (a, b)
assert d["max_loss_rel_diff"] <= 1e-5 and d["max_grad_rel_diff"] <= 1e-5, d
assert d["max_output_rel_diff"] <= 1e-5, "outputs differ: dropout masks or noise"
assert all(v <= 1e-5 for v in d["grad_rel_diff"].values()) and len(d["grad_rel_diff"]) > 0
assert d["tape_heap_allocs_per_step"] == 0 and d["static_heap_allocs_per_step"] == 0
print("loss %.2g grad %.2g out %.2g, static %.2f ms, tape %.2f ms per step (%s)" % (
    d["max_loss_rel_diff"], d["max_grad_rel_diff"], d["max_output_rel_diff"],
    d["static_ms_per_step"], d["tape_ms_per_step"], d["data"]))
EOF
    ); then
        echo "FAIL $b: comparison out of tolerance: $(head -c 800 $t/cmp.json)"; fail=$((fail + 1)); continue
    fi
    # 3. gradient check of the tape's backward in f64
    if ! "$CDLC" --target=tape --precision=f64 --main -D B=4 $defs "$m" -o "$t/${b}64.c" >"$t/log" 2>&1 ||
       ! $CCMD -std=c11 -O2 -Iruntime "$t/${b}64.c" "$LIB" -o "$t/${b}64" $(cat "${LIB%.a}.libs") >>"$t/log" 2>&1; then
        echo "FAIL $b: f64 tape build: $(head -5 $t/log)"; fail=$((fail + 1)); continue
    fi
    if ! timeout 600 "$t/${b}64" gradcheck --threads 1 >"$t/log" 2>&1; then
        echo "FAIL $b: tape gradcheck: $(tail -3 $t/log)"; fail=$((fail + 1)); continue
    fi
    echo "ok   $b: $summary; gradcheck $(tail -1 $t/log | cut -c1-60)"
done
echo "$n models, $fail failures"
[ $fail -eq 0 ] && [ $n -ge 1 ]
