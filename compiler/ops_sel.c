/* ops_sel.c -- masks, selection and axis statistics: tril/triu, one_hot, sign, argmax,
 * the casts, var/std (MOMENTS) and logsumexp.  Per op: shape rule, gradient rule (or
 * none: not OPF_DIFF), emitter and tape call side by side; the table at the end
 * registers them.  Kernels: runtime/kernels_sel_t.h (cdl.h block SEL; sign in
 * kernels_ew_t.h); tape: runtime/tape_sel.c.  The comparisons and where are
 * elementwise broadcasting ops and live in ops_ew.c. */
#include "cdlc.h"

static const Node *in_node(const Graph *g, const Node *n, int k) { return &g->n[n->in[k]]; }
static const char *sel_name(const Node *n) { return op_info[n->op].name; }

/* ------------------------------------------------------------------ tril, triu */

/* TRIL: x of rank >= 2, same shape; ia0 the diagonal, ia1 = 1 for triu. */
static bool shape_tril(Graph *g, Node *n) {
    if (!shape_require_real(g, n, 0)) return false;
    const Shape *x = &in_node(g, n, 0)->shape;
    const char *name = n->ia[1] ? "triu" : "tril";
    if (x->rank < 2) {
        shape_error(n, "%s: expected a tensor with at least 2 axes, got %s", name, shape_str(x));
        return false;
    }
    n->shape = *x;
    n->dtype = DT_REAL;
    return true;
}

/* The mask is fixed: the gradient is the same op on g. */
static void grad_tril(AD *ad, int n, int gy) {
    const Node *y = &ad_src(ad)->n[n];
    Attrs at = {.i = {y->ia[0], y->ia[1]}};
    int in = y->in[0];
    ad_acc(ad, in, ad_add(ad, n, OP_TRIL, 1, &gy, &at, NULL));
}

/* cdl_tril over [batch, rows, cols]: the leading axes are the batch (rows may be the
 * runtime batch of a batched 2-D x). */
static void emit_tril(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    int x = y->in[0], r = in_node(g, y, 0)->shape.rank;
    e_line(e, "%s(%s, %s, %lld, %lld, %d, %s, %s);", e_fn(e, "tril"), e_prod(e, x, 0, r - 2), e_dim(e, x, r - 2),
           (long long)in_node(g, y, 0)->shape.d[r - 1], (long long)y->ia[0], y->ia[1] != 0, e_ptr(e, x), e_ptr(e, n));
}

static const char *tape_tril(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    return cc_str("cdl_t_tril(tp, %s, %lld, %d)", e_ptr(e, y->in[0]), (long long)y->ia[0], y->ia[1] != 0);
}

/* ------------------------------------------------------------------ one_hot */

/* ONE_HOT: ids i32[...] -> f32[..., ia0]. */
static bool shape_one_hot(Graph *g, Node *n) {
    const Node *ids = in_node(g, n, 0);
    if (ids->dtype != DT_I32) {
        shape_error(n, "one_hot: ids must be i32, got f32%s", shape_str(&ids->shape));
        return false;
    }
    if (n->ia[0] <= 0) {
        shape_error(n, "one_hot: the number of classes must be positive, got %lld", (long long)n->ia[0]);
        return false;
    }
    if (ids->shape.rank >= MAXDIM) {
        shape_error(n, "one_hot: ids %s have too many axes for one more", shape_str(&ids->shape));
        return false;
    }
    Shape s = ids->shape;
    s.d[s.rank++] = n->ia[0];
    if (!shape_checked_numel(n, &s)) return false;
    n->shape = s;
    n->dtype = DT_REAL;
    return true;
}

static void emit_one_hot(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    e_line(e, "%s(%s, %lld, %s, %s);", e_fn(e, "one_hot"), e_numel(e, y->in[0]), (long long)y->ia[0], e_ptr(e, y->in[0]),
           e_ptr(e, n));
}

static const char *tape_one_hot(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    return cc_str("cdl_t_one_hot(tp, %s, %lld)", e_ptr(e, y->in[0]), (long long)y->ia[0]);
}

/* ------------------------------------------------------------------ sign */

static bool shape_sign(Graph *g, Node *n) {
    if (!shape_require_real(g, n, 0)) return false;
    n->shape = in_node(g, n, 0)->shape;
    n->dtype = DT_REAL;
    return true;
}

static void emit_sign(Emit *e, const Graph *g, int n) {
    e_line(e, "%s(%s, %s, %s);", e_fn(e, "sign"), e_numel(e, n), e_ptr(e, g->n[n].in[0]), e_ptr(e, n));
}

