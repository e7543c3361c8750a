#!/usr/bin/python3
"""gpt_generate_torch.py -- models/gpt.cdl's generation in PyTorch, from the same checkpoint.

    gpt_generate_torch.py CKPT --tokens N [--prompt TEXT] [--heads 4] [--repeats 3]

Reads a cdl checkpoint of models/gpt.cdl (its parameters by name and its vocabulary),
builds the same GPT in PyTorch (one thread, f32, torch.no_grad) and generates N tokens
greedily (the argmax, the lowest id on ties, as `gpt generate --top-k 1`) the way a
Hugging Face GPT-2 does with `use_cache=True`: each new token runs through the blocks
alone, and each layer's keys and values are concatenated to its cache (past_key_values)
and attended over.  Prints the text (prompt included) on the first line and, as the
last line, one JSON record: tokens, seconds (the best of --repeats runs), tokens_per_s
(as `gpt generate` counts them: the N drawn tokens, from the first call after the
prompt), and the same for recomputing the whole prefix per token without a cache
("nocache_tokens_per_s").
"""
import argparse
import json
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def read_ckpt(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    meta = head.pop("__metadata__", {})
    dt = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64}
    t = {}
    for k, h in head.items():
        if h["dtype"] not in dt:
            continue
        s, e = h["data_offsets"]
        t[k] = torch.from_numpy(np.frombuffer(raw[8 + n + s:8 + n + e], dtype=dt[h["dtype"]]).reshape(h["shape"]).copy())
    vocab = meta.get("vocab", "")
    if not vocab.startswith("text:"):
        sys.exit("gpt_generate_torch.py: %s has no text: vocabulary" % path)
    chars = [bytes([int(x, 16)]) for x in vocab[5:].split(",")]
    return t, chars


class GPT:
    def __init__(self, p, heads):
        self.p = {k: v.float() for k, v in p.items()}
        self.V, self.E = self.p["wte"].shape
        self.T = self.p["wpe"].shape[0]
        self.H = heads
        self.L = sum(1 for k in p if k.startswith("transformer.h") and k.endswith(".self_attn.in_proj_weight"))

    def block(self, i, h, past, causal):
        """One pre-norm block over h [n, E] (the new tokens); past: this layer's (K, V)
        or None; returns h and the grown cache."""
        g = lambda name: self.p["transformer.h%d.%s" % (i, name)]
        E, H = self.E, self.H
        d = E // H
        x = F.layer_norm(h, (E,), g("norm1.weight"), g("norm1.bias"))
        q, k, v = F.linear(x, g("self_attn.in_proj_weight"), g("self_attn.in_proj_bias")).split(E, -1)
        if past is not None:
            k, v = torch.cat([past[0], k]), torch.cat([past[1], v])
        heads = lambda t: t.reshape(t.shape[0], H, d).transpose(0, 1)          # [H, n, d]
        s = heads(q) @ heads(k).transpose(1, 2) / d ** 0.5
        if causal:
            n = s.shape[-1]
            s = s.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
        o = (torch.softmax(s, -1) @ heads(v)).transpose(0, 1).reshape(-1, E)
        h = h + F.linear(o, g("self_attn.out_proj.weight"), g("self_attn.out_proj.bias"))
        x = F.layer_norm(h, (E,), g("norm2.weight"), g("norm2.bias"))
        h = h + F.linear(F.gelu(F.linear(x, g("linear1.weight"), g("linear1.bias"))), g("linear2.weight"),
                         g("linear2.bias"))
        return h, (k, v)

    def logits(self, h):
        h = F.layer_norm(h, (self.E,), self.p["transformer.ln_f.weight"], self.p["transformer.ln_f.bias"])
        return h @ self.p["wte"].t()

    def step(self, tok, pos, cache):
        """The logits after token tok at position pos, with the cache (a list per layer)."""
        h = self.p["wte"][tok].reshape(1, -1) + self.p["wpe"][pos]
        for i in range(self.L):
            h, cache[i] = self.block(i, h, cache[i], False)
        return self.logits(h)[0]

    def full(self, toks):
        """The logits after the last of toks, recomputing every position (no cache)."""
        h = self.p["wte"][torch.tensor(toks)] + self.p["wpe"][:len(toks)]
        for i in range(self.L):
            h, _ = self.block(i, h, None, True)
        return self.logits(h[-1:])[0]


def greedy(logits, n):
    """The most likely of the vocabulary's n ids (a model's V may be larger; `generate`
    draws only ids of the vocabulary); the first maximum: the lowest id on ties."""
    return int(torch.argmax(logits[:n]))


def generate(m, prompt, n, cached, nvocab):
    """The prompt's ids and n greedy tokens; seconds from the first draw."""
    toks, cache = list(prompt), [None] * m.L
    for i, t in enumerate(prompt[:-1]):
        if cached:
            m.step(t, i, cache)
    t0 = time.perf_counter()
    for _ in range(n):
        pos = len(toks) - 1
        lg = m.step(toks[-1], pos, cache) if cached else m.full(toks)
        toks.append(greedy(lg, nvocab))
    return toks, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ckpt")
    ap.add_argument("--tokens", type=int, default=60)
    ap.add_argument("--prompt", default="")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-nocache", action="store_true", help="skip the run without a cache")
    a = ap.parse_args()
    torch.set_num_threads(1)
    p, chars = read_ckpt(a.ckpt)
    m = GPT(p, a.heads)
    ids = {c: i for i, c in enumerate(chars)}
    pb = a.prompt.encode() or b"\n"
    prompt = [ids[bytes([b])] for b in pb]
    if len(prompt) + a.tokens - 1 > m.T:
        sys.exit("gpt_generate_torch.py: %d + %d tokens do not fit the context of %d" % (len(prompt), a.tokens, m.T))
    with torch.no_grad():
        best, toks = None, None
        for _ in range(a.repeats):
            toks, s = generate(m, prompt, a.tokens, True, len(chars))
            best = s if best is None else min(best, s)
        nbest = None
        if not a.no_nocache:
            for _ in range(a.repeats):
                t2, s = generate(m, prompt, a.tokens, False, len(chars))
                assert t2 == toks, "the cached and the recomputed greedy texts differ"
                nbest = s if nbest is None else min(nbest, s)
    text = b"".join(chars[t] for t in toks)
    sys.stdout.buffer.write(text + b"\n")
    print(json.dumps({"tokens": a.tokens, "context": m.T, "seconds": best, "tokens_per_s": a.tokens / best,
                      "nocache_tokens_per_s": a.tokens / nbest if nbest else None, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
