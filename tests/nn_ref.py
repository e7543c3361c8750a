#!/usr/bin/env python3
"""nn_ref.py -- checks tests/models/nnlib.cdl (the `import "nn"` blocks) against PyTorch's
formulas.  Usage: nn_ref.py GRAD.safetensors [STATE_DICT]

GRAD is `nnlib grad --eval --load CKPT -o GRAD` of an f64 build: the parameters, the
inputs (x, m, t, the ids whose 0s are padding, ...) of batch 0, its loss and gradients.

- Always (plain Python, no numpy): the parameter names of each block instance are
  exactly the state_dict keys of the torch module it stands for, and the loss
  recomputed here with the formulas of torch.nn.functional.multi_head_attention_forward,
  nn.TransformerEncoderLayer and nn.TransformerDecoderLayer (eval mode) equals cdl's to
  1e-10 (relative).
- With torch (and STATE_DICT, the checkpoint exported by tools/ckpt_torch.py): the same
  torch modules load it with load_state_dict(strict=True), their loss equals cdl's and
  their parameter gradients equal cdl's to 1e-10.
Prints one line per check; exits 1 on a failure.
"""
import json
import math
import struct
import sys

# instance -> (torch module kind, heads, norm_first, causal, activation, options); nnlib.cdl's
# model.  Options: "kpm" the input whose == 0 is the (self-attention) key padding mask,
# "mkpm" the memory's; "kv" the inputs key and value of a cross-attention (else m, m);
# "nobias" bias=false (and kdim/vdim from kv: separate projection weights).
LAYERS = [("enc", "enc", 2, False, False, "relu", {}), ("encpre", "enc", 2, True, True, "gelu", {}),
          ("dec", "dec", 2, False, False, "relu", {}), ("decpre", "dec", 4, True, True, "relu", {}),
          ("encpad", "enc", 2, False, False, "relu", {"kpm": "ids"}),
          ("decpad", "dec", 2, True, False, "relu", {"kpm": "ids", "mkpm": "mids"}),
          ("mha", "mha", 4, False, False, None, {}),
          ("mhakv", "mhakv", 2, False, False, None, {"kv": ("m2", "m3"), "mkpm": "mids", "nobias": True})]
MHA_KEYS = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
KEYS = {"mha": MHA_KEYS, "mhakv": ["q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight"],
        "enc": ["self_attn." + k for k in MHA_KEYS] + ["linear1.weight", "linear1.bias", "linear2.weight",
                                                         "linear2.bias", "norm1.weight", "norm1.bias",
                                                         "norm2.weight", "norm2.bias"]}
KEYS["dec"] = KEYS["enc"] + ["multihead_attn." + k for k in MHA_KEYS] + ["norm3.weight", "norm3.bias"]
EPS = 1e-5
fails = 0


def check(ok, what):
    global fails
    print(("ok   " if ok else "FAIL ") + what)
    fails += not ok