/* ------------------------------------------------------------------ argmax, argmin */

/* ARGMAX: ia0 the axis (-1: of the flattened x, a scalar), ia1 keepdim, ia2 argmin. */
static bool shape_argmax(Graph *g, Node *n) {
    if (!shape_require_real(g, n, 0)) return false;
    const Shape *x = &in_node(g, n, 0)->shape;
    const char *name = n->ia[2] ? "argmin" : "argmax";
    if (x->rank == 0 || n->ia[0] < -1 || n->ia[0] >= x->rank) {
        shape_error(n, "%s: axis %lld does not fit %s", name, (long long)n->ia[0], shape_str(x));
        return false;
    }
    Shape s = {.rank = 0};
    for (int i = 0; i < x->rank; i++) {
        bool red = n->ia[0] < 0 || i == n->ia[0];
        if (!red) s.d[s.rank++] = x->d[i];
        else if (n->ia[1]) s.d[s.rank++] = 1;
    }
    s.batched = x->batched && n->ia[0] > 0;
    n->shape = s;
    n->dtype = DT_I32;
    return true;
}

/* cdl_argmax over x as [outer, len, inner]. */
static void emit_argmax(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    int x = y->in[0], r = in_node(g, y, 0)->shape.rank;
    const char *outer = "1", *len = e_numel(e, x), *inner = "1";
    if (y->ia[0] >= 0) {
        int a = (int)y->ia[0];
        outer = e_prod(e, x, 0, a);
        len = e_dim(e, x, a);
        inner = e_prod(e, x, a + 1, r);
    }
    e_line(e, "%s(%s, %s, %s, %d, %s, %s);", e_fn(e, "argmax"), outer, len, inner, y->ia[2] != 0, e_ptr(e, x),
           e_ptr(e, n));
}

static const char *tape_argmax(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    return cc_str("cdl_t_argmax(tp, %s, %d, %d, %d)", e_ptr(e, y->in[0]), (int)y->ia[0], y->ia[1] != 0, y->ia[2] != 0);
}

/* ------------------------------------------------------------------ casts */

/* CAST: ia0 = 1 to i32 (from f32), 0 to f32 (from i32). */
static bool shape_cast(Graph *g, Node *n) {
    const Node *x = in_node(g, n, 0);
    DType from = n->ia[0] ? DT_REAL : DT_I32;
    if (x->dtype != from) {
        shape_error(n, "%s: expected %s, got %s%s", n->ia[0] ? "int" : "float", from == DT_I32 ? "i32" : "f32",
                    x->dtype == DT_I32 ? "i32" : "f32", shape_str(&x->shape));
        return false;
    }
    n->shape = x->shape;
    n->dtype = n->ia[0] ? DT_I32 : DT_REAL;
    return true;
}

static void emit_cast(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    e_line(e, "%s(%s, %s, %s);", e_fn(e, y->ia[0] ? "to_i32" : "from_i32"), e_numel(e, n), e_ptr(e, y->in[0]),
           e_ptr(e, n));
}

static const char *tape_cast(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    return cc_str("cdl_t_cast(tp, %s, %d)", e_ptr(e, y->in[0]), y->ia[0] != 0);
}

/* ------------------------------------------------------------------ var, std, logsumexp */

/* MOMENTS and LOGSUMEXP: the shape of sum's rule (ops_dense.c), x of rank >= 1. */
static bool shape_stat(Graph *g, Node *n) {
    if (!shape_require_real(g, n, 0)) return false;
    if (in_node(g, n, 0)->shape.rank == 0) {
        shape_error(n, "%s: x is a scalar: there is no axis to reduce", sel_name(n));
        return false;
    }
    return shape_reduce(g, n);
}

/* aux: the mean (MOMENTS) or the kernel's scratch (LOGSUMEXP), one real an output. */
static int64_t aux_stat(const Graph *g, const Node *n) {
    (void)g;
    return shape_numel(&n->shape);
}

/* (g, x, fwd): dx by one kernel reading the forward's result and aux. */
static void grad_stat(AD *ad, int n, int gy) {
    const Node y = ad_src(ad)->n[n];
    Attrs at = {.i = {y.ia[0], y.ia[1], y.ia[2]}, .f = {y.fa[0]}};
    int in[3] = {gy, ad_x(ad, y.in[0]), ad_x(ad, n)};
    ad_acc(ad, y.in[0], ad_add(ad, n, y.op == OP_MOMENTS ? OP_MOMENTS_BWD : OP_LOGSUMEXP_BWD, 3, in, &at, NULL));
}

