#!/bin/bash
# run-tests: alone -- it builds two programs at a time (xargs -P 2)
# The generated code computes what it computed before: every zoo model, compiled by
# this cdlc and by the cdlc of a reference commit (REF), static and tape targets, run
# by tests/drivers/dump_model.c on fixed inputs (two train steps with an update, eval
# at a partial batch, input gradients, every entry), must write byte-identical dumps:
# the same losses, gradients, parameters, outputs, bit for bit.  Both builds link the
# current runtime, so the test isolates the compiler.  Where the generated C is
# textually identical the run is skipped (same text, same numbers).
#
# REF is 52f3e76, the last change of the runtime's contract: the fused attention reads
# heads in place ([..., T, H, d], cdl_attn_geom.nh, cdl_t_attention_heads_last; CDL_ABI 4),
# and lib/nn.cdl's attention uses it, so the reference cdlc cannot compile the attention
# models with today's lib/nn.cdl.  Their numbers did not change: gpt and transformer
# compiled by the cdlc of e4f1de9 (main before the change, with its own lib/nn.cdl; its
# ABI 3 lines rewritten to 4) and by this change gave the same dumps (dump_model), static
# and tape, with the OpenBLAS and the oneDNN runtime; every other zoo model's C, static
# and tape, was identical but for the ABI lines.  The change after it, CDL_ABI 5 (the
# bias gradient summed in conv2d_bwd_xw: a db argument, n*k more reals of its scratch),
# is bridged by abi_in below, so today's calls that sum a bias gradient are compared
# against the reference's separate reduce.
# Before it, 8973bf2: the static code's gelu
# keeps its derivative for GELU_BWD (CDL_ABI 3; a new op number, two new kernels), so C
# generated before it stops at its ABI check.  The numbers did not change: every zoo
# model against 9d1bf1d with the reference's ABI 2 lines rewritten to 3 gave the same
# dumps (34 builds, 0 differ).  It comes after a8e450e (the direct convolutions' scratch
# grew for cdl_conv2d_bwd_xw, also under CDL_ABI 3), so against it the emitter's
# conv2d_bwd_w + conv2d_bwd_x(_fused) pairs made one conv2d_bwd_xw call (zoo resnet 8,
# unet 4) must give the separate calls' bits.  Before it, 9d1bf1d, the last change meant to change
# numbers: the fused attention backward's key chunks grew to 128 (CDL_ABI 2), and
# cdl_attention_scratch with them, so C generated before it reserves too little attention
# scratch for today's runtime.  Before it, bb06781 (the direct convolution's weight
# gradient sums over a fixed number of image chunks, each with its own scratch: C
# generated before it crashed lenet and changed convlstm's numbers), 18084e9 (static ==
# tape bit for bit: GEMM parts accumulate with beta = 1 as the tape does), 0e826e2.
# When a later change is meant to change some model's numbers, check the difference,
# then move REF to that change's commit (say so in its message).
# Needs the git history (a clean clone has it); without it the test says so and passes.
# The reference cdlc emits no runtime ABI check (runtime/cdl.h, CDL_ABI: the #if block
# after the includes and the descriptor's .abi line): today's C must carry exactly those
# lines for this runtime's ABI, and is compared with them taken out; the reference's C
# is built with the descriptor line put in (else today's runtime refuses it), nothing
# else changed.
# Environment: B, CDLC; CDL_EQUIV_REF overrides REF.
. "$(dirname "$0")/../lib.sh"
REF=${CDL_EQUIV_REF:-52f3e76d74cb16d2d5dc4c6ea019991f054ab6dc}
LIB=$CDLRT
LIBS=$(cat "${LIB%.a}.libs" 2>/dev/null || echo -lopenblas -lz -lpthread -lm)
san_cc   # a sanitized runtime needs the programs built the same way
CCMD=$CC
if ! git rev-parse -q --verify "$REF^{commit}" >/dev/null 2>&1; then
    echo "skipped: reference commit $REF is not in this checkout's history"; exit 0
