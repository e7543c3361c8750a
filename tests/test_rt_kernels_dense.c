/* test_rt_kernels_dense.c -- dense kernels (kernels_dense.c, blas.c) against naive
 * references; backward kernels against central finite differences in f64. */
#define _GNU_SOURCE /* RTLD_NOLOAD */
#include <dlfcn.h>

#include "test_rt_util.h"

/* ---- helpers ------------------------------------------------------------------- */

static uint64_t rng_state = 88172645463325252ull;
/* xorshift64*, uniform in [-1, 1) */
static double urand_pm1(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 4503599627370496.0 - 1.0;
}
static void fill_d(double *p, int64_t n) { for (int64_t i = 0; i < n; i++) p[i] = urand_pm1(); }
static void fill_f(float *p, int64_t n) { for (int64_t i = 0; i < n; i++) p[i] = (float)urand_pm1(); }

static void assert_close_d(const double *a, const double *b, int64_t n, double tol) {
    for (int64_t i = 0; i < n; i++) {
        if (!(fabs(a[i] - b[i]) <= tol * (1 + fabs(b[i])))) {
            print_error("element %lld: %.17g vs %.17g\n", (long long)i, a[i], b[i]);
            fail();
        }
    }
}
static void assert_close_f(const float *a, const double *b, int64_t n, double tol) {
    for (int64_t i = 0; i < n; i++) {
        if (!(fabs((double)a[i] - b[i]) <= tol * (1 + fabs(b[i])))) {
            print_error("element %lld: %.9g vs %.9g\n", (long long)i, (double)a[i], b[i]);
            fail();
        }
    }
}

/* Gradient check of a backward kernel.  f maps x[nx] -> y[ny] (ctx carries the rest);
 * the scalar is L = sum_i w_i y_i with fixed random w, so dL/dy = w and the analytic
 * gradient ana[nx] (computed by the caller from g = w) must match central differences.
 * Tolerance: |num - ana| <= 1e-5 + 1e-3 |num|. */
typedef void (*fwd_fn)(void *ctx, const double *x, double *y);
static void check_fd(fwd_fn f, void *ctx, double *x, int64_t nx, int64_t ny,
                     const double *w, const double *ana) {
    double *y = calloc((size_t)ny, sizeof *y);
    const double h = 1e-6;
    for (int64_t i = 0; i < nx; i++) {
        double keep = x[i], lp = 0, lm = 0;
        x[i] = keep + h;
        f(ctx, x, y);
        for (int64_t j = 0; j < ny; j++) lp += w[j] * y[j];
        x[i] = keep - h;
        f(ctx, x, y);
        for (int64_t j = 0; j < ny; j++) lm += w[j] * y[j];
        x[i] = keep;
        double num = (lp - lm) / (2 * h);
        if (!(fabs(num - ana[i]) <= 1e-5 + 1e-3 * fabs(num))) {
            print_error("grad %lld: numeric %.10g analytic %.10g\n", (long long)i, num, ana[i]);
            free(y);
            fail();
        }
    }
    free(y);
}

/* ---- gemm, linear -------------------------------------------------------------- */

/* naive C = alpha op(A) op(B) + beta C with the same storage conventions */
static void ref_gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, double alpha,
                     const double *A, int64_t lda, const double *B, int64_t ldb, double beta,
                     double *C, int64_t ldc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) {
                double a = ta ? A[k * lda + i] : A[i * lda + k];
                double b = tb ? B[j * ldb + k] : B[k * ldb + j];
                s += a * b;
            }
            C[i * ldc + j] = alpha * s + (beta == 0 ? 0 : beta * C[i * ldc + j]);
        }
}

