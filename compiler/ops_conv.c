/* ops_conv.c -- 2-D convolution, max / average pooling and batch normalisation (NCHW).
 * Per op: shape rule, gradient rule and emitter side by side; the table at the end
 * registers them.  Kernels: runtime/kernels_conv_t.h (cdl.h block CONV).
 *
 * Attributes (ops.def, plus what the backward helpers need to know their output):
 *   CONV2D         ia0 stride (0 = 1), ia1 pad
 *   CONV2D_BWD_X   (g, w) -> dx:  ia0 stride, ia1 pad, ia2 H, ia3 W of x
 *   CONV2D_BWD_W   (g, x) -> dw:  ia0 stride, ia1 pad, ia2 R, ia3 S of w
 *   MAXPOOL2D, AVGPOOL2D  ia0 kernel, ia1 stride (0 = kernel), ia2 pad
 *   MAXPOOL2D_BWD  (g, x): as the forward; ia3 = 1: relu_bwd with x as the mask folded in
 *                  (x a relu's output: static target only, opt_fuse_conv.c)
 *   AVGPOOL2D_BWD  (g): as the forward, ia3 H, ia4 W of x
 *   BATCHNORM      fa0 eps, fa1 momentum
 *   BATCHNORM_BWD  (g, bn node) -> [dgamma C | dbeta C | dx]
 * (the H/W/R/S attributes are needed because floor division in the output size makes
 * the input size ambiguous from the output's.)
 *
 * Gradient rules copy the forward node before calling ad_add: at the top level the
 * gradient graph is the forward graph, and adding a node may move its node array. */
#include "cdlc.h"
#include "cdl.h" /* the conv lowering's scratch rule, shared with the kernels */

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ helpers */

static const char *cv_name(const Node *n) { return op_info[n->op].name; }

/* "rows*k" as a C expression (rows is e_rows' string). */
static const char *cv_mul(const char *rows, int64_t k) {
    return k == 1 ? rows : cc_str("%s*%lld", rows, (long long)k);
}

static bool cv_real(const Graph *g, const Node *n) {
    for (int k = 0; k < n->nin; k++)
        if (!shape_require_real(g, n, k)) return false;
    return true;
}

static Shape cv_shape4(int64_t a, int64_t b, int64_t c, int64_t d, bool batched) {
    int64_t v[4] = {a, b, c, d};
    return shape_make(4, v, batched);
}

/* ------------------------------------------------------------------ conv geometry */

static int64_t conv_stride(const Node *n) { return n->ia[0] > 0 ? n->ia[0] : 1; }

/* The geometry of a CONV2D, CONV2D_BWD_X or CONV2D_BWD_W node (its shapes are known),
 * at the compiled batch, with the group the runtime's rule picks (cdl.h). */
static cdl_conv2d_geom conv_geom(const Graph *g, const Node *n) {
    cdl_conv2d_geom cg = {.stride = conv_stride(n), .pad = n->ia[1]};
    const Shape *x, *w, *y;
    switch (n->op) {
    case OP_CONV2D:
    case OP_CONV2D_FUSED: x = &g->n[n->in[0]].shape, w = &g->n[n->in[1]].shape, y = &n->shape; break;
    case OP_CONV2D_BWD_X:
    case OP_CONV2D_BWD_X_FUSED: y = &g->n[n->in[0]].shape, w = &g->n[n->in[1]].shape, x = &n->shape; break;
    case OP_CONV2D_BWD_W: y = &g->n[n->in[0]].shape, x = &g->n[n->in[1]].shape, w = &n->shape; break;
    default: die("conv_geom of %s", cv_name(n));
    }
    cg.n = x->d[0], cg.c = x->d[1], cg.h = x->d[2], cg.w = x->d[3];
    cg.k = w->d[0], cg.r = w->d[2], cg.s = w->d[3];
    cg.oh = y->d[2], cg.ow = y->d[3];
    cg.group = cdl_conv2d_pick_group(&cg);
    return cg;
}

/* The conv kernels' scratch (the same size for the forward and both backward ops). */
static int64_t aux_conv(const Graph *g, const Node *n) {
    cdl_conv2d_geom cg = conv_geom(g, n);
    return cdl_conv2d_scratch(&cg);
}

