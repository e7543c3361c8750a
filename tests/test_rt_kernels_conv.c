/* test_rt_kernels_conv.c -- conv / pooling / batch-norm kernels: forward kernels
 * against naive references (f32 and f64), backward kernels against central finite
 * differences in f64 (|num - ana| <= 1e-5 + 1e-3 |num|), several geometries
 * (stride, padding, 1x1, grouped im2col, runtime batch below the group size). */
#include "test_rt_util.h"

/* ------------------------------------------------------------------ helpers */

static double dot(const double *a, const double *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* ------------------------------------------------------------------ convolution */

static cdl_conv2d_geom geom(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r, int64_t s,
                            int64_t stride, int64_t pad, int64_t group) {
    cdl_conv2d_geom g = {.n = n, .c = c, .h = h, .w = w, .k = k, .r = r, .s = s, .stride = stride, .pad = pad};
    g.oh = (h + 2 * pad - r) / stride + 1;
    g.ow = (w + 2 * pad - s) / stride + 1;
    g.group = group;
    return g;
}

static void conv_ref(const cdl_conv2d_geom *g, const double *x, const double *w, const double *b, double *y) {
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t k = 0; k < g->k; k++)
            for (int64_t oh = 0; oh < g->oh; oh++)
                for (int64_t ow = 0; ow < g->ow; ow++) {
                    double s = b ? b[k] : 0;
                    for (int64_t c = 0; c < g->c; c++)
                        for (int64_t r = 0; r < g->r; r++)
                            for (int64_t q = 0; q < g->s; q++) {
                                int64_t ih = oh * g->stride - g->pad + r, iw = ow * g->stride - g->pad + q;
                                if (ih < 0 || ih >= g->h || iw < 0 || iw >= g->w) continue;
                                s += x[((n * g->c + c) * g->h + ih) * g->w + iw] * w[((k * g->c + c) * g->r + r) * g->s + q];
                            }
                    y[((n * g->k + k) * g->oh + oh) * g->ow + ow] = s;
                }
}

typedef struct ConvCase {
    cdl_conv2d_geom g;
    double *x, *w, *b, *y, *R, *scratch;
} ConvCase;

static double conv_loss(void *ctx) {
    ConvCase *cc = ctx;
    cdl_conv2d_f64(&cc->g, cc->x, cc->w, cc->b, cc->y, cc->scratch);
    return dot(cc->y, cc->R, cc->g.n * cc->g.k * cc->g.oh * cc->g.ow);
}

/* Forward (f64 and f32) against the reference, then dx, dw by finite differences. */
static void conv_case(cdl_conv2d_geom g, int bias) {
    int64_t nx = g.n * g.c * g.h * g.w, nw = g.k * g.c * g.r * g.s, ny = g.n * g.k * g.oh * g.ow;
    ConvCase cc = {.g = g};
    cc.x = dvec(nx);
    cc.w = dvec(nw);
    cc.b = bias ? dvec(g.k) : NULL;
    cc.y = dvec(ny);
    cc.R = dvec(ny);
    int64_t ns = cdl_conv2d_scratch(&g);
    cc.scratch = dvec(ns);
    double *ref = dvec(ny);
    conv_ref(&g, cc.x, cc.w, cc.b, ref);

    cdl_conv2d_f64(&g, cc.x, cc.w, cc.b, cc.y, cc.scratch);
    for (int64_t i = 0; i < ny; i++) assert_true(fabs(cc.y[i] - ref[i]) <= 1e-12 * (1 + fabs(ref[i])));

    float *fx = fcopy(cc.x, nx), *fw = fcopy(cc.w, nw), *fb = bias ? fcopy(cc.b, g.k) : NULL;
    float *fy = fcopy(cc.y, ny), *fs = fcopy(cc.scratch, ns);
    cdl_conv2d_f32(&g, fx, fw, fb, fy, fs);
    for (int64_t i = 0; i < ny; i++) assert_true(fabs(fy[i] - ref[i]) <= 1e-4 * (1 + fabs(ref[i])));

    double *dx = dvec(nx), *dw = dvec(nw); /* garbage in: the kernels must overwrite */
    cdl_conv2d_bwd_x_f64(&g, cc.R, cc.w, dx, cc.scratch);
    cdl_conv2d_bwd_w_f64(&g, cc.R, cc.x, dw, cc.scratch);
    fd_check("conv dx", cc.x, nx, dx, conv_loss, &cc);
    fd_check("conv dw", cc.w, nw, dw, conv_loss, &cc);

    /* f32 backward agrees with f64 */
    float *fR = fcopy(cc.R, ny), *fdx = fcopy(dx, nx), *fdw = fcopy(dw, nw);
    memset(fdx, 0x7f, sizeof(float) * (size_t)nx);
    cdl_conv2d_bwd_x_f32(&g, fR, fw, fdx, fs);
    cdl_conv2d_bwd_w_f32(&g, fR, fx, fdw, fs);
    for (int64_t i = 0; i < nx; i++) assert_true(fabs(fdx[i] - dx[i]) <= 1e-4 * (1 + fabs(dx[i])));
    for (int64_t i = 0; i < nw; i++) assert_true(fabs(fdw[i] - dw[i]) <= 1e-4 * (1 + fabs(dw[i])));

    free(cc.x); free(cc.w); free(cc.b); free(cc.y); free(cc.R); free(cc.scratch); free(ref);
    free(fx); free(fw); free(fb); free(fy); free(fs); free(dx); free(dw); free(fR); free(fdx); free(fdw);
}