static void test_gemm_all_transposes(void **state) {
    (void)state;
    const int64_t M = 7, N = 5, K = 9, pad = 3;   /* padded rows: ld > logical width */
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
            int64_t na = (ta ? K : M) * lda, nb = (tb ? N : K) * ldb, nc = M * ldc;
            double *A = malloc(sizeof(double) * na), *B = malloc(sizeof(double) * nb);
            double *C = malloc(sizeof(double) * nc), *R = malloc(sizeof(double) * nc);
            float *Af = malloc(sizeof(float) * na), *Bf = malloc(sizeof(float) * nb);
            float *Cf = malloc(sizeof(float) * nc);
            fill_d(A, na); fill_d(B, nb); fill_d(C, nc);
            for (int64_t i = 0; i < na; i++) Af[i] = (float)A[i];
            for (int64_t i = 0; i < nb; i++) Bf[i] = (float)B[i];
            for (int64_t i = 0; i < nc; i++) Cf[i] = (float)C[i];
            memcpy(R, C, sizeof(double) * nc);
            ref_gemm(ta, tb, M, N, K, 0.5, A, lda, B, ldb, 2.0, R, ldc);
            cdl_gemm_f64(ta, tb, M, N, K, 0.5, A, lda, B, ldb, 2.0, C, ldc);
            cdl_gemm_f32(ta, tb, M, N, K, 0.5f, Af, lda, Bf, ldb, 2.0f, Cf, ldc);
            for (int64_t i = 0; i < M; i++) {
                assert_close_d(C + i * ldc, R + i * ldc, N, 1e-12);
                assert_close_f(Cf + i * ldc, R + i * ldc, N, 1e-5);
            }
            free(A); free(B); free(C); free(R); free(Af); free(Bf); free(Cf);
        }
}

static void test_gemm_edge_cases(void **state) {
    (void)state;
    double C[6], A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, 0, 0, 1, 1, 1};
    /* K = 0: C = beta C; beta = 0 clears even NaN */
    for (int i = 0; i < 6; i++) C[i] = i;
    cdl_gemm_f64(0, 0, 2, 3, 0, 1, A, 1, B, 3, 3, C, 3);
    for (int i = 0; i < 6; i++) assert_true(C[i] == 3.0 * i);
    for (int i = 0; i < 6; i++) C[i] = NAN;
    cdl_gemm_f64(0, 0, 2, 3, 2, 1, A, 2, B, 3, 0, C, 3);
    /* A = [[1,2],[3,4]] (lda 2), B = [[1,0,0],[1,1,1]] */
    const double want[6] = {3, 2, 2, 7, 4, 4};
    assert_close_d(C, want, 6, 1e-15);
    /* M = 0 touches nothing */
    C[0] = 42;
    cdl_gemm_f64(0, 0, 0, 3, 2, 1, A, 2, B, 3, 0, C, 3);
    assert_true(C[0] == 42);
}

/* At 2 threads a product of at least 2^23 multiply-adds is cut into blocks of C run
 * on the runtime's pool, each one single-threaded library call (blas.c): the
 * libraries' own threads stay at one (they would spin against the pool), and the
 * result is the one-thread product's, to the bit, for every transpose pair, for
 * column blocks (wide C) and row blocks (narrow C), with beta != 0 and C a block of a
 * wider matrix.  Both types: f32 goes to oneDNN in a oneDNN build. */
int omp_get_max_threads(void) __attribute__((weak)); /* libgomp's: oneDNN builds only */

/* OpenBLAS's thread count, or -1 when it is not loaded (a oneDNN runtime loads it at
 * its first f64 or small product: runtime/blas.c). */
static int openblas_threads(void) {
    void *h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_NOLOAD);
    if (!h) return -1;
    int (*get)(void);
    *(void **)&get = dlsym(h, "openblas_get_num_threads");
    int n = get ? get() : -2;
    dlclose(h);
    return n;
}

