#!/bin/bash
# bench/run.sh -- `make bench`: cdl static (with each kernel backend), cdl tape, PyTorch
# eager and TorchScript side by side, plus the sgemm reference of each backend and the
# machine's measured peak, all in one run.
#
#   B=build bench/run.sh          (make bench runs it after `make all`)
#
# First measures the machine's limits (bench/peak.c: one core's fp32 FMA peak, the
# triad bandwidth) for each thread count.  Builds every bench model (bench/models/*.cdl,
# rows in bench/rows.txt) with $B/cdlc as static C and as --target=tape, links the static
# C with bench/driver.c and each backend's runtime (OpenBLAS: framework "static",
# oneDNN: "static_onednn") and the tape build with $B/libcdlrt.a, then for each thread
# count (1, 2), in BENCH_ROUNDS rounds, and each row runs every framework in a fresh
# process with the same thread environment (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS,
# OMP_WAIT_POLICY=PASSIVE at 2 threads, glibc malloc thresholds raised) and collects one
# JSON line per run (with its "round") into $OUT/raw.jsonl.  Each round runs the
# frameworks of a row back to back, in the opposite order from the round before, so a
# change of machine load hits all of them alike; report.py takes the median over the
# rounds of each time and of each ratio between two frameworks' times of one round.
# bench/report.py turns them into the markdown tables (printed) and $OUT/results.json.
# The PyTorch rows need /usr/bin/python3 with torch; without it they are skipped (the
# report says so).
# A failing build or run never stops the bench: it becomes an "error" record.
#
# Environment:
#   B                  build directory holding cdlc and libcdlrt.a (default build)
#   BENCH_OUT          work directory (default $B/bench)
#   BENCH_THREADS      thread counts (default "1 2")
#   BENCH_SCALE        multiplies the timed steps (e.g. 0.25 for a quick look)
#   BENCH_ROUNDS       rounds (default 3); each run makes max(3, repeats / rounds) repeats
#   BENCH_ONLY         extended regex: run only the rows whose name matches
#   BENCH_FRAMEWORKS   subset of "static static_onednn tape torch_eager torchscript"
#   BENCH_LATENCY      1 (default): also time batch-1 inference (eval forward) once per
#                      model, cdl (each backend, tape) against PyTorch eager; 0: skip
#   BENCH_EPOCH        1 (default): also time one whole Fashion-MNIST epoch of `make run`'s
#                      model, loading and evaluation included (bench/epoch.py), each
#                      backend against PyTorch with its DataLoader, at 1 thread; 0: skip
#   BENCH_RT_openblas, BENCH_RT_onednn  the two runtimes (defaults $B/libcdlrt.a and
#                      $B/onednn/libcdlrt.a, what make bench builds); each links with the
#                      libraries listed next to it (libcdlrt.libs)
#   BENCH_RESULTS      where the JSON goes (default $B/bench/results.json: generated,
#                      never kept in git; docs/benchmarks.md keeps the tables)
#   BENCH_PYTHON       the python that runs torch_bench.py (default /usr/bin/python3)
#   BENCH_BLAS_CORETYPE  OPENBLAS_CORETYPE for every run (PyTorch's too), e.g. SkylakeX:
#                      OpenBLAS 0.3.21 takes AVX-512 Zen 4/5 CPUs for Haswell (AVX2
#                      kernels); unset = OpenBLAS's own choice, what users get
#   BENCH_CFLAGS       flags for the generated code + driver (default -O2 -march=native,
#                      what `cdlc --exe` uses)
set -u
cd "$(dirname "$0")/.." || exit 1

