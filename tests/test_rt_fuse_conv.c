/* test_rt_fuse_conv.c -- the fused convolution kernels (conv2d_fused, conv2d_bwd_x_fused,
 * made by compiler/opt_fuse_conv.c) give bit for bit what the separate kernels the tape
 * calls give: conv2d, then add of the skip, then relu; conv2d_bwd_x, then add of the
 * other gradient term, then relu_bwd with the mask.  Every epilogue the pass makes, in
 * f32 and f64, on the direct (vec) geometry of the bench ResNet and on GEMM (im2col)
 * geometries, at 1 and 2 threads.  The lane mode (narrow images, kernels_conv_lane_t.h)
 * gives the vec mode's grid bits for every epilogue.  conv2d_bwd_xw (dx and dw in one
 * pass) gives conv2d_bwd_x_fused's and conv2d_bwd_w's bits, and its bias gradient
 * reduce's (the sum of g over n, oh, ow).  maxpool2d_bwd_relu (relu_bwd
 * folded into the max pool's backward) gives maxpool2d_bwd then relu_bwd's bits. */
#include "test_rt_util.h"

static cdl_conv2d_geom geom(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r, int64_t stride,
                            int64_t pad) {
    cdl_conv2d_geom g = {.n = n, .c = c, .h = h, .w = w, .k = k, .r = r, .s = r, .stride = stride, .pad = pad};
    g.oh = (h + 2 * pad - r) / stride + 1;
    g.ow = (w + 2 * pad - r) / stride + 1;
    g.group = cdl_conv2d_pick_group(&g);
    return g;
}

/* Values with both signs, some exact zeros and -0 (relu and the mask keep or drop them
 * by sign, an add turns -0 into +0: the bits must follow the separate kernels). */
static double *mixed(int64_t n) {
    double *p = dvec(n);
    for (int64_t i = 0; i < n; i += 7) p[i] = i % 2 ? 0.0 : -0.0;
    return p;
}

