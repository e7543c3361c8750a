/* test_rt_kernels_loss.c -- loss kernels (runtime/kernels_loss*.c): every forward
 * against a naive double reference (both reductions), every backward against central
 * finite differences in f64 (both operands), numerical stability at extreme inputs,
 * and bad labels failing cleanly. */
#include "test_rt_util.h"

static void check_close(double num, double ana) {
    if (!fd_close(num, ana)) fail_msg("num=%.12g ana=%.12g", num, ana);
}

/* ------------------------------------------------------------------ cross-entropy, nll */

enum { R = 6, C = 5 };

static double ce_ref(const double *x, const int32_t *y, double s, int red) {
    double total = 0;
    for (int r = 0; r < R; r++) {
        double m = -INFINITY, z = 0;
        for (int j = 0; j < C; j++) m = fmax(m, x[r * C + j]);
        for (int j = 0; j < C; j++) z += exp(x[r * C + j] - m);
        double lz = m + log(z);
        for (int j = 0; j < C; j++) {
            double q = (j == y[r] ? 1 - s : 0) + s / C;
            total -= q * (x[r * C + j] - lz);
        }
    }
    return red == CDL_RED_MEAN ? total / R : total;
}

static void test_cross_entropy(void **st) {
    (void)st;
    double x[R * C], p[R * C], dx[R * C], loss;
    int32_t y[R] = {0, 4, 2, 2, 1, 3};
    fill_rand(x, R * C, -3, 3);
    const double smooth[2] = {0, 0.1};
    for (int k = 0; k < 2; k++)
        for (int red = CDL_RED_MEAN; red <= CDL_RED_SUM; red++) {
            assert_int_equal(cdl_cross_entropy_f64(R, C, x, y, smooth[k], red, p, &loss), 0);
            assert_true(fabs(loss - ce_ref(x, y, smooth[k], red)) < 1e-12);
            for (int r = 0; r < R; r++) {
                double s = 0;
                for (int j = 0; j < C; j++) s += p[r * C + j];
                assert_true(fabs(s - 1) < 1e-12);
            }
            /* backward against finite differences, upstream g = 1.7 */
            double g = 1.7;
            assert_int_equal(cdl_cross_entropy_bwd_f64(R, C, &g, y, p, smooth[k], red, dx), 0);
            const double h = 1e-6;
            for (int i = 0; i < R * C; i++) {
                double keep = x[i];
                x[i] = keep + h; double lp = ce_ref(x, y, smooth[k], red);
                x[i] = keep - h; double lm = ce_ref(x, y, smooth[k], red);
                x[i] = keep;
                check_close(g * (lp - lm) / (2 * h), dx[i]);
            }
        }
    /* f32 agrees; huge logits stay finite */
    float xf[R * C], pf[R * C], lf;
    to_f32(x, xf, R * C);
    assert_int_equal(cdl_cross_entropy_f32(R, C, xf, y, 0.1, CDL_RED_MEAN, pf, &lf), 0);
    assert_true(fabs(lf - ce_ref(x, y, 0.1, CDL_RED_MEAN)) < 1e-5);
    for (int i = 0; i < R * C; i++) xf[i] = (i % 3) ? 1000.0f : -1000.0f;
    assert_int_equal(cdl_cross_entropy_f32(R, C, xf, y, 0, CDL_RED_SUM, pf, &lf), 0);
    assert_true(isfinite(lf));
    /* a runtime batch smaller than the buffers: only the first rows count */
    double l2;
    assert_int_equal(cdl_cross_entropy_f64(2, C, x, y, 0, CDL_RED_SUM, p, &l2), 0);
    double lr0, lr1;
    cdl_cross_entropy_f64(1, C, x, y, 0, CDL_RED_SUM, p, &lr0);
    cdl_cross_entropy_f64(1, C, x + C, y + 1, 0, CDL_RED_SUM, p, &lr1);
    assert_true(fabs(l2 - (lr0 + lr1)) < 1e-12);
}

