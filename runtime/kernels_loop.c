/* kernels_loop.c -- data movement for loops: a loop keeps a batched value per step as
 * a stack [T][B][...] (at the compiled batch stride); collected results are [B, T, ...]. */
#include "cdl.h"

#define T float
#define S(name) cdl_##name##_f32
#include "kernels_loop_t.h"
#undef T
#undef S
#define T double
#define S(name) cdl_##name##_f64
#include "kernels_loop_t.h"
#undef T
#undef S
