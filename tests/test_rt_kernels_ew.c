/* test_rt_kernels_ew.c -- elementwise kernels (runtime/kernels_ew*.c): every forward
 * kernel against a naive double reference, every backward kernel against central
 * finite differences in f64, broadcasting against a naive index walk, dropout's mask
 * properties. */
#include "test_rt_util.h"

#include <float.h>

/* ------------------------------------------------------------------ helpers */

/* Uniform in [lo, hi), kept at least `gap` away from each kink in kinks[]. */
static double away(double lo, double hi, const double *kinks, int nk, double gap) {
    for (;;) {
        double v = lo + (hi - lo) * urand();
        int ok = 1;
        for (int k = 0; k < nk; k++) ok &= fabs(v - kinks[k]) > gap;
        if (ok) return v;
    }
}

#define N 257   /* odd, so vector loops get a tail */

/* ------------------------------------------------------------------ basics */

static void test_basics(void **st) {
    (void)st;
    float f[N], g[N];
    double d[N];
    cdl_fill_f32(N, 1.5, f);
    for (int i = 0; i < N; i++) assert_true(f[i] == 1.5f);
    cdl_fill_f32(3, 1e308, f);                     /* the compiler's spelling of inf */
    assert_true(isinf(f[0]) && f[0] > 0 && f[3] == 1.5f);
    cdl_fill_f32(1, 1e39, f);                      /* beyond FLT_MAX: inf, not UB */
    assert_true(isinf(f[0]));
    cdl_fill_f64(N, -2.25, d);
    assert_true(d[0] == -2.25 && d[N - 1] == -2.25);
    int32_t iv[5];
    cdl_fill_i32(5, 7, iv);
    assert_int_equal(iv[4], 7);

    for (int i = 0; i < N; i++) f[i] = (float)i;
    cdl_copy_f32(N, f, g);
    assert_memory_equal(f, g, sizeof f);
    cdl_copy_f32(N, g, g);                         /* in place: no-op */
    assert_memory_equal(f, g, sizeof f);
    cdl_add_inplace_f32(N, f, g);
    for (int i = 0; i < N; i++) assert_true(g[i] == 2.0f * (float)i);
    cdl_axpy_f32(N, 0.5, f, g);
    for (int i = 0; i < N; i++) assert_true(g[i] == 2.5f * (float)i);
    cdl_scale_f32(N, 2.0, g);
    for (int i = 0; i < N; i++) assert_true(g[i] == 5.0f * (float)i);
    cdl_fill_f64(N, 1.0, d);
    cdl_scale_f64(N, -3.0, d);
    cdl_axpy_f64(N, 2.0, d, d);                    /* y += 2y, exactly aliased */
    assert_true(d[17] == -9.0);
    cdl_copy_f32(0, NULL, NULL);                   /* empty: touches nothing */
}

/* ------------------------------------------------------------------ binary */

static double ref_bin(int op, double u, double v) {
    switch (op) {
    case CDL_BIN_ADD: return u + v;
    case CDL_BIN_SUB: return u - v;
    case CDL_BIN_MUL: return u * v;
    case CDL_BIN_DIV: return u / v;
    case CDL_BIN_MAX: return u >= v ? u : v;
    default: return u <= v ? u : v;
    }
}

static void test_binary_same_and_scalar(void **st) {
    (void)st;
    double a[N], b[N], y[N];
    float af[N], bf[N], yf[N];
    fill_rand(a, N, -2, 2);
    fill_rand(b, N, 0.5, 2);
    to_f32(a, af, N);
    to_f32(b, bf, N);
    void (*named[6])(int64_t, const double *, const double *, double *) = {
        cdl_add_f64, cdl_sub_f64, cdl_mul_f64, cdl_div_f64, cdl_maximum_f64, cdl_minimum_f64};
    for (int op = CDL_BIN_ADD; op <= CDL_BIN_MIN; op++) {
        named[op](N, a, b, y);
        for (int i = 0; i < N; i++) assert_true(y[i] == ref_bin(op, a[i], b[i]));
        cdl_binary_f32(op, N, af, 1, bf, 1, yf);
        for (int i = 0; i < N; i++) assert_true(yf[i] == (float)ref_bin(op, af[i], bf[i]) ||
                                                fabs(yf[i] - ref_bin(op, af[i], bf[i])) < 1e-6);
        cdl_binary_f64(op, N, a, 1, b + 5, 0, y);    /* b scalar */
        for (int i = 0; i < N; i++) assert_true(y[i] == ref_bin(op, a[i], b[5]));
        cdl_binary_f64(op, N, a + 3, 0, b, 1, y);    /* a scalar */
        for (int i = 0; i < N; i++) assert_true(y[i] == ref_bin(op, a[3], b[i]));
        cdl_binary_f64(op, 10, a, 2, b, 3, y);       /* general strides */
        for (int i = 0; i < 10; i++) assert_true(y[i] == ref_bin(op, a[2 * i], b[3 * i]));
    }
    /* in place, y == a, and ties pick a */
    double c[4] = {1, 2, 3, 4}, e[4] = {1, 0, 3, 5};
    cdl_mul_f64(4, c, e, c);
    assert_true(c[0] == 1 && c[1] == 0 && c[3] == 20);
    double z0 = 0.0, zm = -0.0, r;
    cdl_maximum_f64(1, &z0, &zm, &r);
    assert_false(signbit(r));
    cdl_maximum_f64(1, &zm, &z0, &r);
    assert_true(signbit(r));
}

