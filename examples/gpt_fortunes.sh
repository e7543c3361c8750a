#!/bin/bash
# gpt_fortunes.sh -- models/gpt.cdl against models/charlm.cdl (the LSTM) on the Debian
# `fortunes` corpus, character level, at the same wall time.
#
#   examples/gpt_fortunes.sh [SECONDS]        (default 900; `make` first)
#
# The corpus is every fortune file of /usr/share/games/fortunes (package fortunes,
# installed by scripts/deps.sh) concatenated: 2.58 MB, 114 distinct bytes, so both
# models are built with V = 128 (charlm: -D V=128).  `--data text:FILE` holds out the
# last tenth.  Both programs train side by side (--threads 1, one core each), each
# stopped after SECONDS by SIGINT, on which the trainer saves a mid-epoch checkpoint;
# then `eval` scores the first TEST_LIMIT windows of the held-out tail (windows of
# T = 64 characters at every offset; the mean is over every position of every window),
# and the mean cross-entropy in nats is printed as bits per character (/ ln 2).
# With a `generate` subcommand in the trainer, the GPT writes a sample.
#
# Environment: CDLC (build/cdlc), TEST_LIMIT (4096), KEEP (a directory to keep the
# corpus, programs and checkpoints in).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_BUDGET=${1:-900}
CDLC=${CDLC:-$root/build/cdlc}
TEST_LIMIT=${TEST_LIMIT:-4096}
F=/usr/share/games/fortunes
[ -x "$CDLC" ] || { echo "gpt_fortunes.sh: no compiler at $CDLC (run make)" >&2; exit 1; }
[ -f $F/fortunes ] || { echo "gpt_fortunes.sh: no $F (apt-get install fortunes)" >&2; exit 1; }
if [ -n "${KEEP:-}" ]; then dir=$KEEP; mkdir -p "$dir"
else dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT; fi
cd "$dir"
# shellcheck disable=SC2046  # file names without spaces
cat $(ls $F/* | grep -v '\.dat$' | grep -v '\.u8$') > fortunes.txt
"$CDLC" --exe "$root/models/gpt.cdl" -o gpt
"$CDLC" --exe -D V=128 "$root/models/charlm.cdl" -o charlm
echo "corpus: $(wc -c < fortunes.txt) bytes; training gpt and charlm for $SECONDS_BUDGET s each, side by side"
for m in gpt charlm; do
    (timeout -s INT "$SECONDS_BUDGET" ./$m train --data text:fortunes.txt --threads 1 --save $m.ckpt >$m.log 2>&1 || true) &
done
wait
for m in gpt charlm; do
    [ -f $m.ckpt ] || { echo "$m: no checkpoint: $(tail -2 $m.log)"; exit 1; }
    ./$m eval --load $m.ckpt --data text:fortunes.txt --test-limit "$TEST_LIMIT" --threads 1 --json >$m.eval
    python3 -c 'import json, math, sys
e = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
print("%-7s %s: %.3f bits/char on %d held-out windows" % (sys.argv[1], sys.argv[3], e["test_loss"] / math.log(2), e["examples"]))' \
        $m $m.eval "$(grep -o 'step [0-9]*' $m.log | tail -1)"
done
if ./gpt generate --help >/dev/null 2>&1; then   # the trainer has it since fb5fc73
    echo "sample (gpt generate --prompt 'Q: ' --tokens 60 --temperature 0.8 --seed 1):"
    ./gpt generate --load gpt.ckpt --prompt 'Q: ' --tokens 60 --temperature 0.8 --seed 1
fi