B=${B:-build}
OUT=${BENCH_OUT:-$B/bench}
THREADS=${BENCH_THREADS:-"1 2"}
SCALE=${BENCH_SCALE:-1}
ROUNDS=${BENCH_ROUNDS:-3}
ONLY=${BENCH_ONLY:-.}
FRAMEWORKS=${BENCH_FRAMEWORKS:-"static static_onednn tape torch_eager torchscript"}
RESULTS=${BENCH_RESULTS:-$OUT/results.json}
CFLAGS_GEN=${BENCH_CFLAGS:--O2 -march=native}
CC=${CC:-cc}
PY=${BENCH_PYTHON:-/usr/bin/python3}
CDLC=$B/cdlc
RT=$B/libcdlrt.a
RT_OPENBLAS=${BENCH_RT_openblas:-$RT}
RT_ONEDNN=${BENCH_RT_onednn:-$B/onednn/libcdlrt.a}
rt_libs() { cat "${1%.a}.libs" 2>/dev/null; } # the libraries a runtime links with
TUNABLES="glibc.malloc.mmap_threshold=67108864:glibc.malloc.trim_threshold=268435456"
RUN_TIMEOUT=${BENCH_TIMEOUT:-300}
LATENCY=${BENCH_LATENCY:-1}

die() { echo "bench: $*" >&2; exit 1; }
[[ "$ROUNDS" =~ ^[1-9][0-9]?$ ]] || die "BENCH_ROUNDS must be a number from 1 to 99, not '$ROUNDS'"
ROUND=0 # the round being run (0: the peak, before the rounds)
[ -x "$CDLC" ] || die "$CDLC not found: run make first"
[ -f "$RT" ] || die "$RT not found: run make first"
command -v python3 >/dev/null || die "python3 (standard library only) is needed for the report"
mkdir -p "$OUT/gen" "$OUT/bin" "$OUT/log" || die "cannot make $OUT"
[ -n "$(rt_libs "$RT")" ] || die "${RT%.a}.libs not found: run make first"
RAW=$OUT/raw.jsonl
: >"$RAW"
t_start=$(date +%s)

has() { case " $FRAMEWORKS " in *" $1 "*) return 0 ;; esac; return 1; }

# $1 as the inside of a JSON string: one line, backslashes and quotes escaped.
json_esc() { printf '%s' "$1" | tr '\n\t\r' '   ' | sed 's/\\/\\\\/g; s/"/\\"/g'; }

# One JSON record describing a failure (message cut to one line, quotes escaped).
error_rec() { # framework name threads message
    local msg
    msg=$(json_esc "$4" | cut -c1-400)
    printf '{"framework": "%s", "name": "%s", "threads": %s, "round": %s, "error": "%s"}\n' "$1" "$2" "$3" \
        "$ROUND" "$msg" >>"$RAW"
}

# Run "$@" with the thread environment for $1 threads; append its last stdout line
# (a JSON record, given the round's number) to raw.jsonl, or an error record.
run_one() { # framework name threads cmd...
    local fw=$1 name=$2 n=$3 log=$OUT/log/$2-$1-t$3-r$ROUND
    shift 3
    local wait=(-u OMP_WAIT_POLICY) core=()
    [ "$n" -gt 1 ] && wait=(OMP_WAIT_POLICY=PASSIVE)
    [ -n "${BENCH_BLAS_CORETYPE:-}" ] && core=(OPENBLAS_CORETYPE="$BENCH_BLAS_CORETYPE")
    env "${wait[@]}" "${core[@]}" OPENBLAS_NUM_THREADS="$n" OMP_NUM_THREADS="$n" MKL_NUM_THREADS="$n" \
        GLIBC_TUNABLES="$TUNABLES" timeout "$RUN_TIMEOUT" "$@" >"$log.out" 2>"$log.err"
    local rc=$? line
    line=$(grep '^{' "$log.out" | tail -1 | sed "s/^{/{\"round\": $ROUND, /")
    if [ $rc -eq 0 ] && [ -n "$line" ]; then
        echo "$line" >>"$RAW"
        echo "$line" | awk -v fw="$fw" -v name="$name" -v n="$n" '{
            if (match($0, /"ms_median": [0-9.]+/)) v = sprintf("%.3f ms/step", substr($0, RSTART + 13, RLENGTH - 13))
            else if (match($0, /"fma512_gflops": [0-9.]+/)) v = sprintf("one core %.1f GFLOP/s fp32 FMA", substr($0, RSTART + 17, RLENGTH - 17))
            else if (match($0, /"gflops": [0-9.]+/)) v = sprintf("%.1f GFLOP/s", substr($0, RSTART + 10, RLENGTH - 10))
            printf "  %-13s %-14s t=%s  %s\n", fw, name, n, v }'
    else
        error_rec "$fw" "$name" "$n" "exit $rc: $(tail -3 "$log.err" 2>/dev/null) $(tail -1 "$log.out" 2>/dev/null)"
        printf '  %-13s %-14s t=%s  FAILED (exit %s, see %s.err)\n' "$fw" "$name" "$n" "$rc" "$log"
    fi
}