static void test_bad_labels(void **st) {
    (void)st;
    double x[R * C], p[R * C], dx[R * C], loss, g = 1;
    int32_t y[R] = {0, 1, 7, 2, -1, 0};
    fill_rand(x, R * C, -1, 1);
    assert_int_equal(cdl_cross_entropy_f64(R, C, x, y, 0, CDL_RED_MEAN, p, &loss), -1);
    assert_true(isnan(loss));
    assert_non_null(strstr(cdl_last_error(), "cross_entropy: label 7 at row 2"));
    assert_int_equal(cdl_cross_entropy_bwd_f64(R, C, &g, y, p, 0, CDL_RED_MEAN, dx), -1);
    for (int j = 0; j < C; j++) assert_true(dx[2 * C + j] == 0 && dx[4 * C + j] == 0);
    assert_int_equal(cdl_nll_f64(R, C, x, y, CDL_RED_MEAN, &loss), -1);
    assert_true(isnan(loss));
    assert_non_null(strstr(cdl_last_error(), "nll: label"));
    assert_int_equal(cdl_nll_bwd_f64(R, C, &g, y, CDL_RED_MEAN, dx), -1);
}

static void test_nll(void **st) {
    (void)st;
    double lp[R * C], dx[R * C], loss, g = -0.6;
    int32_t y[R] = {1, 1, 0, 4, 3, 2};
    fill_rand(lp, R * C, -4, 0);
    for (int red = CDL_RED_MEAN; red <= CDL_RED_SUM; red++) {
        assert_int_equal(cdl_nll_f64(R, C, lp, y, red, &loss), 0);
        double ref = 0;
        for (int r = 0; r < R; r++) ref -= lp[r * C + y[r]];
        if (red == CDL_RED_MEAN) ref /= R;
        assert_true(fabs(loss - ref) < 1e-12);
        assert_int_equal(cdl_nll_bwd_f64(R, C, &g, y, red, dx), 0);
        for (int i = 0; i < R * C; i++) {
            double want = (i % C == y[i / C]) ? -g / (red == CDL_RED_MEAN ? R : 1) : 0;
            assert_true(fabs(dx[i] - want) < 1e-15);
        }
    }
}

/* ------------------------------------------------------------------ pair losses */

enum { NP = 40, KL_ROWS = 5, KL_COLS = 8 };
typedef void (*pair_fwd)(int64_t, const double *, const double *, int, double *);
typedef void (*pair_bwd)(int64_t, const double *, const double *, const double *, int, int, double *);
static double hub_delta = 0.8;
static void huber_fwd(int64_t n, const double *a, const double *b, int red, double *l) {
    cdl_huber_f64(n, hub_delta, a, b, red, l);
}
static void huber_bwd(int64_t n, const double *g, const double *a, const double *b, int red, int wrt, double *d) {
    cdl_huber_bwd_f64(n, hub_delta, g, a, b, red, wrt, d);
}
static void kl_fwd(int64_t n, const double *a, const double *b, int red, double *l) {
    (void)n;
    cdl_kl_normal_f64(KL_ROWS, KL_COLS, a, b, red, l);
}
static void kl_bwd(int64_t n, const double *g, const double *a, const double *b, int red, int wrt, double *d) {
    (void)n;
    cdl_kl_normal_bwd_f64(KL_ROWS, KL_COLS, g, a, b, red, wrt, d);
}

static double ref_elem(int kind, double u, double v) {
    double e = u - v;
    switch (kind) {
    case 0: return e * e;
    case 1: return fabs(e);
    case 2: return fabs(e) <= hub_delta ? 0.5 * e * e : hub_delta * (fabs(e) - 0.5 * hub_delta);
    case 3: return -(v * log(u) + (1 - v) * log(1 - u));
    case 4: return log1p(exp(u)) - u * v;
    default: return -0.5 * (1 + v - u * u - exp(v));
    }
}

