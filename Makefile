# cdl -- build, test, asan, run, bench, install.  Products go to build/ only.
#   make            build/cdlc, build/libcdlrt.a, tools and examples
#   make test       install missing packages, build, run every test, print the totals
#   make asan       the same suite under AddressSanitizer + UBSan ($(B)/asan/)
#   make run        train models/mlp.cdl on Fashion-MNIST and print the test accuracy
#   make BACKEND=onednn [target]   the same with the oneDNN kernel backend (build/onednn/)
CC      ?= gcc
# Kernel backend (docs/design.md, Backends): openblas (the default) or onednn, which
# sends f32 GEMMs to oneDNN (f64 ones stay on OpenBLAS: oneDNN has no dgemm; the
# oneDNN runtime loads OpenBLAS at its first use, runtime/blas.c, so it is not on its
# link line).  Each
# backend builds in its own directory, so that switching never mixes objects.
# RT_LIBS is THE list of libraries a program linked with libcdlrt.a needs; the build
# writes it next to the library as $(B)/libcdlrt.libs for scripts to read.
BACKEND ?= openblas
ifeq ($(BACKEND),openblas)
B       ?= build
RT_LIBS := -lopenblas -lz -lpthread -lm
RT_DEFS :=
else ifeq ($(BACKEND),onednn)
B       ?= build/onednn
RT_LIBS := -ldnnl -lgomp -lz -lpthread -lm -ldl
RT_DEFS := -DCDL_BACKEND_ONEDNN
else
$(error BACKEND must be openblas or onednn, not '$(BACKEND)')
endif
# MPI (issue 16; docs/trainer.md, "Many processes, many machines"): where mpicc is
# found, runtime/dist.c is compiled with -DCDL_MPI and the build makes the MPI plugin
# $(B)/libcdlrt_mpi.so (runtime/dist_mpi.c, the one file compiled with mpicc's flags
# and linked with libmpi), which the runtime dlopens only in a program started by
# mpirun: every program linked with libcdlrt can run under mpirun, and started
# otherwise never loads libmpi (runtime/dist_int.h).  RT_LIBS gains only -ldl.
# MPI=0 builds without it.
# PREFIX before MPI_CFLAGS: it names the installed plugin, and := expands at once.
PREFIX  ?= /usr/local
MPI     ?= $(if $(shell command -v mpicc 2>/dev/null),1,0)
ifeq ($(MPI),1)
MPI_CFLAGS := -DCDL_MPI -DCDL_MPI_PLUGIN_BUILT='"$(abspath $(B))/libcdlrt_mpi.so"' \
              -DCDL_MPI_PLUGIN_INSTALLED='"$(PREFIX)/lib/libcdlrt_mpi.so"'
MPI_PLUGIN := $(B)/libcdlrt_mpi.so
RT_LIBS += $(if $(filter -ldl,$(RT_LIBS)),,-ldl)
endif
OPT     ?= -O2
SAN     ?=
CFLAGS  ?= $(OPT) -g
WFLAGS  := -std=c11 -Wall -Wextra -Werror -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L
ALLFLAGS = $(WFLAGS) $(CFLAGS) $(SAN) -Iruntime -Icompiler -I$(B)/gen -MMD -MP
LDLIBS  := $(RT_LIBS)
# The runtime's kernels are the hot loops: vectorise them for this machine (AVX-512 on
# the Zen 4 machines we run on).  Override with RT_OPT="-O2" for a portable library.
# -fno-math-errno lets sqrtf/expf vectorise (Adam's update, the activations); the
# runtime never reads errno after math calls.
RT_OPT  ?= -O3 -march=native -fno-math-errno
# Every CPU unless the command line says -jN: a serial build of a clean tree takes about
# a minute on the 2-core machines (runtime/kernels_conv.c alone ~15 s at -O3), which a
# CI step's time limit on a busy machine can cut short; with both cores about half.
# (Only the top-level make: a sub-make runs in its parent's job server.)
ifeq ($(MAKELEVEL)$(filter -j%,$(MAKEFLAGS)),0)
MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 1)
endif

