/* kernels_conv2.c -- the general convolution (rectangular kernels, per-axis stride,
 * padding and dilation, groups; depthwise by direct loops), transposed convolution,
 * rectangular and adaptive pooling, nearest and bilinear upsampling; NCHW, both
 * precisions.  The bodies live in kernels_conv2_t.h.  Contracts: cdl.h, BEGIN CONV2. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "fp-contract=fast")
#endif

#include <math.h>
#include <string.h>

#include "cdl.h"

/* Output positions o in [*lo, *hi) of an axis of `out` whose input index
 * o * st - pad + off falls inside [0, in). */
static inline void cg_range(int64_t out, int64_t in, int64_t st, int64_t pad, int64_t off, int64_t *lo, int64_t *hi) {
    int64_t first = pad - off, end = in + pad - off; /* need first <= o * st < end */
    int64_t l = first > 0 ? (first + st - 1) / st : 0, h = end > 0 ? (end + st - 1) / st : 0;
    *hi = h < out ? h : out;
    *lo = l < *hi ? l : *hi;
}

/* Threads for a direct (depthwise) call over `parts` planes of `macs` multiply-adds
 * in all: 1 below ~20 us of work, else the pool's (at most the planes). */
static int cg_threads(int64_t parts, double macs) {
    int nt = cdl_parallel_threads();
    if ((int64_t)nt > parts) nt = (int)parts;
    if (macs < 4e5) nt = 1;
    return nt < 1 ? 1 : nt;
}

/* PyTorch's source scale of an upsampled axis (compute_scales_value): 1 / the scale
 * factor the user gave, else in / out. */
static inline double up_scale(double given, int64_t in, int64_t out) {
    return given > 0 ? 1.0 / given : (double)in / (double)out;
}

/* Nearest source index (nearest_idx): exact for the same size and for doubling, else
 * floor(dst * scale) in float arithmetic, as PyTorch computes it. */
static inline int64_t up_nearest(int64_t dst, int64_t in, int64_t out, double given) {
    if (out == in) return dst;
    if (out == 2 * in) return dst >> 1;
    float sc = (float)up_scale(given, in, out);
    int64_t s = (int64_t)floorf((float)dst * sc);
    return s < in - 1 ? s : in - 1;
}

/* Bilinear source (align_corners = False): the lower neighbour *i0, the offset *i1 (0
 * or 1) to the upper one and the upper one's weight *l1. */
static inline void up_linear(int64_t dst, int64_t in, double scale, int64_t *i0, int64_t *i1, double *l1) {
    double src = scale * ((double)dst + 0.5) - 0.5;
    if (src < 0) src = 0;
    int64_t i = (int64_t)src;
    if (i > in - 1) i = in - 1;
    *i0 = i;
    *i1 = i < in - 1 ? 1 : 0;
    *l1 = src - (double)i;
}

#define KERNELS_T "kernels_conv2_t.h"
#include "kernels_inst.h"