#define FUSE_CASES(T, S)                                                                                          \
    static void fused_case_##S(const cdl_conv2d_geom *g, int bits) {                                             \
        const int64_t nx = g->n * g->c * g->h * g->w, nw = g->k * g->c * g->r * g->s;                            \
        const int64_t ny = g->n * g->k * g->oh * g->ow, ns = cdl_conv2d_scratch(g);                               \
        double *dx = mixed(nx), *dw = mixed(nw), *db = mixed(g->k), *dskip = mixed(ny), *dg = mixed(ny);        \
        double *dacc = mixed(nx), *dmask = mixed(nx);                                                            \
        T *x = malloc(sizeof(T) * (size_t)nx), *w = malloc(sizeof(T) * (size_t)nw), *b = malloc(sizeof(T) * (size_t)g->k); \
        T *skip = malloc(sizeof(T) * (size_t)ny), *gy = malloc(sizeof(T) * (size_t)ny);                          \
        T *acc = malloc(sizeof(T) * (size_t)nx), *mask = malloc(sizeof(T) * (size_t)nx);                         \
        T *y1 = malloc(sizeof(T) * (size_t)ny), *y2 = malloc(sizeof(T) * (size_t)ny);                            \
        T *x1 = malloc(sizeof(T) * (size_t)nx), *x2 = malloc(sizeof(T) * (size_t)nx);                            \
        T *scr = malloc(sizeof(T) * (size_t)(ns > 0 ? ns : 1));                                                 \
        for (int64_t i = 0; i < nx; i++) x[i] = (T)dx[i], acc[i] = (T)dacc[i], mask[i] = (T)dmask[i];           \
        for (int64_t i = 0; i < nw; i++) w[i] = (T)dw[i];                                                        \
        for (int64_t i = 0; i < g->k; i++) b[i] = (T)db[i];                                                      \
        for (int64_t i = 0; i < ny; i++) skip[i] = (T)dskip[i], gy[i] = (T)dg[i];                               \
        const T *bb = (bits & 1) ? b : NULL, *sk = (bits & 2) ? skip : NULL;                                     \
        /* forward: the tape's kernels one after the other, then the fused one */                               \
        cdl_conv2d_##S(g, x, w, bb, y1, scr);                                                                    \
        if (sk) cdl_add_##S(ny, y1, sk, y1);                                                                     \
        if (bits & 4) cdl_relu_##S(ny, y1, y1);                                                                  \
        memset(y2, 0x7f, sizeof(T) * (size_t)ny);                                                                \
        cdl_conv2d_fused_##S(g, x, w, bb, sk, (bits & 4) != 0, y2, scr);                                         \
        assert_memory_equal(y1, y2, sizeof(T) * (size_t)ny);                                                     \
        /* backward: dx, + acc (the add's first operand, as autodiff writes it), mask */                         \
        const T *ac = (bits & 2) ? acc : NULL, *mk = (bits & 8) ? mask : NULL;                                   \
        cdl_conv2d_bwd_x_##S(g, gy, w, x1, scr);                                                                 \
        if (ac) cdl_add_##S(nx, ac, x1, x1);                                                                     \
        if (mk) cdl_relu_bwd_##S(nx, x1, mk, x1);                                                                \
        memset(x2, 0x7f, sizeof(T) * (size_t)nx);                                                                \
        cdl_conv2d_bwd_x_fused_##S(g, gy, w, ac, mk, x2, scr);                                                   \
        assert_memory_equal(x1, x2, sizeof(T) * (size_t)nx);                                                     \
        /* dx and dw in one call (conv2d_bwd_xw): the bits of bwd_x_fused and bwd_w; x as  \
         * the mask too when bit 1 (the static ResNet: the conv's input is a relu's output) */ \
        const T *mk2 = (mk && (bits & 1)) ? x : mk;                                                              \
        T *w1 = malloc(sizeof(T) * (size_t)nw), *w2 = malloc(sizeof(T) * (size_t)nw);                            \
        T *b1 = malloc(sizeof(T) * (size_t)g->k), *b2 = malloc(sizeof(T) * (size_t)g->k);                        \
        cdl_conv2d_bwd_x_fused_##S(g, gy, w, ac, mk2, x1, scr);                                                  \
        cdl_conv2d_bwd_w_##S(g, gy, x, w1, scr);                                                                 \
        cdl_reduce_##S(4, (const int64_t[]){g->n, g->k, g->oh, g->ow}, 0xdu, 0, gy, b1);                         \
        memset(x2, 0x7f, sizeof(T) * (size_t)nx);                                                                \
        memset(w2, 0x7f, sizeof(T) * (size_t)nw);                                                                \
        memset(b2, 0x7f, sizeof(T) * (size_t)g->k);                                                              \
        memset(scr, 0x7f, sizeof(T) * (size_t)(ns > 0 ? ns : 1));                                                \
        /* the bias gradient too (reduce's bits), except with bit 4 (relu: forward only) */                      \
        cdl_conv2d_bwd_xw_##S(g, gy, w, x, ac, mk2, x2, w2, (bits & 4) ? NULL : b2, scr);                        \
        assert_memory_equal(x1, x2, sizeof(T) * (size_t)nx);                                                     \
        assert_memory_equal(w1, w2, sizeof(T) * (size_t)nw);                                                     \
        if (!(bits & 4)) assert_memory_equal(b1, b2, sizeof(T) * (size_t)g->k);                                  \
        free(w1); free(w2); free(b1); free(b2);                                                                  \
        free(dx); free(dw); free(db); free(dskip); free(dg); free(dacc); free(dmask);                            \
        free(x); free(w); free(b); free(skip); free(gy); free(acc); free(mask);                                  \
        free(y1); free(y2); free(x1); free(x2); free(scr);                                                       \
    }
FUSE_CASES(float, f32)
FUSE_CASES(double, f64)

/* The lane mode against the grid (cdl_conv_lanes = 0), fused forward and bwd_x, bit for
 * bit: the same FMA chains over the taps, zero terms left out.  bits as below. */
#define LANE_CASES(T, S)                                                                                          \
    static void lane_case_##S(const cdl_conv2d_geom *g, int bits) {                                              \
        assert_true(cdl_conv2d_lanes_##S(g));                                                                    \
        const int64_t nx = g->n * g->c * g->h * g->w, nw = g->k * g->c * g->r * g->s;                            \
        const int64_t ny = g->n * g->k * g->oh * g->ow, ns = cdl_conv2d_scratch(g);                               \
        double *d[6] = {mixed(nx), mixed(nw), mixed(g->k), mixed(ny), mixed(nx), mixed(nx)};                     \
        const int64_t len[6] = {nx, nw, g->k, ny, nx, nx};                                                       \
        T *v[6], *y[2], *dx[2], *scr = malloc(sizeof(T) * (size_t)ns);                                           \
        for (int i = 0; i < 6; i++) {                                                                            \
            v[i] = malloc(sizeof(T) * (size_t)len[i]);                                                           \
            for (int64_t j = 0; j < len[i]; j++) v[i][j] = (T)d[i][j];                                           \
        }                                                                                                        \
        for (int m = 0; m < 2; m++) {                                                                            \
            y[m] = malloc(sizeof(T) * (size_t)ny), dx[m] = malloc(sizeof(T) * (size_t)nx);                       \
            cdl_conv_lanes = 1 - m;                                                                              \
            memset(scr, 0x7f, sizeof(T) * (size_t)ns);                                                           \
            cdl_conv2d_fused_##S(g, v[0], v[1], (bits & 1) ? v[2] : NULL, (bits & 2) ? v[3] : NULL,              \
                                 (bits & 4) != 0, y[m], scr);                                                    \
            memset(scr, 0x7f, sizeof(T) * (size_t)ns);                                                           \
            cdl_conv2d_bwd_x_fused_##S(g, v[3], v[1], (bits & 2) ? v[4] : NULL, (bits & 8) ? v[5] : NULL, dx[m], \
                                       scr);                                                                     \
        }                                                                                                        \
        cdl_conv_lanes = 1;                                                                                      \
        assert_memory_equal(y[0], y[1], sizeof(T) * (size_t)ny);                                                 \
        assert_memory_equal(dx[0], dx[1], sizeof(T) * (size_t)nx);                                               \
        for (int i = 0; i < 6; i++) free(d[i]), free(v[i]);                                                      \
        for (int m = 0; m < 2; m++) free(y[m]), free(dx[m]);                                                     \
        free(scr);                                                                                               \
    }
