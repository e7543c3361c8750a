/* ops_dense.c -- dense ops (matmul, linear), reductions (sum, mean), shape ops
 * (broadcast_to, reshape, transpose, concat, slice), softmax / log_softmax and
 * embedding: for each op its shape rule, gradient rule and C emitter side by side.
 * Kernels: runtime/kernels_dense_t.h and runtime/blas.c (contracts in cdl.h, DENSE).
 *
 * Batch dimension: a batched dim 0 must stay dim 0 (transpose, broadcast, reshape);
 * ops that contract or reduce over it produce unbatched results; emitters pass the
 * runtime size of dim 0 (e_dim) and the compiled sizes of every other dim.
 */
#include "cdlc.h"

#include <string.h>

/* ======================================================================== helpers */

static const Node *in_node(const Graph *g, const Node *n, int k) { return &g->n[n->in[k]]; }

/* The kernel name for node n: the real-typed one, or the i32 one for the element-moving
 * kernels applied to integer tensors (labels). */
static const char *kfn(Emit *e, const Graph *g, int n, const char *kernel) {
    if (g->n[n].dtype == DT_I32) return cc_str("cdl_%s_i32", kernel);
    return e_fn(e, kernel);
}
static const char *elem_type(Emit *e, const Graph *g, int n) {
    return g->n[n].dtype == DT_I32 ? "int32_t" : e_real(e);
}

/* "(const int64_t[]){nb, 256}": node's runtime dims, padded on the left with 1s to
 * rank `rank` (broadcast); "{1}" for a scalar so the array is never empty. */
static const char *dims_list(Emit *e, const Graph *g, int node, int rank) {
    const Shape *s = &g->n[node].shape;
    int lead = rank - s->rank;
    char *r = cc_str("(const int64_t[]){");
    for (int i = 0; i < rank; i++)
        r = cc_str("%s%s%s", r, i ? ", " : "",
                         i < lead ? "1" : e_dim(e, node, i - lead));
    return cc_str("%s%s}", r, rank == 0 ? "1" : "");
}

/* A rank-0 real constant in the gradient graph. */
static int grad_const(AD *ad, int n, double v) {
    Attrs at = {.f = {v}};
    Shape s = {0};
    return ad_add(ad, n, OP_CONST, 0, NULL, &at, &s);
}

/* ======================================================================== matmul */

/* Fold 2-D transposes of the operands into the GEMM flags: a @ transpose(b) reads b
 * with transB = 1 instead of copying it.  n->in[k] is rewired to the transpose's input
 * (the transpose node then dies in DCE unless something else uses it).  Idempotent. */
static void matmul_fold_transposes(Graph *g, Node *n) {
    for (int k = 0; k < 2; k++) {
        const Node *t;
        while ((t = &g->n[n->in[k]])->op == OP_TRANSPOSE && t->shape.rank == 2 && t->ia[0] == 1) {
            n->in[k] = t->in[0];
            n->ia[k] = !n->ia[k];
        }
    }
}

/* c = op(a) @ op(b), 2-D; ia0 / ia1 transpose a / b (cblas flags, no copies).
 * Batch: rows of op(a) batched -> result batched; contracting over the batch needs it
 * on both sides (dW = g^T @ x); the batch may not become the result's columns.
 * An optional third input acc (same shape as c) makes it c = acc + op(a) @ op(b): a
 * backward loop's weight-gradient accumulator, summed by the GEMM itself (beta = 1). */
static bool shape_matmul(Graph *g, Node *n) {
    if (n->nin != 2 && n->nin != 3) die("matmul: %d inputs", n->nin);
    if (!shape_require_real(g, n, 0) || !shape_require_real(g, n, 1)) return false;
    n->ia[0] = n->ia[0] != 0;
    n->ia[1] = n->ia[1] != 0;
    matmul_fold_transposes(g, n);
    const Shape *a = &in_node(g, n, 0)->shape, *b = &in_node(g, n, 1)->shape;
    int ta = (int)n->ia[0], tb = (int)n->ia[1];
    if (a->rank != 2 || b->rank != 2) {
        return shape_error(n, "matmul: operands must be 2-D, got %s @ %s", shape_str(a), shape_str(b));
    }
    int64_t M = a->d[ta], Ka = a->d[1 - ta], Kb = b->d[tb], N = b->d[1 - tb];
    if (Ka != Kb) {
        return shape_error(n, "matmul: inner dimensions differ: %s%s @ %s%s", shape_str(a),
                           ta ? "^T" : "", shape_str(b), tb ? "^T" : "");
    }
    if (b->batched && tb) {
        return shape_error(n, "matmul: the batch dimension of %s would become the result's columns",
                           shape_str(b));
    }
    if ((a->batched && ta) != (b->batched && !tb)) {
        return shape_error(n, "matmul: the batch dimension is contracted with a fixed dimension: %s%s @ %s%s",
                           shape_str(a), ta ? "^T" : "", shape_str(b), tb ? "^T" : "");
    }
    n->shape = shape_make(2, (int64_t[]){M, N}, a->batched && !ta);
    n->dtype = DT_REAL;
    if (n->nin == 3 && (!shape_require_real(g, n, 2) || !shape_eq(&in_node(g, n, 2)->shape, &n->shape)))
        die("matmul: accumulator %s for a %s product", shape_str(&in_node(g, n, 2)->shape), shape_str(&n->shape));
    return true;
}

/* C = A B: dA = G B^T, dB = A^T G, and the transposed variants, each one GEMM with
 * flags (never a transpose node). */
