/* kernels_sel_t.h -- selection and axis-reduction kernel bodies for one element type
 * (T, S(name), M(fn) as in kernels_ew_t.h), included twice by kernels_sel.c.
 * Contracts: cdl.h, BEGIN SEL.  No allocation. */

/* ------------------------------------------------------------------ where, tril, one_hot */

/* y = c != 0 ? a : b over a broadcast (strides of c, a, b per output dim; y dense). */
void S(where)(int rank, const int64_t *dims, const int64_t *sc, const int64_t *sa, const int64_t *sb, const T *c,
              const T *a, const T *b, T *y) {
    if (rank < 0 || rank > CDL_MAXDIM) return;
    if (rank == 0) {
        y[0] = c[0] != 0 ? a[0] : b[0];
        return;
    }
    int64_t outer = 1, inner = dims[rank - 1], idx[CDL_MAXDIM] = {0}, oc = 0, oa = 0, ob = 0;
    for (int k = 0; k < rank; k++)
        if (dims[k] <= 0) return;
    for (int k = 0; k < rank - 1; k++) outer *= dims[k];
    const int64_t ic = sc[rank - 1], ia = sa[rank - 1], ib = sb[rank - 1];
    for (int64_t o = 0; o < outer; o++) {
        T *yr = y + o * inner;
        const T *cr = c + oc, *ar = a + oa, *br = b + ob;
        if (ic == 1 && ia == 1 && ib == 1)
            for (int64_t j = 0; j < inner; j++) yr[j] = cr[j] != 0 ? ar[j] : br[j];
        else
            for (int64_t j = 0; j < inner; j++) yr[j] = cr[j * ic] != 0 ? ar[j * ia] : br[j * ib];
        for (int k = rank - 2; k >= 0; k--) {
            oc += sc[k];
            oa += sa[k];
            ob += sb[k];
            if (++idx[k] < dims[k]) break;
            oc -= sc[k] * dims[k];
            oa -= sa[k] * dims[k];
            ob -= sb[k] * dims[k];
            idx[k] = 0;
        }
    }
}

/* Keep x[., i, j] where j - i <= diag (tril) or >= diag (triu), else 0.  y may be x. */
void S(tril)(int64_t batch, int64_t rows, int64_t cols, int64_t diag, int upper, const T *x, T *y) {
    for (int64_t b = 0; b < batch; b++)
        for (int64_t i = 0; i < rows; i++) {
            const T *xr = x + (b * rows + i) * cols;
            T *yr = y + (b * rows + i) * cols;
            for (int64_t j = 0; j < cols; j++) yr[j] = (upper ? j - i >= diag : j - i <= diag) ? xr[j] : (T)0;
        }
}

int S(one_hot)(int64_t n, int64_t classes, const int32_t *ids, T *y) {
    int rc = 0;
    for (int64_t i = 0; i < n; i++) {
        T *yr = y + i * classes;
        for (int64_t c = 0; c < classes; c++) yr[c] = 0;
        if (ids[i] >= 0 && (int64_t)ids[i] < classes) yr[ids[i]] = 1;
        else rc = cdl_fail("one_hot: id %d at %lld is outside [0, %lld)", (int)ids[i], (long long)i, (long long)classes);
    }
    return rc;
}

/* ------------------------------------------------------------------ casts */

/* y = (T)x: exact for |x| <= 2^24 (f32). */
void S(from_i32)(int64_t n, const int32_t *x, T *y) {
    for (int64_t i = 0; i < n; i++) y[i] = (T)x[i];
}

/* y = x truncated toward zero (torch's .int()), NaN to 0, saturated to the i32 range
 * (a C cast of an out-of-range real is undefined). */
void S(to_i32)(int64_t n, const T *x, int32_t *y) {
    for (int64_t i = 0; i < n; i++) {
        T v = x[i];
        y[i] = v != v ? 0 : v >= (T)2147483647.0 ? INT32_MAX : v <= (T)-2147483648.0 ? INT32_MIN : (int32_t)v;
    }
}

/* ------------------------------------------------------------------ max, min, argmax */

/* v takes the place of the best b so far: larger (smaller), or the first NaN. */
static inline int S(sel_beats)(T v, T b, int is_min) {
    return (is_min ? v < b : v > b) || (v != v && b == b);
}

