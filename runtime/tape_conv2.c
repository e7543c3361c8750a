/* tape_conv2.c -- tape ops over kernels_conv2.c: the general and the transposed
 * convolution, rectangular and adaptive pooling, upsampling.  Same pattern as
 * tape_ops.c: the public cdl_t_<op> checks shapes, records and runs the forward kernel;
 * its static bwd_<op> is the backward rule of compiler/ops_conv2.c with the same
 * kernels, adding the gradients in the same order (input, weight, bias).
 */
#include "tape_int.h"

/* ======================================================================== convolution */

/* Spatial size of t along axis 0 (H; 1 for 1-D) or 1 (W). */
static int64_t sp(const cdl_t *t, int axis) { return t->rank == 4 ? t->dims[2 + axis] : axis ? t->dims[2] : 1; }

/* The convolution taking in [N, C, ...] to out [N, K, ...] with weight w, at the
 * runtime batch. */
static cdl_convg_geom c2_geom(const cdl_t *in, const cdl_t *w, const cdl_t *out, const cdl_conv_opts *o) {
    cdl_convg_geom g = {.n = in->dims[0], .c = in->dims[1], .h = sp(in, 0), .w = sp(in, 1), .k = out->dims[1],
                        .r = sp(w, 0), .s = sp(w, 1), .sh = o->sh, .sw = o->sw, .ph = o->ph, .pw = o->pw,
                        .dh = o->dh, .dw = o->dw, .groups = o->groups};
    cdl_convg_init(&g);
    return g;
}

static cdl_conv_opts c2_opts(const cdl_t *y) {
    return (cdl_conv_opts){y->ia[0], y->ia[1], y->ia[2], y->ia[3], y->ia[4], y->ia[5], (int64_t)y->fa[0]};
}

/* Output size along one axis, 0 when the dilated kernel does not fit. */
static int64_t c2_out(int64_t in, int64_t k, int64_t st, int64_t pad, int64_t dil) {
    int64_t span = dil * (k - 1) + 1;
    return in + 2 * pad < span ? 0 : (in + 2 * pad - span) / st + 1;
}

/* Inputs and options fit a convolution from `in` through w to k output channels; its
 * output size in *oh, *ow.  0, or -1 after a message. */
static int c2_check(cdl_tape *tp, const char *op, const cdl_t *in, const cdl_t *w, int64_t k, const cdl_conv_opts *o,
                    int64_t *oh, int64_t *ow) {
    int r = in->rank;
    if ((r != 3 && r != 4) || w->rank != r) {
        tape_err(tp, op, "input %s and weight %s: need [N, C, (H,) W] and a weight of the same rank", DSTR(in), DSTR(w));
        return -1;
    }
    int bad = o->sh < 1 || o->sw < 1 || o->ph < 0 || o->pw < 0 || o->dh < 1 || o->dw < 1 || o->groups < 1 ||
              (r == 3 && (o->sh != 1 || o->ph != 0 || o->dh != 1));
    if (bad || in->dims[1] % o->groups || k % o->groups || w->dims[1] * o->groups != in->dims[1]) {
        tape_err(tp, op, "options or groups do not fit input %s and weight %s", DSTR(in), DSTR(w));
        return -1;
    }
    *oh = c2_out(sp(in, 0), sp(w, 0), o->sh, o->ph, o->dh);
    *ow = c2_out(sp(in, 1), sp(w, 1), o->sw, o->pw, o->dw);
    if (*oh < 1 || *ow < 1) {
        tape_err(tp, op, "kernel %s does not fit input %s", DSTR(w), DSTR(in));
        return -1;
    }
    return 0;
}

/* Record attributes: ia0..5 the strides, pads, dilations; fa0 the groups. */
static void c2_keep(cdl_t *y, const cdl_conv_opts *o) {
    int64_t v[6] = {o->sh, o->sw, o->ph, o->pw, o->dh, o->dw};
    memcpy(y->ia, v, sizeof v);
    y->fa[0] = (double)o->groups;
}

/* The sums of g over every axis but the channels', into b's gradient. */
static void c2_bias_grad(cdl_tape *tp, const cdl_t *y, cdl_t *b) {
    int acc;
    void *d;
    if (b && tape_need(tp, b) && (d = tape_gdst(tp, b, &acc))) {
        TK(tp, reduce, y->rank, y->dims, y->rank == 4 ? 1u | 4u | 8u : 1u | 4u, 0, y->grad, d);
        tape_gfin(tp, b, d, acc);
    }
}

/* The backward of record y, a convolution G of x (tr 0: dx = convg_bwd_x(g, w),
 * dw = convg_bwd_w(g, x)) or its adjoint, G from y to x (tr 1: dx = convg(G, g, w),
 * dw = convg_bwd_w(G, x, g)); db = sums of g. */