static void grad_matmul(AD *ad, int n, int gy) {
    const Node *x = &ad_src(ad)->n[n];
    int ta = (int)x->ia[0], tb = (int)x->ia[1];
    int A = ad_x(ad, x->in[0]), B = ad_x(ad, x->in[1]);
    int da_in[2], db_in[2];
    Attrs da = {0}, db = {0};
    if (!ta && !tb) {            /* C = A B */
        da_in[0] = gy; da_in[1] = B; da.i[1] = 1;            /* G B^T */
        db_in[0] = A; db_in[1] = gy; db.i[0] = 1;            /* A^T G */
    } else if (!ta && tb) {      /* C = A B^T */
        da_in[0] = gy; da_in[1] = B;                          /* G B */
        db_in[0] = gy; db_in[1] = A; db.i[0] = 1;            /* G^T A */
    } else if (ta && !tb) {      /* C = A^T B */
        da_in[0] = B; da_in[1] = gy; da.i[1] = 1;            /* B G^T */
        db_in[0] = A; db_in[1] = gy;                          /* A G */
    } else {                     /* C = A^T B^T */
        da_in[0] = B; da_in[1] = gy; da.i[0] = da.i[1] = 1;  /* B^T G^T */
        db_in[0] = gy; db_in[1] = A; db.i[0] = db.i[1] = 1;  /* G^T A^T */
    }
    ad_acc_gemm(ad, x->in[0], ad_add(ad, n, OP_MATMUL, 2, da_in, &da, NULL));
    ad_acc_gemm(ad, x->in[1], ad_add(ad, n, OP_MATMUL, 2, db_in, &db, NULL));
    if (x->nin == 3) ad_acc(ad, x->in[2], gy);
}

/* With an accumulator the GEMM adds into c; c starts as a copy of acc unless the plan
 * gave them one buffer (a loop's accumulator after its first step; at top level, an
 * accumulating GEMM marked in place over acc by opt_inplace: no copy line at all). */
static void emit_matmul(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    int a = x->in[0], b = x->in[1], ta = (int)x->ia[0], tb = (int)x->ia[1];
    if (x->nin == 3 && !((x->flags & NF_INPLACE) && x->inplace == 2))
        e_line(e, "if (%s != %s) memcpy(%s, %s, (size_t)(%s) * sizeof(%s));", e_ptr(e, n), e_ptr(e, x->in[2]),
               e_ptr(e, n), e_ptr(e, x->in[2]), e_numel(e, n), e_real(e));
    const char *note, *k = e_inner(e, n, 2, e_dim(e, a, 1 - ta), &note);
    e_line(e, "%s(%d, %d, %s, %s, %s, 1, %s, %lld, %s, %lld, %d, %s, %lld);%s", e_fn(e, "gemm"), ta, tb, e_dim(e, a, ta),
           e_dim(e, b, 1 - tb), k, e_ptr(e, a), (long long)g->n[a].shape.d[1], e_ptr(e, b), (long long)g->n[b].shape.d[1],
           x->nin == 3, e_ptr(e, n), (long long)x->shape.d[1], note);
}

/* ======================================================================== linear */

/* y[..., out] = x[..., in] W[out, in]^T (+ b[out]); leading dims of x are flattened
 * into rows (no copy: x is contiguous). */
static bool shape_linear(Graph *g, Node *n) {
    if (n->nin != 2 && n->nin != 3) {
        return shape_error(n, "linear: takes (x, weight) or (x, weight, bias), got %d arguments", n->nin);
    }
    for (int k = 0; k < n->nin; k++)
        if (!shape_require_real(g, n, k)) return false;
    const Shape *x = &in_node(g, n, 0)->shape, *w = &in_node(g, n, 1)->shape;
    if (w->rank != 2 || w->batched) {
        return shape_error(n, "linear: the weight must be a 2-D [out, in] tensor, got %s", shape_str(w));
    }
    if (x->rank < 1 || x->d[x->rank - 1] != w->d[1]) {
        return shape_error(n, "linear: input %s does not match the weight %s: expected [..., %lld]",
                           shape_str(x), shape_str(w), (long long)w->d[1]);
    }
    if (x->rank == 1 && x->batched) {
        return shape_error(n, "linear: the batch dimension of %s cannot be the feature dimension",
                           shape_str(x));
    }
    if (n->nin == 3) {
        const Shape *b = &in_node(g, n, 2)->shape;
        if (b->rank != 1 || b->d[0] != w->d[0] || b->batched) {
            return shape_error(n, "linear: the bias must be [%lld] for the weight %s, got %s",
                               (long long)w->d[0], shape_str(w), shape_str(b));
        }
    }
    n->shape = *x;
    n->shape.d[x->rank - 1] = w->d[0];
    n->dtype = DT_REAL;
    return true;
}

/* dx = G W, dW = G^T X (contracting over the rows: the batch), db = column sums of G.
 * Inputs of rank != 2 are seen as [rows, features] through free reshapes. */
static void grad_linear(AD *ad, int n, int gy) {
    const Node *y = &ad_src(ad)->n[n];
    const Node *xn = &ad_src(ad)->n[y->in[0]];
    const Shape *xs = &xn->shape;
    int r = xs->rank;
    int64_t in = xs->d[r - 1], out = y->shape.d[r - 1];
    int64_t rows = shape_numel(xs) / in;
    int g2 = gy, x2 = ad_x(ad, y->in[0]), w = ad_x(ad, y->in[1]);
    if (r != 2) {
        Shape sg = shape_make(2, (int64_t[]){rows, out}, xs->batched);
        Shape sx = shape_make(2, (int64_t[]){rows, in}, xs->batched);
        g2 = ad_add(ad, n, OP_RESHAPE, 1, &g2, NULL, &sg);
        x2 = ad_add(ad, n, OP_RESHAPE, 1, &x2, NULL, &sx);
    }
    int in_dx[2] = {g2, w};
    int dx = ad_add(ad, n, OP_MATMUL, 2, in_dx, NULL, NULL);
    if (r != 2) ad_acc(ad, y->in[0], ad_add(ad, n, OP_RESHAPE, 1, &dx, NULL, xs));
    else ad_acc_gemm(ad, y->in[0], dx);
    int in_dw[2] = {g2, x2};
    Attrs tw = {.i = {1, 0}};
    ad_acc_gemm(ad, y->in[1], ad_add(ad, n, OP_MATMUL, 2, in_dw, &tw, NULL));
    if (y->nin == 3) {
        int db = gy;
        if (r > 1) {
            Attrs sa = {.i = {((int64_t)1 << (r - 1)) - 1, 0}};
            db = ad_add(ad, n, OP_SUM, 1, &db, &sa, NULL);
        }
        ad_acc(ad, y->in[2], db);
    }
}

