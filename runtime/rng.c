/* rng.c -- counter-based random numbers (Philox-4x32-10) and parameter initialisers.
 *
 * Philox-4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as
 * 1, 2, 3", SC 2011): a 128-bit counter is enciphered under a 64-bit key by 10 rounds
 * of multiply-hi/lo and xor.  A random number is a pure function of its inputs, so
 * any element can be drawn independently: no state, no thread dependence.
 *
 * Our mapping of cdl_rng_key (seed, step, stream) and element index to Philox:
 *   key     = 64-bit mix of (seed, stream, step)      (splitmix64 chain)
 *   counter = (index lo, index hi, step lo, step hi)
 * The step also sits in the counter, so two different steps can never produce the
 * same counter under the same key.
 *
 * Element i of a fill uses counter j = base + i:
 *   uniform f32:  top 24 bits of word 0, times 2^-24            in [0, 1)
 *   uniform f64:  top 53 bits of (word 0 : word 1), times 2^-53  in [0, 1)
 *   normal:       Box-Muller on the pair counter j >> 1: u1 from words 0:1, u2 from
 *                 words 2:3 (53 bits each); element j takes r cos(2 pi u2) when j is
 *                 even and r sin(2 pi u2) when j is odd.  So both outputs are used and
 *                 element j gets the same value whatever n and base are.  The f32 fill
 *                 is the f64 value rounded, so f32 and f64 builds see the same noise.
 */
#include "cdl.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

/* Philox-4x32-10 on counter c under key k: the raw generator (Random123's
 * philox4x32_R(10, ...)).  Exposed for the known-answer test. */
static void philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1) {
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
        uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        uint32_t n0 = hi1 ^ c[1] ^ k0;
        uint32_t n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
    }
}

/* Raw Philox with an explicit 128-bit counter and 64-bit key; used by the tests'
 * known-answer vectors (declared there, not in cdl.h). */
