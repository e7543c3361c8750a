#!/bin/bash
# bench/deploy.sh -- the figures of docs/deploy.md: for every zoo model, the inference
# export (cdlc --inference) of a checkpoint trained on 10,000 Fashion-MNIST images (the
# character model at its initialisation: it does not read images): the .c file's size,
# its object size at -Os (text + data: code and weights; the static arena is bss), the
# arena, and the batch-1 latency of the export, of the full runtime's eval forward
# (the static C at -D B=1 over libcdlrt) and of PyTorch eager (bench/deploy_torch.py,
# nn.LSTM and friends, the checkpoint's weights), all on one thread.  PyTorch also runs
# the export on 200 test images through ctypes: the last columns are how far the two
# disagree (per example max |export - torch| / max |torch|) and on how many of the 200
# predictions.  Times are the best of 5 rounds (of 400 calls for the C, of 400 for
# PyTorch) in microseconds per call: on a shared machine the best round is the one
# least disturbed by other jobs (the JSON keeps the medians too).  Not part of make
# test (a benchmark is never a test).
#
#   B=build bench/deploy.sh            prints the markdown table; JSON lines in $OUT/raw.jsonl
# Environment: B, DEPLOY_OUT (work directory, default $B/deploy-bench), DEPLOY_ONLY
# (extended regex over model names), DEPLOY_CFLAGS (the export's and the runtime C's
# flags, default -O3 -march=native: the runtime's kernels are built so; GCC 12 at -O2
# vectorises only loops whose trip count is a known multiple of the vector width, which
# leaves the export's kernels scalar), BENCH_PYTHON (default /usr/bin/python3).
set -u
cd "$(dirname "$0")/.." || exit 1
B=${B:-build}
OUT=${DEPLOY_OUT:-$B/deploy-bench}
ONLY=${DEPLOY_ONLY:-.}
CF=${DEPLOY_CFLAGS:--O3 -march=native}
PY=${BENCH_PYTHON:-/usr/bin/python3}
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
mkdir -p "$OUT"
: >"$OUT/raw.jsonl"
for m in models/*.cdl; do
    b=$(basename "$m" .cdl)
    echo "$b" | grep -qE "$ONLY" || continue
    d=$OUT/$b; mkdir -p "$d"
    echo "== $b" >&2
    if [ ! -f "$d/$b.ckpt" ]; then
        "$B/cdlc" "$m" --exe -o "$d/$b" || continue
        if [ $b = charlm ]; then
            "$B/cdlc" "$m" -o "$d/full.c" && cc -O1 -Iruntime -DMODEL_DESC=${b}_model tests/drivers/infer_check.c "$d/full.c" \
                "$B/libcdlrt.a" -o "$d/init" $(cat "$B/libcdlrt.libs") -ldl && "$d/init" init "$d/$b.ckpt" || continue
        else
            "$d/$b" train --epochs 1 --limit 10000 --test-limit 1000 --quiet --save "$d/$b.ckpt" || continue
        fi
    fi
    "$B/cdlc" "$m" --inference --weights "$d/$b.ckpt" -o "$d/${b}_infer.c" || continue
    (cd "$d" && gcc -std=c99 -Os -c ${b}_infer.c -o os.o) || continue
    read -r text data bss _ < <(size "$d/os.o" | tail -1)
    arena=$(grep -oE "_ARENA_BYTES [0-9]+" "$d/${b}_infer.h" | awk '{print $2}')
    params=$(grep -m1 -oE "^ \* From .*: [0-9]+ values" "$d/${b}_infer.c" | grep -oE "[0-9]+ values" | awk '{print $1}')
    up=${b^^}_INFER
    nout=$(grep -cE "^#define ${up}_[A-Z0-9_]+_SIZE .*/\* out" "$d/${b}_infer.h")
    nin=$(grep -m1 -E "^void ${b}_infer\(" "$d/${b}_infer.h" | grep -o "const" | wc -l)
    ins=""; outs=""
    for ((k = 0; k < nin; k++)); do ins="${ins}in[$k], "; done
    for ((k = 0; k < nout; k++)); do outs="${outs}out[$k], "; done
    printf '#include "%s_infer.h"\nvoid infer_call(const void *const *in, void *const *out, void *arena) { %s_infer(%s%sarena); }\n' \
        "$b" "$b" "$ins" "$outs" >"$d/shim.c"
    gcc -std=c99 $CF -fPIC -shared -I"$d" "$d/shim.c" "$d/${b}_infer.c" -o "$d/export.so" -lm || continue
    "$B/cdlc" "$m" -D B=1 -o "$d/b1.c" &&
        cc -std=c11 -D_POSIX_C_SOURCE=200809L $CF -Iruntime -DMODEL_DESC=${b}_model bench/deploy_bench.c "$d/b1.c" "$B/libcdlrt.a" -o "$d/bench" \
            $(cat "$B/libcdlrt.libs") -ldl || continue
    c=$("$d/bench" "$d/export.so" 2000) || continue
    t=$("$PY" bench/deploy_torch.py "$b" "$d/$b.ckpt" --export "$d/export.so" 2>"$d/torch.log") || t='{}'
    echo "{\"model\": \"$b\", \"params\": $params, \"c_bytes\": $(wc -c <"$d/${b}_infer.c"), \"os_text\": $text, \"os_data\": $data, \"os_bss\": $bss, \"arena\": $arena, \"c\": $c, \"torch\": $t}" >>"$OUT/raw.jsonl"
done
python3 - "$OUT/raw.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| model | weights | .c file | object at -Os (text+data) | arena | export | runtime (B=1) | PyTorch eager | vs PyTorch: max rel diff, predictions |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
for r in rows:
    c, t = r["c"], r["torch"]
    tu = "%.1f µs" % t["torch_us_min"] if "torch_us_min" in t else "n/a"
    cmp = "%.1e, %d/200" % (t["max_rel_diff_torch"], t["predictions_same_torch"]) if "max_rel_diff_torch" in t else "n/a"
    print("| %s | %d | %.0f KB | %.0f KB | %.1f KB | %.1f µs | %.1f µs | %s | %s |" % (
        r["model"], r["params"], r["c_bytes"] / 1024, (r["os_text"] + r["os_data"]) / 1024, r["arena"] / 1024,
        c["export_us_min"], c["runtime_us_min"], tu, cmp))
PY
