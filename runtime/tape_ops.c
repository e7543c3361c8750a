/* tape_ops.c -- tape ops, elementwise and dense: broadcasting binary ops, unary math and
 * activations, dropout, stop_gradient, matmul, linear, reductions, broadcast_to,
 * reshape, transpose, concat, slice, stack, view, softmax, log_softmax, embedding.
 *
 * Each op is a pair: the public cdl_t_<op> (check shapes, make the record, run the
 * forward kernel) and a static bwd_<op> (the record's backward rule: the output's
 * gradient y->grad to each input that needs one, through the backward kernels; see
 * tape_int.h for the gradient helpers).  The rules mirror the compiler's gradient rules
 * in compiler/ops_ew.c and ops_dense.c, so both modes compute the same numbers.
 */
#include "tape_int.h"

/* ======================================================================== binary ops */

static const char *const bin_name[] = {"add", "sub", "mul", "div", "maximum", "minimum"};

/* tape_bcast_dims, tape_bcast_strides: see tape_int.h (tape_sel.c uses them too). */
int tape_bcast_dims(const cdl_t *a, const cdl_t *b, int *rank, int64_t *dims) {
    int r = a->rank > b->rank ? a->rank : b->rank;
    for (int i = 0; i < r; i++) {
        int ia = i - (r - a->rank), ib = i - (r - b->rank);
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        if (da != db && da != 1 && db != 1) return 0;
        dims[i] = da == 1 ? db : da;
    }
    *rank = r;
    return 1;
}

void tape_bcast_strides(int r, const int64_t *ydims, int xr, const int64_t *xd, int64_t *st) {
    int64_t s = 1;
    for (int i = r - 1; i >= 0; i--) {
        int j = i - (r - xr);
        st[i] = (j < 0 || (xd[j] == 1 && ydims[i] != 1)) ? 0 : s;
        if (j >= 0) s *= xd[j];
    }
}

/* y = a op b over y's shape (a, b broadcast to it): the same-shape kernels, the scalar
 * fast path, or the general strided kernel. */
static void bin_apply(cdl_tape *tp, int code, const cdl_t *y, const void *a, const cdl_t *as, const void *b,
                      const cdl_t *bs, void *out) {
    int64_t n = y->numel;
    if (as->numel == n && bs->numel == n) {
        switch (code) {
        case CDL_BIN_ADD: TK(tp, add, n, a, b, out); return;
        case CDL_BIN_SUB: TK(tp, sub, n, a, b, out); return;
        case CDL_BIN_MUL: TK(tp, mul, n, a, b, out); return;
        case CDL_BIN_DIV: TK(tp, div, n, a, b, out); return;
        case CDL_BIN_MAX: TK(tp, maximum, n, a, b, out); return;
        default: TK(tp, minimum, n, a, b, out); return;
        }
    }
    if ((as->numel == n || as->numel == 1) && (bs->numel == n || bs->numel == 1)) {
        TK(tp, binary, code, n, a, as->numel == n, b, bs->numel == n, out);
        return;
    }
    int64_t sa[CDL_MAXDIM], sb[CDL_MAXDIM];
    tape_bcast_strides(y->rank, y->dims, as->rank, as->dims, sa);
    tape_bcast_strides(y->rank, y->dims, bs->rank, bs->dims, sb);
    TK(tp, binary_bc, code, y->rank, y->dims, sa, sb, a, b, out);
}

/* Buffer for a y-shaped contribution to x's gradient: x's own gradient when shapes
 * agree and none has arrived (mode 0), a temporary added in (1) or reduced in (2). */
static void *obuf(cdl_tape *tp, cdl_t *x, const cdl_t *y, int *mode) {
    if (x->numel == y->numel) {
        int acc;
        void *d = tape_gdst(tp, x, &acc);
        *mode = acc;
        return d;
    }
    *mode = 2;
    return tape_rtemp(tp, y->numel);
}

static void ofin(cdl_tape *tp, cdl_t *x, const cdl_t *y, void *buf, int mode) {
    if (!buf) return;
    if (mode == 1) tape_gfin(tp, x, buf, 1);
    else if (mode == 2) tape_acc_bcast(tp, x, y, buf);
}

