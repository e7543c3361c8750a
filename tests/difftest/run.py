#!/usr/bin/env python3
"""run.py -- differential testing of random CDL programs (issue 11, item 9).

    python3 tests/difftest/run.py [--n N] [--start S] [--seeds 5,17-20] [--seed-file F]
                                  [--jobs J] [--chunk K] [--keep DIR] [--features a,b] [-v]

Every seed is one program (tests/difftest/gen.py).  Each is compiled by cdlc twice,
static and --target=tape, and the builds are linked, a chunk of programs at a time, with
tests/difftest/driver.c, which runs both on the same inputs at full and partial batches
and compares losses, gradients, outputs, input gradients and entry points, and runs
the trainer's gradcheck.  A seed's mode follows from the seed (seed % 10):
    0-5  g  f64 builds: static == tape, and the static build's gradcheck
    6-7  f  f32 builds: static == tape
    8-9  s  f64 builds under AddressSanitizer + UBSan: cdlc itself, the runtime and the
            generated code (needs $B/dtsan/, `make difftest-san`; else mode g)
A program that cdlc refuses, that does not compile warning-free, that crashes, or
whose builds disagree is a failure; the summary names each with the command that
reproduces it.  Exit status 0 when every program passed.

Environment: B (build directory, default build), CC (default cc).
"""
import argparse
import concurrent.futures as cf
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import gen  # noqa: E402

SAN = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
CFLAGS = ["-std=c11", "-O0", "-Wall", "-Wextra", "-Werror", "-I" + os.path.join(ROOT, "runtime")]
LIBS = ["-lopenblas", "-lz", "-lpthread", "-lm"]


def mode_of(seed, have_san):
    k = seed % 10
    if k <= 5:
        return "g"
    if k <= 7:
        return "f"
    return "s" if have_san else "g"


def parse_seeds(spec):
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def read_seed_file(path):
    """Lines 'SEED [# why]'; blank lines and comments are skipped."""
    seeds = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                seeds.append(int(line.split()[0]))
    return seeds


class Ctx:
    def __init__(self, a):
        self.b = os.environ.get("B", os.path.join(ROOT, "build"))
        if not os.path.isabs(self.b):
            self.b = os.path.join(ROOT, self.b)
        self.cc = os.environ.get("CC", "cc").split()
        self.cdlc = os.path.join(self.b, "cdlc")
        self.lib = os.path.join(self.b, "libcdlrt.a")
        libs = os.path.join(self.b, "libcdlrt.libs")    # the runtime's link libraries
        self.libs = open(libs).read().split() if os.path.exists(libs) else LIBS
        self.san_dir = os.path.join(self.b, "dtsan")
        self.have_san = os.path.exists(os.path.join(self.san_dir, "libcdlrt.a")) and \
            os.path.exists(os.path.join(self.san_dir, "cdlc"))
        # a sanitized main build (make asan): everything runs sanitized already
        self.main_san = b"__asan_init" in subprocess.run(["nm", self.lib], capture_output=True).stdout
        if self.main_san:
            self.have_san = False
        self.features = [f for f in a.features.split(",") if f]
        self.keep = a.keep
        self.verbose = a.verbose
        self.timeout = a.timeout
        self.allow_warnings = a.allow_warnings


def run(cmd, cwd=None, timeout=600, env=None):
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=timeout, env=env)
        return p.returncode, (p.stdout + p.stderr).decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"") + (e.stderr or b"")
        return -999, out.decode(errors="replace") + "\n(timed out after %d s)" % timeout


def first_lines(text, n=4):
    lines = [l for l in text.splitlines() if l.strip()]
    return " | ".join(lines[:n])


def item_text(ctx, item):
    """(program text, file stem) of an item: a seed (int) or a .cdl file (str)."""
    if isinstance(item, int):
        return gen.generate(item, ctx.features), "m%d" % item
    with open(item) as f:
        text = f.read()
    stem = "f_" + "".join(c if c.isalnum() else "_" for c in os.path.basename(item)[:-4])
    return text, stem


def header_value(text, key, default):
    """key=VALUE from a '# difftest ...' line of the program (generated or a reproducer)."""
    for line in text.splitlines():
        if line.startswith("# difftest") and key + "=" in line:
            return int(line.split(key + "=", 1)[1].split()[0])
    return default


def model_name(header):
    with open(header) as f:
        for line in f:
            if line.startswith("extern const cdl_model ") and "_model;" in line:
                return line.split()[3][:-len("_model;")]
    return None


