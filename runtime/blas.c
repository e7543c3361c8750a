/* blas.c -- the runtime's only door to BLAS (OpenBLAS through cblas.h).
 *
 * cdl_gemm_f32/f64 are row-major GEMMs with transpose flags, so that generated code
 * never copies a matrix to transpose it.  Nothing else in the tree includes cblas.h.
 * A oneDNN build (make BACKEND=onednn, backend_int.h) sends the f32 products to
 * dnnl_sgemm instead; the f64 ones stay here (oneDNN has no dgemm), and so do the f32
 * products too small for oneDNN.  Those are all a oneDNN build needs OpenBLAS for, and
 * most programs (f32 models) make none, so there it is not linked but loaded at its
 * first use (blas_lazy below): loading it cost ~5 ms of every run's start-up.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <cblas.h>
#include <pthread.h>
#ifdef CDL_BACKEND_ONEDNN
#include <dlfcn.h>
#include <stdatomic.h>
#endif
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_int.h"
#include "cdl.h"

#ifdef CDL_BACKEND_ONEDNN
#define BACKEND_BUILT "onednn"
#else
#define BACKEND_BUILT "openblas"
#endif
static int backend_dnnl;
static pthread_once_t backend_once = PTHREAD_ONCE_INIT;

/* The build's backend, unless CDL_BACKEND names another: "openblas" always can,
 * "onednn" only in a oneDNN build; an unknown or unavailable name is reported once on
 * stderr and the build's backend kept. */
static void backend_choose(void) {
    const char *v = getenv("CDL_BACKEND");
    backend_dnnl = !strcmp(BACKEND_BUILT, "onednn");
    if (!v || !*v || !strcmp(v, BACKEND_BUILT)) return;
    if (!strcmp(v, "openblas")) backend_dnnl = 0;
    else
        fprintf(stderr, "cdl: CDL_BACKEND=%s: this runtime has %s (onednn needs `make BACKEND=onednn`); using %s\n",
                v, backend_dnnl ? "openblas and onednn" : "openblas only", BACKEND_BUILT);
}

int cdl_backend_dnnl(void) {
    pthread_once(&backend_once, backend_choose);
    return backend_dnnl;
}

/* The f32 products go to oneDNN when it serves this process (a oneDNN build); the f64
 * ones always stay on OpenBLAS.  Tiny products (CDL_DNNL_MIN_MACS, backend_int.h) stay
 * on OpenBLAS too. */
int cdl_gemm_on_openblas(int64_t macs, int f64) {
    return f64 || macs <= CDL_DNNL_MIN_MACS || !cdl_backend_dnnl();
}

#ifdef CDL_BACKEND_ONEDNN
#define CDL_GEMM_DNNL_f32                                                                  \
    if (!cdl_gemm_on_openblas(M * N * K, 0)) {                                             \
        cdl_dnnl_sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);       \
        return;                                                                            \
    }
#else
#define CDL_GEMM_DNNL_f32
#endif
#define CDL_GEMM_DNNL_f64

/* OpenBLAS's functions as the runtime calls them: directly in an OpenBLAS build; in a
 * oneDNN build through pointers that blas_lazy fills at the first call of any of them
 * (dlopen of BLAS_LIB; each call then costs a pthread_once check).  A oneDNN program
 * where OpenBLAS is missing stops at that first call with a message naming the
 * library (an f32 model never gets there unless it makes products of at most 16^3
 * multiply-adds). */
#ifdef CDL_BACKEND_ONEDNN
#define BLAS_LIB "libopenblas.so.0"
static struct {
    __typeof__(cblas_sgemm) *sgemm;
    __typeof__(cblas_dgemm) *dgemm;
    __typeof__(cblas_sgemv) *sgemv;
    __typeof__(cblas_dgemv) *dgemv;
    __typeof__(openblas_set_num_threads) *set_num_threads;
    int (*thread_shutdown)(void);             /* blas_thread_shutdown_, NULL if absent */
} blas_fn;
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static atomic_int blas_loaded;                /* blas_fn is filled */
static atomic_int blas_single;                /* cdl_blas_set_threads was called */

static void blas_one_thread(void) {
    blas_fn.set_num_threads(1);
    if (blas_fn.thread_shutdown) blas_fn.thread_shutdown();
}

static void *blas_sym(void *h, const char *name) {
    void *f = dlsym(h, name);
    if (!f) {
        fprintf(stderr, "cdl: %s has no %s, which this oneDNN runtime needs for f64 and small products\n", BLAS_LIB,
                name);
        exit(1);
    }
    return f;
}

/* Load OpenBLAS (once; the loading starts its worker threads, which go the way
 * cdl_blas_set_threads sends them if it was called).  blas_loaded and blas_single
 * are sequentially consistent, so whichever of this and cdl_blas_set_threads comes
 * second sees the other's flag. */
