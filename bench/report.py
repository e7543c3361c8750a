#!/usr/bin/env python3
"""report.py -- turn the JSON lines of one `make bench` run into tables.

    python3 bench/report.py RAW.jsonl [--rows bench/rows.txt] [--json OUT.json] [--md OUT.md]

RAW.jsonl holds one record per run (bench/driver.c, bench/torch_bench.py, bench/sgemm.c,
"error" records and "meta" records from bench/run.sh).  This script adds what the runs
cannot know -- FLOPs per step (below), the ratios between frameworks, the reference
PyTorch times and the goals of bench/rows.txt -- prints the markdown tables on stdout
(and into --md), and writes every record plus the derived numbers into --json.
Standard library only: it runs where torch is not installed.

A run measures every configuration in several rounds (run.sh, BENCH_ROUNDS), the
frameworks of a row back to back in each: a configuration's time is the median over the
rounds, and a ratio between two frameworks is the median of the ratios within a round,
so that a change in machine load (these machines are shared) hits both sides alike.

FLOPs per training step count the GEMM and convolution multiply-adds only (2 FLOPs
each): the forward products, the weight-gradient products (as many), and the
input-gradient products of every layer but the first (whose input needs no gradient;
likewise the LSTM's initial state).  Elementwise work, pooling, losses and the
optimizer are not counted, so GFLOP/s is a lower bound on the work actually done.

The machine's limits come from bench/peak.c in the same run ("peak" records): "% of
peak" is a row's GFLOP/s over n threads times one core's AVX-512 FMA rate, and the
roofline limit of a row is its FLOPs at that peak plus its unavoidable traffic
(step_bytes) at the triad bandwidth of the level its working set fits in (L2 when it
fits one core's L2, L3 up to 32 MB -- a Zen 4 CCD's L3; the VM reports the host's
total -- main memory beyond).
"""
import argparse
import json
import sys


# ------------------------------------------------------------------------ FLOPs, bytes
# Each model is the list of its GEMM/convolution layers as one training step calls them
# (a recurrent layer once per step), plus its parameter count.  A layer is
# (forward FLOPs, input reals, weight reals, output reals, input gradient needed).

def _lin(b, i, o, dx=True):
    return (2.0 * b * i * o, b * i, i * o + o, b * o, dx)


def _conv(b, c, k, r, h, oh, dx=True):
    return (2.0 * b * k * c * r * r * oh * oh, b * c * h * h, k * c * r * r + k, b * k * oh * oh, dx)


def _params(layers):
    return sum(l[2] for l in layers)


def model_mlp(b, sizes):
    layers = [_lin(b, sizes[i], sizes[i + 1], i > 0) for i in range(len(sizes) - 1)]
    return layers, _params(layers)


def model_lenet(b):
    layers = [_conv(b, 1, 6, 5, 28, 28, False), _conv(b, 6, 16, 5, 14, 10),
              _lin(b, 400, 120), _lin(b, 120, 84), _lin(b, 84, 10)]
    return layers, _params(layers)


def model_resnet(b):
    layers = [_conv(b, 1, 16, 3, 28, 28, False)] + [_conv(b, 16, 16, 3, 28, 28)] * 4 + [_lin(b, 16, 10)]
    return layers, _params(layers)


def model_lstm(b, t=28, f=28, h=128):
    # per step: the input and the recurrent projection; the input needs no gradient,
    # nor does h_0 (a constant), so t - 1 recurrent input gradients
    x, r, fc = _lin(b, f, 4 * h, False), _lin(b, h, 4 * h), _lin(b, h, 10)
    layers = [x] * t + [r] * (t - 1) + [r[:4] + (False,)] + [fc]
    return layers, x[2] + r[2] + fc[2]


def model_vae(b):
    layers = [_lin(b, 784, 400, False), _lin(b, 400, 20), _lin(b, 400, 20), _lin(b, 20, 400), _lin(b, 400, 784)]
    return layers, _params(layers)


