/* ops_conv2.c -- the general convolution family (NCHW, or NCL for 1-D): convolution
 * with rectangular kernels, per-axis stride, padding and dilation, and groups;
 * transposed convolution; rectangular and adaptive pooling; nearest and bilinear
 * upsampling.  Per op: shape rule, gradient rule, emitter and tape call side by side;
 * the table at the end registers them.  Kernels: runtime/kernels_conv2_t.h (cdl.h
 * block CONV2); tape: runtime/tape_conv2.c.  (The square convolution and pooling of
 * ops_conv.c stay the ops of the geometries they cover.)
 *
 *   CONV        (x [N, C, (H,) W], w [K, C/groups, (R,) S], b [K]?) -> [N, K, (OH,) OW]
 *   CONV_T      (x [N, Ci, (H,) W], w [Ci, Co/groups, (R,) S], b [Co]?) -> the node's shape
 *               (given by its maker: the output_padding makes it ambiguous); also the
 *               input gradient of CONV (no bias)
 *   CONV_BWD_W  (gy, xin) -> dw, the node's shape: the weight gradient of the convolution
 *               taking xin to gy (CONV: (g, x); CONV_T: (x, g))
 *   attributes of the three: ia0 sh, ia1 sw, ia2 ph, ia3 pw, ia4 dh, ia5 dw, ia6 groups;
 *   a 1-D node (rank 3) has sh = dh = 1, ph = 0.
 *   POOL        (x [N, C, (H,) W]) ia0 kind (CDL_POOL_MAX, CDL_POOL_AVG, CDL_POOL_ADAPTIVE), ia1 kh,
 *               ia2 kw, ia3 sh, ia4 sw, ia5 ph, ia6 pw; adaptive: the node's shape
 *   POOL_BWD    max: (g, x); average: (g) -> the node's shape (x's); attributes as POOL
 *   UPSAMPLE    (x [N, C, H, W]) -> the node's shape; ia0 0 nearest, 1 bilinear; fa0, fa1
 *               the scale factors given (0: none); UPSAMPLE_BWD (g) -> the node's shape
 */
#include "cdlc.h"
#include "cdl.h" /* the convolution geometry and its scratch rule, shared with the kernels */

#include <string.h>

static const Node *in_node(const Graph *g, const Node *n, int k) { return &g->n[n->in[k]]; }

static bool c2_real(const Graph *g, const Node *n) {
    for (int k = 0; k < n->nin; k++)
        if (!shape_require_real(g, n, k)) return false;
    return true;
}

/* Spatial size of s along axis 0 (H; 1 for a 1-D shape) or 1 (W). */
static int64_t c2_sp(const Shape *s, int axis) { return s->rank == 4 ? s->d[2 + axis] : axis ? s->d[2] : 1; }

/* Output size along one axis, or 0 when the dilated kernel does not fit. */
static int64_t c2_out(int64_t in, int64_t k, int64_t st, int64_t pad, int64_t dil) {
    int64_t span = dil * (k - 1) + 1;
    return in + 2 * pad < span ? 0 : (in + 2 * pad - span) / st + 1;
}

/* Shape [n, c, (h,) w] of rank r. */
static Shape c2_shape(int r, int64_t n, int64_t c, int64_t h, int64_t w, bool batched) {
    int64_t d[4] = {n, c, r == 4 ? h : w, w};
    return shape_make(r, d, batched);
}

/* ======================================================================== geometry */

/* The convolution taking `in` [N, C, ...] to `out` [N, K, ...] with weight shape w and
 * n's attributes, at the compiled batch (cdl_convg_init picks the image grouping). */
static cdl_convg_geom c2_geom(const Node *n, const Shape *in, const Shape *w, const Shape *out) {
    cdl_convg_geom cg = {.n = in->d[0], .c = in->d[1], .h = c2_sp(in, 0), .w = c2_sp(in, 1), .k = out->d[1],
                         .r = c2_sp(w, 0), .s = c2_sp(w, 1), .sh = n->ia[0], .sw = n->ia[1], .ph = n->ia[2],
                         .pw = n->ia[3], .dh = n->ia[4], .dw = n->ia[5], .groups = n->ia[6]};
    cdl_convg_init(&cg);
    return cg;
}