static void blas_load(void) {
    void *h = dlopen(BLAS_LIB, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "cdl: this oneDNN runtime needs OpenBLAS for f64 and small products, and could not load "
                        "it: %s (install libopenblas0)\n", dlerror());
        exit(1);
    }
    *(void **)&blas_fn.sgemm = blas_sym(h, "cblas_sgemm");
    *(void **)&blas_fn.dgemm = blas_sym(h, "cblas_dgemm");
    *(void **)&blas_fn.sgemv = blas_sym(h, "cblas_sgemv");
    *(void **)&blas_fn.dgemv = blas_sym(h, "cblas_dgemv");
    *(void **)&blas_fn.set_num_threads = blas_sym(h, "openblas_set_num_threads");
    *(void **)&blas_fn.thread_shutdown = dlsym(h, "blas_thread_shutdown_");
    atomic_store(&blas_loaded, 1);
    if (atomic_load(&blas_single)) blas_one_thread();
}

#define BLAS(f) (pthread_once(&blas_once, blas_load), blas_fn.f)
#else
#define BLAS(f) BLAS_##f
#define BLAS_sgemm cblas_sgemm
#define BLAS_dgemm cblas_dgemm
#define BLAS_sgemv cblas_sgemv
#define BLAS_dgemv cblas_dgemv
#endif

/* Threads for GEMMs.  The libraries' own threads are never used once
 * cdl_blas_set_threads has been called: OpenBLAS runs on one thread and oneDNN on an
 * OpenMP team of one, and a product of at least CDL_GEMM_PAR_MACS multiply-adds is cut
 * into blocks of C that the runtime's pool (parallel.c) runs, each block one
 * single-threaded library call.  Why not the libraries' threads: after each call
 * they wait for the next one by spinning (OpenBLAS on sched_yield for its thread
 * timeout, libgomp for GOMP_SPINCOUNT), which takes the second core from the pool's
 * worker, the thread that runs the convolutions and elementwise kernels between the
 * GEMMs; on a loaded machine a spinning team waits for a descheduled member.
 * Measured (docs/benchmarks.md, "2 threads"): LeNet at 2 threads spent 56% of its CPU
 * time in OpenBLAS's sched_yield; the oneDNN build's MLP ran at 0.74-0.83x its
 * 1-thread throughput at 2 threads, and 89% of its CPU time went to libgomp's spin
 * under load (a step 12-19 ms instead of 0.5).  Below CDL_GEMM_PAR_MACS (LeNet's
 * 64x400x120 and smaller) a product is ~30 us of work and a second thread costs more
 * than it gives.  The blocks are columns of C (whole multiples of 16) when C is wide
 * enough, rows otherwise; each element's sum over K is the same library kernel's, and
 * the blocks depend only on the product's shape (gemm_parts), so its bits are the same
 * at any thread count. */
enum { GEMM_BLOCK_ALIGN = 16 };

/* The block of C a task computes: cols (1) or rows (0), of size step, task i's
 * starting at i * step. */
static int64_t gemm_block(int64_t M, int64_t N, int parts, int *cols) {
    int64_t step = (N + parts - 1) / parts;
    step = (step + GEMM_BLOCK_ALIGN - 1) / GEMM_BLOCK_ALIGN * GEMM_BLOCK_ALIGN;
    *cols = step < N;
    if (*cols) return step;
    step = (M + parts - 1) / parts;
    step = (step + GEMM_BLOCK_ALIGN - 1) / GEMM_BLOCK_ALIGN * GEMM_BLOCK_ALIGN;
    return step < M ? step : M;
}

/* How many blocks a product is cut into: 1 (run it as is) or CDL_GEMM_BLOCKS, by its
 * shape alone, so that its bits do not depend on the thread count (a block's sums
 * are not always the whole product's to the bit: OpenBLAS's Haswell sgemm differs in
 * the last bits between a 64x784x256 product and its two column halves). */
static int gemm_parts(int64_t M, int64_t N, int64_t K) {
    if (M * N * K < CDL_GEMM_PAR_MACS) return 1;
    if (N < 2 * GEMM_BLOCK_ALIGN && M < 2 * GEMM_BLOCK_ALIGN) return 1;
    return CDL_GEMM_BLOCKS;
}

/* A one-row or one-column product through OpenBLAS's matrix-vector product: its sgemm
 * takes 5-10x longer than its sgemv when M = 1 (batch-1 inference; 1x784 by 784x256:
 * 338 us against 33 us).  M == 1: c = alpha op(B)^T a + beta c, with a the row of
 * op(A); N == 1: c = alpha op(A) b + beta c, with b the column of op(B) and c a column
 * of C.  beta = 0 clears C first, so NaNs in C never survive (BLAS may scale them). */