static void bwd_binary(cdl_tape *tp, cdl_t *y) {
    cdl_t *a = y->in[0], *b = y->in[1];
    int code = (int)y->ia[0], na = tape_need(tp, a), nb = tape_need(tp, b), mode;
    void *g = y->grad, *d;
    switch (code) {
    case CDL_BIN_ADD:
        if (na) tape_acc_bcast(tp, a, y, g);
        if (nb) tape_acc_bcast(tp, b, y, g);
        return;
    case CDL_BIN_SUB:
        if (na) tape_acc_bcast(tp, a, y, g);
        if (nb && (d = obuf(tp, b, y, &mode))) {
            TK(tp, neg, y->numel, g, d);
            ofin(tp, b, y, d, mode);
        }
        return;
    case CDL_BIN_MUL:
        if (na && (d = obuf(tp, a, y, &mode))) {
            bin_apply(tp, CDL_BIN_MUL, y, g, y, b->data, b, d);
            ofin(tp, a, y, d, mode);
        }
        if (nb && (d = obuf(tp, b, y, &mode))) {
            bin_apply(tp, CDL_BIN_MUL, y, g, y, a->data, a, d);
            ofin(tp, b, y, d, mode);
        }
        return;
    case CDL_BIN_DIV: {
        /* da = g / b;  db = -(g / b) y */
        void *t = tape_rtemp(tp, y->numel);
        if (!t) return;
        bin_apply(tp, CDL_BIN_DIV, y, g, y, b->data, b, t);
        if (na) tape_acc_bcast(tp, a, y, t);
        if (nb && (d = obuf(tp, b, y, &mode))) {
            TK(tp, mul, y->numel, t, y->data, d);
            TK(tp, neg, y->numel, d, d);
            ofin(tp, b, y, d, mode);
        }
        return;
    }
    default: {
        /* da = g where a wins (ties: a), db = g - da */
        int64_t sa[CDL_MAXDIM], sb[CDL_MAXDIM];
        tape_bcast_strides(y->rank, y->dims, a->rank, a->dims, sa);
        tape_bcast_strides(y->rank, y->dims, b->rank, b->dims, sb);
        void *da = tape_rtemp(tp, y->numel);
        if (!da) return;
        if (y->rank == 0) TK(tp, maxmin_bwd, code == CDL_BIN_MAX, 1, (int64_t[]){1}, (int64_t[]){0}, (int64_t[]){0}, g, a->data, b->data, da);
        else TK(tp, maxmin_bwd, code == CDL_BIN_MAX, y->rank, y->dims, sa, sb, g, a->data, b->data, da);
        if (na) tape_acc_bcast(tp, a, y, da);
        if (nb && (d = obuf(tp, b, y, &mode))) {
            TK(tp, sub, y->numel, g, da, d);
            ofin(tp, b, y, d, mode);
        }
        return;
    }
    }
}

static cdl_t *binary(cdl_tape *tp, int code, cdl_t *a, cdl_t *b) {
    const char *op = bin_name[code];
    cdl_t *ab[2] = {a, b};
    if (!tape_need_real(tp, op, ab, 2)) return NULL;
    int r;
    int64_t dims[CDL_MAXDIM];
    if (!tape_bcast_dims(a, b, &r, dims)) return tape_err(tp, op, "shapes do not broadcast: %s and %s", DSTR(a), DSTR(b));
    cdl_t *y = tape_rec(tp, op, tp->real, r, dims, 1, 2, ab);
    if (!y) return NULL;
    bin_apply(tp, code, y, a->data, a, b->data, b, y->data);
    y->ia[0] = code;
    y->bwd = bwd_binary;
    return y;
}

cdl_t *cdl_t_add(cdl_tape *tp, cdl_t *a, cdl_t *b) { return binary(tp, CDL_BIN_ADD, a, b); }
cdl_t *cdl_t_sub(cdl_tape *tp, cdl_t *a, cdl_t *b) { return binary(tp, CDL_BIN_SUB, a, b); }
cdl_t *cdl_t_mul(cdl_tape *tp, cdl_t *a, cdl_t *b) { return binary(tp, CDL_BIN_MUL, a, b); }
cdl_t *cdl_t_div(cdl_tape *tp, cdl_t *a, cdl_t *b) { return binary(tp, CDL_BIN_DIV, a, b); }
cdl_t *cdl_t_maximum(cdl_tape *tp, cdl_t *a, cdl_t *b) { return binary(tp, CDL_BIN_MAX, a, b); }
cdl_t *cdl_t_minimum(cdl_tape *tp, cdl_t *a, cdl_t *b) { return binary(tp, CDL_BIN_MIN, a, b); }

/* ======================================================================== unary ops */

/* A record y = f(x) of x's shape with backward rule bwd; the caller runs the forward
 * kernel and keeps the attributes.  NULL after an error. */
static cdl_t *unary_rec(cdl_tape *tp, const char *op, cdl_t *x, void (*bwd)(cdl_tape *, cdl_t *)) {
    if (!tape_need_real(tp, op, &x, 1)) return NULL;
    cdl_t *y = tape_rec(tp, op, tp->real, x->rank, x->dims, 1, 1, &x);
    if (y) y->bwd = bwd;
    return y;
}

/* The backward rules below are compiler/ops_ew.c's, each an overwrite of dx. */
#define UNARY_BWD(name, ...) TAPE_BWD1(name, int64_t n = y->numel; __VA_ARGS__)

UNARY_BWD(neg, TK(tp, neg, n, g, d))
UNARY_BWD(exp, TK(tp, mul, n, g, y->data, d))
UNARY_BWD(log, TK(tp, div, n, g, x->data, d))
UNARY_BWD(sqrt, TK(tp, div, n, g, y->data, d); TK(tp, scale, n, 0.5, d))           /* 0.5 g / y */
UNARY_BWD(square, TK(tp, mul, n, g, x->data, d); TK(tp, scale, n, 2.0, d))         /* 2 g x */
UNARY_BWD(softplus, TK(tp, sigmoid, n, x->data, d); TK(tp, mul, n, g, d, d))      /* g sigmoid(x) */
UNARY_BWD(clamp, TK(tp, clamp_bwd, n, y->fa[0], y->fa[1], g, x->data, d))
UNARY_BWD(leaky_relu, TK(tp, leaky_relu_bwd, n, y->fa[0], g, x->data, d))
UNARY_BWD(elu, TK(tp, elu_bwd, n, y->fa[0], g, x->data, d))
/* g [x > 0] - g [-x > 0] */
UNARY_BWD(abs, void *t = tape_rtemp(tp, n); if (!t) return; TK(tp, relu_bwd, n, g, x->data, d); TK(tp, neg, n, x->data, t);
          TK(tp, relu_bwd, n, g, t, t); TK(tp, sub, n, d, t, d))

