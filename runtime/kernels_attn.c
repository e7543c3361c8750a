/* kernels_attn.c -- batched matrix products with torch.matmul broadcasting, and fused
 * (flash-style) scaled dot-product attention, both precisions.  The bodies live in
 * kernels_attn_t.h; GEMMs go through blas.c.  Contracts: cdl.h, BEGIN ATTN. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#include <math.h>
#include <string.h>

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
 * about 20 us of work (waking a worker costs about that), else up to the pool, the
 * scratch slots and the slices. */
static int attn_threads(int64_t nwork, double cost) {
    int nt = cdl_parallel_threads();
    if (nt > CDL_ATTN_THREADS) nt = CDL_ATTN_THREADS;
    if ((int64_t)nt > nwork) nt = (int)nwork;
    if ((double)nwork * cost < 2e5) nt = 1;
    return nt < 1 ? 1 : nt;
}

#define KERNELS_T "kernels_attn_t.h"
#include "kernels_inst.h"
