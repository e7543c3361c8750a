#!/bin/bash
# gpt_generate_bench.sh -- tokens per second of models/gpt.cdl's generation: the key/value
# cache (entry `next`) against recomputing the prefix (entry `next_full`), at N = 64 and
# N = 511 new tokens, and the same model in PyTorch from the same checkpoint
# (examples/gpt_generate_torch.py: a Hugging Face style loop with past_key_values, and
# without a cache), all greedy, one thread.
#
#   examples/gpt_generate_bench.sh [GPT_CKPT]          (`make` first; torch optional)
#
# 1. GPT_CKPT (a checkpoint of models/gpt.cdl as built, T = 64, e.g. gpt_fortunes.sh's
#    gpt.ckpt kept with KEEP=DIR): 61 greedy tokens after "The " with cdl and with
#    PyTorch; the texts must be the same.
# 2. The same model built with -D T=512, trained 2 steps on the fortunes corpus (its
#    weights do not change the cost): tokens/s at N = 64 and 511 for each way.
# The cdl figure is what `gpt generate` prints on stderr (the N tokens after the
# prompt's first call, drawing included); PyTorch's is the best of 3 runs.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
CDLC=${CDLC:-$root/build/cdlc}
PY=/usr/bin/python3
F=/usr/share/games/fortunes
[ -x "$CDLC" ] || { echo "gpt_generate_bench.sh: no compiler at $CDLC (run make)" >&2; exit 1; }
torch=1; $PY -c 'import torch' 2>/dev/null || { torch=0; echo "(no torch in $PY: cdl rows only)"; }
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
ckpt=${1:-}
[ -z "$ckpt" ] || ckpt=$(cd "$(dirname "$ckpt")" && pwd)/$(basename "$ckpt")
cd "$dir"
tps() { sed -n 's/.*(\([0-9.]*\) tokens\/s).*/\1/p' "$1"; }
if [ -n "$ckpt" ]; then
    "$CDLC" --exe "$root/models/gpt.cdl" -o gpt64
    ./gpt64 generate --load "$ckpt" --prompt "The " --tokens 61 --top-k 1 --threads 1 >cdl.txt 2>cdl.err || { cat cdl.err; exit 1; }
    echo "cdl   (T = 64, 61 tokens, $(tps cdl.err) tokens/s): $(head -c 200 cdl.txt | tr '\n' '|')"
    if [ $torch = 1 ]; then
        OMP_NUM_THREADS=1 $PY "$root/examples/gpt_generate_torch.py" "$ckpt" --prompt "The " --tokens 61 >torch.out
        head -n -1 torch.out >torch.txt
        echo "torch (T = 64, 61 tokens, $(tail -1 torch.out | sed 's/.*"tokens_per_s": \([0-9.]*\).*/\1/') tokens/s): $(head -c 200 torch.txt | tr '\n' '|')"
        cmp -s cdl.txt torch.txt && echo "the greedy texts are the same" || echo "THE GREEDY TEXTS DIFFER"
    fi
fi
cat $(ls $F/* | grep -v '\.dat$' | grep -v '\.u8$') > fortunes.txt
"$CDLC" --exe -D T=512 -D B=4 "$root/models/gpt.cdl" -o gpt512
./gpt512 train --data text:fortunes.txt --limit 8 --test-limit 4 --batch 4 --epochs 1 --threads 1 --quiet --save g512.ckpt >/dev/null
printf '| way | N = 64 | N = 511 |\n|---|---|---|\n'
for e in next next_full; do
    for n in 64 511; do
        ./gpt512 generate --load g512.ckpt --entry $e --tokens $n --top-k 1 --threads 1 >/dev/null 2>g.err
        eval "r_$n=\$(tps g.err)"
    done
    echo "| cdl \`$e\` | $r_64 | $r_511 |"
done
if [ $torch = 1 ]; then
    for n in 64 511; do
        OMP_NUM_THREADS=1 $PY "$root/examples/gpt_generate_torch.py" g512.ckpt --tokens $n | tail -1 >t$n.json
    done
    f() { $PY -c 'import json, sys; v = json.load(open(sys.argv[1]))[sys.argv[2]]; print("%.1f" % v)' "$@"; }
    echo "| PyTorch, past_key_values | $(f t64.json tokens_per_s) | $(f t511.json tokens_per_s) |"
    echo "| PyTorch, no cache | $(f t64.json nocache_tokens_per_s) | $(f t511.json nocache_tokens_per_s) |"
fi
