/* backend.c -- driver for tests/sh/backend.sh: which kernel backend serves this process
 * (cdl_backend), and whether its f32 GEMMs are right.
 *
 * Prints "backend NAME", then "openblas mapped: S F" with S whether OpenBLAS is
 * mapped into the process at the start (/proc/self/maps) and F after one 64x784x256
 * f32 product (a oneDNN runtime loads it at its first f64 or small product only:
 * runtime/blas.c), then checks cdl_gemm_f32 against cdl_gemm_f64 (OpenBLAS's
 * dgemm, whatever the backend) on the bench models' product shapes and on small odd
 * ones, every transpose pair, leading dimensions longer than a row, beta 0 (over NaN)
 * and beta 1, with |f32 - f64| <= 1e-5 (1 + |f64|) K-scaled.  Exit 0 when all agree. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cdl.h"
#include "mapped.h"

typedef struct shape { int m, n, k; } shape;

/* A deterministic value in [-0.5, 0.5) that is not a short binary fraction. */
static double val(long i, int salt) {
    unsigned long long v = (unsigned long long)(i + 1) * 0x9E3779B97F4A7C15ull + (unsigned long long)salt * 0xBF58476D1CE4E5B9ull;
    return (double)(v >> 11) / 9007199254740992.0 - 0.5;
}

/* One product in both precisions; returns the worst error relative to its bound. */
static double check(int ta, int tb, shape s, int pad, double beta) {
    int lda = (ta ? s.m : s.k) + pad, ldb = (tb ? s.k : s.n) + pad, ldc = s.n + pad;
    long na = (long)(ta ? s.k : s.m) * lda, nb = (long)(tb ? s.n : s.k) * ldb, nc = (long)s.m * ldc;
    double *A = malloc(sizeof(double) * na), *B = malloc(sizeof(double) * nb), *C = malloc(sizeof(double) * nc);
    float *Af = malloc(sizeof(float) * na), *Bf = malloc(sizeof(float) * nb), *Cf = malloc(sizeof(float) * nc);
    if (!A || !B || !C || !Af || !Bf || !Cf) {
        fprintf(stderr, "backend: out of memory\n");
        exit(1);
    }
    for (long i = 0; i < na; i++) Af[i] = (float)val(i, 1), A[i] = Af[i];
    for (long i = 0; i < nb; i++) Bf[i] = (float)val(i, 2), B[i] = Bf[i];
    for (long i = 0; i < nc; i++) Cf[i] = beta == 0 ? NAN : (float)val(i, 3), C[i] = Cf[i];
    cdl_gemm_f64(ta, tb, s.m, s.n, s.k, 0.75, A, lda, B, ldb, beta, C, ldc);
    cdl_gemm_f32(ta, tb, s.m, s.n, s.k, 0.75f, Af, lda, Bf, ldb, (float)beta, Cf, ldc);
    double worst = 0;
    for (int i = 0; i < s.m; i++)
        for (int j = 0; j < s.n; j++) {
            double d = fabs(Cf[(long)i * ldc + j] - C[(long)i * ldc + j]);
            double bound = 1e-6 * sqrt((double)s.k) * (1 + fabs(C[(long)i * ldc + j]));
            double r = d / bound;
            if (!(r <= worst)) worst = isnan(r) ? INFINITY : r;
        }
    free(A), free(B), free(C), free(Af), free(Bf), free(Cf);
    return worst;
}

int main(void) {
    /* fc1 of the MLP and its gradients, the LSTM's recurrent product, the wide MLP's
     * (smaller batch), the GPT qkv, one-row and one-column products (matrix-vector
     * products in the OpenBLAS backend: batch-1 inference), and odd small ones */
    static const shape shapes[] = {{64, 256, 784}, {256, 784, 64}, {64, 784, 256}, {64, 512, 128},
                                   {64, 1024, 512}, {128, 768, 256}, {7, 5, 9}, {1, 10, 128},
                                   {1, 256, 784}, {64, 1, 128}, {1, 1, 33}, {3, 1, 1}, {33, 17, 65}};
    printf("backend %s\n", cdl_backend());
    int at_start = lib_mapped("libopenblas");
    static float a[64 * 784], b[784 * 256], c[64 * 256];
    cdl_gemm_f32(0, 0, 64, 256, 784, 1, a, 784, b, 256, 0, c, 256);
    printf("openblas mapped: %d %d\n", at_start, lib_mapped("libopenblas"));
    int bad = 0;
    double worst = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int t = 0; t < 4; t++)
            for (int b = 0; b < 2; b++) {
                double r = check(t >> 1, t & 1, shapes[i], (int)i % 3, b);
                if (r > worst) worst = r;
                if (!(r <= 1)) {
                    bad++;
                    printf("FAIL %dx%dx%d trans %d%d beta %d: error %.3g of the bound\n", shapes[i].m, shapes[i].n,
                           shapes[i].k, t >> 1, t & 1, b, r);
                }
            }
    printf("%s: worst error %.3g of the bound\n", bad ? "FAIL" : "ok", worst);
    return bad ? 1 : 0;
}
