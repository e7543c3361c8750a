/* test_rt_util.h -- the fixtures the runtime cmocka tests (tests/test_rt_*.c) share:
 *
 *   - a scratch directory per program (tmpdir_setup / tmpdir_teardown as cmocka group
 *     fixtures, tpath() for the files in it) and files written into it (spit);
 *   - expect_error: the runtime's last error names what it should;
 *   - capture_begin / capture_end: stdout and stderr captured in g_out / g_err; run():
 *     cdl_main on a model descriptor so captured, json_num() to read a number out of a
 *     JSON line it printed;
 *   - synthetic data for the kernel tests: a seeded xorshift urand() in [0, 1), random
 *     vectors, f32 copies, dot products and closeness checks against references
 *     (tu_dot, tu_close, tu_close_f), and a central-difference gradient check (fd_close,
 *     fd_check) with the tolerance |num - ana| <= 1e-5 + 1e-3 |num|.
 *
 * These tests link only the runtime library (see the Makefile), and each program is one
 * translation unit built from one tests/test_rt_*.c, so this header holds static state
 * and static inline functions (inline only to keep -Wunused-function quiet in the
 * programs that use a part of it).  Include it first: it brings the cmocka prelude, the
 * C headers and "cdl.h". */
#ifndef TEST_RT_UTIL_H
#define TEST_RT_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cdl.h"

/* ------------------------------------------------------------------ scratch files */

static char tmp_dir[256];

/* cmocka group fixture: a fresh directory /tmp/cdl_test_XXXXXX for the program's files. */
static inline int tmpdir_setup(void **st) {
    (void)st;
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/cdl_test_XXXXXX");
    return mkdtemp(tmp_dir) ? 0 : -1;
}

/* ... and removed with whatever the tests left in it. */
static inline int tmpdir_teardown(void **st) {
    (void)st;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* tmp_dir/name.  The result lives until 8 more calls, so that a few can stand in one
 * expression. */
static inline const char *tpath(const char *name) {
    static char p[8][320];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", tmp_dir, name);
    return p[k];
}

/* The file path holding exactly b[0..n). */
static inline void spit(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* The runtime's last error contains needle. */
static inline void expect_error(const char *needle) {
    const char *e = cdl_last_error();
    if (!strstr(e, needle)) fail_msg("error '%s' does not contain '%s'", e, needle);
}

/* ------------------------------------------------------------------ cdl_main runs */

static char g_out[1 << 16], g_err[1 << 16];

/* What fd holds from its start, NUL-terminated in buf[0..n). */
static inline void tu_read_fd(int fd, char *buf, size_t n) {
    lseek(fd, 0, SEEK_SET);
    ssize_t r = read(fd, buf, n - 1);
    buf[r > 0 ? r : 0] = 0;
}

static FILE *tu_cap[2];
static int tu_cap_saved[2];

/* From here to capture_end, stdout and stderr go to temporary files. */
static inline void capture_begin(void) {
    fflush(stdout);
    fflush(stderr);
    for (int k = 0; k < 2; k++) {
        tu_cap[k] = tmpfile();
        assert_non_null(tu_cap[k]);
    }
    for (int k = 0; k < 2; k++) {
        tu_cap_saved[k] = dup(1 + k);
        dup2(fileno(tu_cap[k]), 1 + k);
    }
}

/* stdout and stderr back where they were; what went to them since capture_begin is in
 * g_out and g_err. */
static inline void capture_end(void) {
    fflush(stdout);
    fflush(stderr);
    for (int k = 0; k < 2; k++) {
        dup2(tu_cap_saved[k], 1 + k);
        close(tu_cap_saved[k]);
    }
    tu_read_fd(fileno(tu_cap[0]), g_out, sizeof g_out);
    tu_read_fd(fileno(tu_cap[1]), g_err, sizeof g_err);
    for (int k = 0; k < 2; k++) fclose(tu_cap[k]);
}

/* cdl_main(m, "prog", args..., NULL) with stdout and stderr captured in g_out/g_err. */
static inline int run(const cdl_model *m, ...) {
    char *argv[64];
    int argc = 0;
    argv[argc++] = "prog";
    va_list ap;
    va_start(ap, m);
    for (char *a; (a = va_arg(ap, char *)) != NULL;) argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    capture_begin();
    int rc = cdl_main(m, argc, argv);
    capture_end();
    return rc;
}

/* The number after "key": in a one-line JSON object; NAN for null or missing. */
static inline double json_num(const char *js, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(js, pat);
    if (!p) return NAN;
    p += strlen(pat);
    if (!strncmp(p, "null", 4)) return NAN;
    return strtod(p, NULL);
}

/* ------------------------------------------------------------------ synthetic data */

/* xorshift64 state; a program that wants its own sequence calls urand_seed in main(),
 * before the tests run. */
static uint64_t urand_state = 0x9e3779b97f4a7c15ull;
static inline void urand_seed(uint64_t s) { urand_state = s; }

/* Uniform in [0, 1). */
static inline double urand(void) {
    urand_state ^= urand_state << 13;
    urand_state ^= urand_state >> 7;
    urand_state ^= urand_state << 17;
    return (double)(urand_state >> 11) / 9007199254740992.0;
}

/* x[0..n) uniform in [lo, hi). */
static inline void fill_rand(double *x, int64_t n, double lo, double hi) {
    for (int64_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * urand();
}
static inline void to_f32(const double *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = (float)x[i];
}

/* A new vector of n values uniform in [-1, 1) (free it). */
static inline double *dvec(int64_t n) {
    double *p = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    assert_non_null(p);
    for (int64_t i = 0; i < n; i++) p[i] = 2 * urand() - 1;
    return p;
}

/* A new f32 copy of x[0..n) (free it). */
static inline float *fcopy(const double *x, int64_t n) {
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    assert_non_null(p);
    to_f32(x, p, n);
    return p;
}

/* sum a[i] b[i] (the scalar a test's gradient check differentiates: <y, R>). */
static inline double tu_dot(const double *a, const double *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* |a[i] - b[i]| <= tol (1 + |b[i]|) for every i, else fail naming what[i]. */
static inline void tu_close(const char *what, const double *a, const double *b, int64_t n, double tol) {
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(a[i] - b[i]) <= tol * (1 + fabs(b[i])))) fail_msg("%s[%lld]: %.17g vs %.17g", what, (long long)i, a[i], b[i]);
}

/* The same for an f32 result against a double reference. */
static inline void tu_close_f(const char *what, const float *a, const double *b, int64_t n, double tol) {
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)a[i] - b[i]) <= tol * (1 + fabs(b[i]))))
            fail_msg("%s[%lld]: %.9g vs %.9g", what, (long long)i, (double)a[i], b[i]);
}

