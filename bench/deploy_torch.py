#!/usr/bin/python3
"""deploy_torch.py -- the PyTorch side of bench/deploy.sh: one zoo model's eval-mode
forward in PyTorch eager, with the weights of a cdl checkpoint, timed at batch 1.

    deploy_torch.py MODEL CKPT [--export LIB.so] [--threads 1] [--calls 2000]

Prints one JSON line: {"model", "torch_us_median", "torch_us_min", "threads",
"torch_version", ...}.  With --export (the shared object bench/deploy.sh builds from the
inference export and its shim), it also runs both on the first 200 Fashion-MNIST test
images (noise for inputs that are not images) and adds the largest difference between
PyTorch's outputs and the export's ("max_rel_diff_torch", per example max |a - b| /
max |b|) and how many predictions agree: an outside check of the export.

The models are written the idiomatic PyTorch way (nn.Linear, nn.Conv2d, nn.BatchNorm2d,
nn.LSTM / nn.GRU / nn.RNN over the whole sequence, not a Python loop of cells), their
parameters taken from the checkpoint by name (a cdl cell's weight_ih is nn.LSTM's
weight_ih_l0).  Models whose train {} section standardises the data get standardised
input here (the export does it itself).  Needs /usr/bin/python3 with torch (Debian's
python3-torch); exit status 3 without it.
"""
import argparse
import ctypes
import gzip
import json
import struct
import sys
import time

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as exc:
    print(json.dumps({"error": "torch not importable: %s" % exc}))
    sys.exit(3)

DATA = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
NORM = (0.2860, 0.3530)   # the recurrent models' train { normalize }


def load_ckpt(path):
    """The parameters of a safetensors file (not the optimizer slots of a cdl checkpoint)
    as float32 torch tensors, by name."""
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    slots = [t + "." for t in hdr.get("__metadata__", {}).get("optimizer_slots", "").split(",") if t]
    out = {}
    for name, e in hdr.items():
        if name == "__metadata__" or any(name.startswith(t) for t in slots):   # optimizer state
            continue
        b, f = e["data_offsets"]
        dt = {"F32": np.float32, "F64": np.float64}[e["dtype"]]
        out[name] = torch.from_numpy(np.frombuffer(data[b:f], dtype=dt).astype(np.float32).reshape(e["shape"]).copy())
    return out


def rnn_params(sd, cell, suffix="_l0"):
    return {"weight_ih" + suffix: sd[cell + ".weight_ih"], "weight_hh" + suffix: sd[cell + ".weight_hh"],
            "bias_ih" + suffix: sd[cell + ".bias_ih"], "bias_hh" + suffix: sd[cell + ".bias_hh"]}


class MLP(nn.Module):
    def __init__(self, sd, act=nn.ReLU, h=(256, 128)):
        super().__init__()
        self.linear1, self.linear2, self.linear3 = nn.Linear(784, h[0]), nn.Linear(h[0], h[1]), nn.Linear(h[1], 10)
        self.act = act()
        self.load_state_dict(sd)

    def forward(self, x):
        return self.linear3(self.act(self.linear2(self.act(self.linear1(x)))))


class Adversarial(MLP):
    def __init__(self, sd):
        super().__init__(sd, nn.GELU, (256, 256))

    def forward(self, x):
        logits = super().forward(x)
        return logits, F.softmax(logits, dim=1)


class LeNet(nn.Module):
    def __init__(self, sd):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
        self.linear1, self.linear2, self.linear3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)
        self.load_state_dict(sd)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2).flatten(1)
        return self.linear3(F.relu(self.linear2(F.relu(self.linear1(h)))))


