/* ops_loss.c -- losses: cross_entropy (fused log-softmax, label smoothing), nll, mse,
 * l1, huber, bce, bce_with_logits, kl_normal, and their backward helpers.  ia0 =
 * reduction: RED_MEAN / RED_SUM give a real scalar (rank 0, not batched); RED_NONE
 * the unreduced values: the labels' shape for the class losses (one a row), the
 * operands' shape for the pair losses (one an element), [dim 0] for kl_normal.
 * Mean is over all elements for the pair losses (mse, l1, huber, bce, bce_with_logits,
 * as PyTorch), over rows for cross_entropy / nll (rows = number of labels) and over
 * rows = dim 0 for kl_normal (the batch; a vector or scalar is one row).
 * Class losses take an optional row weight (real, the labels' shape: row r's loss is
 * weighted by it) and, when ia4 = 1, a last input cw: PyTorch's per-class weight [C]
 * (row r's loss times cw[label]; with label smoothing each class's term times its
 * weight, as torch).  Mean divides by the sum of the rows' weights.  ia2 = 1 ignores
 * the rows labelled ia3 (ignore_index: no loss, no gradient, not counted).  The row
 * weight's gradient (CLASS_WEIGHT_BWD) recomputes the loss per row without it; the
 * class weight has none (the elaborator requires it to need none, as torch's).
 * The plain forms (no weight, no ignore_index, mean or sum) call the plain kernels,
 * the others the _ex kernels.
 * Reductions divide by the RUNTIME count.  Kernels: runtime/kernels_loss_t.h (cdl.h block LOSS).
 *
 * Backward nodes: CROSS_ENTROPY_BWD(g, labels, fwd, rw?, cw?) [logits' shape, given as
 * the hint]; NLL_BWD(g, labels, rw?, cw?) [labels' shape + ia1 classes]; LOSS_BWD /
 * LOSS_BWD_B (g, a, b) -> d/da, d/db with ia1 = the loss's OP_ id, ia0 reduction, fa0
 * delta.  g is a scalar, or the loss's shape under RED_NONE. */
#include "cdlc.h"

#include <stdlib.h>
#include <string.h>

_Static_assert(RED_MEAN == 0 && RED_SUM == 1 && RED_NONE == 2, "reduction codes match cdl.h CDL_RED_*");

/* ------------------------------------------------------------------ helpers */

static const char *loss_name(const Node *n) { return op_info[n->op].name; }

static const char *loss_red(const Node *n) {
    return n->ia[0] == RED_SUM ? "CDL_RED_SUM" : n->ia[0] == RED_NONE ? "CDL_RED_NONE" : "CDL_RED_MEAN";
}

static bool loss_check_red(Node *n) {
    if (n->ia[0] == RED_MEAN || n->ia[0] == RED_SUM || n->ia[0] == RED_NONE) return true;
    return shape_error(n, "%s: reduction must be mean, sum or none", loss_name(n));
}

/* The result: a scalar, or `none` (the unreduced values' shape) under RED_NONE. */
static void loss_result(Node *n, const Shape *none) {
    n->shape = n->ia[0] == RED_NONE ? *none : (Shape){0};
    n->dtype = DT_REAL;
}

/* A class loss's (or its backward's) row weight and class weight inputs, -1 when
 * absent; wk: the slot of the first optional weight. */
static int class_rw(const Node *n, int wk) { return n->nin - (int)n->ia[4] > wk ? n->in[wk] : -1; }
static int class_cw(const Node *n) { return n->ia[4] ? n->in[n->nin - 1] : -1; }

/* A class loss (or its backward) that needs the _ex kernels: a weight input, an
 * ignore_index or no reduction. */
static bool class_ex(const Node *n, int wk) { return n->nin > wk || n->ia[2] || n->ia[0] == RED_NONE; }

static const char *ptr_or_null(Emit *e, int k) { return k >= 0 ? e_ptr(e, k) : "NULL"; }