/* Naive broadcast: output dims od (rank r); a and b with their own shapes, aligned
 * to the right. */
static void ref_bcast(int op, int r, const int64_t *od, int ra, const int64_t *ad, const double *a, int rb,
                      const int64_t *bd, const double *b, double *y) {
    int64_t total = 1;
    for (int i = 0; i < r; i++) total *= od[i];
    for (int64_t o = 0; o < total; o++) {
        int64_t idx[6], rem = o;
        for (int i = r - 1; i >= 0; i--) { idx[i] = rem % od[i]; rem /= od[i]; }
        int64_t ia = 0, ib = 0;
        for (int i = 0; i < ra; i++) ia = ia * ad[i] + (ad[i] == 1 ? 0 : idx[i + r - ra]);
        for (int i = 0; i < rb; i++) ib = ib * bd[i] + (bd[i] == 1 ? 0 : idx[i + r - rb]);
        y[o] = ref_bin(op, a[ia], b[ib]);
    }
}

/* Element strides of a shape aligned to an output of rank r (0 on broadcast dims). */
static void strides_of(int r, int rsd, const int64_t *sd, int64_t *st) {
    int64_t sz = 1;
    for (int i = r - 1; i >= 0; i--) {
        int j = i - (r - rsd);
        st[i] = j < 0 || sd[j] == 1 ? 0 : sz;
        if (j >= 0) sz *= sd[j];
    }
}

static void check_bcast(int r, const int64_t *od, int ra, const int64_t *ad, int rb, const int64_t *bd) {
    static double a[4096], b[4096], y[4096], ref[4096];
    static float af[4096], bf[4096], yf[4096];
    int64_t na = 1, nb = 1, ny = 1;
    for (int i = 0; i < ra; i++) na *= ad[i];
    for (int i = 0; i < rb; i++) nb *= bd[i];
    for (int i = 0; i < r; i++) ny *= od[i];
    fill_rand(a, na, -2, 2);
    fill_rand(b, nb, 0.5, 2);
    to_f32(a, af, na);
    to_f32(b, bf, nb);
    int64_t sa[6], sb[6];
    strides_of(r, ra, ad, sa);
    strides_of(r, rb, bd, sb);
    for (int op = CDL_BIN_ADD; op <= CDL_BIN_MIN; op++) {
        ref_bcast(op, r, od, ra, ad, a, rb, bd, b, ref);
        cdl_binary_bc_f64(op, r, od, sa, sb, a, b, y);
        for (int64_t i = 0; i < ny; i++) assert_true(y[i] == ref[i]);
        cdl_binary_bc_f32(op, r, od, sa, sb, af, bf, yf);
        for (int64_t i = 0; i < ny; i++) assert_true(fabs(yf[i] - ref[i]) <= 1e-5 * (1 + fabs(ref[i])));
    }
}

static void test_binary_broadcast(void **st) {
    (void)st;
    { int64_t o[2] = {7, 5}, a[2] = {7, 5}, b[1] = {5};           check_bcast(2, o, 2, a, 1, b); }  /* row */
    { int64_t o[2] = {7, 5}, a[1] = {5}, b[2] = {7, 5};           check_bcast(2, o, 1, a, 2, b); }
    { int64_t o[2] = {6, 9}, a[2] = {6, 1}, b[2] = {1, 9};        check_bcast(2, o, 2, a, 2, b); }  /* outer */
    { int64_t o[2] = {6, 9}, a[2] = {6, 9}, b[2] = {6, 1};        check_bcast(2, o, 2, a, 2, b); }  /* column */
    { int64_t o[4] = {2, 3, 4, 5}, a[4] = {2, 3, 4, 5}, b[3] = {3, 1, 1}; check_bcast(4, o, 4, a, 3, b); } /* bias */
    { int64_t o[4] = {2, 3, 4, 5}, a[3] = {3, 1, 5}, b[4] = {2, 1, 4, 1}; check_bcast(4, o, 3, a, 4, b); }
    { int64_t o[6] = {2, 2, 3, 1, 2, 3}, a[6] = {2, 1, 3, 1, 2, 1}, b[5] = {2, 1, 1, 2, 3};
      check_bcast(6, o, 6, a, 5, b); }
    { int64_t o[1] = {1}, a[1] = {1}, b[1] = {1};                 check_bcast(1, o, 1, a, 1, b); }
    /* runtime batch: dims[0] smaller than the compiled one, strides unchanged */
    double a[4 * 3], b[3], y[4 * 3];
    fill_rand(a, 12, -1, 1);
    fill_rand(b, 3, -1, 1);
    for (int i = 0; i < 12; i++) y[i] = 99;
    cdl_binary_bc_f64(CDL_BIN_SUB, 2, (const int64_t[]){2, 3}, (const int64_t[]){3, 1},
                      (const int64_t[]){0, 1}, a, b, y);
    for (int i = 0; i < 6; i++) assert_true(y[i] == a[i] - b[i % 3]);
    assert_true(y[6] == 99);                       /* rows past the runtime batch untouched */
    /* rank 0 and an empty dim */
    cdl_binary_bc_f64(CDL_BIN_MUL, 0, NULL, NULL, NULL, a, b, y);
    assert_true(y[0] == a[0] * b[0]);
    y[0] = 5;
    cdl_binary_bc_f64(CDL_BIN_MUL, 2, (const int64_t[]){0, 3}, (const int64_t[]){3, 1},
                      (const int64_t[]){0, 1}, a, b, y);
    assert_true(y[0] == 5);
    /* in place over the bigger operand */
    double c[6] = {1, 2, 3, 4, 5, 6}, r3[3] = {10, 20, 30};
    cdl_binary_bc_f64(CDL_BIN_ADD, 2, (const int64_t[]){2, 3}, (const int64_t[]){3, 1},
                      (const int64_t[]){0, 1}, c, r3, c);
    assert_true(c[0] == 11 && c[4] == 25 && c[5] == 36);
}

