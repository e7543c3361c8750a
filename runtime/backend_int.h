/* backend_int.h -- internal to the runtime: the kernel backends.
 *
 * OpenBLAS serves every build.  `make BACKEND=onednn` defines CDL_BACKEND_ONEDNN and
 * compiles runtime/blas_dnnl.c (the only includer of dnnl.h), and blas.c then sends the
 * f32 GEMMs there; f64 GEMMs always stay on OpenBLAS (oneDNN has no dgemm).  Which
 * backend serves the process is decided once, at the first question (blas.c):
 * CDL_BACKEND=openblas in the environment turns a oneDNN build back to OpenBLAS. */
#ifndef CDL_BACKEND_INT_H
#define CDL_BACKEND_INT_H

#include "cdl.h"

/* Products under this many multiply-adds run as one single-threaded library call;
 * larger ones as CDL_GEMM_BLOCKS blocks of C on the runtime's pool (blas.c says why). */
#define CDL_GEMM_PAR_MACS ((int64_t)1 << 23)
#define CDL_GEMM_BLOCKS 2

/* In a oneDNN build, f32 products of more multiply-adds than this go to oneDNN, smaller
 * ones to OpenBLAS, where dnnl_sgemm's fixed cost (~0.2 us) loses: by CPU time, every
 * transpose pair, 16^3 0.15-0.18 us OpenBLAS against 0.27-0.36 us; 16x16x64 even; 32^3
 * and beyond oneDNN wins, 64^3 2.7 against 5.2 us.  It was 16384; at 8192 the
 * transformer's 29x29x16 attention blocks (13456) go to oneDNN, alone as fast as
 * OpenBLAS (0.73-1.03 against 0.83-0.98 us a call) and unchanged when two threads call
 * at once, where OpenBLAS takes 1.5-1.6 us (its buffer allocator's lock:
 * docs/benchmarks.md, "2 threads: the caller's wait and OpenBLAS's lock"). */
#define CDL_DNNL_MIN_MACS 8192

/* 1 when oneDNN serves this process's f32 kernels (blas.c). */
int cdl_backend_dnnl(void);

/* 1 when a product of `macs` multiply-adds (f64: doubles, else floats) runs on OpenBLAS:
 * every f64 one, and the f32 ones when oneDNN does not serve this process or the product
 * has at most CDL_DNNL_MIN_MACS (the rule cdl_gemm_f32 follows, blas.c). */
int cdl_gemm_on_openblas(int64_t macs, int f64);

#ifdef CDL_BACKEND_ONEDNN
/* Row-major C = alpha op(A) op(B) + beta C through dnnl_sgemm; M, N, K > 0. */
void cdl_dnnl_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                    int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* From now on every thread that calls dnnl_sgemm runs it on an OpenMP team of one. */
void cdl_dnnl_single_threaded(void);
#endif

#endif
