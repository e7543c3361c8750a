#!/usr/bin/env python3
"""unet_baseline.py -- classical denoisers on the test images of docs/results.md's
U-Net row, for comparison: Fashion-MNIST test images (pixels / 255) plus Gaussian noise
of standard deviation 0.3 (torch.manual_seed(1): not the demo's noise, the same
distribution), then a 7x7 Gaussian blur of each width in a grid and 3x3 / 5x5 median
filters, clipped to [0, 1].  Prints the MSE and PSNR (10 log10(1 / MSE)) of each against
the clean images.  The blur's best width is chosen on these test images, so its figure
flatters it.  Needs torch in /usr/bin/python3:

    /usr/bin/python3 examples/unet_baseline.py [DIR]     (DIR: the IDX files)
"""
import gzip
import sys

import numpy as np
import torch
import torch.nn.functional as F

d = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
torch.manual_seed(1)
b = gzip.open(d + "/t10k-images-idx3-ubyte.gz").read()[16:]
x = torch.tensor(np.frombuffer(b, dtype=np.uint8).astype(np.float32) / 255).reshape(-1, 1, 28, 28)
noisy = x + 0.3 * torch.randn_like(x)


def report(what, y):
    m = ((y - x) ** 2).mean().item()
    print("%-22s MSE %.5f  PSNR %.2f dB" % (what, m, 10 * np.log10(1 / m)))


report("noisy", noisy)
report("noisy, clipped", noisy.clamp(0, 1))
for s in (0.5, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5):
    r = torch.arange(-3, 4, dtype=torch.float32)
    k = torch.exp(-r ** 2 / (2 * s * s))
    k /= k.sum()
    report("gaussian blur s=%.1f" % s, F.conv2d(noisy, (k[:, None] * k[None, :])[None, None], padding=3).clamp(0, 1))
for k in (3, 5):
    p = F.pad(noisy, (k // 2,) * 4, mode="reflect").unfold(2, k, 1).unfold(3, k, 1).reshape(-1, 1, 28, 28, k * k)
    report("median %dx%d" % (k, k), p.median(-1).values.clamp(0, 1))