/* maxmin_bwd against finite differences of sum(g * max(a, b)) with broadcasting. */
static void test_maxmin_bwd(void **st) {
    (void)st;
    enum { R = 4, C = 5 };
    double a[R * C], b[C], g[R * C], da[R * C], ref[R * C];
    const double h = 1e-6;
    for (int is_max = 0; is_max <= 1; is_max++) {
        fill_rand(b, C, -1, 1);
        for (int i = 0; i < R * C; i++) {                /* keep a away from ties */
            double v;
            do v = urand() * 2 - 1; while (fabs(v - b[i % C]) < 1e-3);
            a[i] = v;
        }
        fill_rand(g, R * C, -1, 1);
        const int64_t dims[2] = {R, C}, sa[2] = {C, 1}, sb[2] = {0, 1};
        cdl_maxmin_bwd_f64(is_max, 2, dims, sa, sb, g, a, b, da);
        int op = is_max ? CDL_BIN_MAX : CDL_BIN_MIN;
        for (int i = 0; i < R * C; i++) {
            double ap = a[i] + h, am = a[i] - h;
            ref[i] = g[i] * (ref_bin(op, ap, b[i % C]) - ref_bin(op, am, b[i % C])) / (2 * h);
            assert_true(fd_close(ref[i], da[i]));
        }
    }
    /* ties go to a; same-shape call with rank 1 */
    double x[3] = {1, 2, 3}, yv[3] = {1, 5, 0}, gg[3] = {1, 1, 1}, d[3];
    cdl_maxmin_bwd_f64(1, 1, (const int64_t[]){3}, (const int64_t[]){1}, (const int64_t[]){1}, gg, x, yv, d);
    assert_true(d[0] == 1 && d[1] == 0 && d[2] == 1);
    float xf[3] = {1, 2, 3}, yf[3] = {1, 5, 0}, gf[3] = {2, 2, 2}, df[3];
    cdl_maxmin_bwd_f32(0, 1, (const int64_t[]){3}, (const int64_t[]){1}, (const int64_t[]){1}, gf, xf, yf, df);
    assert_true(df[0] == 2 && df[1] == 2 && df[2] == 0);
}

/* ------------------------------------------------------------------ unary */

static double gelu_ref(double x) { return 0.5 * x * (1 + erf(x / sqrt(2.0))); }
static double softplus_ref(double x) { return log1p(exp(x)); }