/* y = max (min) over the masked axes, arg = the flat index in x of each winner: the
 * first in memory order (NaN wins). */
void S(reduce_max)(int rank, const int64_t *dims, unsigned mask, int is_min, const T *x, T *y, int64_t *arg) {
    SelWalk w;
    if (!sel_walk_init(&w, rank, dims, mask)) return;
    for (int64_t j = 0; j < w.ny; j++) arg[j] = -1;
    for (int64_t o = 0; o < w.nouter; o++, sel_walk_next(&w)) {
        const int64_t x0 = o * w.inner;
        if (w.inner_red) {
            int64_t bi = x0;
            for (int64_t j = x0 + 1; j < x0 + w.inner; j++)
                if (S(sel_beats)(x[j], x[bi], is_min)) bi = j;
            if (arg[w.yoff] < 0 || S(sel_beats)(x[bi], y[w.yoff], is_min)) {
                arg[w.yoff] = bi;
                y[w.yoff] = x[bi];
            }
        } else {
            for (int64_t j = 0; j < w.inner; j++)
                if (arg[w.yoff + j] < 0 || S(sel_beats)(x[x0 + j], y[w.yoff + j], is_min)) {
                    arg[w.yoff + j] = x0 + j;
                    y[w.yoff + j] = x[x0 + j];
                }
        }
    }
}

/* dx = 0, then each g[j] at its winner arg[j]. */
void S(reduce_max_bwd)(int64_t ny, int64_t nx, const T *g, const int64_t *arg, T *dx) {
    if (nx > 0) memset(dx, 0, sizeof(T) * (size_t)nx);
    for (int64_t j = 0; j < ny; j++)
        if (arg[j] >= 0 && arg[j] < nx) dx[arg[j]] += g[j];
}

/* x as [outer, len, inner]: y[o, i] = the position along len of the first maximum
 * (minimum; NaN wins) of x[o, :, i]. */
void S(argmax)(int64_t outer, int64_t len, int64_t inner, int is_min, const T *x, int32_t *y) {
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const T *xp = x + o * len * inner + i;
            int64_t best = 0;
            for (int64_t l = 1; l < len; l++)
                if (S(sel_beats)(xp[l * inner], xp[best * inner], is_min)) best = l;
            y[o * inner + i] = (int32_t)best;
        }
}

/* ------------------------------------------------------------------ var, std, logsumexp */

/* Inside do { } while (0), in a kernel with rank, dims and mask: the walk w over the
 * runs of w.inner elements, o the run (break: nothing to walk). */
#define SEL_ROWS(w, o)                                                              \
    SelWalk w;                                                                      \
    if (!sel_walk_init(&w, rank, dims, mask)) break;                                \
    for (int64_t o = 0; o < w.nouter; o++, sel_walk_next(&w))

/* acc[yo] += F over the walk, for every element xv of x and yo the index of its
 * output: row sums in double when the inner run is reduced, lane sums in T when it is
 * kept. */
#define SEL_ACC(acc, F)                                                             \
    do {                                                                            \
        SEL_ROWS(w, o) {                                                            \
            const T *xr = x + o * w.inner;                                          \
            if (w.inner_red) {                                                      \
                const int64_t yo = w.yoff;                                          \
                double s = 0;                                                       \
                for (int64_t j = 0; j < w.inner; j++) { const T xv = xr[j]; s += (double)(F); } \
                (acc)[yo] += (T)s;                                                  \
            } else {                                                                \
                for (int64_t j = 0; j < w.inner; j++) {                             \
                    const int64_t yo = w.yoff + j;                                  \
                    const T xv = xr[j];                                             \
                    (acc)[yo] += (F);                                               \
                }                                                                   \
            }                                                                       \
        }                                                                           \
    } while (0)

/* out[i] = F for every element xv = x[i], yo the index of its output. */
#define SEL_MAP(out, F)                                                             \
    do {                                                                            \
        SEL_ROWS(w, o) {                                                            \
            const T *xr = x + o * w.inner;                                          \
            T *orow = (out) + o * w.inner;                                          \
            for (int64_t j = 0; j < w.inner; j++) {                                 \
                const int64_t yo = w.yoff + (w.inner_red ? 0 : j);                  \
                const T xv = xr[j];                                                 \
                orow[j] = (F);                                                      \
            }                                                                       \
        }                                                                           \
    } while (0)