/* p g x^(p-1); p = 1 passes g on, p = 0 gives nothing. */
static void bwd_pow(cdl_tape *tp, cdl_t *y) {
    cdl_t *x = y->in[0];
    double p = y->fa[0];
    if (p == 0 || !tape_need(tp, x)) return;
    if (p == 1) {
        tape_gadd(tp, x, y->grad);
        return;
    }
    int acc;
    void *d = tape_gdst(tp, x, &acc);
    if (!d) return;
    if (p == 2) {
        TK(tp, mul, y->numel, y->grad, x->data, d);
    } else {
        TK(tp, pows, y->numel, p - 1, x->data, d);
        TK(tp, mul, y->numel, y->grad, d, d);
    }
    TK(tp, scale, y->numel, p, d);
    tape_gfin(tp, x, d, acc);
}

#define UNARY_FWD(name, kernel)                                                 \
    cdl_t *cdl_t_##name(cdl_tape *tp, cdl_t *x) {                               \
        cdl_t *y = unary_rec(tp, #name, x, bwd_##name);                         \
        if (y) TK(tp, kernel, y->numel, x->data, y->data);                      \
        return y;                                                               \
    }
UNARY_FWD(neg, neg)
UNARY_FWD(exp, exp)
UNARY_FWD(log, log)
UNARY_FWD(sqrt, sqrt)
UNARY_FWD(abs, abs)
UNARY_FWD(square, square)
UNARY_FWD(softplus, softplus)

/* pow (p), leaky_relu (slope), elu (alpha): one real attribute, kept in fa[0]. */
#define UNARY_FWD1(name, kernel)                                                \
    cdl_t *cdl_t_##name(cdl_tape *tp, cdl_t *x, double a) {                     \
        cdl_t *y = unary_rec(tp, #name, x, bwd_##name);                         \
        if (!y) return NULL;                                                    \
        y->fa[0] = a;                                                           \
        TK(tp, kernel, y->numel, a, x->data, y->data);                          \
        return y;                                                               \
    }
UNARY_FWD1(pow, pows)
UNARY_FWD1(leaky_relu, leaky_relu)
UNARY_FWD1(elu, elu)

cdl_t *cdl_t_clamp(cdl_tape *tp, cdl_t *x, double lo, double hi) {
    if (!tape_need_real(tp, "clamp", &x, 1)) return NULL;
    if (lo > hi) return tape_err(tp, "clamp", "min %g is greater than max %g", lo, hi);
    cdl_t *y = unary_rec(tp, "clamp", x, bwd_clamp);
    if (!y) return NULL;
    y->fa[0] = lo;
    y->fa[1] = hi;
    TK(tp, clamp, y->numel, lo, hi, x->data, y->data);
    return y;
}

/* ======================================================================== activations */

/* Activations declared with CDL_ACTIVATION (cdl.h): the kernels come with the call,
 * so a new one needs nothing here. */
TAPE_BWD1(act, const cdl_act *a = y->aux; const void *v = a->reads == CDL_ACT_Y ? y->data : x->data;
          if (tp->rs == 8) a->bwd_f64(y->numel, g, v, d);
          else a->bwd_f32(y->numel, g, v, d))

cdl_t *cdl_t_act(cdl_tape *tp, cdl_t *x, const cdl_act *a) {
    cdl_t *y = unary_rec(tp, a->name, x, bwd_act);
    if (!y) return NULL;
    y->aux = (void *)a;
    if (tp->rs == 8) a->f64(y->numel, x->data, y->data);
    else a->f32(y->numel, x->data, y->data);
    return y;
}

/* ======================================================================== dropout, identity */

static void bwd_copy(cdl_tape *tp, cdl_t *y) {
    if (tape_need(tp, y->in[0])) tape_gadd(tp, y->in[0], y->grad);
}

/* The forward's key and counter base regenerate the same mask. */
static void bwd_dropout(cdl_tape *tp, cdl_t *y) {
    cdl_t *x = y->in[0];
    if (!tape_need(tp, x)) return;
    int acc;
    void *d = tape_gdst(tp, x, &acc);
    if (!d) return;
    cdl_rng_key k = {(uint64_t)y->ia[2], (uint64_t)y->ia[3], (uint64_t)y->ia[0]};
    TK(tp, dropout_bwd, k, (uint64_t)y->ia[1], y->numel, y->fa[0], y->grad, d);
    tape_gfin(tp, x, d, acc);
}

/* Train mode and p > 0: inverted dropout keyed by (seed, step, stream), counter base
 * t * numel; otherwise a copy (as the static code). */
cdl_t *cdl_t_dropout(cdl_tape *tp, cdl_t *x, double p, int stream, int64_t t) {
    if (!tape_need_real(tp, "dropout", &x, 1)) return NULL;
    if (!(p >= 0 && p <= 1)) return tape_err(tp, "dropout", "p must be in [0, 1], got %g", p);
    cdl_t *y = tape_rec(tp, "dropout", tp->real, x->rank, x->dims, 1, 1, &x);
    if (!y) return NULL;
    if (tp->train && p > 0) {
        cdl_rng_key k = {tp->net->seed, tp->net->step, (uint64_t)stream};
        uint64_t base = (uint64_t)t * (uint64_t)y->numel;
        TK(tp, dropout, k, base, y->numel, p, x->data, y->data);
        y->ia[0] = stream;
        y->ia[1] = (int64_t)base;
        y->ia[2] = (int64_t)k.seed;
        y->ia[3] = (int64_t)k.step;
        y->fa[0] = p;
        y->bwd = bwd_dropout;
    } else {
        TK(tp, copy, y->numel, x->data, y->data);
        y->bwd = bwd_copy;
    }
    return y;
}