static void test_unary_forward(void **st) {
    (void)st;
    double x[N], y[N];
    float xf[N], yf[N];
    fill_rand(x, N, -4, 4);
    to_f32(x, xf, N);
    struct { void (*f64)(int64_t, const double *, double *); void (*f32)(int64_t, const float *, float *);
             double (*ref)(double); int pos; } t[] = {
        {cdl_exp_f64, cdl_exp_f32, exp, 0}, {cdl_log_f64, cdl_log_f32, log, 1},
        {cdl_sqrt_f64, cdl_sqrt_f32, sqrt, 1}, {cdl_abs_f64, cdl_abs_f32, fabs, 0},
        {cdl_tanh_f64, cdl_tanh_f32, tanh, 0}, {cdl_gelu_f64, cdl_gelu_f32, gelu_ref, 0},
        {cdl_softplus_f64, cdl_softplus_f32, softplus_ref, 0},
    };
    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
        double in[N];
        for (int i = 0; i < N; i++) in[i] = t[k].pos ? fabs(x[i]) + 0.1 : x[i];
        float inf_[N];
        to_f32(in, inf_, N);
        t[k].f64(N, in, y);
        t[k].f32(N, inf_, yf);
        for (int i = 0; i < N; i++) {
            double r = t[k].ref(in[i]);
            assert_true(fabs(y[i] - r) <= 1e-14 * (1 + fabs(r)));
            assert_true(fabs(yf[i] - t[k].ref(inf_[i])) <= 1e-6 * (1 + fabs(r)));
        }
    }
    cdl_neg_f64(N, x, y);
    cdl_square_f32(N, xf, yf);
    for (int i = 0; i < N; i++) assert_true(y[i] == -x[i] && yf[i] == xf[i] * xf[i]);
    cdl_relu_f64(N, x, y);
    for (int i = 0; i < N; i++) assert_true(y[i] == (x[i] > 0 ? x[i] : 0));
    cdl_sigmoid_f64(N, x, y);
    for (int i = 0; i < N; i++) assert_true(fabs(y[i] - 1 / (1 + exp(-x[i]))) < 1e-15);
    cdl_leaky_relu_f64(N, 0.1, x, y);
    for (int i = 0; i < N; i++) assert_true(y[i] == (x[i] > 0 ? x[i] : 0.1 * x[i]));
    cdl_elu_f64(N, 1.5, x, y);
    for (int i = 0; i < N; i++) assert_true(fabs(y[i] - (x[i] > 0 ? x[i] : 1.5 * (exp(x[i]) - 1))) < 1e-15);
    cdl_clamp_f64(N, -1, 0.5, x, y);
    for (int i = 0; i < N; i++) assert_true(y[i] == fmin(fmax(x[i], -1), 0.5));
    cdl_clamp_f32(N, -1e308, 0.5, xf, yf);         /* no lower bound */
    for (int i = 0; i < N; i++) assert_true(yf[i] == fminf(xf[i], 0.5f));
    /* pow: special-cased and general exponents */
    const double ps[] = {2, 1, 0.5, 0, -1, 3, 1.7, -2.5};
    double xp[N];
    for (int i = 0; i < N; i++) xp[i] = fabs(x[i]) + 0.2;
    for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++) {
        cdl_pows_f64(N, ps[k], xp, y);
        for (int i = 0; i < N; i++) assert_true(fabs(y[i] - pow(xp[i], ps[k])) <= 1e-14 * (1 + fabs(y[i])));
    }
    /* extremes stay finite where they should */
    double big[4] = {-800, 800, -40, 40}, o[4];
    cdl_softplus_f64(4, big, o);
    assert_true(o[0] == 0 || o[0] < 1e-300);
    assert_true(o[1] == 800 && fabs(o[3] - 40) < 1e-15);
    cdl_sigmoid_f64(4, big, o);
    assert_true(o[0] == 0 && o[1] == 1);
    /* in place */
    double ip[3] = {-1, 2, -3};
    cdl_relu_f64(3, ip, ip);
    assert_true(ip[0] == 0 && ip[1] == 2 && ip[2] == 0);
}

/* ------------------------------------------------------------------ backward by finite differences */

typedef void (*fwd_fn)(int64_t, const double *, double *);
static double p_slope = 0.2, p_alpha = 1.3, p_lo = -0.7, p_hi = 0.9;
static void leaky_fwd(int64_t n, const double *x, double *y) { cdl_leaky_relu_f64(n, p_slope, x, y); }
static void elu_fwd(int64_t n, const double *x, double *y) { cdl_elu_f64(n, p_alpha, x, y); }
static void clamp_fwd(int64_t n, const double *x, double *y) { cdl_clamp_f64(n, p_lo, p_hi, x, y); }

/* Check dx from a backward kernel against g * (f(x+h) - f(x-h)) / 2h. */
static void check_fd(fwd_fn f, const double *x, const double *g, const double *dx, int n) {
    const double h = 1e-6;
    for (int i = 0; i < n; i++) {
        double xp = x[i] + h, xm = x[i] - h, yp, ym;
        f(1, &xp, &yp);
        f(1, &xm, &ym);
        double num = g[i] * (yp - ym) / (2 * h);
        if (!fd_close(num, dx[i])) fail_msg("x=%g num=%.12g ana=%.12g", x[i], num, dx[i]);
    }
}

static void test_unary_backward(void **st) {
    (void)st;
    enum { M = 64 };
    double x[M], y[M], g[M], dx[M];
    const double k0[1] = {0}, kc[2] = {-0.7, 0.9};
    fill_rand(g, M, -2, 2);

    for (int i = 0; i < M; i++) x[i] = away(-3, 3, k0, 1, 1e-3);
    cdl_relu_bwd_f64(M, g, x, dx);           check_fd(cdl_relu_f64, x, g, dx, M);
    cdl_leaky_relu_bwd_f64(M, p_slope, g, x, dx); check_fd(leaky_fwd, x, g, dx, M);
    cdl_gelu_bwd_f64(M, g, x, dx);           check_fd(cdl_gelu_f64, x, g, dx, M);
    cdl_elu_bwd_f64(M, p_alpha, g, x, dx);   check_fd(elu_fwd, x, g, dx, M);
    cdl_sigmoid_f64(M, x, y);
    cdl_sigmoid_bwd_f64(M, g, y, dx);        check_fd(cdl_sigmoid_f64, x, g, dx, M);
    cdl_tanh_f64(M, x, y);
    cdl_tanh_bwd_f64(M, g, y, dx);           check_fd(cdl_tanh_f64, x, g, dx, M);
    for (int i = 0; i < M; i++) x[i] = away(-2, 2, kc, 2, 1e-3);
    cdl_clamp_bwd_f64(M, p_lo, p_hi, g, x, dx); check_fd(clamp_fwd, x, g, dx, M);
    /* clamp's bounds are inclusive */
    double xb[2] = {-0.7, 0.9}, gb[2] = {1, 1}, db[2];
    cdl_clamp_bwd_f64(2, p_lo, p_hi, gb, xb, db);
    assert_true(db[0] == 1 && db[1] == 1);
    /* f32 agrees with f64 */
    float xf[M], gf[M], df[M];
    to_f32(x, xf, M);
    to_f32(g, gf, M);
    cdl_gelu_bwd_f32(M, gf, xf, df);
    cdl_gelu_bwd_f64(M, g, x, dx);
    for (int i = 0; i < M; i++) assert_true(fabs(df[i] - dx[i]) < 1e-5 * (1 + fabs(dx[i])));
    /* in place: dx == g */
    double gg[3] = {1, 2, 3}, xx[3] = {-1, 1, 1};
    cdl_relu_bwd_f64(3, gg, xx, gg);
    assert_true(gg[0] == 0 && gg[1] == 2 && gg[2] == 3);
}