/* The geometry of a CONV, CONV_T or CONV_BWD_W node (see the header). */
static cdl_convg_geom c2_node_geom(const Graph *g, const Node *n) {
    const Shape *a = &in_node(g, n, 0)->shape, *b = &in_node(g, n, 1)->shape;
    switch (n->op) {
    case OP_CONV: return c2_geom(n, a, b, &n->shape);
    case OP_CONV_T: return c2_geom(n, &n->shape, b, a);
    case OP_CONV_BWD_W: return c2_geom(n, b, &n->shape, a);
    default: die("c2_node_geom of %s", op_info[n->op].name);
    }
}

/* The attributes make sense for a rank-r node. */
static bool c2_attrs_ok(const Node *n, int r) {
    for (int i = 0; i < 7; i++)
        if (n->ia[i] < (i == 2 || i == 3 ? 0 : 1)) return false;
    return r == 4 || (n->ia[0] == 1 && n->ia[2] == 0 && n->ia[4] == 1);
}

/* The convolution taking in [N, C, ...] through a weight w to out: channels, groups
 * and sizes agree.  A message names op when they do not (user error for CONV and
 * CONV_T, whose makers check less; internal for CONV_BWD_W). */
static bool c2_check(const Node *n, const char *op, const Shape *in, const Shape *w, const Shape *out) {
    int r = in->rank;
    if ((r != 3 && r != 4) || w->rank != r || out->rank != r) {
        return shape_error(n, "%s: input must be [N, C, L] or [N, C, H, W] with a weight of the same rank, got %s and weight %s",
                           op, shape_str(in), shape_str(w));
    }
    if (!c2_attrs_ok(n, r)) die("%s: bad attributes", op);
    int64_t gr = n->ia[6], c = in->d[1], k = out->d[1];
    if (c % gr || k % gr || w->d[1] * gr != c || w->d[0] != k) {
        return shape_error(n, "%s: %lld groups do not fit %lld input and %lld output channels with weight %s", op,
                           (long long)gr, (long long)c, (long long)k, shape_str(w));
    }
    int64_t oh = c2_out(c2_sp(in, 0), c2_sp(w, 0), n->ia[0], n->ia[2], n->ia[4]);
    int64_t ow = c2_out(c2_sp(in, 1), c2_sp(w, 1), n->ia[1], n->ia[3], n->ia[5]);
    if (oh < 1 || ow < 1) {
        return shape_error(n, "%s: the kernel %s (dilation %lld, %lld) is larger than the padded input %s (padding %lld, %lld)",
                           op, shape_str(w), (long long)n->ia[4], (long long)n->ia[5], shape_str(in), (long long)n->ia[2],
                           (long long)n->ia[3]);
    }
    if (oh != c2_sp(out, 0) || ow != c2_sp(out, 1) || out->d[0] != in->d[0]) {
        return shape_error(n, "%s: %s and %s are not the two sides of a convolution with weight %s", op, shape_str(in),
                           shape_str(out), shape_str(w));
    }
    return true;
}

/* The geometry as a C literal with the runtime batch rows. */
static const char *c2_geom_lit(const cdl_convg_geom *g, const char *rows) {
    return cc_str("&(cdl_convg_geom){.n = %s, .c = %lld, .h = %lld, .w = %lld, .k = %lld, .r = %lld, .s = %lld, "
                  ".sh = %lld, .sw = %lld, .ph = %lld, .pw = %lld, .dh = %lld, .dw = %lld, .groups = %lld, "
                  ".oh = %lld, .ow = %lld, .ipg = %lld}",
                  rows, (long long)g->c, (long long)g->h, (long long)g->w, (long long)g->k, (long long)g->r,
                  (long long)g->s, (long long)g->sh, (long long)g->sw, (long long)g->ph, (long long)g->pw,
                  (long long)g->dh, (long long)g->dw, (long long)g->groups, (long long)g->oh, (long long)g->ow,
                  (long long)g->ipg);
}

/* The options of the tape's calls, from the attributes. */
static const char *c2_opts_lit(const Node *n) {
    return cc_str("&(cdl_conv_opts){.sh = %lld, .sw = %lld, .ph = %lld, .pw = %lld, .dh = %lld, .dw = %lld, .groups = %lld}",
                  (long long)n->ia[0], (long long)n->ia[1], (long long)n->ia[2], (long long)n->ia[3],
                  (long long)n->ia[4], (long long)n->ia[5], (long long)n->ia[6]);
}

/* The kernels' scratch, the same for the three directions of one geometry. */
static int64_t aux_c2(const Graph *g, const Node *n) {
    cdl_convg_geom cg = c2_node_geom(g, n);
    return cdl_convg_scratch(&cg);
}

