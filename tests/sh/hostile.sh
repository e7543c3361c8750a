#!/bin/bash
# hostile.sh -- the front end against hostile input: random bytes, truncated models,
# 10,000 nested parentheses, a 1 MB identifier, an empty file, NUL bytes, huge
# expressions, imports of a FIFO and of "-".  cdlc --check must end with status 1 and a "file:line:col: error:" line
# (truncations may also be valid programs: status 0), never with a signal or an
# internal error.
root=$(cd "$(dirname "$0")/../.." && pwd)
CDLC=${CDLC:-build/cdlc}
case $CDLC in /*) ;; *) CDLC="$PWD/$CDLC" ;; esac
cd "$root" || exit 1
[ -x "$CDLC" ] || { echo "hostile.sh: no compiler at $CDLC"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0

# check FILE [ok0]: status 1 with a located error (or 0 when ok0 is given)
check() {
    local f=$1 out rc
    out=$(timeout 20 "$CDLC" --check "$f" 2>&1 >/dev/null); rc=$?
    if [ $rc -eq 0 ] && [ -n "$2" ]; then pass=$((pass + 1)); return; fi
    if [ $rc -ne 1 ]; then
        echo "FAIL $(basename "$f"): exit status $rc"; printf '%s\n' "$out" | head -3 | cut -c1-200
        fail=$((fail + 1)); return
    fi
    if ! printf '%s\n' "$out" | grep -qE '^[^:]+:[0-9]+:[0-9]+: error: '; then
        echo "FAIL $(basename "$f"): no file:line:col: error: line"; printf '%s\n' "$out" | head -3 | cut -c1-200
        fail=$((fail + 1)); return
    fi
    pass=$((pass + 1))
}

# Generate every case in one python3 run (interpreter start-up is slow on a busy box).
python3 - "$tmp" <<'PY'
import random, sys
d = sys.argv[1]
def w(name, data):
    with open(d + '/' + name, 'wb') as f:
        f.write(data if isinstance(data, bytes) else data.encode())
w('empty.cdl', '')
w('blank.cdl', '\n\n   \n')
w('parens.cdl', 'model m(B = 1) { y = ' + '(' * 10000 + 'x' + ')' * 10000 + ' }\n')
w('brackets.cdl', 'model m(B = 1) { y = ' + '[' * 10000 + '\n')
w('minus.cdl', 'model m(B = 1) { y = ' + '-' * 10000 + 'x }\n')
w('longsum.cdl', 'model m(B = 1) { input x: f32[B, 2]\n y = x' + ' + x' * 100000 + '\n output y }\n')
w('longpipe.cdl', 'model m(B = 1) { input x: f32[B, 2]\n y = x' + ' |> relu' * 20000 + '\n output y }\n')
w('ident.cdl', 'model m(B = 1) { ' + 'a' * (1 << 20) + ' = 1 }\n')
w('string.cdl', 'model m(B = 1) { s = "' + 'a' * (1 << 20) + '\n}\n')
w('many.cdl', 'model m(B = 1) {\n  input x: f32[B, 2]\n' + '  y = relu(x)\n' * 50000 + '}\n')
w('nul.cdl', b'model m(B = 1) {\n  input x: f32[B, 2]\0\n  output x\n}\n')
w('chain.cdl', ''.join('block b%d(x) { return b%d(x) }\n' % (i, i + 1) for i in range(200)) +
  'block b200(x) { return x }\nmodel m(B = 1) { input x: f32[B, 2]\n output b0(x) as y }\n')
for seed in range(1, 41):       # random bytes, half of them after a valid prefix
    r = random.Random(seed)
    pre = b'model m(B = 4) { input x: f32[B, 8]\n' if seed % 2 else b''
    w('rand%d.cdl' % seed, pre + bytes(r.randrange(256) for _ in range(r.randrange(1, 4000))))
toks = ('model block input param output loss entry for in reversed return import train as true false '
        '( ) [ ] { } , : = + - * / @ ** |> .. ; x y B H 0 1 64 2.5 "s" linear relu f32 i32 # \n').split(' ')
for seed in range(1, 41):       # random token soup after a valid start
    r = random.Random(seed)
    w('soup%d.cdl' % seed, 'model m(B = 4, H = 8) { input x: f32[B, H]\n' +
      ' '.join(r.choice(toks) for _ in range(r.randrange(1, 300))) + '\n')
PY
for f in "$tmp"/*.cdl; do check "$f"; done
# every model truncated at many points
for m in models/*.cdl; do
    size=$(wc -c < "$m")
    step=$((size / 8 + 1))
    for ((cut = 0; cut < size; cut += step)); do
        head -c $cut "$m" > "$tmp/trunc.cdl"
        check "$tmp/trunc.cdl" ok0
    done
done
# an import of a FIFO (nobody writes it: reading would wait forever) or of standard input
mkdir -p "$tmp/imp" && mkfifo "$tmp/imp/pipe.cdl"
printf 'import "pipe.cdl"\nmodel m(B = 2) {\n    input x: f32[B, 3]\n    y = relu(x)\n    output y\n}\n' > "$tmp/imp/fifo.cdl"
check "$tmp/imp/fifo.cdl"
(cd "$tmp/imp" && printf 'import "-"\nmodel m(B = 2) {\n    input x: f32[B, 3]\n    y = relu(x)\n    output y\n}\n' > stdin.cdl &&
    out=$(timeout 20 "$CDLC" --check stdin.cdl 2>&1 </dev/zero); rc=$?
    [ $rc -eq 1 ] && printf '%s\n' "$out" | grep -q "^stdin.cdl:1:1: error: cannot open '-'") \
    && pass=$((pass + 1)) || { echo "FAIL: import \"-\" from a file in the current directory"; fail=$((fail + 1)); }
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