static void emit_linear(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    int x = y->in[0], r = g->n[x].shape.rank;
    const Shape *w = &g->n[y->in[1]].shape;
    const char *note, *k = e_inner(e, n, 1, cc_str("%lld", (long long)w->d[1]), &note);
    e_line(e, "%s(%s, %s, %lld, %s, %s, %s, %s);%s", e_fn(e, "linear"), e_prod(e, x, 0, r - 1), k, (long long)w->d[0],
           e_ptr(e, x), e_ptr(e, y->in[1]), y->nin == 3 ? e_ptr(e, y->in[2]) : "NULL", e_ptr(e, n), note);
}

/* ======================================================================== sum, mean */

/* ia0 = axis bitmask (0 = every axis; normalized here to the explicit mask), ia1 =
 * keepdim.  Reducing the batched axis 0 gives an unbatched result.  Also the shape
 * rule of ops_sel.c's axis statistics (var, std, logsumexp). */
bool shape_reduce(Graph *g, Node *n) {
    if (!shape_require_real(g, n, 0)) return false;
    const Shape *x = &in_node(g, n, 0)->shape;
    const char *name = op_info[n->op].name;
    int64_t mask = n->ia[0];
    int64_t all = ((int64_t)1 << x->rank) - 1;
    if (mask < 0) {
        return shape_error(n, "%s: bad axis set %lld", name, (long long)mask);
    }
    if (mask & ~all) {
        int bad = x->rank;
        while (!(mask >> bad & 1)) bad++;
        return shape_error(n, "%s: axis %d is out of range for %s (rank %d)", name, bad, shape_str(x),
                           x->rank);
    }
    if (mask == 0) mask = all;
    n->ia[0] = mask;
    n->ia[1] = n->ia[1] != 0;
    Shape s = {.rank = 0};
    for (int i = 0; i < x->rank; i++) {
        if (!(mask >> i & 1)) s.d[s.rank++] = x->d[i];
        else if (n->ia[1]) s.d[s.rank++] = 1;
    }
    s.batched = x->batched && !(mask & 1);
    return shape_real(n, s);
}

/* The reduced gradient g (shape of the reduction's result) spread back over x: reshape
 * to the keepdim shape (a free view), then broadcast to x's shape. */
static int spread(AD *ad, int n, int g, const Node *red, const Shape *xs) {
    int64_t mask = red->ia[0];
    Shape kd = *xs;
    for (int i = 0; i < xs->rank; i++)
        if (mask >> i & 1) kd.d[i] = 1;
    kd.batched = xs->batched && !(mask & 1);
    if (ad_dst(ad)->n[g].shape.rank != kd.rank) g = ad_add(ad, n, OP_RESHAPE, 1, &g, NULL, &kd);
    /* at B = 1 a reduced batch axis has x's size: the broadcast still makes it batched */
    if (!shape_eq(&kd, xs) || kd.batched != xs->batched) g = ad_add(ad, n, OP_BROADCAST, 1, &g, NULL, xs);
    return g;
}

static void grad_sum(AD *ad, int n, int gy) {
    const Node *s = &ad_src(ad)->n[n];
    const Shape *xs = &ad_src(ad)->n[s->in[0]].shape;
    ad_acc(ad, s->in[0], spread(ad, n, gy, s, xs));
}

/* d mean / dx = g / count, with count counted at runtime when the batched axis 0 is
 * reduced (a smaller last batch divides by its own size): g / batch_size / rest.  The
 * scale is applied to the small reduced gradient, before spreading it. */
static void grad_mean(AD *ad, int n, int gy) {
    const Node *s = &ad_src(ad)->n[n];
    const Shape *xs = &ad_src(ad)->n[s->in[0]].shape;
    int64_t mask = s->ia[0];
    bool over_batch = xs->batched && (mask & 1);
    double count = 1;
    for (int i = 0; i < xs->rank; i++)
        if ((mask >> i & 1) && !(over_batch && i == 0)) count *= (double)xs->d[i];
    int g = gy;
    if (over_batch) {
        double per_row = (double)xs->d[0] / (double)ad_src(ad)->batch;  /* d0 = B * per_row */
        int in[2] = {g, ad_add(ad, n, OP_BATCHSIZE, 0, NULL, NULL, NULL)};
        g = ad_add(ad, n, OP_DIV, 2, in, NULL, NULL);
        count *= per_row;
    }
    if (count != 1) {
        int in[2] = {g, grad_const(ad, n, 1.0 / count)};
        g = ad_add(ad, n, OP_MUL, 2, in, NULL, NULL);
    }
    ad_acc(ad, s->in[0], spread(ad, n, g, s, xs));
}

static void emit_reduce(Emit *e, const Graph *g, int n) {
    const Node *s = &g->n[n];
    int x = s->in[0], r = g->n[x].shape.rank;
    if (s->op == OP_SUM && s->xw_at) {   /* opt_pair_conv */
        e_line(e, "/* computed by conv2d_bwd_xw below */");
        return;
    }
    e_line(e, "%s(%d, %s, 0x%llxu, %d, %s, %s);", e_fn(e, "reduce"), r, dims_list(e, g, x, r),
           (unsigned long long)s->ia[0], s->op == OP_MEAN, e_ptr(e, x), e_ptr(e, n));
}

/* ======================================================================== max, min over axes */

/* REDUCE_MAX: shape as sum's (ia0 axis mask, ia1 keepdim), ia2 = 1 for the minimum.
 * aux: each output's winner, its flat index in x (int64_t: two reals each, room in f32). */
static int64_t aux_reduce_max(const Graph *g, const Node *n) {
    (void)g;
    return 2 * shape_numel(&n->shape);
}