/* "&(cdl_conv2d_geom){...}" with the runtime batch (rows of the batched operand). */
static const char *conv_geom_lit(const cdl_conv2d_geom *cg, const char *rows) {
    return cc_str("&(cdl_conv2d_geom){.n = %s, .c = %lld, .h = %lld, .w = %lld, .k = %lld, .r = %lld, .s = %lld, "
                  ".stride = %lld, .pad = %lld, .oh = %lld, .ow = %lld, .group = %lld}",
                  rows, (long long)cg->c, (long long)cg->h, (long long)cg->w, (long long)cg->k, (long long)cg->r,
                  (long long)cg->s, (long long)cg->stride, (long long)cg->pad, (long long)cg->oh, (long long)cg->ow,
                  (long long)cg->group);
}

static const char *conv_scratch_ptr(Emit *e, const Graph *g, int n) {
    return aux_conv(g, &g->n[n]) > 0 ? e_aux(e, n) : "NULL";
}

/* Output size along one axis; false when the kernel does not fit the padded input. */
static bool conv_out(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t *out) {
    if (in + 2 * pad < k) return false;
    *out = (in + 2 * pad - k) / stride + 1;
    return true;
}

/* ------------------------------------------------------------------ CONV2D */

static bool shape_conv2d(Graph *g, Node *n) {
    if (n->nin != 2 && n->nin != 3) {
        return shape_error(n, "conv2d: takes an input, a weight and an optional bias; got %d arguments", n->nin);
    }
    if (!cv_real(g, n)) return false;
    const Shape *x = &g->n[n->in[0]].shape, *w = &g->n[n->in[1]].shape;
    if (x->rank != 4) {
        return shape_error(n, "conv2d: input must be 4-D [N, C, H, W], got %s", shape_str(x));
    }
    if (w->rank != 4) {
        return shape_error(n, "conv2d: weight must be 4-D [K, C, R, S], got %s", shape_str(w));
    }
    if (x->d[1] != w->d[1]) {
        return shape_error(n, "conv2d: input has %lld channels, the weight expects %lld: %s * %s", (long long)x->d[1],
                           (long long)w->d[1], shape_str(x), shape_str(w));
    }
    if (n->nin == 3) {
        const Shape *b = &g->n[n->in[2]].shape;
        if (b->rank != 1 || b->d[0] != w->d[0]) {
            return shape_error(n, "conv2d: bias must be [%lld] (one per output channel), got %s", (long long)w->d[0],
                               shape_str(b));
        }
    }
    if (n->ia[0] < 0 || n->ia[1] < 0) {
        return shape_error(n, "conv2d: stride must be positive and padding non-negative (stride %lld, padding %lld)",
                           (long long)n->ia[0], (long long)n->ia[1]);
    }
    int64_t st = conv_stride(n), pad = n->ia[1], oh, ow;
    if (!conv_out(x->d[2], w->d[2], st, pad, &oh) || !conv_out(x->d[3], w->d[3], st, pad, &ow)) {
        return shape_error(n, "conv2d: kernel %lldx%lld is larger than the padded input %lldx%lld (input %s, padding %lld)",
                           (long long)w->d[2], (long long)w->d[3], (long long)(x->d[2] + 2 * pad),
                           (long long)(x->d[3] + 2 * pad), shape_str(x), (long long)pad);
    }
    return shape_real(n, cv_shape4(x->d[0], w->d[0], oh, ow, x->batched));
}

/* dx = CONV2D_BWD_X(g, w), dw = CONV2D_BWD_W(g, x), db = sum of g over N, H, W. */
static void grad_conv2d(AD *ad, int n, int gy) {
    const Node y = ad_src(ad)->n[n];
    const Shape xs = ad_src(ad)->n[y.in[0]].shape, ws = ad_src(ad)->n[y.in[1]].shape;
    Attrs ax = {.i = {conv_stride(&y), y.ia[1], xs.d[2], xs.d[3]}};
    Attrs aw = {.i = {conv_stride(&y), y.ia[1], ws.d[2], ws.d[3]}};
    int inx[2] = {gy, ad_x(ad, y.in[1])}, inw[2] = {gy, ad_x(ad, y.in[0])};
    ad_acc(ad, y.in[0], ad_add(ad, n, OP_CONV2D_BWD_X, 2, inx, &ax, NULL));
    ad_acc(ad, y.in[1], ad_add(ad, n, OP_CONV2D_BWD_W, 2, inw, &aw, NULL));
    if (y.nin == 3) {
        Attrs as = {.i = {1 | 4 | 8, 0}};
        ad_acc(ad, y.in[2], ad_add(ad, n, OP_SUM, 1, &gy, &as, NULL));
    }
}

