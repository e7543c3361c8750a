/* ops_norm.c -- layer, RMS and group normalisation (instance norm is group norm with
 * one channel a group).  The three share one block: they differ in the axis they
 * normalise, which affine inputs they take and their kernels (runtime/kernels_norm_t.h,
 * cdl.h block NORM; tape: runtime/tape_norm.c).
 *
 *   LAYER_NORM  (x [..., n], weight [n]?, bias [n]?)   rows = numel / n, aux [mean | rstd] a row
 *   RMS_NORM    (x [..., n], weight [n]?)              aux [rstd] a row
 *   GROUP_NORM  (x [N, C, ...], weight [C]?, bias [C]?), ia1 groups; aux [mean | rstd] an (image, group)
 *   *_BWD       (g, x, norm node, weight?) -> packed [dx | dweight | dbias] (the parts the forward has)
 *
 * ia0 says which affine inputs follow x (NORM_W, NORM_B); fa0 is eps, < 0 for the
 * machine epsilon of the build's precision (torch.nn.RMSNorm's eps=None).
 */
#include "cdlc.h"

#include <float.h>

enum { NORM_W = 1, NORM_B = 2 };

static const Node *in_node(const Graph *g, const Node *n, int k) { return &g->n[n->in[k]]; }

static Op norm_bwd_op(Op op) {
    return op == OP_LAYER_NORM ? OP_LAYER_NORM_BWD : op == OP_RMS_NORM ? OP_RMS_NORM_BWD : OP_GROUP_NORM_BWD;
}

static Op norm_fwd_op(Op op) {
    return op == OP_LAYER_NORM_BWD ? OP_LAYER_NORM : op == OP_RMS_NORM_BWD ? OP_RMS_NORM : OP_GROUP_NORM;
}

/* The size weight and bias have: the last axis, or the channels (axis 1) of group norm. */
static int64_t norm_width(Op op, const Shape *x) { return op == OP_GROUP_NORM ? x->d[1] : x->d[x->rank - 1]; }

/* Affine inputs present: 0, 1 or 2. */
static int norm_naffine(const Node *n) { return (n->ia[0] & NORM_W ? 1 : 0) + (n->ia[0] & NORM_B ? 1 : 0); }

/* The kernels' normalised groups at the compiled batch: rows, or (image, group) pairs. */
static int64_t norm_groups(Op op, const Shape *x, int64_t groups) {
    return op == OP_GROUP_NORM ? x->d[0] * groups : shape_numel(x) / x->d[x->rank - 1];
}

static bool shape_norm(Graph *g, Node *n) {
    const char *name = op_info[n->op].name;
    if (n->nin != 1 + norm_naffine(n) || (n->op == OP_RMS_NORM && (n->ia[0] & NORM_B)))
        die("%s: %d inputs for affine mask %lld", name, n->nin, (long long)n->ia[0]);
    for (int k = 0; k < n->nin; k++)
        if (!shape_require_real(g, n, k)) return false;
    const Shape *x = &in_node(g, n, 0)->shape;
    int lo = n->op == OP_GROUP_NORM ? 2 : 1;
    if (x->rank < lo) {
        return shape_error(n, "%s: expected %s, got %s", name, lo == 2 ? "an input [N, C, ...]" : "an input with an axis",
                           shape_str(x));
    }
    int64_t w = norm_width(n->op, x);
    for (int k = 1; k < n->nin; k++) {
        const Shape *s = &in_node(g, n, k)->shape;
        if (s->rank != 1 || s->d[0] != w) {
            return shape_error(n, "%s: %s must be [%lld] for input %s, got %s", name, k == 1 && (n->ia[0] & NORM_W) ? "weight" : "bias",
                               (long long)w, shape_str(x), shape_str(s));
        }
    }
    if (n->op == OP_GROUP_NORM && (n->ia[1] <= 0 || x->d[1] % n->ia[1] != 0)) {
        return shape_error(n, "%s: %lld groups do not divide the %lld channels of %s", name, (long long)n->ia[1],
                           (long long)x->d[1], shape_str(x));
    }
    if (n->fa[0] == 0 || n->fa[0] != n->fa[0]) {
        return shape_error(n, "%s: eps must be positive, got %g", name, n->fa[0]);
    }
    return shape_real(n, *x);
}

/* aux: mean and rstd (RMS: rstd) of every normalised group. */
static int64_t aux_norm(const Graph *g, const Node *n) {
    int64_t k = norm_groups(n->op, &in_node(g, n, 0)->shape, n->ia[1]);
    return n->op == OP_RMS_NORM ? k : 2 * k;
}

/* The backward kernel writes dx, dweight and dbias at once into one packed buffer;
 * views unpack it, and the gradients are added in the order x, weight, bias (the
 * tape's). */
static void grad_norm(AD *ad, int n, int gy) {
    const Node y = ad_src(ad)->n[n];
    const Shape xs = ad_src(ad)->n[y.in[0]].shape;
    int in[4] = {gy, ad_x(ad, y.in[0]), ad_x(ad, n)}, nin = 3;
    if (y.ia[0] & NORM_W) in[nin++] = ad_x(ad, y.in[1]);
    Attrs at = {.i = {y.ia[0], y.ia[1]}, .f = {y.fa[0]}};
    int bwd = ad_add(ad, n, norm_bwd_op(y.op), nin, in, &at, NULL);
    int64_t off = shape_numel(&xs);
    Shape ws = {.rank = 1, .d = {norm_width(y.op, &xs)}};
    Attrs a0 = {.i = {0}};
    ad_acc(ad, y.in[0], ad_add(ad, n, OP_VIEW, 1, &bwd, &a0, &xs));
    for (int k = 1; k < y.nin; k++, off += ws.d[0]) {
        Attrs ak = {.i = {off}};
        ad_acc(ad, y.in[k], ad_add(ad, n, OP_VIEW, 1, &bwd, &ak, &ws));
    }
}