cdl_t *cdl_t_stop_gradient(cdl_tape *tp, cdl_t *x) {
    if (!x) return tape_rec(tp, "stop_gradient", CDL_F32, 0, NULL, 0, 1, &x);
    cdl_t *y = tape_rec(tp, "stop_gradient", x->dtype, x->rank, x->dims, 0, 1, &x);
    if (!y) return NULL;
    y->data = x->data;
    y->flags &= ~(unsigned)(CDL_TF_PARAM | CDL_TF_INPUT);
    return y;
}

/* ======================================================================== matmul, linear */

/* D (+)= op(X) op(Y) for 2-D X, Y given as (data, dims): the GEMM of one gradient term. */
static void mm(cdl_tape *tp, const void *X, const int64_t *xd, int tx, const void *Y, const int64_t *yd, int ty, void *D,
               double beta) {
    int64_t M = xd[tx], K = xd[1 - tx], N = yd[1 - ty];
    TK(tp, gemm, tx, ty, M, N, K, 1.0, X, xd[1], Y, yd[1], beta, D, N);
}

/* C = op(A) op(B): each input's gradient is one GEMM with transpose flags (the table of
 * compiler/ops_dense.c grad_matmul), accumulated straight into its gradient (beta). */
static void bwd_matmul(cdl_tape *tp, cdl_t *y) {
    cdl_t *a = y->in[0], *b = y->in[1];
    int ta = (int)y->ia[0], tb = (int)y->ia[1];
    const void *G = y->grad, *A = a->data, *B = b->data;
    const int64_t *gd = y->dims, *ad = a->dims, *bd = b->dims;
    double beta;
    void *d;
    if (tape_need(tp, a) && (d = tape_gemm_dst(tp, a, &beta))) {
        if (!ta && !tb) mm(tp, G, gd, 0, B, bd, 1, d, beta);
        else if (!ta && tb) mm(tp, G, gd, 0, B, bd, 0, d, beta);
        else if (ta && !tb) mm(tp, B, bd, 0, G, gd, 1, d, beta);
        else mm(tp, B, bd, 1, G, gd, 1, d, beta);
    }
    if (tape_need(tp, b) && (d = tape_gemm_dst(tp, b, &beta))) {
        if (!ta && !tb) mm(tp, A, ad, 1, G, gd, 0, d, beta);
        else if (!ta && tb) mm(tp, G, gd, 1, A, ad, 0, d, beta);
        else if (ta && !tb) mm(tp, A, ad, 0, G, gd, 0, d, beta);
        else mm(tp, G, gd, 1, A, ad, 1, d, beta);
    }
}

cdl_t *cdl_t_matmul(cdl_tape *tp, cdl_t *a, cdl_t *b, int trans_a, int trans_b) {
    cdl_t *ab[2] = {a, b};
    if (!tape_need_real(tp, "matmul", ab, 2)) return NULL;
    int ta = trans_a != 0, tb = trans_b != 0;
    if (a->rank != 2 || b->rank != 2) return tape_err(tp, "matmul", "operands must be 2-D, got %s @ %s", DSTR(a), DSTR(b));
    if (a->dims[1 - ta] != b->dims[tb])
        return tape_err(tp, "matmul", "inner dimensions differ: %s%s @ %s%s", DSTR(a), ta ? "^T" : "", DSTR(b), tb ? "^T" : "");
    int64_t dims[2] = {a->dims[ta], b->dims[1 - tb]};
    cdl_t *y = tape_rec(tp, "matmul", tp->real, 2, dims, 1, 2, ab);
    if (!y) return NULL;
    mm(tp, a->data, a->dims, ta, b->data, b->dims, tb, y->data, 0.0);
    y->ia[0] = ta;
    y->ia[1] = tb;
    y->bwd = bwd_matmul;
    return y;
}

/* y[rows, out] = x[rows, in] W^T + b:  dx = G W,  dW = G^T X,  db = column sums of G. */
static void bwd_linear(cdl_tape *tp, cdl_t *y) {
    cdl_t *x = y->in[0], *w = y->in[1], *b = y->nin > 2 ? y->in[2] : NULL;
    int64_t in = w->dims[1], out = w->dims[0], rows = in ? x->numel / in : 0;
    double beta;
    void *d;
    if (tape_need(tp, x) && (d = tape_gemm_dst(tp, x, &beta)))
        TK(tp, gemm, 0, 0, rows, in, out, 1.0, y->grad, out, w->data, in, beta, d, in);
    if (tape_need(tp, w) && (d = tape_gemm_dst(tp, w, &beta)))
        TK(tp, gemm, 1, 0, out, in, rows, 1.0, y->grad, out, x->data, in, beta, d, in);
    if (b && tape_need(tp, b)) {
        int acc;
        if ((d = tape_gdst(tp, b, &acc))) {
            TK(tp, reduce, 2, ((int64_t[]){rows, out}), 1u, 0, y->grad, d);
            tape_gfin(tp, b, d, acc);
        }
    }
}

