/* kernels_sel.c -- selection and axis reductions: where, tril/triu, one_hot, max/min
 * (with the winners kept for the backward), argmax/argmin, var/std, logsumexp; both
 * precisions.  The bodies live in kernels_sel_t.h.  Contracts: cdl.h, BEGIN SEL. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#include <math.h>
#include <string.h>

#include "cdl.h"
#include "vmath.h" /* logsumexp's exp loops */

/* Walk of a reduction over the axes in mask (bit i = axis i, 0 = every axis) of a
 * tensor with runtime dims: size-1 axes dropped, neighbours of the same kind (reduced
 * or kept) merged; x is visited in memory order one inner run at a time.  Step o
 * covers x[o * inner, (o + 1) * inner), whose elements go to y[yoff] (inner run
 * reduced) or to y[yoff + j] (inner run kept). */
typedef struct SelWalk {
    int ng, inner_red;
    int64_t gd[CDL_MAXDIM], ys[CDL_MAXDIM], idx[CDL_MAXDIM];
    int64_t inner, nouter, ny, count, yoff;
} SelWalk;

/* 0 when there is nothing to walk (an empty tensor or a bad rank). */
static int sel_walk_init(SelWalk *w, int rank, const int64_t *dims, unsigned mask) {
    int gr[CDL_MAXDIM];
    memset(w, 0, sizeof *w);
    w->ny = 1;
    w->count = 1;
    if (rank < 0 || rank > CDL_MAXDIM) return 0;
    int64_t numel = 1;
    for (int i = 0; i < rank; i++) {
        int r = mask == 0 || (mask >> i & 1u);
        numel *= dims[i];
        if (r) w->count *= dims[i];
        else w->ny *= dims[i];
        if (dims[i] == 1) continue;
        if (w->ng > 0 && gr[w->ng - 1] == r) {
            w->gd[w->ng - 1] *= dims[i];
        } else {
            w->gd[w->ng] = dims[i];
            gr[w->ng] = r;
            w->ng++;
        }
    }
    if (numel <= 0) return 0;
    if (w->ng == 0) { /* one element */
        w->gd[0] = 1;
        gr[0] = 1;
        w->ng = 1;
    }
    int64_t s = 1;
    for (int g = w->ng - 1; g >= 0; g--) {
        w->ys[g] = gr[g] ? 0 : s;
        if (!gr[g]) s *= w->gd[g];
    }
    w->inner = w->gd[w->ng - 1];
    w->inner_red = gr[w->ng - 1];
    w->nouter = numel / w->inner;
    return 1;
}

static inline void sel_walk_next(SelWalk *w) {
    for (int g = w->ng - 2; g >= 0; g--) {
        w->yoff += w->ys[g];
        if (++w->idx[g] < w->gd[g]) return;
        w->yoff -= w->ys[g] * w->gd[g];
        w->idx[g] = 0;
    }
}

#define KERNELS_T "kernels_sel_t.h"
#include "kernels_inst.h"
