/* kernels_ew_t.h -- elementwise kernel bodies, included twice by kernels_ew.c with
 *   T     the element type (float, double)
 *   S(f)  the public name (cdl_f_f32 / cdl_f_f64)
 *   M(f)  the libm function for T (expf / exp)
 *   TMAX  the largest finite T
 * Contracts are in cdl.h (block EW).  Loops are plain so that -O2 vectorizes them;
 * outputs may alias inputs exactly, so no restrict here (gcc and clang version the
 * loops on an overlap check instead). */

/* A double attribute as T: beyond the finite T range (or +-1e308, the compiler's
 * spelling of infinity) it becomes +-infinity instead of undefined behaviour. */
static inline T S(cvt)(double v) {
    if (v >= 1e308 || v > (double)TMAX) return (T)INFINITY;
    if (v <= -1e308 || v < -(double)TMAX) return (T)-INFINITY;
    return (T)v;
}

/* ---------------------------------------------------------------- basics */

void S(fill)(int64_t n, double v, T *y) {
    T c = S(cvt)(v);
    for (int64_t i = 0; i < n; i++) y[i] = c;
}

void S(copy)(int64_t n, const T *x, T *y) {
    if (n > 0 && x != y) memmove(y, x, (size_t)n * sizeof(T));
}

void S(add_inplace)(int64_t n, const T *x, T *y) {
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

void S(axpy)(int64_t n, double a, const T *x, T *y) {
    T c = S(cvt)(a);
    for (int64_t i = 0; i < n; i++) y[i] += c * x[i];
}

void S(scale)(int64_t n, double a, T *y) {
    T c = S(cvt)(a);
    for (int64_t i = 0; i < n; i++) y[i] *= c;
}

/* ---------------------------------------------------------------- binary */

/* One strided loop of y[i] = EXPR(u = a[i*sa], v = b[i*sb]), with the
 * contiguous and scalar stride patterns spelled out so they vectorize. */
#define EW_BIN_LOOP(EXPR)                                                        \
    do {                                                                         \
        if (sa == 1 && sb == 1) {                                                \
            for (int64_t i = 0; i < n; i++) { T u = a[i], v = b[i]; y[i] = (EXPR); } \
        } else if (sa == 1 && sb == 0) {                                         \
            T v = b[0];                                                          \
            for (int64_t i = 0; i < n; i++) { T u = a[i]; y[i] = (EXPR); }       \
        } else if (sa == 0 && sb == 1) {                                         \
            T u = a[0];                                                          \
            for (int64_t i = 0; i < n; i++) { T v = b[i]; y[i] = (EXPR); }       \
        } else {                                                                 \
            for (int64_t i = 0; i < n; i++) {                                    \
                T u = a[i * sa], v = b[i * sb]; y[i] = (EXPR);                   \
            }                                                                    \
        }                                                                        \
    } while (0)

static void S(binary_seq)(int op, int64_t n, const T *a, int64_t sa, const T *b, int64_t sb, T *y) {
    switch (op) {
    case CDL_BIN_ADD: EW_BIN_LOOP(u + v); break;
    case CDL_BIN_SUB: EW_BIN_LOOP(u - v); break;
    case CDL_BIN_MUL: EW_BIN_LOOP(u * v); break;
    case CDL_BIN_DIV: EW_BIN_LOOP(u / v); break;
    case CDL_BIN_MAX: EW_BIN_LOOP(u >= v ? u : v); break;
    case CDL_BIN_MIN: EW_BIN_LOOP(u <= v ? u : v); break;
    case CDL_BIN_LT: EW_BIN_LOOP((T)(u < v)); break;
    case CDL_BIN_LE: EW_BIN_LOOP((T)(u <= v)); break;
    case CDL_BIN_GT: EW_BIN_LOOP((T)(u > v)); break;
    case CDL_BIN_GE: EW_BIN_LOOP((T)(u >= v)); break;
    case CDL_BIN_EQ: EW_BIN_LOOP((T)(u == v)); break;
    case CDL_BIN_NE: EW_BIN_LOOP((T)(u != v)); break;
    default: break;       /* unknown op: leave y alone (generated code never passes one) */
    }
}

static void S(binary_range)(const EwJob *J, int64_t i0, int64_t i1) {
    const T *a = J->a, *b = J->b;
    S(binary_seq)(J->op, i1 - i0, a + i0 * J->sa, J->sa, b + i0 * J->sb, J->sb, (T *)J->y + i0);
}

void S(binary)(int op, int64_t n, const T *a, int64_t sa, const T *b, int64_t sb, T *y) {
    EwJob J = {.run = S(binary_range), .n = n, .op = op, .a = a, .b = b, .sa = sa, .sb = sb, .y = y};
    ew_run(&J);
}

void S(add)(int64_t n, const T *a, const T *b, T *y) { S(binary)(CDL_BIN_ADD, n, a, 1, b, 1, y); }
void S(sub)(int64_t n, const T *a, const T *b, T *y) { S(binary)(CDL_BIN_SUB, n, a, 1, b, 1, y); }
void S(mul)(int64_t n, const T *a, const T *b, T *y) { S(binary)(CDL_BIN_MUL, n, a, 1, b, 1, y); }
void S(div)(int64_t n, const T *a, const T *b, T *y) { S(binary)(CDL_BIN_DIV, n, a, 1, b, 1, y); }
void S(maximum)(int64_t n, const T *a, const T *b, T *y) { S(binary)(CDL_BIN_MAX, n, a, 1, b, 1, y); }
void S(minimum)(int64_t n, const T *a, const T *b, T *y) { S(binary)(CDL_BIN_MIN, n, a, 1, b, 1, y); }

/* Walk the outer dims (all but the last) of a broadcast, calling ROW(oa, ob, oy)
 * with the element offsets of a, b and the contiguous output row (rank >= 1; any
 * dim <= 0 returns from the caller).  Shared by binary_bc and maxmin_bwd. */
#define EW_BC_WALK(ROW)                                                          \
    do {                                                                         \
        int64_t inner = dims[rank - 1], outer = 1;                               \
        for (int k = 0; k < rank; k++) if (dims[k] <= 0) return;                 \
        for (int k = 0; k < rank - 1; k++) outer *= dims[k];                     \
        int64_t idx[CDL_MAXDIM] = {0}, oa = 0, ob = 0;                           \
        for (int64_t o = 0; o < outer; o++) {                                    \
            int64_t oy = o * inner;                                              \
            ROW;                                                                 \
            for (int k = rank - 2; k >= 0; k--) {                                \
                idx[k]++; oa += sa[k]; ob += sb[k];                              \
                if (idx[k] < dims[k]) break;                                     \
                oa -= sa[k] * dims[k]; ob -= sb[k] * dims[k]; idx[k] = 0;        \
            }                                                                    \
        }                                                                        \
    } while (0)

void S(binary_bc)(int op, int rank, const int64_t *dims, const int64_t *sa,
                  const int64_t *sb, const T *a, const T *b, T *y) {
    if (rank > CDL_MAXDIM) return;
    if (rank <= 0) { S(binary)(op, 1, a, 0, b, 0, y); return; }
    int64_t isa = sa[rank - 1], isb = sb[rank - 1];
    EW_BC_WALK(S(binary)(op, inner, a + oa, isa, b + ob, isb, y + oy));
}

static void S(maxmin_row)(int is_max, int64_t n, const T *g, const T *a, int64_t sa,
                          const T *b, int64_t sb, T *dx) {
    if (is_max) {
        for (int64_t i = 0; i < n; i++) { T gv = g[i]; dx[i] = a[i * sa] >= b[i * sb] ? gv : (T)0; }
    } else {
        for (int64_t i = 0; i < n; i++) { T gv = g[i]; dx[i] = a[i * sa] <= b[i * sb] ? gv : (T)0; }
    }
}

void S(maxmin_bwd)(int is_max, int rank, const int64_t *dims, const int64_t *sa,
                   const int64_t *sb, const T *g, const T *a, const T *b, T *dx) {
    if (rank > CDL_MAXDIM) return;
    if (rank <= 0) { S(maxmin_row)(is_max, 1, g, a, 0, b, 0, dx); return; }
    int64_t isa = sa[rank - 1], isb = sb[rank - 1];
    EW_BC_WALK(S(maxmin_row)(is_max, inner, g + oy, a + oa, isa, b + ob, isb, dx + oy));
}

/* ---------------------------------------------------------------- unary */

#define EW_UNARY(name, EXPR)                                                     \
    void S(name)(int64_t n, const T *x, T *y) {                                  \
        for (int64_t i = 0; i < n; i++) { T v = x[i]; y[i] = (EXPR); }           \
    }

EW_UNARY(neg, -v)
EW_UNARY(exp, M(exp)(v))
EW_UNARY(log, M(log)(v))
EW_UNARY(sqrt, M(sqrt)(v))
EW_UNARY(abs, M(fabs)(v))
EW_UNARY(square, v * v)

/* relu on the pool when large (ew_run) */
static void S(relu_range)(const EwJob *J, int64_t i0, int64_t i1) {
    const T *x = J->a;
    T *y = J->y;
    for (int64_t i = i0; i < i1; i++) { T v = x[i]; y[i] = v > 0 ? v : (T)0; }
}
void S(relu)(int64_t n, const T *x, T *y) {
    EwJob J = {.run = S(relu_range), .n = n, .a = x, .y = y};
    ew_run(&J);
}

EW_UNARY(sigmoid, (T)1 / ((T)1 + M(exp)(-v)))
EW_UNARY(tanh, M(tanh)(v))
EW_UNARY(sin, M(sin)(v))
EW_UNARY(cos, M(cos)(v))
EW_UNARY(log1p, M(log1p)(v))
EW_UNARY(sign, v != v ? v : (T)(v > 0) - (T)(v < 0))    /* NaN stays NaN; +-inf give +-1, as torch.sign */
/* The tanh approximation (approximate="tanh"): 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3))). */
EW_UNARY(gelu_tanh, (T)0.5 * v * ((T)1 + M(tanh)((T)0.79788456080286535588 * (v + (T)0.044715 * v * v * v))))
/* log(1 + e^v) without overflow: max(v, 0) + log1p(e^-|v|). */
EW_UNARY(softplus, (v > 0 ? v : (T)0) + M(log1p)(M(exp)(-M(fabs)(v))))
EW_UNARY(silu, v / ((T)1 + M(exp)(-v)))
EW_UNARY(mish, v * M(tanh)((v > 0 ? v : (T)0) + M(log1p)(M(exp)(-M(fabs)(v)))))

void S(pows)(int64_t n, double p, const T *x, T *y) {
    if (p == 2.0) { S(square)(n, x, y); return; }
    if (p == 1.0) { S(copy)(n, x, y); return; }
    if (p == 0.5) { S(sqrt)(n, x, y); return; }
    if (p == 0.0) { for (int64_t i = 0; i < n; i++) y[i] = 1; return; }
    if (p == -1.0) { for (int64_t i = 0; i < n; i++) y[i] = (T)1 / x[i]; return; }
    if (p == 3.0) { for (int64_t i = 0; i < n; i++) { T v = x[i]; y[i] = v * v * v; } return; }
    T c = S(cvt)(p);
    for (int64_t i = 0; i < n; i++) y[i] = M(pow)(x[i], c);
}

void S(clamp)(int64_t n, double lo, double hi, const T *x, T *y) {
    T l = S(cvt)(lo), h = S(cvt)(hi);
    for (int64_t i = 0; i < n; i++) { T v = x[i]; v = v < l ? l : v; y[i] = v > h ? h : v; }
}

void S(leaky_relu)(int64_t n, double slope, const T *x, T *y) {
    T s = S(cvt)(slope);
    for (int64_t i = 0; i < n; i++) { T v = x[i]; y[i] = v > 0 ? v : s * v; }
}

void S(elu)(int64_t n, double alpha, const T *x, T *y) {
    T al = S(cvt)(alpha);
    for (int64_t i = 0; i < n; i++) { T v = x[i]; y[i] = v > 0 ? v : al * M(expm1)(v); }
}

/* ---------------------------------------------------------------- unary backward */

static void S(relu_bwd_range)(const EwJob *J, int64_t i0, int64_t i1) {
    const T *g = J->a, *x = J->b;
    T *dx = J->y;
    for (int64_t i = i0; i < i1; i++) { T gv = g[i]; dx[i] = x[i] > 0 ? gv : (T)0; }
}
void S(relu_bwd)(int64_t n, const T *g, const T *x, T *dx) {
    EwJob J = {.run = S(relu_bwd_range), .n = n, .a = g, .b = x, .y = dx};
    ew_run(&J);
}

void S(leaky_relu_bwd)(int64_t n, double slope, const T *g, const T *x, T *dx) {
    T s = S(cvt)(slope);
    for (int64_t i = 0; i < n; i++) { T gv = g[i]; dx[i] = x[i] > 0 ? gv : s * gv; }
}

/* y = sigmoid(x): dy/dx = y (1 - y). */
void S(sigmoid_bwd)(int64_t n, const T *g, const T *y, T *dx) {
    for (int64_t i = 0; i < n; i++) { T v = y[i]; dx[i] = g[i] * v * ((T)1 - v); }
}

/* y = tanh(x): dy/dx = 1 - y^2. */
void S(tanh_bwd)(int64_t n, const T *g, const T *y, T *dx) {
    for (int64_t i = 0; i < n; i++) { T v = y[i]; dx[i] = g[i] * ((T)1 - v * v); }
}

/* ---------------------------------------------------------------- erf, GELU
 * These go through glibc's vector erff/erf and expf/exp (vmath.h) EW_VBLK elements at a
 * time in a stack block, the last block padded with zeros, so that every element takes
 * the same vector code: a value never depends on n, on the output aliasing the input
 * or on where a thread split falls.  (A plain loop sends the remainder and aliased
 * calls through the scalar erff, which differs from the vector one by up to 4 ulp.) */
#ifndef EW_VBLK
#define EW_VBLK 64
#endif

/* e[j] = erf(x[j] s) and, when p, p[j] = exp(-x[j]^2 / 2), for j < m (x read as 0 past m). */
static inline void S(erf_blk)(int64_t m, const T *x, T s, T e[EW_VBLK], T *p) {
    T a[EW_VBLK], b[EW_VBLK];
    int j = 0;
    for (; j < m; j++) a[j] = x[j];
    for (; j < EW_VBLK; j++) a[j] = 0;
    for (j = 0; j < EW_VBLK; j++) e[j] = M(erf)(a[j] * s);
    if (!p) return;
    for (j = 0; j < EW_VBLK; j++) b[j] = (T)-0.5 * a[j] * a[j];
    for (j = 0; j < EW_VBLK; j++) p[j] = M(exp)(b[j]);
}

void S(erf)(int64_t n, const T *x, T *y) {
    T e[EW_VBLK];
    for (int64_t i = 0; i < n; i += EW_VBLK) {
        int64_t m = n - i < EW_VBLK ? n - i : EW_VBLK;
        S(erf_blk)(m, x + i, (T)1, e, NULL);
        for (int64_t j = 0; j < m; j++) y[i + j] = e[j];
    }
}

/* The exact form: x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)). */
void S(gelu)(int64_t n, const T *x, T *y) {
    T e[EW_VBLK];
    for (int64_t i = 0; i < n; i += EW_VBLK) {
        int64_t m = n - i < EW_VBLK ? n - i : EW_VBLK;
        S(erf_blk)(m, x + i, (T)0.70710678118654752440, e, NULL);
        for (int64_t j = 0; j < m; j++) { T v = x[i + j]; y[i + j] = (T)0.5 * v * ((T)1 + e[j]); }
    }
}

/* d/dx x Phi(x) = Phi(x) + x phi(x) of m values x into d, from erf_blk's e = erf(x/sqrt2)
 * and p = exp(-x^2/2): the one expression gelu_bwd and gelu_keep share, so that the
 * derivative gelu_keep keeps is gelu_bwd's to the bit. */
static inline void S(gelu_d_blk)(int64_t m, const T *x, const T *e, const T *p, T *d) {
    for (int64_t j = 0; j < m; j++) {
        T v = x[j], cdf = (T)0.5 * ((T)1 + e[j]), pdf = (T)0.39894228040143267794 * p[j];
        d[j] = cdf + v * pdf;
    }
}

void S(gelu_bwd)(int64_t n, const T *g, const T *x, T *dx) {
    T e[EW_VBLK], p[EW_VBLK], d[EW_VBLK];
    for (int64_t i = 0; i < n; i += EW_VBLK) {
        int64_t m = n - i < EW_VBLK ? n - i : EW_VBLK;
        S(erf_blk)(m, x + i, (T)0.70710678118654752440, e, p);
        S(gelu_d_blk)(m, x + i, e, p, d);
        for (int64_t j = 0; j < m; j++) dx[i + j] = g[i + j] * d[j];
    }
}

/* gelu, keeping its derivative d = Phi(x) + x phi(x) for gelu_bwd_kept (the static
 * code's backward then reads d instead of a second erf and exp): y and d are
 * gelu's and gelu_bwd's own expressions over the same erf_blk values, so
 * gelu_bwd_kept(g, d) is gelu_bwd(g, x) to the bit (the tape keeps recomputing).
 * y may be x (each x[i] is read before y[i] is written). */
void S(gelu_keep)(int64_t n, const T *x, T *y, T *d) {
    T e[EW_VBLK], p[EW_VBLK];
    for (int64_t i = 0; i < n; i += EW_VBLK) {
        int64_t m = n - i < EW_VBLK ? n - i : EW_VBLK;
        S(erf_blk)(m, x + i, (T)0.70710678118654752440, e, p);
        S(gelu_d_blk)(m, x + i, e, p, d + i);
        for (int64_t j = 0; j < m; j++) y[i + j] = (T)0.5 * x[i + j] * ((T)1 + e[j]);
    }
}

/* dx = g d, d from gelu_keep; dx may be g. */
void S(gelu_bwd_kept)(int64_t n, const T *g, const T *d, T *dx) {
    for (int64_t i = 0; i < n; i++) dx[i] = g[i] * d[i];
}

void S(sin_bwd)(int64_t n, const T *g, const T *x, T *dx) {
    for (int64_t i = 0; i < n; i++) dx[i] = g[i] * M(cos)(x[i]);
}

void S(cos_bwd)(int64_t n, const T *g, const T *x, T *dx) {
    for (int64_t i = 0; i < n; i++) dx[i] = -g[i] * M(sin)(x[i]);
}

/* d/dx erf(x) = 2 / sqrt(pi) e^(-x^2). */
void S(erf_bwd)(int64_t n, const T *g, const T *x, T *dx) {
    for (int64_t i = 0; i < n; i++) { T v = x[i]; dx[i] = g[i] * (T)1.12837916709551257390 * M(exp)(-v * v); }
}

void S(log1p_bwd)(int64_t n, const T *g, const T *x, T *dx) {
    for (int64_t i = 0; i < n; i++) dx[i] = g[i] / ((T)1 + x[i]);
}

/* PyTorch's GeluBackward (tanh): with k = sqrt(2/pi), u = k (x + 0.044715 x^3), t = tanh u,
 * dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 * 0.044715 x^2). */
void S(gelu_tanh_bwd)(int64_t n, const T *g, const T *x, T *dx) {
    const T k = (T)0.79788456080286535588, a = (T)0.044715;
    for (int64_t i = 0; i < n; i++) {
        T v = x[i], t = M(tanh)(k * (v + a * v * v * v));
        dx[i] = g[i] * ((T)0.5 * ((T)1 + t) + (T)0.5 * v * ((T)1 - t * t) * k * ((T)1 + (T)3 * a * v * v));
    }
}

/* d/dx x s(x) = s (1 + x (1 - s)), s = sigmoid(x). */
void S(silu_bwd)(int64_t n, const T *g, const T *x, T *dx) {
    for (int64_t i = 0; i < n; i++) {
        T v = x[i], s = (T)1 / ((T)1 + M(exp)(-v));
        dx[i] = g[i] * s * ((T)1 + v * ((T)1 - s));
    }
}

/* d/dx x tanh(sp(x)) = t + x (1 - t^2) sigmoid(x), t = tanh(softplus(x)). */
void S(mish_bwd)(int64_t n, const T *g, const T *x, T *dx) {
    for (int64_t i = 0; i < n; i++) {
        T v = x[i], t = M(tanh)((v > 0 ? v : (T)0) + M(log1p)(M(exp)(-M(fabs)(v)))), s = (T)1 / ((T)1 + M(exp)(-v));
        dx[i] = g[i] * (t + v * ((T)1 - t * t) * s);
    }
}

void S(elu_bwd)(int64_t n, double alpha, const T *g, const T *x, T *dx) {
    T al = S(cvt)(alpha);
    for (int64_t i = 0; i < n; i++) { T v = x[i], gv = g[i]; dx[i] = v > 0 ? gv : gv * al * M(exp)(v); }
}

/* Gradient passes where lo <= x <= hi (bounds inclusive, as PyTorch). */
void S(clamp_bwd)(int64_t n, double lo, double hi, const T *g, const T *x, T *dx) {
    T l = S(cvt)(lo), h = S(cvt)(hi);
    for (int64_t i = 0; i < n; i++) { T v = x[i], gv = g[i]; dx[i] = (v >= l && v <= h) ? gv : (T)0; }
}

/* ---------------------------------------------------------------- dropout */

/* y = x * mask / (1 - p), the mask (word i >= p * 2^32) from ew_drop_bits
 * (kernels_ew.c) block by block, no allocation; dropout_bwd applies the identical mask
 * to g.  With keep, the mask is also stored (the static code's forward, whose backward
 * reuses it). */
static void S(dropout_apply)(cdl_rng_key k, uint64_t base, int64_t n, double p, const T *x, T *y, uint8_t *keep) {
    if (n <= 0) return;
    if (p <= 0 || p >= 1) {
        if (keep) for (int64_t i = 0; i < n; i++) keep[i] = p <= 0;
        if (p <= 0) S(copy)(n, x, y);
        else for (int64_t i = 0; i < n; i++) y[i] = 0;
        return;
    }
    uint32_t thr = (uint32_t)(p * 4294967296.0);
    T scale = (T)(1.0 / (1.0 - p));
    EwDropKey key = ew_drop_key(k);
    uint32_t bits[4 * EW_LANES];
    uint64_t end = base + (uint64_t)n;
    for (uint64_t c = base / 4; 4 * c < end; c += EW_LANES) {
        ew_drop_bits(key, c, bits);
        uint64_t e0 = 4 * c < base ? base : 4 * c;
        uint64_t e1 = 4 * (c + EW_LANES) < end ? 4 * (c + EW_LANES) : end;
        const uint32_t *w = bits + (e0 - 4 * c);
        const T *xs = x + (e0 - base);
        T *ys = y + (e0 - base);
        int64_t m = (int64_t)(e1 - e0);
        if (keep) {
            uint8_t *ks = keep + (e0 - base);
            for (int64_t i = 0; i < m; i++) ks[i] = w[i] >= thr;
        }
        for (int64_t i = 0; i < m; i++) { T v = xs[i]; ys[i] = w[i] >= thr ? v * scale : (T)0; }
    }
}

void S(dropout)(cdl_rng_key k, uint64_t base, int64_t n, double p, const T *x, T *y) {
    S(dropout_apply)(k, base, n, p, x, y, NULL);
}

void S(dropout_bwd)(cdl_rng_key k, uint64_t base, int64_t n, double p, const T *g, T *dx) {
    S(dropout_apply)(k, base, n, p, g, dx, NULL);
}

/* The static code's pair: the forward also keeps its mask (keep[i] = 1 for kept
 * elements), so the backward applies it instead of regenerating the random words (the
 * compiler knows at compile time that a backward pass follows, and plans the bytes). */
void S(dropout_keep)(cdl_rng_key k, uint64_t base, int64_t n, double p, const T *x, T *y, uint8_t *keep) {
    S(dropout_apply)(k, base, n, p, x, y, keep);
}

void S(dropout_keep_bwd)(int64_t n, double p, const uint8_t *keep, const T *g, T *dx) {
    T scale = p < 1 ? (T)(1.0 / (1.0 - p)) : (T)0;
    for (int64_t i = 0; i < n; i++) dx[i] = keep[i] ? g[i] * scale : (T)0;
}

#undef EW_BIN_LOOP
#undef EW_BC_WALK
#undef EW_UNARY
