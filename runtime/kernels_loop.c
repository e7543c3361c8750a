/* kernels_loop.c -- data movement for loops: a loop keeps a batched value per step as
 * a stack [T][B][...] (at the compiled batch stride); collected results are [B, T, ...]. */
#include "cdl.h"

#define KERNELS_T "kernels_loop_t.h"
#include "kernels_inst.h"
