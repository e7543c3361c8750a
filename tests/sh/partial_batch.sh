#!/bin/bash
# partial_batch.sh -- models run at a runtime batch smaller than the compiled one (the
# last batch of an epoch), in both targets, f64: every case's printed loss, gradients
# and outputs (tests/drivers/partial_batch.c) must equal the expected values, which
# count only the real rows.  A case is: a model file, the runtime batch, and expected
# lines "loss V", "grad NAME V..." or "out NAME V..." (a "V*N" repeats V N times).
. "$(dirname "$0")/../lib.sh"
n=0

# check NAME NB: $t/NAME.cdl against the expected lines on stdin.
check() {
    local name=$1 nb=$2
    cat > "$t/$name.want"
    for target in c tape; do
        n=$((n + 1))
        if ! "$CDLC" --precision=f64 --target=$target "$t/$name.cdl" -o "$t/pb.c" 2>"$t/log" ||
           ! cc_rt -O1 -I"$t" -DMODEL=pb_model tests/drivers/partial_batch.c "$t/pb.c" -o "$t/drv" 2>>"$t/log"; then
            echo "FAIL $name ($target): does not build: $(head -3 "$t/log")"; fail=$((fail + 1)); continue
        fi
        "$t/drv" "$nb" > "$t/$name.$target.out" 2>"$t/log" || {
            echo "FAIL $name ($target): the driver failed: $(head -3 "$t/log")"; fail=$((fail + 1)); continue; }
        while read -r kind key rest; do
            [ -z "$kind" ] && continue
            local label="$kind" want="" v
            [ "$kind" != loss ] && label="$kind $key" && key=""
            for v in $key $rest; do
                case $v in *\**) for _ in $(seq 1 "${v#*\*}"); do want="$want ${v%\**}"; done ;; *) want="$want $v" ;; esac
            done
            local got
            got=$(grep -m1 "^$label " "$t/$name.$target.out" | cut -d' ' -f$([ "$kind" = loss ] && echo 2- || echo 3-))
            if ! awk -v w="$want" -v g="$got" 'BEGIN { nw = split(w, a, " "); ng = split(g, b, " ");
                    if (nw != ng) exit 1; for (i = 1; i <= nw; i++) { d = a[i] - b[i]; if (d < 0) d = -d;
                    s = a[i] < 0 ? -a[i] : a[i]; if (d > 1e-12 * (1 + s)) exit 1 } }'; then
                echo "FAIL $name ($target, nb=$nb): $label: want$want, got ${got:-nothing}"; fail=$((fail + 1))
            fi
        done < "$t/$name.want"
    done
}

# broadcast_to(param, [B, ...]) is batched like zeros([B, ...]): the sum counts the 3
# real rows, so loss = 16 * 0.5^2 and d/ds = 2 * 0.5 (PyTorch: s.expand(nb, 16)).
# Alone, and mixed with a batched input (the tape once refused [3, 16] + [8, 16]).
cat > "$t/bcast.cdl" <<'CDL'
model pb(B = 8) {
    input x: f32[B, 16]
    param s: f32[16] = 0.5
    loss sum(broadcast_to(s, [B, 16]) ** 2) / B
}
CDL
check bcast 3 <<'W'
loss 4
grad s 1*16
W
cat > "$t/bcast_mixed.cdl" <<'CDL'
model pb(B = 8) {
    input x: f32[B, 16]
    param s: f32[16] = 0.5
    loss sum(broadcast_to(s, [B, 16]) * x) / B
}
CDL
check bcast_mixed 3 <<'W'
loss 8
grad s 1*16
W

# A class token (broadcast_to(param, [B, 1, -1]) in a block that reads B and asks x for
# its width) concatenated with a batched input: per row 0.5 * 3 + 1 * 2 * 3.
cat > "$t/token.cdl" <<'CDL'
block with_token(x) {
    param cls: f32[1, 1, dim(x, -1)] = 0.5
    return concat([broadcast_to(cls, [B, 1, -1]), x], axis=1)
}
model pb(B = 8, T = 2, D = 3) {
    input x: f32[B, T, D]
    h = with_token(x)
    output mean(h, axis=1) as m
    loss sum(h) / B
}
CDL
check token 3 <<'W'
loss 7.5
grad with_token1.cls 1*3
out m 0.83333333333333333*9
W