fi
ref=$(realpath -m "$B/ref-cdlc-${REF:0:12}")
if [ ! -x "$ref" ]; then
    d=$(mktemp -d)
    git archive "$REF" compiler grammar runtime | tar -x -C "$d" || exit 1   # runtime: its headers
    mkdir -p "$d/gen"
    # the inference export's kernels as one C string, as the Makefile makes it
    if [ -f "$d/compiler/infer_kernels.inc" ]; then
        sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$/\\n"/' "$d/compiler/infer_kernels.inc" >"$d/gen/infer_kernels.h"
    fi
    # its 38 files two at a time (this script runs alone: a single gcc left a core idle
    # for the 13 s of CPU a clean clone spends here), then one link
    (bison --defines="$d/gen/cdl.tab.h" -o "$d/gen/cdl.tab.c" "$d/grammar/cdl.y" &&
     flex --header-file="$d/gen/lex.yy.h" -o "$d/gen/lex.yy.c" "$d/grammar/cdl.l" &&
     ls "$d"/compiler/*.c "$d"/gen/*.c | xargs -P 2 -I{} \
         gcc -std=c11 -O1 -w -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L -I"$d/runtime" -I"$d/compiler" -I"$d/gen" -c {} -o {}.o &&
     gcc "$d"/compiler/*.o "$d"/gen/*.o -o "$ref.tmp" -lm) >"$d/log" 2>&1 || { echo "FAIL: cannot build the reference cdlc: $(tail -3 $d/log)"; exit 1; }
    mv "$ref.tmp" "$ref"
    rm -rf "$d"
fi
ABI=$(sed -n 's/^#define CDL_ABI \([0-9][0-9]*\)$/\1/p' runtime/cdl.h)
[ -n "$ABI" ] || { echo "FAIL: no '#define CDL_ABI N' in runtime/cdl.h"; exit 1; }

# abi_out C OUT: C without its ABI lines (the 6-line #if CDL_ABI block with the blank
# line after it, the descriptor's .abi line); 1 unless it had exactly one of each
abi_out() {
    [ "$(grep -c "^#if CDL_ABI != $ABI\$" "$1")" = 1 ] && [ "$(grep -c "^    \.abi = $ABI,\$" "$1")" = 1 ] || return 1
    awk -v abi="$ABI" 'skip > 0 { skip--; next }
        $0 == "#if CDL_ABI != " abi { skip = 6; next }
        $0 == "    .abi = " abi "," { next }
        { print }' "$1" >"$2"
}
# abi_in C OUT: the reference's C with the descriptor's .abi line put in, and brought to
# ABI 5 (the one change since REF): its ABI check and .abi say this ABI, and its
# conv2d_bwd_xw calls pass db = NULL (no bias gradient: the reference sums it with its
# own reduce, today's C in the call, so the two must agree bit for bit)
abi_in() {
    sed -e "s/^\(const cdl_model [A-Za-z0-9_]*_model = {\)\$/\1\n    .abi = $ABI,/" -e "s/^#if CDL_ABI != 4\$/#if CDL_ABI != $ABI/" \
        -e "s/^    \.abi = 4,\$/    .abi = $ABI,/" \
        -e 's/^\( *cdl_conv2d_bwd_xw_f[36][24](.*\), \(([a-z]* \*)(A + [0-9]*)\));$/\1, NULL, \2);/' "$1" >"$2"
}

# one model, one target: generate with both compilers, compare text, else run both
one() {
    local m=$1 tgt=$2 b dir
    b=$(basename "$m" .cdl); dir="$t/$b.$tgt"; mkdir -p "$dir/ref" "$dir/new"
    for w in ref new; do
        local c=$CDLC; [ $w = ref ] && c=$ref
        if ! "$c" --target=$tgt "$m" -o "$dir/$w/$b.c" >"$dir/log" 2>&1; then
            # a model newer than REF (ops, library modules the reference lacks): nothing to compare
            [ $w = ref ] && "$CDLC" --target=$tgt "$m" -o "$dir/new/$b.c" >/dev/null 2>&1 &&
                { echo "new  $b $tgt: the reference cdlc does not compile it ($(head -1 $dir/log | cut -c1-100))"; return 0; }
            echo "FAIL $b $tgt: $w cdlc: $(head -2 $dir/log)"; return 1
        fi
    done
    abi_out "$dir/new/$b.c" "$dir/new.c" || { echo "FAIL $b $tgt: the C does not carry one ABI $ABI check and one .abi = $ABI"; return 1; }
    if cmp -s "$dir/ref/$b.c" "$dir/new.c"; then echo "same $b $tgt: identical C (but for the ABI lines)"; return 0; fi
    abi_in "$dir/ref/$b.c" "$dir/ref.c"
    for w in ref new; do
        local src="$dir/$w/$b.c"; [ $w = ref ] && src="$dir/ref.c"
        $CCMD -std=c11 -O0 -Iruntime -I"$dir/$w" -DMODEL=${b}_model tests/drivers/dump_model.c "$src" "$LIB" \
            -o "$dir/$w/prog" $LIBS >"$dir/log" 2>&1 || { echo "FAIL $b $tgt: $w build: $(head -3 $dir/log)"; return 1; }
        OPENBLAS_NUM_THREADS=1 "$dir/$w/prog" "$dir/$w/dump" >"$dir/log" 2>&1 || { echo "FAIL $b $tgt: $w run: $(tail -3 $dir/log)"; return 1; }
    done
    if ! cmp "$dir/ref/dump" "$dir/new/dump" >"$dir/log" 2>&1; then
        echo "FAIL $b $tgt: the numbers differ from the reference build: $(head -1 $dir/log)"; return 1
    fi
    echo "ok   $b $tgt: same numbers ($(stat -c %s "$dir/new/dump") bytes)"
}
export -f one abi_out abi_in; export t ref CDLC CCMD LIB LIBS ABI
ls models/*.cdl | sed 's/$/ c/; p; s/ c$/ tape/' | xargs -P 2 -L 1 bash -c 'one "$0" "$1"' >"$t/results" 2>&1
cat "$t/results"
n=$(grep -c . "$t/results"); fail=$(grep -c '^FAIL' "$t/results")
echo "$n builds compared with ${REF:0:12}, $fail differ"
[ "$fail" -eq 0 ] && [ "$n" -ge 2 ]
