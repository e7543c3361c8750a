/* kernels_inst.h -- instantiates the kernel template named by KERNELS_T (a header,
 * "kernels_<family>_t.h") for float and for double.  A kernels_<family>.c defines
 * KERNELS_T and includes this file once.  The template sees:
 *
 *   T        the element type
 *   S(name)  its public, suffixed name: cdl_<name>_f32 / cdl_<name>_f64
 *   M(fn)    the libm function of that type: M(exp) is expf / exp
 *   TMAX     the largest finite T
 *   TLANES   the number of T in 32 bytes (a vector register of the kernels): 8 / 4
 *
 * Not installed; no include guard (it is meant to be included once per family). */
#include <float.h>

#define T float
#define S(name) cdl_##name##_f32
#define M(fn) fn##f
#define TMAX FLT_MAX
#define TLANES 8
#include KERNELS_T
#undef T
#undef S
#undef M
#undef TMAX
#undef TLANES

#define T double
#define S(name) cdl_##name##_f64
#define M(fn) fn
#define TMAX DBL_MAX
#define TLANES 4
#include KERNELS_T
#undef T
#undef S
#undef M
#undef TMAX
#undef TLANES
