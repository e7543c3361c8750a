/* test_rt_kernels_sel.c -- selection and axis reductions (kernels_sel.c): where over a
 * broadcast, tril/triu, one_hot, max/min over axis sets (with the winner taking the
 * gradient), argmax, var/std, logsumexp.  Forwards against naive index walks (f64,
 * f32), backwards against central finite differences in f64, NaN and infinity rules. */
#include "test_rt_util.h"

/* ------------------------------------------------------------------ where, tril, one_hot */

static void test_where(void **st) {
    (void)st;
    /* y [2, 4, 3] = where(c [2, 1, 3], a [4, 3], b scalar) */
    int64_t dims[3] = {2, 4, 3}, sc[3] = {3, 0, 1}, sa[3] = {0, 3, 1}, sb[3] = {0, 0, 0};
    double c[6] = {1, 0, 2, 0, 0, -1}, a[12], b = 7.5, y[24];
    fill_rand(a, 12, -1, 1);
    cdl_where_f64(3, dims, sc, sa, sb, c, a, &b, y);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < 3; k++) assert_true(y[(i * 4 + j) * 3 + k] == (c[i * 3 + k] != 0 ? a[j * 3 + k] : b));
    /* dense, f32, in place over a */
    float cf[5] = {1, 0, 1, 0, 1}, af[5] = {1, 2, 3, 4, 5}, bf[5] = {-1, -2, -3, -4, -5};
    int64_t d1[1] = {5}, s1[1] = {1};
    cdl_where_f32(1, d1, s1, s1, s1, cf, af, bf, af);
    assert_true(af[0] == 1 && af[1] == -2 && af[2] == 3 && af[3] == -4 && af[4] == 5);
    /* rank 0 */
    double c0 = 0, a0 = 1, b0 = 2, y0;
    cdl_where_f64(0, NULL, NULL, NULL, NULL, &c0, &a0, &b0, &y0);
    assert_true(y0 == 2);
}

static void test_tril_triu(void **st) {
    (void)st;
    double x[2 * 3 * 4], y[2 * 3 * 4];
    fill_rand(x, 24, 1, 2);
    for (int upper = 0; upper < 2; upper++)
        for (int diag = -2; diag <= 2; diag++) {
            cdl_tril_f64(2, 3, 4, diag, upper, x, y);
            for (int b = 0; b < 2; b++)
                for (int i = 0; i < 3; i++)
                    for (int j = 0; j < 4; j++) {
                        int keep = upper ? j - i >= diag : j - i <= diag;
                        assert_true(y[(b * 3 + i) * 4 + j] == (keep ? x[(b * 3 + i) * 4 + j] : 0));
                    }
        }
    float f[4] = {1, 2, 3, 4};   /* in place, 2x2 tril */
    cdl_tril_f32(1, 2, 2, 0, 0, f, f);
    assert_true(f[0] == 1 && f[1] == 0 && f[2] == 3 && f[3] == 4);
}

static void test_one_hot(void **st) {
    (void)st;
    int32_t ids[4] = {2, 0, 3, 2};
    double y[16];
    assert_int_equal(cdl_one_hot_f64(4, 4, ids, y), 0);
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < 4; c++) assert_true(y[i * 4 + c] == (c == ids[i]));
    int32_t bad[2] = {1, 4};
    float yf[6] = {9, 9, 9, 9, 9, 9};
    assert_int_equal(cdl_one_hot_f32(2, 3, bad, yf), -1);
    expect_error("one_hot: id 4 at 1 is outside [0, 3)");
    assert_true(yf[1] == 1 && yf[3] == 0 && yf[4] == 0 && yf[5] == 0);
}

/* ------------------------------------------------------------------ axis reductions */

enum { D0 = 3, D1 = 4, D2 = 5, NX = D0 * D1 * D2 };
static const int64_t DIMS[3] = {D0, D1, D2};
static const unsigned MASKS[] = {1u << 1, 1u << 2, 1u << 0, 5u, 3u, 6u, 0u};

