#!/bin/bash
# hotflip.sh -- HotFlip character flips (runtime/adversarial_text.c; issue 14 item 4)
# on a tiny character classifier (three made-up "languages", one alphabet each, one
# with non-ASCII letters; the embedding output marked with perturb()):
#   - eval --attack hotflip:flips=1 changes predictions (robust accuracy below clean),
#     flips=2 at least as many; the JSON counts agree (flips <= attacked * flips);
#   - every word shown is its original with at most `flips` characters replaced, the
#     same length (padding is never flipped, nothing is flipped into padding), each new
#     character one of the training alphabet (never "unknown", never padding);
#   - a second run prints the same thing (deterministic);
#   - train --adversarial hotflip:flips=1,ratio=0.5 trains, reports its spec, and is
#     more robust to the attack than plain training;
#   - bad specs and a model without perturb() are clear errors.
. "$(dirname "$0")/../lib.sh"
cat >"$t/cls.cdl" <<'EOF'
model cls(B = 32, T = 10, V = 40, E = 12, C = 3) {
    input x: i32[B, T]
    input mask: f32[B, T]
    input y: i32[B]
    e = perturb(embedding(x, V, E, name="embed"))
    pooled = sum(e * reshape(mask, [B, T, 1]), axis=1) / reshape(sum(mask, axis=1), [B, 1])
    logits = linear(tanh(linear(pooled, 24, name="hidden")), C, name="out")
    output logits
    loss cross_entropy(logits, y)
}
EOF
"$CDLC" --exe "$t/cls.cdl" -o "$t/cls" >"$t/log" 2>&1 || { echo "FAIL cdlc cls: $(tail -3 $t/log)"; exit 1; }
python3 - "$t" <<'EOF'
import random, sys
d = sys.argv[1]
r = random.Random(5)
alpha = {"north": "aeiklmnrst", "south": "bdgopuyz", "east": "cfhjqvwx\u00e9\u00fc"}
def lines(n):
    out = []
    for _ in range(n):
        lab = r.choice(sorted(alpha))
        # mostly the class's letters, one in four from anywhere: some words are close calls
        word = "".join(r.choice(alpha[lab]) if r.random() < 0.75 else r.choice("".join(alpha.values()))
                       for _ in range(r.randint(3, 8)))
        out.append(lab + "\t" + word)
    return out
open(d + "/train.tsv", "w", encoding="utf-8").write("\n".join(lines(960)) + "\n")
open(d + "/test.tsv", "w", encoding="utf-8").write("\n".join(lines(200)) + "\n")
EOF
run() { "$t/cls" "$@" --data "tsv:$t/train.tsv" --test "tsv:$t/test.tsv" --quiet; }
run train --epochs 6 --lr 0.02 --save "$t/plain.ckpt" >"$t/out" 2>&1 || bad "train: $(tail -2 $t/out)"
for f in 1 2; do
    run eval --load "$t/plain.ckpt" --attack "hotflip:flips=$f,show=1000" >"$t/f$f.txt" 2>&1 || bad "eval flips=$f: $(tail -1 $t/f$f.txt)"
    run eval --load "$t/plain.ckpt" --attack "hotflip:flips=$f" --json >"$t/f$f.json" 2>&1 || bad "eval flips=$f --json: $(tail -1 $t/f$f.json)"