/* The winner takes the gradient (torch.max(x, dim)'s rule): REDUCE_MAX_BWD(g, fwd). */
static void grad_reduce_max(AD *ad, int n, int gy) {
    const Node *s = &ad_src(ad)->n[n];
    const Shape xs = ad_src(ad)->n[s->in[0]].shape;
    int in[2] = {gy, ad_x(ad, n)};
    ad_acc(ad, s->in[0], ad_add(ad, n, OP_REDUCE_MAX_BWD, 2, in, NULL, &xs));
}

static void emit_reduce_max(Emit *e, const Graph *g, int n) {
    const Node *s = &g->n[n];
    int x = s->in[0], r = g->n[x].shape.rank;
    e_line(e, "%s(%d, %s, 0x%llxu, %d, %s, %s, (int64_t *)%s);", e_fn(e, "reduce_max"), r, dims_list(e, g, x, r),
           (unsigned long long)s->ia[0], s->ia[2] != 0, e_ptr(e, x), e_ptr(e, n), e_aux(e, n));
}

static const char *tape_reduce_max(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    return cc_str("cdl_t_reduce_max(tp, %s, 0x%llxu, %d, %d)", e_ptr(e, x->in[0]), (unsigned long long)x->ia[0],
                  x->ia[1] != 0, x->ia[2] != 0);
}

static void tape_scratch_reduce_max(const Graph *g, const Node *n, int real_size, int64_t *keep, int64_t *tmp) {
    (void)g, (void)real_size, (void)tmp;
    *keep = shape_numel(&n->shape) * (int64_t)sizeof(int64_t);
}

/* (g, fwd) -> the hint shape (the reduced tensor's); g has the forward's shape. */
static bool shape_reduce_max_bwd(Graph *g, Node *n) {
    const Shape *gs = &in_node(g, n, 0)->shape, *ys = &in_node(g, n, 1)->shape;
    if (shape_numel(gs) != shape_numel(ys)) die("reduce_max_bwd: gradient %s for %s", shape_str(gs), shape_str(ys));
    n->shape.batched = in_node(g, in_node(g, n, 1), 0)->shape.batched;
    n->dtype = DT_REAL;
    return true;
}

static void emit_reduce_max_bwd(Emit *e, const Graph *g, int n) {
    const Node *d = &g->n[n];
    e_line(e, "%s(%s, %s, %s, (const int64_t *)%s, %s);", e_fn(e, "reduce_max_bwd"), e_numel(e, d->in[0]), e_numel(e, n),
           e_ptr(e, d->in[0]), e_aux(e, d->in[1]), e_ptr(e, n));
}

/* ======================================================================== broadcast_to */

/* To the hint shape (numpy rules).  The result is batched when the hint says so or when
 * x's batched dim 0 stays dim 0; x's batch dimension may not move right. */
static bool shape_broadcast_to(Graph *g, Node *n) {
    const Node *xn = in_node(g, n, 0);
    const Shape *x = &xn->shape;
    Shape *y = &n->shape;
    int lead = y->rank - x->rank;
    bool ok = lead >= 0;
    for (int i = 0; ok && i < x->rank; i++) ok = x->d[i] == 1 || x->d[i] == y->d[i + lead];
    if (!ok) {
        return shape_error(n, "broadcast_to: cannot broadcast %s to %s", shape_str(x), shape_str(y));
    }
    if (x->batched && lead > 0) {
        return shape_error(n, "broadcast_to: broadcasting %s to %s would move the batch dimension",
                           shape_str(x), shape_str(y));
    }
    y->batched = y->batched || x->batched;
    n->dtype = xn->dtype;
    return true;
}

/* ad_acc sums the gradient back over the broadcast axes. */
static void grad_broadcast_to(AD *ad, int n, int gy) {
    ad_acc(ad, ad_src(ad)->n[n].in[0], gy);
}

static void emit_broadcast_to(Emit *e, const Graph *g, int n) {
    int x = g->n[n].in[0], r = g->n[n].shape.rank;
    e_line(e, "%s(%d, %s, %s, %s, %s);", kfn(e, g, n, "broadcast"), r, dims_list(e, g, x, r),
           dims_list(e, g, n, r), e_ptr(e, x), e_ptr(e, n));
}

/* ======================================================================== reshape */

/* To the hint shape (a view: same elements, same order).  One dim may be -1 (inferred).
 * A batched input stays batched when the new dim 0 is a multiple of the batch (so the
 * first nb/B of the elements are still the valid ones); otherwise the batch would be
 * mixed into other dims: an error. */
static bool shape_reshape(Graph *g, Node *n) {
    const Node *xn = in_node(g, n, 0);
    const Shape *x = &xn->shape;
    Shape *y = &n->shape;
    int64_t known = 1, total = shape_numel(x);
    int infer = -1;
    for (int i = 0; i < y->rank; i++) {
        if (y->d[i] == -1 && infer < 0) infer = i;
        else if (y->d[i] <= 0) {
            return shape_error(n, "reshape: bad target shape %s", shape_str(y));
        } else known *= y->d[i];
    }
    if (infer >= 0) {
        if (known <= 0 || total % known) {
            return shape_error(n, "reshape: cannot reshape %s (%lld elements) to %s", shape_str(x),
                               (long long)total, shape_str(y));
        }
        y->d[infer] = total / known;
        known = total;
    }
    if (known != total) {
        return shape_error(n, "reshape: cannot reshape %s (%lld elements) to %s (%lld elements)",
                           shape_str(x), (long long)total, shape_str(y), (long long)known);
    }
    y->batched = false;
    if (x->batched) {
        int64_t B = g->batch;
        if (y->rank == 0 || B <= 0 || y->d[0] % B) {
            return shape_error(n, "reshape: %s to %s would mix the batch dimension into other dimensions",
                               shape_str(x), shape_str(y));
        }
        y->batched = true;
    }
    n->dtype = xn->dtype;
    return true;
}

static void grad_reshape(AD *ad, int n, int gy) {
    const Node *x = &ad_src(ad)->n[ad_src(ad)->n[n].in[0]];
    ad_acc(ad, ad_src(ad)->n[n].in[0], ad_add(ad, n, OP_RESHAPE, 1, &gy, NULL, &x->shape));
}

