/* tape_nn.c -- tape ops, network layers and losses: conv2d, max / average pooling,
 * batch norm, the fused LSTM / GRU cell parts, and every loss of ops.def.
 *
 * Same pattern as tape_ops.c: the public cdl_t_<op> checks shapes, records and runs the
 * forward kernel; its static bwd_<op> is the backward rule (the compiler's gradient rule
 * in ops_conv.c, ops_rnn.c, ops_loss.c, with the same kernels).  Packed multi-part
 * results (LSTM cell, backward buffers) are packed with the tape's own rows (bmax =
 * runtime rows), not the compiled batch: a tape tensor is exactly as big as its data.
 */
#include "tape_int.h"

/* ======================================================================== conv2d */

/* Geometry from the recorded shapes; the group as the kernels pick it for this batch. */
static cdl_conv2d_geom conv_geom(const cdl_t *x, const cdl_t *w, const cdl_t *y, int64_t stride, int64_t pad) {
    cdl_conv2d_geom g = {.n = x->dims[0], .c = x->dims[1], .h = x->dims[2], .w = x->dims[3], .k = w->dims[0],
                         .r = w->dims[2], .s = w->dims[3], .stride = stride, .pad = pad, .oh = y->dims[2],
                         .ow = y->dims[3], .group = 1};
    g.group = cdl_conv2d_pick_group(&g);
    return g;
}

/* dx = conv2d_bwd_x(g, w), dw = conv2d_bwd_w(g, x), db = sums of g over N, H, W. */
static void bwd_conv2d(cdl_tape *tp, cdl_t *y) {
    cdl_t *x = y->in[0], *w = y->in[1], *b = y->nin > 2 ? y->in[2] : NULL;
    cdl_conv2d_geom geo = conv_geom(x, w, y, y->ia[0], y->ia[1]);
    void *scratch = tape_rtemp(tp, cdl_conv2d_scratch(&geo));
    if (!scratch) return;
    int acc;
    void *d;
    if (tape_need(tp, x) && (d = tape_gdst(tp, x, &acc))) {
        TK(tp, conv2d_bwd_x, &geo, y->grad, w->data, d, scratch);
        tape_gfin(tp, x, d, acc);
    }
    if (tape_need(tp, w) && (d = tape_gdst(tp, w, &acc))) {
        TK(tp, conv2d_bwd_w, &geo, y->grad, x->data, d, scratch);
        tape_gfin(tp, w, d, acc);
    }
    if (b && tape_need(tp, b) && (d = tape_gdst(tp, b, &acc))) {
        TK(tp, reduce, 4, y->dims, 1u | 4u | 8u, 0, y->grad, d);
        tape_gfin(tp, b, d, acc);
    }
}

cdl_t *cdl_t_conv2d(cdl_tape *tp, cdl_t *x, cdl_t *w, cdl_t *b, int stride, int pad) {
    cdl_t *in[3] = {x, w, b};
    int nin = b ? 3 : 2;
    if (!tape_need_real(tp, "conv2d", in, nin)) return NULL;
    if (x->rank != 4 || w->rank != 4 || x->dims[1] != w->dims[1])
        return tape_err(tp, "conv2d", "input %s and weight %s: need [N, C, H, W] and [K, C, R, S]", DSTR(x), DSTR(w));
    if (b && (b->rank != 1 || b->dims[0] != w->dims[0]))
        return tape_err(tp, "conv2d", "bias must be [%lld], got %s", (long long)w->dims[0], DSTR(b));
    if (stride < 1) stride = 1;
    if (pad < 0 || x->dims[2] + 2 * (int64_t)pad < w->dims[2] || x->dims[3] + 2 * (int64_t)pad < w->dims[3])
        return tape_err(tp, "conv2d", "kernel %s does not fit input %s with padding %d", DSTR(w), DSTR(x), pad);
    int64_t dims[4] = {x->dims[0], w->dims[0], (x->dims[2] + 2 * (int64_t)pad - w->dims[2]) / stride + 1,
                       (x->dims[3] + 2 * (int64_t)pad - w->dims[3]) / stride + 1};
    cdl_t *y = tape_rec(tp, "conv2d", tp->real, 4, dims, 1, nin, in);
    if (!y) return NULL;
    y->ia[0] = stride;
    y->ia[1] = pad;
    cdl_conv2d_geom geo = conv_geom(x, w, y, stride, pad);
    char *mark = tp->hi;
    void *scratch = tape_rtemp(tp, cdl_conv2d_scratch(&geo));
    if (!scratch) return NULL;
    TK(tp, conv2d, &geo, x->data, w->data, b ? b->data : NULL, y->data, scratch);
    tape_release(tp, mark);
    y->bwd = bwd_conv2d;
    return y;
}

