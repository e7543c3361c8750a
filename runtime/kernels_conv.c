/* kernels_conv.c -- 2-D convolution (im2col + GEMM through cdl_gemm), max and average
 * pooling, batch normalisation; NCHW, both precisions.  The kernel bodies live in
 * kernels_conv_t.h, included once per element type; this file holds the
 * type-independent geometry helpers.  Contracts: cdl.h, BEGIN CONV. */
/* gcc 12 at -O2 vectorizes only loops whose trip count is known to suit the vector
 * width, and (trapping math) will not turn NaN-aware selects into vector blends; these
 * row loops need both (clang does it at -O2).  No code here relies on FP traps. */
/* -std=c11 also turns off FMA contraction in gcc (clang contracts within an expression
 * by default); the direct convolution's "acc += x * w" must be one FMA, not a multiply
 * and an add: half the instructions in its inner loops. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "no-trapping-math", "fp-contract=fast")
#endif

#include "cdl.h"

#include <math.h>
#include <string.h>

/* Valid output positions along one axis for kernel offset off: o in [*lo, *hi) is
 * exactly the set where 0 <= o*stride - pad + off < in (clamped to [0, out)). */
static inline void conv_span(int64_t out, int64_t in, int64_t stride, int64_t pad, int64_t off, int64_t *lo,
                             int64_t *hi) {
    int64_t a = pad - off; /* need o*stride >= a */
    int64_t l = a > 0 ? (a + stride - 1) / stride : 0;
    int64_t bnd = in + pad - off; /* need o*stride < bnd */
    int64_t h = bnd > 0 ? (bnd + stride - 1) / stride : 0;
    if (h > out) h = out;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* A 1x1, stride-1, unpadded conv needs no im2col: the image itself is the matrix. */
static inline int conv_direct(const cdl_conv2d_geom *g) {
    return g->r == 1 && g->s == 1 && g->stride == 1 && g->pad == 0;
}

/* Set by the trainer around a data-parallel step (trainer_dp.c), NULL otherwise. */
const cdl_bn_shards *cdl_bn_sharded;

int cdl_conv_lanes = 1;

#define KERNELS_T "kernels_conv_t.h"
#include "kernels_inst.h"
