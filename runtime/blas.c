/* blas.c -- the runtime's only door to BLAS (OpenBLAS through cblas.h).
 *
 * cdl_gemm_f32/f64 are row-major GEMMs with transpose flags, so that generated code
 * never copies a matrix to transpose it.  Nothing else in the tree includes cblas.h.
 */
#include <cblas.h>

#include "cdl.h"

/* C[M,N] = alpha op(A) op(B) + beta C, all row-major.  op(X) = X when the flag is 0,
 * X^T otherwise; lda/ldb/ldc are the physical row lengths (compiled sizes).
 * Empty products are handled here (OpenBLAS is not asked about K = 0): C = beta C,
 * and beta = 0 overwrites C even when it holds NaNs. */
#define CDL_GEMM(T, S, CBLAS)                                                          \
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
        CBLAS(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,                        \
              transB ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N, (blasint)K,   \
              alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);          \
    }

CDL_GEMM(float, f32, cblas_sgemm)
CDL_GEMM(double, f64, cblas_dgemm)

/* Number of OpenBLAS threads and of the runtime's pool; n <= 0 leaves the defaults.
 * The two never run at once: the pool's kernels call no GEMM inside a job. */
void cdl_blas_set_threads(int n) {
    if (n > 0) {
        openblas_set_num_threads(n);
        cdl_parallel_set_threads(n);
    }
}
