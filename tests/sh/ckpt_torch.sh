#!/bin/bash
# ckpt_torch.sh -- cdl checkpoints and PyTorch state_dicts, through tools/ckpt_torch.py.
#
# Four zoo models are trained two steps: bilstm (f32 build; nn.LSTM bidirectional via
# --rename), gru, rnn (nn.GRUCell, nn.RNNCell: the names map 1:1) on a small CSV (100
# rows, values k/256, exact in f32), and resnet (nn.Conv2d/BatchNorm2d: running
# statistics and num_batches_tracked; its crops need images) on 128 Fashion-MNIST
# images, evaluated on the first 100 test images; gru, rnn and resnet in f64 builds.
# Then:
#   - numpy only: export to *.safetensors and import back gives the same parameters
#     bit for bit, and the same eval loss in both precisions of bilstm;
#   - with torch: each checkpoint loads into the equivalent torch module with
#     load_state_dict(strict=True), whose eval loss in f64 equals cdl's (f64 build;
#     the f32 bilstm checkpoint loaded into the f64 build) to 1e-10; bn counters equal
#     the steps taken; a torch SGD step is imported back and cdl's eval of it equals
#     torch's (f64 to 1e-10, f32 to 2e-6).
# Uses /usr/bin/python3 (the python3 on PATH may be a pyenv without numpy or torch);
# skipped without numpy, the torch part skipped without torch.
set -u
B=${B:-build}
CDLC=${CDLC:-$B/cdlc}
PY=/usr/bin/python3
if ! [ -x $PY ] || ! $PY -c 'import numpy' 2>/dev/null; then echo "skipped: $PY has no numpy"; exit 0; fi
TORCH=1
$PY -c 'import torch' 2>/dev/null || TORCH=0
TOOL=$(pwd)/tools/ckpt_torch.py
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
fail=0
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
for b in bilstm:f32 bilstm:f64 gru:f64 rnn:f64 resnet:f64; do
    m=${b%:*} p=${b#*:}
    "$CDLC" --exe --precision=$p models/$m.cdl -o "$t/${m}_$p" >"$t/log" 2>&1 || { echo "FAIL cdlc $b: $(tail -2 "$t/log")"; exit 1; }
done
cd "$t"
$PY - <<'PY'
import numpy as np
r = np.random.RandomState(7)
x = r.randint(0, 257, size=(100, 784)) / 256.0
y = r.randint(0, 10, size=100)
with open("d.csv", "w") as f:
    for i in range(100):
        f.write(",".join("%.8g" % v for v in x[i]) + ",%d\n" % y[i])
PY
# loss PROG ARGS...: the eval test_loss on d.csv (resnet: on the first 100 Fashion-MNIST
# test images: its train section's crop and flip need images), full precision.
loss() {
    local data=(--data d.csv)
    case $1 in ./resnet*) data=(--data fashion-mnist --test-limit 100) ;; esac
    "$@" "${data[@]}" --json 2>err | $PY -c 'import json,sys; print(repr(json.loads(sys.stdin.read().strip().splitlines()[-1])["test_loss"]))' \
        || { echo "FAIL eval: $*: $(tail -1 err)" >&2; echo "$*" >>eval_failed; echo nan; }
}
for m in bilstm_f32 gru_f64 rnn_f64 resnet_f64; do
    data=(--data d.csv)
    [ $m = resnet_f64 ] && data=(--data fashion-mnist --limit 128 --test-limit 100)
    ./$m train "${data[@]}" --epochs 1 --quiet --save ${m%_*}.ckpt >/dev/null 2>err || { echo "FAIL train $m: $(tail -2 err)"; exit 1; }
done

