#!/bin/bash
# Convolution epilogue fusion (compiler/opt_fuse_conv.c) on the bench ResNet
# (bench/models/resnet.cdl): the static code's train step calls the fused kernels for
# every convolution (forward: bias, relu and the residual add in the store; backward:
# relu's mask and the residual gradient's add in bwd_x's store, and bwd_x with bwd_w and
# the bias gradient in one call, conv2d_bwd_xw) and no separate relu,
# add or relu_bwd of a convolution's result; the tape's code calls none of them; and the
# two builds train bit for bit alike (cdl-compare --tol 0, 3 steps, batch 8).
# `cdlc --dump-after=opt` of tests/models/fuse_small.cdl equals tests/golden/fuse_small.opt:
# every node the pass folded away is marked "; dead: fused into %N", other dead ones
# "; dead", and opt_pair_conv's pair (the second convolution's bwd_x_fused with its
# bwd_w and bias SUM: one conv2d_bwd_xw call) "; conv2d_bwd_xw: also %M, %S" and
# "; written by %N's conv2d_bwd_xw" (after an intended change: cdlc --dump-after=opt
# MODEL > the golden).
set -u
B=${B:-build}
CDLC=${CDLC:-$B/cdlc}
COMPARE=${COMPARE:-$B/cdl-compare}
m=bench/models/resnet.cdl
t=$(mktemp -d); trap 'rm -rf $t' EXIT
fail=0
g=tests/golden/fuse_small.opt
if ! "$CDLC" --dump-after=opt tests/models/fuse_small.cdl >"$t/opt" 2>&1; then
    echo "FAIL: cdlc --dump-after=opt: $(head -3 $t/opt)"; fail=$((fail + 1))
elif ! diff -u "$g" "$t/opt" >"$t/diff"; then
    echo "FAIL: the dump after opt differs from $g:"; head -20 "$t/diff"; fail=$((fail + 1))
elif [ "$(grep -c '; dead: fused into %[0-9]*$' "$g")" -lt 6 ]; then
    echo "FAIL: $g marks fewer than 6 fused-away nodes"; fail=$((fail + 1))