static void emit_conv2d(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    cdl_conv2d_geom cg = conv_geom(g, y);
    e_conv_call(e, n, "conv2d", conv_geom_lit(&cg, e_rows(e, y->in[0])), true, conv_scratch_ptr(e, g, n));
}

/* ------------------------------------------------------------------ CONV2D_BWD_X / _W */

/* CONV2D_BWD_X: (g[N, K, OH, OW], w[K, C, R, S]) -> dx[N, C, H, W], H and W from ia2, ia3;
 * CONV2D_BWD_W: (g[N, K, OH, OW], x[N, C, H, W]) -> dw[K, C, R, S], R and S from ia2, ia3.
 * Either way g must lie on the output grid of the H x W input under the R x S kernel at
 * the node's stride (ia0) and padding (ia1). */
static bool shape_conv2d_bwd(Graph *g, Node *n) {
    const bool dx = n->op == OP_CONV2D_BWD_X;
    const Shape *gs = &g->n[n->in[0]].shape, *o = &g->n[n->in[1]].shape;   /* o: w (dx) or x (dw) */
    if (gs->rank == 4 && o->rank == 4 && gs->d[dx ? 1 : 0] == o->d[0]) {
        int64_t h = dx ? n->ia[2] : o->d[2], w = dx ? n->ia[3] : o->d[3];
        int64_t r = dx ? o->d[2] : n->ia[2], s = dx ? o->d[3] : n->ia[3], oh, ow, st = conv_stride(n);
        if (conv_out(h, r, st, n->ia[1], &oh) && conv_out(w, s, st, n->ia[1], &ow) && oh == gs->d[2] && ow == gs->d[3])
            return shape_real(n, dx ? cv_shape4(gs->d[0], o->d[1], n->ia[2], n->ia[3], gs->batched)
                                    : cv_shape4(gs->d[1], o->d[1], n->ia[2], n->ia[3], false));
    }
    return shape_error(n, "%s: gradient %s does not match %s %s for a %lldx%lld %s", op_info[n->op].name,
                       shape_str(gs), dx ? "weight" : "input", shape_str(o), (long long)n->ia[2], (long long)n->ia[3],
                       dx ? "input" : "kernel");
}

/* ------------------------------------------------------------------ CONV2D_BWD_XW
 *
 * A convolution's bwd_w (node m) and bwd_x or bwd_x_fused (node n, a node or two later)
 * read the same g: opt_pair_conv (opt_fuse_conv.c) marks them (n's xw_dw = m + 1, m's
 * xw_at = n + 1), and the bias gradient's SUM too (xw_db, its xw_at), when the static
 * code can make them one call, cdl_conv2d_bwd_xw, at n: it pads g once for all three
 * and writes m's dw and the SUM's db there (same bits as the separate kernels).  The
 * tape keeps calling the separate kernels. */

/* cdlc.h */
bool conv_same_geom(const Graph *g, int a, int b) {
    cdl_conv2d_geom ga = conv_geom(g, &g->n[a]), gb = conv_geom(g, &g->n[b]);
    return memcmp(&ga, &gb, sizeof ga) == 0;
}

static void emit_conv2d_bwd_xw(Emit *e, const Graph *g, int m, int n, const char *acc, const char *mask) {
    const Node *d = &g->n[n];
    cdl_conv2d_geom cg = conv_geom(g, d);
    int s = d->xw_db - 1;
    e_line(e, "%s(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s);", e_fn(e, "conv2d_bwd_xw"),
           conv_geom_lit(&cg, e_rows(e, d->in[0])), e_ptr(e, d->in[0]), e_ptr(e, d->in[1]), e_ptr(e, g->n[m].in[1]), acc,
           mask, e_ptr(e, n), e_ptr(e, m), s >= 0 ? e_ptr(e, s) : "NULL", conv_scratch_ptr(e, g, n));
}

static void emit_conv2d_bwd_x(Emit *e, const Graph *g, int n) {
    const Node *d = &g->n[n];
    if (d->xw_dw) {
        emit_conv2d_bwd_xw(e, g, d->xw_dw - 1, n, "NULL", "NULL");
        return;
    }
    cdl_conv2d_geom cg = conv_geom(g, d);
    e_conv_call(e, n, "conv2d_bwd_x", conv_geom_lit(&cg, e_rows(e, d->in[0])), false, conv_scratch_ptr(e, g, n));
}