#define CDL_GEMV(T, S, GEMV)                                                            \
    static void gemv_##S(int transA, int transB, int64_t M, int64_t N, int64_t K, T alpha, \
                         const T *A, int64_t lda, const T *B, int64_t ldb, T beta, T *C, \
                         int64_t ldc)                                                   \
    {                                                                                   \
        if (beta == 0)                                                                  \
            for (int64_t i = 0; i < M; i++)                                             \
                for (int64_t j = 0; j < N; j++) C[i * ldc + j] = 0;                     \
        if (M == 1)                                                                     \
            GEMV(CblasRowMajor, transB ? CblasNoTrans : CblasTrans, (blasint)(transB ? N : K), \
                 (blasint)(transB ? K : N), alpha, B, (blasint)ldb, A, (blasint)(transA ? lda : 1), \
                 beta, C, 1);                                                           \
        else                                                                            \
            GEMV(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, (blasint)(transA ? K : M), \
                 (blasint)(transA ? M : K), alpha, A, (blasint)lda, B, (blasint)(transB ? 1 : ldb), \
                 beta, C, (blasint)ldc);                                                \
    }

CDL_GEMV(float, f32, BLAS(sgemv))
CDL_GEMV(double, f64, BLAS(dgemv))

/* One library call, on the calling thread's single-threaded library. */
#define CDL_GEMM_ONE(T, S, CBLAS)                                                      \
    static void gemm_one_##S(int transA, int transB, int64_t M, int64_t N, int64_t K, T alpha, \
                             const T *A, int64_t lda, const T *B, int64_t ldb, T beta, T *C, \
                             int64_t ldc)                                               \
    {                                                                                   \
        CDL_GEMM_DNNL_##S                                                               \
        if (M == 1 || N == 1) {                                                         \
            gemv_##S(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);     \
            return;                                                                     \
        }                                                                               \
        CBLAS(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,                        \
              transB ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N, (blasint)K,   \
              alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);          \
    }                                                                                   \
    typedef struct {                                                                    \
        int transA, transB, cols;                                                       \
        int64_t M, N, K, step, lda, ldb, ldc;                                           \
        T alpha, beta;                                                                  \
        const T *A, *B;                                                                 \
        T *C;                                                                           \
    } GemmJob_##S;                                                                      \
    /* Task i: columns (or rows) [i step, (i + 1) step) of C. */                        \
    static void gemm_task_##S(void *ctx, int64_t i) {                                   \
        const GemmJob_##S *j = ctx;                                                     \
        int64_t lo = i * j->step, n = (j->cols ? j->N : j->M) - lo;                     \
        if (n <= 0) return;                                                             \
        if (n > j->step) n = j->step;                                                   \
        if (j->cols)                                                                    \
            gemm_one_##S(j->transA, j->transB, j->M, n, j->K, j->alpha, j->A, j->lda,   \
                         j->transB ? j->B + lo * j->ldb : j->B + lo, j->ldb, j->beta,    \
                         j->C + lo, j->ldc);                                            \
        else                                                                            \
            gemm_one_##S(j->transA, j->transB, n, j->N, j->K, j->alpha,                 \
                         j->transA ? j->A + lo : j->A + lo * j->lda, j->lda, j->B, j->ldb, \
                         j->beta, j->C + lo * j->ldc, j->ldc);                          \
    }

CDL_GEMM_ONE(float, f32, BLAS(sgemm))
CDL_GEMM_ONE(double, f64, BLAS(dgemm))

/* C[M,N] = alpha op(A) op(B) + beta C, all row-major.  op(X) = X when the flag is 0,
 * X^T otherwise; lda/ldb/ldc are the physical row lengths (compiled sizes).
 * Empty products are handled here (no library is asked about K = 0): C = beta C,
 * and beta = 0 overwrites C even when it holds NaNs. */