# ------------------------------------------------------------------------ rows
rows=()
while read -r name model batch opt lr steps repeats warmup _; do
    case "$name" in ''|'#'*) continue ;; esac
    echo "$name" | grep -Eq -- "$ONLY" || continue
    rows+=("$name $model $batch $opt $lr $steps $repeats $warmup")
done <bench/rows.txt
[ ${#rows[@]} -gt 0 ] || die "no row matches BENCH_ONLY=$ONLY"

# ------------------------------------------------------------------------ meta
torch_ok=0
torch_note="torch rows skipped: $PY has no torch"
if has torch_eager || has torchscript; then
    if [ -x "$PY" ] && tv=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null); then
        torch_ok=1
        torch_note="torch $tv"
    fi
else
    torch_note="torch rows not requested"
fi
cpu="$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //') (family $(grep -m1 'cpu family' /proc/cpuinfo | sed 's/.*: //'), model $(grep -m1 '^model[[:space:]]*:' /proc/cpuinfo | sed 's/.*: //'))"
# The command that reproduces this run: make bench plus whatever was overridden.
command="make bench"
[ "$B" != build ] && command="make B=$B bench"
for v in BENCH_THREADS BENCH_SCALE BENCH_ROUNDS BENCH_ONLY BENCH_FRAMEWORKS BENCH_PYTHON BENCH_CFLAGS BENCH_BLAS_CORETYPE BENCH_LATENCY BENCH_EPOCH; do
    [ -n "${!v:-}" ] && command="$v='${!v}' $command"
done
{
    printf '{"framework": "meta", "date": "%s", "host": "%s", "cpu": "%s", "cores": %s, ' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(uname -n)" "$cpu" "$(nproc)"
    printf '"kernel": "%s", "cc": "%s", "cflags": "%s", "torch": "%s", ' \
        "$(uname -r)" "$($CC --version | head -1)" "$(json_esc "$CFLAGS_GEN")" "$(json_esc "$torch_note")"
    printf '"command": "%s", "scale": "%s", "rounds": %s, "threads": "%s", ' "$(json_esc "$command")" "$SCALE" \
        "$ROUNDS" "$THREADS"
    printf '"loadavg_start": "%s"}\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$RAW"

# ------------------------------------------------------------------------ build
echo "bench: building into $OUT (cdlc: $CDLC, runtimes: $RT_OPENBLAS, $RT_ONEDNN)"
# The runtime each framework links with ("" = not available).
declare -A fw_rt=([static]=$RT_OPENBLAS [tape]=$RT [static_onednn]=$RT_ONEDNN)
for fw in static static_onednn; do
    if has $fw && [ -z "$(rt_libs "${fw_rt[$fw]}")" ]; then
        echo "  $fw: no runtime at ${fw_rt[$fw]} (make BACKEND=onednn B=$(dirname "${fw_rt[$fw]}"))"
        fw_rt[$fw]=""
    fi
done
# The sgemm reference through each backend's runtime (cdl_gemm_f32, the runtime's door).
for fw in static static_onednn; do
    sg=sgemm${fw#static}
    has $fw && [ -n "${fw_rt[$fw]}" ] || continue
    if ! $CC -std=c11 $CFLAGS_GEN -Wall -Wextra -Werror -Iruntime bench/sgemm.c "${fw_rt[$fw]}" $(rt_libs "${fw_rt[$fw]}") \
        -o "$OUT/bin/$sg" 2>"$OUT/log/$sg.build"; then
        error_rec "$sg" "$sg" 0 "build: $(tail -3 "$OUT/log/$sg.build")"
    fi
done
# The kernel set OpenBLAS picked for this CPU (it prints "Core: X" when verbose).
if [ -x "$OUT/bin/sgemm" ]; then
    blas_core=$(env ${BENCH_BLAS_CORETYPE:+OPENBLAS_CORETYPE="$BENCH_BLAS_CORETYPE"} OPENBLAS_VERBOSE=2 OPENBLAS_NUM_THREADS=1 "$OUT/bin/sgemm" --repeats 1 --batch 8 2>&1 | sed -n 's/^Core: //p' | head -1)
    [ -n "$blas_core" ] && printf '{"framework": "meta", "openblas_core": "%s"}\n' "$blas_core" >>"$RAW"
fi

# ------------------------------------------------------------------------ peak
# The machine's limits, before anything else runs: one core's fp32 FMA rate and the
# triad bandwidth with n threads (bench/peak.c); report.py sets every row against them.
if $CC -std=c11 $CFLAGS_GEN -Wall -Wextra -Werror bench/peak.c -o "$OUT/bin/peak" -lpthread 2>"$OUT/log/peak.build"; then
    for n in $THREADS; do
        run_one peak peak "$n" "$OUT/bin/peak" --threads "$n"
    done
else
    error_rec peak peak 0 "build: $(tail -3 "$OUT/log/peak.build")"
fi

# build_model name model batch target(static|tape): generate + compile; 0 on success.
build_model() {
    local name=$1 model=$2 batch=$3 target=$4
    local gen=$OUT/gen/${name}_${target%_onednn}.c bin=$OUT/bin/${name}_$target log=$OUT/log/$name-$target.build
    local topt="" dopt="" rt=${fw_rt[$target]}
    [ "$target" = tape ] && topt="--target=tape" && dopt="-DBENCH_TAPE"
    if [ -z "$rt" ]; then
        echo "no runtime for $target" >"$log.msg"
        return 1
    fi
    if ! "$CDLC" $topt -D "B=$batch" "bench/models/$model.cdl" -o "$gen" >"$log" 2>&1; then
        echo "cdlc $topt failed: $(grep -m2 -E 'error|cdlc' "$log")" >"$log.msg"
        return 1
    fi
    if ! $CC -std=c11 $CFLAGS_GEN -Iruntime -DBENCH_MODEL="${model}_model" $dopt bench/driver.c "$gen" \
        "$rt" $(rt_libs "$rt") -o "$bin" >>"$log" 2>&1; then
        echo "cc failed on the generated $target code: $(grep -m2 'error' "$log")" >"$log.msg"
        return 1
    fi
    return 0
}

declare -A built
for r in "${rows[@]}"; do
    read -r name model batch opt lr steps repeats warmup <<<"$r"
    for target in static static_onednn tape; do
        has "$target" || continue
        if build_model "$name" "$model" "$batch" "$target"; then
            built[$name-$target]=1
        else
            built[$name-$target]=0
            echo "  $target $name: $(cat "$OUT/log/$name-$target.build.msg")"
        fi
    done
done

# ------------------------------------------------------------------------ run
run_sgemm() { # threads: the sgemm reference of each backend built
    for sg in sgemm sgemm_onednn; do
        [ -x "$OUT/bin/$sg" ] && run_one "$sg" "$sg" "$1" "$OUT/bin/$sg" --threads "$1" --repeats 5
    done
}
scaled() { # steps -> max(1, steps * SCALE)
    awk -v s="$1" -v k="$SCALE" 'BEGIN { n = int(s * k + 0.5); print (n < 1 ? 1 : n) }'
}
# The frameworks in the order of this round: every other round the other way round.
round_order() {
    local fws=(static static_onednn tape torch_eager torchscript) i
    if [ $((ROUND % 2)) = 1 ]; then echo "${fws[@]}"
    else for ((i = ${#fws[@]} - 1; i >= 0; i--)); do printf '%s ' "${fws[i]}"; done; fi
}

# run_fw framework mode name model batch threads args...: one run of one framework on
# one row, mode train (training steps) or latency (batch-1 eval forward passes; no
# TorchScript), args passed on to the driver or to torch_bench.py.
run_fw() {
    local fw=$1 mode=$2 name=$3 model=$4 batch=$5 n=$6 label=$3 pm=eager lat=()
    shift 6
    [ "$mode" = latency ] && label=$name-latency && lat=(--latency)
    case $fw in
    static | static_onednn | tape)
        if [ "${built[$name-$fw]}" = 1 ]; then
            run_one "$fw" "$label" "$n" "$OUT/bin/${name}_$fw" --framework "$fw" --name "$name" --mode "$mode" "$@"
        elif [ "$mode" = train ]; then
            error_rec "$fw" "$name" "$n" "$(cat "$OUT/log/$name-$fw.build.msg")"
        fi ;;
    torch_eager | torchscript)
        [ $torch_ok = 1 ] || return 0
        [ $fw = torchscript ] && pm=script && [ "$mode" = latency ] && return 0
        run_one "$fw" "$label" "$n" "$PY" bench/torch_bench.py --model "$model" --batch "$batch" \
            --mode $pm --name "$name" "${lat[@]}" "$@" ;;
    esac
}

for n in $THREADS; do
    for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
        echo "bench: $n thread(s), round $ROUND of $ROUNDS"
        declare -A lat_done=()
        # The sgemm references run right before the wide MLP (so that both see the same
        # machine), or first when that row is not selected.
        sgemm_done=0
        case " ${rows[*]} " in *" wide_mlp "*) ;; *) sgemm_done=1 ;; esac
        [ $sgemm_done = 1 ] && run_sgemm "$n"
        for r in "${rows[@]}"; do
            read -r name model batch opt lr steps repeats warmup <<<"$r"
            if [ "$model" = wide_mlp ] && [ $sgemm_done = 0 ]; then
                run_sgemm "$n"
                sgemm_done=1
            fi
            steps=$(scaled "$steps")
            rep=$(((repeats + ROUNDS - 1) / ROUNDS))
            [ $rep -lt 3 ] && [ $repeats -ge 3 ] && rep=3
            common=(--opt "$opt" --lr "$lr" --threads "$n" --steps "$steps" --repeats "$rep" --warmup "$warmup")
            for fw in $(round_order); do
                has $fw && run_fw $fw train "$name" "$model" "$batch" "$n" "${common[@]}"
            done
            # batch-1 latency once per model, each repeat about 50 ms x BENCH_SCALE
            if [ "$LATENCY" = 1 ] && [ -z "${lat_done[$model]:-}" ]; then
                lat_done[$model]=1
                budget=$(awk -v k="$SCALE" 'BEGIN { b = int(50 * k + 0.5); print (b < 1 ? 1 : b) }')
                for fw in $(round_order); do
                    has $fw && run_fw $fw latency "$name" "$model" "$batch" "$n" --threads "$n" --repeats 5 \
                        --warmup 5 --budget-ms "$budget"
                done
            fi
        done
    done
done
ROUND=0
printf '{"framework": "meta", "loadavg_end": "%s", "seconds": %s}\n' \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$(($(date +%s) - t_start))" >>"$RAW"

# ------------------------------------------------------------------------ report
python3 bench/report.py "$RAW" --rows bench/rows.txt --json "$RESULTS" --md "$OUT/results.md"

# ------------------------------------------------------------------------ end to end
# one whole epoch as `make run` trains it (its own table, appended to the report)
if [ "${BENCH_EPOCH:-1}" = 1 ]; then
    { python3 bench/epoch.py --cdlc "$CDLC" --rt "$RT_OPENBLAS" --rt-onednn "$RT_ONEDNN" --python "$PY" \
        --rounds "$ROUNDS" --work "$OUT/epoch" --json "$OUT/epoch.json" ||
        echo "bench: the end-to-end epoch row failed"; } | tee -a "$OUT/results.md"
fi