/* The _ex kernels' (rw, cw, ignore_index) arguments. */
static const char *class_ex_args(Emit *e, const Node *n, int wk) {
    return cc_str("%s, %s, %s", ptr_or_null(e, class_rw(n, wk)), ptr_or_null(e, class_cw(n)),
                  n->ia[2] ? cc_str("%lldLL", (long long)n->ia[3]) : "CDL_NO_IGNORE");
}

/* kl_normal's [rows, cols] view of its operands: rows = dim 0 for rank >= 2, else one
 * row (as the tape's kl_normal). */
static bool kl_by_rows(const Shape *s) { return s->rank >= 2; }

/* ------------------------------------------------------------------ class losses */

/* (scores [..., C] real, labels [...] i32): the labels' shape is the scores' shape
 * without the last axis. */
static bool loss_check_class(Graph *g, Node *n) {
    if (n->nin < 2 + (int)n->ia[4] || n->nin > 3 + (int)n->ia[4]) {
        shape_error(n, "%s: takes scores, labels and optional row and class weights, got %d inputs", loss_name(n),
                    n->nin);
        return false;
    }
    if (!loss_check_red(n) || !shape_require_real(g, n, 0)) return false;
    const Node *x = &g->n[n->in[0]], *y = &g->n[n->in[1]];
    if (x->shape.rank < 1) {
        return shape_error(n, "%s: scores must have a class axis, got a scalar", loss_name(n));
    }
    if (y->dtype != DT_I32) {
        return shape_error(n, "%s: labels must be i32, got f32 %s", loss_name(n), shape_str(&y->shape));
    }
    bool ok = y->shape.rank == x->shape.rank - 1;
    for (int i = 0; ok && i < y->shape.rank; i++) ok = y->shape.d[i] == x->shape.d[i];
    if (!ok) {
        return shape_error(n, "%s: labels %s do not match scores %s (want the scores' shape without the class axis)",
                           loss_name(n), shape_str(&y->shape), shape_str(&x->shape));
    }
    if (y->shape.rank > 0 && !shape_same_batch(g, n, loss_name(n), 0, 1)) return false;
    if (n->ia[4]) {
        const Node *cw = &g->n[class_cw(n)];
        int64_t C = x->shape.d[x->shape.rank - 1];
        if (!shape_require_real(g, n, n->nin - 1)) return false;
        if (cw->shape.rank != 1 || cw->shape.d[0] != C || cw->shape.batched) {
            shape_error(n, "%s: weight %s%s must be [%lld], one per class (PyTorch's weight=; row_weight= weights rows)",
                        loss_name(n), shape_str(&cw->shape), cw->shape.batched ? " (batched)" : "", (long long)C);
            return false;
        }
    }
    if (class_rw(n, 2) >= 0) {
        const Node *w = &g->n[n->in[2]];
        if (!shape_require_real(g, n, 2)) return false;
        if (!shape_eq(&w->shape, &y->shape)) {
            shape_error(n, "%s: row_weight %s must have the labels' shape %s (one weight a row; weight= is "
                        "PyTorch's per-class weight)", loss_name(n), shape_str(&w->shape), shape_str(&y->shape));
            return false;
        }
        if (!shape_same_batch(g, n, loss_name(n), 1, 2)) return false;
        if (w->shape.batched != y->shape.batched) {
            shape_error(n, "%s: row_weight %s and labels %s must both be batched or both not", loss_name(n),
                        shape_str(&w->shape), shape_str(&y->shape));
            return false;
        }
    }
    loss_result(n, &y->shape);
    return true;
}

/* The forward inputs a class loss's backward node takes after its leading ones:
 * (rw?, cw?) into in[k...]; returns the new input count. */
static int class_weights_in(AD *ad, const Node *x, int *in, int k) {
    if (class_rw(x, 2) >= 0) in[k++] = ad_x(ad, x->in[2]);
    if (x->ia[4]) in[k++] = ad_x(ad, class_cw(x));
    return k;
}

/* d loss / d row weight of a weighted class loss n: CLASS_WEIGHT_BWD(g, labels, rw, u,
 * n, cw?) with u = the same loss without the row weight and unreduced (recomputed: one
 * more softmax); ia1 = classes.  The class weight gets no gradient. */
