#!/usr/bin/env python3
"""report.py -- turn the JSON lines of one `make bench` run into tables.

    python3 bench/report.py RAW.jsonl [--rows bench/rows.txt] [--json OUT.json] [--md OUT.md]

RAW.jsonl holds one record per run (bench/driver.c, bench/torch_bench.py, bench/sgemm.c,
"error" records and "meta" records from bench/run.sh).  This script adds what the runs
cannot know -- FLOPs per step (below), the ratios between frameworks, the reference
PyTorch times and the goals of bench/rows.txt -- prints the markdown tables on stdout
(and into --md), and writes every record plus the derived numbers into --json.
Standard library only: it runs where torch is not installed.

FLOPs per training step count the GEMM and convolution multiply-adds only (2 FLOPs
each): the forward products, the weight-gradient products (as many), and the
input-gradient products of every layer but the first (whose input needs no gradient;
likewise the LSTM's initial state).  Elementwise work, pooling, losses and the
optimizer are not counted, so GFLOP/s is a lower bound on the work actually done.
"""
import argparse
import json
import sys


# ------------------------------------------------------------------------ FLOPs

def _lin(b, i, o):
    return 2.0 * b * i * o


def _conv(b, c, k, r, oh, ow):
    return 2.0 * b * k * c * r * r * oh * ow


def flops_mlp(b, sizes):
    fwd = [_lin(b, sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1)]
    return 2 * sum(fwd) + sum(fwd[1:])


def flops_lenet(b):
    fwd = [_conv(b, 1, 6, 5, 28, 28), _conv(b, 6, 16, 5, 10, 10),
           _lin(b, 400, 120), _lin(b, 120, 84), _lin(b, 84, 10)]
    return 2 * sum(fwd) + sum(fwd[1:])


def flops_resnet(b):
    fwd = [_conv(b, 1, 16, 3, 28, 28)] + [_conv(b, 16, 16, 3, 28, 28)] * 4 + [_lin(b, 16, 10)]
    return 2 * sum(fwd) + sum(fwd[1:])


def flops_lstm(b, t=28, f=28, h=128):
    step = _lin(b, f, 4 * h) + _lin(b, h, 4 * h)
    fc = _lin(b, h, 10)
    fwd = t * step + fc
    # weight gradients: as many as the forward; input gradients: the recurrent path of
    # steps 1..t-1 (h_0 is a constant) and the classifier
    return 2 * fwd + (t - 1) * _lin(b, h, 4 * h) + fc


def flops_vae(b):
    fwd = [_lin(b, 784, 400), _lin(b, 400, 20), _lin(b, 400, 20), _lin(b, 20, 400), _lin(b, 400, 784)]
    return 2 * sum(fwd) + sum(fwd[1:])


FLOPS = {
    "mlp": lambda b: flops_mlp(b, (784, 256, 128, 10)),
    "wide_mlp": lambda b: flops_mlp(b, (1024, 4096, 4096, 10)),
    "lenet": flops_lenet,
    "resnet": flops_resnet,
    "lstm": flops_lstm,
    "vae": flops_vae,
}

FRAMEWORKS = ("static", "tape", "torch_eager", "torchscript")
FW_TITLE = {"static": "cdl static", "tape": "cdl tape", "torch_eager": "PyTorch eager",
            "torchscript": "TorchScript"}


# ------------------------------------------------------------------------ input

