# cdl -- build, test, asan, run, bench, install.  Products go to build/ only.
#   make            build/cdlc, build/libcdlrt.a, tools and examples
#   make test       install missing packages, build, run every test, print the totals
#   make asan       the same suite under AddressSanitizer + UBSan (build/asan/)
#   make run        train models/mlp.cdl on Fashion-MNIST and print the test accuracy
CC      ?= gcc
B       ?= build
OPT     ?= -O2
SAN     ?=
CFLAGS  ?= $(OPT) -g
WFLAGS  := -std=c11 -Wall -Wextra -Werror -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L
ALLFLAGS = $(WFLAGS) $(CFLAGS) $(SAN) -Iruntime -Icompiler -I$(B)/gen -MMD -MP
LDLIBS  := -lopenblas -lz -lpthread -lm
PREFIX  ?= /usr/local

CC_SRC  := $(wildcard compiler/*.c)
CC_LIB  := $(filter-out compiler/main.c,$(CC_SRC))
RT_SRC  := $(wildcard runtime/*.c)
TESTS   := $(patsubst tests/%.c,$(B)/tests/%,$(wildcard tests/test_*.c))
RT_TESTS:= $(patsubst tests/%.c,$(B)/tests/%,$(wildcard tests/test_rt_*.c))
TOOLS   := $(patsubst tools/%.c,$(B)/%,$(wildcard tools/*.c))
EXAMPLES:= $(patsubst examples/%.c,$(B)/examples/%,$(wildcard examples/*.c))

GEN     := $(B)/gen/cdl.tab.c $(B)/gen/lex.yy.c
GEN_OBJ := $(B)/obj/gen/cdl.tab.o $(B)/obj/gen/lex.yy.o
CC_OBJ  := $(patsubst %.c,$(B)/obj/%.o,$(CC_LIB)) $(GEN_OBJ)
RT_OBJ  := $(patsubst %.c,$(B)/obj/%.o,$(RT_SRC))

all: $(B)/cdlc $(B)/libcdlrt.a $(TOOLS) $(EXAMPLES)

$(B)/gen/cdl.tab.c: grammar/cdl.y
	@mkdir -p $(B)/gen
	bison -Wall -Werror --defines=$(B)/gen/cdl.tab.h -o $@ $<
$(B)/gen/cdl.tab.h: $(B)/gen/cdl.tab.c
$(B)/gen/lex.yy.c: grammar/cdl.l $(B)/gen/cdl.tab.h
	@mkdir -p $(B)/gen
	flex --header-file=$(B)/gen/lex.yy.h -o $@ $<

# Generated scanner/parser: same warnings, minus the ones their skeletons trip.
$(B)/obj/gen/%.o: $(B)/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -Wno-unused-function -Wno-sign-compare -c $< -o $@

$(B)/obj/compiler/%.o: compiler/%.c | $(B)/gen/cdl.tab.c $(B)/gen/lex.yy.c
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -c $< -o $@
$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -c $< -o $@

$(B)/libcdlc.a: $(CC_OBJ)
	@rm -f $@; ar rcs $@ $^
$(B)/libcdlrt.a: $(RT_OBJ)
	@rm -f $@; ar rcs $@ $^
$(B)/cdlc: $(B)/obj/compiler/main.o $(B)/libcdlc.a
	$(CC) $(SAN) $^ -o $@ -lm

# tests/test_rt_*.c exercise the runtime alone; the others link the compiler too.
$(RT_TESTS): $(B)/tests/%: tests/%.c $(B)/libcdlrt.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) $< -o $@ $(B)/libcdlrt.a -lcmocka $(LDLIBS)
$(B)/tests/%: tests/%.c $(B)/libcdlc.a $(B)/libcdlrt.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) $< -o $@ $(B)/libcdlc.a $(B)/libcdlrt.a -lcmocka $(LDLIBS)
$(B)/%: tools/%.c $(B)/libcdlc.a $(B)/libcdlrt.a
	$(CC) $(ALLFLAGS) $< -o $@ $(B)/libcdlc.a $(B)/libcdlrt.a $(LDLIBS)
$(B)/examples/%: examples/%.c $(B)/libcdlrt.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) $< -o $@ $(B)/libcdlrt.a $(LDLIBS)

deps:
	@scripts/deps.sh

test: deps
	@$(MAKE) -s all tests
	@B=$(B) scripts/run-tests.sh
tests: $(TESTS)

asan: deps
	@$(MAKE) -s B=build/asan CC=clang OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" all tests
	@B=build/asan ASAN_OPTIONS=detect_leaks=1 scripts/run-tests.sh

run: deps all
	@scripts/run-mlp.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(B)/cdlc $(DESTDIR)$(PREFIX)/bin/cdlc
	install -m 644 $(B)/libcdlrt.a $(DESTDIR)$(PREFIX)/lib/libcdlrt.a
	install -m 644 runtime/cdl.h $(DESTDIR)$(PREFIX)/include/cdl.h
	sed 's|@PREFIX@|$(PREFIX)|; s|@VERSION@|0.1.0|' scripts/cdl.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/cdl.pc

clean:
	rm -rf build

.PHONY: all deps test tests asan run install clean
.SECONDARY:
-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
