#!/bin/bash
# param_groups.sh -- parameter groups and the RMSprop / Adagrad state end to end, through
# a model's train {} section and the trainer's command line (docs/trainer.md,
# "Parameter groups"):
#  - a frozen tensor (freeze = "linear1.*") ends a run with its initial values and its
#    optimizer state (Adam's m and v) still zero, while the others train;
#  - a pattern that matches nothing is an error naming it;
#  - a run split by --resume equals an unsplit one byte for byte (parameters and optimizer
#    slots) with groups, for RMSprop (momentum, centered: three slots) and Adagrad.
# The checkpoints are safetensors files, read with the python3 standard library.
set -u
B=${B:-build}
CDLC=${CDLC:-$B/cdlc}
t=$(mktemp -d); trap 'rm -rf $t' EXIT
fail=0
cat > "$t/pg.cdl" <<'CDL'
model pg(B = 16) {
    input x: f32[B, 8]
    input y: i32[B]
    h = x |> linear(16) |> layer_norm |> relu
    loss cross_entropy(linear(h, 10), y)
    train {
        optimizer = adamw(lr=0.01, weight_decay=0.5)
        no_decay = "bias,norm"
        freeze = "linear1.*"
        groups = "linear2.*:lr=0.001"
        data = "random:256"
        epochs = 1
    }
}
CDL
"$CDLC" --exe "$t/pg.cdl" -o "$t/pg" >"$t/log" 2>&1 || { echo "FAIL: cdlc: $(tail -3 "$t/log")"; exit 1; }
cd "$t" || exit 1

# the initial parameters: lr 0 and no groups (AdamW at lr 0 moves nothing)
./pg train --optimizer adamw:lr=0 --groups none --no-decay none --freeze none --quiet --save init.ckpt 2>log ||
    { echo "FAIL: lr 0 run: $(tail -2 log)"; fail=1; }
./pg train --save grouped.ckpt >out 2>log || { echo "FAIL: grouped run: $(tail -2 log)"; fail=1; }
if grep -q "^parameter groups: 2 tensors frozen, 3 without weight decay, 2 in --groups$" out; then
    echo "ok   the run reports its groups"
else
    echo "FAIL: no or wrong 'parameter groups' line: $(head -3 out)"; fail=1
fi

# read.py INIT RUN: linear1.* as in INIT and each of its optimizer slots one constant
# (0, or Adagrad's initial_accumulator_value 0.1: untouched); the others trained.
cat > read.py <<'PY'
import json, struct, sys
def tensors(path):
    f = open(path, 'rb').read()
    n = struct.unpack('<Q', f[:8])[0]
    h = json.loads(f[8:8 + n])
    return {k: f[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]] for k, v in h.items() if k != '__metadata__'}
init, run = tensors(sys.argv[1]), tensors(sys.argv[2])
bad, slots = [], 0
for k in ('linear1.weight', 'linear1.bias'):
    if run[k] != init[k]: bad.append(k + ' changed')
    for s in (s for s in run if s.endswith('.' + k)):
        slots += 1
        vals = set(struct.unpack('<%df' % (len(run[s]) // 4), run[s]))
        if vals not in ({0.0}, {struct.unpack('<f', struct.pack('<f', 0.1))[0]}): bad.append(s + ' changed')
for k in ('ln1.weight', 'ln1.bias', 'linear2.weight', 'linear2.bias'):
    if run[k] == init[k]: bad.append(k + ' did not train')
if not slots: bad.append('no optimizer slots of linear1')
print('; '.join(bad) if bad else 'ok')
PY
r=$(python3 read.py init.ckpt grouped.ckpt)
if [ "$r" = ok ]; then echo "ok   frozen linear1.* kept its values and its zero Adam state; the rest trained"
else echo "FAIL frozen: $r"; fail=1; fi

# a pattern that matches nothing
if ./pg train --freeze 'conv9.*' --quiet >out 2>log; then echo "FAIL: --freeze conv9.* accepted"; fail=1
elif grep -q "pattern 'conv9.\*' matches no trainable parameter of model pg" log; then
    echo "ok   --freeze conv9.*: $(head -1 log)"
else echo "FAIL: --freeze conv9.*: $(head -2 log)"; fail=1; fi

# resume is exact with groups, for the optimizers with more state
for opt in rmsprop:lr=0.01,momentum=0.9,centered=1,weight_decay=0.1 adagrad:lr=0.05,lr_decay=0.01,initial_accumulator_value=0.1,weight_decay=0.1; do
    ./pg train --optimizer $opt --epochs 2 --quiet --save full.ckpt 2>log &&
    ./pg train --optimizer $opt --epochs 1 --quiet --save split.ckpt 2>>log &&
    ./pg train --optimizer $opt --epochs 2 --quiet --resume split.ckpt --save split.ckpt 2>>log ||
        { echo "FAIL ${opt%%:*}: $(tail -2 log)"; fail=1; continue; }
    if cmp -s full.ckpt split.ckpt; then echo "ok   ${opt%%:*} with groups: epochs 1 + resume 1 == 2 epochs, byte for byte"
    else echo "FAIL ${opt%%:*}: the resumed checkpoint differs from the unsplit run's"; fail=1; fi
    r=$(python3 read.py init.ckpt full.ckpt)
    if [ "$r" = ok ]; then echo "ok   ${opt%%:*}: frozen linear1.* kept its values and its optimizer state"
    else echo "FAIL ${opt%%:*} frozen: $r"; fail=1; fi
done
[ $fail -eq 0 ]