static void c2_bwd(cdl_tape *tp, cdl_t *y, int tr) {
    cdl_t *x = y->in[0], *w = y->in[1], *b = y->nin > 2 ? y->in[2] : NULL;
    cdl_conv_opts o = c2_opts(y);
    cdl_convg_geom geo = tr ? c2_geom(y, w, x, &o) : c2_geom(x, w, y, &o);
    void *scratch = tape_rtemp(tp, cdl_convg_scratch(&geo)), *d;
    int acc;
    if (!scratch) return;
    if (tape_need(tp, x) && (d = tape_gdst(tp, x, &acc))) {
        if (tr) TK(tp, convg, &geo, y->grad, w->data, NULL, d, scratch);
        else TK(tp, convg_bwd_x, &geo, y->grad, w->data, d, scratch);
        tape_gfin(tp, x, d, acc);
    }
    if (tape_need(tp, w) && (d = tape_gdst(tp, w, &acc))) {
        TK(tp, convg_bwd_w, &geo, tr ? x->data : y->grad, tr ? y->grad : x->data, d, scratch);
        tape_gfin(tp, w, d, acc);
    }
    c2_bias_grad(tp, y, b);
}

static void bwd_conv(cdl_tape *tp, cdl_t *y) { c2_bwd(tp, y, 0); }
static void bwd_conv_t(cdl_tape *tp, cdl_t *y) { c2_bwd(tp, y, 1); }

/* The forward of record y (tr as in c2_bwd) in scratch; y with its options and backward. */
static cdl_t *c2_fwd(cdl_tape *tp, cdl_t *y, cdl_t *x, cdl_t *w, cdl_t *b, const cdl_conv_opts *o, int tr) {
    c2_keep(y, o);
    cdl_convg_geom geo = tr ? c2_geom(y, w, x, o) : c2_geom(x, w, y, o);
    char *mark = tp->hi;
    void *scratch = tape_rtemp(tp, cdl_convg_scratch(&geo));
    if (!scratch) return NULL;
    if (tr) TK(tp, conv_transpose2d, &geo, x->data, w->data, b ? b->data : NULL, y->data, scratch);
    else TK(tp, convg, &geo, x->data, w->data, b ? b->data : NULL, y->data, scratch);
    tape_release(tp, mark);
    y->bwd = tr ? bwd_conv_t : bwd_conv;
    return y;
}

cdl_t *cdl_t_conv(cdl_tape *tp, cdl_t *x, cdl_t *w, cdl_t *b, const cdl_conv_opts *o) {
    cdl_t *in[3] = {x, w, b};
    int nin = b ? 3 : 2;
    int64_t oh, ow;
    if (!tape_need_real(tp, "conv", in, nin) || c2_check(tp, "conv", x, w, w->dims[0], o, &oh, &ow) < 0) return NULL;
    if (b && (b->rank != 1 || b->dims[0] != w->dims[0])) return tape_err(tp, "conv", "bias must be [%lld], got %s", (long long)w->dims[0], DSTR(b));
    int64_t dims[4] = {x->dims[0], w->dims[0], x->rank == 4 ? oh : ow, ow};
    cdl_t *y = tape_rec(tp, "conv", tp->real, x->rank, dims, 1, nin, in);
    if (!y) return NULL;
    return c2_fwd(tp, y, x, w, b, o, 0);
}

cdl_t *cdl_t_conv_transpose(cdl_tape *tp, cdl_t *x, cdl_t *w, cdl_t *b, const cdl_conv_opts *o, int64_t oh,
                            int64_t ow) {
    cdl_t *in[3] = {x, w, b};
    int nin = b ? 3 : 2;
    if (!tape_need_real(tp, "conv_transpose", in, nin)) return NULL;
    if ((x->rank != 3 && x->rank != 4) || w->rank != x->rank)
        return tape_err(tp, "conv_transpose", "input %s and weight %s", DSTR(x), DSTR(w));
    int64_t co = w->dims[1] * o->groups, dims[4] = {x->dims[0], co, x->rank == 4 ? oh : ow, ow}, ch, cw;
    if (b && (b->rank != 1 || b->dims[0] != co)) return tape_err(tp, "conv_transpose", "bias must be [%lld], got %s", (long long)co, DSTR(b));
    cdl_t *y = tape_rec(tp, "conv_transpose", tp->real, x->rank, dims, 1, nin, in);
    if (!y) return NULL;
    if (c2_check(tp, "conv_transpose", y, w, x->dims[1], o, &ch, &cw) < 0) return NULL;
    if (ch != sp(x, 0) || cw != sp(x, 1) || w->dims[0] != x->dims[1])
        return tape_err(tp, "conv_transpose", "output %s does not convolve back to input %s", DSTR(y), DSTR(x));
    return c2_fwd(tp, y, x, w, b, o, 1);
}

/* ======================================================================== pooling */