/* ------------------------------------------------------------------ sin, cos, erf, log1p, sign, gelu_tanh */

static double gelu_tanh_ref(double x) { return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }
static double sign_ref(double x) { return x > 0 ? 1 : x < 0 ? -1 : 0; }
static double log1p_shift(double x) { return log1p(x); }

static void test_unary_issue13(void **st) {
    (void)st;
    enum { M = 64 };
    double x[N], y[N], g[M], dx[M];
    float xf[N], yf[N];
    fill_rand(x, N, -3, 3);
    x[7] = 0;
    to_f32(x, xf, N);
    struct { void (*f64)(int64_t, const double *, double *); void (*f32)(int64_t, const float *, float *);
             double (*ref)(double); int pos; } t[] = {
        {cdl_sin_f64, cdl_sin_f32, sin, 0}, {cdl_cos_f64, cdl_cos_f32, cos, 0},
        {cdl_erf_f64, cdl_erf_f32, erf, 0}, {cdl_log1p_f64, cdl_log1p_f32, log1p_shift, 1},
        {cdl_sign_f64, cdl_sign_f32, sign_ref, 0}, {cdl_gelu_tanh_f64, cdl_gelu_tanh_f32, gelu_tanh_ref, 0},
    };
    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
        double in[N];
        float inf_[N];
        for (int i = 0; i < N; i++) in[i] = t[k].pos ? fabs(x[i]) - 0.9 : x[i];   /* log1p on (-0.9, 2.1) */
        to_f32(in, inf_, N);
        t[k].f64(N, in, y);
        t[k].f32(N, inf_, yf);
        for (int i = 0; i < N; i++) {
            double r = t[k].ref(in[i]);
            if (!(fabs(y[i] - r) <= 1e-14 * (1 + fabs(r)))) fail_msg("op %zu x=%g: %.17g vs %.17g", k, in[i], y[i], r);
            assert_true(fabs(yf[i] - t[k].ref(inf_[i])) <= 1e-6 * (1 + fabs(r)));
        }
    }
    /* sign: NaN stays NaN, -0 and 0 give 0, +-inf give +-1 (not NaN, as inf * 0 would) */
    double sp[5] = {NAN, -0.0, 0.0, INFINITY, -INFINITY}, so[5];
    float spf[5] = {NAN, -0.0f, 0.0f, INFINITY, -INFINITY}, sof[5];
    cdl_sign_f64(5, sp, so);
    cdl_sign_f32(5, spf, sof);
    assert_true(isnan(so[0]) && so[1] == 0 && so[2] == 0 && so[3] == 1 && so[4] == -1);
    assert_true(isnan(sof[0]) && sof[1] == 0 && sof[2] == 0 && sof[3] == 1 && sof[4] == -1);
    /* backward by finite differences */
    fill_rand(g, M, -2, 2);
    fill_rand(x, M, -3, 3);
    cdl_sin_bwd_f64(M, g, x, dx);        check_fd(cdl_sin_f64, x, g, dx, M);
    cdl_cos_bwd_f64(M, g, x, dx);        check_fd(cdl_cos_f64, x, g, dx, M);
    cdl_erf_bwd_f64(M, g, x, dx);        check_fd(cdl_erf_f64, x, g, dx, M);
    cdl_gelu_tanh_bwd_f64(M, g, x, dx);  check_fd(cdl_gelu_tanh_f64, x, g, dx, M);
    for (int i = 0; i < M; i++) x[i] = fabs(x[i]) - 0.9;
    cdl_log1p_bwd_f64(M, g, x, dx);      check_fd(cdl_log1p_f64, x, g, dx, M);
}

/* ------------------------------------------------------------------ erf and GELU through libmvec */

/* GELU, its backward and erf run through the vector erff/erf (kernels_ew_t.h, vmath.h),
 * a few ulp from the scalar ones: an element's value must not depend on the call's
 * length, on the offset of the slice it falls in (a thread split) or on the output
 * aliasing the input, or code that cuts a tensor differently would disagree.  Accuracy:
 * within a few ulp of the double reference, on the scale 1 + |r|: 1 + erf loses digits
 * for negative x, and the vector erff reaches -1 at x = -3.65 (the scalar at -3.92), so
 * f32 GELU is 0 below x = -5.17 where the exact value is above -6.2e-7. */