/* ======================================================================== pooling */

/* ia: 0 kernel, 1 stride, 2 pad, 3 max (1) or average (0). */
static void bwd_pool(cdl_tape *tp, cdl_t *y) {
    cdl_t *x = y->in[0];
    if (!tape_need(tp, x)) return;
    int64_t H = x->dims[x->rank - 2], W = x->dims[x->rank - 1], nc = x->numel / (H * W > 0 ? H * W : 1);
    int acc;
    void *d = tape_gdst(tp, x, &acc);
    if (!d) return;
    if (y->ia[3]) TK(tp, maxpool2d_bwd, nc, H, W, y->ia[0], y->ia[1], y->ia[2], y->grad, x->data, d);
    else TK(tp, avgpool2d_bwd, nc, H, W, y->ia[0], y->ia[1], y->ia[2], y->grad, d);
    tape_gfin(tp, x, d, acc);
}

static cdl_t *pool(cdl_tape *tp, const char *op, int is_max, cdl_t *x, int k, int stride, int pad) {
    if (!tape_need_real(tp, op, &x, 1)) return NULL;
    if (stride <= 0) stride = k;
    if (x->rank != 3 && x->rank != 4) return tape_err(tp, op, "input must be [N, C, H, W] or [C, H, W], got %s", DSTR(x));
    int64_t H = x->dims[x->rank - 2], W = x->dims[x->rank - 1];
    if (k < 1 || pad < 0 || 2 * (int64_t)pad > k || H + 2 * (int64_t)pad < k || W + 2 * (int64_t)pad < k)
        return tape_err(tp, op, "kernel %d, stride %d, padding %d do not fit %s", k, stride, pad, DSTR(x));
    int64_t dims[CDL_MAXDIM];
    for (int i = 0; i < x->rank; i++) dims[i] = x->dims[i];
    dims[x->rank - 2] = (H + 2 * (int64_t)pad - k) / stride + 1;
    dims[x->rank - 1] = (W + 2 * (int64_t)pad - k) / stride + 1;
    cdl_t *y = tape_rec(tp, op, tp->real, x->rank, dims, 1, 1, &x);
    if (!y) return NULL;
    int64_t nc = x->numel / (H * W > 0 ? H * W : 1);
    if (is_max) TK(tp, maxpool2d, nc, H, W, k, stride, pad, x->data, y->data);
    else TK(tp, avgpool2d, nc, H, W, k, stride, pad, x->data, y->data);
    return tape_done(y, bwd_pool, 4, (const int64_t[]){k, stride, pad, is_max});
}

cdl_t *cdl_t_maxpool2d(cdl_tape *tp, cdl_t *x, int k, int stride, int pad) { return pool(tp, "maxpool2d", 1, x, k, stride, pad); }
cdl_t *cdl_t_avgpool2d(cdl_tape *tp, cdl_t *x, int k, int stride, int pad) { return pool(tp, "avgpool2d", 0, x, k, stride, pad); }

/* ======================================================================== batch norm */

/* The packed [dgamma C | dbeta C | dx] of the kernel, added into the three inputs. */
static void bwd_batchnorm(cdl_tape *tp, cdl_t *y) {
    cdl_t *x = y->in[0], *gamma = y->in[1], *beta = y->in[2];
    int64_t n = x->dims[0], c = x->dims[1], hw = x->numel / (n * c > 0 ? n * c : 1);
    void *out = tape_rtemp(tp, 2 * c + x->numel);
    if (!out) return;
    TK(tp, batchnorm_bwd, (int)y->ia[0], n, c, hw, y->grad, y->aux, out);
    if (tape_need(tp, x)) tape_gadd(tp, x, tape_at(tp, y, out, 2 * c));
    if (tape_need(tp, gamma)) tape_gadd(tp, gamma, out);
    if (tape_need(tp, beta)) tape_gadd(tp, beta, tape_at(tp, y, out, c));
}