def _attn(b, t, e):
    """Attention's two batched products (q k^T and p v) over b sequences of t tokens,
    every head together (h heads of d = e / h): 2 b t^2 e FLOPs each forward, no
    weights; counted in full, causal or not (the kernels skip no block)."""
    return (2.0 * b * t * t * e, b * t * e, 0, b * t * e, True)


def _encoder(n, t, e, ff):
    """One transformer encoder layer over n sequences of t tokens of width e: the
    in-projection (3e), attention, the out-projection, the feed-forward e -> ff -> e."""
    return [_lin(n * t, e, 3 * e), _attn(n, t, e), _attn(n, t, e), _lin(n * t, e, e), _lin(n * t, e, ff),
            _lin(n * t, ff, e)]


def model_gpt(b, t=128, e=256, v=256, layers=4):
    # four blocks, then the output projection tied to the token embedding (its [v, e]
    # weight counted once, the position embedding added); the embedding lookup's
    # gradient is no GEMM
    ls = sum((_encoder(b, t, e, 4 * e) for _ in range(layers)), []) + [_lin(b * t, e, v)]
    return ls, _params(ls) + t * e


def model_transformer(b, d=64, ff=128):
    # the row embedding (28 -> d, no input gradient), two layers over 29 tokens, the head
    ls = [_lin(b * 28, 28, d, False)] + _encoder(b, 29, d, ff) + _encoder(b, 29, d, ff) + [_lin(b, d, 10)]
    return ls, _params(ls) + 30 * d


MODELS = {
    "mlp": lambda b: model_mlp(b, (784, 256, 128, 10)),
    "wide_mlp": lambda b: model_mlp(b, (1024, 4096, 4096, 10)),
    "lenet": model_lenet,
    "resnet": model_resnet,
    "lstm": model_lstm,
    "vae": model_vae,
    "gpt": model_gpt,
    "transformer": model_transformer,
}
OPT_STATE = {"sgd": 1, "adam": 2}  # optimizer state reals per parameter (momentum; m, v)


def step_flops(model, batch):
    """GEMM/conv FLOPs of one training step: forward, weight gradient, input gradient."""
    layers, _ = MODELS[model](batch)
    return sum(2 * l[0] + (l[0] if l[4] else 0) for l in layers)


def step_bytes(model, batch, opt):
    """The traffic a step cannot avoid, in bytes (f32): every product reads its operands
    and writes its result once (forward: x, W -> y; weight gradient: g, x -> dW; input
    gradient: g, W -> dx), and the optimizer reads the parameters, their gradients and
    its state and writes the parameters and the state back."""
    layers, params = MODELS[model](batch)
    reals = sum((l[1] + l[2] + l[3]) * (3 if l[4] else 2) for l in layers)
    reals += params * (3 + 2 * OPT_STATE[opt])
    return 4.0 * reals


def working_set(model, batch, opt, act_bytes):
    """Bytes a step touches over and over: parameters, gradients, optimizer state and
    the activation arena (cdl static's plan)."""
    _, params = MODELS[model](batch)
    return 4.0 * params * (2 + OPT_STATE[opt]) + (act_bytes or 0)


FRAMEWORKS = ("static", "static_onednn", "tape", "torch_eager", "torchscript")
FW_TITLE = {"static": "cdl static", "static_onednn": "cdl static (oneDNN)", "tape": "cdl tape",
            "torch_eager": "PyTorch eager", "torchscript": "TorchScript"}
STATIC = ("static", "static_onednn")
BACKEND_OF = {"static": "openblas", "static_onednn": "onednn"}
BACKEND_TITLE = {"openblas": "OpenBLAS", "onednn": "oneDNN"}
L3_BYTES = 32 << 20  # a Zen 4 CCD's L3 (the VM reports the host's total)


# ------------------------------------------------------------------------ input

