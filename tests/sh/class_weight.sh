#!/bin/bash
# class_weight.sh -- cross_entropy / nll with PyTorch's per-class weight= (with label
# smoothing, ignore_index, every reduction): tests/models/class_weight.cdl in f64, one
# training step, then `grad --eval`; with torch in /usr/bin/python3, its loss and
# gradients equal torch.nn.functional's to 1e-10 (tests/class_weight_ref.py); skipped
# without torch.  Environment: B, CDLC.
. "$(dirname "$0")/../lib.sh"
PY=/usr/bin/python3
san_cc
"$CDLC" --precision=f64 --exe tests/models/class_weight.cdl -o $t/cw >$t/log 2>&1 || { echo "FAIL cdlc: $(tail -3 $t/log)"; exit 1; }
( cd $t && ./cw train --data random:12 --batch 6 --epochs 1 --threads 1 --quiet --save m.ckpt >log 2>&1 &&
  ./cw grad --load m.ckpt --data random:12 --eval --batches 1 -o g.safetensors >>log 2>&1 ) ||
    { echo "FAIL train/grad: $(tail -3 $t/log)"; exit 1; }
if ! [ -x $PY ] || ! $PY -c 'import torch' 2>/dev/null; then
    echo "skipped: the torch comparison ($PY has no torch)"
    exit 0
fi
$PY tests/class_weight_ref.py $t/g.safetensors || { echo "FAIL: cdl and torch differ"; exit 1; }
echo "class weights: cdl == torch"
