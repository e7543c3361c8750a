/* sgemm.c -- the sgemm reference of `make bench` (the practical limit), per backend.
 *
 * Linked with one runtime (OpenBLAS or oneDNN build), it times, with plain calls of the
 * runtime's GEMM door cdl_gemm_f32 (cblas_sgemm or dnnl_sgemm), exactly the matrix
 * products of one training step
 * of the bench's wide MLP (1024-4096-4096-10 at batch 256, row-major, weights
 * [out, in] as in PyTorch and cdl):
 *
 *   forward   y_l[B, out] = x_l[B, in] W_l[out, in]^T                   (3 GEMMs)
 *   backward  dW_l[out, in] = g_l[B, out]^T x_l[B, in]                  (3 GEMMs)
 *             dx_l[B, in] = g_l[B, out] W_l[out, in], not for layer 1    (2 GEMMs)
 *
 * and prints ONE JSON line: the whole set's rate (its FLOPs over its time: the best a
 * framework can do on the GEMM part of a wide-MLP step) and each GEMM's own rate, plus
 * ("shapes") the rate of each of the other bench models' typical products, timed alone
 * (calls repeated to about 2 ms, median of the repeats), e.g.
 *
 *   {"framework": "sgemm", "backend": "openblas", "threads": 1, "gflops": 98.1, "ms_per_set": 306.2,
 *    "cpu_ms_per_set": 305.9, "gflop_per_set": 30.1, "gemms": [{"what": "fwd1", ...}, ...]}
 *
 * Usage: sgemm [--threads N] [--repeats N] [--batch B] (median of the repeats, after
 * one warm-up set).  Thread count: cdl_blas_set_threads (run.sh also sets
 * OPENBLAS_NUM_THREADS and OMP_NUM_THREADS).  Exit 0, 1 out of memory, 2 usage.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cdl.h"

#define SG_MAX_REPEATS 64

typedef struct sg_gemm {
    const char *what;
    int ta, tb;              /* transpose A / B (row-major) */
    int m, n, k;
    const float *a, *b;
    float *c;
    double ms[SG_MAX_REPEATS];
} sg_gemm;

