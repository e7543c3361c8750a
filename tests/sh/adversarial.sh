#!/bin/bash
# adversarial.sh -- adversarial training and attacks end to end, through generated code:
# models/mlp.cdl and models/adversarial.cdl built with `cdlc --exe`, trained briefly
# (plainly, with FGSM and with PGD), then `eval --attack` with --json: the keys are
# there, robust accuracy <= clean accuracy, PGD <= FGSM (roughly), and the checks of the
# acceptance script (train --epochs 1 --save; eval --attack fgsm:eps=0.1 --json) hold.
set -u
B=${B:-build}
CDLC=${CDLC:-$B/cdlc}
[ -x "$CDLC" ] || { echo "adversarial.sh: no compiler at $CDLC"; exit 1; }
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || { echo "skipped: no fashion-mnist"; exit 0; }
t=$(mktemp -d); trap 'rm -rf $t' EXIT
fail=0
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
num() { grep -oE "\"$1\":[-+0-9.eE]+" "$2" | head -1 | cut -d: -f2; }
le() { awk -v a="$1" -v b="$2" -v s="${3:-0}" 'BEGIN { exit !(a != "" && b != "" && a <= b + s) }'; }

for m in mlp adversarial; do
    "$CDLC" models/$m.cdl --exe -o "$t/$m" >"$t/log" 2>&1 || { bad "cdlc --exe $m: $(tail -2 $t/log)"; continue; }
done
[ $fail -eq 0 ] || exit 1
cd "$t"
small=(--limit 3000 --test-limit 1000 --optimizer adam:lr=2e-3 --quiet)

# the acceptance script's commands (on a subset)
./mlp train --epochs 1 --save m.ckpt "${small[@]}" >log 2>&1 || bad "mlp train: $(tail -1 log)"
./mlp eval --load m.ckpt --attack fgsm:eps=0.1 --test-limit 1000 --json >clean.json 2>&1 || bad "eval --attack: $(tail -1 clean.json)"
grep -q robust clean.json || bad "no robust key: $(cat clean.json)"
for k in test_loss test_accuracy clean_accuracy robust_accuracy robust_loss examples; do
    [ -n "$(num $k clean.json)" ] || bad "eval --attack --json has no number for $k: $(cat clean.json)"
done
le "$(num robust_accuracy clean.json)" "$(num clean_accuracy clean.json)" || bad "robust > clean: $(cat clean.json)"
./mlp eval --load m.ckpt --attack pgd:eps=0.1,steps=5 --test-limit 1000 --json >pgd.json 2>&1 || bad "eval pgd: $(tail -1 pgd.json)"
le "$(num robust_accuracy pgd.json)" "$(num robust_accuracy clean.json)" 0.02 || bad "pgd robust > fgsm robust"
le "$(num robust_accuracy pgd.json)" "$(num clean_accuracy pgd.json)" || bad "pgd robust > clean"

# adversarial training, FGSM and PGD: finite losses, more robust than the plain model
./mlp train --epochs 1 --save f.ckpt --adversarial fgsm:eps=0.1,ratio=1 --json "${small[@]}" >f.json 2>&1 ||
    bad "train --adversarial fgsm: $(tail -1 f.json)"
grep -q '"adversarial":"fgsm:eps=0.1,' f.json || bad "train --json does not name the attack: $(cat f.json)"
./mlp train --epochs 1 --save p.ckpt --adversarial pgd:eps=0.1,steps=2 "${small[@]}" >log 2>&1 ||
    bad "train --adversarial pgd: $(tail -1 log)"
for c in f p; do
    ./mlp eval --load $c.ckpt --attack fgsm:eps=0.1 --test-limit 1000 --json >$c.eval 2>&1 || bad "eval $c: $(cat $c.eval)"
    le "$(num robust_accuracy clean.json)" "$(num robust_accuracy $c.eval)" -0.08 ||
        bad "$c-trained FGSM robust accuracy $(num robust_accuracy $c.eval) not 8 points above the plain $(num robust_accuracy clean.json)"
done

# the adversarial model's own defaults (train {} has adversarial = fgsm(...)) parse and run
./adversarial train --epochs 1 --limit 640 --test-limit 200 --json --quiet >a.json 2>&1 || bad "adversarial train: $(tail -1 a.json)"
grep -q '"adversarial":"fgsm' a.json || bad "model defaults: no adversarial training: $(cat a.json)"

# usage errors
./mlp train --adversarial fgsm:eps=-1 >log 2>&1; [ $? -eq 2 ] || bad "bad spec is not a usage error"
./mlp eval --load m.ckpt --attack bim >log 2>&1; [ $? -eq 2 ] || bad "unknown attack is not a usage error"

[ $fail -eq 0 ] || exit 1
echo "plain: clean $(num clean_accuracy clean.json) fgsm $(num robust_accuracy clean.json) pgd $(num robust_accuracy pgd.json); fgsm-trained: fgsm $(num robust_accuracy f.eval); pgd-trained: fgsm $(num robust_accuracy p.eval)"
