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

/* ======================================================================== tril, triu */

TAPE_BWD1(tril, int64_t cols = x->dims[x->rank - 1], rows = x->dims[x->rank - 2];
          TK(tp, tril, x->numel / (rows * cols > 0 ? rows * cols : 1), rows, cols, y->ia[0], (int)y->ia[1], g, d))

cdl_t *cdl_t_tril(cdl_tape *tp, cdl_t *x, int64_t diag, int upper) {
    const char *op = upper ? "triu" : "tril";
    if (!tape_need_real(tp, op, &x, 1)) return NULL;
    if (x->rank < 2) return tape_err(tp, op, "expected at least 2 axes, got %s", DSTR(x));
    cdl_t *y = tape_rec(tp, op, tp->real, x->rank, x->dims, 1, 1, &x);
    if (!y) return NULL;
    int64_t cols = x->dims[x->rank - 1], rows = x->dims[x->rank - 2];
    TK(tp, tril, x->numel / (rows * cols > 0 ? rows * cols : 1), rows, cols, diag, upper != 0, x->data, y->data);
    y->ia[0] = diag;
    y->ia[1] = upper != 0;
    y->bwd = bwd_tril;
    return y;
}

/* ======================================================================== one_hot, sign, casts */

cdl_t *cdl_t_one_hot(cdl_tape *tp, cdl_t *ids, int64_t classes) {
    if (!ids) return tape_rec(tp, "one_hot", tp->real, 0, NULL, 0, 1, &ids);
    if (ids->dtype != CDL_I32) return tape_err(tp, "one_hot", "ids must be i32, got reals %s", DSTR(ids));
    if (classes <= 0 || ids->rank + 1 > CDL_MAXDIM) return tape_err(tp, "one_hot", "%lld classes for ids %s", (long long)classes, DSTR(ids));
    int64_t dims[CDL_MAXDIM];
    memcpy(dims, ids->dims, sizeof(int64_t) * (size_t)ids->rank);
    dims[ids->rank] = classes;
    cdl_t *y = no_grad(tape_rec(tp, "one_hot", tp->real, ids->rank + 1, dims, 1, 1, &ids));
    if (!y) return NULL;
    TK(tp, one_hot, ids->numel, classes, ids->data, y->data);
    return y;
}

cdl_t *cdl_t_sign(cdl_tape *tp, cdl_t *x) {
    if (!tape_need_real(tp, "sign", &x, 1)) return NULL;
    cdl_t *y = no_grad(tape_rec(tp, "sign", tp->real, x->rank, x->dims, 1, 1, &x));
    if (!y) return NULL;
    TK(tp, sign, x->numel, x->data, y->data);
    return y;
}

cdl_t *cdl_t_cast(cdl_tape *tp, cdl_t *x, int to_i32) {
    const char *op = to_i32 ? "int" : "float";
    if (!x) return tape_rec(tp, op, CDL_F32, 0, NULL, 0, 1, &x);
    if ((x->dtype == CDL_I32) == (to_i32 != 0))
        return tape_err(tp, op, "x %s is already %s", DSTR(x), to_i32 ? "i32" : "real");
    if (to_i32 && !tape_is_real(tp, x)) return tape_err(tp, op, "x %s is not of the tape's precision", DSTR(x));
    cdl_t *y = no_grad(tape_rec(tp, op, to_i32 ? CDL_I32 : tp->real, x->rank, x->dims, 1, 1, &x));
    if (!y) return NULL;
    if (to_i32) TK(tp, to_i32, x->numel, x->data, y->data);
    else TK(tp, from_i32, x->numel, x->data, y->data);
    return y;
}

/* ======================================================================== argmax */