static double sg_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double sg_cpu_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int sg_cmp(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static double sg_median(const double *v, int n) {
    double s[SG_MAX_REPEATS];
    memcpy(s, v, sizeof(double) * (size_t)n);
    qsort(s, (size_t)n, sizeof(double), sg_cmp);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* A buffer of n floats with small deterministic values (NULL on failure). */
static float *sg_buf(size_t n, unsigned seed) {
    float *p = malloc(n * sizeof(float));
    if (!p) return NULL;
    for (size_t i = 0; i < n; i++) p[i] = (float)((int)((i * 2654435761u + seed) >> 20) % 17 - 8) / 64.0f;
    return p;
}

/* The other bench shapes: (label, M, N, K, transpose A, transpose B), weights [out, in]:
 * forward x W^T, weight gradient g^T x, input gradient g W. */
static const struct sg_shape {
    const char *what;
    int m, n, k, ta, tb;
} sg_shapes[] = {
    {"mlp fc1 forward 64x784->256", 64, 256, 784, 0, 1},
    {"mlp fc1 dW", 256, 784, 64, 1, 0},
    {"mlp fc2 dX", 64, 256, 128, 0, 0},
    {"mlp_b256 fc1 forward", 256, 256, 784, 0, 1},
    {"lenet fc1 forward 64x400->120", 64, 120, 400, 0, 1},
    {"lstm hidden 64x128->512", 64, 512, 128, 0, 1},
    {"lstm hidden dW", 512, 128, 64, 1, 0},
    {"vae dec2 forward 64x400->784", 64, 784, 400, 0, 1},
    {"gpt qkv 512x256->768", 512, 768, 256, 0, 1},
    {"attention scores 128x128x64", 128, 128, 64, 0, 1},
    {"tiny 16x16x16", 16, 16, 16, 0, 1},
    {"batch-1 mlp fc1 1x784->256", 1, 256, 784, 0, 1},
};

/* C = op(A) op(B), row-major, with the leading dimensions of dense operands. */
static void sg_run(const sg_gemm *g) {
    int lda = g->ta ? g->m : g->k, ldb = g->tb ? g->k : g->n;
    cdl_gemm_f32(g->ta, g->tb, g->m, g->n, g->k, 1.0f, g->a, lda, g->b, ldb, 0.0f, g->c, g->n);
}

/* Time every sg_shapes product alone and print its JSON objects; 0 when out of memory. */
static int sg_time_shapes(int repeats) {
    for (size_t i = 0; i < sizeof sg_shapes / sizeof sg_shapes[0]; i++) {
        const struct sg_shape *q = &sg_shapes[i];
        float *a = sg_buf((size_t)q->m * q->k, 51), *b = sg_buf((size_t)q->k * q->n, 52), *c = sg_buf((size_t)q->m * q->n, 53);
        if (!a || !b || !c) {
            free(a), free(b), free(c);
            fprintf(stderr, "sgemm: out of memory\n");
            return 0;
        }
        sg_gemm g = {q->what, q->ta, q->tb, q->m, q->n, q->k, a, b, c, {0}};
        sg_run(&g); /* warm-up (oneDNN generates its kernels here), then how many calls make 2 ms */
        double t0 = sg_now_ms(), one;
        for (int k = 0; k < 3; k++) sg_run(&g);
        one = (sg_now_ms() - t0) / 3;
        long calls = one > 0 ? (long)(2.0 / one) + 1 : 1000;
        double cpu[SG_MAX_REPEATS], sorted[SG_MAX_REPEATS];
        for (int r = 0; r < repeats; r++) {
            t0 = sg_now_ms();
            double c0 = sg_cpu_ms();
            for (long k = 0; k < calls; k++) sg_run(&g);
            g.ms[r] = (sg_now_ms() - t0) / (double)calls;
            cpu[r] = (sg_cpu_ms() - c0) / (double)calls;
        }
        double ms = sg_median(g.ms, repeats), f = 2.0 * q->m * q->n * q->k;
        memcpy(sorted, cpu, sizeof(double) * (size_t)repeats);
        printf("%s{\"what\": \"%s\", \"m\": %d, \"n\": %d, \"k\": %d, \"ta\": %d, \"tb\": %d, \"us\": %.3f, "
               "\"gflops\": %.3f, \"cpu_us\": %.3f}",
               i ? ", " : "", q->what, q->m, q->n, q->k, q->ta, q->tb, ms * 1e3, f / 1e6 / ms,
               sg_median(sorted, repeats) * 1e3);
        free(a), free(b), free(c);
    }
    return 1;
}

int main(int argc, char **argv) {
    int threads = 1, repeats = 5, batch = 256;
    for (int i = 1; i < argc; i++) {
        int *dst = !strcmp(argv[i], "--threads") ? &threads : !strcmp(argv[i], "--repeats") ? &repeats
                 : !strcmp(argv[i], "--batch") ? &batch : NULL;
        if (!dst || i + 1 >= argc) {
            fprintf(stderr, "usage: sgemm [--threads N] [--repeats N] [--batch B]\n");
            return 2;
        }
        *dst = atoi(argv[++i]);
    }
    if (threads < 1 || repeats < 1 || repeats > SG_MAX_REPEATS || batch < 1 || batch > 65536) {
        fprintf(stderr, "sgemm: threads >= 1, repeats in 1..%d, batch in 1..65536\n", SG_MAX_REPEATS);
        return 2;
    }
    cdl_blas_set_threads(threads);

    enum { L = 3 };
    const int dim[L + 1] = {1024, 4096, 4096, 10};
    float *x[L + 1], *w[L], *g[L], *dw[L], *dx[L];
    int ok = 1;
    for (int l = 0; l <= L; l++) ok &= (x[l] = sg_buf((size_t)batch * dim[l], 1u + l)) != NULL;
    for (int l = 0; l < L; l++) {
        ok &= (w[l] = sg_buf((size_t)dim[l + 1] * dim[l], 11u + l)) != NULL;
        ok &= (g[l] = sg_buf((size_t)batch * dim[l + 1], 21u + l)) != NULL;
        ok &= (dw[l] = sg_buf((size_t)dim[l + 1] * dim[l], 31u + l)) != NULL;
        ok &= (dx[l] = sg_buf((size_t)batch * dim[l], 41u + l)) != NULL;
    }
    if (!ok) {
        fprintf(stderr, "sgemm: out of memory\n");
        return 1;
    }
    static const char *fw[L] = {"fwd1", "fwd2", "fwd3"}, *bw[L] = {"dw1", "dw2", "dw3"}, *bx[L] = {"dx1", "dx2", "dx3"};
    sg_gemm set[3 * L];
    int ns = 0;
    for (int l = 0; l < L; l++)
        set[ns++] = (sg_gemm){fw[l], 0, 1, batch, dim[l + 1], dim[l], x[l], w[l], x[l + 1], {0}};
    for (int l = L - 1; l >= 0; l--) {
        set[ns++] = (sg_gemm){bw[l], 1, 0, dim[l + 1], dim[l], batch, g[l], x[l], dw[l], {0}};
        if (l > 0) set[ns++] = (sg_gemm){bx[l], 0, 0, batch, dim[l], dim[l + 1], g[l], w[l], dx[l], {0}};
    }

    double flop = 0, set_ms[SG_MAX_REPEATS];
    for (int i = 0; i < ns; i++) {
        flop += 2.0 * set[i].m * set[i].n * set[i].k;
        sg_run(&set[i]); /* warm-up */
    }
    double cpu0 = sg_cpu_ms();
    for (int r = 0; r < repeats; r++) {
        set_ms[r] = 0;
        for (int i = 0; i < ns; i++) {
            double t0 = sg_now_ms();
            sg_run(&set[i]);
            set[i].ms[r] = sg_now_ms() - t0;
            set_ms[r] += set[i].ms[r];
        }
    }
    double cpu_ms = (sg_cpu_ms() - cpu0) / repeats;
    double ms = sg_median(set_ms, repeats);
    printf("{\"framework\": \"sgemm\", \"backend\": \"%s\", \"threads\": %d, \"batch\": %d, \"repeats\": %d, "
           "\"gflops\": %.3f, \"ms_per_set\": %.4f, \"cpu_ms_per_set\": %.4f, \"gflop_per_set\": %.6f, "
           "\"gemms\": [",
           cdl_backend(), threads, batch, repeats, flop / 1e6 / ms, ms, cpu_ms, flop / 1e9);
    for (int i = 0; i < ns; i++) {
        double m = sg_median(set[i].ms, repeats), f = 2.0 * set[i].m * set[i].n * set[i].k;
        printf("%s{\"what\": \"%s\", \"m\": %d, \"n\": %d, \"k\": %d, \"ta\": %d, \"tb\": %d, "
               "\"ms\": %.4f, \"gflops\": %.3f}",
               i ? ", " : "", set[i].what, set[i].m, set[i].n, set[i].k, set[i].ta, set[i].tb, m, f / 1e6 / m);
    }
    printf("], \"shapes\": [");
    if (!sg_time_shapes(repeats)) return 1;
    printf("]}\n");
    for (int l = 0; l <= L; l++) free(x[l]);
    for (int l = 0; l < L; l++) {
        free(w[l]);
        free(g[l]);
        free(dw[l]);
        free(dx[l]);
    }
    return 0;
}