LANE_CASES(float, f32)
LANE_CASES(double, f64)

/* Every epilogue: bias 1, add 2, relu (forward) 4, mask (backward) 8. */
static void all_epilogues(const cdl_conv2d_geom *g) {
    for (int bits = 0; bits < 16; bits++) {
        fused_case_f32(g, bits);
        fused_case_f64(g, bits);
    }
}

static void test_fused_direct(void **st) {
    (void)st;
    cdl_conv2d_geom g = geom(3, 16, 28, 28, 16, 3, 1, 1);   /* the bench ResNet's block conv */
    assert_true(cdl_conv2d_vec(&g));
    all_epilogues(&g);
    g = geom(2, 1, 9, 11, 13, 3, 1, 1);                      /* uneven channel blocks */
    all_epilogues(&g);
    /* Rows stored by whole vectors, the last overlapping (cv_epi_store): exactly one and
     * two vectors of f32 (16, 32 wide), one past (17), a tail (33; f64: 8 lanes), and
     * pad 2 (two shared border columns between rows, cv_pad) at 18 wide. */
    const int64_t ws[4] = {16, 17, 32, 33};
    for (int i = 0; i < 4; i++) {
        g = geom(2, 3, 5, ws[i], 4, 3, 1, 1);
        assert_true(cdl_conv2d_vec(&g) && !cdl_conv2d_lanes_f32(&g));
        all_epilogues(&g);
    }
    g = geom(2, 2, 6, 18, 5, 5, 1, 2);
    assert_true(cdl_conv2d_vec(&g) && !cdl_conv2d_lanes_f32(&g));
    all_epilogues(&g);
    /* conv2d_bwd_xw's one-pass geometries (all_epilogues checks it against the separate
     * kernels): batch 1, C != K, odd widths, 5x5 pad 2 */
    const int64_t xw[6][5] = {{1, 3, 7, 19, 5}, {3, 5, 6, 21, 2}, {2, 2, 5, 13, 9}, {1, 4, 9, 31, 3},
                              {3, 2, 5, 17, 1}, {2, 3, 1, 1, 4}}; /* the bias gradient's runs merged: k 1, 1x1 */
    for (int i = 0; i < 6; i++) {
        g = geom(xw[i][0], xw[i][1], xw[i][2], xw[i][3], xw[i][4], 3, 1, 1);
        assert_true(cdl_conv2d_vec_xw(&g) && !cdl_conv2d_lanes_f32(&g));
        all_epilogues(&g);
    }
    g = geom(2, 3, 8, 23, 4, 5, 1, 2);
    assert_true(cdl_conv2d_vec_xw(&g));
    all_epilogues(&g);
}

static void test_fused_gemm(void **st) {
    (void)st;
    cdl_conv2d_geom g = geom(3, 2, 9, 9, 5, 3, 2, 1);       /* stride 2: im2col + GEMM */
    assert_false(cdl_conv2d_vec(&g));
    all_epilogues(&g);
    g = geom(2, 4, 6, 6, 3, 1, 1, 0);                        /* 1x1: the GEMM on x itself */
    assert_false(cdl_conv2d_vec(&g));
    all_epilogues(&g);
}

/* LeNet's conv2 (a partial group of images: 19 = 16 + 3 lanes), a padded one whose
 * rows do not split into whole tiles (7 wide) and a non-square kernel with its own
 * row and column padding; 2 threads split the groups. */