static void emit_conv2d_bwd_w(Emit *e, const Graph *g, int n) {
    const Node *d = &g->n[n];
    if (d->xw_at) {
        e_line(e, "/* computed with %s by conv2d_bwd_xw below */", e->name[d->xw_at - 1]);
        return;
    }
    cdl_conv2d_geom cg = conv_geom(g, d);
    /* the runtime batch: rows of whichever operand scales with it */
    int b = g->n[d->in[1]].shape.batched ? d->in[1] : d->in[0];
    e_conv_call(e, n, "conv2d_bwd_w", conv_geom_lit(&cg, e_rows(e, b)), false, conv_scratch_ptr(e, g, n));
}

/* ------------------------------------------------------------------ CONV2D_FUSED / CONV2D_BWD_X_FUSED
 *
 * Made by compiler/opt_fuse_conv.c from a conv2d (conv2d_bwd_x) and the relu, add and
 * relu_bwd after it; never by user code, never on the tape (which calls the separate
 * kernels).  The shape rule is the plain op's on the leading inputs, and the epilogue's
 * tensors must have the result's shape. */

static bool fused_epilogue_shapes(Graph *g, Node *n, int first) {
    for (int k = first; k < n->nin; k++)
        if (!shape_eq(&g->n[n->in[k]].shape, &n->shape) || g->n[n->in[k]].shape.batched != n->shape.batched) {
            return shape_error(n, "%s: epilogue operand %s does not match the result %s", cv_name(n),
                               shape_str(&g->n[n->in[k]].shape), shape_str(&n->shape));
        }
    return true;
}

static bool shape_conv2d_fused(Graph *g, Node *n) {
    const int64_t bits = n->ia[2];
    const int want = 2 + !!(bits & CONV_FUSE_BIAS) + !!(bits & CONV_FUSE_ADD);
    if (n->nin != want || (bits & CONV_FUSE_MASK)) {
        return shape_error(n, "conv2d_fused: %d inputs for epilogue bits %lld", n->nin, (long long)bits);
    }
    Node plain = *n;
    plain.op = OP_CONV2D;
    plain.nin = 2 + !!(bits & CONV_FUSE_BIAS);
    if (!shape_conv2d(g, &plain)) return false;
    n->shape = plain.shape, n->dtype = plain.dtype;
    return fused_epilogue_shapes(g, n, plain.nin);
}

static bool shape_conv2d_bwd_x_fused(Graph *g, Node *n) {
    const int64_t bits = n->ia[4];
    const int want = 2 + !!(bits & CONV_FUSE_MASK) + !!(bits & CONV_FUSE_ADD);
    if (n->nin != want || (bits & (CONV_FUSE_BIAS | CONV_FUSE_RELU))) {
        return shape_error(n, "conv2d_bwd_x_fused: %d inputs for epilogue bits %lld", n->nin, (long long)bits);
    }
    Node plain = *n;
    plain.op = OP_CONV2D_BWD_X;
    plain.nin = 2;
    if (!shape_conv2d_bwd(g, &plain)) return false;
    n->shape = plain.shape, n->dtype = plain.dtype;
    return fused_epilogue_shapes(g, n, 2);
}

/* Input k of fused node y when its bit is set (inputs in bit order after the first
 * two), else "NULL". */
static const char *fused_in(Emit *e, const Node *y, int64_t bits, int64_t bit) {
    if (!(bits & bit)) return "NULL";
    int k = 2;
    for (int64_t b = 1; b < bit; b <<= 1)
        if (bits & b) k++;
    return e_ptr(e, y->in[k]);
}

static void emit_conv2d_fused(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    const int64_t bits = y->ia[2];
    cdl_conv2d_geom cg = conv_geom(g, y);
    e_line(e, "%s(%s, %s, %s, %s, %s, %d, %s, %s);", e_fn(e, "conv2d_fused"), conv_geom_lit(&cg, e_rows(e, y->in[0])),
           e_ptr(e, y->in[0]), e_ptr(e, y->in[1]), fused_in(e, y, bits, CONV_FUSE_BIAS), fused_in(e, y, bits, CONV_FUSE_ADD),
           (bits & CONV_FUSE_RELU) ? 1 : 0, e_ptr(e, n), conv_scratch_ptr(e, g, n));
}