static void test_conv_basic(void **st) {
    (void)st;
    conv_case(geom(2, 3, 6, 5, 4, 3, 3, 1, 0, 1), 1);
    conv_case(geom(2, 3, 6, 5, 4, 3, 3, 1, 1, 1), 0);
}

/* Stride 1: the direct kernel (cdl_conv2d_vec): uneven channel blocks (13 = 7 + 6,
 * 9 = 5 + 4), non-square kernels, pad 2, grids longer than one pixel block, odd sizes;
 * pad >= the kernel falls back to the wide im2col lowering. */
static void test_conv_direct(void **st) {
    (void)st;
    conv_case(geom(3, 9, 11, 13, 13, 3, 3, 1, 1, 1), 1);
    conv_case(geom(2, 2, 9, 7, 10, 5, 5, 1, 2, 1), 1);
    conv_case(geom(2, 3, 6, 9, 5, 2, 3, 1, 1, 1), 0);
    conv_case(geom(1, 1, 12, 12, 6, 5, 5, 1, 0, 1), 1);
    conv_case(geom(5, 2, 12, 12, 3, 3, 3, 1, 1, 1), 1); /* bwd_w: 4 images, then 1 */
    /* rows W + pad apart, the border columns shared by neighbouring rows (cv_pad): the
     * forward's border (pad) differs from bwd_x's (s - 1 - pad) in 5x5 pad 1 and pad 3;
     * rows of one vector and one past it */
    conv_case(geom(2, 2, 7, 16, 3, 5, 5, 1, 1, 1), 1);
    conv_case(geom(2, 2, 6, 17, 3, 5, 5, 1, 3, 1), 0);
    conv_case(geom(2, 3, 5, 17, 4, 3, 3, 1, 1, 1), 1);
    cdl_conv2d_geom g = geom(2, 2, 4, 5, 3, 3, 3, 1, 3, 1);
    assert_false(cdl_conv2d_vec(&g));
    conv_case(g, 1);
    g = geom(3, 4, 9, 7, 6, 5, 5, 1, 2, 1); /* narrow, 5x5: the lane mode, rows of 7 */
    assert_true(cdl_conv2d_lanes_f64(&g) && cdl_conv2d_lanes_f32(&g));
    conv_case(g, 1);
}

static void test_conv_stride_pad(void **st) {
    (void)st;
    conv_case(geom(2, 2, 7, 7, 3, 3, 3, 2, 1, 1), 1);
    conv_case(geom(1, 2, 8, 6, 2, 5, 5, 2, 2, 1), 1);
    conv_case(geom(2, 1, 5, 5, 2, 2, 3, 3, 1, 1), 1); /* non-square kernel, stride 3 */
    conv_case(geom(1, 2, 4, 4, 3, 1, 1, 2, 0, 1), 0); /* 1x1 stride 2: needs im2col */
}

static void test_conv_pointwise(void **st) {
    (void)st;
    cdl_conv2d_geom g = geom(3, 4, 3, 5, 2, 1, 1, 1, 0, 1);
    assert_int_equal(cdl_conv2d_scratch(&g), 2 * 4); /* no im2col: only dw^T */
    conv_case(g, 1);
    conv_case(geom(3, 4, 3, 5, 2, 1, 1, 1, 0, 2), 1); /* grouped pointwise */
}

static void test_conv_grouped(void **st) {
    (void)st;
    conv_case(geom(5, 2, 5, 4, 3, 3, 3, 1, 1, 2), 1); /* last group partial */
    conv_case(geom(4, 3, 6, 6, 2, 3, 3, 2, 1, 4), 0);
    conv_case(geom(2, 2, 4, 4, 2, 3, 3, 1, 1, 8), 1); /* runtime batch < group */
    /* stride 1: the direct kernel (cdl_conv2d_vec), whatever the group: grids of 22
     * columns ((4-1)*6 + 4), so bwd_w takes 8 images at a time: per thread slot 8 padded
     * x (2x6x6, more than one padded g, 3x6x6) plus a block; 8 grids rounded up to 48 for
     * 3 channels (more than a forward grid per slot); packed weights, lane partials;
     * a same-padded 3x3 (cdl_conv2d_vec_xw): bwd_xw's per-image bias sums, n * k */
    cdl_conv2d_geom g = geom(7, 2, 4, 4, 3, 3, 3, 1, 1, 3);
    assert_int_equal(cdl_conv2d_vec_group(&g), 8);
    assert_true(cdl_conv2d_vec_xw(&g));
    assert_int_equal(cdl_conv2d_scratch(&g),
                     CDL_CONV_THREADS * (8 * 2 * 36 + 48 + 8 * 3 * 48 + 3 * 18 * 16) + 3 * 18 + 7 * 3);
    /* strided: classic im2col, 4 columns per image */
    g = geom(7, 2, 4, 4, 3, 3, 3, 2, 1, 3);
    assert_int_equal(cdl_conv2d_scratch(&g), 18 * 3 * 4 + 3 * 3 * 4 + 3 * 18);
    g.group = 1;
    assert_int_equal(cdl_conv2d_scratch(&g), 18 * 4 + 3 * 18);
}

