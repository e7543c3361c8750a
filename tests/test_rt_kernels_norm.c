/* test_rt_kernels_norm.c -- layer, RMS, group and instance norm (kernels_norm.c):
 * forward against naive two-pass references (f64 and f32), saved statistics, and every
 * gradient (x, weight, bias) against central finite differences in f64. */
#include "test_rt_util.h"

/* The generic reference: segments of ch channels x hw values normalised over all of
 * them (center = 0: RMS), channel affine w, b; mean and rstd per segment. */
static void norm_ref(int64_t nseg, int64_t ch, int64_t hw, int64_t wstride, int center, double eps,
                     const double *x, const double *w, const double *b, double *y, double *mean, double *rstd) {
    int64_t len = ch * hw;
    for (int64_t s = 0; s < nseg; s++) {
        const double *xs = x + s * len;
        double m = 0, v = 0;
        if (center) {
            for (int64_t i = 0; i < len; i++) m += xs[i];
            m /= (double)len;
        }
        for (int64_t i = 0; i < len; i++) v += (xs[i] - m) * (xs[i] - m);
        double r = 1 / sqrt(v / (double)len + eps);
        if (mean) mean[s] = m;
        rstd[s] = r;
        for (int64_t i = 0; i < len; i++) {
            int64_t c = (s % wstride) * ch + i / hw;
            y[s * len + i] = (xs[i] - m) * r * (w ? w[c] : 1) + (b ? b[c] : 0);
        }
    }
}

typedef struct NC {
    int kind;                        /* 0 layer, 1 rms, 2 group */
    int64_t rows, n, c, hw, groups;  /* layer/rms: rows x n; group: n x c x hw */
    double eps;
    double *x, *w, *b, *y, *save, *R;
    int64_t nx, nw;
} NC;

static void nc_fwd(NC *t, const double *x, double *y, double *save) {
    if (t->kind == 0) cdl_layer_norm_f64(t->rows, t->n, t->eps, x, t->w, t->b, y, save);
    else if (t->kind == 1) cdl_rms_norm_f64(t->rows, t->n, t->eps, x, t->w, y, save);
    else cdl_group_norm_f64(t->n, t->c, t->hw, t->groups, t->eps, x, t->w, t->b, y, save);
}

static double nc_loss(void *ctx) {
    NC *t = ctx;
    nc_fwd(t, t->x, t->y, t->save);
    return tu_dot(t->y, t->R, t->nx);
}

/* One configuration: forward (f64 1e-13, f32 1e-5) and statistics against norm_ref,
 * then dx, dw, db by finite differences. */
static void nc_case(NC t, int affine) {
    int gn = t.kind == 2;
    t.nx = gn ? t.n * t.c * t.hw : t.rows * t.n;
    t.nw = gn ? t.c : t.n;
    int64_t nseg = gn ? t.n * t.groups : t.rows, nsave = (t.kind == 1 ? 1 : 2) * nseg;
    t.x = dvec(t.nx);
    for (int64_t i = 0; i < t.nx; i++) t.x[i] = 3 * t.x[i] + 0.5; /* off-centre, not unit scale */
    t.w = affine ? dvec(t.nw) : NULL;
    t.b = affine && t.kind != 1 ? dvec(t.nw) : NULL;
    t.y = dvec(t.nx);
    t.save = dvec(nsave);
    t.R = dvec(t.nx);
    double *ry = dvec(t.nx), *rm = dvec(nseg), *rr = dvec(nseg);
    if (gn) norm_ref(nseg, t.c / t.groups, t.hw, t.groups, 1, t.eps, t.x, t.w, t.b, ry, rm, rr);
    else norm_ref(nseg, t.n, 1, 1, t.kind == 0, t.eps, t.x, t.w, t.b, ry, rm, rr);
    nc_loss(&t);
    tu_close("norm y", t.y, ry, t.nx, 1e-13);
    if (t.kind == 1) {
        tu_close("norm rstd", t.save, rr, nseg, 1e-13);
    } else {
        tu_close("norm mean", t.save, rm, nseg, 1e-13);
        tu_close("norm rstd", t.save + nseg, rr, nseg, 1e-13);
    }

    float *fx = fcopy(t.x, t.nx), *fw = affine ? fcopy(t.w, t.nw) : NULL, *fb = t.b ? fcopy(t.b, t.nw) : NULL;
    float *fy = fcopy(t.y, t.nx), *fs = fcopy(t.save, nsave);
    if (t.kind == 0) cdl_layer_norm_f32(t.rows, t.n, t.eps, fx, fw, fb, fy, fs);
    else if (t.kind == 1) cdl_rms_norm_f32(t.rows, t.n, t.eps, fx, fw, fy, fs);
    else cdl_group_norm_f32(t.n, t.c, t.hw, t.groups, t.eps, fx, fw, fb, fy, fs);
    tu_close_f("norm f32 y", fy, ry, t.nx, 1e-5);

    double *dx = dvec(t.nx), *dw = dvec(t.nw), *db = dvec(t.nw); /* garbage: overwritten */
    if (t.kind == 0) cdl_layer_norm_bwd_f64(t.rows, t.n, t.R, t.x, t.w, t.save, dx, affine ? dw : NULL, t.b ? db : NULL);
    else if (t.kind == 1) cdl_rms_norm_bwd_f64(t.rows, t.n, t.R, t.x, t.w, t.save, dx, affine ? dw : NULL);
    else cdl_group_norm_bwd_f64(t.n, t.c, t.hw, t.groups, t.R, t.x, t.w, t.save, dx, affine ? dw : NULL, t.b ? db : NULL);
    fd_check("norm dx", t.x, t.nx, dx, nc_loss, &t);
    if (affine) fd_check("norm dw", t.w, t.nw, dw, nc_loss, &t);
    if (t.b) fd_check("norm db", t.b, t.nw, db, nc_loss, &t);

    free(fx); free(fw); free(fb); free(fy); free(fs);
    free(ry); free(rm); free(rr); free(dx); free(dw); free(db);
    free(t.x); free(t.w); free(t.b); free(t.y); free(t.save); free(t.R);
}

