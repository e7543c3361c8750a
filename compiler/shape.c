/* shape.c -- compile-time shape and dtype inference support: the diagnostics every
 * shape rule uses, numpy broadcasting, and the size guards.  The per-op rules live with
 * their ops in ops_*.c; ir_add runs them as each node is made, so a model's shapes are
 * known (and its shape errors reported, in source order) by the end of elaboration. */
#include "cdlc.h"

#include <stdlib.h>

bool shape_error(const Node *n, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    error_at(n->loc, "%s", msg);
    return false;
}

/* numpy rules: align trailing axes; each pair equal or one of them 1.  The result is
 * batched when its dim 0 comes from a batched operand of full rank. */
bool shape_broadcast(const Shape *a, const Shape *b, Shape *out) {
    int r = a->rank > b->rank ? a->rank : b->rank;
    Shape s = {.rank = r};
    for (int i = 0; i < r; i++) {
        int ia = i - (r - a->rank), ib = i - (r - b->rank);
        int64_t da = ia >= 0 ? a->d[ia] : 1, db = ib >= 0 ? b->d[ib] : 1;
        if (da != db && da != 1 && db != 1) return false;
        s.d[i] = da > db ? da : db;
    }
    s.batched = r > 0 && ((a->batched && a->rank == r && a->d[0] == s.d[0]) ||
                          (b->batched && b->rank == r && b->d[0] == s.d[0]));
    *out = s;
    return true;
}

bool shape_same_as_input(Graph *g, Node *n) {
    n->shape = g->n[n->in[0]].shape;
    n->dtype = g->n[n->in[0]].dtype;
    return true;
}

bool shape_require_real(const Graph *g, const Node *n, int input) {
    if (g->n[n->in[input]].dtype == DT_REAL) return true;
    return shape_error(n, "%s: argument %d must be f32, got i32", op_info[n->op].name, input + 1);
}

/* A batched tensor has nb rows at run time, an unbatched one all of its dim 0: the two
 * cannot meet along axis 0 (an unbatched dim 0 of 1 broadcasts, and is fine; so does an
 * unbatched operand of lower rank, whose dims align with the trailing ones). */
bool shape_same_batch(const Graph *g, const Node *n, const char *what, int ka, int kb) {
    const Shape *a = &g->n[n->in[ka]].shape, *b = &g->n[n->in[kb]].shape;
    if (a->batched == b->batched) return true;
    const Shape *bat = a->batched ? a : b, *fixed = a->batched ? b : a;
    if (fixed->rank < bat->rank || fixed->rank == 0 || fixed->d[0] == 1) return true;
    int kbat = a->batched ? ka : kb, kfix = a->batched ? kb : ka;
    return shape_error(n, "%s: argument %d %s is batched and argument %d %s is not: its dim 0 of %lld cannot follow the "
                       "runtime batch (make it 1, or batched)", what, kbat + 1, shape_str(bat), kfix + 1,
                       shape_str(fixed), (long long)fixed->d[0]);
}

bool shape_checked_numel(const Node *n, const Shape *s) {
    int64_t total = 1;
    for (int i = 0; i < s->rank; i++) {
        if (s->d[i] <= 0) {
            return shape_error(n, "%s: dimension %d is %lld; dimensions must be positive", op_info[n->op].name, i,
                               (long long)s->d[i]);
        }
        if (s->d[i] > MAX_ELEMS || total > MAX_ELEMS / s->d[i]) {
            return shape_error(n, "%s: tensor too large: more than 2^40 elements", op_info[n->op].name);
        }
        total *= s->d[i];
    }
    return true;
}