static void test_pair_losses(void **st) {
    (void)st;
    struct { pair_fwd f; pair_bwd b; } k[6] = {
        {cdl_mse_f64, cdl_mse_bwd_f64}, {cdl_l1_f64, cdl_l1_bwd_f64}, {huber_fwd, huber_bwd},
        {cdl_bce_f64, cdl_bce_bwd_f64}, {cdl_bce_logits_f64, cdl_bce_logits_bwd_f64}, {kl_fwd, kl_bwd},
    };
    double a[NP], b[NP], d[NP], loss;
    const double h = 1e-6;
    for (int kind = 0; kind < 6; kind++) {
        if (kind == 3) {                          /* bce: p and target in (0, 1) */
            fill_rand(a, NP, 0.05, 0.95);
            fill_rand(b, NP, 0, 1);
        } else {
            fill_rand(a, NP, -2, 2);
            for (int i = 0; i < NP; i++) {        /* away from the l1 / huber kinks */
                double v;
                do v = urand() * 4 - 2;
                while (fabs(a[i] - v) < 1e-3 || fabs(fabs(a[i] - v) - hub_delta) < 1e-3);
                b[i] = v;
            }
        }
        for (int red = CDL_RED_MEAN; red <= CDL_RED_SUM; red++) {
            k[kind].f(NP, a, b, red, &loss);
            double ref = 0;
            for (int i = 0; i < NP; i++) ref += ref_elem(kind, a[i], b[i]);
            ref /= red == CDL_RED_SUM ? 1 : kind == 5 ? KL_ROWS : NP;
            if (fabs(loss - ref) > 1e-12 * (1 + fabs(ref))) fail_msg("kind %d red %d: %.15g vs %.15g", kind, red, loss, ref);
            double g = 0.7;
            for (int wrt = 0; wrt <= 1; wrt++) {
                k[kind].b(NP, &g, a, b, red, wrt, d);
                double *v = wrt ? b : a;
                for (int i = 0; i < NP; i++) {
                    double keep = v[i], lp, lm;
                    v[i] = keep + h; k[kind].f(NP, a, b, red, &lp);
                    v[i] = keep - h; k[kind].f(NP, a, b, red, &lm);
                    v[i] = keep;
                    check_close(g * (lp - lm) / (2 * h), d[i]);
                }
            }
        }
    }
}

static void test_pair_f32_and_extremes(void **st) {
    (void)st;
    double a[NP], b[NP], l64;
    float af[NP], bf[NP], l32;
    fill_rand(a, NP, -2, 2);
    fill_rand(b, NP, -2, 2);
    to_f32(a, af, NP);
    to_f32(b, bf, NP);
    cdl_mse_f32(NP, af, bf, CDL_RED_MEAN, &l32);
    cdl_mse_f64(NP, a, b, CDL_RED_MEAN, &l64);
    assert_true(fabs(l32 - l64) < 1e-5 * (1 + l64));
    cdl_kl_normal_f32(KL_ROWS, KL_COLS, af, bf, CDL_RED_MEAN, &l32);
    cdl_kl_normal_f64(KL_ROWS, KL_COLS, a, b, CDL_RED_MEAN, &l64);
    assert_true(fabs(l32 - l64) < 1e-5 * (1 + fabs(l64)));
    /* bce_with_logits at |z| = 100 and bce at p = 0 / 1 stay finite (PyTorch: log >= -100) */
    float z[4] = {-100, 100, -100, 100}, t[4] = {0, 1, 1, 0}, p[4] = {0, 1, 0, 1}, dz[4], g = 1;
    cdl_bce_logits_f32(4, z, t, CDL_RED_SUM, &l32);
    assert_true(isfinite(l32) && fabs(l32 - 200) < 1e-3);
    cdl_bce_logits_bwd_f32(4, &g, z, t, CDL_RED_SUM, 0, dz);
    assert_true(fabs(dz[2] + 1) < 1e-6 && fabs(dz[3] - 1) < 1e-6 && fabs(dz[0]) < 1e-6);
    cdl_bce_f32(4, p, t, CDL_RED_SUM, &l32);
    assert_true(fabs(l32 - 200) < 1e-3);
    cdl_bce_bwd_f32(4, &g, p, t, CDL_RED_SUM, 0, dz);
    for (int i = 0; i < 4; i++) assert_true(isfinite(dz[i]));
    /* empty input: loss 0, no division by zero */
    cdl_mse_f32(0, af, bf, CDL_RED_MEAN, &l32);
    assert_true(l32 == 0);
}