cdl_t *cdl_t_linear(cdl_tape *tp, cdl_t *x, cdl_t *w, cdl_t *b) {
    cdl_t *in[3] = {x, w, b};
    int nin = b ? 3 : 2;
    if (!tape_need_real(tp, "linear", in, nin)) return NULL;
    if (w->rank != 2) return tape_err(tp, "linear", "the weight must be 2-D [out, in], got %s", DSTR(w));
    if (x->rank < 1 || x->dims[x->rank - 1] != w->dims[1])
        return tape_err(tp, "linear", "input %s does not match the weight %s", DSTR(x), DSTR(w));
    if (b && (b->rank != 1 || b->dims[0] != w->dims[0]))
        return tape_err(tp, "linear", "the bias must be [%lld], got %s", (long long)w->dims[0], DSTR(b));
    int64_t dims[CDL_MAXDIM];
    for (int i = 0; i < x->rank; i++) dims[i] = x->dims[i];
    dims[x->rank - 1] = w->dims[0];
    cdl_t *y = tape_rec(tp, "linear", tp->real, x->rank, dims, 1, nin, in);
    if (!y) return NULL;
    int64_t rows = w->dims[1] ? x->numel / w->dims[1] : 0;
    TK(tp, linear, rows, w->dims[1], w->dims[0], x->data, w->data, b ? b->data : NULL, y->data);
    y->bwd = bwd_linear;
    return y;
}

/* ======================================================================== sum, mean */

/* The reduced gradient (scaled by 1 / count for mean) spread back over x's shape. */
static void bwd_reduce(cdl_tape *tp, cdl_t *y) {
    cdl_t *x = y->in[0];
    if (!tape_need(tp, x)) return;
    unsigned mask = (unsigned)y->ia[0];
    const void *g = y->grad;
    if (y->ia[1]) {                               /* mean */
        int64_t count = 1;
        for (int i = 0; i < x->rank; i++)
            if (mask >> i & 1u) count *= x->dims[i];
        void *s = tape_rtemp(tp, y->numel);
        if (!s) return;
        TK(tp, copy, y->numel, g, s);
        TK(tp, scale, y->numel, count > 0 ? 1.0 / (double)count : 0.0, s);
        g = s;
    }
    if (x->numel == y->numel) {
        tape_gadd(tp, x, g);
        return;
    }
    int64_t kd[CDL_MAXDIM];
    for (int i = 0; i < x->rank; i++) kd[i] = (mask >> i & 1u) ? 1 : x->dims[i];
    int acc;
    void *d = tape_gdst(tp, x, &acc);
    if (!d) return;
    TK(tp, broadcast, x->rank, kd, x->dims, g, d);
    tape_gfin(tp, x, d, acc);
}

/* Records y = x reduced over the axes of mask (each kept as size 1 under keepdim). */
static cdl_t *rec_reduced(cdl_tape *tp, const char *op, cdl_t *x, unsigned mask, int keepdim) {
    int64_t dims[CDL_MAXDIM];
    int r = 0;
    for (int i = 0; i < x->rank; i++) {
        if (!(mask >> i & 1u)) dims[r++] = x->dims[i];
        else if (keepdim) dims[r++] = 1;
    }
    return tape_rec(tp, op, tp->real, r, dims, 1, 1, &x);
}

static cdl_t *reduce(cdl_tape *tp, const char *op, int mean, cdl_t *x, unsigned axes, int keepdim) {
    if (!tape_need_real(tp, op, &x, 1)) return NULL;
    unsigned all = x->rank ? (1u << x->rank) - 1 : 0;
    if (axes & ~all) return tape_err(tp, op, "axis set 0x%x is out of range for %s", axes, DSTR(x));
    unsigned mask = axes ? axes : all;
    cdl_t *y = rec_reduced(tp, op, x, mask, keepdim);
    if (!y) return NULL;
    if (x->rank == 0) TK(tp, copy, 1, x->data, y->data);
    else TK(tp, reduce, x->rank, x->dims, mask, mean, x->data, y->data);
    return tape_done(y, bwd_reduce, 2, (const int64_t[]){mask, mean});
}

cdl_t *cdl_t_sum(cdl_tape *tp, cdl_t *x, unsigned axes, int keepdim) { return reduce(tp, "sum", 0, x, axes, keepdim); }
cdl_t *cdl_t_mean(cdl_tape *tp, cdl_t *x, unsigned axes, int keepdim) { return reduce(tp, "mean", 1, x, axes, keepdim); }

/* The winner of each output (y->aux, int64) takes its gradient. */
TAPE_BWD1(reduce_max, TK(tp, reduce_max_bwd, y->numel, x->numel, g, (const int64_t *)y->aux, d))

cdl_t *cdl_t_reduce_max(cdl_tape *tp, cdl_t *x, unsigned axes, int keepdim, int is_min) {
    const char *op = is_min ? "min" : "max";
    if (!tape_need_real(tp, op, &x, 1)) return NULL;
    unsigned all = (1u << x->rank) - 1;
    if (x->rank == 0 || (axes & ~all)) return tape_err(tp, op, "axis set 0x%x does not fit %s", axes, DSTR(x));
    unsigned mask = axes ? axes : all;
    cdl_t *y = rec_reduced(tp, op, x, mask, keepdim);
    if (!y) return NULL;
    y->aux = tape_alloc(tp, (size_t)y->numel * sizeof(int64_t));
    if (!y->aux) return NULL;
    TK(tp, reduce_max, x->rank, x->dims, mask, is_min != 0, x->data, y->data, (int64_t *)y->aux);
    y->bwd = bwd_reduce_max;
    return y;
}

