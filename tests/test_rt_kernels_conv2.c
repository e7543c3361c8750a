/* test_rt_kernels_conv2.c -- the general convolution family (kernels_conv2.c): convg
 * with groups, dilation, rectangular kernels, strides and padding (im2col, depthwise and
 * square routes), conv1d as h = 1, transposed convolution, rectangular and adaptive
 * pooling, nearest and bilinear upsampling.  Forwards against naive references (f64,
 * f32), every backward against central finite differences in f64, the depthwise path's
 * bits the same for one and two pool threads. */
#include "test_rt_util.h"

/* ------------------------------------------------------------------ convolution */

static cdl_convg_geom cgeom(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r, int64_t s, int64_t sh,
                            int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups) {
    cdl_convg_geom g = {.n = n, .c = c, .h = h, .w = w, .k = k, .r = r, .s = s, .sh = sh, .sw = sw, .ph = ph,
                        .pw = pw, .dh = dh, .dw = dw, .groups = groups};
    cdl_convg_init(&g);
    return g;
}

/* Naive grouped, dilated, strided convolution (PyTorch's definition). */
static void conv_ref(const cdl_convg_geom *g, const double *x, const double *w, const double *b, double *y) {
    int64_t cg = g->c / g->groups, kg = g->k / g->groups;
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t k = 0; k < g->k; k++)
            for (int64_t oh = 0; oh < g->oh; oh++)
                for (int64_t ow = 0; ow < g->ow; ow++) {
                    double s = b ? b[k] : 0;
                    for (int64_t ci = 0; ci < cg; ci++)
                        for (int64_t r = 0; r < g->r; r++)
                            for (int64_t q = 0; q < g->s; q++) {
                                int64_t ih = oh * g->sh - g->ph + r * g->dh, iw = ow * g->sw - g->pw + q * g->dw;
                                if (ih < 0 || ih >= g->h || iw < 0 || iw >= g->w) continue;
                                int64_t c = k / kg * cg + ci;
                                s += x[((n * g->c + c) * g->h + ih) * g->w + iw] * w[((k * cg + ci) * g->r + r) * g->s + q];
                            }
                    y[((n * g->k + k) * g->oh + oh) * g->ow + ow] = s;
                }
}

typedef struct CV {
    cdl_convg_geom g;
    int transpose;                   /* 0: y = conv(x); 1: y = conv_transpose(x) */
    double *x, *w, *b, *y, *R, *scratch;
    int64_t nx, nw, ny;
} CV;

static double cv_loss(void *ctx) {
    CV *c = ctx;
    if (c->transpose) cdl_conv_transpose2d_f64(&c->g, c->x, c->w, c->b, c->y, c->scratch);
    else cdl_convg_f64(&c->g, c->x, c->w, c->b, c->y, c->scratch);
    return tu_dot(c->y, c->R, c->ny);
}

/* Convolution: forward against conv_ref, dx and dw by finite differences. */
static void conv_case(cdl_convg_geom g, int bias) {
    CV c = {.g = g};
    c.nx = g.n * g.c * g.h * g.w;
    c.nw = g.k * (g.c / g.groups) * g.r * g.s;
    c.ny = g.n * g.k * g.oh * g.ow;
    c.x = dvec(c.nx); c.w = dvec(c.nw); c.b = bias ? dvec(g.k) : NULL;
    c.y = dvec(c.ny); c.R = dvec(c.ny);
    int64_t ns = cdl_convg_scratch(&g);
    c.scratch = dvec(ns);
    double *ref = dvec(c.ny);
    conv_ref(&g, c.x, c.w, c.b, ref);
    cv_loss(&c);
    tu_close("convg y", c.y, ref, c.ny, 1e-13);
    float *fx = fcopy(c.x, c.nx), *fw = fcopy(c.w, c.nw), *fb = bias ? fcopy(c.b, g.k) : NULL, *fy = fcopy(c.y, c.ny);
    float *fs = fcopy(c.scratch, ns);
    cdl_convg_f32(&g, fx, fw, fb, fy, fs);
    tu_close_f("convg f32 y", fy, ref, c.ny, 1e-5);
    double *dx = dvec(c.nx), *dw = dvec(c.nw);
    cdl_convg_bwd_x_f64(&g, c.R, c.w, dx, c.scratch);
    cdl_convg_bwd_w_f64(&g, c.R, c.x, dw, c.scratch);
    fd_check("convg dx", c.x, c.nx, dx, cv_loss, &c);
    fd_check("convg dw", c.w, c.nw, dw, cv_loss, &c);
    free(fx); free(fw); free(fb); free(fy); free(fs); free(ref); free(dx); free(dw);
    free(c.x); free(c.w); free(c.b); free(c.y); free(c.R); free(c.scratch);
}

