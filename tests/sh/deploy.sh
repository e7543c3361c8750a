#!/bin/bash
# run-tests: alone -- it builds two programs at a time (xargs -P 2)
# The inference export (cdlc --inference --weights CKPT, docs/deploy.md) against the
# runtime's eval on the same checkpoint, for every zoo model:
#  1. a checkpoint: MLP, LeNet, the ResNet and the LSTM trained briefly (512 images,
#     LeNet 4,096; the batch norms' running statistics are real ones); the others at
#     their initialisation;
#  2. the export (the forward, and every entry of models that have them) compiles alone
#     (cc -c in an empty directory: no include path into the project) with
#     -std=c99 -Wall -Wextra -Werror -pedantic, with gcc at -O2 and clang at -Os;
#  3. tests/drivers/infer_check runs it and the runtime's eval on the first N test images
#     (1,000 for the four models above, 100 for the others; noise for inputs that are
#     not images) and requires every output within 1e-5 relative to eval's (per example:
#     max |export - eval| / max |eval|) and the same predictions; it prints the largest
#     difference and the share of bitwise-equal values;
#  4. once at batch 4 (-D B=4), to check a batch other than the default 1, and a model
#     made of the eval-mode ops no zoo model uses (written below);
#  5. the example classifier (examples/classify/main.c + LeNet's export, -lm only);
#  6. --quantize=int8 for LeNet and the LSTM: outputs within 0.1 of eval's, 98% of
#     the predictions the same (the accuracy change is measured in docs/deploy.md).
# Environment: B (build directory), CDLC.
. "$(dirname "$0")/../lib.sh"
LIB=$CDLRT
RT_LIBS=$(cat "${LIB%.a}.libs")
san_cc   # a sanitized runtime needs the check programs built the same way
CHECK_CC=$CC
here=$(pwd)
STRICT="-std=c99 -Wall -Wextra -Werror -pedantic"
n=0
export t CDLC LIB RT_LIBS CHECK_CC STRICT

