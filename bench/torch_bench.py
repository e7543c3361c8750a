#!/usr/bin/python3
"""torch_bench.py -- the PyTorch side of `make bench`.

Runs ONE configuration (model, batch, optimizer, thread count, eager or TorchScript) in
this process and prints ONE JSON line with the same fields as bench/driver.c:

    {"framework": "torch_eager", "model": "mlp", "batch": 64, "opt": "sgd",
     "threads": 1, "ms_median": ..., "ms_min": ..., "cpu_ms_per_step": ..., "ms_runs": [...],
     "samples_per_s": ..., "peak_rss_kb": ..., "loss": ..., ...}

The models are the bench definitions of bench/models/*.cdl, written the idiomatic
PyTorch way (nn.Linear, nn.Conv2d, nn.LSTM, F.cross_entropy, ...), each wrapped so that
forward(x, y) returns the loss: the TorchScript mode scripts that whole module.

Data is synthetic and identical to the C driver's (bench_synth in driver.c): element i of
input k is ((i + 1 + k * 2^32) * 0x9E3779B97F4A7C15 mod 2^64) >> 40, divided by 2^24 for
reals, modulo the class count for labels.  One fixed batch is reused every step (timing
only).  A step is zero_grad(set_to_none) + loss + backward + optimizer.step(); SGD has
momentum 0.9 (lr 0.01 unless --lr), Adam lr 1e-3.

With --latency it times batch-1 inference instead: the model in eval mode under
torch.no_grad(), forward (the loss included, as cdl's eval forward) of ONE sample; each
repeat makes as many calls as fit in --budget-ms (from the warm-up's median call, at
least 3), as bench/driver.c does.

The caller (bench/run.sh) sets OPENBLAS_NUM_THREADS / OMP_NUM_THREADS (and the glibc
malloc tunables, OMP_WAIT_POLICY) before starting python: torch.set_num_threads alone
does not limit OpenBLAS.  Exit status 0 on success, 2 on a usage error, 3 if torch is
not importable (run.sh then skips the PyTorch rows).
"""
import argparse
import json
import resource
import sys
import time

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as exc:  # no torch here: cdl rows only
    print(json.dumps({"error": "torch not importable: %s" % exc}))
    sys.exit(3)


def synth(n, k):
    """The shared synthetic stream: n values in [0, 2^24) for input number k."""
    i = np.arange(n, dtype=np.uint64) + np.uint64(1) + np.uint64(k << 32)
    with np.errstate(over="ignore"):
        v = (i * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
    return v


def synth_real(shape, k):
    n = int(np.prod(shape))
    return torch.from_numpy((synth(n, k).astype(np.float64) / 2.0**24).astype(np.float32).reshape(shape))


def synth_label(shape, k, classes):
    n = int(np.prod(shape))
    return torch.from_numpy((synth(n, k) % np.uint64(classes)).astype(np.int64).reshape(shape))


# ------------------------------------------------------------------------ models
# Each returns the scalar training loss from (x, y); `y` is unused by the VAE.

class MLP(nn.Module):
    """784-256-128-10, ReLU, softmax cross-entropy (bench/models/mlp.cdl)."""
    def __init__(self, sizes=(784, 256, 128, 10)):
        super().__init__()
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x, y):
        return F.cross_entropy(self.net(x), y)


class LeNet(nn.Module):
    """LeNet-5 (bench/models/lenet.cdl)."""
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))

    def forward(self, x, y):
        return F.cross_entropy(self.net(x), y)


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))) + x)


class ResNet(nn.Module):
    """Small ResNet (bench/models/resnet.cdl): stem conv 1->16, two residual blocks,
    global average pool, fc 16->10."""
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.block1 = Residual(16)
        self.block2 = Residual(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x, y):
        h = self.block2(self.block1(F.relu(self.stem(x))))
        return F.cross_entropy(self.fc(h.mean(dim=(2, 3))), y)