static void emit_conv2d_bwd_x_fused(Emit *e, const Graph *g, int n) {
    const Node *d = &g->n[n];
    const int64_t bits = d->ia[4];
    cdl_conv2d_geom cg = conv_geom(g, d);
    /* inputs (g, w, mask?, acc?): the mask's bit is the higher one, so name them by position */
    int k = 2;
    const char *mask = (bits & CONV_FUSE_MASK) ? e_ptr(e, d->in[k++]) : "NULL";
    const char *acc = (bits & CONV_FUSE_ADD) ? e_ptr(e, d->in[k++]) : "NULL";
    if (d->xw_dw) {
        emit_conv2d_bwd_xw(e, g, d->xw_dw - 1, n, acc, mask);
        return;
    }
    e_line(e, "%s(%s, %s, %s, %s, %s, %s, %s);", e_fn(e, "conv2d_bwd_x_fused"), conv_geom_lit(&cg, e_rows(e, d->in[0])),
           e_ptr(e, d->in[0]), e_ptr(e, d->in[1]), acc, mask, e_ptr(e, n), conv_scratch_ptr(e, g, n));
}

/* ------------------------------------------------------------------ pooling */

static int64_t pool_stride(const Node *n) { return n->ia[1] > 0 ? n->ia[1] : n->ia[0]; }

/* Pooling input: [N, C, H, W] or [C, H, W]; the leading dims are independent planes.
 * The output size into *oh x *ow (0 x 0 on an error: written on every path). */
static bool pool_check(const Graph *g, Node *n, const Shape *x, int64_t *oh, int64_t *ow) {
    const char *nm = cv_name(n);
    *oh = *ow = 0;
    if (!shape_require_real(g, n, 0)) return false;
    if (x->rank != 3 && x->rank != 4) {
        return shape_error(n, "%s: input must be [N, C, H, W] or [C, H, W], got %s", nm, shape_str(x));
    }
    int64_t k = n->ia[0], st = pool_stride(n), pad = n->ia[2];
    if (k < 1 || n->ia[1] < 0 || pad < 0 || 2 * pad > k) {
        return shape_error(n, "%s: kernel %lld, stride %lld, padding %lld: need kernel >= 1, stride >= 1 and padding at "
                           "most half the kernel", nm, (long long)k, (long long)st, (long long)pad);
    }
    int64_t H = x->d[x->rank - 2], W = x->d[x->rank - 1];
    if (!conv_out(H, k, st, pad, oh) || !conv_out(W, k, st, pad, ow)) {
        return shape_error(n, "%s: kernel %lld is larger than the padded input %lldx%lld (input %s)", nm, (long long)k,
                           (long long)(H + 2 * pad), (long long)(W + 2 * pad), shape_str(x));
    }
    return true;
}

static bool shape_pool(Graph *g, Node *n) {
    const Shape *x = &g->n[n->in[0]].shape;
    int64_t oh, ow;
    if (!pool_check(g, n, x, &oh, &ow)) return false;
    n->shape = *x;
    n->shape.d[x->rank - 2] = oh;
    n->shape.d[x->rank - 1] = ow;
    n->dtype = DT_REAL;
    return true;
}

/* MAXPOOL2D_BWD (g, x): dx shaped like x, g shaped like the pool of x. */
static bool shape_maxpool_bwd(Graph *g, Node *n) {
    const Shape *gs = &g->n[n->in[0]].shape, *x = &g->n[n->in[1]].shape;
    int64_t oh, ow;
    if (!pool_check(g, n, x, &oh, &ow)) return false;
    Shape want = *x;
    want.d[x->rank - 2] = oh;
    want.d[x->rank - 1] = ow;
    if (!shape_eq(gs, &want)) {
        return shape_error(n, "maxpool2d_bwd: gradient %s, expected %s", shape_str(gs), shape_str(&want));
    }
    return shape_real(n, *x);
}