static const char *c2_scratch(Emit *e, const Graph *g, int n) { return aux_c2(g, &g->n[n]) > 0 ? e_aux(e, n) : "NULL"; }

static void tape_scratch_c2(const Graph *g, const Node *n, int real_size, int64_t *keep, int64_t *tmp) {
    (void)keep;
    *tmp = aux_c2(g, n) * real_size;
}

/* The bias gradient: g summed over every axis but the channels'. */
static int c2_bias_grad(AD *ad, int n, int gy, int rank) {
    Attrs as = {.i = {rank == 4 ? 1 | 4 | 8 : 1 | 4, 0}};
    return ad_add(ad, n, OP_SUM, 1, &gy, &as, NULL);
}

/* ======================================================================== CONV */

static bool shape_conv(Graph *g, Node *n) {
    if (n->nin != 2 && n->nin != 3) die("conv: %d inputs", n->nin);
    if (!c2_real(g, n)) return false;
    const Shape *x = &in_node(g, n, 0)->shape, *w = &in_node(g, n, 1)->shape;
    if ((x->rank != 3 && x->rank != 4) || w->rank != x->rank) {
        return shape_error(n, "conv: input must be [N, C, L] or [N, C, H, W] with a weight of the same rank, got %s and weight %s",
                           shape_str(x), shape_str(w));
    }
    if (!c2_attrs_ok(n, x->rank)) die("conv: bad attributes");
    int64_t oh = c2_out(c2_sp(x, 0), c2_sp(w, 0), n->ia[0], n->ia[2], n->ia[4]);
    int64_t ow = c2_out(c2_sp(x, 1), c2_sp(w, 1), n->ia[1], n->ia[3], n->ia[5]);
    Shape y = c2_shape(x->rank, x->d[0], w->d[0], oh, ow, x->batched);
    if (!c2_check(n, "conv", x, w, &y)) return false;
    if (n->nin == 3) {
        const Shape *b = &in_node(g, n, 2)->shape;
        if (b->rank != 1 || b->d[0] != w->d[0]) {
            return shape_error(n, "conv: bias must be [%lld], got %s", (long long)w->d[0], shape_str(b));
        }
    }
    return shape_real(n, y);
}

/* CONV and CONV_T are each other's adjoint.  CONV: dx = CONV_T(g, w), dw = CONV_BWD_W(g,
 * x).  CONV_T, the adjoint of the convolution G from y to x: dx = CONV(g, w), dw =
 * CONV_BWD_W(x, g) (G's output is x, its input g).  Either way db = sums of g. */
static void grad_conv(AD *ad, int n, int gy) {
    const Node y = ad_src(ad)->n[n];
    const bool t = y.op == OP_CONV_T;
    const Shape xs = ad_src(ad)->n[y.in[0]].shape, ws = ad_src(ad)->n[y.in[1]].shape;
    Attrs at = {.i = {y.ia[0], y.ia[1], y.ia[2], y.ia[3], y.ia[4], y.ia[5], y.ia[6]}};
    int inx[2] = {gy, ad_x(ad, y.in[1])}, x = ad_x(ad, y.in[0]);
    int inw[2] = {t ? x : gy, t ? gy : x};
    ad_acc(ad, y.in[0], ad_add(ad, n, t ? OP_CONV : OP_CONV_T, 2, inx, &at, t ? NULL : &xs));
    ad_acc(ad, y.in[1], ad_add(ad, n, OP_CONV_BWD_W, 2, inw, &at, &ws));
    if (y.nin == 3) ad_acc(ad, y.in[2], c2_bias_grad(ad, n, gy, y.shape.rank));
}

/* CONV and CONV_T: the same call with their own kernel. */
static void emit_conv(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    cdl_convg_geom cg = c2_node_geom(g, y);
    e_conv_call(e, n, y->op == OP_CONV ? "convg" : "conv_transpose2d", c2_geom_lit(&cg, e_rows(e, y->in[0])), true,
                c2_scratch(e, g, n));
}

static const char *tape_conv(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    return cc_str("cdl_t_conv(tp, %s, %s, %s, %s)", e_ptr(e, y->in[0]), e_ptr(e, y->in[1]),
                  y->nin == 3 ? e_ptr(e, y->in[2]) : "NULL", c2_opts_lit(y));
}

/* ======================================================================== CONV_T */

/* The output shape is given (hint); it must be the input of the convolution whose
 * output is x. */