static void test_convg_im2col(void **st) {
    (void)st;
    /* groups 2, 2x3 kernel, stride (2, 1), pad (1, 0), dilation (1, 2) */
    conv_case(cgeom(2, 4, 6, 7, 6, 2, 3, 2, 1, 1, 0, 1, 2, 2), 1);
    /* one group, rectangular, all different */
    conv_case(cgeom(1, 3, 5, 6, 2, 3, 2, 1, 2, 0, 1, 2, 1, 1), 0);
    /* square but dilated: not the square kernels */
    conv_case(cgeom(2, 2, 7, 7, 3, 3, 3, 1, 1, 2, 2, 2, 2, 1), 1);
}

static void test_convg_conv1d(void **st) {
    (void)st;
    /* conv1d(x [2, 3, 9], 4, 3, pad=1) as h = 1, and strided, dilated */
    conv_case(cgeom(2, 3, 1, 9, 4, 1, 3, 1, 1, 0, 1, 1, 1, 1), 1);
    conv_case(cgeom(2, 2, 1, 11, 3, 1, 3, 1, 2, 0, 2, 1, 2, 1), 0);
}

static void test_convg_depthwise(void **st) {
    (void)st;
    conv_case(cgeom(2, 3, 6, 5, 3, 3, 3, 2, 2, 1, 1, 1, 1, 3), 1);  /* depthwise 3x3 stride 2 */
    conv_case(cgeom(2, 2, 5, 6, 4, 2, 3, 1, 1, 1, 1, 2, 1, 2), 0);  /* channel multiplier 2, dilated */
    conv_case(cgeom(1, 4, 1, 10, 4, 1, 5, 1, 1, 0, 2, 1, 1, 4), 1); /* depthwise conv1d */
}

/* Square geometries take the direct / im2col kernels of kernels_conv.c. */
static void test_convg_square_route(void **st) {
    (void)st;
    cdl_conv2d_geom q;
    cdl_convg_geom g = cgeom(2, 3, 6, 6, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1);
    assert_int_equal(cdl_convg_square(&g, &q), 1);
    assert_int_equal(q.oh, 6);
    conv_case(g, 1);
    conv_case(cgeom(3, 2, 7, 7, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1), 1);
    g = cgeom(2, 3, 6, 6, 4, 3, 3, 1, 2, 1, 1, 1, 1, 1);
    assert_int_equal(cdl_convg_square(&g, &q), 0);
}

