#!/bin/bash
# torch_load.sh -- checkpoints of models/transformer.cdl and models/unet.cdl load by name
# into the equivalent PyTorch modules (issue 13, acceptance), which compute the same loss
# and gradients (tests/torch_load.py):
#   transformer: nn.Parameter cls and pos, nn.Linear embed and head, two
#       nn.TransformerEncoderLayer(norm_first=True, activation="gelu", batch_first=True)
#       (self_attn.in_proj_weight packs q, k, v), nn.LayerNorm norm;
#   unet: nn.Conv2d + nn.GroupNorm blocks (net.enc1.conv, net.enc1.norm, ...),
#       nn.ConvTranspose2d net.up2 (weight [in, out, kh, kw]), nearest upsampling.
# Each model is built small (-D sizes) in f64 and f32, trained 4 steps on 32
# Fashion-MNIST images, and its eval-mode loss and gradients on one batch written by
# `PROG grad --eval`.  The f64 checkpoint goes through `tools/ckpt_torch.py export` to a
# torch.save'd .pt, the f32 one to a .safetensors file read with numpy; the torch module
# loads it with strict=True and must agree: f64 to 1e-10, f32 loss 1e-5, gradients 1e-4.
# Uses /usr/bin/python3; skipped cleanly when it has no torch (or numpy).
# Environment: B, CDLC.
. "$(dirname "$0")/../lib.sh"
PY=/usr/bin/python3
if ! [ -x $PY ] || ! $PY -c 'import torch, numpy' 2>/dev/null; then echo "skipped: $PY has no torch"; exit 0; fi
root=$(pwd)
san_cc
fail=0
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
declare -A SIZES=([transformer]="D=16 HEADS=2 FF=32" [unet]="C=4 G=2")
for m in transformer unet; do
    defs=(-D B=8)
    for kv in ${SIZES[$m]}; do defs+=(-D "$kv"); done
    for p in f64 f32; do
        prog=$t/${m}_$p
        if ! "$CDLC" --exe --precision=$p "${defs[@]}" models/$m.cdl -o $prog >$t/log 2>&1; then
            bad "$m $p: cdlc: $(tail -3 $t/log)"; continue
        fi
        if ! ( cd $t && $prog train --limit 32 --test-limit 8 --epochs 1 --threads 1 --quiet --save ${m}_$p.ckpt &&
               $prog grad --load ${m}_$p.ckpt --eval --threads 1 --batches 1 -o ${m}_$p.grad.safetensors ) >$t/log 2>&1; then
            bad "$m $p: train/grad: $(tail -3 $t/log)"; continue
        fi
        sd=$t/${m}_$p.pt
        [ $p = f32 ] && sd=$t/${m}_$p.safetensors
        $PY tools/ckpt_torch.py export $t/${m}_$p.ckpt $sd >$t/log 2>&1 || { bad "$m $p: export: $(tail -2 $t/log)"; continue; }
        $PY tests/torch_load.py $m $sd $t/${m}_$p.grad.safetensors $p ${SIZES[$m]} || bad "$m $p: torch disagrees"
    done
done
[ $fail -eq 0 ] && echo "transformer, unet: checkpoints load strictly into torch modules; loss and gradients agree (f64 1e-10, f32)"
[ $fail -eq 0 ]