/* The pooling geometry of the record y over its input x (ia0 kind, ia1.. the window). */
static cdl_pool_geom pool_geom(const cdl_t *x, const cdl_t *y) {
    return (cdl_pool_geom){.nc = x->dims[0] * x->dims[1], .h = sp(x, 0), .w = sp(x, 1), .kh = y->ia[1], .kw = y->ia[2],
                           .sh = y->ia[3], .sw = y->ia[4], .ph = y->ia[5], .pw = (int64_t)y->fa[0],
                           .oh = sp(y, 0), .ow = sp(y, 1)};
}

TAPE_BWD1(pool, cdl_pool_geom p = pool_geom(x, y);
          if (y->ia[0] == CDL_POOL_MAX) TK(tp, maxpool_bwd, &p, g, x->data, d);
          else if (y->ia[0] == CDL_POOL_AVG) TK(tp, avgpool_bwd, &p, g, d);
          else TK(tp, adaptive_avgpool_bwd, &p, g, d))

cdl_t *cdl_t_pool(cdl_tape *tp, cdl_t *x, int kind, const cdl_pool_geom *win) {
    static const char *const names[] = {"maxpool", "avgpool", "adaptive_avgpool"};
    if (kind < CDL_POOL_MAX || kind > CDL_POOL_ADAPTIVE) return tape_err(tp, "pool", "bad kind %d", kind);
    const char *op = names[kind];
    if (!tape_need_real(tp, op, &x, 1)) return NULL;
    if (x->rank != 3 && x->rank != 4) return tape_err(tp, op, "input must be [N, C, (H,) W], got %s", DSTR(x));
    int64_t oh = win->oh, ow = win->ow;
    if (kind != CDL_POOL_ADAPTIVE) {
        int bad = win->kh < 1 || win->kw < 1 || win->sh < 1 || win->sw < 1 || win->ph < 0 || win->pw < 0 ||
                  2 * win->ph > win->kh || 2 * win->pw > win->kw;
        oh = bad ? 0 : c2_out(sp(x, 0), win->kh, win->sh, win->ph, 1);
        ow = bad ? 0 : c2_out(sp(x, 1), win->kw, win->sw, win->pw, 1);
    }
    if (oh < 1 || ow < 1 || (kind == CDL_POOL_ADAPTIVE && (oh > sp(x, 0) || ow > sp(x, 1))) || (x->rank == 3 && oh != 1))
        return tape_err(tp, op, "window does not fit input %s", DSTR(x));
    int64_t dims[4] = {x->dims[0], x->dims[1], x->rank == 4 ? oh : ow, ow};
    cdl_t *y = tape_rec(tp, op, tp->real, x->rank, dims, 1, 1, &x);
    if (!y) return NULL;
    int64_t v[6] = {kind, win->kh, win->kw, win->sh, win->sw, win->ph};
    memcpy(y->ia, v, sizeof v);
    y->fa[0] = (double)win->pw;
    cdl_pool_geom p = pool_geom(x, y);
    if (kind == CDL_POOL_MAX) TK(tp, maxpool, &p, x->data, y->data);
    else if (kind == CDL_POOL_AVG) TK(tp, avgpool, &p, x->data, y->data);
    else TK(tp, adaptive_avgpool, &p, x->data, y->data);
    y->bwd = bwd_pool;
    return y;
}

/* ======================================================================== upsampling */

TAPE_BWD1(upsample, int64_t nc = x->dims[0] * x->dims[1];
          if (y->ia[0]) TK(tp, upsample_bilinear_bwd, nc, x->dims[2], x->dims[3], y->dims[2], y->dims[3], y->fa[0], y->fa[1], g, d);
          else TK(tp, upsample_nearest_bwd, nc, x->dims[2], x->dims[3], y->dims[2], y->dims[3], y->fa[0], y->fa[1], g, d))

cdl_t *cdl_t_upsample(cdl_tape *tp, cdl_t *x, int bilinear, int64_t oh, int64_t ow, double scale_h, double scale_w) {
    if (!tape_need_real(tp, "upsample", &x, 1)) return NULL;
    if (x->rank != 4 || oh < 1 || ow < 1) return tape_err(tp, "upsample", "input %s to %lldx%lld", DSTR(x), (long long)oh, (long long)ow);
    int64_t dims[4] = {x->dims[0], x->dims[1], oh, ow}, nc = x->dims[0] * x->dims[1];
    cdl_t *y = tape_rec(tp, "upsample", tp->real, 4, dims, 1, 1, &x);
    if (!y) return NULL;
    y->ia[0] = bilinear != 0;
    y->fa[0] = scale_h;
    y->fa[1] = scale_w;
    if (bilinear) TK(tp, upsample_bilinear, nc, x->dims[2], x->dims[3], oh, ow, scale_h, scale_w, x->data, y->data);
    else TK(tp, upsample_nearest, nc, x->dims[2], x->dims[3], oh, ow, scale_h, scale_w, x->data, y->data);
    y->bwd = bwd_upsample;
    return y;
}