/* AVGPOOL2D_BWD (g): dx of g's leading dims and the input size ia3 x ia4. */
static bool shape_avgpool_bwd(Graph *g, Node *n) {
    const Shape *gs = &g->n[n->in[0]].shape;
    if (gs->rank != 3 && gs->rank != 4) {
        return shape_error(n, "avgpool2d_bwd: gradient %s is not 3-D or 4-D", shape_str(gs));
    }
    Shape x = *gs;
    x.d[x.rank - 2] = n->ia[3];
    x.d[x.rank - 1] = n->ia[4];
    int64_t oh, ow;
    if (n->ia[3] < 1 || n->ia[4] < 1) {
        return shape_error(n, "avgpool2d_bwd: input size %lldx%lld", (long long)n->ia[3], (long long)n->ia[4]);
    }
    if (!pool_check(g, n, &x, &oh, &ow)) return false;
    if (oh != gs->d[gs->rank - 2] || ow != gs->d[gs->rank - 1]) {
        return shape_error(n, "avgpool2d_bwd: gradient %s does not come from a %lldx%lld input", shape_str(gs),
                           (long long)n->ia[3], (long long)n->ia[4]);
    }
    return shape_real(n, x);
}

static void grad_maxpool(AD *ad, int n, int gy) {
    const Node y = ad_src(ad)->n[n];
    Attrs at = {.i = {y.ia[0], pool_stride(&y), y.ia[2]}};
    int in[2] = {gy, ad_x(ad, y.in[0])};
    ad_acc(ad, y.in[0], ad_add(ad, n, OP_MAXPOOL2D_BWD, 2, in, &at, NULL));
}

static void grad_avgpool(AD *ad, int n, int gy) {
    const Node y = ad_src(ad)->n[n];
    const Shape xs = ad_src(ad)->n[y.in[0]].shape;
    Attrs at = {.i = {y.ia[0], pool_stride(&y), y.ia[2], xs.d[xs.rank - 2], xs.d[xs.rank - 1]}};
    ad_acc(ad, y.in[0], ad_add(ad, n, OP_AVGPOOL2D_BWD, 1, &gy, &at, NULL));
}

/* "nc, H, W, k, stride, pad" for a pooling kernel over node x (the pool's input shape). */
static const char *pool_args(Emit *e, const Node *p, int x, const Shape *xs) {
    int64_t planes = 1;
    for (int i = 1; i < xs->rank - 2; i++) planes *= xs->d[i];
    return cc_str("%s, %lld, %lld, %lld, %lld, %lld", cv_mul(e_rows(e, x), planes), (long long)xs->d[xs->rank - 2],
                  (long long)xs->d[xs->rank - 1], (long long)p->ia[0], (long long)pool_stride(p), (long long)p->ia[2]);
}

static void emit_pool(Emit *e, const Graph *g, int n) {
    const Node *p = &g->n[n];
    const char *k = p->op == OP_MAXPOOL2D ? "maxpool2d" : "avgpool2d";
    e_line(e, "%s(%s, %s, %s);", e_fn(e, k), pool_args(e, p, p->in[0], &g->n[p->in[0]].shape), e_ptr(e, p->in[0]),
           e_ptr(e, n));
}

static void emit_maxpool_bwd(Emit *e, const Graph *g, int n) {
    const Node *p = &g->n[n];
    e_line(e, "%s(%s, %s, %s, %s);", e_fn(e, p->ia[3] ? "maxpool2d_bwd_relu" : "maxpool2d_bwd"), pool_args(e, p, p->in[1], &g->n[p->in[1]].shape),
           e_ptr(e, p->in[0]), e_ptr(e, p->in[1]), e_ptr(e, n));
}

static void emit_avgpool_bwd(Emit *e, const Graph *g, int n) {
    const Node *p = &g->n[n];
    /* dx has the input's shape and g's rows */
    e_line(e, "%s(%s, %s, %s);", e_fn(e, "avgpool2d_bwd"), pool_args(e, p, p->in[0], &p->shape), e_ptr(e, p->in[0]),
           e_ptr(e, n));
}

/* ------------------------------------------------------------------ BATCHNORM */

/* Per-channel plane size: the product of the dims after N and C. */
static int64_t bn_hw(const Shape *x) {
    int64_t hw = 1;
    for (int i = 2; i < x->rank; i++) hw *= x->d[i];
    return hw;
}

