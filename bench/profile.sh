#!/bin/bash
# bench/profile.sh -- where one bench row spends its time, with perf (software clock, so
# it works in VMs without hardware counters).  Uses the programs `make bench` built.
#
#   bench/profile.sh ROW [static|static_onednn|tape] [THREADS]   e.g. bench/profile.sh lstm static 1
#
# Prints the share of samples per kind of work (GEMM inside OpenBLAS, convolution
# lowering, libm calls, elementwise kernels, optimizer, memset/memcpy, kernel/page
# faults) and the top symbols.  The run includes the program's setup (allocating and
# zeroing the slabs: memset and page faults); raise PROFILE_STEPS to make it negligible.  Environment: B (build dir, default build), BENCH_OUT
# (default $B/bench), PROFILE_STEPS (timed steps, default: the row's steps).
set -u
cd "$(dirname "$0")/.." || exit 1
row=${1:?usage: bench/profile.sh ROW [static|static_onednn|tape] [THREADS]}
target=${2:-static}
n=${3:-1}
B=${B:-build}
OUT=${BENCH_OUT:-$B/bench}
bin=$OUT/bin/${row}_$target
[ -x "$bin" ] || { echo "profile: $bin not found: run make bench first" >&2; exit 1; }
command -v perf >/dev/null || { echo "profile: perf is not installed" >&2; exit 1; }
read -r _ _ _ opt lr steps _ _ _ _ < <(awk -v r="$row" '$1 == r' bench/rows.txt)
[ -n "${opt:-}" ] || { echo "profile: no row $row in bench/rows.txt" >&2; exit 1; }
data=$(mktemp /tmp/cdl-profile.XXXXXX)
trap 'rm -f "$data" "$data.old"' EXIT
OPENBLAS_NUM_THREADS=$n OMP_NUM_THREADS=$n perf record -q -e cpu-clock -o "$data" \
    "$bin" --opt "$opt" --lr "$lr" --threads "$n" --steps "${PROFILE_STEPS:-$steps}" --repeats 3 --warmup 1 \
    | sed 's/"ms_runs".*//'
perf report -i "$data" --stdio --sort symbol 2>/dev/null | awk '
    /^ *[0-9.]+%/ {
        p = $1; sub(/%/, "", p); s = $NF == "-" ? $(NF - 2) : $NF
        for (i = 1; i <= NF; i++) if ($i == "[.]" || $i == "[k]") { s = $(i + 1); k = $i }
        c = k == "[k]" ? "kernel (page faults, timer)" \
          : s ~ /^sgemm_|^cblas_|^gemm_|^dgemm|_HASWELL|_SKYLAKEX|_ZEN/ ? "GEMM (OpenBLAS)" \
          : s ~ /dnnl|^0x0000|^\[unknown\]/ ? "oneDNN (its JIT kernels have no symbols)" \
          : s ~ /im2col|col2im|conv_(lower|widen|unwiden|pad)/ ? "conv lowering (im2col/col2im)" \
          : s ~ /^__(exp|log|tanh|expm1|log1p|sin|cos|erf|pow)/ ? "libm (exp, log, tanh ...)" \
          : s ~ /^__mem(set|move|cpy)/ ? "memset/memcpy" \
          : s ~ /optim/ ? "optimizer step" \
          : s ~ /^cdl_/ ? "cdl kernels (other)" : "other"
        cat[c] += p
        if (shown++ < 15) top = top sprintf("  %6.2f%%  %s\n", p, s)
    }
    END {
        print "by kind of work:"
        for (c in cat) printf "  %6.2f%%  %s\n", cat[c], c | "sort -rn"
        close("sort -rn")
        print "top symbols:"
        printf "%s", top
    }'
