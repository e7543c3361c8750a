#!/bin/sh
# langid_data.sh -- the language-of-a-word dataset of models/langid.cdl (issue 14 item 4),
# from the Debian word lists (scripts/deps.sh installs them):
#
#   examples/langid_data.sh [OUTDIR [TRAIN_PER_LANG [TEST_PER_LANG [SEED]]]]
#
# writes OUTDIR/train.tsv and OUTDIR/test.tsv, `label<TAB>word` lines, the labels
# en de fr es it nl (LANGS="en:american-english de:ngerman ..." chooses others).
#   - every word is lowercased (str.lower: accents and other letters are kept as they
#     are, "Übersee" -> "übersee"; the tsv loader numbers code points);
#   - only words made of letters alone are kept (str.isalpha: "l'eau", "DNA-profielen",
#     "Californian's", "ad fundum" are dropped: an apostrophe or a hyphen would give the
#     language away or be an English possessive of a word that is there already), of
#     MINLEN..MAXLEN characters (3..16: the model's T is 16, so nothing is truncated);
#   - a word (after lowercasing) in more than one list is dropped from all of them: its
#     language cannot be told from its spelling;
#   - balanced: TRAIN_PER_LANG + TEST_PER_LANG words drawn per language (default
#     8000 + 1000) with Python's random.Random(SEED) (default 1) from the sorted list,
#     so the files are the same on every machine with the same packages;
#   - split by word: train and test share no word (every word occurs once).
# Lines are shuffled (the test file too) with the same generator.
set -eu
OUT=${1:-build/langid}
NTRAIN=${2:-8000}
NTEST=${3:-1000}
SEED=${4:-1}
LANGS=${LANGS:-"en:american-english de:ngerman fr:french es:spanish it:italian nl:dutch"}
MINLEN=${MINLEN:-3}
MAXLEN=${MAXLEN:-16}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
"$PY" - "$OUT" "$NTRAIN" "$NTEST" "$SEED" "$MINLEN" "$MAXLEN" $LANGS <<'PYEOF'
import random, sys
out, ntrain, ntest, seed, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
langs = [a.split(":", 1) for a in sys.argv[7:]]
words = {}
for lab, lst in langs:
    path = "/usr/share/dict/" + lst
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        sys.exit("langid_data.sh: %s (install the word list: scripts/deps.sh)" % e)
    words[lab] = {w.lower() for w in text.split("\n") if w.isalpha() and lo <= len(w) <= hi}
seen = {}
for lab in words:
    for w in words[lab]:
        seen[w] = seen.get(w, 0) + 1
r = random.Random(seed)
train, test = [], []
for lab, _ in langs:
    ws = sorted(w for w in words[lab] if seen[w] == 1)
    if len(ws) < ntrain + ntest:
        sys.exit("langid_data.sh: %s has %d words only (< %d + %d)" % (lab, len(ws), ntrain, ntest))
    pick = r.sample(ws, ntrain + ntest)
    train += [(lab, w) for w in pick[:ntrain]]
    test += [(lab, w) for w in pick[ntrain:]]
    print("%s: %d words in its list, %d in no other list; %d train, %d test" %
          (lab, len(words[lab]), len(ws), ntrain, ntest), file=sys.stderr)
for name, rows in (("train", train), ("test", test)):
    r.shuffle(rows)
    with open("%s/%s.tsv" % (out, name), "w", encoding="utf-8") as f:
        f.writelines("%s\t%s\n" % row for row in rows)
PYEOF
echo "langid_data.sh: $OUT/train.tsv ($(wc -l <"$OUT/train.tsv") lines), $OUT/test.tsv ($(wc -l <"$OUT/test.tsv") lines)" >&2