static bool shape_conv_t(Graph *g, Node *n) {
    if (n->nin != 2 && n->nin != 3) die("conv_transpose: %d inputs", n->nin);
    if (!c2_real(g, n)) return false;
    const Shape *x = &in_node(g, n, 0)->shape, *w = &in_node(g, n, 1)->shape;
    Shape y = n->shape;
    y.batched = x->batched;
    if (y.rank != x->rank) die("conv_transpose: output rank %d for input %s", y.rank, shape_str(x));
    if (!c2_check(n, "conv_transpose", &y, w, x)) return false;
    if (n->nin == 3) {
        const Shape *b = &in_node(g, n, 2)->shape;
        if (b->rank != 1 || b->d[0] != y.d[1]) {
            return shape_error(n, "conv_transpose: bias must be [%lld], got %s", (long long)y.d[1], shape_str(b));
        }
    }
    return shape_real(n, y);
}

static const char *tape_conv_t(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    return cc_str("cdl_t_conv_transpose(tp, %s, %s, %s, %s, %lld, %lld)", e_ptr(e, y->in[0]), e_ptr(e, y->in[1]),
                  y->nin == 3 ? e_ptr(e, y->in[2]) : "NULL", c2_opts_lit(y), (long long)c2_sp(&y->shape, 0),
                  (long long)c2_sp(&y->shape, 1));
}

/* ======================================================================== CONV_BWD_W */

static bool shape_conv_bwd_w(Graph *g, Node *n) {
    const Shape *gy = &in_node(g, n, 0)->shape, *xin = &in_node(g, n, 1)->shape;
    Shape w = n->shape;
    w.batched = false;
    if (!c2_check(n, "conv_bwd_w", xin, &w, gy)) die("conv_bwd_w: inconsistent shapes");
    return shape_real(n, w);
}

static void emit_conv_bwd_w(Emit *e, const Graph *g, int n) {
    const Node *d = &g->n[n];
    cdl_convg_geom cg = c2_node_geom(g, d);
    int b = in_node(g, d, 1)->shape.batched ? d->in[1] : d->in[0]; /* rows of the batched operand */
    e_conv_call(e, n, "convg_bwd_w", c2_geom_lit(&cg, e_rows(e, b)), false, c2_scratch(e, g, n));
}

/* ======================================================================== POOL */

static const char *const pool_names[] = {"max pooling", "average pooling", "adaptive average pooling"};

/* The output shape (adaptive: the given one) of POOL node n over x; false after a
 * diagnostic. */
static bool pool_out(const Node *n, const Shape *x, Shape *y) {
    const char *nm = pool_names[n->ia[0]];
    if (x->rank != 3 && x->rank != 4) {
        return shape_error(n, "%s: input must be [N, C, L] or [N, C, H, W], got %s", nm, shape_str(x));
    }
    *y = *x;
    if (n->ia[0] == CDL_POOL_ADAPTIVE) {
        if (n->shape.rank != x->rank || n->shape.d[0] != x->d[0] || n->shape.d[1] != x->d[1]) die("pool: adaptive output");
        if (c2_sp(&n->shape, 0) < 1 || c2_sp(&n->shape, 1) < 1 || c2_sp(&n->shape, 0) > c2_sp(x, 0) ||
            c2_sp(&n->shape, 1) > c2_sp(x, 1)) {
            return shape_error(n, "%s: output size %s must be between 1 and the input's %s", nm, shape_str(&n->shape), shape_str(x));
        }
        *y = n->shape;
        y->batched = x->batched;
        return true;
    }
    int64_t kh = n->ia[1], kw = n->ia[2], sh = n->ia[3], sw = n->ia[4], ph = n->ia[5], pw = n->ia[6];
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0 || 2 * ph > kh || 2 * pw > kw) {
        return shape_error(n, "%s: kernel %lldx%lld, stride %lldx%lld, padding %lldx%lld: padding must be at most half the kernel",
                           nm, (long long)kh, (long long)kw, (long long)sh, (long long)sw, (long long)ph, (long long)pw);
    }
    int64_t oh = c2_out(c2_sp(x, 0), kh, sh, ph, 1), ow = c2_out(c2_sp(x, 1), kw, sw, pw, 1);
    if (oh < 1 || ow < 1) {
        return shape_error(n, "%s: the kernel %lldx%lld is larger than the padded input %s", nm, (long long)kh, (long long)kw,
                           shape_str(x));
    }
    if (x->rank == 4) y->d[2] = oh;
    y->d[x->rank - 1] = ow;
    return true;
}

static bool shape_pool(Graph *g, Node *n) {
    if (!c2_real(g, n)) return false;
    Shape y;
    if (!pool_out(n, &in_node(g, n, 0)->shape, &y)) return false;
    return shape_real(n, y);
}

