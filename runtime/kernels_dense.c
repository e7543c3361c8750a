/* kernels_dense.c -- dense, reduction, shape, softmax and embedding kernels in both
 * precisions, plus i32 versions of the element-moving ones.  The bodies live in kernels_dense_t.h (T = element type, S(name) = the
 * suffixed public name); GEMM itself is in blas.c.  Contracts: cdl.h, DENSE block.
 */
#include <math.h>
#include <string.h>

#include "cdl.h"

/* A sum that keeps an inner group of axes and reduces the ones outside and inside it
 * (a bias gradient: [N, C, H, W] -> [C]) or a row sum ([N*C, H*W] -> [N*C]), on the
 * runtime's pool when it reads CDL_PAR_MIN elements or more (the bench ResNet's bias
 * gradients, 800K each; cdl_parallel_ranges): a task owns a range of the kept elements
 * and sums each one in the same order as one thread, so the bits do not depend on the
 * thread count. */
typedef struct RedJob {
    const void *x;
    void *y;
    int64_t outer, kept, inner; /* x = [outer, kept, inner], y = [kept] */
} RedJob;

#define DENSE_MOVE_ONLY 0
#define KERNELS_T "kernels_dense_t.h"
#include "kernels_inst.h"
#undef DENSE_MOVE_ONLY

#define DENSE_MOVE_ONLY 1
#define T int32_t
#define S(name) cdl_##name##_i32
#include "kernels_dense_t.h"
#undef T
#undef S
#undef DENSE_MOVE_ONLY