/* ------------------------------------------------------------------ reduce none, weights, ignore_index */

/* Every pair loss (and kl_normal, per row) unreduced: each value against ref_elem, the
 * backward with one upstream value per output against finite differences of
 * sum_i g_i loss_i. */
static void test_pair_losses_none(void **st) {
    (void)st;
    struct { pair_fwd f; pair_bwd b; } k[6] = {
        {cdl_mse_f64, cdl_mse_bwd_f64}, {cdl_l1_f64, cdl_l1_bwd_f64}, {huber_fwd, huber_bwd},
        {cdl_bce_f64, cdl_bce_bwd_f64}, {cdl_bce_logits_f64, cdl_bce_logits_bwd_f64}, {kl_fwd, kl_bwd},
    };
    double a[NP], b[NP], d[NP], out[NP], g[NP], lp[NP], lm[NP];
    const double h = 1e-6;
    for (int kind = 0; kind < 6; kind++) {
        fill_rand(a, NP, 0.05, 0.95);
        fill_rand(b, NP, 0.3, 0.7);                   /* |a - b| != delta, a != b likely */
        for (int i = 0; i < NP; i++)
            if (fabs(a[i] - b[i]) < 1e-3 || fabs(fabs(a[i] - b[i]) - hub_delta) < 1e-3) a[i] += 0.01;
        int nout = kind == 5 ? KL_ROWS : NP;
        fill_rand(g, nout, -1, 1);
        k[kind].f(NP, a, b, CDL_RED_NONE, out);
        for (int o = 0; o < nout; o++) {
            double ref = 0;
            if (kind == 5) for (int c = 0; c < KL_COLS; c++) ref += ref_elem(kind, a[o * KL_COLS + c], b[o * KL_COLS + c]);
            else ref = ref_elem(kind, a[o], b[o]);
            if (fabs(out[o] - ref) > 1e-12 * (1 + fabs(ref))) fail_msg("kind %d out %d: %.15g vs %.15g", kind, o, out[o], ref);
        }
        for (int wrt = 0; wrt <= 1; wrt++) {
            k[kind].b(NP, g, a, b, CDL_RED_NONE, wrt, d);
            double *v = wrt ? b : a;
            for (int i = 0; i < NP; i++) {
                double keep = v[i], sp = 0, sm = 0;
                v[i] = keep + h; k[kind].f(NP, a, b, CDL_RED_NONE, lp);
                v[i] = keep - h; k[kind].f(NP, a, b, CDL_RED_NONE, lm);
                v[i] = keep;
                for (int o = 0; o < nout; o++) sp += g[o] * lp[o], sm += g[o] * lm[o];
                check_close((sp - sm) / (2 * h), d[i]);
            }
        }
    }
}

/* One row's cross-entropy (smoothing s). */
static double ce_row(const double *x, int32_t y, double s) {
    double m = -INFINITY, z = 0, l = 0;
    for (int j = 0; j < C; j++) m = fmax(m, x[j]);
    for (int j = 0; j < C; j++) z += exp(x[j] - m);
    for (int j = 0; j < C; j++) l -= ((j == y ? 1 - s : 0) + s / C) * (x[j] - m - log(z));
    return l;
}

enum { IGN = -100 };
static double ex_x[R * C], ex_w[R], ex_p[R * C], ex_out[R];
static int32_t ex_y[R] = {0, IGN, 2, 4, IGN, 1};

/* The scalar sum_r gr[r] loss_r (none) or g * loss of cross_entropy_ex (nll_ex when nll). */
static double ex_loss(int nll, const double *w, int red, double s, const double *gr) {
    double l = 0;
    if (nll) assert_int_equal(cdl_nll_ex_f64(R, C, ex_x, ex_y, w, NULL, IGN, red, red == CDL_RED_NONE ? ex_out : &l), 0);
    else assert_int_equal(cdl_cross_entropy_ex_f64(R, C, ex_x, ex_y, w, NULL, IGN, s, red, ex_p, red == CDL_RED_NONE ? ex_out : &l), 0);
    if (red != CDL_RED_NONE) return gr[0] * l;
    for (int r = 0; r < R; r++) l += gr[r] * ex_out[r];
    return l;
}

