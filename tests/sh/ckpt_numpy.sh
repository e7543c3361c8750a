#!/bin/bash
# ckpt_numpy.sh -- a cdl checkpoint is a plain safetensors file: numpy reads it with
# nothing but "8 bytes, JSON, slice the data", and the checksums in the metadata are
# what they claim (CRC-32 of each tensor; header CRC with its own digits zeroed).
# Skipped (exit 0) when no python3 (on PATH, or /usr/bin: pyenv shims may lack numpy)
# has numpy.
set -e
cd "$(dirname "$0")/../.."
PY=""
for p in python3 /usr/bin/python3; do
    if "$p" -c 'import numpy' 2>/dev/null; then PY=$p; break; fi
done
if [ -z "$PY" ]; then echo "skipped: python3 with numpy not available"; exit 0; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/w.c" <<'C'
#include "cdl.h"
#include <stdio.h>
/* A two-tensor model with an Adam-like optimizer, parameters 0.5 * i. */
static const cdl_tensor P[] = {
    {.name = "fc.weight", .dtype = CDL_F32, .offset = 0, .rank = 2, .dims = {2, 3}},
    {.name = "fc.bias", .dtype = CDL_F32, .offset = 6, .rank = 1, .dims = {2}},
};
static const cdl_model M = {.name = "np", .fingerprint = 0xfeedfacecafebeefull, .real_size = 4,
                            .batch = 1, .n_params = 2, .params = P, .param_count = 8, .train_count = 8};
int main(int argc, char **argv) {
    (void)argc;
    float p[8], m[8], v[8];
    for (int i = 0; i < 8; i++) { p[i] = 0.5f * (float)i; m[i] = -(float)i; v[i] = (float)(i * i); }
    cdl_net net = {.model = &M, .param = p, .step = 10, .seed = 5};
    cdl_optim o = {.model = &M, .n_slots = 2, .slot_name = {"adam.m", "adam.v"}, .slot = {m, v}, .t = 10};
    o.cfg.kind = CDL_OPT_ADAM;
    cdl_ckpt_meta meta = {.step = 10, .epoch = 2, .seed = 5, .batch_in_epoch = 3};
    if (cdl_ckpt_save(argv[1], &net, &o, &meta) < 0) { fprintf(stderr, "%s\n", cdl_last_error()); return 1; }
    return 0;
}
C
${CC:-cc} -std=c11 -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L -Iruntime "$tmp/w.c" runtime/ckpt.c runtime/data_file.c \
    runtime/json.c runtime/alloc.c -o "$tmp/w" -lz
"$tmp/w" "$tmp/m.ckpt"
"$PY" - "$tmp/m.ckpt" <<'PY'
import json, struct, sys, zlib
import numpy as np
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
hdr = json.loads(b[8:8 + n])
data = b[8 + n:]
meta = hdr.pop("__metadata__")
dt = {"F32": np.float32, "F64": np.float64, "I32": np.int32}
t = {}
for k, e in hdr.items():
    s, e2 = e["data_offsets"]
    t[k] = np.frombuffer(data[s:e2], dtype=dt[e["dtype"]]).reshape(e["shape"])
    assert zlib.crc32(data[s:e2]) == int(meta["crc32:" + k], 16), k
assert np.array_equal(t["fc.weight"], 0.5 * np.arange(6, dtype=np.float32).reshape(2, 3))
assert np.array_equal(t["fc.bias"], np.array([3.0, 3.5], dtype=np.float32))
assert np.array_equal(t["adam.v.fc.bias"], np.array([36, 49], dtype=np.float32))
assert sorted(t) == ["adam.m.fc.bias", "adam.m.fc.weight", "adam.v.fc.bias", "adam.v.fc.weight", "fc.bias", "fc.weight"]
assert meta["format"] == "cdl-ckpt 1" and meta["model"] == "np" and meta["fingerprint"] == "feedfacecafebeef"
assert (meta["step"], meta["epoch"], meta["seed"], meta["batch_in_epoch"]) == ("10", "2", "5", "3")
assert meta["optimizer"] == "adam" and meta["optimizer_t"] == "10" and meta["optimizer_slots"] == "adam.m,adam.v"
h = bytearray(b[8:8 + n])
i = h.index(b'"header_crc32":"') + 16
h[i:i + 8] = b"00000000"
assert zlib.crc32(bytes(h)) == int(meta["header_crc32"], 16)
assert sum(e2 - s for s, e2 in (e["data_offsets"] for e in hdr.values())) == len(data)
print("numpy reads the checkpoint: %d tensors, %d bytes" % (len(t), len(b)))
PY