cdl_t *cdl_t_argmax(cdl_tape *tp, cdl_t *x, int axis, int keepdim, int is_min) {
    const char *op = is_min ? "argmin" : "argmax";
    if (!tape_need_real(tp, op, &x, 1)) return NULL;
    if (x->rank == 0 || axis < -1 || axis >= x->rank) return tape_err(tp, op, "axis %d does not fit %s", axis, DSTR(x));
    int64_t dims[CDL_MAXDIM];
    int r = 0;
    for (int i = 0; i < x->rank; i++) {
        if (axis >= 0 && i != axis) dims[r++] = x->dims[i];
        else if (keepdim) dims[r++] = 1;
    }
    cdl_t *y = no_grad(tape_rec(tp, op, CDL_I32, r, dims, 1, 1, &x));
    if (!y) return NULL;
    if (axis < 0) TK(tp, argmax, 1, x->numel, 1, is_min != 0, x->data, y->data);
    else TK(tp, argmax, tape_prod(x->dims, 0, axis), x->dims[axis], tape_prod(x->dims, axis + 1, x->rank), is_min != 0, x->data, y->data);
    return y;
}

/* ======================================================================== var, std, logsumexp */

/* The result dims of a reduction of x over mask (0: every axis); 0 when mask does not fit. */
static int stat_dims(const cdl_t *x, unsigned *mask, int keepdim, int *rank, int64_t *dims) {
    unsigned all = (1u << x->rank) - 1;
    if (x->rank == 0 || (*mask & ~all)) return 0;
    if (*mask == 0) *mask = all;
    int r = 0;
    for (int i = 0; i < x->rank; i++) {
        if (!(*mask >> i & 1u)) dims[r++] = x->dims[i];
        else if (keepdim) dims[r++] = 1;
    }
    *rank = r;
    return 1;
}

TAPE_BWD1(moments, TK(tp, moments_bwd, x->rank, x->dims, (unsigned)y->ia[0], y->fa[0], (int)y->ia[1], g, x->data,
                      y->aux, y->data, d))

cdl_t *cdl_t_moments(cdl_tape *tp, cdl_t *x, unsigned axes, int keepdim, double correction, int take_sqrt) {
    const char *op = take_sqrt ? "std" : "var";
    if (!tape_need_real(tp, op, &x, 1)) return NULL;
    int r;
    int64_t dims[CDL_MAXDIM];
    if (!stat_dims(x, &axes, keepdim, &r, dims)) return tape_err(tp, op, "axis set 0x%x does not fit %s", axes, DSTR(x));
    cdl_t *y = tape_rec(tp, op, tp->real, r, dims, 1, 1, &x);
    if (!y) return NULL;
    y->aux = tape_alloc(tp, (size_t)y->numel * (size_t)tp->rs);
    if (!y->aux) return NULL;
    TK(tp, moments, x->rank, x->dims, axes, correction, take_sqrt != 0, x->data, y->data, y->aux);
    y->ia[0] = axes;
    y->ia[1] = take_sqrt != 0;
    y->fa[0] = correction;
    y->bwd = bwd_moments;
    return y;
}

TAPE_BWD1(logsumexp, TK(tp, logsumexp_bwd, x->rank, x->dims, (unsigned)y->ia[0], g, x->data, y->data, d))

cdl_t *cdl_t_logsumexp(cdl_tape *tp, cdl_t *x, unsigned axes, int keepdim) {
    if (!tape_need_real(tp, "logsumexp", &x, 1)) return NULL;
    int r;
    int64_t dims[CDL_MAXDIM];
    if (!stat_dims(x, &axes, keepdim, &r, dims)) return tape_err(tp, "logsumexp", "axis set 0x%x does not fit %s", axes, DSTR(x));
    cdl_t *y = tape_rec(tp, "logsumexp", tp->real, r, dims, 1, 1, &x);
    if (!y) return NULL;
    char *mark = tp->hi;
    void *work = tape_rtemp(tp, y->numel);
    if (!work) return NULL;
    TK(tp, logsumexp, x->rank, x->dims, axes, x->data, y->data, work);
    tape_release(tp, mark);
    y->ia[0] = axes;
    y->bwd = bwd_logsumexp;
    return y;
}
