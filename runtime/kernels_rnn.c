/* kernels_rnn.c -- fused pointwise parts of LSTM and GRU cells (the GEMMs are ordinary
 * linear ops) and the scatter behind a view's gradient; both precisions from one body
 * in kernels_rnn_t.h.  Contracts: cdl.h, BEGIN RNN. */
#include "cdl.h"

#include <math.h>
#include <string.h>

#include "vmath.h"

/* The cell loops call expf / tanhf (exp / tanh) directly: vmath.h lets GCC turn each
 * straight loop over them into calls of glibc's vector versions (libmvec), a few ulp
 * from the scalar ones.  The loops have no branches or selects (gcc 12 would not
 * vectorise those without -fno-trapping-math), so the file builds at the runtime's
 * ordinary -O3.  Clang calls the scalar functions: slower, same results to a few ulp. */

#define KERNELS_T "kernels_rnn_t.h"
#include "kernels_inst.h"