static int64_t S(sel_count)(int rank, const int64_t *dims, unsigned mask, int64_t *ny) {
    int64_t c = 1, k = 1;
    for (int i = 0; i < rank && i < CDL_MAXDIM; i++) {
        if (mask == 0 || (mask >> i & 1u)) c *= dims[i];
        else k *= dims[i];
    }
    *ny = k;
    return c;
}

/* mean = the mean over the masked axes; y = sum (x - mean)^2 / max(0, N - correction)
 * (N the reduced count), its square root when take_sqrt (torch.var / torch.std). */
void S(moments)(int rank, const int64_t *dims, unsigned mask, double correction, int take_sqrt, const T *x, T *y,
                T *mean) {
    int64_t ny, N = S(sel_count)(rank, dims, mask, &ny);
    if (ny <= 0) return;
    memset(mean, 0, sizeof(T) * (size_t)ny);
    memset(y, 0, sizeof(T) * (size_t)ny);
    SEL_ACC(mean, xv);
    for (int64_t j = 0; j < ny; j++) mean[j] = (T)((double)mean[j] / (double)N);
    SEL_ACC(y, (xv - mean[yo]) * (xv - mean[yo]));
    double den = (double)N - correction;
    den = den > 0 ? den : 0;
    for (int64_t j = 0; j < ny; j++) {
        double v = (double)y[j] / den;
        y[j] = (T)(take_sqrt ? sqrt(v) : v);
    }
}

/* dx = g (x - mean) 2 / (N - correction) (var), g (x - mean) / ((N - correction) std). */
void S(moments_bwd)(int rank, const int64_t *dims, unsigned mask, double correction, int take_sqrt, const T *g,
                    const T *x, const T *mean, const T *y, T *dx) {
    int64_t ny, N = S(sel_count)(rank, dims, mask, &ny);
    const T den = (T)((double)N - correction > 0 ? (double)N - correction : 0);
    (void)ny;
    if (take_sqrt) SEL_MAP(dx, g[yo] * (xv - mean[yo]) / (den * y[yo]));
    else SEL_MAP(dx, (T)2 * g[yo] * (xv - mean[yo]) / den);
}

/* y = log sum exp over the masked axes, shifted by the group's maximum (an infinite
 * maximum shifts by 0, as torch.logsumexp); work: ny reals of scratch. */
void S(logsumexp)(int rank, const int64_t *dims, unsigned mask, const T *x, T *y, T *work) {
    int64_t ny;
    S(sel_count)(rank, dims, mask, &ny);
    if (ny <= 0) return;
    for (int64_t j = 0; j < ny; j++) y[j] = (T)-INFINITY;
    {
        SelWalk w;
        if (!sel_walk_init(&w, rank, dims, mask)) return;
        for (int64_t o = 0; o < w.nouter; o++, sel_walk_next(&w)) {
            const T *xr = x + o * w.inner;
            if (w.inner_red) {
                T m = y[w.yoff];
                for (int64_t j = 0; j < w.inner; j++) m = xr[j] > m ? xr[j] : m;
                y[w.yoff] = m;
            } else {
                T *yr = y + w.yoff;
                for (int64_t j = 0; j < w.inner; j++) yr[j] = xr[j] > yr[j] ? xr[j] : yr[j];
            }
        }
    }
    for (int64_t j = 0; j < ny; j++) y[j] = M(fabs)(y[j]) == (T)INFINITY ? (T)0 : y[j];
    memset(work, 0, sizeof(T) * (size_t)ny);
    SEL_ACC(work, M(exp)(xv - y[yo]));
    for (int64_t j = 0; j < ny; j++) y[j] += M(log)(work[j]);
}

/* dx = g exp(x - y). */
void S(logsumexp_bwd)(int rank, const int64_t *dims, unsigned mask, const T *g, const T *x, const T *y, T *dx) {
    SEL_MAP(dx, g[yo] * M(exp)(xv - y[yo]));
}

#undef SEL_ACC
#undef SEL_MAP
#undef SEL_ROWS