def do_chunk(ctx, mode, items):
    """Build and run one chunk of items in one mode; {item: (ok, status line)}."""
    res = {}
    d = tempfile.mkdtemp(prefix="difftest-%s-" % mode)
    san = mode == "s"
    cdlc = os.path.join(ctx.san_dir, "cdlc") if san else ctx.cdlc
    lib = os.path.join(ctx.san_dir, "libcdlrt.a") if san else ctx.lib
    cc = ctx.cc + (SAN if san or ctx.main_san else [])
    prec = ["--precision=f32"] if mode == "f" else ["--precision=f64"]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")
    built = []                       # (item, id, model name, classes, gradcheck, objects)
    warn = {}
    try:
        for it in items:
            text, stem = item_text(ctx, it)
            src = os.path.join(d, stem + ".cdl")
            with open(src, "w") as f:
                f.write(text)
            classes = header_value(text, "classes", 10)
            gcheck = header_value(text, "gradcheck", 1)
            ok = True
            for tape in (0, 1):
                out = os.path.join(d, stem + ("_tape.c" if tape else ".c"))
                cmd = [cdlc] + (["--target=tape"] if tape else []) + prec + [src, "-o", out]
                rc, log = run(cmd, env=env, timeout=120)
                if rc != 0:
                    what = "cdlc refuses the program" if rc == 1 else "cdlc failed (exit %d)" % rc
                    res[it] = (False, "%s%s: %s" % (what, " (--target=tape)" if tape else "", first_lines(log)))
                    ok = False
                    break
            if not ok:
                continue
            name = model_name(os.path.join(d, stem + ".h"))
            objs = []
            for tape in (0, 1):
                c = stem + ("_tape.c" if tape else ".c")
                rc, log = run(cc + CFLAGS + (["-DCDL_TAPE_RENAME"] if tape else []) + ["-c", c], cwd=d)
                if rc != 0:
                    # warnings are a failure of their own; the run goes on without -Werror
                    rc2, log2 = run(cc + CFLAGS + ["-w"] + (["-DCDL_TAPE_RENAME"] if tape else []) + ["-c", c], cwd=d)
                    what = "tape" if tape else "static"
                    if rc2 != 0:
                        res[it] = (False, "the generated %s C does not compile: %s" % (what, first_lines(log2)))
                        ok = False
                        break
                    warn.setdefault(it, "the generated %s C has warnings: %s" % (what, first_lines(log, 3)))
                objs.append(c[:-2] + ".o")
            if ok:
                built.append((it, str(it) if isinstance(it, int) else stem, name, classes, gcheck, objs))
        if not built:
            return res
        with open(os.path.join(d, "cases.c"), "w") as f:
            f.write('#include "cdl.h"\n')
            f.write("typedef struct dt_case { const char *id; const cdl_model *s, *t; int classes, gradcheck; } dt_case;\n")
            for _, _, nm, _, _, _ in built:
                f.write("extern const cdl_model %s_model, %s_tape_model;\n" % (nm, nm))
            f.write("const dt_case dt_cases[] = {\n")
            for _, cid, nm, classes, gcheck, _ in built:
                f.write('    {"%s", &%s_model, &%s_tape_model, %d, %d},\n' % (cid, nm, nm, classes, gcheck))
            f.write("};\nconst int dt_ncases = %d;\n" % len(built))
        objs = [o for b in built for o in b[5]]
        prog = os.path.join(d, "driver")
        rc, log = run(cc + CFLAGS + [os.path.join(HERE, "driver.c"), "cases.c"] + objs + [lib, "-o", prog] + ctx.libs, cwd=d)
        if rc != 0:
            for b in built:
                res[b[0]] = (False, "linking the driver failed: %s" % first_lines(log))
            return res
        # run; after a crash or a hang, blame the started case and go on with the next
        ids = [b[1] for b in built]
        i = 0
        while i < len(built):
            args = [prog, "--from", str(i)] + (["--gradcheck"] if mode == "g" else [])
            rc, log = run(args, cwd=d, timeout=ctx.timeout, env=env)
            started = None
            for line in log.splitlines():
                if line.startswith("start "):
                    started = line.split()[1]
                elif line.startswith("case "):
                    w = line.split(None, 3)
                    k = ids.index(w[1])
                    res[built[k][0]] = (w[2] == "ok", line)
                    started = None
                    i = k + 1
            if started is not None:
                tail = [l for l in log.splitlines() if not l.startswith(("start ", "case ", "{"))]
                why = "timed out" if rc == -999 else "crashed (exit %d)" % rc
                k = ids.index(started)
                res[built[k][0]] = (False, "case %s FAIL the driver %s: %s" % (started, why, " | ".join(tail[-8:])))
                i = k + 1
            elif i < len(built):
                # exited without reporting the rest (should not happen)
                for b in built[i:]:
                    res[b[0]] = (False, "case %s FAIL the driver stopped early (exit %d): %s" % (b[1], rc, first_lines(log)))
                break
        for it, w in warn.items():
            if it in res and res[it][0] and not ctx.allow_warnings:
                res[it] = (False, res[it][1] + "; but " + w)
        return res
    finally:
        if ctx.keep:
            dst = os.path.join(ctx.keep, os.path.basename(d))
            shutil.copytree(d, dst, dirs_exist_ok=True)
        shutil.rmtree(d, ignore_errors=True)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("files", nargs="*", help="hand-written .cdl programs (reproducers): each runs in every mode")
    ap.add_argument("--n", type=int, default=0, help="number of seeds from --start")
    ap.add_argument("--start", type=int, default=1)
    ap.add_argument("--seeds", default="", help="explicit seeds: 5,17-20")
    ap.add_argument("--seed-file", action="append", default=[], help="a file of seeds (one a line, # comments)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=20)
    ap.add_argument("--keep", help="copy every chunk's build directory here")
    ap.add_argument("--features", default=os.environ.get("DIFFTEST_FEATURES", ""))
    ap.add_argument("--timeout", type=int, default=900, help="seconds per driver run")
    ap.add_argument("--mode", choices=["g", "f", "s"], help="run every program in this mode")
    ap.add_argument("--allow-warnings", action="store_true",
                    help="generated C with warnings (-Wall -Wextra) does not fail a program")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    ctx = Ctx(a)
    for f in ctx.features:
        if f.lstrip("-") not in gen.FEATURES:
            ap.error("unknown feature %s" % f)
    seeds = list(range(a.start, a.start + a.n)) + parse_seeds(a.seeds)
    for f in a.seed_file:
        seeds += read_seed_file(f)
    seen, uniq = set(), []
    for s in seeds:
        if s not in seen:
            seen.add(s)
            uniq.append(s)
    if not uniq and not a.files:
        ap.error("no programs (give --n, --seeds, --seed-file or .cdl files)")
    if a.mode == "s" and not ctx.have_san:
        ap.error("mode s needs %s/dtsan (make difftest-san)" % ctx.b)
    if a.keep:
        os.makedirs(a.keep, exist_ok=True)
    by_mode = {}
    for s in uniq:
        by_mode.setdefault(a.mode or mode_of(s, ctx.have_san), []).append(s)
    chunks = []
    for m, ss in sorted(by_mode.items()):
        size = max(1, a.chunk // 2) if m == "s" else a.chunk
        for i in range(0, len(ss), size):
            chunks.append((m, ss[i:i + size]))
    # files: in every mode, one chunk per mode (their models must have distinct names,
    # as those in tests/difftest/cases/ do)
    modes = [a.mode] if a.mode else ["g", "f"] + (["s"] if ctx.have_san else [])
    if a.files:
        chunks += [(m, list(a.files)) for m in modes]
    t0 = time.time()
    results = {}
    with cf.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as ex:
        futs = {ex.submit(do_chunk, ctx, m, ss): (m, ss) for m, ss in chunks}
        for fu in cf.as_completed(futs):
            m, ss = futs[fu]
            r = fu.result()
            for s in ss:
                ok, line = r.get(s, (False, "no result"))
                results[(s, m)] = (ok, line)
                if a.verbose or not ok:
                    print("%s %-6s %s %s" % ("ok  " if ok else "FAIL", s, m, line), flush=True)
    bad = sorted(((s, m) for (s, m), (ok, _) in results.items() if not ok), key=str)
    counts = {m: sum(1 for (_, mm) in results if mm == m) for m in "gfs"}
    bitwise = sum(1 for ok, line in results.values() if ok and " bitwise" in line)
    close = sum(1 for ok, line in results.values() if ok and " close " in line)
    gc = sum(1 for ok, line in results.values() if ok and "gradcheck ok" in line)
    for s, m in bad:
        what = "--seeds %d" % s if isinstance(s, int) else s
        print("reproduce: python3 tests/difftest/run.py %s --mode %s --keep /tmp/difftest-keep" % (what, m))
    print("difftest: %d programs (%d f64 + gradcheck, %d f32, %d sanitized): %d static == tape bitwise, "
          "%d within tolerance, %d gradchecks passed, %d failed, %.0f s" %
          (len(results), counts["g"], counts["f"], counts["s"], bitwise, close, gc, len(bad), time.time() - t0))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
