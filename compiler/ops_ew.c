/* ops_ew.c -- elementwise ops: constant and random leaves, broadcasting binary ops,
 * unary math and activations, dropout, stop_gradient, and the activations' backward
 * helpers.  Per op: shape rule, gradient rule and emitter side by side; the table at
 * the end registers them.  Kernels: runtime/kernels_ew_t.h (cdl.h block EW).
 *
 * Gradient rules copy the forward node (Node x = src->n[n]) before calling ad_add:
 * at the top level the gradient graph IS the forward graph, and adding a node may
 * move its node array. */
#include "cdlc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ shared helpers */

/* The counter base of a RAND op's numbers.  Unbatched: element i of loop step t uses
 * t * numel + i ("0" outside loops).  Batched, the numbers are keyed by the example's
 * row in the step's global batch, so that shards of it (ranks of a data-parallel job,
 * micro-batches) draw what one process drawing the whole batch would: element i of
 * loop step t uses (t * rows + row0) * per + i, per the values per example, row0 and
 * rows from cdl_net_row_base (0 and nb in one process: t * numel + i as before). */
static const char *ew_rng_base(Emit *e, int n) {
    const Node *x = &e_graph(e)->n[n];
    const char *t = e_t(e);
    if (x->shape.batched) {
        int64_t per = shape_numel(&x->shape) / e_batch(e);
        const char *rows = cc_str("cdl_net_row_base(net, %s, %s)", e_nb(e), t);
        return per == 1 ? rows : cc_str("%s * %lld", rows, (long long)per);
    }
    if (strcmp(t, "0") == 0) return "0";
    return cc_str("(uint64_t)(%s) * (uint64_t)(%s)", t, e_numel(e, n));
}

/* The op's name in diagnostics: a comparison by its operator ('<'). */
static const char *ew_name(const Node *n) {
    return n->op == OP_COMPARE ? cc_str("'%s'", cmp_symbol(n->ia[0])) : op_info[n->op].name;
}

/* Output = input `i`'s shape, real; the input must be real. */
static bool ew_real_like(Graph *g, Node *n, int i) {
    if (!shape_require_real(g, n, i)) return false;
    return shape_real(n, g->n[n->in[i]].shape);
}

/* Backward helpers (g, x...): output = g's shape; the other inputs must match it. */
static bool ew_bwd_like_g(Graph *g, Node *n) {
    const Shape *gs = &g->n[n->in[0]].shape;
    for (int k = 1; k < n->nin; k++) {
        const Shape *s = &g->n[n->in[k]].shape;
        if (!shape_eq(s, gs)) {
            return shape_error(n, "%s: input %d has shape %s, the gradient %s", ew_name(n), k + 1,
                               shape_str(s), shape_str(gs));
        }
    }
    return shape_real(n, *gs);
}

/* Gradient-rule shorthands: a node made at forward node n's location. */
static int ew_g1(AD *ad, int n, Op op, int a, const Attrs *at) {
    return ad_add(ad, n, op, 1, &a, at, NULL);
}
static int ew_g2(AD *ad, int n, Op op, int a, int b, const Attrs *at) {
    int in[2] = {a, b};
    return ad_add(ad, n, op, 2, in, at, NULL);
}
static int ew_scalar(AD *ad, int n, double v) {
    Attrs at = {.f = {v}};
    Shape s = {0};
    return ad_add(ad, n, OP_CONST, 0, NULL, &at, &s);
}

/* ------------------------------------------------------------------ broadcasting plan */

/* A broadcast of up to 3 operands to an output, with unit dims dropped and adjacent
 * dims merged wherever every operand is contiguous across them (or broadcast across
 * both), so [N, C] + [C] becomes 2 dims and same-shape operands 1 dim.  rt marks the
 * merged dim that holds the runtime batch (output dim 0 of a batched output); its
 * runtime size is e_dim(out, 0) * rtmul. */
typedef struct EwBcast {
    int rank, nops;
    int64_t d[MAXDIM];
    int64_t st[3][MAXDIM];
    bool rt[MAXDIM];
    int64_t rtmul;
} EwBcast;

static void ew_bcast_plan(const Graph *g, int out, const int *ops, int nops, EwBcast *p) {
    const Shape *os = &g->n[out].shape;
    int r = os->rank;
    int64_t st[3][MAXDIM];
    for (int k = 0; k < nops; k++) {
        const Shape *s = &g->n[ops[k]].shape;
        int64_t sz = 1;
        for (int i = r - 1; i >= 0; i--) {
            int j = i - (r - s->rank);
            if (j < 0 || s->d[j] == 1) {
                st[k][i] = 0;
            } else {
                st[k][i] = sz;
            }
            if (j >= 0) sz *= s->d[j];
        }
    }
    memset(p, 0, sizeof *p);
    p->nops = nops;
    p->rtmul = 1;
    for (int i = 0; i < r; i++) {
        bool rt = i == 0 && os->batched;
        if (os->d[i] == 1 && !rt) continue;
        int q = p->rank - 1;
        bool merge = q >= 0;
        for (int k = 0; k < nops && merge; k++) merge = st[k][i] * os->d[i] == p->st[k][q];
        if (merge) {
            /* the merged dim's strides become those of the inner dim */
            if (p->rt[q]) p->rtmul *= os->d[i];
            p->d[q] *= os->d[i];
            for (int k = 0; k < nops; k++) p->st[k][q] = st[k][i];
        } else {
            q = p->rank++;
            p->d[q] = os->d[i];
            p->rt[q] = rt;
            for (int k = 0; k < nops; k++) p->st[k][q] = st[k][i];
        }
    }
}