def read_st(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        lo, hi = v["data_offsets"]
        raw = b[8 + n + lo:8 + n + hi]
        fmt = {"F64": "d", "F32": "f", "I32": "i", "I64": "q"}[v["dtype"]]
        vals = list(struct.unpack("<%d%s" % (len(raw) // struct.calcsize(fmt), fmt), raw))
        out[k] = (vals, v["shape"])
    return out


def nest(vals, shape):
    if not shape:
        return vals[0]
    if len(shape) == 1:
        return list(vals)
    step = len(vals) // shape[0]
    return [nest(vals[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


# ---- plain-Python tensors: a sequence is a list of rows (lists of floats)
def linear(xs, w, b):   # rows @ w^T + b (torch's F.linear)
    return [[sum(r[k] * wo[k] for k in range(len(r))) + b[o] for o, wo in enumerate(w)] for r in xs]


def layer_norm(xs, w, b):
    out = []
    for r in xs:
        mu = sum(r) / len(r)
        var = sum((v - mu) ** 2 for v in r) / len(r)
        out.append([(v - mu) / math.sqrt(var + EPS) * w[i] + b[i] for i, v in enumerate(r)])
    return out


def add(a, b):
    return [[u + v for u, v in zip(ra, rb)] for ra, rb in zip(a, b)]


def act(xs, kind):
    if kind == "relu":
        return [[max(v, 0.0) for v in r] for r in xs]
    return [[0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in r] for r in xs]


def mha(q, k, v, p, heads, causal, kpm=None):
    """F.multi_head_attention_forward, batch_first, one example: q [T, E], k, v [S, E]
    (or kdim, vdim wide with q/k/v_proj_weight); kpm: S booleans, True = ignore the key;
    no biases when the parameters have none (bias=False)."""
    E = len(q[0])
    d = E // heads
    b = p.get("in_proj_bias", [0.0] * 3 * E)
    if "in_proj_weight" in p:
        w = p["in_proj_weight"]
        wq, wk, wv = w[0:E], w[E:2 * E], w[2 * E:]
    else:
        wq, wk, wv = p["q_proj_weight"], p["k_proj_weight"], p["v_proj_weight"]
    Q, K, V = linear(q, wq, b[0:E]), linear(k, wk, b[E:2 * E]), linear(v, wv, b[2 * E:])
    o = [[0.0] * E for _ in q]
    for h in range(heads):
        for i in range(len(q)):
            s = [sum(Q[i][h * d + c] * K[j][h * d + c] for c in range(d)) / math.sqrt(d) for j in range(len(k))]
            if causal:
                s = [x if j <= i else -math.inf for j, x in enumerate(s)]
            if kpm is not None:
                s = [-math.inf if kpm[j] else x for j, x in enumerate(s)]
            mx = max(s)
            e = [math.exp(x - mx) for x in s]
            z = sum(e)
            for c in range(d):
                o[i][h * d + c] = sum(e[j] / z * V[j][h * d + c] for j in range(len(k)))
    return linear(o, p["out_proj.weight"], p.get("out_proj.bias", [0.0] * E))


def sub(p, prefix):
    return {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}


def ff(x, p, kind):
    return linear(act(linear(x, p["linear1.weight"], p["linear1.bias"]), kind), p["linear2.weight"], p["linear2.bias"])


def encoder(x, p, heads, norm_first, causal, kind, kpm=None):
    sa = sub(p, "self_attn.")
    ln = lambda y, i: layer_norm(y, p["norm%d.weight" % i], p["norm%d.bias" % i])   # noqa: E731
    if norm_first:
        n = ln(x, 1)
        x = add(x, mha(n, n, n, sa, heads, causal, kpm))
        return add(x, ff(ln(x, 2), p, kind))
    x = ln(add(x, mha(x, x, x, sa, heads, causal, kpm)), 1)
    return ln(add(x, ff(x, p, kind)), 2)


def decoder(x, mem, p, heads, norm_first, causal, kind, kpm=None, mkpm=None):
    sa, ca = sub(p, "self_attn."), sub(p, "multihead_attn.")
    ln = lambda y, i: layer_norm(y, p["norm%d.weight" % i], p["norm%d.bias" % i])   # noqa: E731
    if norm_first:
        n = ln(x, 1)
        x = add(x, mha(n, n, n, sa, heads, causal, kpm))
        x = add(x, mha(ln(x, 2), mem, mem, ca, heads, False, mkpm))
        return add(x, ff(ln(x, 3), p, kind))
    x = ln(add(x, mha(x, x, x, sa, heads, causal, kpm)), 1)
    x = ln(add(x, mha(x, mem, mem, ca, heads, False, mkpm)), 2)
    return ln(add(x, ff(x, p, kind)), 3)


def forward(ex, params):
    """ex: one example's inputs by name (x, m, ids, ...)."""
    x, mem = ex["x"], ex["m"]
    for inst, kind, heads, nf, causal, a, o in LAYERS:
        p = sub(params, inst + ".")
        kpm = [i == 0 for i in ex[o["kpm"]]] if "kpm" in o else None
        mkpm = [i == 0 for i in ex[o["mkpm"]]] if "mkpm" in o else None
        if kind == "enc":
            x = encoder(x, p, heads, nf, causal, a, kpm)
        elif kind == "dec":
            x = decoder(x, mem, p, heads, nf, causal, a, kpm, mkpm)
        else:
            k, v = (ex[n] for n in o["kv"]) if "kv" in o else (mem, mem)
            x = mha(x, k, v, p, heads, False, mkpm)
    return x


def main():
    g = read_st(sys.argv[1])
    params = {k[6:]: nest(*v) for k, v in g.items() if k.startswith("param.")}
    for inst, kind, *_ in LAYERS:
        got = sorted(sub(params, inst + ".").keys())
        check(got == sorted(KEYS[kind]), "%s: parameter names are the state_dict keys of torch's %s" %
              (inst, {"enc": "TransformerEncoderLayer", "dec": "TransformerDecoderLayer",
                      "mha": "MultiheadAttention", "mhakv": "MultiheadAttention(bias=False, kdim, vdim)"}[kind]))
    names = [k[:-2] for k in g if k.endswith(".0") and not k.startswith(("loss", "rows", "grad", "param"))]
    inputs = {n: nest(*g[n + ".0"]) for n in names}
    exs = [{n: inputs[n][b] for n in names} for b in range(len(inputs["x"]))]
    check(any(0 in ex["ids"] for ex in exs) and any(0 in ex["mids"] for ex in exs),
          "the batch has padding (ids == 0, mids == 0): the key padding masks are exercised")
    want = g["loss.0"][0][0]
    loss = 0.0
    for ex in exs:
        a = forward(ex, params)
        loss += sum((u - v) ** 2 for ra, rt in zip(a, ex["t"]) for u, v in zip(ra, rt))
    check(abs(loss - want) <= 1e-10 * abs(want), "loss %.15g, PyTorch's formulas in plain Python %.15g" % (want, loss))
    if len(sys.argv) > 2:
        torch_check(g, sys.argv[2], inputs, want)
    sys.exit(1 if fails else 0)


def torch_check(g, sd_path, inputs, want):
    try:
        import torch
    except ImportError:
        print("skip torch: not installed")
        return
    torch.set_default_dtype(torch.float64)
    if sd_path.endswith(".safetensors"):
        from safetensors.torch import load_file
        sd = load_file(sd_path)
    else:
        sd = torch.load(sd_path)
    sd = {k: v.double() for k, v in sd.items()}
    mods = {}
    xs = inputs["x"]
    for inst, kind, heads, nf, causal, a, o in LAYERS:
        E = len(xs[0][0])
        if kind == "mha":
            m = torch.nn.MultiheadAttention(E, heads, batch_first=True)
        elif kind == "mhakv":
            kdim, vdim = (len(inputs[n][0][0]) for n in o["kv"])
            m = torch.nn.MultiheadAttention(E, heads, bias=False, kdim=kdim, vdim=vdim, batch_first=True)
        else:
            ff_dim = len(sd[inst + ".linear1.bias"])
            cls = torch.nn.TransformerEncoderLayer if kind == "enc" else torch.nn.TransformerDecoderLayer
            m = cls(E, heads, ff_dim, dropout=0.1, activation=a, batch_first=True, norm_first=nf)
        m.load_state_dict(sub(sd, inst + "."), strict=True)
        m.eval()
        mods[inst] = m
    check(True, "torch modules load the exported state_dict with strict=True")
    tin = {n: torch.tensor(v) for n, v in inputs.items()}
    h, mem, t = (tin[n].double() for n in ("x", "m", "t"))
    for inst, kind, heads, nf, causal, a, o in LAYERS:
        m = mods[inst]
        T = h.shape[1]
        # torch 1.13: a float causal mask (no is_causal= yet), bool key padding masks
        mask = torch.triu(torch.full((T, T), -math.inf, dtype=torch.float64), 1) if causal else None
        kpm = tin[o["kpm"]] == 0 if "kpm" in o else None
        mkpm = tin[o["mkpm"]] == 0 if "mkpm" in o else None
        if kind == "enc":
            h = m(h, src_mask=mask, src_key_padding_mask=kpm)
        elif kind == "dec":
            h = m(h, mem, tgt_mask=mask, tgt_key_padding_mask=kpm, memory_key_padding_mask=mkpm)
        else:
            k, v = (tin[n].double() for n in o["kv"]) if "kv" in o else (mem, mem)
            h = m(h, k, v, key_padding_mask=mkpm, need_weights=False)[0]
    loss = ((h - t) ** 2).sum()
    loss.backward()
    check(abs(loss.item() - want) <= 1e-10 * abs(want), "torch loss %.15g = cdl's %.15g" % (loss.item(), want))
    worst = 0.0
    for inst, m in mods.items():
        for k, p in m.named_parameters():
            gv = torch.tensor(g["grad.0.%s.%s" % (inst, k)][0], dtype=torch.float64).reshape(p.shape)
            worst = max(worst, ((p.grad - gv).abs().max() / (gv.abs().max() + 1e-30)).item())
    check(worst <= 1e-10, "torch parameter gradients = cdl's (worst relative difference %.3g)" % worst)


if __name__ == "__main__":
    main()