/* The backward helpers: x's shape; g has the forward's. */
static bool shape_stat_bwd(Graph *g, Node *n) {
    const Shape *gs = &in_node(g, n, 0)->shape, *ys = &in_node(g, n, 2)->shape;
    if (shape_numel(gs) != shape_numel(ys)) die("%s: gradient %s for %s", sel_name(n), shape_str(gs), shape_str(ys));
    n->shape = in_node(g, n, 1)->shape;
    n->dtype = DT_REAL;
    return true;
}

static void emit_stat(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    int x = y->in[0];
    if (y->op == OP_MOMENTS)
        e_line(e, "%s(%s, 0x%llxu, %s, %d, %s, %s, %s);", e_fn(e, "moments"), e_dims_arg(e, x),
               (unsigned long long)y->ia[0], e_lit(y->fa[0]), y->ia[2] != 0, e_ptr(e, x), e_ptr(e, n), e_aux(e, n));
    else
        e_line(e, "%s(%s, 0x%llxu, %s, %s, %s);", e_fn(e, "logsumexp"), e_dims_arg(e, x), (unsigned long long)y->ia[0],
               e_ptr(e, x), e_ptr(e, n), e_aux(e, n));
}

static void emit_stat_bwd(Emit *e, const Graph *g, int n) {
    const Node *d = &g->n[n];
    int x = d->in[1], f = d->in[2];
    if (d->op == OP_MOMENTS_BWD)
        e_line(e, "%s(%s, 0x%llxu, %s, %d, %s, %s, %s, %s, %s);", e_fn(e, "moments_bwd"), e_dims_arg(e, x),
               (unsigned long long)d->ia[0], e_lit(d->fa[0]), d->ia[2] != 0, e_ptr(e, d->in[0]), e_ptr(e, x),
               e_aux(e, f), e_ptr(e, f), e_ptr(e, n));
    else
        e_line(e, "%s(%s, 0x%llxu, %s, %s, %s, %s);", e_fn(e, "logsumexp_bwd"), e_dims_arg(e, x),
               (unsigned long long)d->ia[0], e_ptr(e, d->in[0]), e_ptr(e, x), e_ptr(e, f), e_ptr(e, n));
}

static const char *tape_stat(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    if (y->op == OP_MOMENTS)
        return cc_str("cdl_t_moments(tp, %s, 0x%llxu, %d, %s, %d)", e_ptr(e, y->in[0]), (unsigned long long)y->ia[0],
                      y->ia[1] != 0, e_lit(y->fa[0]), y->ia[2] != 0);
    return cc_str("cdl_t_logsumexp(tp, %s, 0x%llxu, %d)", e_ptr(e, y->in[0]), (unsigned long long)y->ia[0], y->ia[1] != 0);
}

/* The tape keeps the mean with a MOMENTS record; logsumexp's scratch is short-lived. */
static void tape_scratch_stat(const Graph *g, const Node *n, int real_size, int64_t *keep, int64_t *tmp) {
    (void)g;
    int64_t b = shape_numel(&n->shape) * real_size;
    if (n->op == OP_MOMENTS) *keep = b;
    else *tmp = b;
}

/* ------------------------------------------------------------------ table */

const OpRule ops_sel_rules[] = {
    {OP_TRIL, shape_tril, grad_tril, emit_tril, NULL, .tape = tape_tril, .inplace = INPLACE_IN(0)},
    {OP_ONE_HOT, shape_one_hot, NULL, emit_one_hot, NULL, .tape = tape_one_hot},
    {OP_SIGN, shape_sign, NULL, emit_sign, NULL, .tape = e_tape_plain, .inplace = INPLACE_IN(0)},
    {OP_ARGMAX, shape_argmax, NULL, emit_argmax, NULL, .tape = tape_argmax},
    {OP_CAST, shape_cast, NULL, emit_cast, NULL, .tape = tape_cast},
    {OP_MOMENTS, shape_stat, grad_stat, emit_stat, aux_stat, .tape = tape_stat, .tape_scratch = tape_scratch_stat},
    {OP_MOMENTS_BWD, shape_stat_bwd, NULL, emit_stat_bwd, NULL, .tape = NULL},
    {OP_LOGSUMEXP, shape_stat, grad_stat, emit_stat, aux_stat, .tape = tape_stat, .tape_scratch = tape_scratch_stat},
    {OP_LOGSUMEXP_BWD, shape_stat_bwd, NULL, emit_stat_bwd, NULL, .tape = NULL},
};
const int ops_sel_count = sizeof ops_sel_rules / sizeof ops_sel_rules[0];