/* Runtime size of plan dim i as a C expression. */
static const char *ew_bcast_dim(Emit *e, int out, const EwBcast *p, int i) {
    if (!p->rt[i]) return cc_str("%lld", (long long)p->d[i]);
    const char *d0 = e_dim(e, out, 0);
    if (p->rtmul == 1) return d0;
    bool plain = strspn(d0, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_*/ ") == strlen(d0);
    return cc_str(plain ? "%s*%lld" : "(%s)*%lld", d0, (long long)p->rtmul);
}

/* "(const int64_t[]){a, b, c}" */
static const char *ew_array(const char **v, int n) {
    char *s = cc_str("(const int64_t[]){");
    for (int i = 0; i < n; i++) s = cc_str("%s%s%s", s, i ? ", " : "", v[i]);
    return cc_str("%s}", s);
}

/* The dims and stride arrays of a plan: out[0] = dims, out[1 + k] = operand k's. */
static void ew_bcast_arrays(Emit *e, int out, const EwBcast *p, const char **arr) {
    const char *v[MAXDIM];
    for (int i = 0; i < p->rank; i++) v[i] = ew_bcast_dim(e, out, p, i);
    arr[0] = ew_array(v, p->rank);
    for (int k = 0; k < p->nops; k++) {
        for (int i = 0; i < p->rank; i++) v[i] = cc_str("%lld", (long long)p->st[k][i]);
        arr[1 + k] = ew_array(v, p->rank);
    }
}

/* ------------------------------------------------------------------ leaves */

/* CONST, RANDN, RAND: the shape is the hint. */
static bool shape_leaf(Graph *g, Node *n) {
    (void)g;
    if (n->shape.rank < 0 || n->shape.rank > MAXDIM) {
        return shape_error(n, "%s: rank %d; at most %d dimensions", ew_name(n), n->shape.rank, MAXDIM);
    }
    if (n->op != OP_CONST) n->dtype = DT_REAL;
    return true;
}

static void emit_const(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    if (x->dtype == DT_I32)
        e_line(e, "cdl_fill_i32(%s, %lld, %s);", e_numel(e, n), (long long)x->fa[0], e_ptr(e, n));
    else
        e_line(e, "%s(%s, %s, %s);", e_fn(e, "fill"), e_numel(e, n), e_lit(x->fa[0]), e_ptr(e, n));
}

static bool shape_batchsize(Graph *g, Node *n) {
    (void)g;
    return shape_real(n, (Shape){0});
}

static void emit_batchsize(Emit *e, const Graph *g, int n) {
    (void)g;
    e_line(e, "*%s = (%s)%s;", e_ptr(e, n), e_real(e), e_nb(e));
}

/* Train mode samples (keyed by seed, step, stream ia7, element); eval mode gives the
 * mean: 0 for randn, 0.5 for rand. */
static void emit_random(Emit *e, const Graph *g, int n) {
    bool normal = g->n[n].op == OP_RANDN;
    if (e_train(e))
        e_line(e, "%s(%s, %s, %s, %s);", e_fn(e, normal ? "randn" : "rand"), e_rng(e, n),
               ew_rng_base(e, n), e_numel(e, n), e_ptr(e, n));
    else
        e_line(e, "%s(%s, %s, %s);", e_fn(e, "fill"), e_numel(e, n), normal ? "0" : "0.5", e_ptr(e, n));
}

/* ------------------------------------------------------------------ binary ops */

static const char *ew_bin_code(const Node *x) {
    static const char *const cmp[CMP_COUNT] = {"CDL_BIN_LT", "CDL_BIN_LE", "CDL_BIN_GT", "CDL_BIN_GE", "CDL_BIN_EQ",
                                               "CDL_BIN_NE"};
    switch (x->op) {
    case OP_ADD: return "CDL_BIN_ADD";
    case OP_SUB: return "CDL_BIN_SUB";
    case OP_MUL: return "CDL_BIN_MUL";
    case OP_DIV: return "CDL_BIN_DIV";
    case OP_MAXIMUM: return "CDL_BIN_MAX";
    case OP_MINIMUM: return "CDL_BIN_MIN";
    case OP_COMPARE: break;
    default: unreachable();
    }
    if (x->ia[0] < 0 || x->ia[0] >= CMP_COUNT) die("compare: kind %lld", (long long)x->ia[0]);
    return cmp[x->ia[0]];
}

/* numpy broadcasting; the batch axis must stay axis 0 of the result. */
static bool shape_binary(Graph *g, Node *n) {
    if (!shape_require_real(g, n, 0) || !shape_require_real(g, n, 1)) return false;
    const Shape *a = &g->n[n->in[0]].shape, *b = &g->n[n->in[1]].shape;
    Shape out;
    if (!shape_broadcast(a, b, &out)) {
        return shape_error(n, "%s: shapes do not broadcast: %s and %s", ew_name(n), shape_str(a), shape_str(b));
    }
    const Shape *ops[2] = {a, b};
    for (int k = 0; k < 2; k++)
        if (ops[k]->batched && ops[k]->rank < out.rank) {
            return shape_error(n, "%s: broadcasting %s to %s would move its batch axis away from axis 0",
                               ew_name(n), shape_str(ops[k]), shape_str(&out));
        }
    if (!shape_same_batch(g, n, ew_name(n), 0, 1)) return false;
    return shape_real(n, out);
}

/* Same shape: cdl_<op>(n, a, b, y) (not comparisons: they have no such kernel).  One dim after merging (a scalar operand, or
 * operands broadcast the same way throughout): cdl_binary with element strides.
 * Otherwise cdl_binary_bc over the merged dims. */
static void emit_binary(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    int a = x->in[0], b = x->in[1];
    if (x->op != OP_COMPARE && shape_eq(&g->n[a].shape, &x->shape) && shape_eq(&g->n[b].shape, &x->shape)) {
        e_line(e, "%s(%s, %s, %s, %s);", e_fn(e, ew_name(x)), e_numel(e, n), e_ptr(e, a), e_ptr(e, b),
               e_ptr(e, n));
        return;
    }
    EwBcast p;
    int ops[2] = {a, b};
    ew_bcast_plan(g, n, ops, 2, &p);
    if (p.rank <= 1) {
        const char *len = p.rank ? ew_bcast_dim(e, n, &p, 0) : "1";
        long long sa = p.rank ? p.st[0][0] : 0, sb = p.rank ? p.st[1][0] : 0;
        if (sa <= 1 && sb <= 1) {
            e_line(e, "%s(%s, %s, %s, %lld, %s, %lld, %s);", e_fn(e, "binary"), ew_bin_code(x), len,
                   e_ptr(e, a), sa, e_ptr(e, b), sb, e_ptr(e, n));
            return;
        }
    }
    const char *arr[3];
    ew_bcast_arrays(e, n, &p, arr);
    e_line(e, "%s(%s, %d, %s, %s, %s, %s, %s, %s);", e_fn(e, "binary_bc"), ew_bin_code(x), p.rank,
           arr[0], arr[1], arr[2], e_ptr(e, a), e_ptr(e, b), e_ptr(e, n));
}

static void grad_add(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    ad_acc(ad, x.in[0], gy);
    ad_acc(ad, x.in[1], gy);
}

static void grad_sub(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    ad_acc(ad, x.in[0], gy);
    ad_acc(ad, x.in[1], ew_g1(ad, n, OP_NEG, gy, NULL));
}

static void grad_mul(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    int a = ad_x(ad, x.in[0]), b = ad_x(ad, x.in[1]);
    ad_acc(ad, x.in[0], ew_g2(ad, n, OP_MUL, gy, b, NULL));
    ad_acc(ad, x.in[1], ew_g2(ad, n, OP_MUL, gy, a, NULL));
}

/* y = a / b:  da = g / b;  db = -g a / b^2 = -(g / b) y. */
static void grad_div(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    int b = ad_x(ad, x.in[1]), y = ad_x(ad, n);
    int t = ew_g2(ad, n, OP_DIV, gy, b, NULL);
    ad_acc(ad, x.in[0], t);
    ad_acc(ad, x.in[1], ew_g1(ad, n, OP_NEG, ew_g2(ad, n, OP_MUL, t, y, NULL), NULL));
}

/* da = g where a wins (ties: a), db = g - da: the two always sum to g. */
static void grad_maxmin(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    int in[3] = {gy, ad_x(ad, x.in[0]), ad_x(ad, x.in[1])};
    Attrs at = {.i = {x.op == OP_MAXIMUM}};
    int da = ad_add(ad, n, OP_MAXMIN_BWD, 3, in, &at, NULL);
    ad_acc(ad, x.in[0], da);
    ad_acc(ad, x.in[1], ew_g2(ad, n, OP_SUB, gy, da, NULL));
}

/* (g, a, b) -> g's shape; a and b must broadcast to it. */
static bool shape_maxmin_bwd(Graph *g, Node *n) {
    const Shape *gs = &g->n[n->in[0]].shape;
    for (int k = 1; k < 3; k++) {
        Shape s;
        if (!shape_broadcast(&g->n[n->in[k]].shape, gs, &s) || !shape_eq(&s, gs)) {
            return shape_error(n, "maxmin_bwd: input %d %s does not broadcast to the gradient %s", k + 1,
                               shape_str(&g->n[n->in[k]].shape), shape_str(gs));
        }
    }
    return shape_real(n, *gs);
}

static void emit_maxmin_bwd(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    EwBcast p;
    int ops[2] = {x->in[1], x->in[2]};
    ew_bcast_plan(g, n, ops, 2, &p);
    const char *arr[3] = {"", "", ""};
    ew_bcast_arrays(e, n, &p, arr);
    e_line(e, "%s(%d, %d, %s, %s, %s, %s, %s, %s, %s);", e_fn(e, "maxmin_bwd"), (int)(x->ia[0] != 0), p.rank,
           arr[0], arr[1], arr[2], e_ptr(e, x->in[0]), e_ptr(e, x->in[1]), e_ptr(e, x->in[2]), e_ptr(e, n));
}

/* ------------------------------------------------------------------ comparisons, where */

/* COMPARE: a mask, 1 where a op b holds, else 0 (numpy broadcasting, shape_binary's
 * rule); no gradient flows through it (not OPF_DIFF).  Emitted by emit_binary. */
static const char *tape_compare(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    return cc_str("cdl_t_compare(tp, %s, %s, %s)", e_ptr(e, x->in[0]), e_ptr(e, x->in[1]), ew_bin_code(x));
}

/* WHERE (cond, a, b): the broadcast of the three shapes (numpy rules), every batched
 * operand keeping its batch axis at axis 0; cond is a real mask (nonzero: take a). */
static bool shape_where(Graph *g, Node *n) {
    static const char *const what[3] = {"cond", "a", "b"};
    Shape out = {0};
    for (int k = 0; k < 3; k++) {
        if (!shape_require_real(g, n, k)) return false;
        const Shape *s = &g->n[n->in[k]].shape;
        Shape t;
        if (!shape_broadcast(&out, s, &t)) {
            shape_error(n, "where: %s %s does not broadcast with %s", what[k], shape_str(s),
                        k == 1 ? cc_str("cond %s", shape_str(&out)) : cc_str("the shape %s of cond and a", shape_str(&out)));
            return false;
        }
        out = t;
    }
    for (int k = 0; k < 3; k++) {
        const Shape *s = &g->n[n->in[k]].shape;
        if (s->batched && s->rank < out.rank) {
            shape_error(n, "where: broadcasting %s %s to %s would move its batch axis away from axis 0", what[k],
                        shape_str(s), shape_str(&out));
            return false;
        }
    }
    if (!shape_same_batch(g, n, "where", 0, 1) || !shape_same_batch(g, n, "where", 0, 2) ||
        !shape_same_batch(g, n, "where", 1, 2))
        return false;
    n->shape = out;
    n->dtype = DT_REAL;
    return true;
}

/* cdl_where over the merged broadcast (at least one dim: a scalar result is [1]). */
static void emit_where(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    EwBcast p;
    ew_bcast_plan(g, n, x->in, 3, &p);
    const char *arr[4];
    if (p.rank == 0) {
        p.rank = 1;
        p.d[0] = 1;
    }
    ew_bcast_arrays(e, n, &p, arr);
    e_line(e, "%s(%d, %s, %s, %s, %s, %s, %s, %s, %s);", e_fn(e, "where"), p.rank, arr[0], arr[1], arr[2], arr[3],
           e_ptr(e, x->in[0]), e_ptr(e, x->in[1]), e_ptr(e, x->in[2]), e_ptr(e, n));
}

/* da = where(cond, g, 0), db = where(cond, 0, g), each summed over its operand's
 * broadcast axes by ad_acc; cond gets none (a mask). */
static void grad_where(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    int c = ad_x(ad, x.in[0]), z = ew_scalar(ad, n, 0);
    int ina[3] = {c, gy, z}, inb[3] = {c, z, gy};
    ad_acc(ad, x.in[1], ad_add(ad, n, OP_WHERE, 3, ina, NULL, NULL));
    ad_acc(ad, x.in[2], ad_add(ad, n, OP_WHERE, 3, inb, NULL, NULL));
}

/* ------------------------------------------------------------------ unary ops */

static bool shape_unary(Graph *g, Node *n) { return ew_real_like(g, n, 0); }

static bool shape_clamp(Graph *g, Node *n) {
    if (n->fa[0] > n->fa[1]) {
        return shape_error(n, "clamp: min %g is greater than max %g", n->fa[0], n->fa[1]);
    }
    return ew_real_like(g, n, 0);
}

static bool shape_dropout(Graph *g, Node *n) {
    if (!(n->fa[0] >= 0 && n->fa[0] <= 1)) {
        return shape_error(n, "dropout: p must be in [0, 1], got %g", n->fa[0]);
    }
    return ew_real_like(g, n, 0);
}

static bool shape_stop_grad(Graph *g, Node *n) { return shape_same_as_input(g, n); }

/* y = kernel(x) with the op's real attributes first: pow (p), clamp (lo, hi),
 * leaky_relu (slope), elu (alpha). */
static void emit_unary(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    const char *attrs = "";
    switch (x->op) {
    case OP_POWS: case OP_LEAKY_RELU: case OP_ELU:
        attrs = cc_str("%s, ", e_lit(x->fa[0]));
        break;
    case OP_CLAMP:
        attrs = cc_str("%s, %s, ", e_lit(x->fa[0]), e_lit(x->fa[1]));
        break;
    default: break;
    }
    const char *k = x->op == OP_POWS ? "pows" : ew_name(x);
    e_line(e, "%s(%s, %s%s, %s);", e_fn(e, k), e_numel(e, n), attrs, e_ptr(e, x->in[0]), e_ptr(e, n));
}

/* Backward helpers: kernel(n, [attrs,] g, x_or_y, dx), kernel named after the op
 * (ACT_BWD: after its activation, cdl_<name>_bwd). */
static void emit_act_bwd(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    if (x->op == OP_ACT_BWD) {
        e_line(e, "%s(%s, %s, %s, %s);", e_fn(e, cc_str("%s_bwd", op_info[x->ia[0]].name)), e_numel(e, n), e_ptr(e, x->in[0]),
               e_ptr(e, x->in[1]), e_ptr(e, n));
        return;
    }
    const char *attrs = "";
    if (x->op == OP_LEAKY_RELU_BWD || x->op == OP_ELU_BWD)
        attrs = cc_str("%s, ", e_lit(x->fa[0]));
    else if (x->op == OP_CLAMP_BWD)
        attrs = cc_str("%s, %s, ", e_lit(x->fa[0]), e_lit(x->fa[1]));
    e_line(e, "%s(%s, %s%s, %s, %s);", e_fn(e, ew_name(x)), e_numel(e, n), attrs, e_ptr(e, x->in[0]),
           e_ptr(e, x->in[1]), e_ptr(e, n));
}

static void emit_view(Emit *e, const Graph *g, int n) {
    (void)e; (void)g; (void)n;      /* the framework points the node into its input */
}

static void grad_neg(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    ad_acc(ad, x.in[0], ew_g1(ad, n, OP_NEG, gy, NULL));
}

static void grad_exp(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    ad_acc(ad, x.in[0], ew_g2(ad, n, OP_MUL, gy, ad_x(ad, n), NULL));
}

static void grad_log(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    ad_acc(ad, x.in[0], ew_g2(ad, n, OP_DIV, gy, ad_x(ad, x.in[0]), NULL));
}

/* d sqrt(x) = 0.5 / y. */
static void grad_sqrt(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    int t = ew_g2(ad, n, OP_DIV, gy, ad_x(ad, n), NULL);
    ad_acc(ad, x.in[0], ew_g2(ad, n, OP_MUL, t, ew_scalar(ad, n, 0.5), NULL));
}

/* g sign(x) = g [x > 0] - g [-x > 0]: 0 at x = 0, as torch. */
static void grad_abs(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    int xv = ad_x(ad, x.in[0]);
    int pos = ew_g2(ad, n, OP_RELU_BWD, gy, xv, NULL);
    int neg = ew_g2(ad, n, OP_RELU_BWD, gy, ew_g1(ad, n, OP_NEG, xv, NULL), NULL);
    ad_acc(ad, x.in[0], ew_g2(ad, n, OP_SUB, pos, neg, NULL));
}

static void grad_square(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    int t = ew_g2(ad, n, OP_MUL, gy, ad_x(ad, x.in[0]), NULL);
    ad_acc(ad, x.in[0], ew_g2(ad, n, OP_MUL, t, ew_scalar(ad, n, 2.0), NULL));
}

/* d x^p = p x^(p-1); nothing for p = 0. */
static void grad_pows(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    double p = x.fa[0];
    if (p == 0) return;
    if (p == 1) { ad_acc(ad, x.in[0], gy); return; }
    int xv = ad_x(ad, x.in[0]), t;
    if (p == 2) {
        t = xv;
    } else {
        Attrs at = {.f = {p - 1}};
        t = ew_g1(ad, n, OP_POWS, xv, &at);
    }
    t = ew_g2(ad, n, OP_MUL, gy, t, NULL);
    ad_acc(ad, x.in[0], ew_g2(ad, n, OP_MUL, t, ew_scalar(ad, n, p), NULL));
}

/* The activations whose backward is one helper op over (g, x) or (g, y), attrs kept. */
static void grad_act(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    Op bwd;
    bool uses_y = false;
    switch (x.op) {
    /* relu_bwd tests v > 0, and relu(x) > 0 exactly when x > 0: reading the output lets
     * relu write over its input (opt_inplace), the pre-activation being read by no one */
    case OP_RELU: bwd = OP_RELU_BWD; uses_y = true; break;
    case OP_LEAKY_RELU: bwd = OP_LEAKY_RELU_BWD; break;
    case OP_SIGMOID: bwd = OP_SIGMOID_BWD; uses_y = true; break;
    case OP_TANH: bwd = OP_TANH_BWD; uses_y = true; break;
    case OP_ELU: bwd = OP_ELU_BWD; break;
    case OP_CLAMP: bwd = OP_CLAMP_BWD; break;
    default: unreachable();
    }
    Attrs at = {.f = {x.fa[0], x.fa[1]}};
    int v = ad_x(ad, uses_y ? n : x.in[0]);
    ad_acc(ad, x.in[0], ew_g2(ad, n, bwd, gy, v, &at));
}

/* An activation declared with ACTIVATION below (and CDL_ACTIVATION in cdl.h): its
 * backward is one kernel of (g, x), cdl_<name>_bwd. */
static void grad_activation(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    Attrs at = {.i = {x.op}};
    ad_acc(ad, x.in[0], ew_g2(ad, n, OP_ACT_BWD, gy, ad_x(ad, x.in[0]), &at));
}

/* d softplus = sigmoid(x). */
static void grad_softplus(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    int s = ew_g1(ad, n, OP_SIGMOID, ad_x(ad, x.in[0]), NULL);
    ad_acc(ad, x.in[0], ew_g2(ad, n, OP_MUL, gy, s, NULL));
}

/* ------------------------------------------------------------------ gelu */

/* The static code's gelu keeps its derivative Phi(x) + x phi(x) in its aux (one real
 * an element) for GELU_BWD (g, fwd node), so the backward computes no second erf and
 * exp: in the GPT row's step, 1M elements a layer, ~0.3 ms a layer (docs/benchmarks.md).
 * The tape recomputes them from x (cdl_t_gelu): the same bits, since gelu_keep's
 * derivative is gelu_bwd's expression over the same values (kernels_ew_t.h). */
static int64_t aux_gelu(const Graph *g, const Node *n) {
    (void)g;
    return shape_numel(&n->shape);
}

static void grad_gelu(AD *ad, int n, int gy) {
    ad_acc(ad, ad_src(ad)->n[n].in[0], ew_g2(ad, n, OP_GELU_BWD, gy, ad_x(ad, n), NULL));
}

/* Is the derivative read: a GELU_BWD of node n in its graph (a loop body's gelu:
 * always, its backward is a later loop's, through LOOP_SAVED)?  Eval functions and
 * the inference export (no aux) compute gelu alone. */
static bool gelu_kept(const Graph *g, int n) {
    if (g->parent) return true;
    for (int i = n + 1; i < g->len; i++)
        if (g->n[i].op == OP_GELU_BWD && g->n[i].in[1] == n && !(g->n[i].flags & NF_DEAD)) return true;
    return false;
}

static void emit_gelu(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    if (plan_aux_bytes(g, x, 1) == 0 || !gelu_kept(g, n)) {
        emit_unary(e, g, n);
        return;
    }
    e_line(e, "%s(%s, %s, %s, %s);", e_fn(e, "gelu_keep"), e_numel(e, n), e_ptr(e, x->in[0]), e_ptr(e, n),
           e_aux(e, n));
}

static bool shape_gelu_bwd(Graph *g, Node *n) { return ew_real_like(g, n, 0); }

static void emit_gelu_bwd(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    e_line(e, "%s(%s, %s, %s, %s);", e_fn(e, "gelu_bwd_kept"), e_numel(e, n), e_ptr(e, x->in[0]),
           e_aux_as(e, x->in[1], cc_str("const %s", e_real(e))), e_ptr(e, n));
}

/* ------------------------------------------------------------------ dropout */

/* Inverted dropout with the node's stream (ia7), keeping the mask (one byte an
 * element) in the node's aux; DROPOUT_BWD (g, forward node) applies that mask, so the
 * random words are drawn once a step.  Only train-mode functions have dropout: the
 * eval-mode ones replace it by its input before autodiff (pipeline.c, opt.c). */
static void emit_dropout(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    if (!e_train(e)) unreachable();
    if (x->op == OP_DROPOUT)
        e_line(e, "%s(%s, %s, %s, %s, %s, %s, %s);", e_fn(e, "dropout_keep"), e_rng(e, n), ew_rng_base(e, n),
               e_numel(e, n), e_lit(x->fa[0]), e_ptr(e, x->in[0]), e_ptr(e, n), e_aux_as(e, n, "uint8_t"));
    else
        e_line(e, "%s(%s, %s, %s, %s, %s);", e_fn(e, "dropout_keep_bwd"), e_numel(e, n), e_lit(x->fa[0]),
               e_aux_as(e, x->in[1], "const uint8_t"), e_ptr(e, x->in[0]), e_ptr(e, n));
}

/* Bytes of mask, in reals (4 bytes at least). */
static int64_t aux_dropout(const Graph *g, const Node *n) {
    (void)g;
    return (shape_numel(&n->shape) + 3) / 4;
}

static void grad_dropout(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    Attrs at = {.f = {x.fa[0]}};
    at.i[7] = x.ia[7];
    ad_acc(ad, x.in[0], ew_g2(ad, n, OP_DROPOUT_BWD, gy, ad_x(ad, n), &at));
}

static bool shape_dropout_bwd(Graph *g, Node *n) { return ew_real_like(g, n, 0); }

/* ------------------------------------------------------------------ identity */

/* The eval-mode functions' dropout (pipeline.c): a view of its input, so eval mode
 * spends no code and no buffer on it; its gradient passes through. */
static void grad_identity(AD *ad, int n, int gy) { ad_acc(ad, ad_src(ad)->n[n].in[0], gy); }

/* The tape never records one (its graph keeps dropout); as a call: the input itself. */
static const char *tape_identity(Emit *e, const Graph *g, int n) { return e_ptr(e, g->n[n].in[0]); }

/* ------------------------------------------------------------------ tape calls */

static const char *tape_const(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    if (x->dtype == DT_I32) return cc_str("cdl_t_full_i32(tp, %lld, %s)", (long long)x->fa[0], e_dims_arg(e, n));
    return cc_str("cdl_t_full(tp, %s, %s)", e_lit(x->fa[0]), e_dims_arg(e, n));
}

static const char *tape_batchsize(Emit *e, const Graph *g, int n) {
    (void)g, (void)n;
    return cc_str("cdl_t_batch_size(tp, %s)", e_nb(e));
}

/* The stream id and the loop step key the numbers, as in the static code. */
static const char *tape_random(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    return cc_str("cdl_t_%s(tp, %lld, %s, %s)", ew_name(x), (long long)x->ia[7], e_t(e), e_dims_arg(e, n));
}

/* cdl_t_<op>(tp, x, attributes...): pow (p), clamp (lo, hi), leaky_relu, elu. */
static const char *tape_unary_attr(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    const char *attrs = x->op == OP_CLAMP ? cc_str("%s, %s", e_lit(x->fa[0]), e_lit(x->fa[1])) : e_lit(x->fa[0]);
    return cc_str("cdl_t_%s(tp, %s, %s)", ew_name(x), e_ptr(e, x->in[0]), attrs);
}

static const char *tape_dropout(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    return cc_str("cdl_t_dropout(tp, %s, %s, %lld, %s)", e_ptr(e, x->in[0]), e_lit(x->fa[0]), (long long)x->ia[7], e_t(e));
}

/* ------------------------------------------------------------------ table */

/* In place (OpRule.inplace): unary y[i] = f(x[i]) kernels (kernels_ew_t.h; pow 1 and
 * dropout p = 0 copy with a memmove that skips x == y) over x; binary ops over either
 * operand (a same-shape operand has stride 1 and the broadcast walk, binary_bc, visits
 * it row by row with y); the backward helpers dx[i] = f(g[i], x[i]) over g or x
 * (dropout's and maxmin's over g: they read other storage). */
#define UNARY INPLACE_IN(0)
#define BOTH (INPLACE_IN(0) | INPLACE_IN(1))
/* An activation y = f(x) with kernels cdl_<name>, cdl_<name>_bwd of (g, x) (cdl.h,
 * CDL_ACTIVATION) and tape call cdl_t_<name>(tp, x): one row here, with OPF_FN in its
 * ops.def row to make it a built-in function. */
#define ACTIVATION(op) {op, shape_unary, grad_activation, emit_unary, NULL, .tape = e_tape_plain, .inplace = UNARY}

const OpRule ops_ew_rules[] = {
    {OP_CONST, shape_leaf, NULL, emit_const, NULL, .tape = tape_const},
    {OP_BATCHSIZE, shape_batchsize, NULL, emit_batchsize, NULL, .tape = tape_batchsize},
    {OP_RANDN, shape_leaf, NULL, emit_random, NULL, .tape = tape_random},
    {OP_RAND, shape_leaf, NULL, emit_random, NULL, .tape = tape_random},
    {OP_ADD, shape_binary, grad_add, emit_binary, NULL, .tape = e_tape_plain, .inplace = BOTH},
    {OP_SUB, shape_binary, grad_sub, emit_binary, NULL, .tape = e_tape_plain, .inplace = BOTH},
    {OP_MUL, shape_binary, grad_mul, emit_binary, NULL, .tape = e_tape_plain, .inplace = BOTH},
    {OP_DIV, shape_binary, grad_div, emit_binary, NULL, .tape = e_tape_plain, .inplace = BOTH},
    {OP_MAXIMUM, shape_binary, grad_maxmin, emit_binary, NULL, .tape = e_tape_plain, .inplace = BOTH},
    {OP_MINIMUM, shape_binary, grad_maxmin, emit_binary, NULL, .tape = e_tape_plain, .inplace = BOTH},
    {OP_COMPARE, shape_binary, NULL, emit_binary, NULL, .tape = tape_compare, .inplace = BOTH},
    {OP_WHERE, shape_where, grad_where, emit_where, NULL, .tape = e_tape_plain},
    {OP_NEG, shape_unary, grad_neg, emit_unary, NULL, .tape = e_tape_plain, .inplace = UNARY},
    {OP_EXP, shape_unary, grad_exp, emit_unary, NULL, .tape = e_tape_plain, .inplace = UNARY},
    {OP_LOG, shape_unary, grad_log, emit_unary, NULL, .tape = e_tape_plain, .inplace = UNARY},
    {OP_SQRT, shape_unary, grad_sqrt, emit_unary, NULL, .tape = e_tape_plain, .inplace = UNARY},
    {OP_ABS, shape_unary, grad_abs, emit_unary, NULL, .tape = e_tape_plain, .inplace = UNARY},
    {OP_SQUARE, shape_unary, grad_square, emit_unary, NULL, .tape = e_tape_plain, .inplace = UNARY},
    {OP_POWS, shape_unary, grad_pows, emit_unary, NULL, .tape = tape_unary_attr, .inplace = UNARY},
    {OP_CLAMP, shape_clamp, grad_act, emit_unary, NULL, .tape = tape_unary_attr, .inplace = UNARY},
    {OP_RELU, shape_unary, grad_act, emit_unary, NULL, .tape = e_tape_plain, .inplace = UNARY},
    {OP_LEAKY_RELU, shape_unary, grad_act, emit_unary, NULL, .tape = tape_unary_attr, .inplace = UNARY},
    {OP_SIGMOID, shape_unary, grad_act, emit_unary, NULL, .tape = e_tape_plain, .inplace = UNARY},
    {OP_TANH, shape_unary, grad_act, emit_unary, NULL, .tape = e_tape_plain, .inplace = UNARY},
    {OP_SOFTPLUS, shape_unary, grad_softplus, emit_unary, NULL, .tape = e_tape_plain, .inplace = UNARY},
    {OP_ELU, shape_unary, grad_act, emit_unary, NULL, .tape = tape_unary_attr, .inplace = UNARY},
    {OP_DROPOUT, shape_dropout, grad_dropout, emit_dropout, aux_dropout, .tape = tape_dropout, .inplace = UNARY},
    {OP_STOP_GRAD, shape_stop_grad, NULL, emit_view, NULL, .tape = e_tape_plain},
    {OP_IDENTITY, shape_stop_grad, grad_identity, emit_view, NULL, .tape = tape_identity},
    {OP_RELU_BWD, ew_bwd_like_g, NULL, emit_act_bwd, NULL, .inplace = BOTH},
    {OP_LEAKY_RELU_BWD, ew_bwd_like_g, NULL, emit_act_bwd, NULL, .inplace = BOTH},
    {OP_SIGMOID_BWD, ew_bwd_like_g, NULL, emit_act_bwd, NULL, .inplace = BOTH},
    {OP_TANH_BWD, ew_bwd_like_g, NULL, emit_act_bwd, NULL, .inplace = BOTH},
    {OP_ELU_BWD, ew_bwd_like_g, NULL, emit_act_bwd, NULL, .inplace = BOTH},
    {OP_DROPOUT_BWD, shape_dropout_bwd, NULL, emit_dropout, NULL, .inplace = UNARY},
    {OP_CLAMP_BWD, ew_bwd_like_g, NULL, emit_act_bwd, NULL, .inplace = BOTH},
    {OP_MAXMIN_BWD, shape_maxmin_bwd, NULL, emit_maxmin_bwd, NULL, .inplace = UNARY},
    {OP_ACT_BWD, ew_bwd_like_g, NULL, emit_act_bwd, NULL, .inplace = BOTH, .tape = NULL},
    /* activations (see ACTIVATION) */
    {OP_GELU, shape_unary, grad_gelu, emit_gelu, aux_gelu, .tape = e_tape_plain, .inplace = UNARY},
    {OP_GELU_BWD, shape_gelu_bwd, NULL, emit_gelu_bwd, NULL, .inplace = UNARY},
    ACTIVATION(OP_SILU),
    ACTIVATION(OP_MISH),
    ACTIVATION(OP_SIN),
    ACTIVATION(OP_COS),
    ACTIVATION(OP_ERF),
    ACTIVATION(OP_LOG1P),
    ACTIVATION(OP_GELU_TANH),
};
const int ops_ew_count = sizeof ops_ew_rules / sizeof ops_ew_rules[0];