#define CDL_GEMM(T, S)                                                                 \
    void cdl_gemm_##S(int transA, int transB, int64_t M, int64_t N, int64_t K, T alpha, \
                      const T *A, int64_t lda, const T *B, int64_t ldb, T beta, T *C,   \
                      int64_t ldc)                                                      \
    {                                                                                   \
        if (M <= 0 || N <= 0)                                                           \
            return;                                                                     \
        if (K <= 0 || alpha == 0) {                                                     \
            for (int64_t i = 0; i < M; i++)                                             \
                for (int64_t j = 0; j < N; j++)                                         \
                    C[i * ldc + j] = beta == 0 ? (T)0 : beta * C[i * ldc + j];          \
            return;                                                                     \
        }                                                                               \
        int parts = gemm_parts(M, N, K), cols;                                          \
        if (parts <= 1) {                                                               \
            gemm_one_##S(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc); \
            return;                                                                     \
        }                                                                               \
        GemmJob_##S j = {transA, transB, 0, M, N, K, 0, lda, ldb, ldc, alpha, beta, A, B, C}; \
        j.step = gemm_block(M, N, parts, &cols);                                        \
        j.cols = cols;                                                                  \
        cdl_parallel_for(((cols ? N : M) + j.step - 1) / j.step, gemm_task_##S, &j);    \
    }

CDL_GEMM(float, f32)
CDL_GEMM(double, f64)

/* Strided batch of GEMMs (cdl.h, cdl_gemm_batch): product i reads A + i*sA, B + i*sB
 * and writes C + i*sC.  sC = 0 sums the products into one C (beta applies once), in
 * order i = 0, 1, ...; a product over every row of a contiguous batch is one GEMM:
 *   sB = 0, A not transposed, A and C contiguous: [batch*M, K] op(B) in one call;
 *   sC = 0, A transposed, B not, A and B contiguous: sum_i A_i^T B_i = A'^T B' with
 *     the batch folded into K.
 * Anything else is a plain loop over cdl_gemm (OpenBLAS costs ~0.5 us a call at 16^3,
 * below what a hand-written loop reaches at these sizes). */
#define CDL_GEMM_BATCH(T, S)                                                           \
    void cdl_gemm_batch_##S(int transA, int transB, int64_t M, int64_t N, int64_t K,     \
                            T alpha, const T *A, int64_t lda, int64_t sA, const T *B,    \
                            int64_t ldb, int64_t sB, T beta, T *C, int64_t ldc,          \
                            int64_t sC, int64_t batch)                                   \
    {                                                                                   \
        if (batch <= 0 || M <= 0 || N <= 0)                                             \
            return;                                                                     \
        if (batch > 1 && sB == 0 && !transA && sA == M * lda && sC == M * ldc) {        \
            cdl_gemm_##S(0, transB, M * batch, N, K, alpha, A, lda, B, ldb, beta, C, ldc); \
            return;                                                                     \
        }                                                                               \
        if (batch > 1 && sC == 0 && transA && !transB && sA == K * lda && sB == K * ldb) { \
            cdl_gemm_##S(1, 0, M, N, K * batch, alpha, A, lda, B, ldb, beta, C, ldc);   \
            return;                                                                     \
        }                                                                               \
        for (int64_t i = 0; i < batch; i++)                                             \
            cdl_gemm_##S(transA, transB, M, N, K, alpha, A + i * sA, lda, B + i * sB, ldb, \
                         sC == 0 && i > 0 ? (T)1 : beta, C + i * sC, ldc);              \
    }

CDL_GEMM_BATCH(float, f32)
CDL_GEMM_BATCH(double, f64)

/* The f32 GEMM backend in effect: "onednn" or "openblas". */
const char *cdl_backend(void) {
    return cdl_backend_dnnl() ? "onednn" : "openblas";
}

/* The CPUs this process may run on (its affinity mask: taskset, or mpirun's binding of
 * a rank to a core), at least 1. */
static int cpus_available(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    int n = CPU_COUNT(&set);
    return n > 0 ? n : 1;
}

/* OpenBLAS (pthreads build) starts its workers when it is loaded, OPENBLAS_NUM_THREADS
 * or the CPU count of them less one, and openblas_set_num_threads(1) only stops giving
 * them work: each spins on sched_yield for its thread timeout (~2^28 cycles) before
 * it sleeps, again after every wake-up, and a fork re-creates them.  Its
 * blas_thread_shutdown_ joins them (a later multi-threaded call would start them
 * again; cdl makes none).  Weak: a BLAS without it (OpenMP or reference builds) just
 * keeps its threads. */
#ifndef CDL_BACKEND_ONEDNN
extern int blas_thread_shutdown_(void) __attribute__((weak));
#endif

/* Number of threads for the runtime's pool, which runs the large GEMMs' blocks (above)
 * and the kernels OpenBLAS does not run; the libraries themselves go to one thread
 * each, and OpenBLAS's own workers are stopped.  n <= 0: the CPUs this process may
 * run on. */
void cdl_blas_set_threads(int n) {
    if (n <= 0) n = cpus_available();
#ifdef CDL_BACKEND_ONEDNN
    atomic_store(&blas_single, 1);
    if (atomic_load(&blas_loaded)) blas_one_thread();
    cdl_dnnl_single_threaded();
#else
    openblas_set_num_threads(1);
    if (blas_thread_shutdown_) blas_thread_shutdown_();
#endif
    cdl_parallel_set_threads(n);
}
