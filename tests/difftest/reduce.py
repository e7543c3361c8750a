#!/usr/bin/env python3
"""reduce.py -- shrink a failing difftest program to a small reproducer.

    python3 tests/difftest/reduce.py FILE.cdl|SEED --match TEXT [--mode g|f|s] [-o OUT]

Runs tests/difftest/run.py on the program in one mode and keeps it failing with a
status line that contains TEXT (say "FAIL grad" or "static 0"), while it deletes
lines (a loop or an entry with its whole body first, then single lines), until no
deletion keeps the failure.  Warnings of the generated C are ignored unless TEXT
mentions them.  Each step is
one compile and run (a few seconds): a 40-line program takes a few minutes.  The
result is printed (and written to OUT); it is a starting point for a hand-written
reproducer in tests/difftest/cases/, not the reproducer itself.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen  # noqa: E402


def fails(lines, a, tmp):
    path = os.path.join(tmp, "r_%s.cdl" % a.name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    warn = [] if "warnings" in a.match else ["--allow-warnings"]
    p = subprocess.run([sys.executable, os.path.join(HERE, "run.py"), "--mode", a.mode, path] + warn,
                       capture_output=True, text=True)
    out = p.stdout + p.stderr
    return any(l.startswith("FAIL") and a.match in l and "cdlc refuses" not in l for l in out.splitlines())


def spans(lines):
    """Deletable spans (start, end): a line that opens a brace with its whole body, and
    every single line but the model's first and last."""
    out = []
    for i, l in enumerate(lines):
        if l.rstrip().endswith("{") and not l.startswith("model"):
            depth = 0
            for j in range(i, len(lines)):
                depth += lines[j].count("{") - lines[j].count("}")
                if depth == 0:
                    out.append((i, j + 1))
                    break
    for i, l in enumerate(lines):
        if l.startswith(("model", "#")) or l.strip() == "}" or l.rstrip().endswith("{"):
            continue
        out.append((i, i + 1))
    return out


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("program", help="a .cdl file or a seed")
    ap.add_argument("--match", required=True, help="text the FAIL line must keep containing")
    ap.add_argument("--mode", default="g", choices=["g", "f", "s"])
    ap.add_argument("-o", "--out")
    a = ap.parse_args(argv)
    if a.program.isdigit():
        text = gen.generate(int(a.program))
        a.name = "s" + a.program
    else:
        text = open(a.program).read()
        a.name = re.sub(r"\W", "_", os.path.basename(a.program)[:-4])
    lines = text.rstrip("\n").split("\n")
    with tempfile.TemporaryDirectory() as tmp:
        if not fails(lines, a, tmp):
            print("the program does not fail with %r in mode %s" % (a.match, a.mode), file=sys.stderr)
            return 1
        changed = True
        while changed:
            changed = False
            k = 0
            while k < len(spans(lines)):
                s, e = spans(lines)[k]
                cand = lines[:s] + lines[e:]
                if fails(cand, a, tmp):
                    lines = cand
                    changed = True
                    print("-%d lines (%d left)" % (e - s, len(lines)), file=sys.stderr, flush=True)
                else:
                    k += 1
    text = "\n".join(lines) + "\n"
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