static void test_conv_empty_batch(void **st) {
    (void)st;
    cdl_conv2d_geom g = geom(0, 1, 3, 3, 2, 3, 3, 1, 1, 1);
    float dw[18], x[1] = {0}, gg[1] = {0};
    float *scratch = calloc((size_t)cdl_conv2d_scratch(&g), sizeof(float));
    assert_non_null(scratch);
    for (int i = 0; i < 18; i++) dw[i] = 5;
    cdl_conv2d_bwd_w_f32(&g, gg, x, dw, scratch);
    for (int i = 0; i < 18; i++) assert_true(dw[i] == 0);
    free(scratch);
}

static void test_conv_pick_group(void **st) {
    (void)st;
    cdl_conv2d_geom g = geom(64, 6, 14, 14, 16, 5, 5, 1, 0, 0); /* LeNet conv2: P = 100 */
    assert_int_equal(cdl_conv2d_pick_group(&g), 3); /* ~256 columns */
    g = geom(64, 512, 8, 8, 16, 3, 3, 1, 1, 0); /* P = 64 wants 4; the im2col cap allows 3 */
    assert_int_equal(cdl_conv2d_pick_group(&g), 3);
    g = geom(2, 6, 4, 4, 16, 3, 3, 1, 1, 0); /* never more than the batch */
    assert_int_equal(cdl_conv2d_pick_group(&g), 2);
    g = geom(64, 3, 64, 64, 16, 3, 3, 1, 1, 0); /* P = 4096: one image fills a GEMM */
    assert_int_equal(cdl_conv2d_pick_group(&g), 1);
    g = geom(1, 3, 4, 4, 16, 3, 3, 1, 1, 0);
    assert_int_equal(cdl_conv2d_pick_group(&g), 1);
}

/* The pool: forward, bwd_x and bwd_w give the same bits with 1, 2, 3, 4 and 5 threads
 * (images and channels split unevenly; calls large enough to be split, see
 * kernels_conv_t.h CV_PAR_MACS), and the results are right (so the split did run the
 * whole batch).  Scratch starts as garbage for each run. */