static void grad_class_weight(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    if (class_rw(&x, 2) < 0) return;
    const Shape *xs = &ad_src(ad)->n[x.in[0]].shape;
    int in2[3] = {ad_x(ad, x.in[0]), ad_x(ad, x.in[1]), x.ia[4] ? ad_x(ad, class_cw(&x)) : -1};
    Attrs au = {.i = {RED_NONE, 0, x.ia[2], x.ia[3], x.ia[4]}, .f = {x.fa[0]}};
    int u = ad_add(ad, n, x.op, 2 + (int)x.ia[4], in2, &au, NULL);
    int in[6] = {gy, in2[1], ad_x(ad, x.in[2]), u, ad_x(ad, n), in2[2]};
    Attrs at = {.i = {x.ia[0], xs->d[xs->rank - 1], x.ia[2], x.ia[3], x.ia[4]}};
    ad_acc(ad, x.in[2], ad_add(ad, n, OP_CLASS_WEIGHT_BWD, 5 + (int)x.ia[4], in, &at, NULL));
}

/* (g, labels, rw, u, fwd, cw?) -> the row weight's shape. */
static bool shape_class_weight_bwd(Graph *g, Node *n) {
    n->shape = g->n[n->in[2]].shape;
    n->dtype = DT_REAL;
    return true;
}

static void emit_class_weight_bwd(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    e_line(e, "%s(%s, %lld, %s, %s, %s, %s, %s, %s, %s, %s, %s);", e_fn(e, "class_weight_bwd"), e_numel(e, x->in[1]),
           (long long)x->ia[1], e_ptr(e, x->in[0]), e_ptr(e, x->in[1]), e_ptr(e, x->in[2]),
           ptr_or_null(e, class_cw(x)), x->ia[2] ? cc_str("%lldLL", (long long)x->ia[3]) : "CDL_NO_IGNORE",
           e_ptr(e, x->in[3]), e_ptr(e, x->in[4]), loss_red(x), e_ptr(e, n));
}

static bool shape_cross_entropy(Graph *g, Node *n) {
    if (!loss_check_class(g, n)) return false;
    if (!(n->fa[0] >= 0 && n->fa[0] <= 1)) {
        return shape_error(n, "cross_entropy: label_smoothing must be in [0, 1], got %g", n->fa[0]);
    }
    return true;
}

static int64_t aux_cross_entropy(const Graph *g, const Node *n) {
    return shape_numel(&g->n[n->in[0]].shape);
}

static int64_t loss_classes(const Graph *g, int scores) {
    const Shape *s = &g->n[scores].shape;
    return s->d[s->rank - 1];
}

/* cdl_cross_entropy(rows, C, logits, labels, smoothing, red, probs = aux, loss);
 * cdl_cross_entropy_ex(rows, C, logits, labels, rw, ignore_index, ...). */
static void emit_cross_entropy(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    if (class_ex(x, 2)) {
        e_line(e, "%s(%s, %lld, %s, %s, %s, %s, %s, %s, %s);", e_fn(e, "cross_entropy_ex"), e_numel(e, x->in[1]),
               (long long)loss_classes(g, x->in[0]), e_ptr(e, x->in[0]), e_ptr(e, x->in[1]), class_ex_args(e, x, 2),
               e_lit(x->fa[0]), loss_red(x), e_aux(e, n), e_ptr(e, n));
        return;
    }
    e_line(e, "%s(%s, %lld, %s, %s, %s, %s, %s, %s);", e_fn(e, "cross_entropy"), e_numel(e, x->in[1]),
           (long long)loss_classes(g, x->in[0]), e_ptr(e, x->in[0]), e_ptr(e, x->in[1]), e_lit(x->fa[0]),
           loss_red(x), e_aux(e, n), e_ptr(e, n));
}

