#!/bin/bash
# compile_scaling.sh -- how cdlc's compile time and memory grow with the model's size
# (issue 11 item 3).  For each kind of model and size it compiles to static C and prints
# the CPU time (user + system: the wall time on a loaded machine says more about the
# other processes), the wall time and the peak resident memory (GNU time), then the
# growth exponent between consecutive sizes (log t2/t1 / log n2/n1: 1 is linear).
#
#   bench/compile_scaling.sh [KIND...]          kinds: layers ew params concat (default all)
#   bench/compile_scaling.sh --gen KIND N       print the model of that kind and size
#   SIZES="1000 10000" bench/compile_scaling.sh layers    other sizes
#
# Kinds (one statement per unit of size):
#   layers  h_i = relu(linear(h_{i-1}, 8)): a pipeline of layers (2 parameters each)
#   ew      h_i = tanh(h_{i-1}) after one linear layer: elementwise statements
#   params  param w_i: f32[8] and h_i = h_{i-1} + w_i: N explicit parameters
#   concat  one concat of N computed values of x (x * i): an N-input node
set -u
cd "$(dirname "$0")/.."
CDLC=${CDLC:-build/cdlc}

gen() {
    local kind=$1 n=$2
    echo "model m(B = 8) {"
    case $kind in
    layers)
        echo "  input x: f32[B, 8]  input y: i32[B]  h0 = x"
        awk -v n="$n" 'BEGIN { for (i = 1; i <= n; i++) printf "  h%d = relu(linear(h%d, 8))\n", i, i - 1 }' ;;
    ew)
        echo "  input x: f32[B, 8]  input y: i32[B]  h0 = linear(x, 8)"
        awk -v n="$n" 'BEGIN { for (i = 1; i <= n; i++) printf "  h%d = tanh(h%d)\n", i, i - 1 }' ;;
    params)
        echo "  input x: f32[B, 8]  input y: i32[B]  h0 = x"
        awk -v n="$n" 'BEGIN { for (i = 1; i <= n; i++) printf "  param w%d: f32[8] = zeros()\n  h%d = h%d + w%d\n", i, i, i - 1, i }' ;;
    concat)
        echo "  input x: f32[B, 2]  input y: i32[B]"
        awk -v n="$n" 'BEGIN { printf "  c = concat(["; for (i = 1; i <= n; i++) printf "x * %d, ", i; print "], 1)" }'
        echo "  h$n = linear(c, 8)" ;;
    *) echo "compile_scaling: unknown kind '$kind'" >&2; exit 2 ;;
    esac
    echo "  output h$n"
    echo "  loss cross_entropy(h$n, y)"
    echo "}"
}

if [ "${1:-}" = --gen ]; then gen "$2" "$3"; exit; fi
[ -x "$CDLC" ] || { echo "compile_scaling: no $CDLC (run make)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "compile_scaling: needs GNU time (/usr/bin/time, package 'time')" >&2; exit 1; }
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
kinds=${*:-layers ew params concat}
printf "%-7s %8s %10s %9s %10s %10s %7s\n" kind size "cpu s" "wall s" "peak MB" "C MB" growth
for kind in $kinds; do
    prev_n=; prev_t=
    for n in ${SIZES:-1000 2000 5000 10000 20000 50000 100000}; do
        gen "$kind" "$n" > "$t/m.cdl"
        if ! /usr/bin/time -f "%U %S %e %M" -o "$t/time" "$CDLC" "$t/m.cdl" -o "$t/m.c" 2>"$t/err"; then
            echo "$kind $n: cdlc failed: $(head -3 "$t/err")"; continue
        fi
        read -r u s e kb < "$t/time"
        cpu=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
        growth=$([ -n "$prev_n" ] && awk -v a="$prev_t" -v b="$cpu" -v m="$prev_n" -v n="$n" \
            'BEGIN { if (a > 0.05) printf "%.2f", log(b / a) / log(n / m); else printf "-" }' || echo "")
        printf "%-7s %8d %10s %9s %10d %10d %7s\n" "$kind" "$n" "$cpu" "$e" $((kb / 1024)) \
            $(( $(stat -c %s "$t/m.c") >> 20 )) "$growth"
        prev_n=$n; prev_t=$cpu
    done
done