/* The depthwise path over the pool: same bits for 1 and 2 threads. */
static void test_convg_threads(void **st) {
    (void)st;
    cdl_convg_geom g = cgeom(8, 16, 20, 20, 16, 3, 3, 1, 1, 1, 1, 1, 1, 16); /* over cg_threads' bar */
    int64_t nx = g.n * g.c * g.h * g.w, nw = g.k * 9, ny = g.n * g.k * g.oh * g.ow;
    double *x = dvec(nx), *w = dvec(nw), *b = dvec(g.k), *gy = dvec(ny);
    double *y1 = dvec(ny), *y2 = dvec(ny), *dx1 = dvec(nx), *dx2 = dvec(nx), *dw1 = dvec(nw), *dw2 = dvec(nw);
    cdl_parallel_set_threads(1);
    cdl_convg_f64(&g, x, w, b, y1, NULL);
    cdl_convg_bwd_x_f64(&g, gy, w, dx1, NULL);
    cdl_convg_bwd_w_f64(&g, gy, x, dw1, NULL);
    cdl_parallel_set_threads(2);
    cdl_convg_f64(&g, x, w, b, y2, NULL);
    cdl_convg_bwd_x_f64(&g, gy, w, dx2, NULL);
    cdl_convg_bwd_w_f64(&g, gy, x, dw2, NULL);
    cdl_parallel_set_threads(1);
    assert_memory_equal(y1, y2, sizeof(double) * (size_t)ny);
    assert_memory_equal(dx1, dx2, sizeof(double) * (size_t)nx);
    assert_memory_equal(dw1, dw2, sizeof(double) * (size_t)nw);
    free(x); free(w); free(b); free(gy); free(y1); free(y2); free(dx1); free(dx2); free(dw1); free(dw2);
}

/* ------------------------------------------------------------------ transposed convolution */

/* Naive ConvTranspose2d: x [n, cin, hi, wi], w [cin, cout/groups, r, s] scattered to
 * y [n, cout, ho, wo] at (i*sh - ph + r*dh, j*sw - pw + s*dw). */
static void convt_ref(int64_t n, int64_t cin, int64_t hi, int64_t wi, int64_t cout, int64_t ho, int64_t wo,
                      const cdl_convg_geom *g, const double *x, const double *w, const double *b, double *y) {
    int64_t cog = cout / g->groups, cig = cin / g->groups;
    for (int64_t i = 0; i < n * cout * ho * wo; i++) y[i] = b ? b[i / (ho * wo) % cout] : 0;
    for (int64_t nn = 0; nn < n; nn++)
        for (int64_t ci = 0; ci < cin; ci++)
            for (int64_t co = 0; co < cog; co++)
                for (int64_t i = 0; i < hi; i++)
                    for (int64_t j = 0; j < wi; j++)
                        for (int64_t r = 0; r < g->r; r++)
                            for (int64_t q = 0; q < g->s; q++) {
                                int64_t oh = i * g->sh - g->ph + r * g->dh, ow = j * g->sw - g->pw + q * g->dw;
                                if (oh < 0 || oh >= ho || ow < 0 || ow >= wo) continue;
                                int64_t c = ci / cig * cog + co;
                                y[((nn * cout + c) * ho + oh) * wo + ow] +=
                                    x[((nn * cin + ci) * hi + i) * wi + j] * w[((ci * cog + co) * g->r + r) * g->s + q];
                            }
}

/* ConvTranspose2d(cin, cout, (r, s), stride, padding, output_padding, groups, dilation)
 * on x [n, cin, hi, wi]: the geometry of its adjoint convolution, then forward against
 * convt_ref, dx = convg(G, g, w), dw = convg_bwd_w(G, x, g) by finite differences. */
static void convt_case(int64_t n, int64_t cin, int64_t hi, int64_t wi, int64_t cout, int64_t r, int64_t s, int64_t sh,
                       int64_t sw, int64_t ph, int64_t pw, int64_t oph, int64_t opw, int64_t dh, int64_t dw,
                       int64_t groups) {
    int64_t ho = (hi - 1) * sh - 2 * ph + dh * (r - 1) + oph + 1, wo = (wi - 1) * sw - 2 * pw + dw * (s - 1) + opw + 1;
    cdl_convg_geom g = cgeom(n, cout, ho, wo, cin, r, s, sh, sw, ph, pw, dh, dw, groups);
    assert_int_equal(g.oh, hi);
    assert_int_equal(g.ow, wi);
    CV c = {.g = g, .transpose = 1};
    c.nx = n * cin * hi * wi;
    c.nw = cin * (cout / groups) * r * s;
    c.ny = n * cout * ho * wo;
    c.x = dvec(c.nx); c.w = dvec(c.nw); c.b = dvec(cout); c.y = dvec(c.ny); c.R = dvec(c.ny);
    c.scratch = dvec(cdl_convg_scratch(&g));
    double *ref = dvec(c.ny), *dx = dvec(c.nx), *dw_ = dvec(c.nw);
    convt_ref(n, cin, hi, wi, cout, ho, wo, &g, c.x, c.w, c.b, ref);
    cv_loss(&c);
    tu_close("conv_transpose y", c.y, ref, c.ny, 1e-13);
    cdl_convg_f64(&g, c.R, c.w, NULL, dx, c.scratch);
    cdl_convg_bwd_w_f64(&g, c.x, c.R, dw_, c.scratch);
    fd_check("conv_transpose dx", c.x, c.nx, dx, cv_loss, &c);
    fd_check("conv_transpose dw", c.w, c.nw, dw_, cv_loss, &c);
    free(ref); free(dx); free(dw_);
    free(c.x); free(c.w); free(c.b); free(c.y); free(c.R); free(c.scratch);
}