#define GEMM_SPLIT_CHECK(T, S)                                                          \
    static void gemm_split_check_##S(int64_t M, int64_t N, int64_t K) {                 \
        int64_t ldc = N + 3;                                                            \
        T *A = malloc(sizeof(T) * M * K), *B = malloc(sizeof(T) * K * N);               \
        T *C1 = malloc(sizeof(T) * M * ldc), *C2 = malloc(sizeof(T) * M * ldc);         \
        uint32_t r = 12345;                                                             \
        for (int64_t i = 0; i < M * K; i++) A[i] = (T)((r = r * 1664525u + 1013904223u) >> 8) / (T)(1 << 24) - (T)0.5; \
        for (int64_t i = 0; i < K * N; i++) B[i] = (T)((r = r * 1664525u + 1013904223u) >> 8) / (T)(1 << 24) - (T)0.5; \
        for (int tA = 0; tA < 2; tA++)                                                  \
            for (int tB = 0; tB < 2; tB++) {                                            \
                for (int64_t i = 0; i < M * ldc; i++) C1[i] = C2[i] = (T)(i % 7) - 3;   \
                cdl_blas_set_threads(1);                                                \
                cdl_gemm_##S(tA, tB, M, N, K, (T)0.75, A, tA ? M : K, B, tB ? K : N, (T)0.5, C1, ldc); \
                cdl_blas_set_threads(2);                                                \
                cdl_gemm_##S(tA, tB, M, N, K, (T)0.75, A, tA ? M : K, B, tB ? K : N, (T)0.5, C2, ldc); \
                assert_memory_equal(C1, C2, sizeof(T) * M * ldc);                       \
                /* spot-check against the definition */                                 \
                for (int64_t i = 0; i < M; i += M / 5 + 1)                              \
                    for (int64_t j = 0; j < N; j += N / 5 + 1) {                        \
                        double want = 0.5 * (double)((i * ldc + j) % 7 - 3);            \
                        for (int64_t k = 0; k < K; k++)                                 \
                            want += 0.75 * (double)(tA ? A[k * M + i] : A[i * K + k]) * \
                                    (double)(tB ? B[j * K + k] : B[k * N + j]);         \
                        assert_true(fabs((double)C2[i * ldc + j] - want) < 1e-3);       \
                    }                                                                   \
            }                                                                           \
        /* a oneDNN runtime need not have loaded OpenBLAS for f32 products */          \
        if (sizeof(T) == 8 || strcmp(cdl_backend(), "onednn"))                          \
            assert_int_equal(openblas_threads(), 1);                                    \
        else                                                                            \
            assert_true(openblas_threads() == 1 || openblas_threads() == -1);           \
        if (omp_get_max_threads) assert_int_equal(omp_get_max_threads(), 1);            \
        free(A), free(B), free(C1), free(C2);                                           \
    }
GEMM_SPLIT_CHECK(float, f32)
GEMM_SPLIT_CHECK(double, f64)

static void test_gemm_split_over_pool(void **state) {
    (void)state;
    gemm_split_check_f32(64, 784, 256);  /* the MLP's first layer: column blocks */
    gemm_split_check_f32(200, 24, 2048); /* narrow C: row blocks */
    gemm_split_check_f64(64, 300, 512);
    gemm_split_check_f64(300, 20, 1500);
    cdl_blas_set_threads(1);
}

static void test_linear(void **state) {
    (void)state;
    const int64_t rows = 6, in = 11, out = 4;
    double x[66], w[44], b[4], y[24], r[24];
    float xf[66], wf[44], bf[4], yf[24];
    fill_d(x, 66); fill_d(w, 44); fill_d(b, 4);
    for (int i = 0; i < 66; i++) xf[i] = (float)x[i];
    for (int i = 0; i < 44; i++) wf[i] = (float)w[i];
    for (int i = 0; i < 4; i++) bf[i] = (float)b[i];
    for (int withb = 0; withb < 2; withb++) {
        for (int64_t i = 0; i < rows; i++)
            for (int64_t o = 0; o < out; o++) {
                double s = withb ? b[o] : 0;
                for (int64_t k = 0; k < in; k++) s += x[i * in + k] * w[o * in + k];
                r[i * out + o] = s;
            }
        for (int i = 0; i < 24; i++) { y[i] = NAN; yf[i] = NAN; }
        cdl_linear_f64(rows, in, out, x, w, withb ? b : NULL, y);
        cdl_linear_f32(rows, in, out, xf, wf, withb ? bf : NULL, yf);
        assert_close_d(y, r, 24, 1e-12);
        assert_close_f(yf, r, 24, 1e-5);
    }
    /* a smaller runtime batch writes only its rows */
    for (int i = 0; i < 24; i++) y[i] = -7;
    cdl_linear_f64(2, in, out, x, w, b, y);
    assert_close_d(y, r, 8, 1e-12);
    for (int i = 8; i < 24; i++) assert_true(y[i] == -7);
}

/* ---- reduce -------------------------------------------------------------------- */