/* A view: the framework points the node into its input. */
static void emit_view(Emit *e, const Graph *g, int n) {
    (void)e;
    (void)g;
    (void)n;
}

/* ======================================================================== transpose */

/* Where a permutation sends axis 0. */
static int transpose_batch_to(const Node *n, int r) {
    for (int i = 0; i < r; i++)
        if (n->ia[i] == 0) return i;
    return 0;
}

/* ia0..ia{rank-1} = permutation (y dim i = x dim perm[i]); all zeros means reversed
 * axes (numpy's .T), normalized here to the explicit permutation. */
static bool shape_transpose(Graph *g, Node *n) {
    const Node *xn = in_node(g, n, 0);
    const Shape *x = &xn->shape;
    int r = x->rank;
    bool zero = true;
    for (int i = 0; i < MAXDIM; i++) zero = zero && n->ia[i] == 0;
    if (zero)
        for (int i = 0; i < r; i++) n->ia[i] = r - 1 - i;
    unsigned seen = 0;
    bool ok = true;
    for (int i = 0; i < r; i++) {
        int64_t p = n->ia[i];
        if (p < 0 || p >= r || (seen >> p & 1)) ok = false;
        else seen |= 1u << p;
    }
    for (int i = r; i < MAXDIM; i++) ok = ok && n->ia[i] == 0;
    if (!ok) {
        char buf[64];
        int k = 0;
        for (int i = 0; i < r && k < 48; i++)
            k += snprintf(buf + k, sizeof buf - (size_t)k, "%s%lld", i ? ", " : "", (long long)n->ia[i]);
        buf[k] = 0;
        return shape_error(n, "transpose: (%s) is not a permutation of the %d axes of %s", buf, r,
                           shape_str(x));
    }
    if (x->batched && n->ia[0] != 0) {
        return shape_error(n, "transpose: transpose would move the batch dimension of %s to axis %d",
                           shape_str(x), transpose_batch_to(n, r));
    }
    Shape s = {.rank = r, .batched = x->batched};
    for (int i = 0; i < r; i++) s.d[i] = x->d[n->ia[i]];
    n->shape = s;
    n->dtype = xn->dtype;
    return true;
}

static void grad_transpose(AD *ad, int n, int gy) {
    const Node *t = &ad_src(ad)->n[n];
    Attrs inv = {0};
    for (int i = 0; i < t->shape.rank; i++) inv.i[t->ia[i]] = i;
    ad_acc(ad, t->in[0], ad_add(ad, n, OP_TRANSPOSE, 1, &gy, &inv, NULL));
}

static void emit_transpose(Emit *e, const Graph *g, int n) {
    const Node *t = &g->n[n];
    int x = t->in[0], r = t->shape.rank;
    char *perm = cc_str("(const int[]){");
    for (int i = 0; i < r; i++)
        perm = cc_str("%s%s%lld", perm, i ? ", " : "", (long long)t->ia[i]);
    perm = cc_str("%s%s}", perm, r == 0 ? "0" : "");
    e_line(e, "%s(%d, %s, %s, %s, %s);", kfn(e, g, n, "transpose"), r, dims_list(e, g, x, r), perm,
           e_ptr(e, x), e_ptr(e, n));
}

/* ======================================================================== concat */

/* Variadic; ia0 = axis (negative counts from the end; normalized).  Inputs agree on
 * dtype, rank, every other dim and the batch flag; the batch axis itself cannot be
 * concatenated along. */
static bool shape_concat(Graph *g, Node *n) {
    if (n->nin < 1) {
        return shape_error(n, "concat: needs at least one tensor");
    }
    const Node *f = in_node(g, n, 0);
    int r = f->shape.rank;
    int64_t axis = n->ia[0] < 0 ? n->ia[0] + r : n->ia[0];
    if (axis < 0 || axis >= r) {
        return shape_error(n, "concat: axis %lld is out of range for %s", (long long)n->ia[0],
                           shape_str(&f->shape));
    }
    n->ia[0] = axis;
    Shape s = f->shape;
    s.d[axis] = 0;
    for (int k = 0; k < n->nin; k++) {
        const Node *p = in_node(g, n, k);
        bool ok = p->shape.rank == r;
        for (int i = 0; ok && i < r; i++) ok = i == axis || p->shape.d[i] == f->shape.d[i];
        if (!ok) {
            return shape_error(n, "concat: argument %d has shape %s, expected %s except along axis %lld",
                               k + 1, shape_str(&p->shape), shape_str(&f->shape), (long long)axis);
        }
        if (p->dtype != f->dtype) {
            return shape_error(n, "concat: argument %d is %s, argument 1 is %s", k + 1,
                               p->dtype == DT_I32 ? "i32" : "f32", f->dtype == DT_I32 ? "i32" : "f32");
        }
        if (p->shape.batched != f->shape.batched) {
            return shape_error(n, "concat: arguments 1 %s and %d %s disagree on the batch dimension "
                               "(only argument %d is batched)", shape_str(&f->shape), k + 1,
                               shape_str(&p->shape), f->shape.batched ? 1 : k + 1);
        }
        s.d[axis] += p->shape.d[axis];
    }
    if (axis == 0 && f->shape.batched) {
        return shape_error(n, "concat: cannot concatenate along the batch dimension of %s",
                           shape_str(&f->shape));
    }
    n->shape = s;
    n->dtype = f->dtype;
    return true;
}

/* Each input's gradient is its slice of g. */
static void grad_concat(AD *ad, int n, int gy) {
    const Node *c = &ad_src(ad)->n[n];
    int64_t axis = c->ia[0], off = 0;
    for (int k = 0; k < c->nin; k++) {
        int64_t d = ad_src(ad)->n[c->in[k]].shape.d[axis];
        Attrs at = {.i = {axis, off, off + d, 1, 0, 0}};
        ad_acc(ad, c->in[k], ad_add(ad, n, OP_SLICE, 1, &gy, &at, NULL));
        off += d;
    }
}