/* ------------------------------------------------------------------ gradient checks */

/* A numeric derivative num agrees with the analytic ana. */
static inline int fd_close(double num, double ana) { return fabs(num - ana) <= 1e-5 + 1e-3 * fabs(num); }

/* Central differences (h = 1e-6) of loss(ctx) with respect to every element of v[0..n),
 * compared with ana[0..n); a mismatch fails the test naming what[i]. */
typedef double (*loss_fn)(void *ctx);
static inline void fd_check(const char *what, double *v, int64_t n, const double *ana, loss_fn loss, void *ctx) {
    const double h = 1e-6;
    for (int64_t i = 0; i < n; i++) {
        double keep = v[i];
        v[i] = keep + h;
        double lp = loss(ctx);
        v[i] = keep - h;
        double lm = loss(ctx);
        v[i] = keep;
        double num = (lp - lm) / (2 * h);
        if (!fd_close(num, ana[i])) fail_msg("%s[%lld]: numeric %.10g analytic %.10g", what, (long long)i, num, ana[i]);
    }
}

/* One epoch of l from batch `skip` on, every batch's bytes and labels stored into xs
 * (rows * row_bytes) and ys; the number of rows. */
static inline int64_t rt_loader_epoch(cdl_loader *l, uint64_t epoch, int64_t skip, size_t row_bytes, int batch,
                                      unsigned char *xs, int32_t *ys) {
    assert_int_equal(cdl_loader_start(l, epoch, skip), 0);
    unsigned char *x = malloc(row_bytes * (size_t)batch);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)batch);
    int64_t rows = 0;
    int r;
    while ((r = cdl_loader_next(l, (void *[]){x, y})) > 0) {
        memcpy(xs + (size_t)rows * row_bytes, x, (size_t)r * row_bytes);
        memcpy(ys + rows, y, sizeof(int32_t) * (size_t)r);
        rows += r;
    }
    assert_int_equal(r, 0);
    free(x);
    free(y);
    return rows;
}

#endif /* TEST_RT_UTIL_H */