static void ref_reduce(int rank, const int64_t *dims, unsigned mask, int mean,
                       const double *x, double *y) {
    int64_t numel = 1, ny = 1, count = 1, idx[CDL_MAXDIM] = {0};
    for (int i = 0; i < rank; i++) {
        numel *= dims[i];
        if (mask == 0 || (mask >> i & 1)) count *= dims[i]; else ny *= dims[i];
    }
    for (int64_t j = 0; j < ny; j++) y[j] = 0;
    for (int64_t e = 0; e < numel; e++) {
        int64_t rem = e, yo = 0;
        for (int i = rank - 1; i >= 0; i--) { idx[i] = rem % dims[i]; rem /= dims[i]; }
        for (int i = 0; i < rank; i++)
            if (!(mask == 0 || (mask >> i & 1))) yo = yo * dims[i] + idx[i];
        y[yo] += x[e];
    }
    if (mean) for (int64_t j = 0; j < ny; j++) y[j] /= (double)count;
}

static void test_reduce_every_mask(void **state) {
    (void)state;
    const int64_t dims[4] = {3, 1, 4, 5};
    double x[60], y[60], r[60];
    float xf[60], yf[60];
    fill_d(x, 60);
    for (int i = 0; i < 60; i++) xf[i] = (float)x[i];
    for (unsigned mask = 0; mask < 16; mask++)
        for (int mean = 0; mean < 2; mean++) {
            int64_t ny = 1;
            for (int i = 0; i < 4; i++) if (mask && !(mask >> i & 1)) ny *= dims[i];
            ref_reduce(4, dims, mask, mean, x, r);
            cdl_reduce_f64(4, dims, mask, mean, x, y);
            cdl_reduce_f32(4, dims, mask, mean, xf, yf);
            assert_close_d(y, r, ny, 1e-13);
            assert_close_f(yf, r, ny, 1e-5);
        }
    /* rows of every length around the summing lanes' width (16): each element counted
     * once, the tail too (small integers: the sums are exact) */
    for (int64_t n = 1; n <= 40; n++) {
        double xd[40], sd = 0, want = 0;
        float xs[40], ss = 0;
        for (int64_t i = 0; i < n; i++) {
            xd[i] = (double)(i % 5) - 2 + (double)i;
            xs[i] = (float)xd[i];
            want += xd[i];
        }
        int64_t d2[2] = {1, n};
        cdl_reduce_f64(2, d2, 0x2u, 0, xd, &sd);
        cdl_reduce_f32(2, d2, 0x2u, 0, xs, &ss);
        assert_true(sd == want);
        assert_true((double)ss == want);
    }
    /* rank 0 (a scalar) and a long row (the lane loop plus its tail) */
    double s = 2.5, t = 0;
    cdl_reduce_f64(0, dims, 0, 1, &s, &t);
    assert_true(t == 2.5);
    double big[1003], rs[1];
    fill_d(big, 1003);
    int64_t bd[1] = {1003};
    ref_reduce(1, bd, 0, 0, big, rs);
    cdl_reduce_f64(1, bd, 1, 0, big, &t);
    assert_close_d(&t, rs, 1, 1e-13);
}

/* ---- broadcast ----------------------------------------------------------------- */

static void ref_broadcast(int rank, const int64_t *xd, const int64_t *yd, const double *x,
                          double *y) {
    int64_t ny = 1, idx[CDL_MAXDIM];
    for (int i = 0; i < rank; i++) ny *= yd[i];
    for (int64_t e = 0; e < ny; e++) {
        int64_t rem = e, xo = 0;
        for (int i = rank - 1; i >= 0; i--) { idx[i] = rem % yd[i]; rem /= yd[i]; }
        for (int i = 0; i < rank; i++) xo = xo * xd[i] + (xd[i] == 1 ? 0 : idx[i]);
        y[e] = x[xo];
    }
}

/* Large reductions of the bias-gradient shape ([N, C, H, W] -> [C]) and row sums
 * ([N, C, H, W] -> [N, C], mean) run on the pool (kernels_dense.c, RED_PAR_MIN): the
 * same bits for 1 to 5 threads, and the values of a double-precision reference. */
