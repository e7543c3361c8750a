#!/usr/bin/env python3
"""ckpt_torch.py -- cdl checkpoints to PyTorch state_dicts and back.

    ckpt_torch.py export CKPT OUT [--rename FROM=TO]... [--dtype f32|f64]
    ckpt_torch.py import IN OUT   [--rename FROM=TO]... [--dtype f32|f64]
    ckpt_torch.py list FILE

export: the parameters, state buffers and batch-norm counters (num_batches_tracked) of
a cdl checkpoint, without the optimizer state, as a state_dict.  import: a state_dict
as a cdl parameter file, which `prog eval --load`, `gradcheck --load` and
cdl_ckpt_load take (it holds no optimizer state, so `train --resume` does not).

A file named *.safetensors is read and written with numpy alone, in the layout
safetensors.torch.save_file uses (`safetensors.torch.load_file` reads it, and cdl reads
PyTorch's); any other name is a torch.save'd state_dict (a dict of tensors), which
needs torch.  Files this script writes carry cdl's checksums (crc32:<name> and
header_crc32 in __metadata__, ignored by other readers); checksums present in a file
it reads are verified.

cdl names parameters as PyTorch modules do (fc.weight, bn.running_var, cell.weight_ih:
nn.Linear, nn.BatchNorm*, nn.LSTMCell/GRUCell/RNNCell), so a model written with the
same attribute names needs no renaming.  --rename maps names that differ, first
matching rule wins, each rule an exact name or a pattern with one '*':

    # a bidirectional cdl LSTM (cells fwd, bwd) to nn.LSTM(..., bidirectional=True)
    ckpt_torch.py export bilstm.ckpt bilstm.pt \\
        --rename 'fwd.*=lstm.*_l0' --rename 'bwd.*=lstm.*_l0_reverse'
    ckpt_torch.py import bilstm.pt back.ckpt \\
        --rename 'lstm.*_l0_reverse=bwd.*' --rename 'lstm.*_l0=fwd.*'

--dtype converts the real tensors (cdl loads F32 and F64 into either build).
"""
import argparse
import json
import os
import struct
import sys
import zlib

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I32": np.int32, "I64": np.int64,
          "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


def fail(msg):
    sys.exit("ckpt_torch: " + msg)


def read_safetensors(path):
    """(tensors: dict name -> ndarray in file order, metadata dict); checksums checked."""
    b = open(path, "rb").read()
    if len(b) < 8:
        fail("%s: too short for a safetensors file" % path)
    n = struct.unpack("<Q", b[:8])[0]
    if n > len(b) - 8:
        fail("%s: header length %d exceeds the file" % (path, n))
    text = b[8:8 + n]
    hdr = json.loads(text)
    meta = hdr.pop("__metadata__", {}) or {}
    if "header_crc32" in meta:
        key = b'"header_crc32":"'
        i = text.index(key) + len(key)
        z = text[:i] + b"00000000" + text[i + 8:]
        if "%08x" % zlib.crc32(z) != meta["header_crc32"]:
            fail("%s: header checksum mismatch: the file is corrupt" % path)
    data = b[8 + n:]
    out = {}
    for name, e in hdr.items():
        s, t = e["data_offsets"]
        if e["dtype"] == "BF16":           # numpy has no bfloat16: widen to f32
            raw = np.frombuffer(data[s:t], dtype="<u2").astype(np.uint32) << 16
            arr = raw.view(np.float32)
        elif e["dtype"] in DTYPES:
            arr = np.frombuffer(data[s:t], dtype=np.dtype(DTYPES[e["dtype"]]).newbyteorder("<"))
        else:
            fail("%s: tensor %s: dtype %s not supported" % (path, name, e["dtype"]))
        crc = meta.get("crc32:" + name)
        if crc is not None and "%08x" % zlib.crc32(data[s:t]) != crc:
            fail("%s: tensor %s: checksum mismatch: the data is corrupt" % (path, name))
        out[name] = arr.reshape(e["shape"]).copy()
    return out, meta