static void conv_threads_case(cdl_conv2d_geom g) {
    assert_true(cdl_conv2d_vec(&g));
    int64_t nx = g.n * g.c * g.h * g.w, nw = g.k * g.c * g.r * g.s, ny = g.n * g.k * g.oh * g.ow;
    int64_t ns = cdl_conv2d_scratch(&g);
    double *x = dvec(nx), *w = dvec(nw), *b = dvec(g.k), *gy = dvec(ny), *ref = dvec(ny);
    float *fx = fcopy(x, nx), *fw = fcopy(w, nw), *fb = fcopy(b, g.k), *fg = fcopy(gy, ny);
    float *y[2], *dx[2], *dw[2], *scr = malloc(sizeof(float) * (size_t)ns);
    assert_non_null(scr);
    for (int i = 0; i < 2; i++) {
        y[i] = malloc(sizeof(float) * (size_t)ny);
        dx[i] = malloc(sizeof(float) * (size_t)nx);
        dw[i] = malloc(sizeof(float) * (size_t)nw);
        assert_true(y[i] && dx[i] && dw[i]);
    }
    double *dy = dvec(ny), *ddx = dvec(nx), *ddw = dvec(nw), *dscr = dvec(ns);
    double *ey = dvec(ny), *edx = dvec(nx), *edw = dvec(nw);
    for (int t = 1; t <= 5; t++) {
        cdl_parallel_set_threads(t);
        assert_int_equal(cdl_parallel_threads(), t);
        const int i = t > 1;
        memset(scr, 0xA5, sizeof(float) * (size_t)ns);
        cdl_conv2d_f32(&g, fx, fw, fb, y[i], scr);
        memset(scr, 0xA5, sizeof(float) * (size_t)ns);
        cdl_conv2d_bwd_x_f32(&g, fg, fw, dx[i], scr);
        memset(scr, 0xA5, sizeof(float) * (size_t)ns);
        cdl_conv2d_bwd_w_f32(&g, fg, fx, dw[i], scr);
        cdl_conv2d_f64(&g, x, w, b, t > 1 ? ey : dy, dscr);
        cdl_conv2d_bwd_x_f64(&g, gy, w, t > 1 ? edx : ddx, dscr);
        cdl_conv2d_bwd_w_f64(&g, gy, x, t > 1 ? edw : ddw, dscr);
        if (t == 1) continue;
        assert_memory_equal(y[0], y[1], sizeof(float) * (size_t)ny);
        assert_memory_equal(dx[0], dx[1], sizeof(float) * (size_t)nx);
        assert_memory_equal(dw[0], dw[1], sizeof(float) * (size_t)nw);
        assert_memory_equal(dy, ey, sizeof(double) * (size_t)ny);
        assert_memory_equal(ddx, edx, sizeof(double) * (size_t)nx);
        assert_memory_equal(ddw, edw, sizeof(double) * (size_t)nw);
    }
    cdl_parallel_set_threads(1);
    conv_ref(&g, x, w, b, ref);
    for (int64_t i = 0; i < ny; i++) assert_true(fabs(ey[i] - ref[i]) <= 1e-12 * (1 + fabs(ref[i])));
    /* dx and dw by their adjoint identities: <dx, x> + <dw, w> = <g, y(x, w) - b>
     * (the convolution is bilinear in x and w, so each side is <g, y without bias>) */
    cdl_conv2d_f64(&g, x, w, NULL, ref, dscr);
    double lhs = dot(edx, x, nx), rhs = dot(gy, ref, ny);
    assert_true(fabs(lhs - rhs) <= 1e-9 * (1 + fabs(rhs)));
    assert_true(fabs(dot(edw, w, nw) - rhs) <= 1e-9 * (1 + fabs(rhs)));
    for (int i = 0; i < 2; i++) {
        free(y[i]);
        free(dx[i]);
        free(dw[i]);
    }
    free(scr);
    free(x), free(w), free(b), free(gy), free(ref), free(fx), free(fw), free(fb), free(fg);
    free(dy), free(ddx), free(ddw), free(dscr), free(ey), free(edx), free(edw);
}

static void test_conv_threads(void **st) {
    (void)st;
    conv_threads_case(geom(16, 8, 16, 16, 16, 3, 3, 1, 1, 1)); /* the bench ResNet's kind */
    conv_threads_case(geom(24, 1, 28, 28, 6, 5, 5, 1, 2, 1));  /* LeNet conv1: k 6 = 3 + 3 */
    cdl_conv2d_geom g = geom(40, 6, 14, 14, 16, 5, 5, 1, 0, 1); /* LeNet conv2: lanes, 2.5 groups */
    assert_true(cdl_conv2d_lanes_f32(&g));
    conv_threads_case(g);
    conv_threads_case(geom(13, 6, 14, 14, 16, 5, 5, 1, 0, 1)); /* LeNet conv2, 13 images */
    conv_threads_case(geom(17, 3, 20, 20, 13, 3, 3, 1, 1, 1)); /* 13 channels: 6 + 7 */
    /* max pooling, split over planes when a call has 64K cells or more: 2x2 (the fast
     * path, odd and even sizes) and 3x3 stride 2 pad 1 */
    const int64_t pool[3][5] = {{101, 28, 28, 2, 2}, {67, 33, 31, 2, 2}, {90, 27, 29, 3, 2}};
    for (int c = 0; c < 3; c++) {
        const int64_t nc = pool[c][0], H = pool[c][1], W = pool[c][2], k = pool[c][3], stp = pool[c][4];
        const int64_t pad = k / 2 * (k % 2), OH = (H + 2 * pad - k) / stp + 1, OW = (W + 2 * pad - k) / stp + 1;
        double *dx0 = dvec(nc * H * W), *dg0 = dvec(nc * OH * OW);
        float *x = fcopy(dx0, nc * H * W), *g = fcopy(dg0, nc * OH * OW);
        float *y[2] = {malloc(sizeof(float) * (size_t)(nc * OH * OW)), malloc(sizeof(float) * (size_t)(nc * OH * OW))};
        float *dx[2] = {malloc(sizeof(float) * (size_t)(nc * H * W)), malloc(sizeof(float) * (size_t)(nc * H * W))};
        for (int t = 1; t <= 3; t++) {
            cdl_parallel_set_threads(t);
            cdl_maxpool2d_f32(nc, H, W, k, stp, pad, x, y[t > 1]);
            cdl_maxpool2d_bwd_f32(nc, H, W, k, stp, pad, g, x, dx[t > 1]);
            if (t == 1) continue;
            assert_memory_equal(y[0], y[1], sizeof(float) * (size_t)(nc * OH * OW));
            assert_memory_equal(dx[0], dx[1], sizeof(float) * (size_t)(nc * H * W));
        }
        cdl_parallel_set_threads(1);
        free(dx0), free(dg0), free(x), free(g), free(y[0]), free(y[1]), free(dx[0]), free(dx[1]);
    }
}