static void test_reduce_threads(void **state) {
    (void)state;
    const int64_t dims[4] = {5, 7, 97, 97}, n = 5 * 7 * 97 * 97;
    float *x = malloc(sizeof(float) * (size_t)n), y[2][35], ref[2][35];
    fill_f(x, n);
    for (int t = 1; t <= 5; t++) {
        cdl_parallel_set_threads(t);
        cdl_reduce_f32(4, dims, 0xdu, 0, x, y[0]);
        cdl_reduce_f32(4, dims, 0xcu, 1, x, y[1]);
        if (t == 1) {
            memcpy(ref, y, sizeof y);
            for (int c = 0; c < 7; c++) {
                double s = 0;
                for (int64_t b = 0; b < 5; b++)
                    for (int64_t p = 0; p < 97 * 97; p++) s += x[(b * 7 + c) * 97 * 97 + p];
                assert_true(fabs(ref[0][c] - s) <= 1e-3 * (1 + fabs(s)));
            }
            for (int q = 0; q < 35; q++) {
                double s = 0;
                for (int64_t p = 0; p < 97 * 97; p++) s += x[q * 97 * 97 + p];
                assert_true(fabs(ref[1][q] - s / (97 * 97)) <= 1e-5);
            }
            continue;
        }
        assert_memory_equal(y, ref, sizeof y);
    }
    cdl_parallel_set_threads(1);
    free(x);
}

static void test_broadcast_patterns(void **state) {
    (void)state;
    const int64_t yd[4] = {3, 4, 2, 5};
    double x[120], y[120], r[120];
    fill_d(x, 120);
    for (unsigned keep = 0; keep < 16; keep++) {     /* bit i: x keeps axis i */
        int64_t xd[4];
        for (int i = 0; i < 4; i++) xd[i] = (keep >> i & 1) ? yd[i] : 1;
        ref_broadcast(4, xd, yd, x, r);
        cdl_broadcast_f64(4, xd, yd, x, y);
        assert_close_d(y, r, 120, 0);
    }
    /* x keeps a dim y has fewer of at runtime (x unbatched [4, 2], y = 3 rows) */
    double xr[8] = {1, 2, 3, 4, 5, 6, 7, 8}, yr[6];
    int64_t xdr[2] = {4, 2}, ydr[2] = {3, 2};
    cdl_broadcast_f64(2, xdr, ydr, xr, yr);
    assert_close_d(yr, xr, 6, 0);
    float xf[3] = {1, 2, 3}, yf[6];
    int64_t xd2[2] = {1, 3}, yd2[2] = {2, 3};
    cdl_broadcast_f32(2, xd2, yd2, xf, yf);
    assert_true(yf[0] == 1 && yf[2] == 3 && yf[3] == 1 && yf[5] == 3);
}

/* ---- transpose ----------------------------------------------------------------- */

static void ref_transpose(int rank, const int64_t *d, const int *perm, const double *x,
                          double *y) {
    int64_t n = 1, yd[CDL_MAXDIM], idx[CDL_MAXDIM], xs[CDL_MAXDIM], s = 1;
    for (int i = rank - 1; i >= 0; i--) { xs[i] = s; s *= d[i]; }
    for (int i = 0; i < rank; i++) { yd[i] = d[perm[i]]; n *= d[i]; }
    for (int64_t e = 0; e < n; e++) {
        int64_t rem = e, xo = 0;
        for (int i = rank - 1; i >= 0; i--) { idx[i] = rem % yd[i]; rem /= yd[i]; }
        for (int i = 0; i < rank; i++) xo += idx[i] * xs[perm[i]];
        y[e] = x[xo];
    }
}

static void test_transpose_all_rank4_perms(void **state) {
    (void)state;
    const int64_t d[4] = {2, 3, 1, 5};
    double x[30], y[30], r[30];
    fill_d(x, 30);
    int perm[4], n = 0;
    for (perm[0] = 0; perm[0] < 4; perm[0]++)
        for (perm[1] = 0; perm[1] < 4; perm[1]++)
            for (perm[2] = 0; perm[2] < 4; perm[2]++)
                for (perm[3] = 0; perm[3] < 4; perm[3]++) {
                    int seen = 0;
                    for (int i = 0; i < 4; i++) seen |= 1 << perm[i];
                    if (seen != 15) continue;
                    ref_transpose(4, d, perm, x, r);
                    cdl_transpose_f64(4, d, perm, x, y);
                    assert_close_d(y, r, 30, 0);
                    n++;
                }
    assert_int_equal(n, 24);
}

static void test_transpose_2d_tiles(void **state) {
    (void)state;
    enum { M = 37, N = 70 };
    static float x[M * N], y[M * N];
    fill_f(x, M * N);
    int64_t d[2] = {M, N};
    int perm[2] = {1, 0};
    cdl_transpose_f32(2, d, perm, x, y);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) assert_true(y[j * M + i] == x[i * N + j]);
    /* [B, T, C] -> [B, C, T] (batch stays first) */
    int64_t d3[3] = {3, 4, 6};
    int p3[3] = {0, 2, 1};
    double x3[72], y3[72], r3[72];
    fill_d(x3, 72);
    ref_transpose(3, d3, p3, x3, r3);
    cdl_transpose_f64(3, d3, p3, x3, y3);
    assert_close_d(y3, r3, 72, 0);
}

