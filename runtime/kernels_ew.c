/* kernels_ew.c -- elementwise kernels: fills and copies, broadcasting binary ops,
 * activations and their backward helpers, dropout.  The bodies live in
 * kernels_ew_t.h, written once and instantiated here for float and double. */

/* gcc's -O2 vectorizes only loops whose trip count is known (cost model "very
 * cheap"); these loops have runtime sizes and possibly aliased outputs, so ask for the
 * usual model (runtime alias and tail checks).  clang vectorizes them at -O2 already. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#include <float.h>
#include <math.h>
#include <string.h>

#if defined(__AVX512F__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "cdl.h"
#include "vmath.h"      /* exp, sigmoid, tanh, softplus loops vectorise through libmvec */

/* ---------------------------------------------------------------- dropout bits
 * Dropout needs one 32-bit random word per element, fast: element e = base + i takes
 * word e % 4 of Philox-4x32-10 counter e / 4, and the counters are enciphered
 * EW_LANES at a time in struct-of-arrays form so that the rounds vectorize (~10x the
 * speed of one cdl_rand_f32 call per element).  The key material comes from rng.c:
 * (k0, k1, s0, s1) = cdl_philox(k, 2^64 - 1), a counter no fill reaches, so the mask
 * is a pure function of (seed, step, stream, element) like every random number, and
 * identical in f32 and f64 builds, static and tape mode.  Counter j is
 * (j lo, j hi, s0, s1) under key (k0, k1).  Keep iff word >= p * 2^32. */
#define EW_LANES 16

typedef struct EwDropKey { uint32_t k0, k1, s0, s1; } EwDropKey;

static EwDropKey ew_drop_key(cdl_rng_key k) {
    uint32_t w[4];
    cdl_philox(k, UINT64_MAX, w);
    return (EwDropKey){w[0], w[1], w[2], w[3]};
}

/* The 4 * EW_LANES words of counters c .. c + EW_LANES - 1, word q of counter c + j
 * at out[4 j + q].  With AVX-512 the rounds run on 64-bit lanes holding 32-bit words,
 * so that one vpmuludq gives each lane's full 64-bit product: gcc -O3 -march=native
 * did not vectorize the scalar rounds below (they cost 12% of the make-run epoch's
 * training thread, 0.10 s; this version 0.015 s).  Both give the same words
 * (test_rt_kernels_ew pins them to cdl_philox_raw). */
#if defined(__AVX512F__) && defined(__GNUC__)
static void ew_drop_bits(EwDropKey key, uint64_t c, uint32_t out[4 * EW_LANES]) {
    enum { H = EW_LANES / 8 };                   /* 8 counters per register */
    __m512i c0[H], c1[H], c2[H], c3[H];
    const __m512i lo = _mm512_set1_epi64(0xFFFFFFFF);
    const __m512i m0 = _mm512_set1_epi64(0xD2511F53u), m1 = _mm512_set1_epi64(0xCD9E8D57u);
    for (int h = 0; h < H; h++) {
        __m512i ctr = _mm512_add_epi64(_mm512_set1_epi64((long long)(c + 8u * (unsigned)h)),
                                       _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
        c0[h] = _mm512_and_si512(ctr, lo);
        c1[h] = _mm512_srli_epi64(ctr, 32);
        c2[h] = _mm512_set1_epi64(key.s0);
        c3[h] = _mm512_set1_epi64(key.s1);
    }
    uint32_t k0 = key.k0, k1 = key.k1;
    for (int r = 0; r < 10; r++) {              /* Philox-4x32 round, as rng.c */
        const __m512i K0 = _mm512_set1_epi64(k0), K1 = _mm512_set1_epi64(k1);
        for (int h = 0; h < H; h++) {
            __m512i p0 = _mm512_mul_epu32(c0[h], m0), p1 = _mm512_mul_epu32(c2[h], m1);
            __m512i n0 = _mm512_xor_si512(_mm512_xor_si512(_mm512_srli_epi64(p1, 32), c1[h]), K0);
            __m512i n2 = _mm512_xor_si512(_mm512_xor_si512(_mm512_srli_epi64(p0, 32), c3[h]), K1);
            c1[h] = _mm512_and_si512(p1, lo);
            c3[h] = _mm512_and_si512(p0, lo);
            c0[h] = n0;
            c2[h] = n2;
        }
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    for (int h = 0; h < H; h++) {
        uint64_t w[4][8];
        _mm512_storeu_si512(w[0], c0[h]);
        _mm512_storeu_si512(w[1], c1[h]);
        _mm512_storeu_si512(w[2], c2[h]);
        _mm512_storeu_si512(w[3], c3[h]);
        for (int j = 0; j < 8; j++)
            for (int q = 0; q < 4; q++) out[4 * (8 * h + j) + q] = (uint32_t)w[q][j];
    }
}
#else
static void ew_drop_bits(EwDropKey key, uint64_t c, uint32_t out[4 * EW_LANES]) {
    uint32_t c0[EW_LANES], c1[EW_LANES], c2[EW_LANES], c3[EW_LANES];
    for (int j = 0; j < EW_LANES; j++) {
        c0[j] = (uint32_t)(c + (uint64_t)j);
        c1[j] = (uint32_t)((c + (uint64_t)j) >> 32);
        c2[j] = key.s0;
        c3[j] = key.s1;
    }
    uint32_t k0 = key.k0, k1 = key.k1;
    for (int r = 0; r < 10; r++) {          /* Philox-4x32 round, as rng.c */
        for (int j = 0; j < EW_LANES; j++) {
            uint64_t p0 = (uint64_t)0xD2511F53u * c0[j];
            uint64_t p1 = (uint64_t)0xCD9E8D57u * c2[j];
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[j] ^ k0;
            uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[j] ^ k1;
            c1[j] = (uint32_t)p1;
            c3[j] = (uint32_t)p0;
            c0[j] = n0;
            c2[j] = n2;
        }
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    for (int j = 0; j < EW_LANES; j++) {
        out[4 * j] = c0[j];
        out[4 * j + 1] = c1[j];
        out[4 * j + 2] = c2[j];
        out[4 * j + 3] = c3[j];
    }
}
#endif

/* ---------------------------------------------------------------- the pool
 * The large elementwise calls (relu and its backward, the binary ops: the bench
 * ResNet's 800K-element activations) are cut into ranges run on the runtime's pool
 * (cdl_parallel_ranges: from CDL_PAR_MIN elements, ranges starting on 16-element,
 * 64-byte, boundaries).  An element's result does not depend on the range it falls
 * in, so the bits are the same for any thread count. */
typedef struct EwJob EwJob;
struct EwJob {
    void (*run)(const EwJob *J, int64_t i0, int64_t i1); /* the kernel on [i0, i1) */
    int64_t n;
    int op;
    const void *a, *b;
    int64_t sa, sb;
    void *y;
};

static void ew_range(void *arg, int64_t i0, int64_t i1) {
    const EwJob *J = arg;
    if (i1 > i0) J->run(J, i0, i1);
}

/* Run J over its n elements: on the pool when big enough, else here in one range. */
static void ew_run(EwJob *J) {
    cdl_parallel_ranges(J->n, 1, 16, ew_range, J);
}

void cdl_fill_i32(int64_t n, int32_t v, int32_t *y) {
    for (int64_t i = 0; i < n; i++) y[i] = v;
}

#define KERNELS_T "kernels_ew_t.h"
#include "kernels_inst.h"