/* ------------------------------------------------------------------ pooling */

static void maxpool_ref(int64_t nc, int64_t H, int64_t W, int64_t k, int64_t st, int64_t pad, const double *x,
                        double *y) {
    int64_t OH = (H + 2 * pad - k) / st + 1, OW = (W + 2 * pad - k) / st + 1;
    for (int64_t q = 0; q < nc; q++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                double m = -INFINITY;
                for (int64_t i = 0; i < k; i++)
                    for (int64_t j = 0; j < k; j++) {
                        int64_t ih = oh * st - pad + i, iw = ow * st - pad + j;
                        if (ih >= 0 && ih < H && iw >= 0 && iw < W && x[(q * H + ih) * W + iw] > m)
                            m = x[(q * H + ih) * W + iw];
                    }
                y[(q * OH + oh) * OW + ow] = m;
            }
}

static void avgpool_ref(int64_t nc, int64_t H, int64_t W, int64_t k, int64_t st, int64_t pad, const double *x,
                        double *y) {
    int64_t OH = (H + 2 * pad - k) / st + 1, OW = (W + 2 * pad - k) / st + 1;
    for (int64_t q = 0; q < nc; q++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                double s = 0;
                for (int64_t i = 0; i < k; i++)
                    for (int64_t j = 0; j < k; j++) {
                        int64_t ih = oh * st - pad + i, iw = ow * st - pad + j;
                        if (ih >= 0 && ih < H && iw >= 0 && iw < W) s += x[(q * H + ih) * W + iw];
                    }
                y[(q * OH + oh) * OW + ow] = s / (double)(k * k);
            }
}

typedef struct PoolCase {
    int64_t nc, h, w, k, st, pad;
    int max;
    double *x, *y, *R;
} PoolCase;

static double pool_loss(void *ctx) {
    PoolCase *p = ctx;
    if (p->max) cdl_maxpool2d_f64(p->nc, p->h, p->w, p->k, p->st, p->pad, p->x, p->y);
    else cdl_avgpool2d_f64(p->nc, p->h, p->w, p->k, p->st, p->pad, p->x, p->y);
    int64_t OH = (p->h + 2 * p->pad - p->k) / p->st + 1, OW = (p->w + 2 * p->pad - p->k) / p->st + 1;
    return dot(p->y, p->R, p->nc * OH * OW);
}

static void pool_case(int max, int64_t nc, int64_t h, int64_t w, int64_t k, int64_t st, int64_t pad) {
    PoolCase p = {nc, h, w, k, st, pad, max, NULL, NULL, NULL};
    int64_t OH = (h + 2 * pad - k) / st + 1, OW = (w + 2 * pad - k) / st + 1, nx = nc * h * w, ny = nc * OH * OW;
    p.x = dvec(nx);
    /* distinct values with gaps >> the FD step: no ties anywhere */
    for (int64_t i = 0; i < nx; i++) p.x[i] = (double)((i * 7919) % nx) / (double)nx + 0.001 * urand();
    p.y = dvec(ny);
    p.R = dvec(ny);
    double *ref = dvec(ny), *dx = dvec(nx);
    if (max) maxpool_ref(nc, h, w, k, st, pad, p.x, ref);
    else avgpool_ref(nc, h, w, k, st, pad, p.x, ref);
    pool_loss(&p);
    for (int64_t i = 0; i < ny; i++) assert_true(fabs(p.y[i] - ref[i]) <= 1e-12);
    float *fx = fcopy(p.x, nx), *fy = fcopy(p.y, ny);
    if (max) cdl_maxpool2d_f32(nc, h, w, k, st, pad, fx, fy);
    else cdl_avgpool2d_f32(nc, h, w, k, st, pad, fx, fy);
    for (int64_t i = 0; i < ny; i++) assert_true(fabs(fy[i] - ref[i]) <= 1e-6);
    if (max) cdl_maxpool2d_bwd_f64(nc, h, w, k, st, pad, p.R, p.x, dx);
    else cdl_avgpool2d_bwd_f64(nc, h, w, k, st, pad, p.R, dx);
    fd_check(max ? "maxpool dx" : "avgpool dx", p.x, nx, dx, pool_loss, &p);
    free(p.x); free(p.y); free(p.R); free(ref); free(dx); free(fx); free(fy);
}

static void test_maxpool(void **st) {
    (void)st;
    pool_case(1, 3, 6, 8, 2, 2, 0); /* fast path */
    pool_case(1, 2, 7, 7, 2, 2, 0); /* odd size: last row/col dropped */
    pool_case(1, 2, 7, 6, 3, 2, 1); /* overlapping, padded */
    pool_case(1, 2, 5, 5, 3, 1, 1);
    pool_case(1, 1, 6, 6, 2, 1, 0);
}