/* ======================================================================== shapes */

static void bwd_broadcast(cdl_tape *tp, cdl_t *y) { tape_acc_bcast(tp, y->in[0], y, y->grad); }

cdl_t *cdl_t_broadcast_to(cdl_tape *tp, cdl_t *x, int rank, const int64_t *dims) {
    if (!x) return tape_rec(tp, "broadcast_to", CDL_F32, 0, NULL, 0, 1, &x);
    if (rank < x->rank || rank > CDL_MAXDIM) return tape_err(tp, "broadcast_to", "cannot broadcast %s to rank %d", DSTR(x), rank);
    int64_t xd[CDL_MAXDIM];
    int lead = rank - x->rank;
    for (int i = 0; i < rank; i++) {
        xd[i] = i < lead ? 1 : x->dims[i - lead];
        if (xd[i] != 1 && xd[i] != dims[i])
            return tape_err(tp, "broadcast_to", "cannot broadcast %s to %s", DSTR(x), tape_dims_str((char[96]){0}, 96, rank, dims));
    }
    cdl_t *y = tape_rec(tp, "broadcast_to", x->dtype, rank, dims, 1, 1, &x);
    if (!y) return NULL;
    if (rank == 0) memcpy(y->data, x->data, tape_esize(tp, x));
    else TKM(tp, x, broadcast, rank, xd, dims, x->data, y->data);
    y->bwd = bwd_broadcast;
    return y;
}

static void bwd_reshape(cdl_tape *tp, cdl_t *y) {
    if (tape_need(tp, y->in[0])) tape_gadd(tp, y->in[0], y->grad);
}

/* A view: the same elements in the same order under new dims. */
cdl_t *cdl_t_reshape(cdl_tape *tp, cdl_t *x, int rank, const int64_t *dims) {
    if (!x) return tape_rec(tp, "reshape", CDL_F32, 0, NULL, 0, 1, &x);
    cdl_t *y = tape_rec(tp, "reshape", x->dtype, rank, dims, 0, 1, &x);
    if (!y) return NULL;
    if (y->numel != x->numel)
        return tape_err(tp, "reshape", "%s has %lld elements, %s has %lld", DSTR(x), (long long)x->numel, DSTR(y),
                        (long long)y->numel);
    y->data = x->data;
    y->bwd = bwd_reshape;
    return y;
}

/* dx = g transposed by the inverse permutation. */
static void bwd_transpose(cdl_tape *tp, cdl_t *y) {
    cdl_t *x = y->in[0];
    if (!tape_need(tp, x)) return;
    int inv[CDL_MAXDIM];
    for (int i = 0; i < y->rank; i++) inv[y->ia[i]] = i;
    int acc;
    void *d = tape_gdst(tp, x, &acc);
    if (!d) return;
    TK(tp, transpose, y->rank, y->dims, inv, y->grad, d);
    tape_gfin(tp, x, d, acc);
}

cdl_t *cdl_t_transpose(cdl_tape *tp, cdl_t *x, const int *perm) {
    if (!x) return tape_rec(tp, "transpose", CDL_F32, 0, NULL, 0, 1, &x);
    int seen[CDL_MAXDIM] = {0};
    int64_t dims[CDL_MAXDIM];
    for (int i = 0; i < x->rank; i++) {
        if (perm[i] < 0 || perm[i] >= x->rank || seen[perm[i]]++)
            return tape_err(tp, "transpose", "not a permutation of the %d axes of %s", x->rank, DSTR(x));
        dims[i] = x->dims[perm[i]];
    }
    cdl_t *y = tape_rec(tp, "transpose", x->dtype, x->rank, dims, 1, 1, &x);
    if (!y) return NULL;
    if (x->rank == 0) memcpy(y->data, x->data, tape_esize(tp, x));
    else TKM(tp, x, transpose, x->rank, x->dims, perm, x->data, y->data);
    for (int i = 0; i < x->rank; i++) y->ia[i] = perm[i];
    y->bwd = bwd_transpose;
    return y;
}

/* Input k's gradient is its slice of g along the axis. */
static void bwd_concat(cdl_tape *tp, cdl_t *y) {
    int axis = (int)y->ia[0];
    int64_t outer = tape_prod(y->dims, 0, axis), rest = tape_prod(y->dims, axis + 1, y->rank), off = 0;
    for (int k = 0; k < y->nin; k++) {
        cdl_t *x = y->in[k];
        int64_t d = x->dims[axis];
        if (tape_need(tp, x)) {
            int acc;
            void *dst = tape_gdst(tp, x, &acc);
            if (!dst) return;
            TK(tp, slice, outer, y->dims[axis], rest, off, 1, d, y->grad, dst);
            tape_gfin(tp, x, dst, acc);
        }
        off += d;
    }
}

/* concat and stack: 0 (failed) unless xs holds n >= 1 tensors; a NULL one is an earlier
 * failure, whose message tape_rec keeps. */
static int need_list(cdl_tape *tp, const char *op, int n, cdl_t *const *xs) {
    if (!tp) return 0;
    if (n < 1 || !xs) return tape_err(tp, op, "needs at least one tensor"), 0;
    for (int k = 0; k < n; k++)
        if (!xs[k]) return tape_rec(tp, op, CDL_F32, 0, NULL, 0, 1, &xs[k]), 0;
    return 1;
}