static void test_layer_norm(void **st) {
    (void)st;
    nc_case((NC){.kind = 0, .rows = 4, .n = 7, .eps = 1e-5}, 1);
    nc_case((NC){.kind = 0, .rows = 3, .n = 19, .eps = 1e-5}, 1);   /* past the 8 lanes */
    nc_case((NC){.kind = 0, .rows = 2, .n = 5, .eps = 1e-3}, 0);    /* no affine */
}

static void test_rms_norm(void **st) {
    (void)st;
    nc_case((NC){.kind = 1, .rows = 4, .n = 9, .eps = 1e-6}, 1);
    nc_case((NC){.kind = 1, .rows = 2, .n = 17, .eps = 1e-5}, 0);
}

static void test_group_norm(void **st) {
    (void)st;
    nc_case((NC){.kind = 2, .n = 2, .c = 6, .hw = 5, .groups = 3, .eps = 1e-5}, 1);
    nc_case((NC){.kind = 2, .n = 3, .c = 4, .hw = 9, .groups = 1, .eps = 1e-5}, 1);  /* one group: over C, H, W */
    nc_case((NC){.kind = 2, .n = 1, .c = 4, .hw = 3, .groups = 2, .eps = 1e-5}, 0);
}

/* Instance norm is group norm with one channel a group. */
static void test_instance_norm(void **st) {
    (void)st;
    nc_case((NC){.kind = 2, .n = 2, .c = 3, .hw = 10, .groups = 3, .eps = 1e-5}, 0);
    nc_case((NC){.kind = 2, .n = 2, .c = 3, .hw = 10, .groups = 3, .eps = 1e-5}, 1);
}

/* A constant row: variance 0, rstd = 1/sqrt(eps), y = bias, finite gradients. */
static void test_norm_constant_row(void **st) {
    (void)st;
    double x[4] = {2, 2, 2, 2}, w[4] = {1, 2, 3, 4}, b[4] = {.5, .5, .5, .5}, y[4], save[2], g[4] = {1, -1, 2, 0}, dx[4], dw[4], db[4];
    cdl_layer_norm_f64(1, 4, 1e-5, x, w, b, y, save);
    for (int i = 0; i < 4; i++) assert_true(y[i] == 0.5);
    assert_true(fabs(save[1] - 1 / sqrt(1e-5)) < 1e-9);
    cdl_layer_norm_bwd_f64(1, 4, g, x, w, save, dx, dw, db);
    for (int i = 0; i < 4; i++) assert_true(isfinite(dx[i]) && dw[i] == 0 && db[i] == g[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layer_norm),    cmocka_unit_test(test_rms_norm),
        cmocka_unit_test(test_group_norm),    cmocka_unit_test(test_instance_norm),
        cmocka_unit_test(test_norm_constant_row),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