static void test_avgpool(void **st) {
    (void)st;
    pool_case(0, 3, 6, 8, 2, 2, 0);
    pool_case(0, 2, 7, 6, 3, 2, 1);
    pool_case(0, 2, 4, 4, 4, 4, 0); /* global */
    pool_case(0, 1, 5, 5, 3, 1, 1);
}

static void test_maxpool_ties_nan(void **st) {
    (void)st;
    /* one 2x2 window: ties go to the first maximum; NaN propagates */
    float x[4] = {1, 3, 3, 2}, y[1], g[1] = {1}, dx[4];
    cdl_maxpool2d_f32(1, 2, 2, 2, 2, 0, x, y);
    assert_true(y[0] == 3);
    cdl_maxpool2d_bwd_f32(1, 2, 2, 2, 2, 0, g, x, dx);
    assert_true(dx[0] == 0 && dx[1] == 1 && dx[2] == 0 && dx[3] == 0);
    x[3] = NAN;
    cdl_maxpool2d_f32(1, 2, 2, 2, 2, 0, x, y);
    assert_true(isnan(y[0]));
    x[3] = 2;
    x[0] = NAN;
    cdl_maxpool2d_f32(1, 2, 2, 2, 2, 0, x, y);
    assert_true(isnan(y[0]));
    /* rows of 10: the vector path of the backward (overlapping last vector), with ties
     * and NaNs in several windows; f32 and f64 */
    float xr[20] = {1, 3, 5, 5, 0, 0, NAN, 1, 2, 2, 3, 2, 5, 4, 0, 0, 1, NAN, 2, 9};
    float gr[5] = {1, 2, 3, 4, 5}, dr[20];
    const float want[20] = {0, 1, 2, 0, 3, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5};
    cdl_maxpool2d_bwd_f32(1, 2, 10, 2, 2, 0, gr, xr, dr);
    for (int i = 0; i < 20; i++) assert_true(dr[i] == want[i]);
    double xr64[20], gr64[5], dr64[20];
    for (int i = 0; i < 20; i++) xr64[i] = xr[i];
    for (int i = 0; i < 5; i++) gr64[i] = gr[i];
    cdl_maxpool2d_bwd_f64(1, 2, 10, 2, 2, 0, gr64, xr64, dr64);
    for (int i = 0; i < 20; i++) assert_true(dr64[i] == want[i]);
    double xd[9] = {0, 1, 2, 3, NAN, 5, 6, 7, 8}, yd[1];
    cdl_maxpool2d_f64(1, 3, 3, 3, 1, 0, xd, yd);
    assert_true(isnan(yd[0]));
}

/* The 2x2 / stride-2 fast paths: rows of a vector of windows or more (OW >= 8 for f32,
 * >= 4 for f64) and rows of half a vector or more taken two at a time (OW >= 4 / 2; odd
 * OH: the last pair overlaps); the last block of a row overlapping the one before, odd
 * H, W dropping the last row, column: y and dx bitwise equal to the scalar rule written
 * out here (the maximum by "a > b ? a : b" selects, a + b + c + d when a cell is NaN;
 * g to the first maximum or the first NaN; a NaN maximum only has to be a NaN), on
 * cells drawn from a small set so that windows hold ties, +-0, +-inf, inf - inf, NaNs. */
#define POOL2_REF(T, NAME)                                                                                    \
    static void NAME(int64_t nc, int64_t H, int64_t W, const T *x, const T *g, T *y, T *dx) {               \
        const int64_t OH = H / 2, OW = W / 2;                                                                \
        memset(dx, 0, sizeof(T) * (size_t)(nc * H * W));                                                     \
        for (int64_t q = 0; q < nc; q++)                                                                     \
            for (int64_t oh = 0; oh < OH; oh++)                                                              \
                for (int64_t ow = 0; ow < OW; ow++) {                                                        \
                    const int64_t i0 = (q * H + 2 * oh) * W + 2 * ow, at[4] = {i0, i0 + 1, i0 + W, i0 + W + 1}; \
                    const T a = x[at[0]], b = x[at[1]], c = x[at[2]], d = x[at[3]];                          \
                    T m1 = a > b ? a : b, m2 = c > d ? c : d, m = m1 > m2 ? m1 : m2;                         \
                    int nan = a != a || b != b || c != c || d != d, best = 0;                                \
                    for (int i = 1; i < 4; i++)                                                              \
                        if (nan ? x[at[i]] != x[at[i]] && x[at[best]] == x[at[best]] : x[at[i]] > x[at[best]]) \
                            best = i;                                                                        \
                    y[(q * OH + oh) * OW + ow] = nan ? a + b + c + d : m;                                    \
                    dx[at[best]] = g[(q * OH + oh) * OW + ow];                                               \
                }                                                                                            \
    }
POOL2_REF(float, pool2_ref_f32)
POOL2_REF(double, pool2_ref_f64)

/* Bit for bit, except that a NaN matches any NaN: which operand's NaN an addition
 * returns (its sign) depends on the order the compiler gives the operands. */