def write_safetensors(path, tensors, meta):
    """tensors (dict name -> ndarray, in order) with meta and cdl's checksums, atomically."""
    blobs, entries, off = [], {}, 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        if a.dtype not in NAMES:
            fail("tensor %s: dtype %s cannot be written" % (name, a.dtype))
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        entries[name] = {"dtype": NAMES[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    m = dict(meta)
    for name, raw in zip(tensors, blobs):
        m["crc32:" + name] = "%08x" % zlib.crc32(raw)
    m["header_crc32"] = "00000000"
    hdr = {"__metadata__": m}
    hdr.update(entries)
    text = json.dumps(hdr, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    key = b'"header_crc32":"'
    i = text.index(key) + len(key)
    text = text[:i] + b"%08x" % zlib.crc32(text) + text[i + 8:]
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for raw in blobs:
            f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def need_torch(path):
    try:
        import torch
    except ImportError:
        fail("%s: torch is not installed; name the file *.safetensors to use numpy alone" % path)
    return torch


def read_state_dict(path):
    if path.endswith(".safetensors"):
        return read_safetensors(path)[0]
    torch = need_torch(path)
    sd = torch.load(path, map_location="cpu")
    if isinstance(sd, dict) and set(sd) == {"state_dict"}:
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        fail("%s: not a state_dict (a dict of tensors) but %s" % (path, type(sd).__name__))
    out = {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            fail("%s: entry %s is a %s, not a tensor" % (path, k, type(v).__name__))
        v = v.detach().cpu()
        if v.dtype == torch.bfloat16:
            v = v.float()
        out[k] = v.numpy().copy()
    return out


def write_state_dict(path, tensors):
    if path.endswith(".safetensors"):
        write_safetensors(path, tensors, {"format": "pt"})
        return
    torch = need_torch(path)
    from collections import OrderedDict
    sd = OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in tensors.items())
    tmp = "%s.tmp.%d" % (path, os.getpid())
    torch.save(sd, tmp)
    os.replace(tmp, path)


def parse_rules(rules):
    out = []
    for r in rules:
        if r.count("=") != 1:
            fail("--rename %s: expected FROM=TO" % r)
        a, b = r.split("=")
        if a.count("*") > 1 or b.count("*") != a.count("*"):
            fail("--rename %s: FROM and TO need the same single '*' (or none)" % r)
        out.append((a, b))
    return out


def rename(name, rules):
    for a, b in rules:
        if "*" not in a:
            if name == a:
                return b
            continue
        pre, suf = a.split("*")
        if name.startswith(pre) and name.endswith(suf) and len(name) >= len(pre) + len(suf):
            mid = name[len(pre):len(name) - len(suf)]
            return b.replace("*", mid)
    return name


def convert(tensors, rules, dtype):
    out = {}
    for k, v in tensors.items():
        n = rename(k, rules)
        if n in out:
            fail("two tensors are renamed to %s" % n)
        if dtype and v.dtype.kind == "f":
            v = v.astype(np.float32 if dtype == "f32" else np.float64)
        out[n] = v
    return out


def cmd_export(a):
    tensors, meta = read_safetensors(a.src)
    if meta.get("format") != "cdl-ckpt 1":
        fail("%s: not a cdl checkpoint (format %r)" % (a.src, meta.get("format")))
    slots = [s for s in meta.get("optimizer_slots", "").split(",") if s]
    keep = {k: v for k, v in tensors.items() if not any(k.startswith(s + ".") for s in slots)}
    write_state_dict(a.dst, convert(keep, parse_rules(a.rename), a.dtype))
    print("%s: %d tensors (%d optimizer tensors left out)" % (a.dst, len(keep), len(tensors) - len(keep)))


def cmd_import(a):
    tensors = convert(read_state_dict(a.src), parse_rules(a.rename), a.dtype)
    write_safetensors(a.dst, tensors, {"format": "pt", "source": os.path.basename(a.src)})
    print("%s: %d tensors" % (a.dst, len(tensors)))


def cmd_list(a):
    t = read_state_dict(a.src)
    for k, v in t.items():
        print("%-40s %-8s %s" % (k, NAMES.get(v.dtype, str(v.dtype)), list(v.shape)))


def main():
    p = argparse.ArgumentParser(description="cdl checkpoints to PyTorch state_dicts and back",
                                epilog="*.safetensors files need numpy only; other names are torch.save files.")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn, h in (("export", cmd_export, "a cdl checkpoint to a state_dict"),
                        ("import", cmd_import, "a state_dict to a cdl parameter file")):
        q = sub.add_parser(name, help=h)
        q.add_argument("src")
        q.add_argument("dst")
        q.add_argument("--rename", action="append", default=[], metavar="FROM=TO",
                       help="rename tensors: an exact name or a pattern with one '*'")
        q.add_argument("--dtype", choices=("f32", "f64"), help="convert the real tensors")
        q.set_defaults(fn=fn)
    q = sub.add_parser("list", help="the tensors of a file")
    q.add_argument("src")
    q.set_defaults(fn=cmd_list)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