static void grad_cross_entropy(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    Shape hint = ad_src(ad)->n[x.in[0]].shape;
    int in[5] = {gy, ad_x(ad, x.in[1]), ad_x(ad, n)};
    int nin = class_weights_in(ad, &x, in, 3);
    Attrs at = {.i = {x.ia[0], 0, x.ia[2], x.ia[3], x.ia[4]}, .f = {x.fa[0]}};
    ad_acc(ad, x.in[0], ad_add(ad, n, OP_CROSS_ENTROPY_BWD, nin, in, &at, &hint));
    grad_class_weight(ad, n, gy);
}

/* (g, labels, fwd, rw?, cw?) -> the logits' shape.  The hint carries it (the forward
 * node may be a saved value inside a loop body); without one, it is read off the
 * forward node. */
static bool shape_cross_entropy_bwd(Graph *g, Node *n) {
    if (n->nin < 3 + (int)n->ia[4] || n->nin > 4 + (int)n->ia[4]) {
        shape_error(n, "cross_entropy_bwd: takes g, labels, the forward node and optional weights");
        return false;
    }
    const Node *f = &g->n[n->in[2]];
    if (n->shape.rank == 0) {
        if (f->op != OP_CROSS_ENTROPY) {
            return shape_error(n, "cross_entropy_bwd: input 3 must be the forward cross_entropy");
        }
        n->shape = g->n[f->in[0]].shape;
    }
    const Shape *y = &g->n[n->in[1]].shape;
    bool ok = y->rank == n->shape.rank - 1;
    for (int i = 0; ok && i < y->rank; i++) ok = y->d[i] == n->shape.d[i];
    if (!ok) {
        return shape_error(n, "cross_entropy_bwd: labels %s do not match logits %s", shape_str(y), shape_str(&n->shape));
    }
    n->dtype = DT_REAL;
    return true;
}

/* Reads the forward node's saved probabilities (its aux). */
static void emit_cross_entropy_bwd(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    if (class_ex(x, 3)) {
        e_line(e, "%s(%s, %lld, %s, %s, %s, %s, %s, %s, %s);", e_fn(e, "cross_entropy_ex_bwd"), e_numel(e, x->in[1]),
               (long long)x->shape.d[x->shape.rank - 1], e_ptr(e, x->in[0]), e_ptr(e, x->in[1]),
               class_ex_args(e, x, 3), e_aux(e, x->in[2]), e_lit(x->fa[0]), loss_red(x), e_ptr(e, n));
        return;
    }
    e_line(e, "%s(%s, %lld, %s, %s, %s, %s, %s, %s);", e_fn(e, "cross_entropy_bwd"), e_numel(e, x->in[1]),
           (long long)x->shape.d[x->shape.rank - 1], e_ptr(e, x->in[0]), e_ptr(e, x->in[1]), e_aux(e, x->in[2]),
           e_lit(x->fa[0]), loss_red(x), e_ptr(e, n));
}

static bool shape_nll(Graph *g, Node *n) { return loss_check_class(g, n); }

static void emit_nll(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    if (class_ex(x, 2)) {
        e_line(e, "%s(%s, %lld, %s, %s, %s, %s, %s);", e_fn(e, "nll_ex"), e_numel(e, x->in[1]),
               (long long)loss_classes(g, x->in[0]), e_ptr(e, x->in[0]), e_ptr(e, x->in[1]), class_ex_args(e, x, 2),
               loss_red(x), e_ptr(e, n));
        return;
    }
    e_line(e, "%s(%s, %lld, %s, %s, %s, %s);", e_fn(e, "nll"), e_numel(e, x->in[1]),
           (long long)loss_classes(g, x->in[0]), e_ptr(e, x->in[0]), e_ptr(e, x->in[1]), loss_red(x),
           e_ptr(e, n));
}

static void grad_nll(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    Shape hint = ad_src(ad)->n[x.in[0]].shape;
    int in[4] = {gy, ad_x(ad, x.in[1])};
    int nin = class_weights_in(ad, &x, in, 2);
    Attrs at = {.i = {x.ia[0], hint.d[hint.rank - 1], x.ia[2], x.ia[3], x.ia[4]}};
    ad_acc(ad, x.in[0], ad_add(ad, n, OP_NLL_BWD, nin, in, &at, &hint));
    grad_class_weight(ad, n, gy);
}