static void test_conv_transpose(void **st) {
    (void)st;
    convt_case(2, 3, 4, 4, 2, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1); /* the U-Net upsampler: 4 -> 8 */
    convt_case(1, 4, 3, 5, 6, 2, 3, 2, 1, 0, 1, 1, 0, 1, 2, 2); /* groups, rectangular, dilated */
    convt_case(2, 2, 3, 3, 2, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 2); /* depthwise 2x2 stride 2 */
}

/* ------------------------------------------------------------------ pooling */

static cdl_pool_geom pgeom(int64_t nc, int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                           int64_t ph, int64_t pw) {
    cdl_pool_geom p = {.nc = nc, .h = h, .w = w, .kh = kh, .kw = kw, .sh = sh, .sw = sw, .ph = ph, .pw = pw};
    p.oh = (h + 2 * ph - kh) / sh + 1;
    p.ow = (w + 2 * pw - kw) / sw + 1;
    return p;
}

typedef struct PL {
    cdl_pool_geom p;
    int kind;                        /* 0 max, 1 avg, 2 adaptive avg */
    double *x, *y, *R;
    int64_t nx, ny;
} PL;

static double pl_loss(void *ctx) {
    PL *t = ctx;
    if (t->kind == 0) cdl_maxpool_f64(&t->p, t->x, t->y);
    else if (t->kind == 1) cdl_avgpool_f64(&t->p, t->x, t->y);
    else cdl_adaptive_avgpool_f64(&t->p, t->x, t->y);
    return tu_dot(t->y, t->R, t->ny);
}

/* Naive windows with PyTorch's bounds; padding: -inf for max, zeros counted for avg. */
static void pl_ref(const PL *t, double *y) {
    const cdl_pool_geom *p = &t->p;
    for (int64_t q = 0; q < p->nc; q++)
        for (int64_t i = 0; i < p->oh; i++)
            for (int64_t j = 0; j < p->ow; j++) {
                int64_t h0, h1, w0, w1;
                if (t->kind == 2) {
                    h0 = (int64_t)floor((double)i * p->h / p->oh); h1 = (int64_t)ceil((double)(i + 1) * p->h / p->oh);
                    w0 = (int64_t)floor((double)j * p->w / p->ow); w1 = (int64_t)ceil((double)(j + 1) * p->w / p->ow);
                } else {
                    h0 = i * p->sh - p->ph; h1 = h0 + p->kh; w0 = j * p->sw - p->pw; w1 = w0 + p->kw;
                }
                double m = -INFINITY, s = 0;
                for (int64_t a = h0; a < h1; a++)
                    for (int64_t b = w0; b < w1; b++) {
                        double v = a < 0 || a >= p->h || b < 0 || b >= p->w ? (t->kind ? 0 : -INFINITY) : t->x[(q * p->h + a) * p->w + b];
                        m = v > m ? v : m;
                        s += v;
                    }
                y[(q * p->oh + i) * p->ow + j] = t->kind == 0 ? m : s / (double)((h1 - h0) * (w1 - w0));
            }
}