#define ERF_SAME(T, SFX, EPS)                                                                   \
    static void erf_same_##SFX(void) {                                                          \
        enum { EB = 203 };                                                                      \
        T x[EB], g[EB], y[EB], d[EB], e[EB], t[EB];                                             \
        for (int i = 0; i < EB; i++) { x[i] = (T)(urand() * 12 - 6); g[i] = (T)(urand() * 4 - 2); } \
        x[0] = 0; x[1] = (T)-0.0; x[2] = (T)NAN; x[3] = (T)INFINITY; x[4] = 40; x[5] = -40;     \
        cdl_gelu_##SFX(EB, x, y);                                                               \
        cdl_gelu_bwd_##SFX(EB, g, x, d);                                                        \
        cdl_erf_##SFX(EB, x, e);                                                                \
        const int cut[][2] = {{0, 1}, {1, 7}, {3, 64}, {5, 65}, {17, 130}, {100, 103}, {130, 73}}; \
        for (size_t k = 0; k < sizeof cut / sizeof cut[0]; k++) {                               \
            int o = cut[k][0], n = cut[k][1];                                                   \
            cdl_gelu_##SFX(n, x + o, t);                                                        \
            assert_memory_equal(t, y + o, (size_t)n * sizeof(T));                               \
            cdl_gelu_bwd_##SFX(n, g + o, x + o, t);                                             \
            assert_memory_equal(t, d + o, (size_t)n * sizeof(T));                               \
            cdl_erf_##SFX(n, x + o, t);                                                         \
            assert_memory_equal(t, e + o, (size_t)n * sizeof(T));                               \
        }                                                                                       \
        memcpy(t, x, sizeof t); cdl_gelu_##SFX(EB, t, t); assert_memory_equal(t, y, sizeof t);  \
        memcpy(t, x, sizeof t); cdl_erf_##SFX(EB, t, t); assert_memory_equal(t, e, sizeof t);   \
        memcpy(t, g, sizeof t); cdl_gelu_bwd_##SFX(EB, t, x, t); assert_memory_equal(t, d, sizeof t); \
        assert_true(y[0] == 0 && y[1] == 0 && isnan(y[2]) && isnan(e[2]) && isnan(d[2]));       \
        assert_true(y[3] == (T)INFINITY && y[4] == 40 && y[5] == 0 && e[4] == 1 && e[5] == -1); \
        assert_true(d[0] == (T)0.5 * g[0] && d[4] == g[4] && d[5] == 0);                        \
        for (int i = 6; i < EB; i++) {                                                          \
            double v = (double)x[i], r = gelu_ref(v), gi = (double)g[i];                        \
            double dr = gi * (0.5 * (1 + erf(v / sqrt(2.0))) + v * exp(-0.5 * v * v) / sqrt(2 * M_PI)); \
            assert_true(fabs((double)y[i] - r) <= 8 * EPS * (1 + fabs(r)));                     \
            assert_true(fabs((double)d[i] - dr) <= 8 * EPS * (1 + fabs(dr)));                   \
            assert_true(fabs((double)e[i] - erf(v)) <= 4 * EPS);                                \
        }                                                                                       \
    }
ERF_SAME(float, f32, FLT_EPSILON)
ERF_SAME(double, f64, DBL_EPSILON)

/* gelu_keep / gelu_bwd_kept (the static code's gelu keeping its derivative): y is
 * gelu's and g d is gelu_bwd's to the bit, for any length and offset, in place (y = x,
 * dx = g), so static code (kept) and the tape (recomputed) agree bitwise. */
#define GELU_KEEP_SAME(T, SFX)                                                                  \
    static void gelu_keep_same_##SFX(void) {                                                    \
        enum { EB = 203 };                                                                      \
        T x[EB], g[EB], y[EB], d[EB], k[EB], t[EB], u[EB];                                      \
        for (int i = 0; i < EB; i++) { x[i] = (T)(urand() * 12 - 6); g[i] = (T)(urand() * 4 - 2); } \
        x[0] = 0; x[1] = (T)-0.0; x[2] = (T)NAN; x[3] = (T)INFINITY; x[4] = 40; x[5] = -40;     \
        cdl_gelu_##SFX(EB, x, y);                                                               \
        cdl_gelu_bwd_##SFX(EB, g, x, d);                                                        \
        const int cut[][2] = {{0, EB}, {0, 1}, {1, 7}, {3, 64}, {5, 65}, {17, 130}, {130, 73}}; \
        for (size_t c = 0; c < sizeof cut / sizeof cut[0]; c++) {                               \
            int o = cut[c][0], n = cut[c][1];                                                   \
            cdl_gelu_keep_##SFX(n, x + o, t, k);                                                \
            assert_memory_equal(t, y + o, (size_t)n * sizeof(T));                               \
            cdl_gelu_bwd_kept_##SFX(n, g + o, k, u);                                            \
            assert_memory_equal(u, d + o, (size_t)n * sizeof(T));                               \
        }                                                                                       \
        memcpy(t, x, sizeof t); cdl_gelu_keep_##SFX(EB, t, t, k); assert_memory_equal(t, y, sizeof t); \
        memcpy(t, g, sizeof t); cdl_gelu_bwd_kept_##SFX(EB, t, k, t); assert_memory_equal(t, d, sizeof t); \
    }