/* Max: (g, x); average: (g) with x's shape given. */
static void grad_pool(AD *ad, int n, int gy) {
    const Node y = ad_src(ad)->n[n];
    const Shape xs = ad_src(ad)->n[y.in[0]].shape;
    Attrs at = {.i = {y.ia[0], y.ia[1], y.ia[2], y.ia[3], y.ia[4], y.ia[5], y.ia[6]}};
    int in[2] = {gy, ad_x(ad, y.in[0])};
    ad_acc(ad, y.in[0], ad_add(ad, n, OP_POOL_BWD, y.ia[0] == CDL_POOL_MAX ? 2 : 1, in, &at, &xs));
}

static bool shape_pool_bwd(Graph *g, Node *n) {
    if (n->nin != (n->ia[0] == CDL_POOL_MAX ? 2 : 1)) die("pool_bwd: %d inputs", n->nin);
    Shape x = n->nin == 2 ? in_node(g, n, 1)->shape : n->shape, y;
    const Shape *gs = &in_node(g, n, 0)->shape;
    x.batched = gs->batched;
    Node probe = *n;
    probe.shape = *gs;
    if (!pool_out(&probe, &x, &y) || !shape_eq(&y, gs)) die("pool_bwd: gradient %s for input %s", shape_str(gs), shape_str(&x));
    return shape_real(n, x);
}

/* "&(cdl_pool_geom){...}" for the pooling from x (shape xs, node xn for the runtime
 * rows) to y (shape ys). */
static const char *pool_geom_lit(Emit *e, const Node *n, int xn, const Shape *xs, const Shape *ys) {
    return cc_str("&(cdl_pool_geom){.nc = %s, .h = %lld, .w = %lld, .kh = %lld, .kw = %lld, .sh = %lld, .sw = %lld, "
                  ".ph = %lld, .pw = %lld, .oh = %lld, .ow = %lld}",
                  e_prod(e, xn, 0, 2), (long long)c2_sp(xs, 0), (long long)c2_sp(xs, 1), (long long)n->ia[1],
                  (long long)n->ia[2], (long long)n->ia[3], (long long)n->ia[4], (long long)n->ia[5],
                  (long long)n->ia[6], (long long)c2_sp(ys, 0), (long long)c2_sp(ys, 1));
}

static const char *const pool_kernels[] = {"maxpool", "avgpool", "adaptive_avgpool"};

static void emit_pool(Emit *e, const Graph *g, int n) {
    const Node *p = &g->n[n];
    const Shape *xs = &in_node(g, p, 0)->shape;
    e_line(e, "%s(%s, %s, %s);", e_fn(e, pool_kernels[p->ia[0]]), pool_geom_lit(e, p, p->in[0], xs, &p->shape),
           e_ptr(e, p->in[0]), e_ptr(e, n));
}

static void emit_pool_bwd(Emit *e, const Graph *g, int n) {
    const Node *p = &g->n[n];
    const char *geo = pool_geom_lit(e, p, n, &p->shape, &in_node(g, p, 0)->shape);
    if (p->ia[0] == CDL_POOL_MAX)
        e_line(e, "%s(%s, %s, %s, %s);", e_fn(e, "maxpool_bwd"), geo, e_ptr(e, p->in[0]), e_ptr(e, p->in[1]), e_ptr(e, n));
    else
        e_line(e, "%s(%s, %s, %s);", e_fn(e, cc_str("%s_bwd", pool_kernels[p->ia[0]])), geo, e_ptr(e, p->in[0]),
               e_ptr(e, n));
}

static const char *tape_pool(Emit *e, const Graph *g, int n) {
    const Node *p = &g->n[n];
    return cc_str("cdl_t_pool(tp, %s, %lld, &(cdl_pool_geom){.kh = %lld, .kw = %lld, .sh = %lld, .sw = %lld, "
                  ".ph = %lld, .pw = %lld, .oh = %lld, .ow = %lld})",
                  e_ptr(e, p->in[0]), (long long)p->ia[0], (long long)p->ia[1], (long long)p->ia[2],
                  (long long)p->ia[3], (long long)p->ia[4], (long long)p->ia[5], (long long)p->ia[6],
                  (long long)c2_sp(&p->shape, 0), (long long)c2_sp(&p->shape, 1));
}

/* ======================================================================== UPSAMPLE */