class Residual(nn.Module):
    def __init__(self, c, down=False):
        super().__init__()
        cin = c // 2 if down else c
        self.conv1 = nn.Conv2d(cin, c, 3, stride=2 if down else 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        if down:
            self.proj = nn.Conv2d(cin, c, 1, stride=2, bias=False)
            self.proj_bn = nn.BatchNorm2d(c)
        self.down = down

    def forward(self, x):
        h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(h + (self.proj_bn(self.proj(x)) if self.down else x))


class ResNet(nn.Module):
    def __init__(self, sd):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.residual1, self.down1, self.residual2 = Residual(32), Residual(64, True), Residual(64)
        self.linear1 = nn.Linear(64, 10)
        self.load_state_dict(sd, strict=False)   # no num_batches_tracked in a cdl checkpoint

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        h = self.residual2(self.down1(self.residual1(h)))
        return self.linear1(h.mean(dim=(2, 3)))


class Recurrent(nn.Module):
    """lstm, lstm2, gru, rnn, bilstm, birnn: one nn.LSTM / GRU / RNN over the 28 rows."""
    def __init__(self, sd, kind, cells, hid, bidir=False, pool=False):
        super().__init__()
        self.rnn = kind(28, hid, num_layers=1 if bidir else len(cells), batch_first=True, bidirectional=bidir)
        p = {}
        for k, c in enumerate(cells):
            p.update(rnn_params(sd, c, ("_l0_reverse" if k else "_l0") if bidir else "_l%d" % k))
        self.rnn.load_state_dict(p)
        self.linear1 = nn.Linear((2 if bidir else 1) * hid, 10)
        self.linear1.load_state_dict({"weight": sd["linear1.weight"], "bias": sd["linear1.bias"]})
        self.bidir, self.pool = bidir, pool

    def forward(self, x):
        out, h = self.rnn(x)
        if self.pool:
            return self.linear1(out.mean(dim=1))
        if self.bidir:   # the two final states (nn.RNN's h_n: forward's, then backward's)
            return self.linear1(torch.cat([h[0], h[1]], dim=1))
        return self.linear1(out[:, -1])


class ConvLSTM(nn.Module):
    def __init__(self, sd):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
        for k in ("conv1", "conv2"):
            getattr(self, k).load_state_dict({"weight": sd["cnn.%s.weight" % k], "bias": sd["cnn.%s.bias" % k]})
        self.lstm = nn.LSTM(32 * 2 * 13, 128, batch_first=True)
        self.lstm.load_state_dict(rnn_params(sd, "cell"))
        self.linear1 = nn.Linear(128, 10)
        self.linear1.load_state_dict({"weight": sd["linear1.weight"], "bias": sd["linear1.bias"]})

    def forward(self, x):   # x [B, 4, 1, 7, 28]: the 4 strips through the CNN as one batch
        b = x.shape[0]
        f = F.max_pool2d(F.relu(self.conv1(x.reshape(b * 4, 1, 7, 28))), 2)
        f = F.max_pool2d(F.relu(self.conv2(f)), 2, stride=1).reshape(b, 4, -1)
        out, _ = self.lstm(f)
        return self.linear1(out[:, -1])


class VAE(nn.Module):
    def __init__(self, sd):
        super().__init__()
        self.sd = sd

    def forward(self, x):   # eval: z = mu
        s = self.sd
        h = F.relu(F.linear(x, s["encoder1.linear1.weight"], s["encoder1.linear1.bias"]))
        mu = F.linear(h, s["encoder1.mu.weight"], s["encoder1.mu.bias"])
        d = F.relu(F.linear(mu, s["decoder1.linear1.weight"], s["decoder1.linear1.bias"]))
        return torch.sigmoid(F.linear(d, s["decoder1.linear2.weight"], s["decoder1.linear2.bias"]))


class CharLM(nn.Module):
    def __init__(self, sd):
        super().__init__()
        self.embed = nn.Embedding.from_pretrained(sd["embed.weight"])
        self.lstm = nn.LSTM(sd["embed.weight"].shape[1], sd["cell.weight_hh"].shape[1], batch_first=True)
        self.lstm.load_state_dict(rnn_params(sd, "cell"))
        self.out = nn.Linear(self.lstm.hidden_size, sd["out.weight"].shape[0])
        self.out.load_state_dict({"weight": sd["out.weight"], "bias": sd["out.bias"]})

    def forward(self, ids):
        out, _ = self.lstm(self.embed(ids))
        return self.out(out)


# name -> (constructor, input shape without the batch, standardised input)
MODELS = {
    "mlp": (MLP, (784,), False), "adversarial": (Adversarial, (784,), False), "lenet": (LeNet, (1, 28, 28), False),
    "resnet": (ResNet, (1, 28, 28), False),
    "lstm": (lambda s: Recurrent(s, nn.LSTM, ["cell"], 128), (28, 28), True),
    "lstm2": (lambda s: Recurrent(s, nn.LSTM, ["l1", "l2"], 128), (28, 28), True),
    "gru": (lambda s: Recurrent(s, nn.GRU, ["gru"], 128, pool=True), (28, 28), True),
    "rnn": (lambda s: Recurrent(s, nn.RNN, ["rnn"], 128), (28, 28), True),
    "bilstm": (lambda s: Recurrent(s, nn.LSTM, ["fwd", "bwd"], 128, bidir=True, pool=True), (28, 28), True),
    "birnn": (lambda s: Recurrent(s, nn.RNN, ["fwd", "bwd"], 64, bidir=True), (28, 28), True),
    "convlstm": (ConvLSTM, (4, 1, 7, 28), True), "vae": (VAE, (784,), False), "charlm": (CharLM, (64,), False),
}


def images(n, shape):
    raw = gzip.open(DATA).read()[16:16 + 784 * n]
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).astype(np.float32) / 255.0).reshape((n,) + shape)


