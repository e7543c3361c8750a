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
#include <stdio.h>
#include <stdlib.h>

#include "backend_int.h"

void omp_set_num_threads(int n); /* libgomp; <omp.h> needs -fopenmp with some compilers */

void cdl_dnnl_set_threads(int n) {
    omp_set_num_threads(n);
}

/* dnnl_sgemm fails only on arguments no caller in the runtime makes (a leading
 * dimension shorter than a row): an internal bug, so it stops the program. */
void cdl_dnnl_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                    int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
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