cdl_t *cdl_t_batchnorm(cdl_tape *tp, cdl_t *x, cdl_t *gamma, cdl_t *beta, cdl_t *running_mean, cdl_t *running_var,
                       double eps, double momentum) {
    cdl_t *in[5] = {x, gamma, beta, running_mean, running_var};
    if (!tape_need_real(tp, "batchnorm", in, 5)) return NULL;
    if (x->rank < 2) return tape_err(tp, "batchnorm", "input must be [N, C, ...], got %s", DSTR(x));
    for (int k = 1; k < 5; k++)
        if (in[k]->rank != 1 || in[k]->dims[0] != x->dims[1])
            return tape_err(tp, "batchnorm", "argument %d must be [%lld], got %s", k + 1, (long long)x->dims[1], DSTR(in[k]));
    cdl_t *y = tape_rec(tp, "batchnorm", tp->real, x->rank, x->dims, 1, 5, in);
    if (!y) return NULL;
    int64_t n = x->dims[0], c = x->dims[1], hw = x->numel / (n * c > 0 ? n * c : 1);
    y->aux = tape_alloc(tp, (size_t)(3 * c + x->numel) * (size_t)tp->rs);
    if (!y->aux) return NULL;
    TK(tp, batchnorm, tp->train, n, c, hw, eps, momentum, x->data, gamma->data, beta->data, running_mean->data,
       running_var->data, y->data, y->aux, 1);
    y->ia[0] = tp->train;
    y->fa[0] = eps;
    y->fa[1] = momentum;
    y->bwd = bwd_batchnorm;
    return y;
}

/* ======================================================================== recurrent cells */

/* dout = [dh' | dc'] -> [dgates rows x 4H | dc rows x H]. */
static void bwd_lstm_act(cdl_tape *tp, cdl_t *y) {
    cdl_t *gates = y->in[0], *c = y->in[1];
    int64_t rows = c->dims[0], H = c->dims[1];
    void *dst = tape_rtemp(tp, 5 * rows * H);
    if (!dst) return;
    TK(tp, lstm_act_bwd, rows, H, rows, y->grad, tape_at(tp, y, y->grad, rows * H), c->data, y->aux, dst);
    if (tape_need(tp, gates)) tape_gadd(tp, gates, dst);
    if (tape_need(tp, c)) tape_gadd(tp, c, tape_at(tp, y, dst, 4 * rows * H));
}

cdl_t *cdl_t_lstm_act(cdl_tape *tp, cdl_t *gates, cdl_t *c) {
    cdl_t *in[2] = {gates, c};
    if (!tape_need_real(tp, "lstm_act", in, 2)) return NULL;
    if (c->rank != 2 || gates->rank != 2 || gates->dims[0] != c->dims[0] || gates->dims[1] != 4 * c->dims[1])
        return tape_err(tp, "lstm_act", "gates %s and c %s: need [B, 4H] and [B, H]", DSTR(gates), DSTR(c));
    int64_t rows = c->dims[0], H = c->dims[1], dims[3] = {2, rows, H};
    cdl_t *y = tape_rec(tp, "lstm_act", tp->real, 3, dims, 1, 2, in);
    if (!y) return NULL;
    y->aux = tape_alloc(tp, (size_t)(5 * rows * H) * (size_t)tp->rs);
    if (!y->aux) return NULL;
    TK(tp, lstm_act, rows, H, rows, gates->data, c->data, y->data, y->aux);
    y->bwd = bwd_lstm_act;
    return y;
}

/* g -> [dgi rows x 3H | dgh rows x 3H | dh rows x H]. */
static void bwd_gru_act(cdl_tape *tp, cdl_t *y) {
    cdl_t *gi = y->in[0], *gh = y->in[1], *h = y->in[2];
    int64_t rows = h->dims[0], H = h->dims[1];
    void *dst = tape_rtemp(tp, 7 * rows * H);
    if (!dst) return;
    TK(tp, gru_act_bwd, rows, H, rows, y->grad, gh->data, h->data, y->aux, dst);
    if (tape_need(tp, gi)) tape_gadd(tp, gi, dst);
    if (tape_need(tp, gh)) tape_gadd(tp, gh, tape_at(tp, y, dst, 3 * rows * H));
    if (tape_need(tp, h)) tape_gadd(tp, h, tape_at(tp, y, dst, 6 * rows * H));
}