/* Fills record y with the n tensors xs joined row by row: each of the outer rows of y
 * is row o of xs[0], then of xs[1], ... (concat, stack); ia[0] = ia0. */
static cdl_t *join(cdl_tape *tp, cdl_t *y, int n, cdl_t *const *xs, int64_t outer,
                   void (*bwd)(cdl_tape *, cdl_t *), int64_t ia0) {
    char *mark = tp->hi;
    int64_t *inner = tape_temp(tp, sizeof(int64_t) * (size_t)n);
    const void **ptr = tape_temp(tp, sizeof(void *) * (size_t)n);
    if (!inner || !ptr) return NULL;
    for (int k = 0; k < n; k++) {
        inner[k] = outer ? xs[k]->numel / outer : 0;
        ptr[k] = xs[k]->data;
    }
    TKM(tp, xs[0], concat, n, outer, inner, (void *)ptr, y->data);
    tape_release(tp, mark);
    return tape_done(y, bwd, 1, &ia0);
}

cdl_t *cdl_t_concat(cdl_tape *tp, int n, cdl_t *const *xs, int axis) {
    if (!need_list(tp, "concat", n, xs)) return NULL;
    const cdl_t *f = xs[0];
    int r = f->rank;
    if (axis < 0) axis += r;
    if (axis < 0 || axis >= r) return tape_err(tp, "concat", "axis %d is out of range for %s", axis, DSTR(f));
    int64_t dims[CDL_MAXDIM];
    for (int i = 0; i < r; i++) dims[i] = f->dims[i];
    dims[axis] = 0;
    for (int k = 0; k < n; k++) {
        const cdl_t *p = xs[k];
        int ok = p->rank == r && p->dtype == f->dtype;
        for (int i = 0; ok && i < r; i++) ok = i == axis || p->dims[i] == f->dims[i];
        if (!ok) return tape_err(tp, "concat", "argument %d is %s, argument 1 %s (along axis %d)", k + 1, DSTR(p), DSTR(f), axis);
        dims[axis] += p->dims[axis];
    }
    cdl_t *y = tape_rec(tp, "concat", f->dtype, r, dims, 1, n, xs);
    if (!y) return NULL;
    return join(tp, y, n, xs, tape_prod(dims, 0, axis), bwd_concat, axis);
}

/* Slice geometry of record y over x: outer, len, inner. */
static void slice_geom(const cdl_t *x, int axis, int64_t *outer, int64_t *len, int64_t *inner) {
    *outer = tape_prod(x->dims, 0, axis);
    *len = x->dims[axis];
    *inner = tape_prod(x->dims, axis + 1, x->rank);
}

static void bwd_slice(cdl_tape *tp, cdl_t *y) {
    cdl_t *x = y->in[0];
    if (!tape_need(tp, x)) return;
    int64_t outer, len, inner;
    slice_geom(x, (int)y->ia[0], &outer, &len, &inner);
    int acc;
    void *d = tape_gdst(tp, x, &acc);
    if (!d) return;
    TK(tp, slice_bwd, outer, len, inner, y->ia[1], y->ia[2], y->ia[3], y->grad, d);
    tape_gfin(tp, x, d, acc);
}

cdl_t *cdl_t_slice(cdl_tape *tp, cdl_t *x, int axis, int64_t start, int64_t step, int64_t count, int index) {
    if (!x) return tape_rec(tp, "slice", CDL_F32, 0, NULL, 0, 1, &x);
    if (axis < 0) axis += x->rank;
    if (axis < 0 || axis >= x->rank) return tape_err(tp, "slice", "axis %d is out of range for %s", axis, DSTR(x));
    if (step < 1 || count < 1 || (index && count != 1))
        return tape_err(tp, "slice", "step %lld, count %lld%s", (long long)step, (long long)count, index ? " (index mode: count 1)" : "");
    int64_t dims[CDL_MAXDIM];
    int r = 0;
    for (int i = 0; i < x->rank; i++) {
        if (i != axis) dims[r++] = x->dims[i];
        else if (!index) dims[r++] = count;
    }
    cdl_t *y = tape_rec(tp, "slice", x->dtype, r, dims, 1, 1, &x);
    if (!y) return NULL;
    int64_t outer, len, inner;
    slice_geom(x, axis, &outer, &len, &inner);
    TKM(tp, x, slice, outer, len, inner, start, step, count, x->data, y->data);
    return tape_done(y, bwd_slice, 4, (const int64_t[]){axis, start, step, count});
}

/* Step k's gradient: position k of the stacked axis of g. */
static void bwd_stack(cdl_tape *tp, cdl_t *y) {
    int64_t n = y->nin, outer = y->ia[0] ? y->dims[0] : 1;
    int64_t row = n ? y->numel / (outer * n) : 0;
    for (int64_t k = 0; k < n; k++) {
        cdl_t *x = y->in[k];
        if (!tape_need(tp, x)) continue;
        int acc;
        void *d = tape_gdst(tp, x, &acc);
        if (!d) return;
        TK(tp, slice, outer, n, row, k, 1, 1, y->grad, d);
        tape_gfin(tp, x, d, acc);
    }
}