static bool shape_batchnorm(Graph *g, Node *n) {
    if (!cv_real(g, n)) return false;
    const Shape *x = &g->n[n->in[0]].shape;
    if (x->rank < 2) {
        return shape_error(n, "batchnorm: input must be [N, C] or [N, C, ...], got %s", shape_str(x));
    }
    static const char *what[] = {"", "weight (gamma)", "bias (beta)", "running_mean", "running_var"};
    for (int k = 1; k < 5; k++) {
        const Shape *s = &g->n[n->in[k]].shape;
        if (s->rank != 1 || s->d[0] != x->d[1]) {
            return shape_error(n, "batchnorm: %s must be [%lld] for input %s, got %s", what[k], (long long)x->d[1],
                               shape_str(x), shape_str(s));
        }
    }
    if (!(n->fa[0] >= 0) || !(n->fa[1] >= 0 && n->fa[1] <= 1)) {
        return shape_error(n, "batchnorm: eps must be >= 0 and momentum in [0, 1] (eps %g, momentum %g)", n->fa[0], n->fa[1]);
    }
    return shape_real(n, *x);
}

/* Does batch-norm node bn save xhat for a backward node?  In a loop body the backward
 * lives in another graph: always. */
static bool bn_saves_xhat(const Graph *g, int bn) {
    if (g->parent) return true;
    for (int i = bn + 1; i < g->len; i++) {
        const Node *b = &g->n[i];
        if (b->op == OP_BATCHNORM_BWD && b->in[1] == bn && !(b->flags & NF_DEAD)) return true;
    }
    return false;
}

/* aux: [mean C | invstd C | gamma*invstd C | xhat (when a backward reads it)] */
static int64_t aux_batchnorm(const Graph *g, const Node *n) {
    const Shape *x = &g->n[n->in[0]].shape;
    int id = (int)(n - g->n);
    return 3 * x->d[1] + (bn_saves_xhat(g, id) ? shape_numel(x) : 0);
}

/* BATCHNORM_BWD makes the packed [dgamma | dbeta | dx]; three views unpack it. */
static void grad_batchnorm(AD *ad, int n, int gy) {
    const Node y = ad_src(ad)->n[n];
    const Shape xs = ad_src(ad)->n[y.in[0]].shape;
    int64_t C = xs.d[1];
    int in[2] = {gy, ad_x(ad, n)};
    int bwd = ad_add(ad, n, OP_BATCHNORM_BWD, 2, in, NULL, NULL);
    Shape sc = {.rank = 1, .d = {C}};
    Attrs a0 = {.i = {0}}, a1 = {.i = {C}}, a2 = {.i = {2 * C}};
    int dgamma = ad_add(ad, n, OP_VIEW, 1, &bwd, &a0, &sc);
    int dbeta = ad_add(ad, n, OP_VIEW, 1, &bwd, &a1, &sc);
    int dx = ad_add(ad, n, OP_VIEW, 1, &bwd, &a2, &xs);
    ad_acc(ad, y.in[0], dx);
    ad_acc(ad, y.in[1], dgamma);
    ad_acc(ad, y.in[2], dbeta);
}

static void emit_batchnorm(Emit *e, const Graph *g, int n) {
    const Node *b = &g->n[n];
    const Shape *x = &g->n[b->in[0]].shape;
    e_line(e, "%s(%d, %s, %lld, %lld, %s, %s, %s, %s, %s, %s, %s, %s, %s, %d);", e_fn(e, "batchnorm"), e_train(e) ? 1 : 0,
           e_rows(e, b->in[0]), (long long)x->d[1], (long long)bn_hw(x), e_lit(b->fa[0]), e_lit(b->fa[1]),
           e_ptr(e, b->in[0]), e_ptr(e, b->in[1]), e_ptr(e, b->in[2]), e_ptr(e, b->in[3]), e_ptr(e, b->in[4]),
           e_ptr(e, n), e_aux(e, n), bn_saves_xhat(g, n) ? 1 : 0);
}

/* (g shaped like x, bn node) -> [2C + numel(x)], not batched (a packed buffer). */
static bool shape_batchnorm_bwd(Graph *g, Node *n) {
    const Shape *gs = &g->n[n->in[0]].shape, *ys = &g->n[n->in[1]].shape;
    if (g->n[n->in[1]].op != OP_BATCHNORM && g->n[n->in[1]].op != OP_LOOP_SAVED)
        die("batchnorm_bwd: input 2 must be the batchnorm node");
    if (!shape_eq(gs, ys) || gs->rank < 2) {
        return shape_error(n, "batchnorm_bwd: gradient %s, batchnorm output %s", shape_str(gs), shape_str(ys));
    }
    return shape_real(n, (Shape){.rank = 1, .d = {2 * ys->d[1] + shape_numel(ys)}});
}