/* (g, labels, rw?, cw?) -> labels' shape + [ia1 classes]. */
static bool shape_nll_bwd(Graph *g, Node *n) {
    const Shape *y = &g->n[n->in[1]].shape;
    if (n->ia[1] <= 0 || y->rank >= MAXDIM || n->nin < 2 + (int)n->ia[4] || n->nin > 3 + (int)n->ia[4]) {
        return shape_error(n, "nll_bwd: needs ia1 = classes > 0 and labels of rank < %d", MAXDIM);
    }
    Shape s = *y;
    s.d[s.rank++] = n->ia[1];
    return shape_real(n, s);
}

static void emit_nll_bwd(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    if (class_ex(x, 2)) {
        e_line(e, "%s(%s, %lld, %s, %s, %s, %s, %s);", e_fn(e, "nll_ex_bwd"), e_numel(e, x->in[1]), (long long)x->ia[1],
               e_ptr(e, x->in[0]), e_ptr(e, x->in[1]), class_ex_args(e, x, 2), loss_red(x), e_ptr(e, n));
        return;
    }
    e_line(e, "%s(%s, %lld, %s, %s, %s, %s);", e_fn(e, "nll_bwd"), e_numel(e, x->in[1]), (long long)x->ia[1],
           e_ptr(e, x->in[0]), e_ptr(e, x->in[1]), loss_red(x), e_ptr(e, n));
}

/* ------------------------------------------------------------------ pair losses */

/* (a, b): both real, the same shape. */
static bool shape_pair(Graph *g, Node *n) {
    if (!loss_check_red(n) || !shape_require_real(g, n, 0) || !shape_require_real(g, n, 1)) return false;
    const Shape *a = &g->n[n->in[0]].shape, *b = &g->n[n->in[1]].shape;
    if (!shape_eq(a, b)) {
        return shape_error(n, "%s: shapes differ: %s and %s", loss_name(n), shape_str(a), shape_str(b));
    }
    if (!shape_same_batch(g, n, loss_name(n), 0, 1)) return false;
    if (n->op == OP_HUBER && !(n->fa[0] > 0)) {
        return shape_error(n, "huber: delta must be positive, got %g", n->fa[0]);
    }
    Shape none = *a;
    none.batched = a->batched || b->batched;
    loss_result(n, &none);
    return true;
}

/* The kernel of pair loss `op`. */
static const char *loss_kernel(Op op) {
    switch (op) {
    case OP_MSE: return "mse";
    case OP_L1: return "l1";
    case OP_HUBER: return "huber";
    case OP_BCE: return "bce";
    case OP_BCE_LOGITS: return "bce_logits";
    case OP_KL_NORMAL: return "kl_normal";
    default: return NULL;
    }
}

/* The size arguments of loss `op` over operand a: "n" (or "rows, cols" for kl_normal),
 * then the delta for huber. */
static const char *loss_sizes(Emit *e, const Graph *g, Op op, int a, double delta) {
    const Shape *s = &g->n[a].shape;
    if (op == OP_KL_NORMAL)
        return kl_by_rows(s) ? cc_str("%s, %lld", e_rows(e, a), (long long)(shape_numel(s) / s->d[0]))
                             : cc_str("1, %s", e_numel(e, a));
    if (op == OP_HUBER) return cc_str("%s, %s", e_numel(e, a), e_lit(delta));
    return e_numel(e, a);
}

/* The operand whose runtime size counts: a batched one (only its first nb rows
 * exist) over an unbatched one of the same compiled shape. */
static int loss_counted(const Graph *g, int a, int b) {
    return !g->n[a].shape.batched && g->n[b].shape.batched ? b : a;
}

static void emit_pair(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    int c = loss_counted(g, x->in[0], x->in[1]);
    e_line(e, "%s(%s, %s, %s, %s, %s);", e_fn(e, loss_kernel(x->op)), loss_sizes(e, g, x->op, c, x->fa[0]),
           e_ptr(e, x->in[0]), e_ptr(e, x->in[1]), loss_red(x), e_ptr(e, n));
}

