#!/usr/bin/env python3
"""torch_load.py -- a cdl checkpoint of a zoo model loads by name into the equivalent
PyTorch modules, which compute the same loss and gradients.

    torch_load.py MODEL STATE_DICT GRADS PREC [KEY=VALUE ...]

MODEL is transformer or unet (models/MODEL.cdl); KEY=VALUE are the -D constants the cdl
program was compiled with (D=16 HEADS=2 ...).  STATE_DICT is what `tools/ckpt_torch.py
export` wrote from the checkpoint (a torch.save'd *.pt, or a *.safetensors read here
with numpy alone).  GRADS is `PROG grad --load CKPT --eval -o GRADS`: the inputs of one
batch (as fed, normalised), cdl's eval-mode loss and every parameter's gradient.  The
torch module (float64 for PREC f64, float32 for f32) loads the state_dict with
strict=True, runs on the same inputs in eval mode, and its loss and gradients must equal
cdl's: relative 1e-10 in f64; in f32 the loss to 1e-5 and each gradient to 1e-4 of its
largest element (the sums run in another order).  Exit 0 when everything agrees.
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from ckpt_torch import read_safetensors  # noqa: E402


class Transformer(nn.Module):
    """models/transformer.cdl: rows as tokens, class token, position embedding, two
    pre-norm GELU encoder layers, a final layer norm and a linear head."""

    def __init__(self, k):
        super().__init__()
        D, H, FF, P = int(k.get("D", 64)), int(k.get("HEADS", 4)), int(k.get("FF", 128)), float(k.get("P", 0.1))
        self.cls = nn.Parameter(torch.zeros(1, 1, D))
        self.pos = nn.Parameter(torch.zeros(1, 29, D))
        self.embed = nn.Linear(28, D)
        for i in (1, 2):
            setattr(self, "layer%d" % i, nn.TransformerEncoderLayer(D, H, FF, dropout=P, activation="gelu",
                                                                    batch_first=True, norm_first=True))
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, 10)

    def forward(self, x):
        rows = x.reshape(x.shape[0], 28, 28)
        h = torch.cat([self.cls.expand(x.shape[0], -1, -1), self.embed(rows)], 1) + self.pos
        h = self.layer2(self.layer1(h))
        return self.head(self.norm(h[:, 0]))

    def loss(self, g):
        return F.cross_entropy(self(g["x"]), g["y"].long())


class ConvGNReLU(nn.Module):
    def __init__(self, cin, c, groups, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, c, 3, stride, 1)
        self.norm = nn.GroupNorm(groups, c)

    def forward(self, x):
        return F.relu(self.norm(self.conv(x)))


class UNetNet(nn.Module):
    def __init__(self, c, g):
        super().__init__()
        self.enc1 = ConvGNReLU(1, c, g)
        self.enc2 = ConvGNReLU(c, 2 * c, g)
        self.mid = ConvGNReLU(2 * c, 4 * c, g, stride=2)
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.dec2 = ConvGNReLU(4 * c, 2 * c, g)
        self.dec1 = ConvGNReLU(3 * c, c, g)
        self.out = nn.Conv2d(c, 1, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        d2 = self.dec2(torch.cat([self.up2(self.mid(e2)), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2, mode="nearest"), e1], 1))
        return self.out(d1)


class UNet(nn.Module):
    """models/unet.cdl in eval mode (the noise is 0): sigmoid(net(x)), MSE against x."""

    def __init__(self, k):
        super().__init__()
        self.net = UNetNet(int(k.get("C", 16)), int(k.get("G", 4)))

    def loss(self, g):
        return F.mse_loss(torch.sigmoid(self.net(g["x"])), g["x"])


def main():
    model, sd_path, grads, prec = sys.argv[1:5]
    consts = dict(a.split("=", 1) for a in sys.argv[5:])
    dt = torch.float64 if prec == "f64" else torch.float32
    torch.set_num_threads(1)
    if sd_path.endswith(".safetensors"):
        sd = {k: torch.from_numpy(v) for k, v in read_safetensors(sd_path)[0].items()}
    else:
        sd = torch.load(sd_path)
    m = {"transformer": Transformer, "unet": UNet}[model](consts).to(dt)
    m.load_state_dict(sd, strict=True)          # by name, every tensor, same shapes
    m.eval()
    g, _ = read_safetensors(grads)
    inputs = {k[:-2]: torch.from_numpy(v) for k, v in g.items() if k.endswith(".0") and not k.startswith(("loss", "grad"))}
    inputs = {k: (v.to(dt) if v.is_floating_point() else v) for k, v in inputs.items()}
    want = float(g["loss.0"].reshape(-1)[0])
    loss = m.loss(inputs)
    loss.backward()
    ok = True
    ltol, gtol = (1e-10, 1e-10) if prec == "f64" else (1e-5, 1e-4)
    rel = abs(loss.item() - want) / abs(want)
    print("%-11s %s: %d tensors loaded strictly; loss torch %.10g cdl %.10g (rel %.1e)" %
          (model, prec, len(sd), loss.item(), want, rel))
    ok &= rel <= ltol
    worst, wname, n = 0.0, "", 0
    for name, p in m.named_parameters():
        gv = torch.from_numpy(g["grad.0." + name].astype(np.float64)).reshape(p.shape)
        d = ((p.grad.double() - gv).abs().max() / (gv.abs().max() + 1e-30)).item()
        n += 1
        if d > worst:
            worst, wname = d, name
    print("%-11s %s: %d parameter gradients, worst relative difference %.2g (%s)" % (model, prec, n, worst, wname))
    ok &= worst <= gtol and n == len([k for k in g if k.startswith("grad.0.")])
    print("%-11s %s: %s" % (model, prec, "ok" if ok else "FAIL"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