static void pl_case(cdl_pool_geom p, int kind) {
    PL t = {.p = p, .kind = kind};
    t.nx = p.nc * p.h * p.w;
    t.ny = p.nc * p.oh * p.ow;
    t.x = dvec(t.nx); t.y = dvec(t.ny); t.R = dvec(t.ny);
    double *ref = dvec(t.ny), *dx = dvec(t.nx);
    pl_ref(&t, ref);
    pl_loss(&t);
    tu_close("pool y", t.y, ref, t.ny, 1e-14);
    float *fx = fcopy(t.x, t.nx), *fy = fcopy(t.y, t.ny);
    if (kind == 0) cdl_maxpool_f32(&p, fx, fy);
    else if (kind == 1) cdl_avgpool_f32(&p, fx, fy);
    else cdl_adaptive_avgpool_f32(&p, fx, fy);
    tu_close_f("pool f32 y", fy, ref, t.ny, 1e-6);
    if (kind == 0) cdl_maxpool_bwd_f64(&p, t.R, t.x, dx);
    else if (kind == 1) cdl_avgpool_bwd_f64(&p, t.R, dx);
    else cdl_adaptive_avgpool_bwd_f64(&p, t.R, dx);
    fd_check("pool dx", t.x, t.nx, dx, pl_loss, &t);
    free(fx); free(fy); free(ref); free(dx); free(t.x); free(t.y); free(t.R);
}

static void test_pool_rect(void **st) {
    (void)st;
    for (int kind = 0; kind < 2; kind++) {
        pl_case(pgeom(3, 6, 7, 2, 3, 2, 2, 1, 1), kind);   /* rectangular windows, padded */
        pl_case(pgeom(4, 1, 11, 1, 3, 1, 2, 0, 1), kind);  /* maxpool1d / avgpool1d(3, 2, 1) */
        pl_case(pgeom(2, 1, 8, 1, 2, 1, 2, 0, 0), kind);   /* pool1d(2) */
    }
}

static void test_pool_adaptive(void **st) {
    (void)st;
    cdl_pool_geom p = {.nc = 3, .h = 7, .w = 5, .oh = 3, .ow = 2};  /* windows overlap */
    pl_case(p, 2);
    p = (cdl_pool_geom){.nc = 2, .h = 4, .w = 6, .oh = 1, .ow = 1};  /* global average */
    pl_case(p, 2);
    p = (cdl_pool_geom){.nc = 2, .h = 3, .w = 2, .oh = 5, .ow = 4};  /* more outputs than inputs */
    pl_case(p, 2);
}

/* Max pool: the first maximum takes the gradient; NaN wins the window. */
static void test_maxpool_ties_nan(void **st) {
    (void)st;
    cdl_pool_geom p = pgeom(1, 1, 4, 1, 2, 1, 2, 0, 0);
    double x[4] = {1, 1, 2, NAN}, y[2], g[2] = {3, 5}, dx[4];
    cdl_maxpool_f64(&p, x, y);
    assert_true(y[0] == 1 && isnan(y[1]));
    cdl_maxpool_bwd_f64(&p, g, x, dx);
    assert_true(dx[0] == 3 && dx[1] == 0 && dx[2] == 0 && dx[3] == 5);
}

/* ------------------------------------------------------------------ upsampling */

typedef struct UP {
    int64_t nc, h, w, oh, ow;
    double sh, sw;
    int bilinear;
    double *x, *y, *R;
} UP;

static double up_loss(void *ctx) {
    UP *u = ctx;
    if (u->bilinear) cdl_upsample_bilinear_f64(u->nc, u->h, u->w, u->oh, u->ow, u->sh, u->sw, u->x, u->y);
    else cdl_upsample_nearest_f64(u->nc, u->h, u->w, u->oh, u->ow, u->sh, u->sw, u->x, u->y);
    return tu_dot(u->y, u->R, u->nc * u->oh * u->ow);
}