static void grad_pair(AD *ad, int n, int gy) {
    Node x = ad_src(ad)->n[n];
    int in[3] = {gy, ad_x(ad, x.in[0]), ad_x(ad, x.in[1])};
    Attrs at = {.i = {x.ia[0], x.op}, .f = {x.fa[0]}};
    ad_acc(ad, x.in[0], ad_add(ad, n, OP_LOSS_BWD, 3, in, &at, NULL));
    ad_acc(ad, x.in[1], ad_add(ad, n, OP_LOSS_BWD_B, 3, in, &at, NULL));
}

/* (g, a, b) -> a's shape (LOSS_BWD) or b's (LOSS_BWD_B); ia1 names the loss. */
static bool shape_loss_bwd(Graph *g, Node *n) {
    if (n->ia[1] < 0 || n->ia[1] >= OP_COUNT || !loss_kernel((Op)n->ia[1])) {
        return shape_error(n, "%s: ia1 = %lld is not a pair loss", loss_name(n), (long long)n->ia[1]);
    }
    return shape_real(n, g->n[n->in[n->op == OP_LOSS_BWD ? 1 : 2]].shape);
}

/* cdl_<loss>_bwd(sizes, g, a, b, red, wrt, d).  An unbatched operand paired with a
 * batched one gets zeros past the runtime rows. */
static void emit_loss_bwd(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    Op op = (Op)x->ia[1];
    const char *k = cc_str("%s_bwd", loss_kernel(op));
    int c = loss_counted(g, x->in[1], x->in[2]);
    if (!x->shape.batched && g->n[c].shape.batched)
        e_line(e, "%s(%s, 0, %s);", e_fn(e, "fill"), e_numel(e, n), e_ptr(e, n));
    e_line(e, "%s(%s, %s, %s, %s, %s, %d, %s);", e_fn(e, k), loss_sizes(e, g, op, c, x->fa[0]),
           e_ptr(e, x->in[0]), e_ptr(e, x->in[1]), e_ptr(e, x->in[2]), loss_red(x), x->op == OP_LOSS_BWD_B,
           e_ptr(e, n));
}

/* ------------------------------------------------------------------ kl_normal */

static bool shape_kl_normal(Graph *g, Node *n) {
    if (!loss_check_red(n) || !shape_require_real(g, n, 0) || !shape_require_real(g, n, 1)) return false;
    const Shape *a = &g->n[n->in[0]].shape, *b = &g->n[n->in[1]].shape;
    if (!shape_eq(a, b)) {
        return shape_error(n, "kl_normal: mu %s and logvar %s differ", shape_str(a), shape_str(b));
    }
    if (!shape_same_batch(g, n, "kl_normal", 0, 1)) return false;
    if (n->ia[0] == RED_NONE && !kl_by_rows(a)) {
        shape_error(n, "kl_normal: reduce=\"none\" gives one value a row (dim 0) and needs operands of rank >= 2, "
                    "got %s", shape_str(a));
        return false;
    }
    Shape none = {.rank = 1, .d = {a->d[0]}, .batched = a->batched || b->batched};
    loss_result(n, &none);
    return true;
}

/* ------------------------------------------------------------------ tape calls */

/* cdl_t_<loss>(tp, a, b[, attribute], reduction): cross_entropy's smoothing, huber's delta;
 * a class loss with a weight or an ignore_index: cdl_t_<loss>_ex(tp, a, b, row weight
 * or NULL, class weight or NULL, ignore_index[, smoothing], reduction). */