static void test_fused_lanes(void **st) {
    (void)st;
    cdl_conv2d_geom gs[3] = {geom(19, 6, 14, 14, 16, 5, 1, 0), geom(5, 4, 9, 7, 6, 5, 1, 2),
                             geom(17, 5, 8, 11, 9, 5, 1, 1)};
    gs[2].s = 3, gs[2].ow = 11; /* 5x3, pad 1: ow = 11 + 2 - 3 + 1 */
    for (int t = 1; t <= 2; t++) {
        cdl_parallel_set_threads(t);
        for (int i = 0; i < 3; i++) {
            all_epilogues(&gs[i]);
            for (int bits = 0; bits < 16; bits++) {
                lane_case_f32(&gs[i], bits);
                lane_case_f64(&gs[i], bits);
            }
        }
    }
    cdl_parallel_set_threads(1);
}

/* maxpool2d_bwd_relu against maxpool2d_bwd then relu_bwd (mask x, the pool's input):
 * x with both signs, +-0, ties, NaN; the 2x2 fast path (rows of many windows, of a few,
 * odd sizes) and a 3x3 / stride 2 / pad 1 pool; 1 and 2 threads. */
#define POOL_RELU_CASE(T, S)                                                                                      \
    static void pool_relu_case_##S(int64_t nc, int64_t H, int64_t W, int64_t k, int64_t stp, int64_t pad) {     \
        const int64_t OH = (H + 2 * pad - k) / stp + 1, OW = (W + 2 * pad - k) / stp + 1;                        \
        double *dx = mixed(nc * H * W), *dg = mixed(nc * OH * OW);                                                \
        T *x = malloc(sizeof(T) * (size_t)(nc * H * W)), *g = malloc(sizeof(T) * (size_t)(nc * OH * OW));       \
        T *d1 = malloc(sizeof(T) * (size_t)(nc * H * W)), *d2 = malloc(sizeof(T) * (size_t)(nc * H * W));      \
        for (int64_t i = 0; i < nc * H * W; i++)                                                                 \
            x[i] = i % 11 == 3 ? (T)NAN : i % 13 == 5 ? (T)(i % 2 ? 0.0 : -0.0) /* +-0 maxima */         \
                 : i % 5 == 1 ? x[i - 1] : (T)(dx[i] - 0.6); /* ties, mostly < 0 */                          \
        for (int64_t i = 0; i < nc * OH * OW; i++) g[i] = (T)dg[i];                                              \
        cdl_maxpool2d_bwd_##S(nc, H, W, k, stp, pad, g, x, d1);                                                  \
        cdl_relu_bwd_##S(nc * H * W, d1, x, d1);                                                                 \
        memset(d2, 0x7f, sizeof(T) * (size_t)(nc * H * W));                                                      \
        cdl_maxpool2d_bwd_relu_##S(nc, H, W, k, stp, pad, g, x, d2);                                             \
        assert_memory_equal(d1, d2, sizeof(T) * (size_t)(nc * H * W));                                          \
        int64_t kept = 0;                                                                                        \
        for (int64_t i = 0; i < nc * H * W; i++) kept += d2[i] != 0;                                             \
        assert_true(kept > 0); /* some gradients pass the mask */                                                \
        free(dx), free(dg), free(x), free(g), free(d1), free(d2);                                                \
    }
POOL_RELU_CASE(float, f32)
POOL_RELU_CASE(double, f64)

static void test_pool_bwd_relu(void **st) {
    (void)st;
    const int64_t cases[6][6] = {{96, 28, 28, 2, 2, 0}, {1024, 10, 10, 2, 2, 0}, {7, 9, 7, 2, 2, 0},
                                 {5, 6, 4, 2, 2, 0},    {9, 11, 13, 3, 2, 1},    {3, 8, 8, 3, 1, 0}};
    for (int t = 1; t <= 2; t++) {
        cdl_parallel_set_threads(t);
        for (int c = 0; c < 6; c++) {
            pool_relu_case_f32(cases[c][0], cases[c][1], cases[c][2], cases[c][3], cases[c][4], cases[c][5]);
            pool_relu_case_f64(cases[c][0], cases[c][1], cases[c][2], cases[c][3], cases[c][4], cases[c][5]);
        }
    }
    cdl_parallel_set_threads(1);
}

static void test_fused_threads(void **st) {
    (void)st;
    cdl_parallel_set_threads(2);
    cdl_conv2d_geom g = geom(8, 16, 28, 28, 16, 3, 1, 1);   /* large enough to split */
    fused_case_f32(&g, 1 | 2 | 4);
    fused_case_f32(&g, 2 | 8);
    cdl_parallel_set_threads(1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fused_direct),
        cmocka_unit_test(test_fused_gemm),
        cmocka_unit_test(test_fused_threads),
        cmocka_unit_test(test_fused_lanes),
        cmocka_unit_test(test_pool_bwd_relu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