/* cross_entropy_ex and nll_ex with row weights and ignored labels, every reduction:
 * values against ce_row (mean divides by the weight of the rows not ignored), the
 * backward against finite differences, the plain kernels equal to the _ex ones. */
static void test_class_loss_ex(void **st) {
    (void)st;
    double gr[R], dx[R * C];
    const double h = 1e-6;
    fill_rand(ex_x, R * C, -2, 2);
    fill_rand(ex_w, R, 0.2, 2);
    fill_rand(gr, R, -1, 1);
    for (int nll = 0; nll < 2; nll++)
        for (int wt = 0; wt < 2; wt++)
            for (int red = CDL_RED_MEAN; red <= CDL_RED_NONE; red++) {
                const double *w = wt ? ex_w : NULL, s = nll ? 0 : 0.1;
                double total = 0, wsum = 0;
                ex_loss(nll, w, red, s, gr);
                for (int r = 0; r < R; r++) {
                    double lr = ex_y[r] == IGN ? 0 : (w ? w[r] : 1) * (nll ? -ex_x[r * C + ex_y[r]] : ce_row(ex_x + r * C, ex_y[r], s));
                    if (red == CDL_RED_NONE) check_close(lr, ex_out[r]);
                    total += lr;
                    wsum += ex_y[r] == IGN ? 0 : (w ? w[r] : 1);
                }
                if (red != CDL_RED_NONE) {
                    double l = ex_loss(nll, w, red, s, (double[]){1});
                    check_close(red == CDL_RED_MEAN ? total / wsum : total, l);
                }
                if (nll) assert_int_equal(cdl_nll_ex_bwd_f64(R, C, gr, ex_y, w, NULL, IGN, red, dx), 0);
                else assert_int_equal(cdl_cross_entropy_ex_bwd_f64(R, C, gr, ex_y, w, NULL, IGN, ex_p, s, red, dx), 0);
                for (int i = 0; i < R * C; i++) {
                    double keep = ex_x[i];
                    ex_x[i] = keep + h; double lp = ex_loss(nll, w, red, s, gr);
                    ex_x[i] = keep - h; double lm = ex_loss(nll, w, red, s, gr);
                    ex_x[i] = keep;
                    check_close((lp - lm) / (2 * h), dx[i]);
                    if (ex_y[i / C] == IGN) assert_true(dx[i] == 0);
                }
            }
    /* every row ignored: the mean is NaN (0 / 0), as in PyTorch; the sum is 0 */
    int32_t all[2] = {IGN, IGN};
    double l;
    assert_int_equal(cdl_cross_entropy_ex_f64(2, C, ex_x, all, NULL, NULL, IGN, 0, CDL_RED_MEAN, ex_p, &l), 0);
    assert_true(isnan(l));
    assert_int_equal(cdl_cross_entropy_ex_f64(2, C, ex_x, all, NULL, NULL, IGN, 0, CDL_RED_SUM, ex_p, &l), 0);
    assert_true(l == 0);
    /* without ignore_index, -100 is a bad label as before */
    assert_int_equal(cdl_cross_entropy_ex_f64(2, C, ex_x, all, NULL, NULL, CDL_NO_IGNORE, 0, CDL_RED_NONE, ex_p, ex_out), -1);
    assert_true(isnan(ex_out[0]));
    expect_error("label -100 at row 0");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cross_entropy),
        cmocka_unit_test(test_bad_labels),
        cmocka_unit_test(test_nll),
        cmocka_unit_test(test_pair_losses),
        cmocka_unit_test(test_pair_f32_and_extremes),
        cmocka_unit_test(test_pair_losses_none),
        cmocka_unit_test(test_class_loss_ex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
