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

/* dnnl_sgemm runs every product on the calling thread's whole OpenMP team.  Once
 * cdl_blas_set_threads has been called that team is one thread, on every thread that
 * calls here (the caller and the pool's workers, which run a large product's blocks:
 * blas.c says why libgomp's own threads are not used).  omp_set_num_threads sets the
 * calling thread's ICV, so each thread sets it once: dnnl_asked says whether
 * cdl_blas_set_threads was called (0: OpenMP's default left alone), team_one whether
 * this thread's team is already one. */
static atomic_int dnnl_asked;
static _Thread_local int team_one;

void cdl_dnnl_single_threaded(void) {
    atomic_store(&dnnl_asked, 1);
}

static void dnnl_team_of_one(void) {
    if (team_one || !atomic_load_explicit(&dnnl_asked, memory_order_relaxed)) return;
    omp_set_num_threads(1);
    team_one = 1;
}

/* dnnl_sgemm fails only on arguments no caller in the runtime makes (a leading
 * dimension shorter than a row): an internal bug, so it stops the program. */
void cdl_dnnl_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                    int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    dnnl_team_of_one();
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