/* Naive reduction over mask: for every output, the list of x indices it covers.
 * Returns ny; idx[o * NX + k], cnt[o]. */
static int64_t groups(unsigned mask, int64_t *idx, int64_t *cnt) {
    int64_t ny = 1, kd[3];
    for (int a = 0; a < 3; a++) {
        int red = mask == 0 || (mask >> a & 1u);
        kd[a] = red ? 1 : DIMS[a];
        ny *= kd[a];
    }
    for (int64_t o = 0; o < ny; o++) cnt[o] = 0;
    for (int64_t i = 0; i < NX; i++) {
        int64_t c[3] = {i / (D1 * D2), i / D2 % D1, i % D2}, o = 0;
        for (int a = 0; a < 3; a++) o = o * kd[a] + (kd[a] == 1 ? 0 : c[a]);
        idx[o * NX + cnt[o]++] = i;
    }
    return ny;
}

static struct { unsigned mask; int is_min, kind; double corr; double *x, *y, *R, *aux; int64_t ny; } rc;

static double red_loss(void *ctx) {
    (void)ctx;
    int64_t arg[NX];
    double work[NX];
    if (rc.kind == 0) cdl_reduce_max_f64(3, DIMS, rc.mask, rc.is_min, rc.x, rc.y, arg);
    else if (rc.kind == 1 || rc.kind == 2) cdl_moments_f64(3, DIMS, rc.mask, rc.corr, rc.kind == 2, rc.x, rc.y, rc.aux);
    else cdl_logsumexp_f64(3, DIMS, rc.mask, rc.x, rc.y, work);
    return tu_dot(rc.y, rc.R, rc.ny);
}

/* kind 0 max/min, 1 var, 2 std, 3 logsumexp: every mask, forward against the groups of
 * the naive walk, backward by finite differences. */
static void red_case(int kind) {
    static int64_t idx[NX * NX], cnt[NX];
    double x[NX], y[NX], R[NX], aux[NX], ref[NX], dx[NX];
    int64_t arg[NX];
    fill_rand(x, NX, -2, 2);
    rc.x = x; rc.y = y; rc.R = R; rc.aux = aux; rc.kind = kind;
    for (size_t m = 0; m < sizeof MASKS / sizeof MASKS[0]; m++)
        for (int var = 0; var < 2; var++) {
            rc.mask = MASKS[m];
            rc.is_min = var;
            rc.corr = var ? 0 : 1;
            rc.ny = groups(rc.mask, idx, cnt);
            fill_rand(R, rc.ny, -1, 1);
            for (int64_t o = 0; o < rc.ny; o++) {
                const int64_t *ix = idx + o * NX;
                double best = x[ix[0]], s = 0, q = 0, mx = -INFINITY;
                for (int64_t k = 0; k < cnt[o]; k++) {
                    double v = x[ix[k]];
                    if (var ? v < best : v > best) best = v;
                    s += v;
                    mx = fmax(mx, v);
                }
                double mean = s / (double)cnt[o], se = 0;
                for (int64_t k = 0; k < cnt[o]; k++) {
                    q += (x[ix[k]] - mean) * (x[ix[k]] - mean);
                    se += exp(x[ix[k]] - mx);
                }
                double v = q / ((double)cnt[o] - rc.corr);
                ref[o] = kind == 0 ? best : kind == 1 ? v : kind == 2 ? sqrt(v) : mx + log(se);
            }
            red_loss(NULL);
            tu_close("reduction", y, ref, rc.ny, 1e-13);
            if (kind == 0) {
                cdl_reduce_max_f64(3, DIMS, rc.mask, rc.is_min, x, y, arg);
                cdl_reduce_max_bwd_f64(rc.ny, NX, R, arg, dx);
            } else if (kind <= 2) {
                cdl_moments_bwd_f64(3, DIMS, rc.mask, rc.corr, kind == 2, R, x, aux, y, dx);
            } else {
                cdl_logsumexp_bwd_f64(3, DIMS, rc.mask, R, x, y, dx);
            }
            fd_check("reduction dx", x, NX, dx, red_loss, NULL);
            /* f32 forward */
            float xf[NX], yf[NX], af[NX];
            int64_t argf[NX];
            to_f32(x, xf, NX);
            if (kind == 0) cdl_reduce_max_f32(3, DIMS, rc.mask, rc.is_min, xf, yf, argf);
            else if (kind <= 2) cdl_moments_f32(3, DIMS, rc.mask, rc.corr, kind == 2, xf, yf, af);
            else cdl_logsumexp_f32(3, DIMS, rc.mask, xf, yf, af);
            for (int64_t o = 0; o < rc.ny; o++) assert_true(fabs(yf[o] - ref[o]) <= 1e-5 * (1 + fabs(ref[o])));
        }
}