/* ---- concat, slice ------------------------------------------------------------- */

static void test_concat(void **state) {
    (void)state;
    /* [2, 1, 3] | [2, 2, 3] | [2, 0, 3] along axis 1: outer 2, inner 3, 6, 0 */
    double a[6] = {1, 2, 3, 4, 5, 6}, b[12], y[18];
    for (int i = 0; i < 12; i++) b[i] = 10 + i;
    const double *xs[3] = {a, b, NULL};
    int64_t inner[3] = {3, 6, 0};
    cdl_concat_f64(3, 2, inner, xs, y);
    double want[18] = {1, 2, 3, 10, 11, 12, 13, 14, 15, 4, 5, 6, 16, 17, 18, 19, 20, 21};
    assert_close_d(y, want, 18, 0);
}

typedef struct SliceCtx { int64_t outer, len, inner, start, step, count; } SliceCtx;
static void slice_fwd(void *c, const double *x, double *y) {
    SliceCtx *s = c;
    cdl_slice_f64(s->outer, s->len, s->inner, s->start, s->step, s->count, x, y);
}

static void test_slice_and_bwd(void **state) {
    (void)state;
    /* x [2, 7, 3]; take rows 1, 3, 5 of axis 1 */
    SliceCtx c = {2, 7, 3, 1, 2, 3};
    double x[42], y[18], g[18], dx[42];
    fill_d(x, 42);
    slice_fwd(&c, x, y);
    for (int o = 0; o < 2; o++)
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < 3; i++)
                assert_true(y[(o * 3 + j) * 3 + i] == x[(o * 7 + 1 + 2 * j) * 3 + i]);
    fill_d(g, 18);
    cdl_slice_bwd_f64(2, 7, 3, 1, 2, 3, g, dx);
    check_fd(slice_fwd, &c, x, 42, 18, g, dx);
    /* indices past the end read as zeros and their gradient is dropped */
    SliceCtx c2 = {2, 7, 3, 5, 1, 4};
    double y2[24], g2[24], dx2[42];
    slice_fwd(&c2, x, y2);
    for (int i = 0; i < 3; i++) assert_true(y2[i] == x[5 * 3 + i]);
    for (int i = 6; i < 12; i++) assert_true(y2[i] == 0);
    fill_d(g2, 24);
    cdl_slice_bwd_f64(2, 7, 3, 5, 1, 4, g2, dx2);
    check_fd(slice_fwd, &c2, x, 42, 24, g2, dx2);
}

static void test_i32_moves(void **state) {
    (void)state;
    /* labels y[B, T] = [[0,1,2],[3,4,5]]: column t = 1, and a transpose */
    int32_t y[6] = {0, 1, 2, 3, 4, 5}, col[2], yt[6], cat[12], b[6];
    cdl_slice_i32(2, 3, 1, 1, 1, 1, y, col);
    assert_true(col[0] == 1 && col[1] == 4);
    int64_t d[2] = {2, 3};
    int perm[2] = {1, 0};
    cdl_transpose_i32(2, d, perm, y, yt);
    assert_true(yt[0] == 0 && yt[1] == 3 && yt[2] == 1 && yt[5] == 5);
    const int32_t *xs[2] = {y, y};
    int64_t inner[2] = {3, 3};
    cdl_concat_i32(2, 2, inner, xs, cat);
    assert_true(cat[3] == 0 && cat[6] == 3 && cat[11] == 5);
    int64_t xd[2] = {1, 3}, yd[2] = {2, 3};
    cdl_broadcast_i32(2, xd, yd, y, b);
    assert_true(b[3] == 0 && b[5] == 2);
}

/* ---- softmax ------------------------------------------------------------------- */

typedef struct RowCtx { int64_t rows, n; int log; } RowCtx;
static void softmax_fwd(void *c, const double *x, double *y) {
    RowCtx *r = c;
    (r->log ? cdl_log_softmax_f64 : cdl_softmax_f64)(r->rows, r->n, x, y);
}

