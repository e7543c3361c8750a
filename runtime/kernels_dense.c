/* kernels_dense.c -- dense, reduction, shape, softmax and embedding kernels in both
 * precisions, plus i32 versions of the element-moving ones.  The bodies live in kernels_dense_t.h (T = element type, S(name) = the
 * suffixed public name); GEMM itself is in blas.c.  Contracts: cdl.h, DENSE block.
 */
#include <math.h>
#include <string.h>

#include "cdl.h"

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
