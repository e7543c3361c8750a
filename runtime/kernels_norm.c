/* kernels_norm.c -- layer, RMS, group (and so instance) normalisation, forward and
 * backward, both precisions.  The bodies live in kernels_norm_t.h.  Contracts: cdl.h,
 * BEGIN NORM. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#include <math.h>
#include <string.h>

#include "cdl.h"

#define T float
#define S(name) cdl_##name##_f32
#include "kernels_norm_t.h"
#undef T
#undef S

#define T double
#define S(name) cdl_##name##_f64
#include "kernels_norm_t.h"
#undef T
#undef S
