#!/bin/bash
# gpt_torch.sh -- models/gpt.cdl is the GPT a PyTorch user would write (issue 14 item 3):
# a small f64 build (-D T=10 E=16 HEADS=2 V=16) trained two steps on a text, then
# `gpt grad --eval` writes its loss and gradients on the first batch with the weights
# they were taken at; PyTorch in f64 loads the same weights by name into
#     wte, wpe: nn.Parameter; transformer.h0..h3: nn.TransformerEncoderLayer(E, HEADS,
#     4E, dropout, activation="gelu", batch_first=True, norm_first=True) run with a
#     causal mask; transformer.ln_f: nn.LayerNorm; logits = h @ wte^T
# (load_state_dict strict: every name and shape matches), and its loss and every
# parameter gradient equal cdl's to 1e-10 (relative to each tensor's largest value).
# Skipped (exit 0, "skipped") when /usr/bin/python3 has no torch.
. "$(dirname "$0")/../lib.sh"
PY=/usr/bin/python3
if ! [ -x $PY ] || ! $PY -c 'import torch, numpy' 2>/dev/null; then
    echo "skipped: $PY has no torch"; exit 0
fi
san_cc
python3 -c "
import random
r = random.Random(11)
words = ['the', 'cat', 'sat', 'on', 'a', 'mat', 'dog', 'ran']
open('$t/corpus.txt', 'w').write('\n'.join(' '.join(r.choice(words) for _ in range(5)) for _ in range(40)) + '\n')
"
"$CDLC" --precision=f64 --exe -D B=3 -D T=10 -D E=16 -D HEADS=2 -D V=16 models/gpt.cdl -o "$t/gpt" >"$t/log" 2>&1 ||
    { echo "FAIL cdlc: $(tail -3 "$t/log")"; exit 1; }
( cd "$t" && ./gpt train --data text:corpus.txt --limit 6 --batch 3 --epochs 1 --threads 1 --quiet --save m.ckpt >log 2>&1 &&
  ./gpt grad --load m.ckpt --data text:corpus.txt --eval --batches 1 -o g.safetensors >>log 2>&1 ) ||
    { echo "FAIL train/grad: $(tail -3 "$t/log")"; exit 1; }
$PY - "$t/g.safetensors" <<'EOF'
import json, struct, sys
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
meta = head.pop("__metadata__", {})
assert meta.get("precision") == "f64" and meta.get("mode") == "eval", meta
DT = {"F64": np.float64, "F32": np.float32, "I32": np.int32}
def get(k):
    h = head[k]
    s, e = h["data_offsets"]
    return torch.from_numpy(np.frombuffer(raw[8 + n + s:8 + n + e], dtype=DT[h["dtype"]]).reshape(h["shape"]).copy())

torch.set_default_dtype(torch.float64)
params = {k[len("param."):]: get(k) for k in head if k.startswith("param.")}
V, E = params["wte"].shape
T = params["wpe"].shape[0]
HEADS = 2

class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Parameter(torch.zeros(V, E))
        self.wpe = nn.Parameter(torch.zeros(T, E))
        self.transformer = nn.Module()
        for i in range(4):
            setattr(self.transformer, "h%d" % i, nn.TransformerEncoderLayer(
                E, HEADS, 4 * E, dropout=0.1, activation="gelu", batch_first=True, norm_first=True))
        self.transformer.ln_f = nn.LayerNorm(E)

    def forward(self, x):
        h = F.embedding(x, self.wte) + self.wpe
        mask = torch.triu(torch.full((T, T), float("-inf")), 1)
        for i in range(4):
            h = getattr(self.transformer, "h%d" % i)(h, src_mask=mask)
        return self.transformer.ln_f(h) @ self.wte.t()

m = GPT()
m.load_state_dict(params, strict=True)          # every name and shape
m.eval()                                        # grad --eval: no dropout
x, y = get("x.0").long(), get("y.0").long()
loss = F.cross_entropy(m(x).reshape(-1, V), y.reshape(-1))
loss.backward()
cl = float(get("loss.0")[0])
worst = abs(loss.item() - cl) / abs(cl)
print("loss: cdl %.15g, torch %.15g, rel %.2g" % (cl, loss.item(), worst))
assert worst <= 1e-10, "loss differs"
bad, big = [], 0.0
for name, p in m.named_parameters():
    g = get("grad.0." + name)
    scale = max(float(g.abs().max()), 1e-300)
    d = float((p.grad - g).abs().max()) / scale
    big = max(big, d)
    if not d <= 1e-10:
        bad.append("%s %.2g" % (name, d))
assert len(list(m.named_parameters())) == len(params) == 4 * 12 + 4, len(params)
assert not bad, "gradients differ: " + ", ".join(bad)
print("gpt_torch: %d parameters loaded strictly into torch; loss and gradients agree (worst %.2g)" % (len(params), big))
EOF