static void emit_concat(Emit *e, const Graph *g, int n) {
    const Node *c = &g->n[n];
    int axis = (int)c->ia[0], r = c->shape.rank;
    const char **inner = NEWN(const char *, c->nin), **ptrs = NEWN(const char *, c->nin);
    for (int k = 0; k < c->nin; k++) {
        inner[k] = e_prod(e, c->in[k], axis, r);
        ptrs[k] = e_ptr(e, c->in[k]);
    }
    e_line(e, "%s(%d, %s, (const int64_t[]){%s}, (const %s *const[]){%s}, %s);", kfn(e, g, n, "concat"), c->nin,
           e_prod(e, n, 0, axis), e_join(c->nin, inner, ", "), elem_type(e, g, n), e_join(c->nin, ptrs, ", "), e_ptr(e, n));
}

/* ======================================================================== slice */

/* Slice geometry of x under n's attributes (SLICE and SLICE_BWD share it): ia0 axis
 * (negative from the end), ia1 start, ia2 stop (Python rules: negative from the end,
 * clamped), ia3 step (> 0; 0 means 1), ia4 = 1: index mode (one position, axis
 * dropped), ia5 = t coefficient (inside a loop the start is ia1 + ia5 * t; then
 * start/stop are taken as given, and positions outside the axis read as zeros).
 * Normalizes the attributes in place and writes the result shape. */
static bool slice_shape(Graph *g, Node *n, const Shape *x, Shape *out) {
    const char *name = op_info[n->op].name;
    int r = x->rank;
    if (r == 0) {
        return shape_error(n, "%s: cannot slice a scalar", name);
    }
    int64_t axis = n->ia[0] < 0 ? n->ia[0] + r : n->ia[0];
    if (axis < 0 || axis >= r) {
        return shape_error(n, "%s: axis %lld is out of range for %s", name, (long long)n->ia[0], shape_str(x));
    }
    int64_t d = x->d[axis], start = n->ia[1], stop = n->ia[2], step = n->ia[3] ? n->ia[3] : 1;
    bool index = n->ia[4] != 0, moving = n->ia[5] != 0;
    int64_t count;
    if (step < 0) {
        return shape_error(n, "%s: negative steps are not supported", name);
    }
    if (index) {
        if (!moving && start < 0) start += d;
        if (!moving && (start < 0 || start >= d)) {
            return shape_error(n, "%s: index %lld is out of range for axis %lld of %s", name,
                               (long long)n->ia[1], (long long)axis, shape_str(x));
        }
        stop = start + 1;
        count = 1;
    } else {
        if (!moving) {
            if (start < 0) start += d;
            if (stop < 0) stop += d;
            start = start < 0 ? 0 : start > d ? d : start;
            stop = stop < 0 ? 0 : stop > d ? d : stop;
        }
        count = stop > start ? (stop - start + step - 1) / step : 0;
        if (count == 0) {
            return shape_error(n, "%s: the slice %lld:%lld:%lld of axis %lld of %s is empty", name,
                               (long long)n->ia[1], (long long)n->ia[2], (long long)step, (long long)axis,
                               shape_str(x));
        }
    }
    n->ia[0] = axis;
    n->ia[1] = start;
    n->ia[2] = stop;
    n->ia[3] = step;
    n->ia[4] = index;
    Shape s = {.rank = 0};
    for (int i = 0; i < r; i++) {
        if (i != axis) s.d[s.rank++] = x->d[i];
        else if (!index) s.d[s.rank++] = count;
    }
    /* dim 0 stays batched unless the slice is along it (then only a full slice is) */
    s.batched = x->batched &&
                (axis != 0 || (!index && !moving && start == 0 && step == 1 && count == d));
    (void)g;
    *out = s;
    return true;
}

static bool shape_slice(Graph *g, Node *n) {
    const Node *xn = in_node(g, n, 0);
    if (!slice_shape(g, n, &xn->shape, &n->shape)) return false;
    n->dtype = xn->dtype;
    return true;
}

/* The hint (n->shape) is the sliced tensor's shape; g must have the slice's shape. */
static bool shape_slice_bwd(Graph *g, Node *n) {
    if (!shape_require_real(g, n, 0)) return false;
    const Shape *gs = &in_node(g, n, 0)->shape;
    Shape want;
    if (!slice_shape(g, n, &n->shape, &want)) return false;
    if (!shape_eq(&want, gs)) {
        return shape_error(n, "slice_bwd: gradient %s does not match the slice %s of %s", shape_str(gs),
                           shape_str(&want), shape_str(&n->shape));
    }
    n->dtype = DT_REAL;
    return true;
}

static void grad_slice(AD *ad, int n, int gy) {
    const Node *s = &ad_src(ad)->n[n];
    const Node *x = &ad_src(ad)->n[s->in[0]];
    Attrs at = {0};
    memcpy(at.i, s->ia, sizeof at.i);
    ad_acc(ad, s->in[0], ad_add(ad, n, OP_SLICE_BWD, 1, &gy, &at, &x->shape));
}

/* The start position as C: "3", "t", "2 + 1*t". */
static const char *slice_start(Emit *e, const Node *s) {
    if (!s->ia[5]) return cc_str("%lld", (long long)s->ia[1]);
    const char *t = e_t(e);
    if (s->ia[1] == 0 && s->ia[5] == 1) return t;
    return cc_str("%lld + %lld*%s", (long long)s->ia[1], (long long)s->ia[5], t);
}

/* Kernel arguments for slicing node `full` (x for SLICE, the result for SLICE_BWD) into
 * node `part`: "outer, len, inner, start, step, count". */
static const char *slice_args(Emit *e, const Graph *g, const Node *s, int full, int part) {
    int axis = (int)s->ia[0], r = g->n[full].shape.rank;
    const char *count = s->ia[4] ? "1"
                        : (axis == 0 && g->n[part].shape.batched)
                            ? e_dim(e, part, 0)
                            : cc_str("%lld", (long long)g->n[part].shape.d[axis]);
    return cc_str("%s, %s, %s, %s, %lld, %s", e_prod(e, full, 0, axis),
                        e_dim(e, full, axis), e_prod(e, full, axis + 1, r), slice_start(e, s),
                        (long long)s->ia[3], count);
}