class LSTMClassifier(nn.Module):
    """LSTM over 28 steps of 28 features, hidden 128, last hidden -> fc 10
    (bench/models/lstm.cdl)."""
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(28, 128, batch_first=True)
        self.fc = nn.Linear(128, 10)

    def forward(self, x, y):
        out, _ = self.lstm(x)
        return F.cross_entropy(self.fc(out[:, -1]), y)


class VAE(nn.Module):
    """784-400-(20 mu, 20 logvar)-400-784, BCE (with logits) + KL, summed, / B
    (bench/models/vae.cdl)."""
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.mu = nn.Linear(400, 20)
        self.logvar = nn.Linear(400, 20)
        self.dec1 = nn.Linear(20, 400)
        self.dec2 = nn.Linear(400, 784)

    def forward(self, x, y):
        h = F.relu(self.fc1(x))
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        logits = self.dec2(F.relu(self.dec1(z)))
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu * mu - logvar.exp())
        return (bce + kl) / x.shape[0]


class GPT(nn.Module):
    """A character GPT (bench/models/gpt.cdl, models/gpt.cdl's body): token and position
    embeddings, pre-norm nn.TransformerEncoderLayer blocks with a causal mask and a GELU
    MLP of 4E, a final layer norm, logits tied to the token embedding; cross-entropy over
    every position.  x and y are [B, T] token ids."""
    def __init__(self, V=256, T=128, E=256, heads=4, layers=4):
        super().__init__()
        self.wte = nn.Embedding(V, E)
        self.wpe = nn.Parameter(torch.randn(T, E) * 0.02)
        nn.init.normal_(self.wte.weight, 0, 0.02)
        self.h = nn.ModuleList([nn.TransformerEncoderLayer(E, heads, 4 * E, dropout=0.0, activation="gelu",
                                                           batch_first=True, norm_first=True) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(E)
        self.register_buffer("mask", torch.triu(torch.full((T, T), float("-inf")), 1))

    def forward(self, x, y):
        h = self.wte(x) + self.wpe
        for layer in self.h:
            h = layer(h, src_mask=self.mask)
        logits = self.ln_f(h) @ self.wte.weight.t()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


class RowTransformer(nn.Module):
    """A transformer encoder over the 28 rows of an image (bench/models/transformer.cdl,
    models/transformer.cdl): row embedding, class token, position embedding, two pre-norm
    nn.TransformerEncoderLayer(64, 4, 128, GELU), layer norm, linear head."""
    def __init__(self, D=64, heads=4, FF=128):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, 29, D) * 0.02)
        self.embed = nn.Linear(28, D)
        self.layer1 = nn.TransformerEncoderLayer(D, heads, FF, dropout=0.0, activation="gelu", batch_first=True,
                                                 norm_first=True)
        self.layer2 = nn.TransformerEncoderLayer(D, heads, FF, dropout=0.0, activation="gelu", batch_first=True,
                                                 norm_first=True)
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, 10)

    def forward(self, x, y):
        rows = x.reshape(x.shape[0], 28, 28)
        h = torch.cat([self.cls.expand(x.shape[0], -1, -1), self.embed(rows)], 1) + self.pos
        h = self.layer2(self.layer1(h))
        return F.cross_entropy(self.head(self.norm(h[:, 0])), y)


