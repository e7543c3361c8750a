#!/bin/bash
# compile_budget.sh -- the compiler's own limits are user errors (exit 1, file:line:col
# or "cdlc: error:"), never an internal error, a hang or all the memory: blocks that
# call blocks twice, 40 deep (2^40 inlined calls), are refused before inlining with the
# chain named; a graph that passes --max-nodes while inlining stops there; running out
# of memory says so; the runtime's names (cdl, cdl_...) are not model names.
set -u
B=${B:-build}
CDLC=${CDLC:-$B/cdlc}
t=$(mktemp -d); trap 'rm -rf $t' EXIT
fail=0
bad() { echo "FAIL $*"; fail=$((fail + 1)); }

# expect_error NAME PATTERN cdlc-args...: exit status 1, PATTERN in the output, no internal error.
expect_error() {
    local name=$1 pat=$2; shift 2
    timeout 60 "$CDLC" --check "$@" >"$t/out" 2>&1; local rc=$?
    if [ $rc -ne 1 ] || ! grep -q -- "$pat" "$t/out" || grep -q "internal error" "$t/out"; then
        bad "$name: exit $rc: $(head -3 "$t/out")"
    fi
}

{ echo 'block d0(x) { return tanh(x) }'
  for i in $(seq 1 40); do echo "block d$i(x) { return d$((i-1))(x) + d$((i-1))(x * 2) }"; done
  echo 'model m(B = 8) { input x: f32[B, 16]  input y: i32[B]  h = linear(d40(x), 10)  output h  loss cross_entropy(h, y) }'
} > "$t/dbl.cdl"
expect_error doubling "dbl.cdl:41:7: error: inlining blocks would make about 3.3e+12 nodes.*'d40' calls 'd39' 2 times" "$t/dbl.cdl"

cat > "$t/stack.cdl" <<'CDL'
block stack3(x) {
    return x |> linear(4) |> linear(4) |> linear(4)
}
model m(B = 8) {
    input x: f32[B, 4]
    output stack3(stack3(stack3(x))) as h
}
CDL
expect_error max-nodes "stack.cdl:2:.*: error: the model passes 20 nodes while inlining stack3" --max-nodes=20 "$t/stack.cdl"
"$CDLC" --check --max-nodes=100 "$t/stack.cdl" >"$t/out" 2>&1 || bad "stack.cdl under --max-nodes=100: $(head -2 "$t/out")"
"$CDLC" --check --max-nodes=x "$t/stack.cdl" >/dev/null 2>&1; [ $? -eq 2 ] || bad "--max-nodes=x is not a usage error"

# Out of memory (a 400 MB address space; not under ASan, which needs far more).
case "${CDL_CFLAGS:-}$B" in
*sanitize*|*asan*) ;;
*) (ulimit -v 400000; exec "$CDLC" --check --max-nodes=1000000000000000 "$t/dbl.cdl") >"$t/out" 2>&1; rc=$?
   { [ $rc -eq 1 ] && grep -q "^cdlc: error: out of memory" "$t/out" && ! grep -q "internal error" "$t/out"; } ||
       bad "out of memory: exit $rc: $(tail -2 "$t/out")" ;;
esac

for name in cdl cdl_net cdl_ckpt cdl_optim cdl_dataset CDL_x; do
    printf 'model %s(B = 4) { input x: f32[B, 4]  input y: i32[B]  h = linear(x, 2)  output h  loss cross_entropy(h, y) }\n' \
        "$name" > "$t/n.cdl"
    expect_error "model $name" "n.cdl:1:7: error: model name '$name' is reserved" "$t/n.cdl"
done
printf 'model cdlx(B = 4) { input x: f32[B, 4]  output x }\n' > "$t/ok.cdl"
"$CDLC" --check "$t/ok.cdl" >"$t/out" 2>&1 || bad "model cdlx refused: $(head -1 "$t/out")"

echo "compile limits: $fail failed"
[ $fail -eq 0 ]
