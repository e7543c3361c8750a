#!/bin/bash
# nan_cause.sh -- errors that used to vanish into NaN (issue 10 item 6).  A label that a
# cross-entropy cannot take (labels 0..7 for 2 classes; the model's output is not its
# logits, so the trainer's class check cannot see it) makes the kernel record its cause
# and the loss NaN.  In the static and the tape build, train, eval, grad and gradcheck
# print that cause and exit 1 (grad writes no file); cdl-compare says NaN and exits 1,
# also with --tol (it used to claim "static and tape differ").
. "$(dirname "$0")/../lib.sh"
COMPARE=$(realpath "$COMPARE")
cp tests/models/ce2.cdl "$t/ce2.cdl"
"$CDLC" --exe "$t/ce2.cdl" -o "$t/ce2" >"$t/log" 2>&1 || { echo "FAIL cdlc --exe: $(tail -3 $t/log)"; exit 1; }
"$CDLC" --exe --target=tape "$t/ce2.cdl" -o "$t/ce2_tape" >"$t/log" 2>&1 || { echo "FAIL cdlc --exe --target=tape: $(tail -3 $t/log)"; exit 1; }
"$CDLC" --exe --precision=f64 "$t/ce2.cdl" -o "$t/ce2_64" >"$t/log" 2>&1 || { echo "FAIL cdlc --exe f64: $(tail -3 $t/log)"; exit 1; }
cd "$t"
python3 -c "
for name, k in (('l8.csv', 8), ('ok.csv', 2)):
    with open(name, 'w') as f:
        f.write('a,b,y\n')
        for i in range(40): f.write('%.3f,%.3f,%d\n' % (i / 40, 1 - i / 40, i % k))
"
cause="cross_entropy: label [2-7] at row [0-9]+ is outside \[0, 2\)"
# expect NAME CMD...: exit status 1 and the cause on stderr
expect() {
    local name=$1; shift
    "$@" >out 2>err; local rc=$?
    [ $rc -eq 1 ] || { bad "$name: exit status $rc, want 1: $(tail -1 err)"; return; }
    grep -qE "$cause" err || bad "$name: the cause is not printed: $(tail -1 err)"
}
for p in ce2 ce2_tape; do
    expect "$p train" ./$p train --data l8.csv --epochs 1 --quiet
    ./$p train --data ok.csv --epochs 1 --save ok.ckpt --quiet >/dev/null 2>&1 || bad "$p train on good labels"
    expect "$p eval" ./$p eval --data l8.csv --load ok.ckpt
    rm -f g.st
    expect "$p grad" ./$p grad --data l8.csv --load ok.ckpt -o g.st
    [ -e g.st ] && bad "$p grad wrote a file from a failed batch"
done
expect "ce2_64 gradcheck" ./ce2_64 gradcheck --classes 8
# cdl-compare: NaN is said, with the cause, and is never a pass
"$COMPARE" "$t/ce2.cdl" --data csv:l8.csv --steps 2 --batch 4 >out 2>err; rc=$?
[ $rc -ne 0 ] || bad "cdl-compare on NaN losses exits 0"
grep -q "loss is nan" err || bad "cdl-compare does not say NaN: $(tail -1 err)"
grep -qE "$cause" err || bad "cdl-compare does not give the cause: $(tail -1 err)"
"$COMPARE" "$t/ce2.cdl" --data csv:l8.csv --steps 2 --batch 4 --tol 1e-5 >out 2>err; rc=$?
[ $rc -ne 0 ] || bad "cdl-compare --tol on NaN losses exits 0"
grep -q "differ" err && bad "cdl-compare --tol calls NaN losses a difference: $(tail -1 err)"
[ $fail -eq 0 ] && echo "train, eval, grad, gradcheck (static and tape) and cdl-compare name the cause and exit 1"
[ $fail -eq 0 ]