#define SAME_OR_NAN(T, NAME)                                                    \
    static void NAME(const T *a, const T *b, int64_t n) {                      \
        for (int64_t i = 0; i < n; i++)                                        \
            assert_true(a[i] != a[i] ? b[i] != b[i] : !memcmp(&a[i], &b[i], sizeof(T))); \
    }
SAME_OR_NAN(float, same_or_nan_f32)
SAME_OR_NAN(double, same_or_nan_f64)

static void test_maxpool_wide_rows(void **st) {
    (void)st;
    const double cells[] = {0, -0.0, -1, -0.0, 0, -INFINITY, 2, INFINITY, NAN, 1};
    const int64_t shapes[][3] = {{3, 4, 16}, {2, 6, 17}, {5, 28, 28}, {2, 4, 30}, {3, 2, 9},
                                 {4, 10, 10}, {2, 7, 13}, {3, 6, 4}, {2, 3, 14}};
    for (int c = 0; c < 9; c++) {
        const int64_t nc = shapes[c][0], H = shapes[c][1], W = shapes[c][2], n = nc * H * W;
        const int64_t ny = nc * (H / 2) * (W / 2);
        double *x = dvec(n), *g = dvec(ny), *y = dvec(ny), *dx = dvec(n), *ry = dvec(ny), *rdx = dvec(n);
        for (int64_t i = 0; i < n; i++) x[i] = cells[(i * 7 + i / 5 + (int64_t)(urand() * 3)) % 10];
        float *fx = fcopy(x, n), *fg = fcopy(g, ny), *fy = fcopy(y, ny), *fdx = fcopy(dx, n);
        float *fry = fcopy(y, ny), *frdx = fcopy(dx, n);
        cdl_maxpool2d_f64(nc, H, W, 2, 2, 0, x, y);
        cdl_maxpool2d_bwd_f64(nc, H, W, 2, 2, 0, g, x, dx);
        pool2_ref_f64(nc, H, W, x, g, ry, rdx);
        same_or_nan_f64(y, ry, ny);
        assert_memory_equal(dx, rdx, sizeof(double) * (size_t)n);
        cdl_maxpool2d_f32(nc, H, W, 2, 2, 0, fx, fy);
        cdl_maxpool2d_bwd_f32(nc, H, W, 2, 2, 0, fg, fx, fdx);
        pool2_ref_f32(nc, H, W, fx, fg, fry, frdx);
        same_or_nan_f32(fy, fry, ny);
        assert_memory_equal(fdx, frdx, sizeof(float) * (size_t)n);
        free(x), free(g), free(y), free(dx), free(ry), free(rdx);
        free(fx), free(fg), free(fy), free(fdx), free(fry), free(frdx);
    }
}

/* ------------------------------------------------------------------ batch norm */

typedef struct BnCase {
    int train;
    int64_t n, c, hw;
    double *x, *gamma, *beta, *rm, *rv, *y, *save, *R;
    double rm0[8], rv0[8];
} BnCase;

static double bn_loss(void *ctx) {
    BnCase *b = ctx;
    memcpy(b->rm, b->rm0, sizeof(double) * (size_t)b->c); /* running stats: fresh each call */
    memcpy(b->rv, b->rv0, sizeof(double) * (size_t)b->c);
    cdl_batchnorm_f64(b->train, b->n, b->c, b->hw, 1e-5, 0.1, b->x, b->gamma, b->beta, b->rm, b->rv, b->y, b->save, 1);
    return dot(b->y, b->R, b->n * b->c * b->hw);
}