/* Reference: PyTorch's index rules written out per output element. */
static void up_ref(const UP *u, double *y) {
    double rh = u->sh > 0 ? 1 / u->sh : (double)u->h / u->oh, rw = u->sw > 0 ? 1 / u->sw : (double)u->w / u->ow;
    for (int64_t q = 0; q < u->nc; q++)
        for (int64_t i = 0; i < u->oh; i++)
            for (int64_t j = 0; j < u->ow; j++) {
                const double *xq = u->x + q * u->h * u->w;
                double v;
                if (!u->bilinear) {
                    int64_t a = (int64_t)floor(i * rh), b = (int64_t)floor(j * rw);
                    v = xq[(a < u->h - 1 ? a : u->h - 1) * u->w + (b < u->w - 1 ? b : u->w - 1)];
                } else {
                    double sh = fmax(rh * (i + 0.5) - 0.5, 0), sw = fmax(rw * (j + 0.5) - 0.5, 0);
                    int64_t a = (int64_t)sh, b = (int64_t)sw, a1 = a + (a < u->h - 1), b1 = b + (b < u->w - 1);
                    double la = sh - a, lb = sw - b;
                    v = (1 - la) * ((1 - lb) * xq[a * u->w + b] + lb * xq[a * u->w + b1]) +
                        la * ((1 - lb) * xq[a1 * u->w + b] + lb * xq[a1 * u->w + b1]);
                }
                y[(q * u->oh + i) * u->ow + j] = v;
            }
}

static void up_case(UP u) {
    int64_t nx = u.nc * u.h * u.w, ny = u.nc * u.oh * u.ow;
    u.x = dvec(nx); u.y = dvec(ny); u.R = dvec(ny);
    double *ref = dvec(ny), *dx = dvec(nx);
    up_ref(&u, ref);
    up_loss(&u);
    tu_close("upsample y", u.y, ref, ny, 1e-14);
    float *fx = fcopy(u.x, nx), *fy = fcopy(u.y, ny);
    if (u.bilinear) cdl_upsample_bilinear_f32(u.nc, u.h, u.w, u.oh, u.ow, u.sh, u.sw, fx, fy);
    else cdl_upsample_nearest_f32(u.nc, u.h, u.w, u.oh, u.ow, u.sh, u.sw, fx, fy);
    tu_close_f("upsample f32 y", fy, ref, ny, 1e-6);
    if (u.bilinear) cdl_upsample_bilinear_bwd_f64(u.nc, u.h, u.w, u.oh, u.ow, u.sh, u.sw, u.R, dx);
    else cdl_upsample_nearest_bwd_f64(u.nc, u.h, u.w, u.oh, u.ow, u.sh, u.sw, u.R, dx);
    fd_check("upsample dx", u.x, nx, dx, up_loss, &u);
    free(fx); free(fy); free(ref); free(dx); free(u.x); free(u.y); free(u.R);
}

static void test_upsample(void **st) {
    (void)st;
    for (int bl = 0; bl < 2; bl++) {
        up_case((UP){.nc = 2, .h = 3, .w = 4, .oh = 6, .ow = 8, .sh = 2, .sw = 2, .bilinear = bl});
        up_case((UP){.nc = 2, .h = 3, .w = 2, .oh = 9, .ow = 6, .sh = 3, .sw = 3, .bilinear = bl});
        up_case((UP){.nc = 1, .h = 5, .w = 4, .oh = 7, .ow = 5, .bilinear = bl});       /* sizes only */
        up_case((UP){.nc = 1, .h = 6, .w = 5, .oh = 4, .ow = 3, .bilinear = bl});       /* downsampling */
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_convg_im2col),     cmocka_unit_test(test_convg_conv1d),
        cmocka_unit_test(test_convg_depthwise),  cmocka_unit_test(test_convg_square_route),
        cmocka_unit_test(test_convg_threads),    cmocka_unit_test(test_conv_transpose),
        cmocka_unit_test(test_pool_rect),        cmocka_unit_test(test_pool_adaptive),
        cmocka_unit_test(test_maxpool_ties_nan), cmocka_unit_test(test_upsample),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