static void emit_slice(Emit *e, const Graph *g, int n) {
    const Node *s = &g->n[n];
    e_line(e, "%s(%s, %s, %s);", kfn(e, g, n, "slice"), slice_args(e, g, s, s->in[0], n),
           e_ptr(e, s->in[0]), e_ptr(e, n));
}

static void emit_slice_bwd(Emit *e, const Graph *g, int n) {
    const Node *s = &g->n[n];
    e_line(e, "%s(%s, %s, %s);", e_fn(e, "slice_bwd"), slice_args(e, g, s, n, s->in[0]),
           e_ptr(e, s->in[0]), e_ptr(e, n));
}

/* ======================================================================== softmax */

static bool shape_softmax(Graph *g, Node *n) {
    if (!shape_require_real(g, n, 0)) return false;
    if (in_node(g, n, 0)->shape.rank < 1) {
        return shape_error(n, "%s: needs at least one axis, got a scalar", op_info[n->op].name);
    }
    return shape_same_as_input(g, n);
}

/* (g, y): both the forward result's shape. */
static bool shape_softmax_bwd(Graph *g, Node *n) {
    const Shape *a = &in_node(g, n, 0)->shape, *b = &in_node(g, n, 1)->shape;
    if (!shape_eq(a, b)) {
        return shape_error(n, "%s: gradient %s and output %s differ", op_info[n->op].name, shape_str(a),
                           shape_str(b));
    }
    return shape_real(n, *b);
}

/* Backward from the saved output y (no aux): softmax dx = y (g - <g, y>), log_softmax
 * dx = g - exp(y) sum(g). */
static void grad_softmax(AD *ad, int n, int gy) {
    const Node *s = &ad_src(ad)->n[n];
    int in[2] = {gy, ad_x(ad, n)};
    Op bwd = s->op == OP_SOFTMAX ? OP_SOFTMAX_BWD : OP_LOG_SOFTMAX_BWD;
    ad_acc(ad, s->in[0], ad_add(ad, n, bwd, 2, in, NULL, NULL));
}

static void emit_softmax(Emit *e, const Graph *g, int n) {
    const Node *s = &g->n[n];
    int r = s->shape.rank;
    e_line(e, "%s(%s, %s, %s, %s);", e_fn(e, s->op == OP_SOFTMAX ? "softmax" : "log_softmax"),
           e_prod(e, n, 0, r - 1), e_dim(e, n, r - 1), e_ptr(e, s->in[0]), e_ptr(e, n));
}

static void emit_softmax_bwd(Emit *e, const Graph *g, int n) {
    const Node *s = &g->n[n];
    int r = s->shape.rank;
    e_line(e, "%s(%s, %s, %s, %s, %s);",
           e_fn(e, s->op == OP_SOFTMAX_BWD ? "softmax_bwd" : "log_softmax_bwd"),
           e_prod(e, n, 0, r - 1), e_dim(e, n, r - 1), e_ptr(e, s->in[0]), e_ptr(e, s->in[1]),
           e_ptr(e, n));
}

/* ======================================================================== embedding */

/* (ids i32[...], W[V, D]) -> [..., D], batched like ids.  An id outside [0, V) reads a
 * zero row at runtime (the kernel never reads out of bounds). */
static bool shape_embedding(Graph *g, Node *n) {
    const Node *ids = in_node(g, n, 0);
    const Shape *w = &in_node(g, n, 1)->shape;
    if (ids->dtype != DT_I32) {
        return shape_error(n, "embedding: ids must be i32, got f32 %s", shape_str(&ids->shape));
    }
    if (!shape_require_real(g, n, 1)) return false;
    if (w->rank != 2 || w->batched) {
        return shape_error(n, "embedding: the table must be a 2-D [V, D] tensor, got %s", shape_str(w));
    }
    if (ids->shape.rank + 1 > MAXDIM) {
        return shape_error(n, "embedding: ids %s have too many dimensions (at most %d)",
                           shape_str(&ids->shape), MAXDIM - 1);
    }
    n->shape = ids->shape;
    n->shape.d[n->shape.rank++] = w->d[1];
    n->dtype = DT_REAL;
    return true;
}

/* (g[..., D], ids[...]) -> dW[V, D] with V = ia0. */
static bool shape_embedding_bwd(Graph *g, Node *n) {
    const Shape *gs = &in_node(g, n, 0)->shape, *ids = &in_node(g, n, 1)->shape;
    bool ok = gs->rank == ids->rank + 1 && n->ia[0] > 0;
    for (int i = 0; ok && i < ids->rank; i++) ok = gs->d[i] == ids->d[i];
    if (!ok || in_node(g, n, 1)->dtype != DT_I32) {
        return shape_error(n, "embedding_bwd: gradient %s does not match ids %s (V = %lld)", shape_str(gs),
                           shape_str(ids), (long long)n->ia[0]);
    }
    return shape_real(n, shape_make(2, (int64_t[]){n->ia[0], gs->d[gs->rank - 1]}, false));
}

static void grad_embedding(AD *ad, int n, int gy) {
    const Node *s = &ad_src(ad)->n[n];
    Attrs at = {.i = {ad_src(ad)->n[s->in[1]].shape.d[0]}};
    int in[2] = {gy, ad_x(ad, s->in[0])};
    ad_acc(ad, s->in[1], ad_add(ad, n, OP_EMBEDDING_BWD, 2, in, &at, NULL));
}

static void emit_embedding(Emit *e, const Graph *g, int n) {
    const Node *s = &g->n[n];
    const Shape *w = &g->n[s->in[1]].shape;
    e_line(e, "%s(%s, %lld, %lld, %s, %s, %s);", e_fn(e, "embedding"), e_numel(e, s->in[0]),
           (long long)w->d[0], (long long)w->d[1], e_ptr(e, s->in[0]), e_ptr(e, s->in[1]),
           e_ptr(e, n));
}