cdl_t *cdl_t_gru_act(cdl_tape *tp, cdl_t *gi, cdl_t *gh, cdl_t *h) {
    cdl_t *in[3] = {gi, gh, h};
    if (!tape_need_real(tp, "gru_act", in, 3)) return NULL;
    if (h->rank != 2 || gi->rank != 2 || gh->rank != 2 || gi->dims[0] != h->dims[0] || gh->dims[0] != h->dims[0] ||
        gi->dims[1] != 3 * h->dims[1] || gh->dims[1] != 3 * h->dims[1])
        return tape_err(tp, "gru_act", "gi %s, gh %s, h %s: need [B, 3H], [B, 3H], [B, H]", DSTR(gi), DSTR(gh), DSTR(h));
    int64_t rows = h->dims[0], H = h->dims[1];
    cdl_t *y = tape_rec(tp, "gru_act", tp->real, 2, h->dims, 1, 3, in);
    if (!y) return NULL;
    y->aux = tape_alloc(tp, (size_t)(3 * rows * H) * (size_t)tp->rs);
    if (!y->aux) return NULL;
    TK(tp, gru_act, rows, H, gi->data, gh->data, h->data, y->data, y->aux);
    y->bwd = bwd_gru_act;
    return y;
}

/* ======================================================================== losses */

enum { L_CE, L_NLL, L_MSE, L_L1, L_HUBER, L_BCE, L_BCE_LOGITS, L_KL };

/* [rows, cols] of kl_normal's operands: dim 0 rows for rank >= 2, else one row. */
static void kl_geom(const cdl_t *a, int64_t *rows, int64_t *cols) {
    *rows = a->rank >= 2 ? a->dims[0] : 1;
    *cols = *rows ? a->numel / *rows : 0;
}

/* A class loss's row weight and class weight (NULL: none): in[2] and in[nin - 1];
 * ia[3] = 1 when the class weight is there. */
static cdl_t *class_rw(const cdl_t *y) { return y->nin - (int)y->ia[3] > 2 ? y->in[2] : NULL; }
static const void *class_cw(const cdl_t *y) { return y->ia[3] ? y->in[y->nin - 1]->data : NULL; }

/* d loss / d row weight of a weighted class loss y, from the loss per row without the
 * row weights (recomputed as the static code's gradient does).  The class weight gets
 * no gradient (as PyTorch's weight=). */
static void bwd_class_weight(cdl_tape *tp, cdl_t *y) {
    cdl_t *x = y->in[0], *labels = y->in[1], *w = class_rw(y);
    int64_t rows = labels->numel, C = x->dims[x->rank - 1];
    const void *cw = class_cw(y);
    int acc;
    void *u = tape_rtemp(tp, rows), *d;
    if (!u) return;
    if (y->ia[0] == L_CE) {
        void *probs = tape_rtemp(tp, x->numel);
        if (!probs) return;
        TK(tp, cross_entropy_ex, rows, C, x->data, labels->data, NULL, cw, y->ia[2], y->fa[0], CDL_RED_NONE, probs, u);
    } else {
        TK(tp, nll_ex, rows, C, x->data, labels->data, NULL, cw, y->ia[2], CDL_RED_NONE, u);
    }
    if (!(d = tape_gdst(tp, w, &acc))) return;
    TK(tp, class_weight_bwd, rows, C, y->grad, labels->data, w->data, cw, y->ia[2], u, y->data, (int)y->ia[1], d);
    tape_gfin(tp, w, d, acc);
}

static void bwd_loss(cdl_tape *tp, cdl_t *y) {
    cdl_t *a = y->in[0], *b = y->in[1];
    int kind = (int)y->ia[0], red = (int)y->ia[1], acc;
    double f = y->fa[0];
    const void *g = y->grad;
    void *d;
    if (kind == L_CE || kind == L_NLL) {
        int64_t C = a->dims[a->rank - 1], ign = y->ia[2];
        cdl_t *w = class_rw(y);
        const void *rw = w ? w->data : NULL, *cw = class_cw(y);
        if (tape_need(tp, a) && (d = tape_gdst(tp, a, &acc))) {
            if (kind == L_CE) TK(tp, cross_entropy_ex_bwd, b->numel, C, g, b->data, rw, cw, ign, y->aux, f, red, d);
            else TK(tp, nll_ex_bwd, b->numel, C, g, b->data, rw, cw, ign, red, d);
            tape_gfin(tp, a, d, acc);
        }
        if (tape_need(tp, w)) bwd_class_weight(tp, y);
        return;
    }
    for (int wrt = 0; wrt < 2; wrt++) {
        cdl_t *x = y->in[wrt];
        if (!tape_need(tp, x) || !(d = tape_gdst(tp, x, &acc))) continue;
        int64_t n = a->numel, rows, cols;
        switch (kind) {
        case L_MSE: TK(tp, mse_bwd, n, g, a->data, b->data, red, wrt, d); break;
        case L_L1: TK(tp, l1_bwd, n, g, a->data, b->data, red, wrt, d); break;
        case L_HUBER: TK(tp, huber_bwd, n, f, g, a->data, b->data, red, wrt, d); break;
        case L_BCE: TK(tp, bce_bwd, n, g, a->data, b->data, red, wrt, d); break;
        case L_BCE_LOGITS: TK(tp, bce_logits_bwd, n, g, a->data, b->data, red, wrt, d); break;
        default:
            kl_geom(a, &rows, &cols);
            TK(tp, kl_normal_bwd, rows, cols, g, a->data, b->data, red, wrt, d);
            break;
        }
        tape_gfin(tp, x, d, acc);
    }
}

