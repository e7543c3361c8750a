/* tape_sel.c -- tape ops of masks and selection: comparisons, where (and so
 * masked_fill), tril/triu, one_hot, sign, argmax, var/std, logsumexp and the casts.
 * Each op is the public cdl_t_<op> (check shapes, make the record, run the forward
 * kernel of kernels_sel_t.h or kernels_ew_t.h) and, when it has a gradient, a static
 * bwd_<op>.  The rules mirror compiler/ops_ew.c (compare, where) and ops_sel.c, so both
 * modes compute the same numbers. */
#include "tape_int.h"

static const float zero_f32 = 0;
static const double zero_f64 = 0;

/* A real zero of the tape's precision, as a broadcast operand (stride 0). */
static const void *tape_zero(const cdl_tape *tp) {
    return tp->rs == 8 ? (const void *)&zero_f64 : (const void *)&zero_f32;
}

/* A result that carries no gradient (a mask, an index, a sign). */
static cdl_t *no_grad(cdl_t *y) {
    if (y) y->flags &= ~(unsigned)(CDL_TF_PARAM | CDL_TF_INPUT);
    return y;
}

/* ======================================================================== comparisons */

static const char *cmp_name(int code) {
    switch (code) {
    case CDL_BIN_LT: return "<";
    case CDL_BIN_LE: return "<=";
    case CDL_BIN_GT: return ">";
    case CDL_BIN_GE: return ">=";
    case CDL_BIN_EQ: return "==";
    case CDL_BIN_NE: return "!=";
    default: return NULL;
    }
}

cdl_t *cdl_t_compare(cdl_tape *tp, cdl_t *a, cdl_t *b, int code) {
    const char *op = cmp_name(code);
    cdl_t *ab[2] = {a, b};
    if (!op) return tape_err(tp, "compare", "unknown comparison %d", code);
    if (!tape_need_real(tp, op, ab, 2)) return NULL;
    int r;
    int64_t dims[CDL_MAXDIM];
    if (!tape_bcast_dims(a, b, &r, dims)) return tape_err(tp, op, "shapes do not broadcast: %s and %s", DSTR(a), DSTR(b));
    cdl_t *y = no_grad(tape_rec(tp, op, tp->real, r, dims, 1, 2, ab));
    if (!y) return NULL;
    int64_t n = y->numel;
    if ((a->numel == n || a->numel == 1) && (b->numel == n || b->numel == 1)) {
        TK(tp, binary, code, n, a->data, a->numel == n, b->data, b->numel == n, y->data);
    } else {
        int64_t sa[CDL_MAXDIM], sb[CDL_MAXDIM];
        tape_bcast_strides(r, dims, a->rank, a->dims, sa);
        tape_bcast_strides(r, dims, b->rank, b->dims, sb);
        TK(tp, binary_bc, code, r, dims, sa, sb, a->data, b->data, y->data);
    }
    return y;
}

/* ======================================================================== where */

/* y = c ? a : b over y's shape; c, a, b given by data and dims (NULL dims: a scalar). */
static void where_apply(cdl_tape *tp, const cdl_t *y, const void *c, const cdl_t *cs, const void *a, const cdl_t *as,
                        const void *b, const cdl_t *bs, void *out) {
    int64_t st[3][CDL_MAXDIM] = {{0}};
    const cdl_t *ops[3] = {cs, as, bs};
    for (int k = 0; k < 3; k++)
        if (ops[k]) tape_bcast_strides(y->rank, y->dims, ops[k]->rank, ops[k]->dims, st[k]);
    TK(tp, where, y->rank, y->dims, st[0], st[1], st[2], c, a, b, out);
}

/* da = where(c, g, 0), db = where(c, 0, g), each summed over its broadcast axes. */
static void bwd_where(cdl_tape *tp, cdl_t *y) {
    cdl_t *c = y->in[0], *a = y->in[1], *b = y->in[2];
    for (int k = 1; k < 3; k++) {
        cdl_t *x = k == 1 ? a : b;
        if (!tape_need(tp, x)) continue;
        void *d = tape_rtemp(tp, y->numel);
        if (!d) return;
        if (k == 1) where_apply(tp, y, c->data, c, y->grad, y, tape_zero(tp), NULL, d);
        else where_apply(tp, y, c->data, c, tape_zero(tp), NULL, y->grad, y, d);
        tape_acc_bcast(tp, x, y, d);
    }
}

cdl_t *cdl_t_where(cdl_tape *tp, cdl_t *c, cdl_t *a, cdl_t *b) {
    cdl_t *in[3] = {c, a, b};
    if (!tape_need_real(tp, "where", in, 3)) return NULL;
    int r, r2;
    int64_t d1[CDL_MAXDIM], dims[CDL_MAXDIM];
    cdl_t t = {.rank = 0};
    if (!tape_bcast_dims(c, a, &r, d1)) return tape_err(tp, "where", "cond %s and a %s do not broadcast", DSTR(c), DSTR(a));
    t.rank = r;
    memcpy(t.dims, d1, sizeof d1);
    if (!tape_bcast_dims(&t, b, &r2, dims)) return tape_err(tp, "where", "b %s does not broadcast with %s", DSTR(b), DSTR(&t));
    cdl_t *y = tape_rec(tp, "where", tp->real, r2, dims, 1, 3, in);
    if (!y) return NULL;
    where_apply(tp, y, c->data, c, a->data, a, b->data, b, y->data);
    y->bwd = bwd_where;
    return y;
}