def compare(model, lib, name, shape, norm, n=200):
    """PyTorch's outputs against the export's on n inputs: largest difference, and how
    many predictions (argmax of the first output) agree."""
    so = ctypes.CDLL(lib)
    if name == "charlm":
        g = torch.Generator().manual_seed(1)
        x = torch.randint(0, 10, (n,) + shape, generator=g, dtype=torch.int32)
        fed = x.long()
    else:
        x = images(n, shape)
        fed = (x - NORM[0]) / NORM[1] if norm else x
    with torch.no_grad():
        want = model(fed)
    want = want if isinstance(want, tuple) else (want,)
    outs = [torch.zeros_like(w) for w in want]
    ins = (ctypes.c_void_p * 1)()
    ptrs = (ctypes.c_void_p * len(outs))()
    worst, same = 0.0, 0
    for i in range(n):
        xi = x[i:i + 1].contiguous()
        ins[0] = xi.data_ptr()
        for k, o in enumerate(outs):
            ptrs[k] = o[i:i + 1].data_ptr()
        so.infer_call(ins, ptrs, None)
    for w, o in zip(want, outs):
        a, b = o.reshape(n, -1).double(), w.reshape(n, -1).double()
        scale = b.abs().max(dim=1).values
        worst = max(worst, float(((a - b).abs().max(dim=1).values / scale).max()))
    same = int((outs[0].reshape(n, -1).argmax(1) == want[0].reshape(n, -1).argmax(1)).sum())
    return worst, same


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("ckpt")
    ap.add_argument("--export", help="the export's shared object (with the bench shim)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calls", type=int, default=2000)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ctor, shape, norm = MODELS[a.model]
    model = ctor(load_ckpt(a.ckpt)).eval()
    rec = {"model": a.model, "threads": a.threads, "torch_version": torch.__version__}
    if a.export:
        rec["max_rel_diff_torch"], rec["predictions_same_torch"] = compare(model, a.export, a.model, shape, norm)
    x = torch.randint(0, 10, (1,) + shape) if a.model == "charlm" else images(1, shape)
    runs = []
    with torch.no_grad():
        for _ in range(50):
            model(x)
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(a.calls // 5):
                model(x)
            runs.append((time.perf_counter() - t0) * 1e6 / (a.calls // 5))
    rec["torch_us_median"], rec["torch_us_min"] = sorted(runs)[2], min(runs)
    print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