# shim FN HEADER: a shared object's uniform face (infer_call, infer_in, ...) for the
# exported function FN, written from its prototype in HEADER.
shim() {
    local fn=$1 hdr=$2 proto args a ins="" outs="" call="" ni=0 no=0
    proto=$(grep -E "^void $fn\(" "$hdr") || return 1
    args=${proto#*(}; args=${args%)*}
    IFS=',' read -ra parts <<< "$args"
    for a in "${parts[@]}"; do
        read -ra w <<< "${a//\*/ }"
        local nm=${w[${#w[@]} - 1]}
        case "${w[0]}" in
        const) ins="$ins\"$nm\", "; call="${call}in[$ni], "; ni=$((ni + 1)) ;;
        void) call="${call}arena" ;;
        *) outs="$outs\"$nm\", "; call="${call}out[$no], "; no=$((no + 1)) ;;
        esac
    done
    local up; up=$(basename "$hdr" .h | tr a-z A-Z)
    cat <<EOF
#include "$(basename "$hdr")"
const char *infer_entry = "$ENTRY";
const char *infer_in[] = {$ins 0};
const char *infer_out[] = {$outs 0};
const int infer_batch = ${up}_BATCH;
void infer_call(const void *const *in, void *const *out, void *arena) { $fn($call); }
EOF
}

# run MODEL CKPT N TOL CLANG [OPTIONS...]: export (cdlc OPTIONS: -D, --quantize),
# strict compiles (clang -Os too when CLANG is 1), compare every function within TOL
# (with --quantize=int8: within TOL, and 98% of the predictions the same).
run() {
    local m=$1 ck=$2 N=$3 tol=$4 clang=$5 b same=1; b=$(basename "$1" .cdl); shift 5
    local defs="$*" d=$t/$b.$(echo "$*" | tr -dc '0-9a-z'); mkdir -p "$d"
    case "$defs" in *quantize*) same=0.98 ;; esac
    local ents; ents=$(grep -oE '^\s*entry [a-z_0-9]+' "$m" | awk '{print $2}' | paste -sd, -)
    local sel="forward${ents:+,$ents}"
    if ! "$CDLC" "$m" --inference --weights "$ck" --entry="$sel" $defs -o "$d/${b}_infer.c" >"$d/log" 2>&1; then
        echo "FAIL $b: cdlc --inference: $(head -5 $d/log)"; return 1
    fi
    # the acceptance compiles: alone, strict, gcc and clang, -Os
    if ! (cd "$d" && gcc $STRICT -O2 -fPIC -c ${b}_infer.c -o ${b}_infer.o &&
          if [ $clang = 1 ]; then clang $STRICT -Os -c ${b}_infer.c -o ${b}_os.o; fi) >"$d/log" 2>&1; then
        echo "FAIL $b: the export does not compile cleanly: $(head -5 $d/log)"; return 1
    fi
    local f fn
    for f in ${sel//,/ }; do
        if [ $f = forward ]; then fn=${b}_infer; ENTRY=""; else fn=${b}_${f}_infer; ENTRY=$f; fi
        shim "$fn" "$d/${b}_infer.h" >"$d/shim_$f.c" || { echo "FAIL $b: no prototype for $fn"; return 1; }
        if ! gcc -std=c99 -O2 -fPIC -shared -I"$d" "$d/shim_$f.c" "$d/${b}_infer.o" -o "$d/$f.so" -lm >"$d/log" 2>&1; then
            echo "FAIL $b: shim for $fn: $(head -5 $d/log)"; return 1
        fi
        if ! "$t/check_$b" run "$ck" "$d/$f.so" "$N" "$tol" "$same" >"$d/out" 2>&1; then
            echo "FAIL $b $f (tolerance $tol): $(cat $d/out | head -5)"; return 1
        fi
        sed "s/^/ok   ${defs:+($defs) }/" "$d/out"
    done
}

# The example (examples/classify/main.c) built from lenet's export alone: only libc and
# libm linked; on the first 20 test images (P5; one also as P2, one with 16-bit pixels)
# it names the class the runtime's eval predicts; bad images are refused.
classify_test() {
    local ck=$1 d=$t/classify names
    mkdir -p "$d"
    if ! gcc $STRICT -O2 -I"$t/lenet." examples/classify/main.c "$t/lenet./lenet_infer.c" -o "$d/classify" -lm >"$d/log" 2>&1; then
        echo "FAIL classify: does not build: $(head -5 $d/log)"; return 1
    fi
    local libs; libs=$(readelf -d "$d/classify" | grep NEEDED | grep -oE '\[[^]]*\]' | tr -d '[]' | sort | paste -sd' ' -)
    [ "$libs" = "libc.so.6 libm.so.6" ] || { echo "FAIL classify: links $libs"; return 1; }
    python3 - "$d" <<'PY' || { echo "FAIL classify: cannot write the test images"; return 1; }
import gzip, sys
d = sys.argv[1]
x = gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").read()[16:]
for i in range(20):
    open("%s/%d.pgm" % (d, i), "wb").write(b"P5\n# test image %d\n28 28\n255\n" % i + x[784 * i:784 * (i + 1)])
img = x[:784]
open(d + "/p2.pgm", "w").write("P2 28 28 255\n" + " ".join(str(v) for v in img) + "\n")
open(d + "/wide.pgm", "wb").write(b"P5 28 28 65535\n" + b"".join(bytes([v, v]) for v in x[784:1568]))
open(d + "/small.pgm", "wb").write(b"P5 27 28 255\n" + img[:27 * 28])
open(d + "/short.pgm", "wb").write(b"P5 28 28 255\n" + img[:700])
open(d + "/not.pgm", "wb").write(b"P6 28 28 255\n" + img)
PY
    names=("T-shirt/top" "Trouser" "Pullover" "Dress" "Coat" "Sandal" "Shirt" "Sneaker" "Bag" "Ankle boot")
    local i=0 p got want
    "$t/check_lenet" predict "$ck" 20 >"$d/want" || { echo "FAIL classify: no eval predictions"; return 1; }
    while read -r p; do
        got=$("$d/classify" "$d/$i.pgm" | sed 's/  (.*//'); want=${names[$p]}
        [ "$got" = "$want" ] || { echo "FAIL classify: image $i: '$got', eval says '$want'"; return 1; }
        i=$((i + 1))
    done <"$d/want"
    [ "$("$d/classify" "$d/p2.pgm")" = "$("$d/classify" "$d/0.pgm")" ] || { echo "FAIL classify: P2 differs from P5"; return 1; }
    [ "$("$d/classify" "$d/wide.pgm")" = "$("$d/classify" "$d/1.pgm")" ] || { echo "FAIL classify: 16-bit differs"; return 1; }
    local f
    for f in small:"must be 28x28" short:"truncated" not:"not a PGM" none:"cannot open"; do
        if "$d/classify" "$d/${f%%:*}.pgm" >"$d/out" 2>&1 || ! grep -q "${f#*:}" "$d/out"; then
            echo "FAIL classify: ${f%%:*}.pgm: $(cat $d/out)"; return 1
        fi
    done
    echo "ok   examples/classify: 20 test images classified as eval does, P2 and 16-bit PGM read, bad images refused, links only: $libs"
}

export -f shim run classify_test

# One model, start to end; its lines go to $t/report.$b, and $t/fail.$b on failure.
job() {
    local m=$1 b N T defs="" clang=0; b=$(basename "$1" .cdl)
    case $b in
    mlp|lenet|resnet|lstm) N=1000; T=1e-5; clang=1 ;;
    ops) N=200; T=1e-5; clang=1 ;;
    # the others at smaller widths (the same ops, loops and entries; faster to compile)
    adversarial) N=100; T=1e-4; defs="-D H=64" ;;
    bilstm|birnn|gru|lstm2|rnn) N=100; T=1e-4; defs="-D H=32" ;;
    convlstm) N=100; T=1e-4; defs="-D C1=4 -D C2=8 -D H=32" ;;
    charlm) N=100; T=1e-4; defs="-D H=32 -D E=16"; clang=1 ;;
    *) N=100; T=1e-4; clang=1 ;;
    esac
    if ! "$CDLC" "$m" $defs -o "$t/$b.c" >"$t/log.$b" 2>&1 ||
       ! $CHECK_CC -std=c11 -O0 -Iruntime -DMODEL_DESC=${b}_model tests/drivers/infer_check.c "$t/$b.c" "$LIB" \
            -o "$t/check_$b" $RT_LIBS -ldl >>"$t/log.$b" 2>&1; then
        echo "FAIL $b: the check program does not build: $(head -5 $t/log.$b)"; return 1
    fi
    if [ $T = 1e-5 ]; then   # the four acceptance models and ops: briefly trained
        local lim=512; [ $b = lenet ] && lim=4096   # LeNet learns little from 512 images
        "$t/check_$b" train --epochs 1 --limit $lim --test-limit 64 --threads 1 --quiet --save "$t/$b.ckpt" >"$t/log.$b" 2>&1
    else
        "$t/check_$b" init "$t/$b.ckpt" >"$t/log.$b" 2>&1
    fi || { echo "FAIL $b: no checkpoint: $(tail -3 $t/log.$b)"; return 1; }
    run "$m" "$t/$b.ckpt" $N $T $clang $defs || return 1
    # a batch other than 1
    if [ $b = lenet ]; then
        classify_test "$t/$b.ckpt" || return 1
        run "$m" "$t/$b.ckpt" 200 $T 0 -D B=4 || return 1
    fi
    # --entry with many names (one unknown): each name kept, the unknown one named
    if [ $b = vae ]; then
        local many; many=$(printf 'generate,%.0s' $(seq 40))nope
        if "$CDLC" "$m" --inference --weights "$t/$b.ckpt" --entry="$many" -o "$t/many.c" >"$t/many.log" 2>&1 ||
           ! grep -q "has no entry 'nope' (it has: forward, generate" "$t/many.log"; then
            echo "FAIL $b: --entry with 41 names: $(head -3 $t/many.log)"; return 1
        fi
        echo "ok   --entry with 41 names: the unknown one refused by name"
    fi
    # int8 weights: convolutions and linear layers (LeNet), linear layers in a loop (LSTM)
    if [ $b = lenet ] || [ $b = lstm ]; then run "$m" "$t/$b.ckpt" 1000 0.1 1 --quantize=int8 || return 1; fi
}

