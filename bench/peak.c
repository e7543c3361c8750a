/* peak.c -- the machine's limits, measured at the start of `make bench`.
 *
 *   peak [--threads N] [--ms M]
 *
 * prints ONE JSON line:
 *
 *   {"framework": "peak", "threads": N, "fma512_gflops": ..., "fma256_gflops": ...,
 *    "triad_gbs": {"l2": ..., "l3": ..., "dram": ...}, "l2_bytes": ..., "l3_probe_bytes": ...}
 *
 * fma512 / fma256: the fp32 FMA rate of ONE core, from a register-only loop of
 * independent vector FMAs (AVX-512: 16 lanes, AVX2 + FMA: 8 lanes, 2 FLOPs a lane); no
 * memory is touched, so this is the ceiling no GEMM or convolution can pass.  0 when the
 * CPU lacks the instructions.  triad: STREAM's a[i] = b[i] + s c[i] with N threads over
 * arrays sized to stay in L2 (a quarter of one core's L2 per thread), in an 8 MB set
 * (L3 on every machine we know; the VM's reported L3 size is not trustworthy) and in a
 * 192 MB set (main memory), counted as STREAM does (12 bytes an element; the
 * write-allocate read is not counted).  Every figure is the best of repeated runs of
 * about M ms (default 40): on a shared machine other work only ever makes a run slower
 * (the FMA runs are timed by the thread's CPU time, the triads by the wall clock).
 * Exit 0, 1 out of memory or no threads, 2 usage.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif
/* gcc at -O2 vectorises only loops whose trip count suits the vector width: the triad
 * loop needs the full vectoriser. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PK_MAX_THREADS 64
#define PK_ACC 12 /* independent accumulators: FMA latency 4 x 2 pipes, with margin */

static double pk_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The calling thread's CPU time: the FMA loops are timed by it, so time the thread
 * spends descheduled on a shared machine does not count against the core's rate. */