CC_SRC  := $(wildcard compiler/*.c)
CC_LIB  := $(filter-out compiler/main.c,$(CC_SRC))
RT_SRC  := $(filter-out runtime/dist_mpi.c $(if $(RT_DEFS),,runtime/blas_dnnl.c),$(wildcard runtime/*.c))
TESTS   := $(patsubst tests/%.c,$(B)/tests/%,$(wildcard tests/test_*.c))
RT_TESTS:= $(patsubst tests/%.c,$(B)/tests/%,$(wildcard tests/test_rt_*.c))
TOOLS   := $(patsubst tools/%.c,$(B)/%,$(wildcard tools/*.c))
EXAMPLES:= $(patsubst examples/%.c,$(B)/examples/%,$(wildcard examples/*.c))

GEN     := $(B)/gen/cdl.tab.c $(B)/gen/lex.yy.c
GEN_OBJ := $(B)/obj/gen/cdl.tab.o $(B)/obj/gen/lex.yy.o
CC_OBJ  := $(patsubst %.c,$(B)/obj/%.o,$(CC_LIB)) $(GEN_OBJ)
RT_OBJ  := $(patsubst %.c,$(B)/obj/%.o,$(RT_SRC))

all: $(B)/cdlc $(B)/libcdlrt.a $(MPI_PLUGIN) $(TOOLS) $(EXAMPLES)

$(B)/gen/cdl.tab.c: grammar/cdl.y
	@mkdir -p $(B)/gen
	bison -Wall -Werror --defines=$(B)/gen/cdl.tab.h -o $@ $<
$(B)/gen/cdl.tab.h: $(B)/gen/cdl.tab.c
$(B)/gen/lex.yy.c: grammar/cdl.l $(B)/gen/cdl.tab.h
	@mkdir -p $(B)/gen
	flex --header-file=$(B)/gen/lex.yy.h -o $@ $<

# The inference export's portable kernels (compiler/infer_kernels.inc) as one C string
# literal, which compiler/emit_infer.c includes: each line quoted, backslashes and quotes
# escaped.
$(B)/gen/infer_kernels.h: compiler/infer_kernels.inc
	@mkdir -p $(B)/gen
	sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $< > $@
$(B)/obj/compiler/emit_infer.o: $(B)/gen/infer_kernels.h

# Generated scanner/parser: same warnings, minus the ones their skeletons trip.
$(B)/obj/gen/%.o: $(B)/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -Wno-unused-function -Wno-sign-compare -c $< -o $@

$(B)/obj/compiler/%.o: compiler/%.c | $(B)/gen/cdl.tab.c $(B)/gen/lex.yy.c
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -c $< -o $@
$(B)/obj/runtime/%.o: runtime/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) $(RT_OPT) $(RT_DEFS) -c $< -o $@
$(B)/obj/runtime/dist.o: RT_DEFS += $(MPI_CFLAGS)
# dist.o is rebuilt when MPI is switched on or off (the flags are kept in a stamp).
$(B)/obj/runtime/dist.o: $(B)/dist.flags
$(B)/dist.flags: FORCE
	@mkdir -p $(B); echo '$(MPI_CFLAGS)' | cmp -s - $@ || echo '$(MPI_CFLAGS)' >$@
FORCE:
# The MPI plugin (above): position-independent, mpicc's include and link flags, no
# sanitizers (a plain shared library loads into an instrumented program).
$(B)/libcdlrt_mpi.so: runtime/dist_mpi.c runtime/dist_int.h
	@mkdir -p $(B)
	$(CC) $(WFLAGS) $(CFLAGS) -fPIC -shared $(patsubst -I%,-isystem %,$(shell mpicc --showme:compile)) $< -o $@ \
	    $(shell mpicc --showme:link)
$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -c $< -o $@

$(B)/libcdlc.a: $(CC_OBJ)
	@rm -f $@; ar rcs $@ $^
$(B)/libcdlrt.a: $(RT_OBJ) Makefile
	@rm -f $@; ar rcs $@ $(RT_OBJ)
	@echo '$(RT_LIBS)' >$(B)/libcdlrt.libs
# cdlc --exe links the programs it builds with the same libraries (CDL_RT_LIBS)
$(B)/obj/compiler/main.o: ALLFLAGS += -DCDL_RT_LIBS='"$(RT_LIBS)"'
$(B)/cdlc: $(B)/obj/compiler/main.o $(B)/libcdlc.a
	$(CC) $(SAN) $^ -o $@ -lm

# tests/test_rt_*.c exercise the runtime alone; the others link the compiler too.
$(RT_TESTS): $(B)/tests/%: tests/%.c $(B)/libcdlrt.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) $< -o $@ $(B)/libcdlrt.a -lcmocka $(LDLIBS)
$(B)/tests/%: tests/%.c $(B)/libcdlc.a $(B)/libcdlrt.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) $< -o $@ $(B)/libcdlc.a $(B)/libcdlrt.a -lcmocka $(LDLIBS)
# cdl-compare links the programs it builds with the runtime's libraries
$(TOOLS): ALLFLAGS += -DCDL_RT_LIBS='"$(RT_LIBS)"'
$(B)/%: tools/%.c $(B)/libcdlc.a $(B)/libcdlrt.a
	$(CC) $(ALLFLAGS) $< -o $@ $(B)/libcdlc.a $(B)/libcdlrt.a $(LDLIBS)
$(B)/examples/%: examples/%.c $(B)/libcdlrt.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) $< -o $@ $(B)/libcdlrt.a $(LDLIBS)

deps:
	@scripts/deps.sh

# make test builds two files at a time (CI has two cores) unless make was given -j, and
# scripts/run-tests.sh runs two tests at a time.
TEST_J = $(if $(filter -j%,$(MAKEFLAGS)),,-j2)
test: deps
	@$(MAKE) -s $(TEST_J) all tests
	@B=$(B) scripts/run-tests.sh
tests: $(TESTS)

ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
asan: deps
	@$(MAKE) -s $(TEST_J) B=$(B)/asan CC=clang OPT=-O1 RT_OPT=-O1 SAN="$(ASAN_FLAGS)" all tests
	@B=$(B)/asan CC=clang CDL_CFLAGS="$(ASAN_FLAGS)" ASAN_OPTIONS=detect_leaks=1 scripts/run-tests.sh

run: deps all
	@scripts/run-mlp.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(B)/cdlc $(DESTDIR)$(PREFIX)/bin/cdlc
	install -m 644 $(B)/libcdlrt.a $(DESTDIR)$(PREFIX)/lib/libcdlrt.a
	$(if $(MPI_PLUGIN),install -m 755 $(MPI_PLUGIN) $(DESTDIR)$(PREFIX)/lib/libcdlrt_mpi.so)
	install -m 644 runtime/cdl.h runtime/cdl_tape.h $(DESTDIR)$(PREFIX)/include/
	install -d $(DESTDIR)$(PREFIX)/share/cdl
	install -m 644 lib/*.cdl $(DESTDIR)$(PREFIX)/share/cdl/
	sed 's|@PREFIX@|$(PREFIX)|; s|@VERSION@|0.1.0|; s|@RT_LIBS@|$(RT_LIBS)|' scripts/cdl.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/cdl.pc

clean:
	rm -rf build

.PHONY: all deps test tests asan run install clean FORCE
.SECONDARY:
# The test programs' .d files too: they depend on tests/test_util.h, tests/test_rt_util.h
# and the public headers, and must rebuild when those change.
-include $(shell find $(B)/obj $(B)/tests -name '*.d' 2>/dev/null)

# Fuzzing (libFuzzer + ASan/UBSan, clang): `make fuzz [FUZZ_TIME=s]` builds
# build/fuzz/fuzz_{ckpt,idx,csv} straight from the runtime sources with -DCDL_FUZZING
# (the checkpoint loader then ignores wrong CRC values, to reach the checks behind
# them) and runs each for FUZZ_TIME seconds on its corpus in build/fuzz/<name>.corpus.
FUZZ_TIME ?= 30
FUZZ_RT   := fuzz_ckpt fuzz_idx fuzz_csv
FUZZ_BIN  := $(patsubst %,build/fuzz/%,$(FUZZ_RT))
FUZZ_DEPS := runtime/alloc.c runtime/parse.c runtime/rng.c runtime/net.c runtime/optim.c runtime/json.c runtime/ckpt.c runtime/data.c runtime/data_csv.c runtime/data_file.c runtime/data_stream.c
build/fuzz/%: tests/fuzz/%.c $(FUZZ_DEPS) runtime/cdl.h runtime/cdl_tape.h runtime/json.h runtime/data_int.h
	@mkdir -p $(dir $@)
	clang $(WFLAGS) -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -DCDL_FUZZING \
	    -Iruntime $< $(FUZZ_DEPS) -o $@ -lz -lpthread -lm
# build/fuzz/fuzz_cdlc: the compiler's passes on CDL source (tests/fuzz/fuzz_cdlc.c), from
# objects of its own (instrumented for coverage); seeded with every model, example and
# error-corpus file, with the CDL dictionary tests/fuzz/cdl.dict.  make test runs it
# briefly (tests/sh/fuzz_cdlc.sh, 20 s); make fuzz for FUZZ_TIME seconds.
FUZZ_CDLC  := $(B)/fuzz/fuzz_cdlc
FUZZ_CFLAGS := $(WFLAGS) -Wno-unused-function -Wno-sign-compare -g -O1 -fno-sanitize-recover=all \
	-fsanitize=fuzzer-no-link,address,undefined -Iruntime -Icompiler -I$(B)/gen -MMD -MP
FUZZ_CC_OBJ := $(patsubst %.c,$(B)/fuzz/obj/%.o,$(CC_LIB) tests/fuzz/fuzz_cdlc.c) \
	$(B)/fuzz/obj/gen/cdl.tab.o $(B)/fuzz/obj/gen/lex.yy.o
$(B)/fuzz/obj/gen/%.o: $(B)/gen/%.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -c $< -o $@
$(B)/fuzz/obj/%.o: %.c | $(GEN)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -c $< -o $@
$(FUZZ_CDLC): $(FUZZ_CC_OBJ)
	clang -fsanitize=fuzzer,address,undefined $^ -o $@ -lm
-include $(shell find $(B)/fuzz/obj -name '*.d' 2>/dev/null)
tests: $(FUZZ_CDLC)

fuzz: deps $(FUZZ_BIN) $(FUZZ_CDLC)
	@for f in $(FUZZ_BIN); do mkdir -p $$f.corpus; \
	    CDL_FUZZ_CORPUS=$$f.corpus $$f -max_total_time=$(FUZZ_TIME) -print_final_stats=1 \
	        -artifact_prefix=build/fuzz/ $$f.corpus || exit 1; done
	@B=$(B) FUZZ_TIME=$(FUZZ_TIME) FUZZ_CORPUS=$(FUZZ_CDLC).corpus bash tests/sh/fuzz_cdlc.sh
.PHONY: fuzz

# make bench: the machine's measured peak, then cdl static (with each backend) and tape
# side by side with PyTorch eager/TorchScript (when /usr/bin/python3 has torch) and each
# backend's sgemm reference; not part of make test.  The other backend's runtime is
# built into $(B)/<backend>.  Tables on stdout, JSON in $(B)/bench/; docs/benchmarks.md.
OTHER_BACKEND := $(if $(filter onednn,$(BACKEND)),openblas,onednn)
bench: bench-deps all
	@$(MAKE) -s BACKEND=$(OTHER_BACKEND) B=$(B)/$(OTHER_BACKEND) $(B)/$(OTHER_BACKEND)/libcdlrt.a || \
	    echo "bench: the $(OTHER_BACKEND) runtime did not build; its rows are left out"
	@B=$(B) CC=$(CC) BENCH_RT_$(BACKEND)=$(B)/libcdlrt.a BENCH_RT_$(OTHER_BACKEND)=$(B)/$(OTHER_BACKEND)/libcdlrt.a \
	    bench/run.sh
# PyTorch (Debian python3-torch, for /usr/bin/python3) is the bench's reference only:
# nothing builds against it, and the tests that use it skip without it.
bench-deps:
	@scripts/deps.sh bench
.PHONY: bench-deps
.PHONY: bench

# make compare MODEL=models/x.cdl [ARGS="--steps 50 --json"]: the model as static C and
# as a tape program on the same batches (build/cdl-compare; see docs/tape.md).
MODEL ?= models/mlp.cdl
compare: all
	@$(B)/cdl-compare $(MODEL) $(ARGS)
.PHONY: compare

# ---- vae: the VAE showcase (examples/vae_demo.c, examples/vae_anomaly.c over the C that
# cdlc generates from models/vae.cdl into $(B)/gen-models/; see examples/README.md).
$(B)/gen-models/vae.c: models/vae.cdl $(B)/cdlc
	@mkdir -p $(dir $@)
	$(B)/cdlc $< -o $@
$(B)/gen-models/vae.h: $(B)/gen-models/vae.c
VAE_PROGS := $(B)/examples/vae_demo $(B)/examples/vae_anomaly
$(VAE_PROGS): $(B)/examples/%: examples/%.c $(B)/gen-models/vae.c $(B)/libcdlrt.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -I$(B)/gen-models $< $(B)/gen-models/vae.c -o $@ $(B)/libcdlrt.a $(LDLIBS)
EXAMPLE_PROGS += $(VAE_PROGS)
all: $(EXAMPLE_PROGS)

# ---- unet: the denoising U-Net's figure and PSNR (examples/unet_demo.c over the C that
# cdlc generates from models/unet.cdl; see examples/README.md and examples/unet.sh).
$(B)/gen-models/unet.c: models/unet.cdl $(B)/cdlc
	@mkdir -p $(dir $@)
	$(B)/cdlc $< -o $@
$(B)/gen-models/unet.h: $(B)/gen-models/unet.c
$(B)/examples/unet_demo: examples/unet_demo.c $(B)/gen-models/unet.c $(B)/libcdlrt.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -I$(B)/gen-models $< $(B)/gen-models/unet.c -o $@ $(B)/libcdlrt.a $(LDLIBS)
EXAMPLE_PROGS += $(B)/examples/unet_demo
all: $(EXAMPLE_PROGS)

# ---- rnn: recurrent showcase examples.  examples/charlm.c drives the model generated
# from models/charlm.cdl (trains on /usr/share/common-licenses, then samples text).
EXAMPLE_PROGS += $(B)/examples/charlm
all: $(EXAMPLE_PROGS)
$(B)/gen-models/charlm.c: models/charlm.cdl $(B)/cdlc
	@mkdir -p $(dir $@)
	$(B)/cdlc $< -o $@
$(B)/gen-models/charlm.h: $(B)/gen-models/charlm.c
$(B)/examples/charlm: examples/charlm.c $(B)/gen-models/charlm.c $(B)/libcdlrt.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -I$(B)/gen-models $< $(B)/gen-models/charlm.c -o $@ $(B)/libcdlrt.a $(LDLIBS)

# ---- classify: a Fashion-MNIST classifier built from nothing but the inference export
# of a trained LeNet (cdlc --inference) and examples/classify/main.c: `cc ... -lm`, no
# runtime, no BLAS.  `make classify` trains the LeNet for one epoch first (the weights
# are compiled into the program); see examples/README.md and docs/deploy.md.
CLASSIFY := $(B)/classify
$(CLASSIFY)/lenet.ckpt: models/lenet.cdl $(B)/cdlc $(B)/libcdlrt.a
	@mkdir -p $(CLASSIFY)
	$(B)/cdlc $< --exe -o $(CLASSIFY)/lenet
	$(CLASSIFY)/lenet train --epochs 1 --quiet --save $@
$(CLASSIFY)/lenet_infer.c: $(CLASSIFY)/lenet.ckpt $(B)/cdlc
	$(B)/cdlc models/lenet.cdl --inference --weights $< -o $@
$(B)/examples/classify: examples/classify/main.c $(CLASSIFY)/lenet_infer.c
	@mkdir -p $(dir $@)
	$(CC) -std=c99 -O2 -Wall -Wextra -Werror -pedantic -I$(CLASSIFY) examples/classify/main.c $(CLASSIFY)/lenet_infer.c -o $@ -lm
classify: $(B)/examples/classify
.PHONY: classify

# ---- difftest: random CDL programs (tests/difftest/gen.py), each compiled static and
# --target=tape and run side by side (tests/difftest/driver.c): losses, gradients,
# outputs, input gradients and entries must agree, the f64 builds pass gradcheck, and a
# tenth of them run under ASan + UBSan ($(B)/dtsan: cdlc, the runtime and the generated
# code).  tests/sh/difftest.sh runs 120 in make test;
# `make difftest N=10000 [START=1] [JOBS=2]` runs more.  See docs/design.md.
DT_SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
difftest-san:
	@$(MAKE) -s B=$(B)/dtsan OPT=-O0 RT_OPT=-O1 SAN="$(DT_SAN)" $(B)/dtsan/cdlc $(B)/dtsan/libcdlrt.a
ifeq ($(SAN),)
tests: difftest-san
endif
N     ?= 1000
START ?= 1
JOBS  ?= 2
difftest: deps all difftest-san
	@B=$(B) python3 tests/difftest/run.py --n $(N) --start $(START) --jobs $(JOBS) \
	    --seed-file tests/difftest/seeds.txt tests/difftest/cases/*.cdl
.PHONY: difftest difftest-san

# ---- lint: static analysis of compiler/ and runtime/ (not part of make test).
# cppcheck over the whole program at once (its cross-file null checks need that; results
# cached in build/lint/cppcheck), then clang-tidy-14 (bugprone-*, cert-*,
# clang-analyzer-*) file by file, -j2, each file rechecked only when it or a header
# changes.  Suppressions, each with its reason: tools/lint/cppcheck.supp and
# tools/lint/clang-tidy.supp.  Any finding fails the target.  The generated parser and
# scanner (build/gen) are not checked; their headers are included like any other.
# cppcheck 2.10 does not read C11 _Noreturn, so it is told the GNU spelling, else it
# follows every path through die() and diag_out_of_memory().
LINT     := build/lint
LINT_SRC := $(filter-out runtime/blas_dnnl.c runtime/dist_mpi.c,$(wildcard compiler/*.c runtime/*.c))
LINT_DEF := -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L -Iruntime -Icompiler -Ibuild/gen
LINT_HDR := $(wildcard compiler/*.h compiler/*.inc runtime/*.h runtime/*.def) build/gen/infer_kernels.h
lint: lint-deps
	@$(MAKE) -s B=build build/gen/cdl.tab.c build/gen/lex.yy.c build/gen/infer_kernels.h
	@mkdir -p $(LINT)/cppcheck
	cppcheck -j2 --quiet --std=c11 --enable=warning,style,performance,portability \
	    --error-exitcode=1 --cppcheck-build-dir=$(LINT)/cppcheck \
	    --suppressions-list=tools/lint/cppcheck.supp '-D_Noreturn=__attribute__((noreturn))' $(LINT_DEF) \
	    --template='{file}:{line}:{column}: {severity}: {message} [{id}]' $(LINT_SRC)
	@$(MAKE) -s $(TEST_J) $(patsubst %.c,$(LINT)/tidy/%.ok,$(LINT_SRC))
	@echo "lint: cppcheck and clang-tidy-14 clean on $(words $(LINT_SRC)) files"
# The checks of clang-tidy.supp's CHECK entries are off everywhere, its CHECK:FILE
# entries for that file.
TIDY_CHECKS := -*,bugprone-*,cert-*,clang-analyzer-*$(shell awk '!/^\#/ && NF && $$1 !~ /:/ {printf ",-%s", $$1}' tools/lint/clang-tidy.supp)
$(LINT)/tidy/%.ok: %.c $(LINT_HDR) tools/lint/clang-tidy.supp
	@mkdir -p $(dir $@)
	@clang-tidy-14 --quiet --checks='$(TIDY_CHECKS)$(shell awk -F'[: ]' '$$2 == "$<" {printf ",-%s", $$1}' tools/lint/clang-tidy.supp)' \
	    --warnings-as-errors='*' $< -- -std=c11 $(LINT_DEF) -DCDL_RT_LIBS='""' >$@.log 2>&1 || \
	    { grep -v 'warnings generated' $@.log; exit 1; }
	@touch $@
lint-deps:
	@scripts/deps.sh lint
.PHONY: lint lint-deps

# ---- coverage: line and branch coverage of compiler/ and runtime/ (gcov, gcovr).  A
# --coverage build in build/cov, then every unit test (build/cov/tests/test_*) and the
# COV_SH scripts of tests/sh (programs they build link the instrumented runtime), then
# gcovr's summary; the per-file table is in build/cov/coverage.txt.  COV_SH=all runs
# every script (longer than make test: the runtime is -O0).  Each run starts from zero.
COV     := build/cov
COV_SH  ?= errors golden_ir codegen gradcheck_ops
COV_SCRIPTS = $(if $(filter all,$(COV_SH)),$(wildcard tests/sh/*.sh),$(patsubst %,tests/sh/%.sh,$(COV_SH)))
coverage: coverage-deps
	@$(MAKE) -s $(TEST_J) B=$(COV) OPT=-O0 RT_OPT=-O0 SAN=--coverage $(COV)/cdlc $(COV)/libcdlrt.a \
	    $(COV)/cdl-compare $(patsubst $(B)/%,$(COV)/%,$(TESTS))
	@find $(COV) -name '*.gcda' -delete
	@export B=$(COV) CC="$(CC) --coverage" CDL_CFLAGS=--coverage CMOCKA_MESSAGE_OUTPUT=stdout; fail=0; \
	for t in $(patsubst $(B)/%,$(COV)/%,$(TESTS)); do $$t >$(COV)/test.log 2>&1 || { echo "FAIL $$t"; fail=1; }; done; \
	for s in $(COV_SCRIPTS); do bash $$s >$(COV)/test.log 2>&1 && echo "ok   $$s" || { echo "FAIL $$s"; fail=1; }; done; \
	[ $$fail = 0 ] || echo "coverage: some tests failed; the figures below count what ran"
	@gcovr -r . --object-directory $(COV)/obj -f 'compiler/' -f 'runtime/' -j 2 \
	    --txt $(COV)/coverage.txt --print-summary $(COV)/obj
	@echo "coverage: per file in $(COV)/coverage.txt"
coverage-deps:
	@scripts/deps.sh coverage
.PHONY: coverage coverage-deps
