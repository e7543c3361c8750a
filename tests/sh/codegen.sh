#!/bin/bash
# The generated C: every model builds warning-free with gcc and clang (-Werror), in f32
# and f64; the MLP's code is readable (named parameters, a shape comment on every
# buffer) and its training step allocates nothing (counted through the runtime's
# allocation hook); --dump-after=autodiff shows backward nodes with source locations.
set -u
B=${B:-build}
CDLC=${CDLC:-$B/cdlc}
CC=${CC:-cc}
t=$(mktemp -d); trap 'rm -rf $t' EXIT
fail=0
for m in models/*.cdl; do
    b=$(basename $m .cdl)
    for p in f32 f64; do
        "$CDLC" --precision=$p "$m" -o "$t/$b$p.c" 2>"$t/log" || { echo "FAIL $b $p: $(head -2 $t/log)"; fail=$((fail+1)); continue; }
        for c in gcc clang; do
            command -v $c >/dev/null || continue
            $c -std=c11 -O1 -Wall -Wextra -Werror -Iruntime -c "$t/$b$p.c" -o "$t/x.o" 2>"$t/log" \
                || { echo "FAIL $b $p: $c: $(head -3 $t/log)"; fail=$((fail+1)); }
        done
    done
done
# readability of mlp.c: every buffer pointer carries a shape comment; parameters by name
"$CDLC" models/mlp.cdl -o "$t/mlp.c"
nall=$(grep -cE '^\s+(float|int32_t) \*[a-z_0-9]+ = ' "$t/mlp.c")
[ "$nall" -gt 20 ] || { echo "FAIL: only $nall buffer declarations found in mlp.c"; fail=$((fail+1)); }
nobuf=$(grep -E '^\s+(float|int32_t) \*[a-z_0-9]+ = ' "$t/mlp.c" | grep -vc '/\* (' || true)
[ "$nobuf" = 0 ] || { echo "FAIL: $nobuf buffer declarations without a shape comment"; fail=$((fail+1)); }
grep -q '"linear1.weight"' "$t/mlp.c" && grep -q 'linear1_weight_' "$t/mlp.c" || { echo "FAIL: parameters are not named in mlp.c"; fail=$((fail+1)); }
# gradients are named after what they differentiate; shared storage says so; eval mode
# spends no code on dropout; no dead (void) lines or "- -1" (issue 12 item 6)
for w in d_logits_ d_linear3_weight_ "in place of linear_"; do
    grep -q "$w" "$t/mlp.c" || { echo "FAIL: mlp.c lacks '$w'"; fail=$((fail+1)); }
done
grep -qE 'd_(matmul|relu_bwd|sum)_[0-9]+ = ' "$t/mlp.c" && { echo "FAIL: mlp.c names a gradient after its op: $(grep -m1 -oE 'd_(matmul|relu_bwd|sum)_[0-9]+ = ' $t/mlp.c)"; fail=$((fail+1)); }
sed -n '/^static void mlp_fwd_eval/,/^}/p' "$t/mlp.c" | grep -qE 'cdl_copy|cdl_dropout|dropout_[0-9]' && { echo "FAIL: eval mode still spends code on dropout"; fail=$((fail+1)); }
grep -q '(void)A\|(void)P\|(void)s_' "$t/mlp.c" && { echo "FAIL: dead (void) lines in mlp.c"; fail=$((fail+1)); }
"$CDLC" models/birnn.cdl -o "$t/birnn.c"
grep -q -- '- -1' "$t/birnn.c" && { echo "FAIL: birnn.c has '- -1'"; fail=$((fail+1)); }
grep -q 's_d_hb_[0-9]* = ' "$t/birnn.c" || { echo "FAIL: birnn.c's backward loop does not name its carried gradient d_hb"; fail=$((fail+1)); }
grep -q '(void)s_' "$t/birnn.c" && { echo "FAIL: dead (void) lines in birnn.c's loops"; fail=$((fail+1)); }
# the parts of a fan-out's gradient are named after the value (the VAE's mu and
# logvar feed the KL term and the sampling; h feeds mu and logvar); a forward value a
# gradient rule recomputes is not called a gradient (charlm's reshape of hs)
"$CDLC" models/vae.cdl -o "$t/vae.c"
for w in "d_mu_[0-9]* = .*loss_bwd" "d_logvar_[0-9]* = .*loss_bwd_b" "d_h_[0-9]* = .*matmul"; do
    grep -q "$w" "$t/vae.c" || { echo "FAIL: vae.c lacks '$w'"; fail=$((fail+1)); }
done
grep -qE 'd_(loss_bwd|loss_bwd_b|matmul)_[0-9]+ = ' "$t/vae.c" && { echo "FAIL: vae.c names a gradient part after its op: $(grep -m1 -oE 'd_(loss_bwd|loss_bwd_b|matmul)_[0-9]+ = ' $t/vae.c)"; fail=$((fail+1)); }
"$CDLC" models/charlm.cdl -o "$t/charlm.c"
grep -qE 'float \*d_[a-z_0-9]+ = hs_[0-9]+;' "$t/charlm.c" && { echo "FAIL: charlm.c calls a forward value a gradient: $(grep -m1 -oE 'float \*d_[a-z_0-9]+ = hs_[0-9]+;' $t/charlm.c)"; fail=$((fail+1)); }
# loop bodies read captured values (weights, inputs) by their own names, in both targets
"$CDLC" models/lstm.cdl -o "$t/lstm.c" && "$CDLC" --target=tape models/lstm.cdl -o "$t/lstm_tape.c"
grep -q 'loop_capture' "$t/lstm.c" "$t/lstm_tape.c" && { echo "FAIL: a loop body re-declares a captured value: $(grep -m1 loop_capture $t/lstm.c $t/lstm_tape.c)"; fail=$((fail+1)); }
grep -q 'cell_weight_hh_[0-9]*, 128, 0, s_d_h_' "$t/lstm.c" || { echo "FAIL: lstm.c's backward loop does not read cell_weight_hh directly"; fail=$((fail+1)); }
# the tape's record function voids only the parameters it does not read
grep -qE '\(void\)(nb|out);' "$t/lstm_tape.c" && { echo "FAIL: lstm_tape.c voids a parameter it reads"; fail=$((fail+1)); }
# no allocation inside a training step
$CC -std=c11 -O1 -Iruntime -I"$t" -DMODEL=mlp_model tests/drivers/count_allocs.c "$t/mlp.c" "$B/libcdlrt.a" \
    -o "$t/count" ${CDL_CFLAGS:-} $(cat "$B/libcdlrt.libs") 2>"$t/log" || { echo "FAIL: driver: $(head -3 $t/log)"; fail=$((fail+1)); }
if [ -x "$t/count" ]; then
    "$t/count" || { echo "FAIL: allocation during train steps"; fail=$((fail+1)); }
fi
# backward nodes with source locations
"$CDLC" --dump-after=autodiff models/mlp.cdl > "$t/ir"
grep -E ' grad ' "$t/ir" | grep -qE '@ models/mlp.cdl:[0-9]+:[0-9]+' || { echo "FAIL: no backward nodes with source locations"; fail=$((fail+1)); }
echo "codegen: $fail failures"
[ $fail -eq 0 ]