static void test_softmax_forward(void **state) {
    (void)state;
    double x[3 * 5], y[15], ly[15], r[15];
    float xf[15], yf[15], lyf[15];
    fill_d(x, 15);
    x[7] = 800;                           /* stability: no overflow */
    for (int i = 0; i < 15; i++) xf[i] = (float)x[i];
    for (int row = 0; row < 3; row++) {
        double m = -INFINITY, s = 0;
        for (int j = 0; j < 5; j++) m = fmax(m, x[row * 5 + j]);
        for (int j = 0; j < 5; j++) s += exp(x[row * 5 + j] - m);
        for (int j = 0; j < 5; j++) r[row * 5 + j] = exp(x[row * 5 + j] - m) / s;
    }
    cdl_softmax_f64(3, 5, x, y);
    cdl_softmax_f32(3, 5, xf, yf);
    assert_close_d(y, r, 15, 1e-14);
    assert_close_f(yf, r, 15, 1e-6);
    cdl_log_softmax_f64(3, 5, x, ly);
    cdl_log_softmax_f32(3, 5, xf, lyf);
    for (int i = 0; i < 15; i++) {
        assert_true(isfinite(ly[i]) && isfinite(lyf[i]));
        if (r[i] > 1e-300) assert_true(fabs(ly[i] - log(r[i])) < 1e-12);
        if (r[i] > 1e-30) assert_true(fabs(lyf[i] - log(r[i])) < 1e-4);
    }
}

static void test_softmax_backward_fd(void **state) {
    (void)state;
    for (int lg = 0; lg < 2; lg++) {
        RowCtx c = {4, 6, lg};
        double x[24], y[24], g[24], dx[24];
        fill_d(x, 24);
        fill_d(g, 24);
        softmax_fwd(&c, x, y);
        (lg ? cdl_log_softmax_bwd_f64 : cdl_softmax_bwd_f64)(4, 6, g, y, dx);
        check_fd(softmax_fwd, &c, x, 24, 24, g, dx);
    }
}

/* ---- embedding ----------------------------------------------------------------- */

typedef struct EmbCtx { int64_t n, V, D; const int32_t *ids; } EmbCtx;
static void emb_fwd(void *c, const double *w, double *y) {
    EmbCtx *e = c;
    cdl_embedding_f64(e->n, e->V, e->D, e->ids, w, y);
}

static void test_embedding(void **state) {
    (void)state;
    const int32_t ids[6] = {2, 0, 2, -1, 4, 3};   /* -1 and 4 are out of range (V = 4) */
    EmbCtx c = {6, 4, 3, ids};
    double w[12], y[18], g[18], dw[12];
    fill_d(w, 12);
    emb_fwd(&c, w, y);
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 3; j++) {
            double want = (ids[i] >= 0 && ids[i] < 4) ? w[ids[i] * 3 + j] : 0;
            assert_true(y[i * 3 + j] == want);
        }
    fill_d(g, 18);
    for (int i = 0; i < 12; i++) dw[i] = NAN;   /* must be overwritten */
    cdl_embedding_bwd_f64(6, 4, 3, g, ids, dw);
    check_fd(emb_fwd, &c, w, 12, 18, g, dw);
    assert_true(dw[3] == 0 && dw[4] == 0 && dw[5] == 0);   /* id 1 never used */
    float wf[12], yf[18];
    fill_f(wf, 12);
    cdl_embedding_f32(6, 4, 3, ids, wf, yf);
    assert_true(yf[0] == wf[6] && yf[9] == 0 && yf[12] == 0 && yf[15] == wf[9]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_all_transposes),
        cmocka_unit_test(test_gemm_edge_cases),
        cmocka_unit_test(test_gemm_split_over_pool),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_reduce_every_mask),
        cmocka_unit_test(test_reduce_threads),
        cmocka_unit_test(test_broadcast_patterns),
        cmocka_unit_test(test_transpose_all_rank4_perms),
        cmocka_unit_test(test_transpose_2d_tiles),
        cmocka_unit_test(test_concat),
        cmocka_unit_test(test_slice_and_bwd),
        cmocka_unit_test(test_i32_moves),
        cmocka_unit_test(test_softmax_forward),
        cmocka_unit_test(test_softmax_backward_fd),
        cmocka_unit_test(test_embedding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
