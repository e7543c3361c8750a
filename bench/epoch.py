"""bench/epoch.py -- the end-to-end epoch row of `make bench` (issue 15 item 5).

One Fashion-MNIST epoch of the `make run` model (models/mlp.cdl) as a user runs it,
loading and evaluation included, at 1 thread: the trainer program `cdlc --main` makes
(`prog train --epochs 1`), linked with each backend's runtime, beside PyTorch's same
epoch with its DataLoader (bench/torch_epoch.py).  Every configuration runs in a fresh
process, ROUNDS times, in alternating order; the report gives the median wall time, the
median CPU time (user + system: on a shared machine the wall time includes waiting for
a core), the training thread's CPU time over the command (`thread_cpu_seconds` of the
trainer's --json; the loader's worker thread runs on the other core meanwhile, so on
an idle 2-core machine this plus ~0.02 s of process start is the wall time; "-" for a
runtime or program that does not report it) and the peak RSS (the child's ru_maxrss,
from wait4), against the targets (<= 0.5 s, <= 50 MB).  Standard library only.  Prints a Markdown table; --json FILE
writes the runs.

    python3 bench/epoch.py --cdlc build/cdlc --rt build/libcdlrt.a [--rt-onednn R] [--python P]
                           [--rounds 3] [--work DIR] [--json FILE]
                           [--rt-before R] [--rt-onednn-before R]

--rt-before / --rt-onednn-before add rows for another build's runtime (e.g. the
previous commit's), run in the same alternating rounds: before/after figures from one
run, as a shared machine needs.

The trainer reads the training images a batch at a time from an uncompressed copy of
the gzip file, made by the first run in the cache directory (runtime/data_stream.c).
Every configuration runs once untimed first (the cache made, the files in the page
cache: PyTorch's too); the row "first run" times the OpenBLAS program with an empty
cache directory every round (CDL_CACHE_DIR under --work), the cost of that one run.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

TARGET_S, TARGET_MB = 0.5, 50


def run(cmd, env):
    """(wall s, cpu s, peak RSS MB, stdout) of one child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited with {p.returncode}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, out.decode()


def build(cdlc, rt, work, tag):
    """The `make run` trainer program linked with runtime rt; its path."""
    src, prog = f"{work}/mlp_epoch.c", f"{work}/mlp_epoch_{tag}"
    subprocess.run([cdlc, "--main", "models/mlp.cdl", "-o", src], check=True)
    libs = open(rt[:-2] + ".libs").read().split()
    subprocess.run(["cc", "-std=c11", "-O2", "-Iruntime", src, rt, "-o", prog] + libs, check=True)
    return prog


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cdlc", required=True)
    ap.add_argument("--rt", required=True)
    ap.add_argument("--rt-onednn")
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default="build/bench")
    ap.add_argument("--json")
    ap.add_argument("--rt-before")
    ap.add_argument("--rt-onednn-before")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    confs = {}
    for tag, rt, name in (("cdl static", a.rt, "openblas"), ("cdl static (oneDNN)", a.rt_onednn, "onednn"),
                          ("cdl static, before", a.rt_before, "openblas_before"),
                          ("cdl static (oneDNN), before", a.rt_onednn_before, "onednn_before")):
        if rt and os.path.exists(rt):
            prog = build(a.cdlc, rt, a.work, name)
            confs[tag] = [prog, "train", "--epochs", "1", "--threads", "1", "--quiet", "--json"]
            if name == "openblas":
                confs["cdl static, first run (empty cache)"] = confs[tag]
    if subprocess.run([a.python, "-c", "import torch, numpy"], capture_output=True).returncode == 0:
        confs["PyTorch eager + DataLoader"] = [a.python, "bench/torch_epoch.py", "/usr/share/datasets/fashion-mnist", "1"]
    runs = {k: [] for k in confs}
    cold = f"{a.work}/epoch_cache_cold"

    def env_of(k):
        """The environment of configuration k: the first-run row's cache emptied."""
        if "first run" not in k:
            return env
        shutil.rmtree(cold, ignore_errors=True)
        return dict(env, CDL_CACHE_DIR=cold)
    for k in confs:                              # untimed: caches made, files read once
        try:
            run(confs[k], env_of(k))
        except (RuntimeError, OSError) as e:
            print(f"epoch: {k} (warm-up): {e}", file=sys.stderr)
    for r in range(a.rounds):
        order = list(confs) if r % 2 == 0 else list(reversed(confs))
        for k in order:
            try:
                wall, cpu, rss, out = run(confs[k], env_of(k))
                res = json.loads(out.strip().splitlines()[-1])
                runs[k].append({"wall_s": wall, "cpu_s": cpu, "rss_mb": rss, "test_accuracy": res.get("test_accuracy"),
                                "thread_cpu_s": res.get("thread_cpu_seconds")})
            except (RuntimeError, ValueError, IndexError, OSError) as e:
                print(f"epoch: {k}: {e}", file=sys.stderr)
    print("\n### End to end: one Fashion-MNIST epoch of `make run`'s MLP, 1 thread\n")
    print(f"Loading, training and evaluation, in a fresh process; median of {a.rounds} rounds. "
          f"Targets: <= {TARGET_S} s, <= {TARGET_MB} MB peak RSS.\n")
    print("| configuration | wall s | CPU s | training thread CPU s | peak RSS MB | test accuracy | time target | "
          "RSS target |")
    print("|---|---|---|---|---|---|---|---|")
    for k, rs in runs.items():
        if not rs:
            print(f"| {k} | not measured | | | | | | |")
            continue
        w = statistics.median(x["wall_s"] for x in rs)
        c = statistics.median(x["cpu_s"] for x in rs)
        tc = [x["thread_cpu_s"] for x in rs if x.get("thread_cpu_s") is not None]
        tcs = f"{statistics.median(tc):.2f}" if tc else "-"
        m = max(x["rss_mb"] for x in rs)
        acc = rs[-1]["test_accuracy"]
        print(f"| {k} | {w:.2f} | {c:.2f} | {tcs} | {m:.0f} | {acc:.4f} | {'✓' if c <= TARGET_S else '✗'} "
              f"(CPU {c / TARGET_S:.1f}x the target) | {'✓' if m <= TARGET_MB else '✗'} ({m / TARGET_MB:.1f}x) |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