# Losses with reduce="none", a row weight and ignore_index at 3 real rows of 8: logits
# 0.5 everywhere, labels 0, so each row's cross-entropy is log 4 and its logit gradient
# (p - onehot) = (-0.75, 0.25, 0.25, 0.25).  loss = 3 log 4 (none, summed) + 3 * 2 log 4
# (weight 2, sum) + 3 * 4 * 0.25 (mse none, summed); d/dw = 3 rows * (1 + 2) * (p - q)
# + 3 * 2 (0.5 - 1).  kl_normal(z, z) per row: -2 (1.25 - e^0.5).  Every row's label is
# 0, so ignore_index=0 zeroes every row.
cat > "$t/loss_none.cdl" <<'CDL'
model pb(B = 8) {
    input x: f32[B, 4]
    input y: i32[B]
    param w: f32[4] = 0.5
    z = x * w
    output cross_entropy(z, y, reduce="none") as ce
    output nll(z, y, row_weight=x[:, 0] * 3, reduce="none") as nw
    output cross_entropy(z, y, ignore_index=0, reduce="none") as ign
    output kl_normal(z, z, reduce="none") as kl
    output mse(z, x, reduce="none") as se
    loss sum(cross_entropy(z, y, reduce="none")) + cross_entropy(z, y, row_weight=x[:, 0] * 2, reduce="sum") + sum(mse(z, x, reduce="none"))
}
CDL
check loss_none 3 <<'W'
loss 15.476649250079015
grad w -9.75 -0.75*3
out ce 1.3862943611198906*3
out nw -1.5*3
out ign 0*3
out kl 0.79744254140025638*3
out se 0.25*12
W

# Every arithmetic form on the batch constant is the runtime batch (3 of a compiled 8);
# T, dims and settings keep compiled values.  The loss divides by 0.5 * B: 6 / 1.5.
cat > "$t/arith.cdl" <<'CDL'
model pb(B = 8, T = 3, N = B * T) {
    input x: f32[B, 2]
    param w: f32[2] = 1.0
    c = zeros([1])
    output c + B as b
    output c + B * T as bt
    output c + 2 * B as twob
    output c + 0.5 * B as half
    output c + B / 2 as bdiv2
    output c + (B - 1) as bm1
    output c + B ** 2 as bsq
    output c + B * 1.0 as bf
    output c + (B + 0) as bp0
    output c - B as neg
    output c + 1 / B as inv
    output c + maximum(B, 4) as mx
    output c + minimum(B, 4) as mn
    output full([1], 1 / B) as fullinv
    output c + N as n
    output c + sum(x) / dim(x, 0) as perrow
    output c + x.shape[0] * 1.0 as shp
    output c + T / 2 as tconst
    loss sum(x * w) / (0.5 * B)
}
CDL
check arith 3 <<'W'
loss 4
grad w 2*2
out b 3
out bt 9
out twob 6
out half 1.5
out bdiv2 1.5
out bm1 2
out bsq 9
out bf 3
out bp0 3
out neg -3
out inv 0.33333333333333333
out mx 4
out mn 3
out fullinv 0.33333333333333333
out n 9
out perrow 2
out shp 3
out tconst 1.5
W
check arith 8 <<'W'
loss 4
grad w 2*2
out half 4
out bm1 7
out bsq 64
out mx 8
W

# Collections of loops that do not start at 0 (docs/language.md section 8): hs has
# hi - lo positions, position k holds step lo + k, also in a reversed loop.
cat > "$t/collect.cdl" <<'CDL'
model pb(B = 4) {
    input x: f32[B, 1]
    h = x * 0
    g = x * 0
    for t in 1..4 {
        h = h + 1
        hs[t] = h
    }
    for t in reversed(1..4) {
        g = g + 1
        gs[t] = g
    }
    output reshape(hs, [B, 3]) as up
    output reshape(gs, [B, 3]) as down
}
CDL
check collect 2 <<'W'
out up 1 2 3 1 2 3
out down 3 2 1 3 2 1
W

echo "$n runs, $fail failed"
[ $fail -eq 0 ]
