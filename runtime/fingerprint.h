/* fingerprint.h -- the model fingerprint a checkpoint must agree with, in one place for
 * the compiler (emit_common.c: emit_fingerprint, written into the generated model) and
 * the runtime (ckpt.c: cdl_model_fingerprint, over a loaded cdl_model): FNV-1a over the
 * model name, the real size, then per parameter its name with the NUL, rank (an int),
 * dims (int64 each) and the state flag (a bool).  A checkpoint made by one build loads
 * into the other precision's build only when the two agree.  Not installed. */
#ifndef CDL_FINGERPRINT_H
#define CDL_FINGERPRINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t cdl_fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

/* The fingerprint so far after the model's name and real size (4 or 8). */
static inline uint64_t cdl_fp_begin(const char *name, int real_size) {
    uint64_t h = cdl_fnv1a(14695981039346656037ull, name, strlen(name));
    return cdl_fnv1a(h, &real_size, sizeof real_size);
}

/* h extended by one parameter. */
static inline uint64_t cdl_fp_param(uint64_t h, const char *name, int rank, const int64_t *dims, bool state) {
    h = cdl_fnv1a(h, name, strlen(name) + 1);
    h = cdl_fnv1a(h, &rank, sizeof rank);
    h = cdl_fnv1a(h, dims, sizeof(int64_t) * (size_t)rank);
    return cdl_fnv1a(h, &state, sizeof state);
}

#endif