/* (g, x, norm node, weight?) -> [numel x + width * affine inputs], not batched. */
static bool shape_norm_bwd(Graph *g, Node *n) {
    const Node *f = in_node(g, n, 2);
    if (f->op != norm_fwd_op(n->op) && f->op != OP_LOOP_SAVED) die("%s: input 3 must be the norm node", op_info[n->op].name);
    const Shape *gs = &in_node(g, n, 0)->shape, *x = &in_node(g, n, 1)->shape;
    if (!shape_eq(gs, x) || !shape_eq(gs, &f->shape)) die("%s: gradient %s for input %s", op_info[n->op].name, shape_str(gs), shape_str(x));
    return shape_real(n, (Shape){.rank = 1, .d = {shape_numel(x) + norm_width(norm_fwd_op(n->op), x) * norm_naffine(n)}});
}

/* eps as a C literal: the machine epsilon of the build's reals when fa0 < 0. */
static const char *norm_eps(const Emit *e, double eps) {
    return e_lit(eps > 0 ? eps : e->real_size == 8 ? DBL_EPSILON : FLT_EPSILON);
}

/* The leading kernel arguments: "rows, n" (layer, RMS) or "N, C, hw, groups" (group). */
static const char *norm_geom(Emit *e, Op op, int x, int64_t groups) {
    const Shape *s = &e_graph(e)->n[x].shape;
    if (op != OP_GROUP_NORM) return cc_str("%s, %lld", e_prod(e, x, 0, s->rank - 1), (long long)s->d[s->rank - 1]);
    return cc_str("%s, %lld, %s, %lld", e_rows(e, x), (long long)s->d[1], e_prod(e, x, 2, s->rank), (long long)groups);
}

static void emit_norm(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    int k = 1;
    const char *w = y->ia[0] & NORM_W ? e_ptr(e, y->in[k++]) : "NULL", *b = y->ia[0] & NORM_B ? e_ptr(e, y->in[k]) : "NULL";
    const char *affine = y->op == OP_RMS_NORM ? w : cc_str("%s, %s", w, b);
    e_line(e, "%s(%s, %s, %s, %s, %s, %s);", e_fn(e, op_info[y->op].name), norm_geom(e, y->op, y->in[0], y->ia[1]),
           norm_eps(e, y->fa[0]), e_ptr(e, y->in[0]), affine, e_ptr(e, n), e_aux(e, n));
}

static void emit_norm_bwd(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    Op op = norm_fwd_op(y->op);
    const Shape *x = &in_node(g, y, 1)->shape;
    int64_t off = shape_numel(x), w = norm_width(op, x);
    const char *dw = "NULL", *db = "NULL";
    if (y->ia[0] & NORM_W) dw = cc_str("%s + %lld", e_ptr(e, n), (long long)off), off += w;
    if (y->ia[0] & NORM_B) db = cc_str("%s + %lld", e_ptr(e, n), (long long)off);
    const char *outs = op == OP_RMS_NORM ? dw : cc_str("%s, %s", dw, db);
    e_line(e, "%s(%s, %s, %s, %s, %s, %s, %s);", e_fn(e, op_info[y->op].name), norm_geom(e, op, y->in[1], y->ia[1]),
           e_ptr(e, y->in[0]), e_ptr(e, y->in[1]), y->ia[0] & NORM_W ? e_ptr(e, y->in[3]) : "NULL", e_aux(e, y->in[2]),
           e_ptr(e, n), outs);
}

static const char *tape_norm(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    int k = 1;
    const char *w = y->ia[0] & NORM_W ? e_ptr(e, y->in[k++]) : "NULL", *b = y->ia[0] & NORM_B ? e_ptr(e, y->in[k]) : "NULL";
    const char *eps = norm_eps(e, y->fa[0]), *x = e_ptr(e, y->in[0]);
    if (y->op == OP_LAYER_NORM) return cc_str("cdl_t_layer_norm(tp, %s, %s, %s, %s)", x, w, b, eps);
    if (y->op == OP_RMS_NORM) return cc_str("cdl_t_rms_norm(tp, %s, %s, %s)", x, w, eps);
    return cc_str("cdl_t_group_norm(tp, %s, %s, %s, %lld, %s)", x, w, b, (long long)y->ia[1], eps);
}

/* The tape keeps the statistics; its backward takes dx, dweight and dbias temporaries. */
static void tape_scratch_norm(const Graph *g, const Node *n, int real_size, int64_t *keep, int64_t *tmp) {
    const Shape *x = &in_node(g, n, 0)->shape;
    *keep = aux_norm(g, n) * real_size;
    *tmp = (shape_numel(x) + 2 * norm_width(n->op, x)) * real_size;
}

#define NORM_RULES(op)                                                                                   \
    {op, shape_norm, grad_norm, emit_norm, aux_norm, .tape = tape_norm, .tape_scratch = tape_scratch_norm}, \
    {op##_BWD, shape_norm_bwd, NULL, emit_norm_bwd, NULL, .tape = NULL}

const OpRule ops_norm_rules[] = {
    NORM_RULES(OP_LAYER_NORM),
    NORM_RULES(OP_RMS_NORM),
    NORM_RULES(OP_GROUP_NORM),
};
const int ops_norm_count = sizeof ops_norm_rules / sizeof ops_norm_rules[0];
