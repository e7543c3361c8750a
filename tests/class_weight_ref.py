#!/usr/bin/env python3
"""class_weight_ref.py -- tests/models/class_weight.cdl against torch.nn.functional.
Usage: class_weight_ref.py GRAD.safetensors

GRAD is `class_weight grad --eval --load CKPT -o GRAD` of an f64 build: the parameters,
the inputs x, y of batch 0, its loss and gradients.  The model's loss is recomputed with
F.cross_entropy / F.nll_loss (weight=, label_smoothing=, ignore_index=, reduction=) and
must equal cdl's to 1e-10 (relative), as must the gradient of p; cw is used through
stop_gradient, so its gradient is 0.  Prints one line per check; exits 1 on a failure.
"""
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from nn_ref import read_st  # noqa: E402

g = read_st(sys.argv[1])


def t(key, dtype=torch.float64):
    vals, shape = g[key]
    return torch.tensor(vals, dtype=dtype).reshape(shape)


p = t("param.p").requires_grad_()
cw = t("param.cw")
x, y = t("x.0"), t("y.0", torch.int64)
C = p.shape[0]
z = (x @ p).reshape(-1, C)
y = y.reshape(-1)
loss = (F.cross_entropy(z, y, weight=cw, label_smoothing=0.1, ignore_index=2)
        + 0.5 * F.cross_entropy(z, y, weight=cw, reduction="sum")
        + (F.cross_entropy(z, y, weight=cw, label_smoothing=0.2, reduction="none") * 0.25).sum()
        + F.nll_loss(F.log_softmax(z, -1), y, weight=cw, ignore_index=0))
loss.backward()
fails = 0


def check(ok, what):
    global fails
    print(("ok   " if ok else "FAIL ") + what)
    fails += not ok


ours = t("loss.0")[0].item()
check(abs(ours - loss.item()) <= 1e-10 * abs(loss.item()), "loss %.12g == torch %.12g" % (ours, loss.item()))
err = (t("grad.0.p") - p.grad).abs().max().item()
check(err <= 1e-10 * p.grad.abs().max().item(), "grad p == torch's (max |diff| %.3g)" % err)
check(t("grad.0.cw").abs().max().item() == 0, "grad cw == 0 (stop_gradient)")
check(bool((y == 2).any()) and bool((y == 0).any()), "the batch has labels 0 and 2 (ignore_index is exercised)")
sys.exit(1 if fails else 0)