GELU_KEEP_SAME(float, f32)
GELU_KEEP_SAME(double, f64)

static void test_gelu_keep(void **st) {
    (void)st;
    gelu_keep_same_f32();
    gelu_keep_same_f64();
}

static void test_erf_gelu_blocks(void **st) {
    (void)st;
    erf_same_f32();
    erf_same_f64();
}

/* Comparisons give 1/0 masks, also broadcast; NaN compares false except with !=. */
static void test_comparisons(void **st) {
    (void)st;
    double a[N], b[N], y[N];
    float af[N], bf[N], yf[N];
    fill_rand(a, N, -2, 2);
    fill_rand(b, N, -2, 2);
    for (int i = 0; i < N; i += 5) b[i] = a[i];     /* ties */
    to_f32(a, af, N);
    to_f32(b, bf, N);
    for (int op = CDL_BIN_LT; op <= CDL_BIN_NE; op++) {
        cdl_binary_f64(op, N, a, 1, b, 1, y);
        cdl_binary_f32(op, N, af, 1, bf, 1, yf);
        for (int i = 0; i < N; i++) {
            double u = a[i], v = b[i];
            int want = op == CDL_BIN_LT ? u < v : op == CDL_BIN_LE ? u <= v : op == CDL_BIN_GT ? u > v
                     : op == CDL_BIN_GE ? u >= v : op == CDL_BIN_EQ ? u == v : u != v;
            assert_true(y[i] == want && yf[i] == want);
        }
    }
    /* [2, 3] > [3] broadcast; NaN */
    int64_t dims[2] = {2, 3}, sa[2] = {3, 1}, sb[2] = {0, 1};
    double m[6] = {0, 1, 2, 3, 4, NAN}, r[3] = {1, 1, 1}, o[6];
    cdl_binary_bc_f64(CDL_BIN_GT, 2, dims, sa, sb, m, r, o);
    assert_true(o[0] == 0 && o[1] == 0 && o[2] == 1 && o[3] == 1 && o[4] == 1 && o[5] == 0);
    cdl_binary_bc_f64(CDL_BIN_NE, 2, dims, sa, sb, m, r, o);
    assert_true(o[1] == 0 && o[5] == 1);
}

/* ------------------------------------------------------------------ dropout */

static void test_dropout(void **st) {
    (void)st;
    enum { M = 10000 };
    static float x[M], y[M], y2[M], g[M], dx[M];
    static double xd[M], yd[M];
    for (int i = 0; i < M; i++) { x[i] = 1.0f + (float)(i % 7); xd[i] = x[i]; g[i] = 2.0f; }
    cdl_rng_key k = {.seed = 42, .step = 3, .stream = 5};
    const double p = 0.3;
    cdl_dropout_f32(k, 0, M, p, x, y);
    int kept = 0;
    for (int i = 0; i < M; i++) {
        if (y[i] != 0) {
            kept++;
            assert_true(fabs(y[i] - x[i] / 0.7f) < 1e-5f * y[i]);
        }
    }
    assert_true(kept > 6700 && kept < 7300);        /* ~ (1 - p) M, 10+ sigma margin */
    /* same key: same mask; the backward applies it to g */
    cdl_dropout_f32(k, 0, M, p, x, y2);
    assert_memory_equal(y, y2, sizeof y);
    cdl_dropout_bwd_f32(k, 0, M, p, g, dx);
    for (int i = 0; i < M; i++) assert_true((dx[i] != 0) == (y[i] != 0));
    for (int i = 0; i < M; i++) if (dx[i] != 0) assert_true(fabs(dx[i] - 2.0f / 0.7f) < 1e-5f);
    /* f64: the same mask as f32 */
    cdl_dropout_f64(k, 0, M, p, xd, yd);
    for (int i = 0; i < M; i++) assert_true((yd[i] != 0) == (y[i] != 0));
    /* element i depends on base + i only (chunking and offsets do not matter) */
    cdl_dropout_f32(k, 300, M - 300, p, x + 300, y2);
    for (int i = 0; i < M - 300; i++) assert_true((y2[i] != 0) == (y[i + 300] != 0));
    /* another stream or step: another mask */
    cdl_rng_key k2 = k;
    k2.stream = 6;
    cdl_dropout_f32(k2, 0, M, p, x, y2);
    int same = 0;
    for (int i = 0; i < M; i++) same += (y2[i] != 0) == (y[i] != 0);
    assert_true(same < M - 1000);
    /* p = 0 copies, p = 1 zeros */
    cdl_dropout_f32(k, 0, M, 0.0, x, y2);
    assert_memory_equal(x, y2, sizeof x);
    cdl_dropout_f32(k, 0, M, 1.0, x, y2);
    for (int i = 0; i < M; i++) assert_true(y2[i] == 0);
}