export -f job

# The eval-mode ops no zoo model uses (and a batch norm after a linear layer, folded,
# and one after an activation, not folded; layer, RMS, group and instance norm, with
# and without their affine parameters), trained briefly like the four above.
cat >"$t/ops.cdl" <<'EOF'
model ops(B = 8) {
    input x: f32[B, 784]
    input y: i32[B]
    param w1: f32[32, 16] = xavier_uniform()
    param w2: f32[10, 16] = xavier_uniform()
    img = reshape(x, [B, 1, 28, 28])
    a = img |> conv2d(4, 3, stride=2, pad=1) |> leaky_relu(0.1) |> batchnorm |> avgpool2d(2, stride=2, pad=1)
        |> group_norm(2) |> instance_norm(affine=true)
    h = flatten(a) |> linear(32, bias=false) |> batchnorm |> elu(0.5)
    n = layer_norm(h) + rms_norm(h) + rms_norm(h, 0.1, affine=false) + layer_norm(h, affine=false)
    t = mean(transpose(reshape(n, [B, 4, 8]), [0, 2, 1]), axis=2)
    u = maximum(h, clamp(h, -0.5, 0.5)) - minimum(-h, 0.25) + 0.1 * silu(h) - 0.1 * mish(h)
    v = sqrt(abs(u) + 1) * log(square(u) + 1) - pow(u, 3) / (2 + exp(-abs(u)))
    p = (v @ w1) @ transpose(w2)
    s = concat([t, v[:, 0:32:4]], axis=1)
    b = broadcast_to(reshape(sum(h, axis=1), [B, 1]), [B, 16])
    logits = linear(s + 0.01 * b, 10) + 0.1 * p + tanh(mean(u, axis=1, keepdim=true))
    output log_softmax(logits) as logp
    output logits
    loss cross_entropy(logits, y)
}
EOF