static void bn_case(int train, int64_t n, int64_t c, int64_t hw) {
    BnCase b = {.train = train, .n = n, .c = c, .hw = hw};
    int64_t nx = n * c * hw;
    b.x = dvec(nx);
    for (int64_t i = 0; i < nx; i++) b.x[i] = 3 * b.x[i] + 0.5;
    b.gamma = dvec(c);
    b.beta = dvec(c);
    b.rm = dvec(c);
    b.rv = dvec(c);
    for (int64_t i = 0; i < c; i++) {
        b.rm0[i] = 0.3 * b.rm[i];
        b.rv0[i] = 1 + 0.5 * b.rv[i];
    }
    b.y = dvec(nx);
    b.save = dvec(3 * c + nx);
    b.R = dvec(nx);
    bn_loss(&b);

    /* forward against the definition */
    for (int64_t ch = 0; ch < c; ch++) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < hw; j++) mean += b.x[(i * c + ch) * hw + j];
        mean /= (double)(n * hw);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < hw; j++) var += pow(b.x[(i * c + ch) * hw + j] - mean, 2);
        var /= (double)(n * hw);
        double um = train ? mean : b.rm0[ch], uv = train ? var : b.rv0[ch];
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < hw; j++) {
                int64_t o = (i * c + ch) * hw + j;
                double want = (b.x[o] - um) / sqrt(uv + 1e-5) * b.gamma[ch] + b.beta[ch];
                assert_true(fabs(b.y[o] - want) <= 1e-10);
            }
        if (train) {
            assert_true(fabs(b.rm[ch] - (0.9 * b.rm0[ch] + 0.1 * mean)) <= 1e-12);
            double unb = var * (double)(n * hw) / (double)(n * hw - 1);
            assert_true(fabs(b.rv[ch] - (0.9 * b.rv0[ch] + 0.1 * unb)) <= 1e-12);
        } else {
            assert_true(b.rm[ch] == b.rm0[ch] && b.rv[ch] == b.rv0[ch]);
        }
    }

    /* f32 forward agrees */
    float *fx = fcopy(b.x, nx), *fg = fcopy(b.gamma, c), *fb = fcopy(b.beta, c), *frm = fcopy(b.rm0, c),
          *frv = fcopy(b.rv0, c), *fy = fcopy(b.y, nx), *fs = fcopy(b.save, 3 * c + nx);
    cdl_batchnorm_f32(train, n, c, hw, 1e-5, 0.1, fx, fg, fb, frm, frv, fy, fs, 1);
    for (int64_t i = 0; i < nx; i++) assert_true(fabs(fy[i] - b.y[i]) <= 1e-4 * (1 + fabs(b.y[i])));
    for (int64_t i = 0; i < c; i++) assert_true(fabs(frv[i] - b.rv[i]) <= 1e-4 * (1 + fabs(b.rv[i])));

    /* backward: out = [dgamma | dbeta | dx] */
    double *out = dvec(2 * c + nx);
    cdl_batchnorm_bwd_f64(train, n, c, hw, b.R, b.save, out);
    fd_check("bn dx", b.x, nx, out + 2 * c, bn_loss, &b);
    fd_check("bn dgamma", b.gamma, c, out, bn_loss, &b);
    fd_check("bn dbeta", b.beta, c, out + c, bn_loss, &b);
    float *fR = fcopy(b.R, nx), *fo = fcopy(out, 2 * c + nx);
    cdl_batchnorm_bwd_f32(train, n, c, hw, fR, fs, fo);
    for (int64_t i = 0; i < 2 * c + nx; i++) assert_true(fabs(fo[i] - out[i]) <= 1e-3 * (1 + fabs(out[i])));

    free(b.x); free(b.gamma); free(b.beta); free(b.rm); free(b.rv); free(b.y); free(b.save); free(b.R);
    free(fx); free(fg); free(fb); free(frm); free(frv); free(fy); free(fs); free(out); free(fR); free(fo);
}

static void test_batchnorm_train(void **st) {
    (void)st;
    bn_case(1, 4, 3, 5);  /* [N, C, H*W] */
    bn_case(1, 6, 4, 1);  /* [N, C] */
    bn_case(1, 2, 2, 19); /* hw not a multiple of 8 */
}

static void test_batchnorm_eval(void **st) {
    (void)st;
    bn_case(0, 3, 3, 4);
    bn_case(0, 5, 2, 1);
}

static void test_batchnorm_no_xhat(void **st) {
    (void)st;
    /* save_xhat = 0 leaves the xhat part alone; mean / invstd / scale still written */
    float x[4] = {1, 2, 3, 4}, gm[1] = {2}, bt[1] = {1}, rm[1] = {0}, rv[1] = {1}, y[4], save[3 + 4];
    for (int i = 0; i < 7; i++) save[i] = -7;
    cdl_batchnorm_f32(1, 4, 1, 1, 0, 0.1, x, gm, bt, rm, rv, y, save, 0);
    assert_true(fabsf(save[0] - 2.5f) < 1e-6f);
    assert_true(fabsf(save[1] - 1 / sqrtf(1.25f)) < 1e-6f);
    assert_true(fabsf(save[2] - 2 / sqrtf(1.25f)) < 1e-6f);
    for (int i = 3; i < 7; i++) assert_true(save[i] == -7);
    assert_true(fabsf(rm[0] - 0.25f) < 1e-6f);
    assert_true(fabsf(rv[0] - (0.9f + 0.1f * 5.0f / 3.0f)) < 1e-6f);
    assert_true(fabsf(y[0] - (1 - 2 * 1.5f / sqrtf(1.25f))) < 1e-5f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_basic),        cmocka_unit_test(test_conv_stride_pad),
        cmocka_unit_test(test_conv_pointwise),    cmocka_unit_test(test_conv_grouped),
        cmocka_unit_test(test_conv_direct),       cmocka_unit_test(test_conv_threads),
        cmocka_unit_test(test_conv_empty_batch),  cmocka_unit_test(test_conv_pick_group),
        cmocka_unit_test(test_maxpool),           cmocka_unit_test(test_avgpool),
        cmocka_unit_test(test_maxpool_ties_nan),  cmocka_unit_test(test_batchnorm_train),
        cmocka_unit_test(test_maxpool_wide_rows),
        cmocka_unit_test(test_batchnorm_eval),    cmocka_unit_test(test_batchnorm_no_xhat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