void cdl_philox_raw(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
void cdl_philox_raw(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    for (int i = 0; i < 4; i++) out[i] = ctr[i];
    philox4x32_10(out, key[0], key[1]);
}

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t rng_key64(cdl_rng_key k) {
    uint64_t h = splitmix64(k.seed);
    h = splitmix64(h ^ k.stream);
    h = splitmix64(h ^ k.step);
    return h;
}

static void philox_k(uint64_t key, uint64_t step, uint64_t index, uint32_t out[4]) {
    out[0] = (uint32_t)index;
    out[1] = (uint32_t)(index >> 32);
    out[2] = (uint32_t)step;
    out[3] = (uint32_t)(step >> 32);
    philox4x32_10(out, (uint32_t)key, (uint32_t)(key >> 32));
}

/* The four 32-bit random words for element `index` under key k. */
void cdl_philox(cdl_rng_key k, uint64_t index, uint32_t out[4]) {
    philox_k(rng_key64(k), k.step, index, out);
}

static double u53(uint32_t hi, uint32_t lo) {
    return (double)((((uint64_t)hi << 32) | lo) >> 11) * 0x1.0p-53;
}

void cdl_rand_f32(cdl_rng_key k, uint64_t base, int64_t n, float *out) {
    uint64_t key = rng_key64(k);
    uint32_t w[4];
    for (int64_t i = 0; i < n; i++) {
        philox_k(key, k.step, base + (uint64_t)i, w);
        out[i] = (float)(w[0] >> 8) * 0x1.0p-24f;
    }
}

void cdl_rand_f64(cdl_rng_key k, uint64_t base, int64_t n, double *out) {
    uint64_t key = rng_key64(k);
    uint32_t w[4];
    for (int64_t i = 0; i < n; i++) {
        philox_k(key, k.step, base + (uint64_t)i, w);
        out[i] = u53(w[0], w[1]);
    }
}

/* Box-Muller on the pair counter: z[0] = r cos t, z[1] = r sin t. */
static void normal_pair(uint64_t key, uint64_t step, uint64_t pair, double z[2]) {
    uint32_t w[4];
    philox_k(key, step, pair, w);
    double u1 = 1.0 - u53(w[0], w[1]);          /* (0, 1]: log is finite */
    double u2 = u53(w[2], w[3]);
    double r = sqrt(-2.0 * log(u1));
    double t = 6.283185307179586476925286766559 * u2;
    z[0] = r * cos(t);
    z[1] = r * sin(t);
}

/* Shared body of the normal fills: element i gets the value of absolute index
 * j = base + i (see the file comment).  Each pair is computed once. */
#define RANDN_BODY(T)                                                         \
    uint64_t key = rng_key64(k);                                              \
    double z[2];                                                              \
    int64_t i = 0;                                                            \
    while (i < n) {                                                           \
        uint64_t j = base + (uint64_t)i;                                      \
        normal_pair(key, k.step, j >> 1, z);                                  \
        out[i++] = (T)z[j & 1];                                               \
        if ((j & 1) == 0 && i < n) out[i++] = (T)z[1];                        \
    }

void cdl_randn_f32(cdl_rng_key k, uint64_t base, int64_t n, float *out) { RANDN_BODY(float) }
void cdl_randn_f64(cdl_rng_key k, uint64_t base, int64_t n, double *out) { RANDN_BODY(double) }

/* ---------------------------------------------------------------- initialisers */

/* How kind (a, b, fans) maps to a distribution: *uniform = 1 for U(lo, hi) with
 * lo = *p0 and hi = *p1, 0 for N(mean = *p0, std = *p1), -1 for the constant *p0.
 * PyTorch semantics: xavier_uniform bound gain*sqrt(6/(fan_in+fan_out)), xavier_normal
 * std gain*sqrt(2/(fan_in+fan_out)), kaiming (relu gain sqrt 2) uniform bound
 * sqrt(6/fan_in), normal std sqrt(2/fan_in), the layer default U(+-1/sqrt(fan_in)).
 * Fans below 1 count as 1. */
static void init_dist(cdl_init_kind kind, double a, double b, int64_t fan_in,
                      int64_t fan_out, int *uniform, double *p0, double *p1) {
    double fi = fan_in < 1 ? 1.0 : (double)fan_in;
    double fo = fan_out < 1 ? 1.0 : (double)fan_out;
    double gain = a == 0 ? 1.0 : a, bound;
    *uniform = 1;
    *p0 = 0;
    *p1 = 0;
    switch (kind) {
    case CDL_INIT_ZEROS: *uniform = -1; *p0 = 0; break;
    case CDL_INIT_ONES: *uniform = -1; *p0 = 1; break;
    case CDL_INIT_CONSTANT: *uniform = -1; *p0 = a; break;
    case CDL_INIT_UNIFORM: *p0 = a; *p1 = b; break;
    case CDL_INIT_NORMAL: *uniform = 0; *p0 = a; *p1 = b; break;
    case CDL_INIT_XAVIER_UNIFORM:
        bound = gain * sqrt(6.0 / (fi + fo));
        *p0 = -bound; *p1 = bound;
        break;
    case CDL_INIT_XAVIER_NORMAL: *uniform = 0; *p1 = gain * sqrt(2.0 / (fi + fo)); break;
    case CDL_INIT_HE_UNIFORM:
        bound = sqrt(6.0 / fi);
        *p0 = -bound; *p1 = bound;
        break;
    case CDL_INIT_HE_NORMAL: *uniform = 0; *p1 = sqrt(2.0 / fi); break;
    case CDL_INIT_DEFAULT:
    default:
        bound = 1.0 / sqrt(fi);
        *p0 = -bound; *p1 = bound;
        break;
    }
}

/* Fill p[0..n) per kind, drawing element i from index i under key k (uniforms via
 * the f64 uniform, normals via the f64 normal), computed in double and rounded, so
 * the f32 and f64 builds start from the same parameters up to rounding. */
#define INIT_BODY(T)                                                          \
    int uni;                                                                  \
    double p0, p1;                                                            \
    init_dist(kind, a, b, fan_in, fan_out, &uni, &p0, &p1);                   \
    if (uni < 0) {                                                            \
        for (int64_t i = 0; i < n; i++) p[i] = (T)p0;                         \
        return;                                                               \
    }                                                                         \
    uint64_t key = rng_key64(k);                                              \
    if (uni) {                                                                \
        uint32_t w[4];                                                        \
        for (int64_t i = 0; i < n; i++) {                                     \
            philox_k(key, k.step, (uint64_t)i, w);                            \
            p[i] = (T)(p0 + (p1 - p0) * u53(w[0], w[1]));                     \
        }                                                                     \
    } else {                                                                  \
        double z[2];                                                          \
        for (int64_t i = 0; i < n; i += 2) {                                  \
            normal_pair(key, k.step, (uint64_t)i >> 1, z);                    \
            p[i] = (T)(p0 + p1 * z[0]);                                       \
            if (i + 1 < n) p[i + 1] = (T)(p0 + p1 * z[1]);                    \
        }                                                                     \
    }

void cdl_init_f32(float *p, int64_t n, cdl_init_kind kind, double a, double b,
                  int64_t fan_in, int64_t fan_out, cdl_rng_key k) { INIT_BODY(float) }
void cdl_init_f64(double *p, int64_t n, cdl_init_kind kind, double a, double b,
                  int64_t fan_in, int64_t fan_out, cdl_rng_key k) { INIT_BODY(double) }