# The general convolution's geometries no zoo model has (groups, dilation, non-square
# kernels and strides, pairs of pads; transposed with stride, padding and
# output_padding), bilinear and nearest upsampling at a scale that is not 2, a min, and
# attention with a scale and a key padding mask.
cat >"$t/convs.cdl" <<'EOF'
model convs(B = 8) {
    input x: f32[B, 784]
    input y: i32[B]
    img = reshape(x, [B, 1, 28, 28])
    a = img |> conv2d(4, 3, pad=1) |> relu
    b = a |> conv2d(6, [3, 2], stride=[2, 1], pad=[1, 0], dilation=[1, 2], groups=2) |> tanh   # [B, 6, 14, 26]
    c = b |> conv_transpose2d(4, 3, stride=2, pad=1, output_padding=1, groups=2)            # [B, 4, 28, 52]
    u = upsample(c, 0.75, mode="bilinear") + upsample(c, 0.75)                                   # [B, 4, 21, 39]
    s = conv1d(reshape(u, [B, 4, 819]), 3, 5, stride=3, dilation=2, pad=4)                         # [B, 3, 273]
    t = reshape(x, [B, 2, 49, 8])
    att = attention(t, 0.5 * t, t, scale=0.3, key_padding_mask=x[:, 300:349] > 0.5)   # [B, 2, 49, 8]
    logits = linear(concat([min(s, axis=2), max(s, axis=1), flatten(mean(att, axis=2))], axis=1), 10)
    output logits
    loss cross_entropy(logits, y)
}
EOF

# The remaining eval-mode ops: general pooling, the other activations, tril, the
# variance, standard deviation and logsumexp over an axis, argmax and the casts.
cat >"$t/more.cdl" <<'EOF'
model more(B = 8) {
    input x: f32[B, 784]
    input y: i32[B]
    img = reshape(x, [B, 1, 28, 28])
    p = img |> conv2d(4, 3, pad=1) |> maxpool2d(3, stride=2, pad=1) |> adaptive_avgpool2d(5)   # [B, 4, 5, 5]
    q = reshape(x, [B, 4, 196]) |> avgpool1d(3, stride=2, pad=1) |> maxpool1d(5, stride=3, pad=2)   # [B, 4, 33]
    h = concat([flatten(p), flatten(q)], axis=1) |> linear(32) |> dropout(0.3)
    a = sin(h) + cos(h) + erf(h) + log1p(abs(h)) + sign(h) + gelu_tanh(h)
    t = tril(reshape(a, [B, 4, 8]), 1) + triu(reshape(a, [B, 4, 8]), -1)
    v = var(a, axis=1, keepdim=true) + std(a, axis=1, keepdim=true, unbiased=false) + logsumexp(a, axis=1, keepdim=true)
    c = float(argmax(a, axis=1)) + float(int(4 * a[:, 0])) + float(argmin(t, axis=1))[:, 0]
    logits = linear(flatten(t), 10) + v + reshape(c, [B, 1])
    output logits
    loss cross_entropy(logits, y)
}
EOF

# Two models at a time (the machine's two cores); reports in model order.
ls models/*.cdl "$t/ops.cdl" "$t/convs.cdl" "$t/more.cdl" | xargs -P 2 -I{} bash -c 'job {} >"$0/report.$(basename {} .cdl)" 2>&1 || touch "$0/fail.$(basename {} .cdl)"' "$t"
for m in models/*.cdl "$t/ops.cdl" "$t/convs.cdl" "$t/more.cdl"; do
    b=$(basename "$m" .cdl); n=$((n + 1))
    cat "$t/report.$b"
    [ -e "$t/fail.$b" ] && fail=$((fail + 1))
done
echo "$n models, $fail failures"
[ $fail -eq 0 ] && [ $n -ge 14 ]
