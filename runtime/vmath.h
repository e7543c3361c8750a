/* vmath.h -- let the compiler vectorise loops over expf, logf, log1pf, tanhf and erff.
 *
 * glibc's libmvec (part of libm since 2.22; Debian 12 has 2.36) holds SIMD versions of
 * these functions (_ZGVeN16v_expf for AVX-512, _ZGVdN8v_expf for AVX2, ...), accurate
 * to a few ulp.  math.h announces them only under -ffast-math, which we do not want
 * (it would break the NaN guard and change rounding everywhere).  Declaring the simd
 * attribute here gives GCC the same permission for these five functions alone; with
 * -fno-math-errno (RT_OPT) a loop over them becomes calls to the vector versions.
 * `-lm` links libmvec too (libm.so is a linker script naming it AS_NEEDED), so users
 * link exactly as before.  Clang ignores this (it needs -fveclib=libmvec) and calls the
 * scalar functions: slower, still correct.  Include it in kernel files only, after
 * <math.h>.  docs/design.md ("Vector math") records why we did not write our own. */
#ifndef CDL_VMATH_H
#define CDL_VMATH_H

#include <math.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((__simd__("notinbranch"))) float expf(float);
__attribute__((__simd__("notinbranch"))) float logf(float);
__attribute__((__simd__("notinbranch"))) float log1pf(float);
__attribute__((__simd__("notinbranch"))) float tanhf(float);
__attribute__((__simd__("notinbranch"))) double exp(double);
__attribute__((__simd__("notinbranch"))) double log(double);
__attribute__((__simd__("notinbranch"))) double log1p(double);
__attribute__((__simd__("notinbranch"))) double tanh(double);
/* erff/erf joined libmvec in glibc 2.35: older ones would leave _ZGVeN16v_erff unresolved. */
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
__attribute__((__simd__("notinbranch"))) float erff(float);
__attribute__((__simd__("notinbranch"))) double erf(double);
#endif
#endif

#endif
