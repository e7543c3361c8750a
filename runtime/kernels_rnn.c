/* kernels_rnn.c -- fused pointwise parts of LSTM and GRU cells (the GEMMs are ordinary
 * linear ops) and the scatter behind a view's gradient; both precisions from one body
 * in kernels_rnn_t.h.  Contracts: cdl.h, BEGIN RNN. */
/* gcc 12 at -O2 vectorizes only loops whose trip count is known to suit the vector
 * width, and (trapping math) will not turn NaN-aware selects into vector blends; these
 * row loops need both (clang does it at -O2).  No code here relies on FP traps. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "no-trapping-math")
#endif

#include "cdl.h"

#include <math.h>
#include <string.h>

/* Single precision exp and tanh written so that the cell loops vectorize (libm's
 * expf / tanhf are opaque calls, and were most of an LSTM step).  Relative error of
 * rn_expf about 2e-7 over the clamped range; rn_tanhf is Cephes' tanhf: an odd
 * polynomial below |x| = 0.625, 1 - 2 / (exp(2|x|) + 1) above.  Both branch-free.
 * The double build keeps libm's exp / tanh (it serves the gradient checks). */
static inline float rn_expf(float v) {
    float x = v > -87.0f ? v : -87.0f; /* NaN -> -87 here (no UB in the int conversion) */
    x = x < 88.0f ? x : 88.0f;
    float t = x * 1.44269504088896341f;                 /* x / ln 2 */
    int32_t n = (int32_t)(t + copysignf(0.5f, t));     /* round to nearest */
    float fn = (float)n;
    float r = x - fn * 0.693359375f - fn * -2.12194440e-4f; /* x - n ln 2, in two parts */
    float p = 1.9875691500e-4f;                         /* Cephes expf polynomial */
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } scale = {.i = (n + 127) << 23}; /* 2^n, n in [-126, 127] */
    float res = p * scale.f; /* computed unconditionally: the selects must not guard FP ops */
    return v == v ? res : v; /* ... and NaN back out */
}

static inline float rn_tanhf(float x) {
    float a = fabsf(x);
    float z = x * x;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                    1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
    float big = copysignf(1.0f - 2.0f / (rn_expf(2.0f * a) + 1.0f), x);
    return a < 0.625f ? small : big;
}

#define T float
#define S(name) cdl_##name##_f32
#define EXP rn_expf
#define TANH rn_tanhf
#include "kernels_rnn_t.h"
#undef T
#undef S
#undef EXP
#undef TANH

#define T double
#define S(name) cdl_##name##_f64
#define EXP exp
#define TANH tanh
#include "kernels_rnn_t.h"
#undef T
#undef S
#undef EXP
#undef TANH
