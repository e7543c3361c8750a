/* kernels_attn.c -- batched matrix products with torch.matmul broadcasting, and fused
 * (flash-style) scaled dot-product attention, both precisions.  The bodies live in
 * kernels_attn_t.h; GEMMs go through blas.c.  Contracts: cdl.h, BEGIN ATTN. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#include <math.h>
#include <string.h>

#include "backend_int.h"
#include "cdl.h"
#include "vmath.h" /* the softmax's exp loops vectorise through libmvec */

/* Batch dims of a matmul_bc call after dropping size-1 dims and merging neighbours
 * whose strides compose (q @ k^T on [B, H, T, d] becomes one dim of B*H). */
typedef struct AttnBatch {
    int n;
    int64_t d[CDL_MAXDIM], sa[CDL_MAXDIM], sb[CDL_MAXDIM], sc[CDL_MAXDIM];
} AttnBatch;

static AttnBatch attn_batch_merge(int nb, const int64_t *bdims, const int64_t *sa, const int64_t *sb,
                                  const int64_t *sc) {
    AttnBatch m = {0};
    for (int k = 0; k < nb && k < CDL_MAXDIM; k++) {
        if (bdims[k] == 1) continue;
        int j = m.n - 1;
        if (j >= 0 && m.sa[j] == sa[k] * bdims[k] && m.sb[j] == sb[k] * bdims[k] && m.sc[j] == sc[k] * bdims[k]) {
            m.d[j] *= bdims[k];
            m.sa[j] = sa[k];
            m.sb[j] = sb[k];
            m.sc[j] = sc[k];
            continue;
        }
        m.d[m.n] = bdims[k];
        m.sa[m.n] = sa[k];
        m.sb[m.n] = sb[k];
        m.sc[m.n] = sc[k];
        m.n++;
    }
    return m;
}

/* Pool threads for nwork independent slices of `cost` multiply-adds each: 1 below
 * about 20 us of work (waking a worker costs about that), or when the slices' block
 * products are tiny ones that OpenBLAS serves (`blas_tiny`, below), else up to the pool,
 * the scratch slots and the slices. */
static int attn_threads(int64_t nwork, double cost, int blas_tiny) {
    int nt = cdl_parallel_threads();
    if (nt > CDL_ATTN_THREADS) nt = CDL_ATTN_THREADS;
    if ((int64_t)nt > nwork) nt = (int)nwork;
    if ((double)nwork * cost < 2e5 || blas_tiny) nt = 1;
    return nt < 1 ? 1 : nt;
}

/* A block product of at most this many multiply-adds on OpenBLAS keeps the call on one
 * thread.  Each OpenBLAS call takes and frees a buffer under one process-wide lock,
 * so two threads calling it at once slow each other down: the transformer's 29x29x16
 * blocks took 0.72 us a call alone and 1.54-1.57 us with two threads calling
 * (docs/benchmarks.md, "2 threads: the caller's wait and OpenBLAS's lock"), so that
 * its attention did the same wall time on two threads as on one, at twice the CPU
 * time.  oneDNN has no such lock (0.76-0.79 us either way); f64 products always run
 * on OpenBLAS.  Which thread computes a slice never changes its bits. */
#define ATTN_BLAS_TINY_MACS 16384

/* 1 when the largest block product of a call with geometry g is a tiny OpenBLAS one. */
static int attn_blas_tiny(const cdl_attn_geom *g, int f64) {
    const int64_t nr = g->tq < CDL_ATTN_BR ? g->tq : CDL_ATTN_BR, nc = g->tk < 2 * CDL_ATTN_BC ? g->tk : 2 * CDL_ATTN_BC;
    const int64_t macs = nr * nc * (g->d > g->dv ? g->d : g->dv);
    return macs <= ATTN_BLAS_TINY_MACS && cdl_gemm_on_openblas(macs, f64);
}

#define KERNELS_T "kernels_attn_t.h"
#include "kernels_inst.h"