/* x [N, C, H, W] to the given [N, C, OH, OW]. */
static bool shape_upsample(Graph *g, Node *n) {
    if (!c2_real(g, n)) return false;
    const Shape *x = &in_node(g, n, 0)->shape;
    Shape y = n->shape;
    if (x->rank != 4) {
        return shape_error(n, "upsample: input must be [N, C, H, W], got %s", shape_str(x));
    }
    if (y.rank != 4 || y.d[0] != x->d[0] || y.d[1] != x->d[1] || y.d[2] < 1 || y.d[3] < 1 || n->ia[0] < 0 || n->ia[0] > 1)
        die("upsample: output %s for input %s", shape_str(&y), shape_str(x));
    y.batched = x->batched;
    return shape_real(n, y);
}

static void grad_upsample(AD *ad, int n, int gy) {
    const Node y = ad_src(ad)->n[n];
    const Shape xs = ad_src(ad)->n[y.in[0]].shape;
    Attrs at = {.i = {y.ia[0]}, .f = {y.fa[0], y.fa[1]}};
    ad_acc(ad, y.in[0], ad_add(ad, n, OP_UPSAMPLE_BWD, 1, &gy, &at, &xs));
}

static bool shape_upsample_bwd(Graph *g, Node *n) {
    const Shape *gs = &in_node(g, n, 0)->shape;
    if (gs->rank != 4 || n->shape.rank != 4 || gs->d[1] != n->shape.d[1]) die("upsample_bwd: gradient %s", shape_str(gs));
    n->shape.batched = gs->batched;
    n->dtype = DT_REAL;
    return true;
}

/* "nc, h, w, oh, ow, scale_h, scale_w" from the small side s (node sn) to the big one. */
static const char *up_args(Emit *e, const Node *u, int sn, const Shape *s, const Shape *big) {
    return cc_str("%s, %lld, %lld, %lld, %lld, %s, %s", e_prod(e, sn, 0, 2), (long long)s->d[2], (long long)s->d[3],
                  (long long)big->d[2], (long long)big->d[3], e_lit(u->fa[0]), e_lit(u->fa[1]));
}

static void emit_upsample(Emit *e, const Graph *g, int n) {
    const Node *u = &g->n[n];
    const char *k = u->ia[0] ? "upsample_bilinear" : "upsample_nearest";
    e_line(e, "%s(%s, %s, %s);", e_fn(e, k), up_args(e, u, u->in[0], &in_node(g, u, 0)->shape, &u->shape),
           e_ptr(e, u->in[0]), e_ptr(e, n));
}

static void emit_upsample_bwd(Emit *e, const Graph *g, int n) {
    const Node *u = &g->n[n];
    const char *k = u->ia[0] ? "upsample_bilinear_bwd" : "upsample_nearest_bwd";
    e_line(e, "%s(%s, %s, %s);", e_fn(e, k), up_args(e, u, n, &u->shape, &in_node(g, u, 0)->shape), e_ptr(e, u->in[0]),
           e_ptr(e, n));
}

static const char *tape_upsample(Emit *e, const Graph *g, int n) {
    const Node *u = &g->n[n];
    return cc_str("cdl_t_upsample(tp, %s, %d, %lld, %lld, %s, %s)", e_ptr(e, u->in[0]), (int)u->ia[0],
                  (long long)u->shape.d[2], (long long)u->shape.d[3], e_lit(u->fa[0]), e_lit(u->fa[1]));
}

/* ======================================================================== table */

const OpRule ops_conv2_rules[] = {
    {OP_CONV, shape_conv, grad_conv, emit_conv, aux_c2, .tape = tape_conv, .tape_scratch = tape_scratch_c2},
    {OP_CONV_T, shape_conv_t, grad_conv, emit_conv, aux_c2, .tape = tape_conv_t, .tape_scratch = tape_scratch_c2},
    {OP_CONV_BWD_W, shape_conv_bwd_w, NULL, emit_conv_bwd_w, aux_c2, .tape = NULL},
    {OP_POOL, shape_pool, grad_pool, emit_pool, NULL, .tape = tape_pool},
    {OP_POOL_BWD, shape_pool_bwd, NULL, emit_pool_bwd, NULL, .tape = NULL},
    {OP_UPSAMPLE, shape_upsample, grad_upsample, emit_upsample, NULL, .tape = tape_upsample},
    {OP_UPSAMPLE_BWD, shape_upsample_bwd, NULL, emit_upsample_bwd, NULL, .tape = NULL},
};
const int ops_conv2_count = sizeof ops_conv2_rules / sizeof ops_conv2_rules[0];