static void emit_embedding_bwd(Emit *e, const Graph *g, int n) {
    const Node *s = &g->n[n];
    e_line(e, "%s(%s, %lld, %lld, %s, %s, %s);", e_fn(e, "embedding_bwd"), e_numel(e, s->in[1]),
           (long long)s->shape.d[0], (long long)s->shape.d[1], e_ptr(e, s->in[0]),
           e_ptr(e, s->in[1]), e_ptr(e, n));
}

/* ======================================================================== table */

/* ======================================================================== tape calls */

static const char *tape_matmul(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    return cc_str("cdl_t_matmul(tp, %s, %s, %d, %d)", e_ptr(e, x->in[0]), e_ptr(e, x->in[1]), x->ia[0] != 0, x->ia[1] != 0);
}

static const char *tape_linear(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    return cc_str("cdl_t_linear(tp, %s, %s, %s)", e_ptr(e, x->in[0]), e_ptr(e, x->in[1]), x->nin > 2 ? e_ptr(e, x->in[2]) : "NULL");
}

static const char *tape_reduce(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    return cc_str("cdl_t_%s(tp, %s, 0x%llxu, %d)", op_info[x->op].name, e_ptr(e, x->in[0]), (unsigned long long)x->ia[0],
                  x->ia[1] != 0);
}

/* broadcast_to and reshape: to the node's shape. */
static const char *tape_to_shape(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    return cc_str("cdl_t_%s(tp, %s, %s)", op_info[x->op].name, e_ptr(e, x->in[0]), e_dims_arg(e, n));
}

static const char *tape_transpose(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    const char *p[MAXDIM] = {"0"};
    for (int k = 0; k < x->shape.rank; k++) p[k] = cc_str("%lld", (long long)x->ia[k]);
    return cc_str("cdl_t_transpose(tp, %s, (const int[]){%s})", e_ptr(e, x->in[0]), e_join(x->shape.rank ? x->shape.rank : 1, p, ", "));
}

static const char *tape_concat(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    const char **v = NEWN(const char *, x->nin);
    for (int k = 0; k < x->nin; k++) v[k] = e_ptr(e, x->in[k]);
    return cc_str("cdl_t_concat(tp, %d, (cdl_t *[]){%s}, %lld)", x->nin, e_join(x->nin, v, ", "), (long long)x->ia[0]);
}

/* The start moves with the loop step (ia5); a full slice of the batch axis has the
 * runtime number of rows. */
static const char *tape_slice(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    const char *t = e_t(e);
    const char *start = !x->ia[5] ? cc_str("%lld", (long long)x->ia[1])
                        : x->ia[1] == 0 && x->ia[5] == 1 ? t
                                                         : cc_str("%lld + %lld*%s", (long long)x->ia[1], (long long)x->ia[5], t);
    int axis = (int)x->ia[0];
    const char *count = x->ia[4] ? "1" : axis == 0 && x->shape.batched ? e_rows(e, n) : cc_str("%lld", (long long)x->shape.d[axis]);
    return cc_str("cdl_t_slice(tp, %s, %d, %s, %lld, %s, %d)", e_ptr(e, x->in[0]), axis, start, (long long)x->ia[3], count,
                  x->ia[4] != 0);
}

/* In place: only the accumulating GEMM (ad_acc_gemm) over its accumulator, C += op(A)
 * op(B) with C = input 2 (opt_inplace's shared-storage check keeps A and B off C). */
const OpRule ops_dense_rules[] = {
    {OP_MATMUL, shape_matmul, grad_matmul, emit_matmul, NULL, .tape = tape_matmul, .inplace = INPLACE_IN(2)},
    {OP_LINEAR, shape_linear, grad_linear, emit_linear, NULL, .tape = tape_linear},
    {OP_SUM, shape_reduce, grad_sum, emit_reduce, NULL, .tape = tape_reduce},
    {OP_MEAN, shape_reduce, grad_mean, emit_reduce, NULL, .tape = tape_reduce},
    {OP_REDUCE_MAX, shape_reduce, grad_reduce_max, emit_reduce_max, aux_reduce_max, .tape = tape_reduce_max,
     .tape_scratch = tape_scratch_reduce_max},
    {OP_REDUCE_MAX_BWD, shape_reduce_max_bwd, NULL, emit_reduce_max_bwd, NULL, .tape = NULL},
    {OP_BROADCAST, shape_broadcast_to, grad_broadcast_to, emit_broadcast_to, NULL, .tape = tape_to_shape},
    {OP_RESHAPE, shape_reshape, grad_reshape, emit_view, NULL, .tape = tape_to_shape},
    {OP_TRANSPOSE, shape_transpose, grad_transpose, emit_transpose, NULL, .tape = tape_transpose},
    {OP_CONCAT, shape_concat, grad_concat, emit_concat, NULL, .tape = tape_concat},
    {OP_SLICE, shape_slice, grad_slice, emit_slice, NULL, .tape = tape_slice},
    {OP_SLICE_BWD, shape_slice_bwd, NULL, emit_slice_bwd, NULL, .tape = NULL},
    {OP_SOFTMAX, shape_softmax, grad_softmax, emit_softmax, NULL, .tape = e_tape_plain},
    {OP_LOG_SOFTMAX, shape_softmax, grad_softmax, emit_softmax, NULL, .tape = e_tape_plain},
    {OP_SOFTMAX_BWD, shape_softmax_bwd, NULL, emit_softmax_bwd, NULL, .tape = NULL},
    {OP_LOG_SOFTMAX_BWD, shape_softmax_bwd, NULL, emit_softmax_bwd, NULL, .tape = NULL},
    {OP_EMBEDDING, shape_embedding, grad_embedding, emit_embedding, NULL, .tape = e_tape_plain},
    {OP_EMBEDDING_BWD, shape_embedding_bwd, NULL, emit_embedding_bwd, NULL, .tape = NULL},
};
const int ops_dense_count = sizeof ops_dense_rules / sizeof ops_dense_rules[0];