# numpy only: a round trip through a plain safetensors state_dict is exact.
$PY "$TOOL" export bilstm.ckpt bilstm.safetensors >/dev/null || bad "export to safetensors"
$PY "$TOOL" import bilstm.safetensors back.ckpt >/dev/null || bad "import from safetensors"
$PY - bilstm.ckpt back.ckpt <<'PY' || bad "the round trip changed tensors"
import json, struct, sys
def tensors(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items() if k != "__metadata__"}
a, r = tensors(sys.argv[1]), tensors(sys.argv[2])
a = {k: v for k, v in a.items() if not k.startswith("adam.")}
sys.exit(0 if a == r and len(a) == 10 else 1)
PY
l32=$(loss ./bilstm_f32 eval --load bilstm.ckpt)
[ "$(loss ./bilstm_f32 eval --load back.ckpt)" = "$l32" ] || bad "f32 eval of the round trip differs"
l64=$(loss ./bilstm_f64 eval --load bilstm.ckpt)
[ "$(loss ./bilstm_f64 eval --load back.ckpt)" = "$l64" ] || bad "f64 eval of the round trip differs"
if [ $TORCH = 0 ]; then
    [ -f eval_failed ] && bad "evals failed: $(tr '\n' ';' <eval_failed)"
    [ $fail -eq 0 ] && echo "numpy round trip exact (torch not installed: torch checks skipped)"
    [ $fail -eq 0 ]; exit
fi

# torch: the same modules, the same losses.
$PY "$TOOL" export bilstm.ckpt bilstm.pt --rename 'fwd.*=lstm.*_l0' --rename 'bwd.*=lstm.*_l0_reverse' \
    --rename 'linear1.*=fc.*' >/dev/null || bad "export bilstm"
for m in gru rnn resnet; do $PY "$TOOL" export $m.ckpt $m.pt >/dev/null || bad "export $m"; done
cat >losses <<EOF
bilstm $l64
gru $(loss ./gru_f64 eval --load gru.ckpt)
rnn $(loss ./rnn_f64 eval --load rnn.ckpt)
resnet $(loss ./resnet_f64 eval --load resnet.ckpt)
EOF
$PY - <<'PY' || bad "torch disagrees"
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(1)
d = np.loadtxt("d.csv", delimiter=",")
X, Y = torch.tensor(d[:, :784]), torch.tensor(d[:, 784], dtype=torch.long)
Xs = ((X - 0.2860) * (1.0 / 0.3530)).reshape(100, 28, 28)        # the models' normalize
def idx(name, skip):
    import gzip
    return np.frombuffer(gzip.open("/usr/share/datasets/fashion-mnist/" + name).read()[skip:], dtype=np.uint8)
lut = np.arange(256, dtype=np.float32) / np.float32(255)            # as data.c scales pixels
XI = torch.tensor(lut[idx("t10k-images-idx3-ubyte.gz", 16)[:78400]].astype(np.float64)).reshape(100, 1, 28, 28)
YI = torch.tensor(idx("t10k-labels-idx1-ubyte.gz", 8)[:100].astype(np.int64))
cdl = {k: float(v) for k, v in (l.split() for l in open("losses"))}

class BiLSTM(nn.Module):
    def __init__(s):
        super().__init__(); s.lstm = nn.LSTM(28, 128, batch_first=True, bidirectional=True); s.fc = nn.Linear(256, 10)
    def forward(s, x): return s.fc(s.lstm(x)[0].mean(1))
class Cell(nn.Module):
    def __init__(s, name, cell, pool):
        super().__init__(); setattr(s, name, cell); s.name, s.pool = name, pool; s.linear1 = nn.Linear(128, 10)
    def forward(s, x):
        h, hs = torch.zeros(x.shape[0], 128, dtype=x.dtype), []
        for t in range(28):
            h = getattr(s, s.name)(x[:, t], h); hs.append(h)
        return s.linear1(torch.stack(hs, 1).mean(1) if s.pool else h)
def cbn(cin, c, k, stride=1, pad=0): return nn.Conv2d(cin, c, k, stride, pad, bias=False), nn.BatchNorm2d(c)
class Residual(nn.Module):
    def __init__(s, c):
        super().__init__(); s.conv1, s.bn1 = cbn(c, c, 3, 1, 1); s.conv2, s.bn2 = cbn(c, c, 3, 1, 1)
    def forward(s, x): return F.relu(x + s.bn2(s.conv2(F.relu(s.bn1(s.conv1(x))))))
