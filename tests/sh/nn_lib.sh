#!/bin/bash
# nn_lib.sh -- the standard library of blocks (lib/nn.cdl, `import "nn"`):
#   - tests/models/nnlib.cdl (every block, pre- and post-norm, key padding masks from
#     i32 ids, attention dropout, bias=false with kdim/vdim) compiles, its f64
#     gradient check passes and static and tape builds agree bit for bit (3 steps);
#   - after two training steps, its parameter names are the state_dict keys of torch's
#     MultiheadAttention / TransformerEncoderLayer / TransformerDecoderLayer and its loss
#     equals PyTorch's formulas recomputed in plain Python (tests/nn_ref.py) to 1e-10;
#     with torch in /usr/bin/python3, the checkpoint exported by tools/ckpt_torch.py loads
#     strictly into those modules, whose loss and gradients equal cdl's to 1e-10 (f64);
#   - the module is found by an installed compiler (make install DESTDIR=...) and through
#     $CDL_PATH, from any directory.
# Environment: B, CDLC, COMPARE.
. "$(dirname "$0")/../lib.sh"
COMPARE=${COMPARE:-$B/cdl-compare}
PY=/usr/bin/python3
root=$(pwd)
fail=0
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
san_cc
M=tests/models/nnlib.cdl
"$CDLC" --precision=f64 --exe $M -o $t/nnlib >$t/log 2>&1 || { echo "FAIL cdlc: $(tail -3 $t/log)"; exit 1; }
if $t/nnlib gradcheck --threads 1 >$t/log 2>&1; then echo "ok   gradcheck: $(tail -1 $t/log)"; else bad "gradcheck: $(tail -3 $t/log)"; fi
if "$COMPARE" $M --steps 3 --data random --tol 0 >$t/log 2>&1; then echo "ok   static == tape bitwise"; else bad "static vs tape: $(tail -3 $t/log)"; fi
( cd $t && ./nnlib train --data random:8 --batch 4 --epochs 1 --threads 1 --quiet --save m.ckpt >log 2>&1 &&
  ./nnlib grad --load m.ckpt --data random:8 --eval --batches 1 -o g.safetensors >>log 2>&1 ) || bad "train/grad: $(tail -3 $t/log)"
if [ -x $PY ]; then
    sd=()
    if $PY -c 'import torch, numpy' 2>/dev/null; then
        $PY tools/ckpt_torch.py export $t/m.ckpt $t/sd.pt >/dev/null && sd=($t/sd.pt) || bad "ckpt_torch.py export"
    else
        echo "skipped: the torch checks ($PY has no torch)"
    fi
    $PY tests/nn_ref.py $t/g.safetensors "${sd[@]}" >$t/ref 2>&1 || fail=$((fail + 1))
    cat $t/ref
else
    echo "skipped: the PyTorch-formula checks (no $PY)"
fi
# the module beside an installed compiler (the default build only: make install
# installs build/), and through CDL_PATH
mkdir -p $t/elsewhere && cp $M $t/elsewhere/m.cdl
# DESTDIR, not PREFIX=: a PREFIX other than the build's changes the runtime's flags (it
# names the installed MPI plugin), and rebuilding build/libcdlrt.a here would pull it from
# under the tests linking with it at the same time; install must not touch the build.
if [ "$B" = build ]; then
    before=$(cksum <build/libcdlrt.a)
    make -s install DESTDIR=$t/inst >$t/log 2>&1 || bad "make install: $(tail -3 $t/log)"
    [ "$(cksum <build/libcdlrt.a)" = "$before" ] || bad "make install rebuilt build/libcdlrt.a"
    inst=$t/inst${PREFIX:-/usr/local}
    ( cd $t/elsewhere && $inst/bin/cdlc m.cdl -o m.c >log 2>&1 ) && echo "ok   installed cdlc finds nn in share/cdl" ||
        bad "installed cdlc: $(tail -3 $t/elsewhere/log)"
fi
cp "$CDLC" $t/elsewhere/cdlc
( cd $t/elsewhere && ./cdlc m.cdl -o m.c >log 2>&1 ) && bad "a compiler with no library beside it found nn"
( cd $t/elsewhere && CDL_PATH=/nonexistent:$root/lib ./cdlc m.cdl -o m.c >log 2>&1 ) && echo "ok   CDL_PATH" ||
    bad "CDL_PATH: $(tail -3 $t/elsewhere/log)"
[ $fail -eq 0 ] && echo "nn library: all checks passed"
[ $fail -eq 0 ]
