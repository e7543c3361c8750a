#!/bin/bash
# run-tests: alone -- run.py --jobs 2 uses both cores
# Differential testing of random CDL programs (issue 11 item 9; tests/difftest/run.py):
# DIFFTEST_N (120) generated programs, the fixed seeds of tests/difftest/seeds.txt (every
# mismatch ever found) and the reproducers in tests/difftest/cases/, each compiled static
# and as a tape program and run side by side: losses, gradients, outputs, input
# gradients and entries agree; f64 builds pass the trainer's gradcheck; generated C
# compiles with -Wall -Wextra -Werror; one program in five runs under ASan + UBSan
# ($B/dtsan, built by make's `tests`).  Under a sanitized build (make asan) everything is
# sanitized already and fewer programs run.
set -u
B=${B:-build}
N=${DIFFTEST_N:-120}   # make test's share; `make difftest N=...` runs thousands
if nm "$B/libcdlrt.a" 2>/dev/null | grep -q __asan_init; then
    N=${DIFFTEST_N:-40}
    export CC="clang"
fi
exec python3 tests/difftest/run.py --n "$N" --jobs 2 --seed-file tests/difftest/seeds.txt tests/difftest/cases/*.cdl