class Down(Residual):
    def __init__(s, cin, c):
        nn.Module.__init__(s); s.conv1, s.bn1 = cbn(cin, c, 3, 2, 1); s.conv2, s.bn2 = cbn(c, c, 3, 1, 1)
        s.proj, s.proj_bn = cbn(cin, c, 1, 2, 0)
    def forward(s, x): return F.relu(s.proj_bn(s.proj(x)) + s.bn2(s.conv2(F.relu(s.bn1(s.conv1(x))))))
class ResNet(nn.Module):
    def __init__(s):
        super().__init__(); s.conv1, s.bn1 = cbn(1, 32, 3, 1, 1)
        s.residual1, s.down1, s.residual2, s.linear1 = Residual(32), Down(32, 64), Residual(64), nn.Linear(64, 10)
    def forward(s, x):
        x = F.max_pool2d(F.relu(s.bn1(s.conv1(x))), 2)
        return s.linear1(s.residual2(s.down1(s.residual1(x))).mean((2, 3)))

models = {"bilstm": (BiLSTM(), Xs), "gru": (Cell("gru", nn.GRUCell(28, 128), True), Xs),
          "rnn": (Cell("rnn", nn.RNNCell(28, 128), False), Xs), "resnet": (ResNet(), XI)}
ok = True
for name, (m, x) in models.items():
    m = m.double()
    m.load_state_dict(torch.load(name + ".pt"), strict=True)
    m.eval()
    with torch.no_grad():
        l = F.cross_entropy(m(x), YI if name == "resnet" else Y).item()
    rel = abs(l - cdl[name]) / abs(l)
    print("%-7s torch %.15f  cdl %.15f  rel %.1e" % (name, l, cdl[name], rel))
    ok &= rel < 1e-10
    if name == "resnet":
        counts = {k: int(v) for k, v in m.state_dict().items() if k.endswith("num_batches_tracked")}
        print("resnet num_batches_tracked:", sorted(set(counts.values())), "in", len(counts), "layers")
        ok &= len(counts) == 8 and set(counts.values()) == {2}
# One torch SGD step on bilstm; cdl must evaluate the result as torch does.
m, x = models["bilstm"]
m.train()
F.cross_entropy(m(x), Y).backward()
with torch.no_grad():
    for p in m.parameters(): p -= 0.5 * p.grad
m.eval()
torch.save(m.state_dict(), "stepped.pt")
with torch.no_grad():
    l64 = F.cross_entropy(m(x), Y).item()
    l32 = F.cross_entropy(m.float()(x.float()), Y).item()
open("stepped.losses", "w").write("%r %r\n" % (l64, l32))
raise SystemExit(0 if ok else 1)
PY
$PY "$TOOL" import stepped.pt stepped.ckpt --rename 'lstm.*_l0_reverse=bwd.*' --rename 'lstm.*_l0=fwd.*' \
    --rename 'fc.*=linear1.*' >/dev/null || bad "import stepped.pt"
t64=nan t32=nan
[ -f stepped.losses ] && read -r t64 t32 <stepped.losses
c64=$(loss ./bilstm_f64 eval --load stepped.ckpt)
c32=$(loss ./bilstm_f32 eval --load stepped.ckpt)
echo "after a torch step: f64 torch $t64 cdl $c64; f32 torch $t32 cdl $c32"
$PY -c "import sys; sys.exit(0 if abs($t64 - $c64) <= 1e-10 * abs($t64) and abs($t32 - $c32) <= 2e-6 * abs($t32) and abs($t64 - $l64) > 1e-3 else 1)" \
    || bad "cdl's eval of the torch-stepped weights differs from torch's"
[ -f eval_failed ] && bad "evals failed: $(tr '\n' ';' <eval_failed)"
[ $fail -eq 0 ] && echo "bilstm, gru, rnn, resnet: torch state_dicts load strictly, losses agree to 1e-10; torch -> cdl agrees"
[ $fail -eq 0 ]