static const char *const loss_name[] = {"cross_entropy", "nll", "mse", "l1", "huber", "bce", "bce_with_logits", "kl_normal"};

/* The result dims of a loss: none under reduction none (the caller's per-row or
 * per-element dims), else a scalar. */
static cdl_t *loss_rec(cdl_tape *tp, const char *op, int red, const cdl_t *none, int nin, cdl_t *const *in) {
    if (red != CDL_RED_MEAN && red != CDL_RED_SUM && red != CDL_RED_NONE) return tape_err(tp, op, "reduction %d", red);
    return red == CDL_RED_NONE ? tape_rec(tp, op, tp->real, none->rank, none->dims, 1, nin, in)
                               : tape_rec(tp, op, tp->real, 0, NULL, 1, nin, in);
}

/* Class losses: scores [..., C] real, labels [...] i32, an optional real row weight w of
 * the labels' shape and an optional class weight cw [C] (no gradient flows into cw);
 * rows labelled ignore_index (CDL_NO_IGNORE: none) count for nothing.  A label outside
 * [0, C) makes the loss NaN with a message (cdl_last_error), as in the static code. */
static cdl_t *class_loss(cdl_tape *tp, int kind, cdl_t *x, cdl_t *labels, cdl_t *w, cdl_t *cw, int64_t ignore,
                         double smoothing, int red) {
    const char *op = loss_name[kind];
    if (!labels || !tape_need_real(tp, op, &x, 1)) return labels ? NULL : tape_rec(tp, op, CDL_F32, 0, NULL, 0, 1, &labels);
    int ok = labels->dtype == CDL_I32 && x->rank >= 1 && labels->rank == x->rank - 1;
    for (int i = 0; ok && i < labels->rank; i++) ok = labels->dims[i] == x->dims[i];
    if (!ok) return tape_err(tp, op, "labels %s (i32) do not match scores %s", DSTR(labels), DSTR(x));
    if (w) {
        if (!tape_need_real(tp, op, &w, 1)) return NULL;
        ok = w->rank == labels->rank;
        for (int i = 0; ok && i < w->rank; i++) ok = w->dims[i] == labels->dims[i];
        if (!ok) return tape_err(tp, op, "row weight %s does not match labels %s", DSTR(w), DSTR(labels));
    }
    int64_t C = x->dims[x->rank - 1];
    if (cw && (!tape_need_real(tp, op, &cw, 1) || cw->rank != 1 || cw->dims[0] != C))
        return cw ? tape_err(tp, op, "weight %s must be [%lld] (one per class)", DSTR(cw), (long long)C) : NULL;
    cdl_t *in[4] = {x, labels, w ? w : cw, cw};
    cdl_t *y = loss_rec(tp, op, red, labels, 2 + (w != NULL) + (cw != NULL), in);
    if (!y) return NULL;
    const void *rw = w ? w->data : NULL, *cwd = cw ? cw->data : NULL;
    if (kind == L_CE) {
        y->aux = tape_alloc(tp, (size_t)x->numel * (size_t)tp->rs);
        if (!y->aux) return NULL;
        (void)TK(tp, cross_entropy_ex, labels->numel, C, x->data, labels->data, rw, cwd, ignore, smoothing, red,
                 y->aux, y->data);
    } else {
        (void)TK(tp, nll_ex, labels->numel, C, x->data, labels->data, rw, cwd, ignore, red, y->data);
    }
    y->ia[0] = kind;
    y->ia[1] = red;
    y->ia[2] = ignore;
    y->ia[3] = cw != NULL;
    y->fa[0] = smoothing;
    y->bwd = bwd_loss;
    return y;
}

