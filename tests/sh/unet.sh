#!/bin/bash
# The denoising U-Net (models/unet.cdl) and examples/unet_demo on small slices of
# Fashion-MNIST (seconds): two training steps; the demo's clean-input error equals the
# trainer's eval test loss (the denoise entry is the model's network); its noisy-input
# error is sigma^2 (the noise it adds has the asked variance); its PSNR lines are
# 10 log10(1 / MSE); the PNG has 3 rows of 10 class columns; bad usage is refused.
# Environment: B (build dir), CDLC, CDLRT, CC, CDL_CFLAGS as set by scripts/run-tests.sh.
. "$(dirname "$0")/../lib.sh"
fail() { echo "FAIL: $*"; exit 1; }

# the demo: built by `make` (block "unet" of the Makefile); else build it here
demo=$B/examples/unet_demo
if [ ! -x "$demo" ]; then
    "$CDLC" models/unet.cdl -o "$t/unet.c" || fail "cdlc models/unet.cdl"
    cc_rt -O2 -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L -I"$t" \
        examples/unet_demo.c "$t/unet.c" -o "$t/unet_demo" || fail "cc examples/unet_demo.c"
    demo=$t/unet_demo
fi
demo=$(realpath "$demo")
"$CDLC" models/unet.cdl --exe -o "$t/unet" >"$t/log" 2>&1 || fail "cdlc --exe: $(tail -3 $t/log)"
cd "$t"
./unet train --epochs 1 --limit 128 --test-limit 100 --workers 0 --threads 1 --quiet --save unet.ckpt \
    >train.log 2>&1 || fail "unet train: $(tail -2 train.log)"
./unet eval --load unet.ckpt --test-limit 100 --threads 1 --json >eval.json 2>&1 || fail "unet eval: $(tail -1 eval.json)"
"$demo" --load unet.ckpt --test-limit 100 --sigma 0.5 --scale 1 --out fig.png >demo.log 2>&1 || fail "unet_demo: $(tail -2 demo.log)"
python3 - <<'EOF' || fail "unet_demo's figures: $(cat demo.log)"
import json, math, re, struct, sys
ev = json.loads(open("eval.json").read().strip().splitlines()[-1])
rows = {}
for line in open("demo.log"):
    m = re.match(r"(noisy input|denoised|clean input, output): +MSE ([0-9.]+) +PSNR ([0-9.-]+) dB", line)
    if m: rows[m.group(1)] = (float(m.group(2)), float(m.group(3)))
assert len(rows) == 3, rows
for mse, db in rows.values():
    assert abs(db - 10 * math.log10(1 / mse)) < 0.01, (mse, db)
clean = rows["clean input, output"][0]
assert abs(clean - ev["test_loss"]) <= 1e-4 * ev["test_loss"], (clean, ev["test_loss"])
assert 0.24 < rows["noisy input"][0] < 0.26, rows["noisy input"]            # sigma 0.5: 0.25
assert 0 < rows["denoised"][0] < rows["noisy input"][0], rows
b = open("fig.png", "rb").read()
assert b[:8] == b"\x89PNG\r\n\x1a\n"
w, h = struct.unpack(">II", b[16:24])
assert (w, h) == (10 * 30 + 2, 3 * 30 + 2), (w, h)                         # scale 1: 28 + 2 per tile
EOF
"$demo" >/dev/null 2>&1; [ $? -eq 2 ] || fail "unet_demo without --load is not a usage error"
"$demo" --load unet.ckpt --sigma 3 >/dev/null 2>&1; [ $? -eq 2 ] || fail "unet_demo --sigma 3 is not a usage error"
"$demo" --load missing.ckpt >/dev/null 2>err.log; [ $? -eq 1 ] && grep -q missing.ckpt err.log \
    || fail "unet_demo --load missing.ckpt: $(cat err.log)"
echo "unet: 2 steps; demo: clean-input MSE = eval loss, noisy MSE = sigma^2, PSNR, PNG 3 x 10: $(grep '^denoised' demo.log | tr -s ' ')"
