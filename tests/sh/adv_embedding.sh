#!/bin/bash
# adv_embedding.sh -- perturb() end to end (docs/language.md, docs/trainer.md
# "Adversarial training and attacks"): a character classifier whose embedding output is
# marked `e = perturb(embedding(x, V, D))`, built with `cdlc --exe`, on a tiny synthetic
# tsv.  The hidden input e.delta is in the model's input table as CDL_T_PERTURB; the
# trainer trains without a column for it; gradcheck checks d loss / d e.delta (the
# input-gradient entry); static == tape bit for bit; --inference exports no delta.
# Then embedding-space adversarial training (Miyato et al.) on a normalised embedding:
# `train --adversarial fgm|pgd` and `eval --attack fgm|pgd` on e; the defended model
# keeps its accuracy under an eps = 2 attack that defeats the plain one; --resume is
# exact; ratio < 1 and an unknown on= are refused.
. "$(dirname "$0")/../lib.sh"
COMPARE=${COMPARE:-$B/cdl-compare}
case $CDLC in /*) ;; *) CDLC="$PWD/$CDLC" ;; esac
case $COMPARE in /*) ;; *) COMPARE="$PWD/$COMPARE" ;; esac
san_cc
fail=0
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
cd "$t" || exit 1

# two classes told apart by their letters (a-d vs c-f), 240 words of 2..5 letters
awk 'BEGIN { srand(7); for (i = 0; i < 240; i++) { c = i % 2; s = "";
    n = 2 + int(rand() * 4); for (k = 0; k < n; k++) s = s substr(c ? "cdef" : "abcd", 1 + int(rand() * 4), 1);
    print (c ? "b" : "a") "\t" s } }' >w.tsv
cat >cls.cdl <<'M'
model cls(B = 16, T = 5) {
    input x: i32[B, T]
    input y: i32[B]
    e = perturb(embedding(x, 10, 8))
    h = mean(tanh(linear(e, 8)), axis=1)
    logits = linear(h, 2)
    output logits
    loss cross_entropy(logits, y)
}
M
"$CDLC" --exe cls.cdl -o cls >log 2>&1 || { bad "cdlc --exe: $(tail -3 log)"; exit 1; }
"$CDLC" cls.cdl -o gen.c >log 2>&1 || bad "cdlc: $(tail -3 log)"
grep -qF '{"e.delta", CDL_F32, 0, 3, {16, 5, 8}, CDL_T_BATCHED | CDL_T_PERTURB' gen.c ||
    bad "no perturbation row in the input table: $(grep -A4 'cls_inputs\[\]' gen.c)"

# the trainer feeds x and y from the tsv and nothing to e.delta
./cls train --data tsv:w.tsv --epochs 2 --optimizer adam:lr=1e-2 --save c.ckpt --quiet --json >t.json 2>&1 ||
    bad "train: $(tail -2 t.json)"
grep -q "e.delta" t.json && bad "the trainer mentions the delta: $(cat t.json)"
./cls eval --load c.ckpt --data tsv:w.tsv --json >e.json 2>&1 || bad "eval: $(tail -2 e.json)"

# d loss / d e through the input-gradient entry, in f64, by central differences
"$CDLC" --exe --precision=f64 cls.cdl -o cls64 >log 2>&1 || bad "cdlc f64: $(tail -2 log)"
./cls64 gradcheck --threads 1 >gc.log 2>&1 || bad "gradcheck: $(tail -3 gc.log)"
grep -qE '^  input e.delta +[0-9]+ checked .* ok$' gc.log || bad "gradcheck did not check e.delta: $(cat gc.log)"

# static and tape agree bit for bit (random ids; the delta stays zero in both)
"$COMPARE" cls.cdl --steps 3 --data random --tol 0 --json >cmp.json 2>cmp.log || bad "static != tape: $(tail -2 cmp.log)"

# the inference export has x as its only argument
"$CDLC" --inference --weights c.ckpt cls.cdl -o inf.c >log 2>&1 || bad "--inference: $(tail -2 log)"
grep -qE '^void cls_infer\(const int32_t \*x, float \*logits, void \*arena\)' inf.c ||
    bad "--inference signature: $(grep -E '^void cls_infer' inf.c)"

# embedding-space adversarial training, on unit-variance embeddings (layer_norm without
# affine: the model cannot outgrow a fixed eps by inflating its embeddings)
sed 's/e = perturb(embedding(x, 10, 8))/e = perturb(layer_norm(embedding(x, 10, 8), affine=false))/' cls.cdl >clsn.cdl
"$CDLC" --exe clsn.cdl -o clsn >log 2>&1 || { bad "cdlc --exe clsn: $(tail -3 log)"; exit 1; }
num() { grep -oE "\"$1\":[-+0-9.eE]+" "$2" | head -1 | cut -d: -f2; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && b != "" && a < b) }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && b != "" && a <= b) }'; }
tr=(--data tsv:w.tsv --epochs 10 --optimizer adam:lr=1e-2 --quiet)
./clsn train "${tr[@]}" --save plain.ckpt >log 2>&1 || bad "train plain: $(tail -2 log)"
./clsn train "${tr[@]}" --save fgm.ckpt --adversarial fgm:eps=2 --json >fgm.json 2>&1 || bad "train fgm: $(tail -2 fgm.json)"
grep -q '"adversarial":"fgm:eps=2,alpha=2,steps=1,rand=0,clip=0,ratio=1,norm=2"' fgm.json || bad "train --json: $(cat fgm.json)"
./clsn train "${tr[@]}" --save pgd.ckpt --adversarial pgd:eps=2,steps=3 >log 2>&1 || bad "train pgd: $(tail -2 log)"
for m in plain fgm pgd; do
    for atk in fgm:eps=2 pgd:eps=2,steps=5; do
        ./clsn eval --load $m.ckpt --data tsv:w.tsv --attack $atk --json >$m.${atk%%:*}.json 2>&1 || bad "eval $m $atk: $(tail -1 $m.${atk%%:*}.json)"
        f=$m.${atk%%:*}.json
        le "$(num robust_accuracy $f)" "$(num clean_accuracy $f)" || bad "$m $atk: robust > clean: $(cat $f)"
        echo "$m under $atk: clean $(num clean_accuracy $f) robust $(num robust_accuracy $f)"
    done
done
grep -q '"attack":"fgm:eps=2,alpha=2,steps=1,rand=0,clip=0,ratio=1,norm=2"' plain.fgm.json || bad "eval --json: $(cat plain.fgm.json)"
for d in fgm pgd; do
    lt "$(awk -v a="$(num robust_accuracy plain.fgm.json)" 'BEGIN { print a + 0.3 }')" "$(num robust_accuracy $d.fgm.json)" ||
        bad "$d training does not defend: plain $(num robust_accuracy plain.fgm.json), $d $(num robust_accuracy $d.fgm.json)"
done
# 10 epochs == 4 + resume to 10, bit for bit (PGD's random starts included)
./clsn train "${tr[@]}" --epochs 4 --save r.ckpt --adversarial pgd:eps=2,steps=3 >log 2>&1 || bad "train 4: $(tail -2 log)"
./clsn train "${tr[@]}" --resume r.ckpt --save r.ckpt --adversarial pgd:eps=2,steps=3 >log 2>&1 || bad "resume: $(tail -2 log)"
./clsn eval --load pgd.ckpt --data tsv:w.tsv --json | sed 's/"seconds.*//' >a.json
./clsn eval --load r.ckpt --data tsv:w.tsv --json | sed 's/"seconds.*//' >b.json
cmp -s a.json b.json || bad "resume differs: $(cat a.json b.json)"
# refused: a ratio (Miyato's loss covers every example), an input that is not there
./clsn train "${tr[@]}" --adversarial fgm:eps=1,ratio=0.5 >log 2>&1 && bad "ratio=0.5 accepted"
grep -q "ratio must be 1" log || bad "ratio error: $(cat log)"
./clsn eval --load plain.ckpt --data tsv:w.tsv --attack fgm:on=h >log 2>&1 && bad "on=h accepted"
grep -q "no input 'h'" log || bad "on= error: $(cat log)"

[ $fail -eq 0 ] && echo "adv_embedding: all checks passed"
[ $fail -eq 0 ]