/* Pair losses and kl_normal: two real operands of one shape. */
static cdl_t *pair_loss(cdl_tape *tp, int kind, cdl_t *a, cdl_t *b, double delta, int red) {
    const char *op = loss_name[kind];
    cdl_t *in[2] = {a, b};
    if (!tape_need_real(tp, op, in, 2)) return NULL;
    int ok = a->rank == b->rank;
    for (int i = 0; ok && i < a->rank; i++) ok = a->dims[i] == b->dims[i];
    if (!ok) return tape_err(tp, op, "shapes differ: %s and %s", DSTR(a), DSTR(b));
    if (kind == L_HUBER && !(delta > 0)) return tape_err(tp, op, "delta must be positive, got %g", delta);
    int64_t n = a->numel, rows, cols;
    cdl_t none = *a;   /* kl_normal: one value a row (rank >= 2) */
    if (kind == L_KL) {
        if (red == CDL_RED_NONE && a->rank < 2) return tape_err(tp, op, "reduce none needs rank >= 2, got %s", DSTR(a));
        none.rank = 1;
    }
    cdl_t *y = loss_rec(tp, op, red, &none, 2, in);
    if (!y) return NULL;
    switch (kind) {
    case L_MSE: TK(tp, mse, n, a->data, b->data, red, y->data); break;
    case L_L1: TK(tp, l1, n, a->data, b->data, red, y->data); break;
    case L_HUBER: TK(tp, huber, n, delta, a->data, b->data, red, y->data); break;
    case L_BCE: TK(tp, bce, n, a->data, b->data, red, y->data); break;
    case L_BCE_LOGITS: TK(tp, bce_logits, n, a->data, b->data, red, y->data); break;
    default:
        kl_geom(a, &rows, &cols);
        TK(tp, kl_normal, rows, cols, a->data, b->data, red, y->data);
        break;
    }
    y->ia[0] = kind;
    y->ia[1] = red;
    y->fa[0] = delta;
    y->bwd = bwd_loss;
    return y;
}

cdl_t *cdl_t_cross_entropy_ex(cdl_tape *tp, cdl_t *logits, cdl_t *labels, cdl_t *row_weight, cdl_t *weight,
                              int64_t ignore_index, double smoothing, int reduce) {
    if (tp && !(smoothing >= 0 && smoothing <= 1)) return tape_err(tp, "cross_entropy", "label_smoothing %g outside [0, 1]", smoothing);
    return class_loss(tp, L_CE, logits, labels, row_weight, weight, ignore_index, smoothing, reduce);
}
cdl_t *cdl_t_cross_entropy(cdl_tape *tp, cdl_t *logits, cdl_t *labels, double smoothing, int reduce) {
    return cdl_t_cross_entropy_ex(tp, logits, labels, NULL, NULL, CDL_NO_IGNORE, smoothing, reduce);
}
cdl_t *cdl_t_nll_ex(cdl_tape *tp, cdl_t *logp, cdl_t *labels, cdl_t *row_weight, cdl_t *weight, int64_t ignore_index,
                    int reduce) {
    return class_loss(tp, L_NLL, logp, labels, row_weight, weight, ignore_index, 0, reduce);
}
cdl_t *cdl_t_nll(cdl_tape *tp, cdl_t *logp, cdl_t *labels, int reduce) { return cdl_t_nll_ex(tp, logp, labels, NULL, NULL, CDL_NO_IGNORE, reduce); }
cdl_t *cdl_t_mse(cdl_tape *tp, cdl_t *a, cdl_t *b, int reduce) { return pair_loss(tp, L_MSE, a, b, 0, reduce); }
cdl_t *cdl_t_l1(cdl_tape *tp, cdl_t *a, cdl_t *b, int reduce) { return pair_loss(tp, L_L1, a, b, 0, reduce); }
cdl_t *cdl_t_huber(cdl_tape *tp, cdl_t *a, cdl_t *b, double delta, int reduce) { return pair_loss(tp, L_HUBER, a, b, delta, reduce); }
cdl_t *cdl_t_bce(cdl_tape *tp, cdl_t *p, cdl_t *target, int reduce) { return pair_loss(tp, L_BCE, p, target, 0, reduce); }
cdl_t *cdl_t_bce_with_logits(cdl_tape *tp, cdl_t *z, cdl_t *target, int reduce) {
    return pair_loss(tp, L_BCE_LOGITS, z, target, 0, reduce);
}
cdl_t *cdl_t_kl_normal(cdl_tape *tp, cdl_t *mu, cdl_t *logvar, int reduce) { return pair_loss(tp, L_KL, mu, logvar, 0, reduce); }
