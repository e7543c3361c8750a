/* kernels_norm.c -- layer, RMS, group (and so instance) normalisation, forward and
 * backward, both precisions.  The bodies live in kernels_norm_t.h.  Contracts: cdl.h,
 * BEGIN NORM. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#include <math.h>
#include <string.h>

#include "cdl.h"

#define KERNELS_T "kernels_norm_t.h"
#include "kernels_inst.h"