static double pk_cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The body of pk_fma512 / pk_fma256: iters rounds of PK_ACC independent FMAs on vectors
 * V (set1, fmadd, add: V's intrinsics), the accumulators summed into the vector s. */
#define PK_FMA_BODY(V, set1, fmadd, add)                                      \
    V acc[PK_ACC], a = set1(0.999999f), b = set1(1e-7f);                      \
    for (int i = 0; i < PK_ACC; i++) acc[i] = set1(seed + (float)i);          \
    for (long it = 0; it < iters; it++) {                                     \
        _Pragma("GCC unroll 16")                                              \
        for (int i = 0; i < PK_ACC; i++) acc[i] = fmadd(acc[i], a, b);        \
    }                                                                         \
    V s = acc[0];                                                             \
    for (int i = 1; i < PK_ACC; i++) s = add(s, acc[i])

/* iters rounds of PK_ACC independent 16-lane FMAs; returns a value that depends on all
 * of them (so the compiler keeps the loop). */
__attribute__((target("avx512f"), noinline)) static float pk_fma512(long iters, float seed) {
    PK_FMA_BODY(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps);
    return _mm512_reduce_add_ps(s);
}

/* The same with 8-lane AVX2 FMAs. */
__attribute__((target("avx2,fma"), noinline)) static float pk_fma256(long iters, float seed) {
    PK_FMA_BODY(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps);
    float v[8];
    _mm256_storeu_ps(v, s);
    return v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
}

/* Best GFLOP/s of one core over runs of about ms milliseconds of its CPU time (lanes:
 * 16 or 8). */
static double pk_fma_rate(int lanes, double ms) {
    float (*fn)(long, float) = lanes == 16 ? pk_fma512 : pk_fma256;
    volatile float sink = 0;
    long iters = 1000;
    double t;
    do { /* calibrate to about ms / 4 */
        iters *= 2;
        double t0 = pk_cpu_now();
        sink += fn(iters, 1.0f);
        t = pk_cpu_now() - t0;
    } while (t < ms * 0.25e-3 && iters < (1L << 40));
    iters = (long)(iters * (ms * 1e-3 / t)) + 1;
    double best = 0;
    for (int r = 0; r < 7; r++) {
        double t0 = pk_cpu_now();
        sink += fn(iters, (float)r);
        double dt = pk_cpu_now() - t0, g = 2.0 * lanes * PK_ACC * (double)iters / dt * 1e-9;
        if (g > best) best = g;
    }
    (void)sink;
    return best;
}

/* ---------------------------------------------------------------- triad */

typedef struct pk_triad {
    float *a, *b, *c;
    size_t n; /* elements of this thread's slice */
    int reps;
    pthread_barrier_t *bar;
    double secs; /* thread 0: time of its passes between the barriers */
} pk_triad;

static void pk_triad_pass(pk_triad *t) {
    float *restrict a = t->a;
    const float *restrict b = t->b, *restrict c = t->c;
    for (int r = 0; r < t->reps; r++) {
        for (size_t i = 0; i < t->n; i++) a[i] = b[i] + 3.0f * c[i];
        __asm__ volatile("" ::: "memory");
    }
}

static void *pk_triad_thread(void *arg) {
    pk_triad *t = arg;
    pthread_barrier_wait(t->bar);
    double t0 = pk_now();
    pk_triad_pass(t);
    pthread_barrier_wait(t->bar);
    t->secs = pk_now() - t0;
    return NULL;
}

/* Best triad GB/s with nt threads over three arrays of `bytes` total (split evenly),
 * each timing about ms milliseconds; -1 when out of memory. */
static double pk_triad_rate(int nt, size_t bytes, double ms) {
    size_t n = bytes / (3 * sizeof(float) * (size_t)nt) / 16 * 16;
    if (n < 16) n = 16;
    size_t total = n * (size_t)nt;
    float *a = aligned_alloc(64, total * sizeof(float)), *b = aligned_alloc(64, total * sizeof(float)),
          *c = aligned_alloc(64, total * sizeof(float));
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return -1;
    }
    for (size_t i = 0; i < total; i++) a[i] = 0, b[i] = (float)(i % 7), c[i] = (float)(i % 5);
    pk_triad one = {a, b, c, total, 1, NULL, 0};
    double t0 = pk_now();
    pk_triad_pass(&one); /* warm-up, and a time for one pass */
    double once = pk_now() - t0;
    int reps = (int)(ms * 1e-3 / (once > 1e-7 ? once : 1e-7)) + 1;
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)nt);
    pk_triad th[PK_MAX_THREADS];
    pthread_t tid[PK_MAX_THREADS];
    double best = 0;
    for (int r = 0; r < 5; r++) {
        for (int k = 0; k < nt; k++) th[k] = (pk_triad){a + k * n, b + k * n, c + k * n, n, reps, &bar, 0};
        for (int k = 1; k < nt; k++) pthread_create(&tid[k], NULL, pk_triad_thread, &th[k]);
        pk_triad_thread(&th[0]);
        for (int k = 1; k < nt; k++) pthread_join(tid[k], NULL);
        double gbs = 12.0 * (double)total * reps / th[0].secs * 1e-9;
        if (gbs > best) best = gbs;
    }
    pthread_barrier_destroy(&bar);
    free(a), free(b), free(c);
    return best;
}

int main(int argc, char **argv) {
    int threads = 1;
    double ms = 40;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--threads")) threads = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--ms")) ms = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: peak [--threads N] [--ms M]\n");
            return 2;
        }
    }
    if (threads < 1 || threads > PK_MAX_THREADS || !(ms >= 1 && ms <= 10000)) {
        fprintf(stderr, "peak: threads in 1..%d, ms in 1..10000\n", PK_MAX_THREADS);
        return 2;
    }
    __builtin_cpu_init();
    double f512 = __builtin_cpu_supports("avx512f") ? pk_fma_rate(16, ms) : 0;
    double f256 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? pk_fma_rate(8, ms) : 0;
    long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (l2 <= 0) l2 = 512 * 1024;
    size_t l2set = (size_t)l2 / 4 * (size_t)threads, l3set = (size_t)8 << 20, dram = (size_t)192 << 20;
    double bl2 = pk_triad_rate(threads, l2set, ms), bl3 = pk_triad_rate(threads, l3set, ms);
    double bmem = pk_triad_rate(threads, dram, ms * 4);
    if (bl2 < 0 || bl3 < 0 || bmem < 0) {
        fprintf(stderr, "peak: out of memory\n");
        return 1;
    }
    printf("{\"framework\": \"peak\", \"threads\": %d, \"fma512_gflops\": %.2f, \"fma256_gflops\": %.2f, "
           "\"triad_gbs\": {\"l2\": %.2f, \"l3\": %.2f, \"dram\": %.2f}, \"l2_bytes\": %ld, "
           "\"l2_probe_bytes\": %zu, \"l3_probe_bytes\": %zu, \"dram_probe_bytes\": %zu}\n",
           threads, f512, f256, bl2, bl3, bmem, l2, l2set, l3set, dram);
    return 0;
}