# name -> (constructor, x shape without the batch, classes or 0 for "no labels")
MODELS = {
    "mlp": (MLP, (784,), 10),
    "lenet": (LeNet, (1, 28, 28), 10),
    "resnet": (ResNet, (1, 28, 28), 10),
    "lstm": (LSTMClassifier, (28, 28), 10),
    "vae": (VAE, (784,), 0),
    "wide_mlp": (lambda: MLP((1024, 4096, 4096, 10)), (1024,), 10),
    "gpt": (GPT, (128,), 10),
    "transformer": (RowTransformer, (1, 28, 28), 10),
}
# Models whose x is token ids ([B, T], the driver's labels stream of input 0, as its i32
# inputs get) and whose y has x's shape (a label per position).
TOKEN_MODELS = ("gpt",)


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if len(v) % 2 else 0.5 * (v[len(v) // 2 - 1] + v[len(v) // 2])


def latency(a, model, x, y):
    """Batch-1 eval-mode forward passes; prints the record (see the module's doc)."""
    model.eval()
    with torch.no_grad():
        warm = []
        for _ in range(max(a.warmup, 3)):
            t0 = time.perf_counter()
            loss = model(x, y)
            warm.append((time.perf_counter() - t0) * 1e3)
        calls = max(3, int(a.budget_ms / max(median(warm), 1e-6)))
        runs = []
        cpu0 = time.process_time()
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            for _ in range(calls):
                loss = model(x, y)
            runs.append((time.perf_counter() - t0) * 1e3 / calls)
        cpu_ms = (time.process_time() - cpu0) * 1e3 / (calls * a.repeats)
    lv = float(loss.item())
    print(json.dumps({
        "framework": "torch_eager" if a.mode == "eager" else "torchscript", "mode": "latency",
        "name": a.name or a.model, "model": a.model, "batch": 1, "threads": a.threads, "calls": calls,
        "repeats": a.repeats, "ms_median": median(runs), "ms_min": min(runs), "cpu_ms_per_step": cpu_ms,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "loss": lv if lv == lv else None, "loss_finite": lv == lv and abs(lv) != float("inf"),
        "torch_version": torch.__version__}))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, choices=sorted(MODELS))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--opt", choices=("sgd", "adam"), default="sgd")
    ap.add_argument("--lr", type=float, default=0.0, help="0: 0.01 for SGD, 1e-3 for Adam")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mode", choices=("eager", "script"), default="eager")
    ap.add_argument("--steps", type=int, default=50, help="timed steps per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--name", default=None, help="row label (default: the model)")
    ap.add_argument("--latency", action="store_true", help="time batch-1 eval forward passes")
    ap.add_argument("--budget-ms", type=float, default=50, help="latency: time per repeat")
    a = ap.parse_args()
    if a.batch < 1 or a.steps < 1 or a.repeats < 1 or a.warmup < 0 or a.threads < 1:
        ap.error("batch, steps, repeats, threads must be >= 1, warmup >= 0")

    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    ctor, xshape, classes = MODELS[a.model]
    model = ctor()
    model.train()
    if a.model in TOKEN_MODELS:
        x = synth_label((a.batch,) + xshape, 0, classes)
        y = synth_label((a.batch,) + xshape, 1, classes)
    else:
        x = synth_real((a.batch,) + xshape, 0)
        y = synth_label((a.batch,), 1, classes) if classes else torch.zeros(a.batch, dtype=torch.int64)
    if a.mode == "script":
        model = torch.jit.script(model)
    if a.latency:
        return latency(a, model, x[:1], y[:1])
    if a.opt == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=a.lr or 0.01, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=a.lr or 1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(x, y)
        loss.backward()
        opt.step()
        return loss

    # TorchScript's profiling executor optimizes the graph after a few runs: at least 5.
    for _ in range(max(a.warmup, 5 if a.mode == "script" else 1)):
        loss = step()
    runs = []
    cpu0 = time.process_time()
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        for _ in range(a.steps):
            loss = step()
        runs.append((time.perf_counter() - t0) * 1e3 / a.steps)
    cpu_ms = (time.process_time() - cpu0) * 1e3 / (a.steps * a.repeats)
    lv = float(loss.item())
    med = sorted(runs)[len(runs) // 2] if len(runs) % 2 else \
        0.5 * (sorted(runs)[len(runs) // 2 - 1] + sorted(runs)[len(runs) // 2])
    rec = {
        "framework": "torch_eager" if a.mode == "eager" else "torchscript", "mode": "train",
        "name": a.name or a.model, "model": a.model, "batch": a.batch, "opt": a.opt,
        "threads": a.threads, "steps": a.steps, "repeats": a.repeats, "warmup": a.warmup,
        "ms_median": med, "ms_min": min(runs),
        "cpu_ms_per_step": cpu_ms, "ms_runs": runs, "lr": opt.param_groups[0]["lr"],
        "samples_per_s": a.batch * 1e3 / med,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "loss": lv if lv == lv else None, "loss_finite": lv == lv and abs(lv) != float("inf"),
        "torch_version": torch.__version__,
    }
    print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