static void emit_batchnorm_bwd(Emit *e, const Graph *g, int n) {
    const Node *b = &g->n[n];
    const Shape *x = &g->n[b->in[0]].shape;
    e_line(e, "%s(%d, %s, %lld, %lld, %s, %s, %s);", e_fn(e, "batchnorm_bwd"), e_train(e) ? 1 : 0, e_rows(e, b->in[0]),
           (long long)x->d[1], (long long)bn_hw(x), e_ptr(e, b->in[0]), e_aux(e, b->in[1]), e_ptr(e, n));
}

/* ------------------------------------------------------------------ table */

/* ------------------------------------------------------------------ tape calls */

static const char *tape_conv2d(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    return cc_str("cdl_t_conv2d(tp, %s, %s, %s, %lld, %lld)", e_ptr(e, x->in[0]), e_ptr(e, x->in[1]),
                  x->nin > 2 ? e_ptr(e, x->in[2]) : "NULL", (long long)conv_stride(x), (long long)x->ia[1]);
}

/* The tape's conv scratch is short-lived: the kernels' own scratch rule (cdl.h) at the
 * runtime batch, at most what it is at the compiled batch. */
static void tape_scratch_conv2d(const Graph *g, const Node *n, int real_size, int64_t *keep, int64_t *tmp) {
    (void)keep;
    *tmp = aux_conv(g, n) * real_size;
}

static const char *tape_pool(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    return cc_str("cdl_t_%s(tp, %s, %lld, %lld, %lld)", cv_name(x), e_ptr(e, x->in[0]), (long long)x->ia[0],
                  (long long)(x->ia[1] > 0 ? x->ia[1] : x->ia[0]), (long long)x->ia[2]);
}

static const char *tape_batchnorm(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    return cc_str("cdl_t_batchnorm(tp, %s, %s, %s, %s, %s, %s, %s)", e_ptr(e, x->in[0]), e_ptr(e, x->in[1]), e_ptr(e, x->in[2]),
                  e_ptr(e, x->in[3]), e_ptr(e, x->in[4]), e_lit(x->fa[0]), e_lit(x->fa[1]));
}

/* The tape keeps mean, invstd, a third per-channel vector and the normalised input;
 * its backward takes two per-channel sums and a dx-sized temporary. */
static void tape_scratch_batchnorm(const Graph *g, const Node *n, int real_size, int64_t *keep, int64_t *tmp) {
    (void)g;
    int64_t c = n->shape.d[1], numel = shape_numel(&n->shape);
    *keep = (3 * c + numel) * real_size;
    *tmp = (2 * c + numel) * real_size;
}

const OpRule ops_conv_rules[] = {
    {OP_CONV2D, shape_conv2d, grad_conv2d, emit_conv2d, aux_conv, .tape = tape_conv2d, .tape_scratch = tape_scratch_conv2d},
    {OP_CONV2D_BWD_X, shape_conv2d_bwd, NULL, emit_conv2d_bwd_x, aux_conv, .tape = NULL},
    {OP_CONV2D_BWD_W, shape_conv2d_bwd, NULL, emit_conv2d_bwd_w, aux_conv, .tape = NULL},
    {OP_CONV2D_FUSED, shape_conv2d_fused, NULL, emit_conv2d_fused, aux_conv, .tape = NULL},
    {OP_CONV2D_BWD_X_FUSED, shape_conv2d_bwd_x_fused, NULL, emit_conv2d_bwd_x_fused, aux_conv, .tape = NULL},
    {OP_MAXPOOL2D, shape_pool, grad_maxpool, emit_pool, NULL, .tape = tape_pool},
    {OP_MAXPOOL2D_BWD, shape_maxpool_bwd, NULL, emit_maxpool_bwd, NULL, .tape = NULL},
    {OP_AVGPOOL2D, shape_pool, grad_avgpool, emit_pool, NULL, .tape = tape_pool},
    {OP_AVGPOOL2D_BWD, shape_avgpool_bwd, NULL, emit_avgpool_bwd, NULL, .tape = NULL},
    {OP_BATCHNORM, shape_batchnorm, grad_batchnorm, emit_batchnorm, aux_batchnorm, .tape = tape_batchnorm,
     .tape_scratch = tape_scratch_batchnorm},
    {OP_BATCHNORM_BWD, shape_batchnorm_bwd, NULL, emit_batchnorm_bwd, NULL, .tape = NULL},
};
const int ops_conv_count = sizeof ops_conv_rules / sizeof ops_conv_rules[0];