done
run eval --load "$t/plain.ckpt" --attack "hotflip:flips=2,show=1000" >"$t/again.txt" 2>&1
cmp -s "$t/f2.txt" "$t/again.txt" || bad "two runs of the attack differ"
python3 - "$t" <<'EOF' || bad "the attack's results: $(cat $t/f1.json $t/f2.json)"
import json, re, sys
d = sys.argv[1]
alphabet = set("aeiklmnrstbdgopuyzcfhjqvwx\u00e9\u00fc")
r = {f: json.loads(open("%s/f%d.json" % (d, f)).read()) for f in (1, 2)}
clean = r[1]["clean_accuracy"]
assert clean > 0.7, r[1]                                  # it learnt (chance: 1/3)
assert r[1]["robust_accuracy"] < clean - 0.05, r[1]       # one flip changes predictions
assert r[2]["robust_accuracy"] <= r[1]["robust_accuracy"], r
assert r[1]["attack"] == "hotflip:flips=1,cand=10,ratio=1", r[1]["attack"]
for f in (1, 2):
    attacked = round(clean * r[f]["examples"])
    assert 0 < r[f]["flips"] <= f * attacked, (f, r[f], attacked)
    assert abs(r[f]["attack_success"] - (clean - r[f]["robust_accuracy"]) / clean) < 1e-9, r[f]
    text = open("%s/f%d.txt" % (d, f), encoding="utf-8").read()
    shown = re.findall(r"^hotflip: (\S+) \((\w+)\) -> (\S+) \((\w+)\)  \[(\d) flips?\]$", text, re.M)
    changed = int(re.search(r"(\d+) of them are now wrong", text).group(1))
    assert len(shown) == changed > 0, (len(shown), changed)
    assert changed == round((clean - r[f]["robust_accuracy"]) * r[f]["examples"]), (changed, r[f])
    for w0, c0, w1, c1, n in shown:
        diff = sum(a != b for a, b in zip(w0, w1))
        assert len(w0) == len(w1) and 1 <= diff == int(n) <= f and c0 != c1, (w0, w1, n)
        assert set(w1) <= alphabet, w1
EOF
# adversarial training with the attack
run train --epochs 6 --lr 0.02 --adversarial hotflip:flips=1,ratio=0.5 --save "$t/adv.ckpt" --json >"$t/adv.out" 2>&1 ||
    bad "train --adversarial hotflip: $(tail -2 $t/adv.out)"
grep -q '"adversarial":"hotflip:flips=1,cand=10,ratio=0.5"' "$t/adv.out" || bad "the spec in the JSON: $(cat $t/adv.out)"
run eval --load "$t/adv.ckpt" --attack hotflip:flips=1 --json >"$t/adv.json" 2>&1 || bad "eval adv: $(tail -1 $t/adv.json)"
python3 -c "
import json
p, a = json.load(open('$t/f1.json')), json.load(open('$t/adv.json'))
assert a['robust_accuracy'] > p['robust_accuracy'] + 0.05, (p, a)
" || bad "flip training is not more robust: plain $(cat $t/f1.json) flip-trained $(cat $t/adv.json)"
# errors: bad specs, a model without perturb()
for spec in "hotflip:flips=0" "hotflip:flips=1.5" "hotflip:cand=x" "hotflip:ratio=2" "hotflip:what=1"; do
    run eval --load "$t/plain.ckpt" --attack "$spec" >"$t/out" 2>&1 && bad "spec $spec accepted"
    grep -q "attack '$spec'" "$t/out" || bad "spec $spec: $(tail -1 $t/out)"
done
sed 's/e = perturb(embedding(x, V, E, name="embed"))/e = embedding(x, V, E, name="embed")/' "$t/cls.cdl" >"$t/plain.cdl"
"$CDLC" --exe "$t/plain.cdl" -o "$t/plain" >"$t/log" 2>&1 || bad "cdlc plain: $(tail -3 $t/log)"
"$t/plain" eval --load "$t/plain.ckpt" --data "tsv:$t/train.tsv" --attack hotflip >"$t/out" 2>&1 && bad "hotflip without perturb()"
grep -q "hotflip: model cls has no perturb() input: mark the embedding output" "$t/out" || bad "no perturb: $(tail -1 $t/out)"
[ $fail -eq 0 ] && echo "hotflip: $(grep -o 'robust_acc [0-9.]*%' $t/f1.txt) after 1 flip, $(grep -o 'robust_acc [0-9.]*%' $t/f2.txt) after 2 (clean $(grep -o 'test_acc [0-9.]*%' $t/f1.txt)); flip-trained: $(python3 -c "import json; print(json.load(open('$t/adv.json'))['robust_accuracy'])"); words flipped within padding and the vocabulary, deterministic; errors named"
[ $fail -eq 0 ]