static const char *tape_loss(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    if ((x->op == OP_CROSS_ENTROPY || x->op == OP_NLL) && (x->nin > 2 || x->ia[2])) {
        /* the tape's class_loss reads the weights off its inputs as class_rw / class_cw */
        const char *sm = x->op == OP_CROSS_ENTROPY ? cc_str("%s, ", e_lit(x->fa[0])) : "";
        return cc_str("cdl_t_%s_ex(tp, %s, %s, %s, %s%s)", loss_name(x), e_ptr(e, x->in[0]), e_ptr(e, x->in[1]),
                      class_ex_args(e, x, 2), sm, loss_red(x));
    }
    const char *attr = x->op == OP_CROSS_ENTROPY || x->op == OP_HUBER ? cc_str("%s, ", e_lit(x->fa[0])) : "";
    return cc_str("cdl_t_%s(tp, %s, %s, %s%s)", loss_name(x), e_ptr(e, x->in[0]), e_ptr(e, x->in[1]), attr, loss_red(x));
}

/* The tape's cross_entropy keeps its softmax probabilities for the backward.  The
 * weight's gradient recomputes the unweighted loss per row (cross_entropy: with its
 * probabilities) in scratch. */
static void tape_scratch_cross_entropy(const Graph *g, const Node *n, int real_size, int64_t *keep, int64_t *tmp) {
    int64_t probs = shape_numel(&g->n[n->in[0]].shape), rows = shape_numel(&g->n[n->in[1]].shape);
    *keep = probs * real_size;
    if (class_rw(n, 2) >= 0) *tmp = (probs + 2 * rows) * real_size;
}

static void tape_scratch_nll(const Graph *g, const Node *n, int real_size, int64_t *keep, int64_t *tmp) {
    (void)keep;
    if (class_rw(n, 2) >= 0) *tmp = 2 * shape_numel(&g->n[n->in[1]].shape) * real_size;
}

/* In place: a pair loss's gradient d[i] = s f(a[i], b[i]) (s read from g first) over
 * a or b; not when emit_loss_bwd zero-fills d first (an unbatched d beside a batched
 * operand). */
static bool inplace_loss_bwd(const Graph *g, const Node *n) {
    return n->shape.batched || (!g->n[n->in[1]].shape.batched && !g->n[n->in[2]].shape.batched);
}

/* ------------------------------------------------------------------ table */

#define PAIR_GRAD (INPLACE_IN(1) | INPLACE_IN(2))

const OpRule ops_loss_rules[] = {
    {OP_CROSS_ENTROPY, shape_cross_entropy, grad_cross_entropy, emit_cross_entropy, aux_cross_entropy, .tape = tape_loss,
     .tape_scratch = tape_scratch_cross_entropy},
    {OP_CROSS_ENTROPY_BWD, shape_cross_entropy_bwd, NULL, emit_cross_entropy_bwd, NULL, .tape = NULL},
    {OP_NLL, shape_nll, grad_nll, emit_nll, NULL, .tape = tape_loss, .tape_scratch = tape_scratch_nll},
    {OP_NLL_BWD, shape_nll_bwd, NULL, emit_nll_bwd, NULL, .tape = NULL},
    {OP_CLASS_WEIGHT_BWD, shape_class_weight_bwd, NULL, emit_class_weight_bwd, NULL, .tape = NULL},
    {OP_MSE, shape_pair, grad_pair, emit_pair, NULL, .tape = tape_loss},
    {OP_L1, shape_pair, grad_pair, emit_pair, NULL, .tape = tape_loss},
    {OP_HUBER, shape_pair, grad_pair, emit_pair, NULL, .tape = tape_loss},
    {OP_BCE, shape_pair, grad_pair, emit_pair, NULL, .tape = tape_loss},
    {OP_BCE_LOGITS, shape_pair, grad_pair, emit_pair, NULL, .tape = tape_loss},
    {OP_KL_NORMAL, shape_kl_normal, grad_pair, emit_pair, NULL, .tape = tape_loss},
    {OP_LOSS_BWD, shape_loss_bwd, NULL, emit_loss_bwd, NULL, .inplace = PAIR_GRAD, .inplace_if = inplace_loss_bwd},
    {OP_LOSS_BWD_B, shape_loss_bwd, NULL, emit_loss_bwd, NULL, .inplace = PAIR_GRAD, .inplace_if = inplace_loss_bwd},
};
const int ops_loss_count = sizeof ops_loss_rules / sizeof ops_loss_rules[0];
