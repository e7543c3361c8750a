/* kernels_loss.c -- loss kernels (cross-entropy fused with log-softmax, nll, mse, l1,
 * huber, bce, bce with logits, kl_normal) and their backward kernels.  The bodies
 * live in kernels_loss_t.h, instantiated here for float and double. */

/* gcc's -O2 vectorizes only loops whose trip count is known (cost model "very
 * cheap"); these loops have runtime sizes and possibly aliased outputs, so ask for the
 * usual model (runtime alias and tail checks).  clang vectorizes them at -O2 already. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#include <math.h>

#include "cdl.h"
#include "vmath.h"      /* expf, log1pf, logf loops vectorise through libmvec */

#define KERNELS_T "kernels_loss_t.h"
#include "kernels_inst.h"