def read_rows(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if not line:
                continue
            name, model, batch, opt, lr, steps, repeats, warmup, ref, goal = line[:10]
            extra = line[10:] + ["-"] * (13 - len(line))   # tape_goal, peak_goal, scale_goal: "-" = none
            opt_num = lambda v: None if v == "-" else float(v)
            rows.append({"name": name, "model": model, "batch": int(batch), "opt": opt,
                         "lr": float(lr), "ref_ms": float(ref), "goal": float(goal),
                         "tape_goal": opt_num(extra[0]), "peak_goal": opt_num(extra[1]),
                         "scale_goal": opt_num(extra[2])})
    return rows


def read_raw(path):
    recs, bad = [], 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                recs.append(json.loads(line))
            except ValueError:
                bad += 1
    return recs, bad


# ------------------------------------------------------------------------ formatting

def fmt(v, nd=2):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if v >= 100:
        return "%.0f" % v
    if v >= 10:
        return "%.1f" % v
    return "%.*f" % (nd, v)


def mark(ok):
    return "" if ok is None else (" ✓" if ok else " ✗")


def table(head, body):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(out)


def tape_act(rec):
    """Activation memory of a tape run: the arena bytes it really used at its peak
    (values, gradients, scratch, records), else the act_bytes it reserved."""
    if not rec:
        return None
    return rec.get("tape_arena_bytes") or rec.get("act_bytes")


# ------------------------------------------------------------------------ derived numbers

def collect(recs):
    """Split the records: meta dict, runs {(framework, name, threads): rec} (training
    steps), latency (the same keys: batch-1 eval forward), sgemm {(backend, threads):
    rec}, peak {threads: rec}, errors.  A configuration measured in several rounds
    (run.sh, BENCH_ROUNDS) becomes one record (merge_rounds)."""
    meta, runs, latency, sgemm, peak, errors = {}, {}, {}, {}, {}, []
    for r in recs:
        fw = r.get("framework")
        if fw == "meta":
            meta.update({k: v for k, v in r.items() if k != "framework"})
        elif "error" in r:
            errors.append(r)
        elif fw == "sgemm":
            sgemm.setdefault((r.get("backend", "openblas"), r["threads"]), []).append(r)
        elif fw == "peak":
            peak[r["threads"]] = r
        elif r.get("mode") == "latency":
            latency.setdefault((fw, r.get("name"), r.get("threads")), []).append(r)
        else:
            runs.setdefault((fw, r.get("name"), r.get("threads")), []).append(r)
    runs = {k: merge_rounds(v, "ms_median", "cpu_ms_per_step") for k, v in runs.items()}
    latency = {k: merge_rounds(v, "ms_median", "cpu_ms_per_step") for k, v in latency.items()}
    sgemm = {k: merge_rounds(v, "gflops", "cpu_ms_per_set") for k, v in sgemm.items()}
    return meta, runs, latency, sgemm, peak, errors


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if len(v) % 2 else 0.5 * (v[len(v) // 2 - 1] + v[len(v) // 2])


def merge_rounds(recs, key, *also):
    """The rounds of one configuration as one record: the median round's record (by
    `key`), with `key` and the `also` fields replaced by their medians over the rounds,
    and "rounds" = {round: key} for the per-round ratios (median_ratio)."""
    recs = sorted(recs, key=lambda r: r[key])
    out = dict(recs[(len(recs) - 1) // 2])
    for f in (key,) + also:
        vals = [r[f] for r in recs if r.get(f) is not None]
        if vals:
            out[f] = median(vals)
    out["rounds"] = {r.get("round", 0): r[key] for r in recs}
    return out


def median_ratio(num, den):
    """num's time over den's (den's speed-up over num): the median of the per-round
    ratios over the rounds both ran in (a load change hits both records of a round
    alike), else the ratio of the medians."""
    if not num or not den:
        return None
    a, b = num.get("rounds", {}), den.get("rounds", {})
    common = [k for k in a if k in b and b[k]]
    if common:
        return median([a[k] / b[k] for k in common])
    return num["ms_median"] / den["ms_median"]


def core_peak(peak):
    """One core's AVX-512 (else AVX2) FMA rate, GFLOP/s: the best any peak run saw."""
    best = max([p.get("fma512_gflops") or p.get("fma256_gflops") or 0 for p in peak.values()] or [0])
    return best or None


def roofline(row, n, peak, act_bytes):
    """(limit ms, compute ms, memory ms, cache level, GB/s) of a row at n threads, or None."""
    pk, pr = core_peak(peak), peak.get(n)
    if not pk or not pr:
        return None
    gf = step_flops(row["model"], row["batch"])
    ws = working_set(row["model"], row["batch"], row["opt"], act_bytes)
    level = "l2" if ws <= pr.get("l2_bytes", 0) else "l3" if ws <= L3_BYTES else "dram"
    bw = pr["triad_gbs"][level]
    comp = gf / (n * pk * 1e9) * 1e3
    mem = step_bytes(row["model"], row["batch"], row["opt"]) / (bw * 1e9) * 1e3
    return comp + mem, comp, mem, level, bw


def derive(rows, runs, sgemm, peak):
    """Add FLOP rates, ratios and the share of peak to the run records; return them."""
    rowmap = {r["name"]: r for r in rows}
    pk = core_peak(peak)
    derived = []
    for (fw, name, n), r in sorted(runs.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        row = rowmap.get(name)
        if not row or row["model"] not in MODELS:
            continue
        gf = step_flops(row["model"], row["batch"]) / 1e9
        r["gflop_per_step"] = gf
        r["gflops"] = gf / (r["ms_median"] / 1e3)
        r["fraction_of_peak"] = r["gflops"] / (n * pk) if pk else None
        eager = runs.get(("torch_eager", name, n))
        r["speedup_vs_torch_eager"] = median_ratio(eager, r)
        if fw in STATIC:
            tape = runs.get(("tape", name, n))
            r["speedup_vs_tape"] = median_ratio(tape, r)
            tb = tape_act(tape)
            r["act_ratio_vs_tape"] = r["act_bytes"] / tb if tb else None
            r["rss_ratio_vs_torch_eager"] = r["peak_rss_kb"] / eager["peak_rss_kb"] if eager else None
            sg = sgemm.get((BACKEND_OF[fw], n))
            if sg and row["model"] == "wide_mlp":
                r["fraction_of_sgemm"] = r["gflops"] / sg["gflops"]
                sc, rc = sg.get("cpu_ms_per_set"), r.get("cpu_ms_per_step")
                if n == 1 and sc and rc:   # the same comparison by CPU time
                    r["fraction_of_sgemm_cpu"] = (gf / rc) / (sg["gflop_per_set"] / sc)
        derived.append(r)
    return derived


# ------------------------------------------------------------------------ tables

def header_lines(meta, runs, peak):
    md = ["Machine: %s, %s cores; %s; %s; OpenBLAS core %s; %s." % (
        meta.get("cpu", "?"), meta.get("cores", "?"), meta.get("kernel", "?"), meta.get("cc", "?"),
        meta.get("openblas_core", "?"), meta.get("torch", "?"))]
    nr = meta.get("rounds", 1)
    md.append("Date %s; command `%s`; load average %s at the start, %s at the end; %s s; %s."
              % (meta.get("date", "?"), meta.get("command", "?"), meta.get("loadavg_start", "?"),
                 meta.get("loadavg_end", "?"), meta.get("seconds", "?"),
                 "1 round" if nr == 1 else "%d rounds (each time is the median over the rounds, each "
                 "ratio the median of the rounds' ratios)" % nr))
    pk = core_peak(peak)
    if pk:
        p1 = max(peak.values(), key=lambda p: p.get("fma512_gflops", 0))
        md.append("Peak (bench/peak.c, measured at the start of this run): one core %s GFLOP/s fp32 with "
                  "AVX-512 FMA, %s with AVX2 FMA; triad bandwidth %s."
                  % (fmt(pk, 1), fmt(p1.get("fma256_gflops"), 1),
                     "; ".join("%d thread%s L2 %s, L3 %s, memory %s GB/s" % (
                         n, "" if n == 1 else "s", fmt(p["triad_gbs"]["l2"], 1), fmt(p["triad_gbs"]["l3"], 1),
                         fmt(p["triad_gbs"]["dram"], 1)) for n, p in sorted(peak.items()))))
    else:
        md.append("Peak: not measured (bench/peak.c did not run): no % of peak, no roofline.")
    # Contention check: a 1-thread run uses one CPU, so its CPU time per step should be
    # close to its wall time; much less means other processes took the CPU from it.
    busy = sorted(r["ms_median"] / r["cpu_ms_per_step"] for (fw, name, n), r in runs.items()
                  if n == 1 and r.get("cpu_ms_per_step"))
    if busy:
        med = busy[len(busy) // 2]
        meta["wall_over_cpu_1thread"] = med
        md.append("Contention check: 1-thread runs took %.2fx their CPU time in wall time (median)%s."
                  % (med, "" if med < 1.15 else
                     " — the machine was BUSY during this run: the times are inflated and"
                     " the ratios less reliable; rerun on an idle machine"))
    md.append("")
    return md


def sgemm_line(sgemm, n, pk):
    parts = []
    for be in ("openblas", "onednn"):
        sg = sgemm.get((be, n))
        if not sg:
            continue
        cpu = (" (%s by CPU time)" % fmt(sg["gflop_per_set"] / sg["cpu_ms_per_set"] * 1e3, 1)
               if n == 1 and sg.get("cpu_ms_per_set") else "")
        ofpk = ", %.0f%% of peak" % (100 * sg["gflops"] / (n * pk)) if pk else ""
        parts.append("%s %s GFLOP/s%s%s" % (BACKEND_TITLE[be], fmt(sg["gflops"], 1), cpu, ofpk))
    return ("sgemm reference (the wide MLP's eight GEMMs through the runtime's GEMM, same run): %s."
            % ("; ".join(parts) if parts else "not measured"))


def shapes_table(sgemm, n, pk):
    """The bench's typical GEMMs timed alone through each backend (sgemm.c "shapes")."""
    by = {be: {q["what"]: q for q in (sgemm.get((be, n)) or {}).get("shapes", [])} for be in ("openblas", "onednn")}
    names = [q["what"] for q in (sgemm.get(("openblas", n)) or sgemm.get(("onednn", n)) or {}).get("shapes", [])]
    if not names:
        return None
    body = []
    for w in names:
        o, d = by["openblas"].get(w), by["onednn"].get(w)
        cells = [w]
        for q in (o, d):
            cells.append("%s (%.0f%%)" % (fmt(q["gflops"], 1), 100 * q["gflops"] / (n * pk)) if q and pk
                         else fmt(q["gflops"], 1) if q else "—")
        cells.append(fmt(d["gflops"] / o["gflops"]) + "x" if o and d else "—")
        if n == 1:  # by CPU time: what an idle core would give, near enough
            f = lambda q: 2e-3 * q["m"] * q["n"] * q["k"] / q["cpu_us"] if q and q.get("cpu_us") else None
            fo, fd = f(o), f(d)
            cells += [fmt(fo, 1) if fo else "—", fmt(fd, 1) if fd else "—", fmt(fd / fo) + "x" if fo and fd else "—"]
        body.append(cells)
    return table(["GEMM (row-major, weights [out, in])", "OpenBLAS GFLOP/s (of peak)", "oneDNN GFLOP/s (of peak)",
                  "oneDNN / OpenBLAS"] + (["OpenBLAS by CPU time", "oneDNN by CPU time", "ratio by CPU time"]
                                          if n == 1 else []), body)


def every_run_table(rows, runs, n):
    body = []
    for row in rows:
        for fw in FRAMEWORKS:
            r = runs.get((fw, row["name"], n))
            if not r or "gflops" not in r:
                continue
            sp = r.get("speedup_vs_torch_eager")
            act = tape_act(r) if fw == "tape" else r.get("act_bytes")
            cpu = r.get("cpu_ms_per_step")
            fp = r.get("fraction_of_peak")
            body.append([row["name"], "%d/%s" % (row["batch"], row["opt"]), FW_TITLE[fw],
                         fmt(r["ms_median"]), fmt(cpu) if cpu else "—",
                         fmt(r["samples_per_s"], 0), fmt(r["gflops"], 1),
                         "%.0f%%" % (100 * fp) if fp is not None else "—",
                         fmt(sp) + "x" if sp else "—", fmt(r["peak_rss_kb"] / 1024.0, 1),
                         fmt(act / 2**20, 2) if act is not None else "—"])
    return table(["row", "batch/opt", "framework", "ms/step", "CPU ms/step", "samples/s", "GFLOP/s", "% of peak",
                  "vs eager", "peak RSS MB", "act MB"], body)


def roofline_table(rows, runs, peak, n):
    body = []
    for row in rows:
        if row["model"] not in MODELS:
            continue
        st = runs.get(("static", row["name"], n)) or runs.get(("static_onednn", row["name"], n))
        rl = roofline(row, n, peak, st.get("act_bytes") if st else None)
        if not rl or not any(runs.get((fw, row["name"], n)) for fw in FRAMEWORKS):
            continue
        lim, comp, mem, level, bw = rl
        cells = [row["name"], fmt(step_flops(row["model"], row["batch"]) / 1e9, 3),
                 fmt(step_bytes(row["model"], row["batch"], row["opt"]) / 2**20, 1),
                 "%s (%s GB/s)" % ({"l2": "L2", "l3": "L3", "dram": "memory"}[level], fmt(bw, 0)),
                 "%s = %s + %s" % (fmt(lim, 3), fmt(comp, 3), fmt(mem, 3))]
        for fw in ("static", "static_onednn", "torch_eager"):
            r = runs.get((fw, row["name"], n))
            cells.append("%s (%.0f%%)" % (fmt(r["ms_median"]), 100 * lim / r["ms_median"]) if r else "—")
        body.append(cells)
    if not body:
        return None
    return table(["row", "GFLOP/step", "traffic MB/step", "working set in", "limit ms = FLOPs at peak + bytes",
                  "cdl static ms (of limit)", "static oneDNN ms (of limit)", "PyTorch eager ms (of limit)"], body)


def goals_table(rows, runs, n):
    body = []
    for row in rows:
        st = runs.get(("static", row["name"], n))
        so = runs.get(("static_onednn", row["name"], n))
        if not st and not so:
            continue
        cells = [row["name"]]
        for r in (st, so):
            sp = r.get("speedup_vs_torch_eager") if r else None
            cells.append((fmt(sp) + "x" + mark(sp >= row["goal"])) if sp else "—")
        if n == 1:
            ea = runs.get(("torch_eager", row["name"], n))
            c2 = ea.get("cpu_ms_per_step") if ea else None
            for r in (st, so):
                c1 = r.get("cpu_ms_per_step") if r else None
                cells.append((fmt(c2 / c1) + "x" + mark(c2 / c1 >= row["goal"])) if c1 and c2 else "—")
        cells.append("%gx" % row["goal"])
        ref = st or so
        v, g = ref.get("speedup_vs_tape"), row["tape_goal"]
        cells.append((fmt(v) + "x" + (mark(v >= g) + " (goal %gx)" % g if g else "")) if v else "—")
        g = row["peak_goal"]
        pk = ["%s %.0f%%%s" % (BACKEND_TITLE[BACKEND_OF[fw]], 100 * r["fraction_of_peak"],
                               mark(r["fraction_of_peak"] >= g) if g else "")
              for fw, r in (("static", st), ("static_onednn", so)) if r and r.get("fraction_of_peak") is not None]
        cells.append("; ".join(pk) + (" (goal %.0f%%)" % (100 * g) if g and pk else ""))
        v = ref.get("rss_ratio_vs_torch_eager")
        cells.append("%.3f" % v + mark(v <= 0.1) if v is not None else "—")
        v = ref.get("act_ratio_vs_tape")
        cells.append("%.2f" % v + mark(v <= 0.5) if v is not None else "—")
        sg = []
        for fw, r in (("static", st), ("static_onednn", so)):
            v = r.get("fraction_of_sgemm") if r else None
            if v is None:
                continue
            c = "%s %.0f%%%s" % (BACKEND_TITLE[BACKEND_OF[fw]], 100 * v, mark(v >= 0.9))
            v = r.get("fraction_of_sgemm_cpu")
            if v is not None:
                c += " (CPU time %.0f%%%s)" % (100 * v, mark(v >= 0.9))
            sg.append(c)
        cells.append("; ".join(sg))
        body.append(cells)
    eager_cols = ["static vs eager", "oneDNN static vs eager"]
    return table(["row"] + eager_cols + (["by CPU time", "oneDNN by CPU time"] if n == 1 else []) +
                 ["goal", "static vs tape", "% of peak", "RSS static/eager (≤ 0.1)", "act static/tape (≤ 0.5)",
                  "of its backend's sgemm rate (≥ 90%)"], body)


def scaling_table(rows, runs):
    """2 threads against 1: each static build's throughput ratio (its own 1-thread ms over
    its 2-thread ms), the scaling goal of rows.txt, and whether the best static build is
    ahead of PyTorch eager at 2 threads (issue 15 item 4)."""
    body = []
    for row in rows:
        cells, seen = [row["name"]], False
        for fw in ("static", "static_onednn"):
            r1, r2 = runs.get((fw, row["name"], 1)), runs.get((fw, row["name"], 2))
            if r1 and r2:
                seen = True
                v = r1["ms_median"] / r2["ms_median"]
                cells.append("%s / %s ms: %sx%s" % (fmt(r1["ms_median"]), fmt(r2["ms_median"]), fmt(v),
                                                   mark(v >= row["scale_goal"]) if row["scale_goal"] else ""))
            else:
                cells.append("—")
        if not seen:
            continue
        cells.append("%gx" % row["scale_goal"] if row["scale_goal"] else "—")
        ea = runs.get(("torch_eager", row["name"], 2))
        sts = [r for r in (runs.get(("static", row["name"], 2)), runs.get(("static_onednn", row["name"], 2))) if r]
        if ea and sts:
            v = ea["ms_median"] / min(r["ms_median"] for r in sts)
            cells.append(fmt(v) + "x" + mark(v > 1))
        else:
            cells.append("—")
        body.append(cells)
    if not body:
        return None
    return table(["row", "cdl static 1 / 2 threads", "static oneDNN 1 / 2 threads", "scaling goal",
                  "best static vs eager at 2 threads (> 1)"], body)


def reference_table(rows, runs):
    body = []
    for row in rows:
        ea = runs.get(("torch_eager", row["name"], 1))
        sts = [r for r in (runs.get(("static", row["name"], 1)), runs.get(("static_onednn", row["name"], 1))) if r]
        if not sts and not ea:
            continue
        st = min(sts, key=lambda r: r["ms_median"]) if sts else None
        need = row["ref_ms"] / row["goal"]
        cpu = st.get("cpu_ms_per_step") if st else None
        cells = [row["name"], fmt(row["ref_ms"]), fmt(ea["ms_median"]) if ea else "—",
                 "%gx → ≤ %s" % (row["goal"], fmt(need)),
                 ("%s (%s)" % (fmt(st["ms_median"]), BACKEND_TITLE[st.get("backend", "openblas")])) if st else "—",
                 (fmt(row["ref_ms"] / st["ms_median"]) + "x" + mark(st["ms_median"] <= need)) if st else "—",
                 fmt(cpu) if cpu else "—",
                 (fmt(row["ref_ms"] / cpu) + "x" + mark(cpu <= need)) if cpu else "—"]
        body.append(cells)
    return table(["row", "reference PyTorch ms", "PyTorch eager here", "goal → static ms",
                  "best cdl static ms", "static vs reference", "static CPU ms",
                  "vs reference by CPU time"], body)


def latency_table(rows, latency, n):
    """Batch-1 eval forward, microseconds per call, one line per model."""
    body, seen = [], set()
    fws = ("static", "static_onednn", "tape", "torch_eager")
    for row in rows:
        recs = {fw: latency.get((fw, row["name"], n)) for fw in fws}
        if row["model"] in seen or not any(recs.values()):
            continue
        seen.add(row["model"])
        cells = [row["model"]] + [fmt(recs[fw]["ms_median"] * 1e3, 1) if recs[fw] else "—" for fw in fws]
        for fw in ("static", "static_onednn"):
            v = median_ratio(recs["torch_eager"], recs[fw])
            cells.append(fmt(v) + "x" if v else "—")
        body.append(cells)
    if not body:
        return None
    return table(["model", "cdl static µs", "static oneDNN µs", "cdl tape µs", "PyTorch eager µs",
                  "static vs eager", "oneDNN static vs eager"], body)


def report(rows, recs, bad, raw_path):
    meta, runs, latency, sgemm, peak, errors = collect(recs)
    derived = derive(rows, runs, sgemm, peak)
    threads = sorted({k[2] for k in runs} | {k[2] for k in latency} | {k[1] for k in sgemm})
    pk = core_peak(peak)
    md = header_lines(meta, runs, peak)
    for n in threads:
        tn = "%d thread%s" % (n, "" if n == 1 else "s")
        md += ["### %s: every run" % tn, "", sgemm_line(sgemm, n, pk), "", every_run_table(rows, runs, n), ""]
        st = shapes_table(sgemm, n, pk)
        if st:
            md += ["### %s: the bench's GEMMs alone, per backend" % tn, "", st, ""]
        rt = roofline_table(rows, runs, peak, n)
        if rt:
            md += ["### %s: roofline" % tn, "",
                   "Limit = the row's GEMM/conv FLOPs at %d x one core's peak + its unavoidable traffic "
                   "at the triad bandwidth of the level its working set fits in (bench/report.py, "
                   "step_bytes); a row at 100%% would run at that limit." % n, "", rt, ""]
        md += ["### %s: goals for cdl static" % tn, "", goals_table(rows, runs, n), ""]
        lt = latency_table(rows, latency, n)
        if lt:
            md += ["### %s: batch-1 latency (inference)" % tn, "",
                   "One sample through the eval-mode forward pass (the loss included), per call; "
                   "PyTorch eager in eval mode under torch.no_grad().", "", lt, ""]
    sc = scaling_table(rows, runs) if 1 in threads and 2 in threads else None
    if sc:
        md += ["### 2 threads against 1", "",
               "Throughput at 2 threads over the same build's at 1 thread (1-thread ms / 2-thread ms).",
               "", sc, ""]
    if 1 in threads:
        md += ["### Against the reference PyTorch times (1 thread)", "", reference_table(rows, runs), "",
               "(At 1 thread the CPU time per step is what the wall time would be on an idle"
               " machine, near enough: use it when the contention check above warns.)", ""]
    if errors:
        md += ["### Not measured", ""]
        seen = set()
        for e in errors:
            key = (e.get("framework"), e.get("name"), e.get("error"))
            if key not in seen:
                seen.add(key)
                md.append("- %s %s: %s" % key)
        md.append("")
    if bad:
        md.append("(%d unreadable line%s in %s)" % (bad, "" if bad == 1 else "s", raw_path))
    out = {"meta": meta, "rows": rows, "peak": [peak[k] for k in sorted(peak)],
           "sgemm": [sgemm[k] for k in sorted(sgemm)], "runs": derived,
           "latency": [latency[k] for k in sorted(latency, key=lambda k: (k[2], k[1], k[0]))], "errors": errors}
    return "\n".join(md), out


# ------------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("--rows", default="bench/rows.txt")
    ap.add_argument("--json")
    ap.add_argument("--md")
    a = ap.parse_args()
    recs, bad = read_raw(a.raw)
    text, out = report(read_rows(a.rows), recs, bad, a.raw)
    print(text)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text + "\n")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