static void test_reduce_max(void **st) { (void)st; red_case(0); }
static void test_var(void **st) { (void)st; red_case(1); }
static void test_std(void **st) { (void)st; red_case(2); }
static void test_logsumexp(void **st) { (void)st; red_case(3); }

/* Ties: the first in memory order wins and takes the whole gradient; NaN wins; argmax
 * along an axis of [outer, len, inner]. */
static void test_max_ties_nan_argmax(void **st) {
    (void)st;
    int64_t d[2] = {2, 3}, arg[2];
    double x[6] = {1, 3, 3, NAN, 0, 5}, y[2], g[2] = {1, 2}, dx[6];
    cdl_reduce_max_f64(2, d, 2u, 0, x, y, arg);
    assert_true(y[0] == 3 && arg[0] == 1 && isnan(y[1]) && arg[1] == 3);
    cdl_reduce_max_bwd_f64(2, 6, g, arg, dx);
    assert_true(dx[1] == 1 && dx[2] == 0 && dx[3] == 2 && dx[0] == 0);
    /* argmax over axis 1 of [2, 3, 2] */
    double a[12] = {0, 5, 2, 5, 2, 1,   -1, -1, -3, 4, -1, 9};
    int32_t am[4];
    cdl_argmax_f64(2, 3, 2, 0, a, am);
    assert_true(am[0] == 1 && am[1] == 0 && am[2] == 0 && am[3] == 2);
    cdl_argmax_f64(2, 3, 2, 1, a, am);   /* argmin, first of ties */
    assert_true(am[0] == 0 && am[1] == 2 && am[2] == 1 && am[3] == 0);
    float af[3] = {1, NAN, 2};
    int32_t an;
    cdl_argmax_f32(1, 3, 1, 0, af, &an);
    assert_true(an == 1);
}

/* var with N - correction <= 0 (one element, unbiased) is NaN, as torch.var; logsumexp
 * of an all -inf group is -inf, of a group with +inf is +inf. */
static void test_reduction_edges(void **st) {
    (void)st;
    int64_t d[2] = {2, 1};
    double x[2] = {1, 2}, y[2], mean[2], w[2];
    cdl_moments_f64(2, d, 2u, 1, 0, x, y, mean);
    assert_true(isnan(y[0]) && isnan(y[1]));
    cdl_moments_f64(2, d, 2u, 0, 1, x, y, mean);
    assert_true(y[0] == 0 && mean[1] == 2);
    int64_t d2[2] = {2, 2};
    double l[4] = {-INFINITY, -INFINITY, 1, INFINITY}, ly[2];
    cdl_logsumexp_f64(2, d2, 2u, l, ly, w);
    assert_true(ly[0] == -INFINITY && ly[1] == INFINITY);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_where),         cmocka_unit_test(test_tril_triu),
        cmocka_unit_test(test_one_hot),       cmocka_unit_test(test_reduce_max),
        cmocka_unit_test(test_var),           cmocka_unit_test(test_std),
        cmocka_unit_test(test_logsumexp),     cmocka_unit_test(test_max_ties_nan_argmax),
        cmocka_unit_test(test_reduction_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
