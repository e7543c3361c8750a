/* test_util.h -- the fixtures the compiler-side cmocka tests share (test_lexer.c,
 * test_parser.c, test_elab.c, test_ops_*.c):
 *
 *   - tu_setup / tu_teardown: a fresh arena and the diagnostics captured in memory,
 *     read back with diags() / said() / assert_diag();
 *   - lex / parse / elab / elab_ok: run a front-end stage on model text ("t.cdl");
 *   - tu_graph_setup: the above plus the op rules and an empty graph `g` whose nodes
 *     carry the location `here`, with leaf, op and shape helpers for the ops tests.
 *
 * Every test program is one translation unit built from one tests/test_*.c (see the
 * Makefile), so this header holds static state and static inline functions (inline
 * only to keep -Wunused-function quiet in the programs that use a part of it).
 * Include it first: it brings the cmocka prelude, the C headers and "cdlc.h". */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdlc.h"

/* ------------------------------------------------------------------ diagnostics */

static char *tu_diag_buf;
static size_t tu_diag_len;
static FILE *tu_diag_f;

/* cmocka per-test fixture: a fresh compiler arena, the error count back to 0 and the
 * diagnostics into an in-memory stream (not stderr) until tu_teardown. */
static inline int tu_setup(void **state) {
    (void)state;
    cc_arena = arena_new();
    diag_reset();
    tu_diag_f = open_memstream(&tu_diag_buf, &tu_diag_len);
    diag_set_stream(tu_diag_f);
    return 0;
}

static inline int tu_teardown(void **state) {
    (void)state;
    diag_set_stream(NULL);
    fclose(tu_diag_f);
    free(tu_diag_buf);
    tu_diag_buf = NULL;
    arena_free(cc_arena);
    cc_arena = NULL;
    return 0;
}

/* The diagnostics printed since tu_setup ("" if none). */
static inline const char *diags(void) {
    fflush(tu_diag_f);
    return tu_diag_buf ? tu_diag_buf : "";
}

/* The diagnostics printed so far contain s. */
static inline bool said(const char *s) { return strstr(diags(), s) != NULL; }
#define assert_diag(s) assert_non_null(strstr(diags(), (s)))

/* ------------------------------------------------------------------ model text */

/* The token dump of src (lex_debug's format). */
static inline const char *lex(const char *src) { return lex_debug("t.cdl", src, strlen(src)); }

static inline const Ast *parse(const char *src) { return parse_text("t.cdl", src, strlen(src)); }

/* The elaborated model of src, NULL after errors (read them with diags()). */
static inline Model *elab(const char *src) { return elab_text("t.cdl", src, strlen(src), 0, NULL); }

/* The same, for text that must elaborate: fails the test (showing the diagnostics)
 * if it does not. */
static inline Model *elab_ok(const char *src) {
    Model *m = elab(src);
    if (!m) fprintf(stderr, "unexpected diagnostics:\n%s", diags());
    assert_non_null(m);
    return m;
}

/* ------------------------------------------------------------------ graphs */

static Graph *g;  /* the graph under test, a fresh one per test (tu_graph_setup) */
static Loc here;  /* the location every node gets: the diagnostics tests expect it */

/* For a per-test setup: tu_setup, the op rules, and an empty graph g compiled for
 * batch size `batch` whose nodes are placed at `at`. */
static inline int tu_graph_setup(void **state, int64_t batch, Loc at) {
    tu_setup(state);
    ops_init();
    g = ir_graph_new(batch);
    here = at;
    return 0;
}

/* SH(batched, d0, d1, ...): a shape literal. */
#define SH(b, ...)                                                                    \
    shape_make((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)),             \
               (int64_t[]){__VA_ARGS__}, b)

/* Leaves of shape s: an input of dtype dt, a real input, a trainable parameter, and a
 * constant of dtype dt (LEAF(batched, d0, ...): a real constant). */
static inline int leaf(Shape s, DType dt) {
    int id = ir_add(g, OP_INPUT, here, 0, NULL, NULL, &s, dt);
    assert_true(id >= 0);
    return id;
}
static inline int real(Shape s) { return leaf(s, DT_REAL); }
static inline int param(Shape s) {
    int id = ir_add(g, OP_PARAM, here, 0, NULL, NULL, &s, DT_REAL);
    assert_true(id >= 0);
    return id;
}
static inline int const_leaf(Shape s, DType dt) {
    int id = ir_add(g, OP_CONST, here, 0, NULL, NULL, &s, dt);
    assert_true(id >= 0);
    return id;
}
#define LEAF(b, ...) const_leaf(SH(b, __VA_ARGS__), DT_REAL)

/* Node o (real) on inputs in[0..nin) with attributes at and shape hint: its id, or -1
 * after a diagnostic. */
static inline int op(Op o, int nin, const int *in, const Attrs *at, const Shape *hint) {
    return ir_add(g, o, here, nin, in, at, hint, DT_REAL);
}

/* Node id exists and has shape want, batched flag included.  SHAPE(id, batched, d0,
 * ...) spells want inline. */
static inline void assert_shape(int id, Shape want) {
    assert_true(id >= 0);
    const Shape *s = &g->n[id].shape;
    if (!shape_eq(s, &want) || s->batched != want.batched)
        fail_msg("node %d: shape %s%s, want %s%s", id, shape_str(s), s->batched ? " batched" : "",
                 shape_str(&want), want.batched ? " batched" : "");
}
#define SHAPE(id, b, ...) assert_shape((id), SH(b, __VA_ARGS__))

/* A model over g whose loss is node `loss`, with parameters ps[0..np) (marked as
 * such); free(m.params) after use. */
static inline Model model_of(int loss, int *ps, int np) {
    Model m = {.name = "t", .g = g, .loss = loss, .batch = g->batch};
    m.params = calloc((size_t)np, sizeof(Param));
    m.nparams = np;
    for (int k = 0; k < np; k++) {
        g->n[ps[k]].flags |= NF_PARAM;
        g->n[ps[k]].slot = k;
        m.params[k].shape = g->n[ps[k]].shape;
    }
    return m;
}

#endif /* TEST_UTIL_H */