/* Dropout's words are Philox-4x32-10 as kernels_ew.c's comment says, whichever
 * version of ew_drop_bits the build takes (AVX-512 or scalar): element e keeps iff
 * word e % 4 of counter (e / 4 lo, e / 4 hi, s0, s1) under key (k0, k1) is >= p 2^32,
 * where (k0, k1, s0, s1) = cdl_philox(k, 2^64 - 1).  Bases off a multiple of 4 and of
 * 64, a counter above 2^32 (its high word used), lengths that end mid-block. */
void cdl_philox_raw(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
static void test_dropout_words(void **st) {
    (void)st;
    enum { M = 1003 };
    static float x[M], y[M];
    static uint8_t keep[M + 1];
    for (int i = 0; i < M; i++) x[i] = 1.0f;
    const double p = 0.37;
    const uint32_t thr = (uint32_t)(p * 4294967296.0);
    cdl_rng_key keys[2] = {{.seed = 42, .step = 3, .stream = 5}, {.seed = 7, .step = 123456789, .stream = 0xD0}};
    const uint64_t bases[4] = {0, 5, 4 * 61 + 2, (uint64_t)1 << 35 | 7};
    const int64_t lens[3] = {M, 1, 67};
    for (int ki = 0; ki < 2; ki++) {
        uint32_t w[4];
        cdl_philox(keys[ki], UINT64_MAX, w);
        const uint32_t key[2] = {w[0], w[1]};
        for (int bi = 0; bi < 4; bi++)
            for (int li = 0; li < 3; li++) {
                uint64_t base = bases[bi];
                int64_t n = lens[li];
                memset(keep, 7, sizeof keep);
                cdl_dropout_keep_f32(keys[ki], base, n, p, x, y, keep);
                for (int64_t i = 0; i < n; i++) {
                    uint64_t e = base + (uint64_t)i, c = e / 4;
                    const uint32_t ctr[4] = {(uint32_t)c, (uint32_t)(c >> 32), w[2], w[3]};
                    uint32_t out[4];
                    cdl_philox_raw(ctr, key, out);
                    int k = out[e % 4] >= thr;
                    assert_int_equal(keep[i], k);
                    assert_true(y[i] == (k ? (float)(1.0 / (1.0 - p)) : 0.0f));
                }
                assert_int_equal(keep[n], 7);           /* nothing written past n */
            }
    }
}

/* Large relu, relu_bwd and binary calls run on the pool (kernels_ew.c, ew_run): the
 * same bits for 1 to 5 threads, in place too, and the values of a plain loop.  An odd
 * size, so the last range is not a multiple of the 16-element cut. */
static void test_ew_threads(void **state) {
    (void)state;
    const int64_t n = 300007;
    float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
    float *y[4], *ref[4];
    for (int k = 0; k < 4; k++) {
        y[k] = malloc(sizeof(float) * (size_t)n);
        ref[k] = malloc(sizeof(float) * (size_t)n);
    }
    for (int64_t i = 0; i < n; i++) a[i] = (float)((i * 7919) % 2003) / 1001.0f - 1.0f, b[i] = (float)(i % 17) - 8.5f;
    for (int t = 1; t <= 5; t++) {
        cdl_parallel_set_threads(t);
        cdl_relu_f32(n, a, y[0]);
        cdl_relu_bwd_f32(n, b, a, y[1]);
        cdl_add_f32(n, a, b, y[2]);
        cdl_binary_f32(CDL_BIN_MUL, n, a, 1, b + 3, 0, y[3]);
        if (t == 1) {
            for (int k = 0; k < 4; k++) memcpy(ref[k], y[k], sizeof(float) * (size_t)n);
            for (int64_t i = 0; i < n; i++) {
                assert_true(ref[0][i] == (a[i] > 0 ? a[i] : 0));
                assert_true(ref[1][i] == (a[i] > 0 ? b[i] : 0));
                assert_true(ref[2][i] == a[i] + b[i]);
                assert_true(ref[3][i] == a[i] * b[3]);
            }
            continue;
        }
        for (int k = 0; k < 4; k++) assert_memory_equal(y[k], ref[k], sizeof(float) * (size_t)n);
        memcpy(y[2], a, sizeof(float) * (size_t)n); /* in place: y = y + b */
        cdl_add_f32(n, y[2], b, y[2]);
        assert_memory_equal(y[2], ref[2], sizeof(float) * (size_t)n);
    }
    cdl_parallel_set_threads(1);
    for (int k = 0; k < 4; k++) free(y[k]), free(ref[k]);
    free(a), free(b);
}

int main(void) {
    urand_seed(88172645463325252ull);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basics),
        cmocka_unit_test(test_ew_threads),
        cmocka_unit_test(test_dropout_words),
        cmocka_unit_test(test_binary_same_and_scalar),
        cmocka_unit_test(test_binary_broadcast),
        cmocka_unit_test(test_maxmin_bwd),
        cmocka_unit_test(test_unary_forward),
        cmocka_unit_test(test_unary_backward),
        cmocka_unit_test(test_unary_issue13),
        cmocka_unit_test(test_erf_gelu_blocks),
        cmocka_unit_test(test_gelu_keep),
        cmocka_unit_test(test_comparisons),
        cmocka_unit_test(test_dropout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