elif [ "$(grep -c '; conv2d_bwd_xw: also %[0-9]*, %[0-9]*$' "$g")" != 1 ] ||
     [ "$(grep -c "; written by %[0-9]*'s conv2d_bwd_xw$" "$g")" != 2 ]; then
    echo "FAIL: $g does not mark one conv2d_bwd_xw pair (bwd_x, bwd_w and bias)"; fail=$((fail + 1))
fi
"$CDLC" -D B=8 "$m" -o "$t/r.c" 2>"$t/log" || { echo "FAIL: cdlc: $(head -3 $t/log)"; exit 1; }
sed -n '/^static double resnet_fwd_bwd(/,/^}/p' "$t/r.c" >"$t/step.c"
[ -s "$t/step.c" ] || { echo "FAIL: no resnet_fwd_bwd in the generated C"; exit 1; }
count() { grep -c "$1(" "$t/step.c"; }
[ "$(count cdl_conv2d_fused_f32)" = 5 ] || { echo "FAIL: $(count cdl_conv2d_fused_f32) fused forward convolutions in the train step, want 5"; fail=$((fail + 1)); }
# the 4 block convolutions' fused bwd_x each go with their bwd_w (conv2d_bwd_xw, one pass
# over g); the stem's bwd_w (no bwd_x: x is the input) stays alone
[ "$(count cdl_conv2d_bwd_xw_f32)" = 4 ] || { echo "FAIL: $(count cdl_conv2d_bwd_xw_f32) conv2d_bwd_xw (fused bwd_x with bwd_w) in the train step, want 4"; fail=$((fail + 1)); }
[ "$(count cdl_conv2d_bwd_x_fused_f32)" = 0 ] || { echo "FAIL: $(count cdl_conv2d_bwd_x_fused_f32) bwd_x_fused without its bwd_w in the train step, want 0"; fail=$((fail + 1)); }
[ "$(count cdl_conv2d_bwd_w_f32)" = 1 ] || { echo "FAIL: $(count cdl_conv2d_bwd_w_f32) separate bwd_w in the train step, want 1 (the stem's)"; fail=$((fail + 1)); }
for k in cdl_conv2d_f32 cdl_conv2d_bwd_x_f32 cdl_relu_f32 cdl_add_f32; do
    [ "$(count $k)" = 0 ] || { echo "FAIL: the train step still calls $k"; fail=$((fail + 1)); }
done
# their bias gradients are summed in the same pass (reduce's bits): the one bias
# gradient left as a reduce over N, H, W is the stem's
nb=$(grep -c 'cdl_reduce_f32(4, .*, 0xdu, 0,' "$t/step.c")
[ "$nb" = 1 ] || { echo "FAIL: $nb bias gradients summed by reduce in the train step, want 1 (the stem's; conv2d_bwd_xw sums the others)"; fail=$((fail + 1)); }
[ "$(grep -c 'computed by conv2d_bwd_xw below' "$t/step.c")" = 4 ] || { echo "FAIL: want 4 bias gradients computed by conv2d_bwd_xw"; fail=$((fail + 1)); }
# one relu_bwd is left: the pooled gradient's, which no convolution makes
[ "$(count cdl_relu_bwd_f32)" = 1 ] || { echo "FAIL: $(count cdl_relu_bwd_f32) relu_bwd calls in the train step, want 1"; fail=$((fail + 1)); }
"$CDLC" --target=tape -D B=8 "$m" -o "$t/tape.c" 2>"$t/log" || { echo "FAIL: cdlc --target=tape: $(head -3 $t/log)"; exit 1; }
grep -q "fused" "$t/tape.c" && { echo "FAIL: the tape's code calls a fused kernel"; fail=$((fail + 1)); }
if ! timeout 300 "$COMPARE" "$m" -D B=8 --steps 3 --data random --tol 0 --json >"$t/cmp.json" 2>"$t/log"; then
    echo "FAIL: static and tape differ: $(tail -3 $t/log) $(head -c 400 $t/cmp.json)"; fail=$((fail + 1))
elif ! python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["max_loss_rel_diff"] == 0 and d["max_grad_rel_diff"] == 0, d
assert len(d["grad_rel_diff"]) == 12, d["grad_rel_diff"]' "$t/cmp.json"; then
    echo "FAIL: static and tape are not bitwise equal: $(head -c 400 $t/cmp.json)"; fail=$((fail + 1))
fi
# LeNet (conv -> relu -> maxpool twice): relu_bwd folds into the pool's backward
# (maxpool2d_bwd_relu); the two relu_bwd left are the linear layers'.  Bits: the models'
# static_vs_tape.sh and test_rt_fuse_conv's test_pool_bwd_relu.
"$CDLC" -D B=8 bench/models/lenet.cdl -o "$t/l.c" 2>"$t/log" || { echo "FAIL: cdlc lenet: $(head -3 $t/log)"; exit 1; }
sed -n '/^static double lenet_fwd_bwd(/,/^}/p' "$t/l.c" >"$t/step.c"
[ "$(count cdl_maxpool2d_bwd_relu_f32)" = 2 ] || { echo "FAIL: $(count cdl_maxpool2d_bwd_relu_f32) maxpool2d_bwd_relu in LeNet's train step, want 2"; fail=$((fail + 1)); }
[ "$(count cdl_relu_bwd_f32)" = 2 ] || { echo "FAIL: $(count cdl_relu_bwd_f32) relu_bwd in LeNet's train step, want 2"; fail=$((fail + 1)); }
[ "$(count cdl_maxpool2d_bwd_f32)" = 0 ] || { echo "FAIL: LeNet's train step still calls maxpool2d_bwd"; fail=$((fail + 1)); }
[ $fail = 0 ] && echo "ok: the bench ResNet's train step runs 5 fused convolutions and 4 fused bwd_x with their bwd_w, bit for bit the tape's; LeNet's pools' backward take relu_bwd"
exit $fail