cdl_t *cdl_t_stack(cdl_tape *tp, int n, cdl_t *const *xs, int batched) {
    if (!need_list(tp, "stack", n, xs)) return NULL;
    const cdl_t *f = xs[0];
    if (f->rank + 1 > CDL_MAXDIM || (batched && f->rank < 1))
        return tape_err(tp, "stack", "cannot stack %s%s", DSTR(f), batched ? " along axis 1" : "");
    for (int k = 1; k < n; k++) {
        int ok = xs[k]->rank == f->rank && xs[k]->dtype == f->dtype;
        for (int i = 0; ok && i < f->rank; i++) ok = xs[k]->dims[i] == f->dims[i];
        if (!ok) return tape_err(tp, "stack", "step %d is %s, step 0 %s", k, DSTR(xs[k]), DSTR(f));
    }
    int at = batched ? 1 : 0;
    int64_t dims[CDL_MAXDIM];
    for (int i = 0, j = 0; i <= f->rank; i++) dims[i] = i == at ? n : f->dims[j++];
    cdl_t *y = tape_rec(tp, "stack", f->dtype, f->rank + 1, dims, 1, n, xs);
    if (!y) return NULL;
    return join(tp, y, n, xs, batched ? f->dims[0] : 1, bwd_stack, batched != 0);
}

/* g added into x's gradient at the view's offset (the rest of x's gradient unchanged). */
static void bwd_view(cdl_tape *tp, cdl_t *y) {
    cdl_t *x = y->in[0];
    if (!tape_need(tp, x)) return;
    void *d = tape_gzero(tp, x);
    if (d) TK(tp, add_inplace, y->numel, y->grad, tape_at(tp, x, d, y->ia[0]));
}

cdl_t *cdl_t_view(cdl_tape *tp, cdl_t *x, int64_t offset, int rank, const int64_t *dims) {
    if (!x) return tape_rec(tp, "view", CDL_F32, 0, NULL, 0, 1, &x);
    cdl_t *y = tape_rec(tp, "view", x->dtype, rank, dims, 0, 1, &x);
    if (!y) return NULL;
    if (offset < 0 || offset > x->numel || y->numel > x->numel - offset)
        return tape_err(tp, "view", "%s at offset %lld does not fit in %s", DSTR(y), (long long)offset, DSTR(x));
    y->data = tape_at(tp, x, x->data, offset);
    y->ia[0] = offset;
    y->bwd = bwd_view;
    return y;
}

/* ======================================================================== softmax, embedding */

static void bwd_softmax(cdl_tape *tp, cdl_t *y) {
    cdl_t *x = y->in[0];
    if (!tape_need(tp, x)) return;
    int64_t n = y->dims[y->rank - 1], rows = n ? y->numel / n : 0;
    int acc;
    void *d = tape_gdst(tp, x, &acc);
    if (!d) return;
    if (y->ia[0]) TK(tp, log_softmax_bwd, rows, n, y->grad, y->data, d);
    else TK(tp, softmax_bwd, rows, n, y->grad, y->data, d);
    tape_gfin(tp, x, d, acc);
}

static cdl_t *softmax(cdl_tape *tp, const char *op, int lg, cdl_t *x) {
    if (!tape_need_real(tp, op, &x, 1)) return NULL;
    if (x->rank < 1) return tape_err(tp, op, "needs at least one axis, got a scalar");
    cdl_t *y = tape_rec(tp, op, tp->real, x->rank, x->dims, 1, 1, &x);
    if (!y) return NULL;
    int64_t n = x->dims[x->rank - 1], rows = n ? x->numel / n : 0;
    if (lg) TK(tp, log_softmax, rows, n, x->data, y->data);
    else TK(tp, softmax, rows, n, x->data, y->data);
    y->ia[0] = lg;
    y->bwd = bwd_softmax;
    return y;
}

cdl_t *cdl_t_softmax(cdl_tape *tp, cdl_t *x) { return softmax(tp, "softmax", 0, x); }
cdl_t *cdl_t_log_softmax(cdl_tape *tp, cdl_t *x) { return softmax(tp, "log_softmax", 1, x); }

static void bwd_embedding(cdl_tape *tp, cdl_t *y) {
    cdl_t *ids = y->in[0], *w = y->in[1];
    if (!tape_need(tp, w)) return;
    int acc;
    void *d = tape_gdst(tp, w, &acc);
    if (!d) return;
    TK(tp, embedding_bwd, ids->numel, w->dims[0], w->dims[1], y->grad, ids->data, d);
    tape_gfin(tp, w, d, acc);
}

cdl_t *cdl_t_embedding(cdl_tape *tp, cdl_t *ids, cdl_t *w) {
    if (!ids || !tape_need_real(tp, "embedding", &w, 1)) return ids ? NULL : tape_rec(tp, "embedding", CDL_F32, 0, NULL, 0, 1, &ids);
    if (ids->dtype != CDL_I32) return tape_err(tp, "embedding", "ids must be i32, got reals %s", DSTR(ids));
    if (w->rank != 2) return tape_err(tp, "embedding", "the table must be 2-D [V, D], got %s", DSTR(w));
    if (ids->rank + 1 > CDL_MAXDIM) return tape_err(tp, "embedding", "ids %s have too many dimensions", DSTR(ids));
    int64_t dims[CDL_MAXDIM];
    for (int i = 0; i < ids->rank; i++) dims[i] = ids->dims[i];
    dims[ids->rank] = w->dims[1];
    cdl_t *in[2] = {ids, w};
    cdl_t *y = tape_rec(tp, "embedding", tp->real, ids->rank + 1, dims, 1, 2, in);
    if (!y) return NULL;
    TK(tp, embedding, ids->numel, w->dims[0], w->dims[1], ids->data, w->data, y->data);
    y->bwd = bwd_embedding;
    return y;
}
