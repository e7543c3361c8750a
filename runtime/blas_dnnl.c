/* blas_dnnl.c -- the oneDNN backend (make BACKEND=onednn): the only includer of dnnl.h.
 * Contracts: backend_int.h.
 *
 * f32 GEMMs go to dnnl_sgemm, which takes the same row-major layout and transpose
 * flags as cblas_sgemm with CblasRowMajor (oneDNN >= 1.0; the old mkldnn_sgemm was
 * column-major).  oneDNN picks its kernels by CPU feature (AVX-512 on the Zen 4
 * machines), where OpenBLAS 0.3.21 is pinned to its Haswell kernels there.
 * Debian's libdnnl runs on OpenMP (libgomp): its thread count is this thread's
 * omp_set_num_threads, set with the others by cdl_blas_set_threads.
 */
#include <oneapi/dnnl/dnnl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend_int.h"

void omp_set_num_threads(int n); /* libgomp; <omp.h> needs -fopenmp with some compilers */

/* dnnl_sgemm runs every product on the calling thread's whole OpenMP team.  Below
 * CDL_GEMM_PAR_MACS multiply-adds (the size under which blas.c keeps OpenBLAS on one
 * thread too) a second thread costs more than it gives: at 2 threads the bench's MLP,
 * LSTM, VAE and transformer steps ran at 0.59-0.76x their 1-thread throughput
 * (docs/benchmarks.md), the LSTM's per-step 64x128x512 products and the attention's
 * 64x64 blocks being the small ones.  So a product below it runs on a team of one.
 * dnnl_threads is the count cdl_blas_set_threads asked for (0: never asked, OpenMP's
 * default left alone); team_now is what this thread's OpenMP team size was last set
 * to (omp_set_num_threads sets the calling thread's ICV, so it is per thread). */
static atomic_int dnnl_threads;
static _Thread_local int team_now;

void cdl_dnnl_set_threads(int n) {
    atomic_store(&dnnl_threads, n);
    team_now = n;
    omp_set_num_threads(n);
}

static void dnnl_team_for(int64_t macs) {
    int want = cdl_gemm_threads(atomic_load_explicit(&dnnl_threads, memory_order_relaxed), macs);
    if (want && team_now != want) {
        omp_set_num_threads(want);
        team_now = want;
    }
}

/* dnnl_sgemm fails only on arguments no caller in the runtime makes (a leading
 * dimension shorter than a row): an internal bug, so it stops the program. */
void cdl_dnnl_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                    int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    dnnl_team_for(M * N * K);
    dnnl_status_t st = dnnl_sgemm(transA ? 'T' : 'N', transB ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (st != dnnl_success) {
        fprintf(stderr,
                "%s:%d: internal error: dnnl_sgemm(%c%c, M=%lld N=%lld K=%lld, lda=%lld ldb=%lld ldc=%lld) "
                "returned status %d\n",
                __FILE__, __LINE__, transA ? 'T' : 'N', transB ? 'T' : 'N', (long long)M, (long long)N,
                (long long)K, (long long)lda, (long long)ldb, (long long)ldc, (int)st);
        abort();
    }
}
