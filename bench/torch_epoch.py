"""bench/torch_epoch.py -- PyTorch's side of the end-to-end epoch row of `make bench`.

One epoch of the `make run` model (models/mlp.cdl: 784-256-128-10, ReLU, dropout 0.1,
cross-entropy, Adam 1e-3 with the cosine schedule over 15 epochs, batch 64, shuffled)
on Fashion-MNIST, then the test set's loss and accuracy, everything included: reading
the gzipped IDX files (pixels / 255, as the cdl loader does), the DataLoader over a
TensorDataset, training, evaluation.  The caller (bench/epoch.py) times the whole
process and reads its peak RSS.  Prints one JSON line.

    python3 bench/torch_epoch.py [DATA_DIR] [THREADS]
"""
import gzip
import json
import struct
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def idx(path):
    """The array in one gzipped IDX file (uint8 data)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def split(d, name):
    x = idx(f"{d}/{name}-images-idx3-ubyte.gz").reshape(-1, 784)
    y = idx(f"{d}/{name}-labels-idx1-ubyte.gz")
    return torch.from_numpy(x.astype(np.float32) / 255), torch.from_numpy(y.astype(np.int64))


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    t0 = time.perf_counter()
    xtr, ytr = split(d, "train")
    xte, yte = split(d, "t10k")
    loader = DataLoader(TensorDataset(xtr, ytr), batch_size=64, shuffle=True, num_workers=0)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.1), nn.Linear(256, 128), nn.ReLU(),
                          nn.Dropout(0.1), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=15 * len(loader))
    lossf = nn.CrossEntropyLoss()
    t_load = time.perf_counter() - t0
    model.train()
    lsum, seen = 0.0, 0
    for x, y in loader:
        opt.zero_grad(set_to_none=True)
        loss = lossf(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        lsum += loss.item() * len(y)
        seen += len(y)
    model.eval()
    correct, tloss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(yte), 1000):
            out = model(xte[i:i + 1000])
            tloss += lossf(out, yte[i:i + 1000]).item() * len(out)
            correct += int((out.argmax(1) == yte[i:i + 1000]).sum())
    print(json.dumps({"train_loss": lsum / seen, "test_loss": tloss / len(yte), "test_accuracy": correct / len(yte),
                      "load_s": t_load, "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()