def read_rows(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if not line:
                continue
            name, model, batch, opt, lr, steps, repeats, warmup, ref, goal = line
            rows.append({"name": name, "model": model, "batch": int(batch), "opt": opt,
                         "lr": float(lr), "ref_ms": float(ref), "goal": float(goal)})
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


# ------------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("--rows", default="bench/rows.txt")
    ap.add_argument("--json")
    ap.add_argument("--md")
    a = ap.parse_args()

    rows = read_rows(a.rows)
    recs, bad = read_raw(a.raw)
    meta = {}
    for r in recs:
        if r.get("framework") == "meta":
            meta.update({k: v for k, v in r.items() if k != "framework"})
    runs = {}      # (framework, name, threads) -> record
    errors = []
    sgemm = {}     # threads -> record
    for r in recs:
        fw = r.get("framework")
        if fw == "meta":
            continue
        if "error" in r:
            errors.append(r)
            continue
        if fw == "sgemm":
            sgemm[r["threads"]] = r
            continue
        runs[(fw, r.get("name"), r.get("threads"))] = r
    threads = sorted({k[2] for k in runs} | set(sgemm))
    rowmap = {r["name"]: r for r in rows}

    # Derived numbers, stored back into the records.
    derived = []
    for (fw, name, n), r in sorted(runs.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        row = rowmap.get(name)
        if not row:
            continue
        gf = FLOPS[row["model"]](row["batch"]) / 1e9
        r["gflop_per_step"] = gf
        r["gflops"] = gf / (r["ms_median"] / 1e3)
        eager = runs.get(("torch_eager", name, n))
        r["speedup_vs_torch_eager"] = eager["ms_median"] / r["ms_median"] if eager else None
        if fw == "static":
            tape = runs.get(("tape", name, n))
            r["speedup_vs_tape"] = tape["ms_median"] / r["ms_median"] if tape else None
            tb = tape_act(tape)
            r["act_ratio_vs_tape"] = r["act_bytes"] / tb if tb else None
            r["rss_ratio_vs_torch_eager"] = r["peak_rss_kb"] / eager["peak_rss_kb"] if eager else None
            if n in sgemm and row["model"] == "wide_mlp":
                r["fraction_of_sgemm"] = r["gflops"] / sgemm[n]["gflops"]
                sc, rc = sgemm[n].get("cpu_ms_per_set"), r.get("cpu_ms_per_step")
                if n == 1 and sc and rc:   # the same comparison by CPU time
                    r["fraction_of_sgemm_cpu"] = (gf / rc) / (sgemm[n]["gflop_per_set"] / sc)
        derived.append(r)

    md = []
    md.append("Machine: %s, %s cores; %s; %s; OpenBLAS core %s; %s." % (
        meta.get("cpu", "?"), meta.get("cores", "?"), meta.get("kernel", "?"), meta.get("cc", "?"),
        meta.get("openblas_core", "?"), meta.get("torch", "?")))
    md.append("Date %s; command `%s`; load average %s at the start, %s at the end; %s s."
              % (meta.get("date", "?"), meta.get("command", "?"), meta.get("loadavg_start", "?"),
                 meta.get("loadavg_end", "?"), meta.get("seconds", "?")))
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
    for n in threads:
        sg = sgemm.get(n)
        tn = "%d thread%s" % (n, "" if n == 1 else "s")
        md.append("### %s: every run" % tn)
        md.append("")
        md.append("OpenBLAS sgemm reference (the wide MLP's eight GEMMs, same run): %s GFLOP/s%s."
                  % (fmt(sg["gflops"], 1) if sg else "not measured",
                     " (%s GFLOP/s by CPU time)" % fmt(sg["gflop_per_set"] / sg["cpu_ms_per_set"] * 1e3, 1)
                     if sg and n == 1 and sg.get("cpu_ms_per_set") else ""))
        md.append("")
        body = []
        for row in rows:
            for fw in FRAMEWORKS:
                r = runs.get((fw, row["name"], n))
                if not r:
                    continue
                sp = r.get("speedup_vs_torch_eager")
                act = tape_act(r) if fw == "tape" else r.get("act_bytes")
                cpu = r.get("cpu_ms_per_step")
                body.append([row["name"], "%d/%s" % (row["batch"], row["opt"]), FW_TITLE[fw],
                             fmt(r["ms_median"]), fmt(cpu) if cpu else "—",
                             fmt(r["samples_per_s"], 0), fmt(r["gflops"], 1),
                             fmt(sp) + "x" if sp else "—", fmt(r["peak_rss_kb"] / 1024.0, 1),
                             fmt(act / 2**20, 2) if act is not None else "—"])
        md.append(table(["row", "batch/opt", "framework", "ms/step", "CPU ms/step", "samples/s", "GFLOP/s",
                         "vs eager", "peak RSS MB", "act MB"], body))
        md.append("")
        md.append("### %s: goals for cdl static" % tn)
        md.append("")
        body = []
        for row in rows:
            st = runs.get(("static", row["name"], n))
            if not st:
                continue
            sp = st.get("speedup_vs_torch_eager")
            cells = [row["name"], (fmt(sp) + "x" + mark(sp >= row["goal"])) if sp else "—"]
            if n == 1:
                ea = runs.get(("torch_eager", row["name"], n))
                c1, c2 = st.get("cpu_ms_per_step"), ea.get("cpu_ms_per_step") if ea else None
                cells.append((fmt(c2 / c1) + "x" + mark(c2 / c1 >= row["goal"])) if c1 and c2 else "—")
            cells.append("%gx" % row["goal"])
            v = st.get("speedup_vs_tape")
            cells.append(fmt(v) + "x" + mark(v >= 1.3) if v else "—")
            v = st.get("rss_ratio_vs_torch_eager")
            cells.append("%.3f" % v + mark(v <= 0.1) if v is not None else "—")
            v = st.get("act_ratio_vs_tape")
            cells.append("%.2f" % v + mark(v <= 0.5) if v is not None else "—")
            v = st.get("fraction_of_sgemm")
            cells.append("%.0f%%" % (100 * v) + mark(v >= 0.9) if v is not None else "")
            v = st.get("fraction_of_sgemm_cpu")
            if v is not None:
                cells[-1] += " (by CPU time %.0f%%%s)" % (100 * v, mark(v >= 0.9))
            body.append(cells)
        md.append(table(["row", "static vs eager"] + (["by CPU time"] if n == 1 else []) +
                        ["goal", "static vs tape (≥ 1.3x)",
                         "RSS static/eager (≤ 0.1)", "act static/tape (≤ 0.5)",
                         "of sgemm rate (≥ 90%)"], body))
        md.append("")
    if 1 in threads:
        md.append("### Against the reference PyTorch times (1 thread)")
        md.append("")
        body = []
        for row in rows:
            st = runs.get(("static", row["name"], 1))
            ea = runs.get(("torch_eager", row["name"], 1))
            if not st and not ea:
                continue
            need = row["ref_ms"] / row["goal"]
            cpu = st.get("cpu_ms_per_step") if st else None
            cells = [row["name"], fmt(row["ref_ms"]), fmt(ea["ms_median"]) if ea else "—",
                     "%gx → ≤ %s" % (row["goal"], fmt(need)), fmt(st["ms_median"]) if st else "—",
                     (fmt(row["ref_ms"] / st["ms_median"]) + "x" + mark(st["ms_median"] <= need)) if st else "—",
                     fmt(cpu) if cpu else "—",
                     (fmt(row["ref_ms"] / cpu) + "x" + mark(cpu <= need)) if cpu else "—"]
            body.append(cells)
        md.append(table(["row", "reference PyTorch ms", "PyTorch eager here", "goal → static ms",
                         "cdl static ms", "static vs reference", "static CPU ms",
                         "vs reference by CPU time"], body))
        md.append("")
        md.append("(At 1 thread the CPU time per step is what the wall time would be on an idle"
                  " machine, near enough: use it when the contention check above warns.)")
        md.append("")
    if errors:
        md.append("### Not measured")
        md.append("")
        seen = set()
        for e in errors:
            key = (e.get("framework"), e.get("name"), e.get("error"))
            if key in seen:
                continue
            seen.add(key)
            md.append("- %s %s: %s" % (e.get("framework"), e.get("name"), e.get("error")))
        md.append("")
    if bad:
        md.append("(%d unreadable line%s in %s)" % (bad, "" if bad == 1 else "s", a.raw))
    text = "\n".join(md)
    print(text)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text + "\n")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "rows": rows, "sgemm": [sgemm[k] for k in sorted(sgemm)],
                       "runs": derived, "errors": errors}, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
