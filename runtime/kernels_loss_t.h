/* kernels_loss_t.h -- loss kernel bodies, included twice by kernels_loss.c with
 *   T, S(f), M(f) as in kernels_ew_t.h.
 * Contracts are in cdl.h (block LOSS).  Sums run in double in both precisions. */

/* The divisor of a reduction over count items (never 0). */
static inline double S(loss_div)(int red, int64_t count) {
    return red == CDL_RED_SUM || count <= 0 ? 1.0 : (double)count;
}

/* Sums in double of T terms, fast: acc[k] += t[j] for j = k (mod LOSS_LANES).  The
 * lanes are independent, so gcc vectorises the float -> double adds without
 * reassociating (a single `acc += (double)t[j]` chain it cannot vectorise in f32, and
 * that chain kept the transcendentals feeding it scalar).  Loss forwards compute their
 * terms LOSS_BLOCK at a time into a stack block (one vectorised loop over expf/log1pf,
 * vmath.h), then add the block here; loss_acc_total folds the lanes. */
#ifndef LOSS_LANES
#define LOSS_LANES 8
#define LOSS_BLOCK 256
#endif

static inline void S(loss_acc)(double acc[LOSS_LANES], const T *t, int64_t m) {
    int64_t j = 0;
    for (; j + LOSS_LANES <= m; j += LOSS_LANES)
        for (int k = 0; k < LOSS_LANES; k++) acc[k] += (double)t[j + k];
    for (; j < m; j++) acc[0] += (double)t[j];
}

static inline double S(loss_acc_total)(const double acc[LOSS_LANES]) {
    double s = 0;
    for (int k = 0; k < LOSS_LANES; k++) s += acc[k];
    return s;
}

/* ---------------------------------------------------------------- class losses */

/* Row r's weight in a class loss: 0 when its label is ignore_index, else rw[r] (1
 * when rw is NULL) times cw[label] (the class weight; 1 when cw is NULL or the label
 * is outside [0, cols)). */
static inline double S(class_w)(const T *rw, const T *cw, const int32_t *labels, int64_t ignore_index, int64_t cols,
                                int64_t r) {
    int32_t y = labels[r];
    if ((int64_t)y == ignore_index) return 0;
    double w = rw ? (double)rw[r] : 1.0;
    return cw && y >= 0 && (int64_t)y < cols ? w * (double)cw[y] : w;
}

/* The divisor of a class loss: the sum of the row weights for mean (the count of the
 * rows not ignored, without weights; 0 when all are ignored: the loss is then NaN, as
 * in PyTorch), 1 for sum and none. */
static double S(class_div)(int64_t rows, int64_t cols, const T *rw, const T *cw, const int32_t *labels,
                           int64_t ignore_index, int red) {
    if (red != CDL_RED_MEAN) return 1.0;
    double d = 0;
    for (int64_t r = 0; r < rows; r++) d += S(class_w)(rw, cw, labels, ignore_index, cols, r);
    return d;
}

/* Row r's upstream scale: g[r] for none, g[0] / div otherwise, times its weight. */
static inline T S(class_g)(const T *g, int red, double div, double wr, int64_t r) {
    return (T)((red == CDL_RED_NONE ? (double)g[r] : (double)g[0] / div) * wr);
}

/* The sums of a class-weighted smoothed row: *wsum = sum_j cw_j, *wx = sum_j cw_j x_j. */
static void S(cw_sums)(int64_t cols, const T *cw, const T *x, double *wsum, double *wx) {
    *wsum = *wx = 0;
    for (int64_t j = 0; j < cols; j++) {
        *wsum += (double)cw[j];
        *wx += (double)cw[j] * (double)x[j];
    }
}

/* Fused log-softmax + negative log-likelihood with label smoothing, per row:
 *   logZ = m + log sum_j e^(x_j - m),  p_j = e^(x_j - m) / sum,
 *   loss = logZ - (1 - s) x_y - (s / C) sum_j x_j        (q = (1-s) onehot + s/C),
 * weighted by the row's weight (0 for an ignored label).  With class weights cw (as
 * PyTorch): loss = (1 - s) cw_y (logZ - x_y) + (s / C) sum_j cw_j (logZ - x_j), times
 * rw[r]; the mean divides by sum_r rw[r] cw[y_r]. */
int S(cross_entropy_ex)(int64_t rows, int64_t cols, const T *logits, const int32_t *labels, const T *rw,
                        const T *cw, int64_t ignore_index, double smoothing, int red, T *probs, T *loss) {
    double total = 0;
    int64_t bad = -1;
    for (int64_t r = 0; r < rows; r++) {
        const T *x = logits + r * cols;
        T *p = probs + r * cols;
        T m = x[0];
        for (int64_t j = 1; j < cols; j++) m = x[j] > m ? x[j] : m;
        /* exp in a loop of its own, so that it vectorises (vmath.h). */
        for (int64_t j = 0; j < cols; j++) p[j] = M(exp)(x[j] - m);
        double sum = 0, sx = 0;
        for (int64_t j = 0; j < cols; j++) {
            sum += (double)p[j];
            sx += (double)x[j];
        }
        T inv = (T)(1.0 / sum);
        for (int64_t j = 0; j < cols; j++) p[j] *= inv;
        int32_t y = labels[r];
        double lr = 0;
        if ((int64_t)y == ignore_index) {
            /* no loss, no weight */
        } else if (y < 0 || (int64_t)y >= cols) {
            if (bad < 0) bad = r;
        } else if (cw) {
            double logz = (double)m + log(sum), wsum = 0, wx = 0, rr = rw ? (double)rw[r] : 1.0;
            if (smoothing != 0) S(cw_sums)(cols, cw, x, &wsum, &wx);
            lr = rr * ((1.0 - smoothing) * (double)cw[y] * (logz - (double)x[y]) +
                       smoothing / (double)cols * (wsum * logz - wx));
        } else {
            double logz = (double)m + log(sum);
            lr = S(class_w)(rw, NULL, labels, ignore_index, cols, r) *
                 (logz - (1.0 - smoothing) * (double)x[y] - smoothing / (double)cols * sx);
        }
        if (red == CDL_RED_NONE) loss[r] = (T)lr;
        total += lr;
    }
    if (bad >= 0) {
        if (red != CDL_RED_NONE) *loss = (T)NAN;
        else loss[bad] = (T)NAN;
        return cdl_fail("cross_entropy: label %d at row %lld is outside [0, %lld)",
                        (int)labels[bad], (long long)bad, (long long)cols);
    }
    if (red != CDL_RED_NONE) *loss = (T)(total / S(class_div)(rows, cols, rw, cw, labels, ignore_index, red));
    return 0;
}

/* dx = (row's upstream scale) * (p - q); ignored rows and rows with a bad label get 0.
 * With class weights: dx_j = (scale rw[r]) (A p_j - (s / C) cw_j - [j = y] (1 - s) cw_y),
 * A = (1 - s) cw_y + (s / C) sum_j cw_j. */
int S(cross_entropy_ex_bwd)(int64_t rows, int64_t cols, const T *g, const int32_t *labels, const T *rw,
                            const T *cw, int64_t ignore_index, const T *probs, double smoothing, int red, T *dx) {
    const double div = S(class_div)(rows, cols, rw, cw, labels, ignore_index, red);
    double wsum = 0;
    for (int64_t j = 0; cw && j < cols; j++) wsum += (double)cw[j];
    T off = (T)(smoothing / (double)cols), on = (T)(1.0 - smoothing);
    int rc = 0;
    for (int64_t r = 0; r < rows; r++) {
        const T *p = probs + r * cols;
        T *d = dx + r * cols;
        int32_t y = labels[r];
        int ignored = (int64_t)y == ignore_index;
        if (ignored || y < 0 || (int64_t)y >= cols) {
            for (int64_t j = 0; j < cols; j++) d[j] = 0;
            if (!ignored)
                rc = cdl_fail("cross_entropy: label %d at row %lld is outside [0, %lld)",
                              (int)y, (long long)r, (long long)cols);
            continue;
        }
        if (cw) {
            const T scale = S(class_g)(g, red, div, S(class_w)(rw, NULL, labels, ignore_index, cols, r), r);
            const T a = (T)((1.0 - smoothing) * (double)cw[y] + smoothing / (double)cols * wsum);
            for (int64_t j = 0; j < cols; j++) d[j] = scale * (a * p[j] - off * cw[j]);
            d[y] -= scale * on * cw[y];
            continue;
        }
        const T scale = S(class_g)(g, red, div, S(class_w)(rw, NULL, labels, ignore_index, cols, r), r);
        for (int64_t j = 0; j < cols; j++) d[j] = scale * (p[j] - off);
        d[y] -= scale * on;
    }
    return rc;
}

/* d loss / d rw[r] of a row-weighted class loss, from u (the loss per row without the
 * row weights, class weights included; 0 for ignored rows) and the forward's result
 * loss: none g[r] u[r]; sum g u[r]; mean g (u[r] - loss cw[y_r]) / (sum of the
 * weights), 0 for ignored rows. */
void S(class_weight_bwd)(int64_t rows, int64_t cols, const T *g, const int32_t *labels, const T *rw, const T *cw,
                         int64_t ignore_index, const T *u, const T *loss, int red, T *dw) {
    if (red == CDL_RED_NONE) {
        for (int64_t r = 0; r < rows; r++) dw[r] = g[r] * u[r];
        return;
    }
    if (red == CDL_RED_SUM) {
        for (int64_t r = 0; r < rows; r++) dw[r] = g[0] * u[r];
        return;
    }
    const double div = S(class_div)(rows, cols, rw, cw, labels, ignore_index, red), l = (double)loss[0];
    for (int64_t r = 0; r < rows; r++)
        dw[r] = (int64_t)labels[r] == ignore_index
                    ? (T)0
                    : (T)((double)g[0] * ((double)u[r] - l * S(class_w)(NULL, cw, labels, ignore_index, cols, r)) / div);
}

int S(cross_entropy)(int64_t rows, int64_t cols, const T *logits, const int32_t *labels,
                     double smoothing, int red, T *probs, T *loss) {
    return S(cross_entropy_ex)(rows, cols, logits, labels, NULL, NULL, CDL_NO_IGNORE, smoothing, red, probs, loss);
}

int S(cross_entropy_bwd)(int64_t rows, int64_t cols, const T *g, const int32_t *labels,
                         const T *probs, double smoothing, int red, T *dx) {
    return S(cross_entropy_ex_bwd)(rows, cols, g, labels, NULL, NULL, CDL_NO_IGNORE, probs, smoothing, red, dx);
}

/* loss = -logp[r, y_r] weighted as cross_entropy_ex (rw[r] cw[y_r]). */
int S(nll_ex)(int64_t rows, int64_t cols, const T *logp, const int32_t *labels, const T *rw, const T *cw,
              int64_t ignore_index, int red, T *loss) {
    double total = 0;
    for (int64_t r = 0; r < rows; r++) {
        int32_t y = labels[r];
        double lr = 0;
        if ((int64_t)y != ignore_index) {
            if (y < 0 || (int64_t)y >= cols) {
                if (red != CDL_RED_NONE) *loss = (T)NAN;
                else loss[r] = (T)NAN;
                return cdl_fail("nll: label %d at row %lld is outside [0, %lld)", (int)y,
                                (long long)r, (long long)cols);
            }
            lr = -S(class_w)(rw, cw, labels, ignore_index, cols, r) * (double)logp[r * cols + y];
        }
        if (red == CDL_RED_NONE) loss[r] = (T)lr;
        total += lr;
    }
    if (red != CDL_RED_NONE) *loss = (T)(total / S(class_div)(rows, cols, rw, cw, labels, ignore_index, red));
    return 0;
}

int S(nll_ex_bwd)(int64_t rows, int64_t cols, const T *g, const int32_t *labels, const T *rw, const T *cw,
                  int64_t ignore_index, int red, T *dx) {
    const double div = S(class_div)(rows, cols, rw, cw, labels, ignore_index, red);
    int rc = 0;
    for (int64_t i = 0; i < rows * cols; i++) dx[i] = 0;
    for (int64_t r = 0; r < rows; r++) {
        int32_t y = labels[r];
        if ((int64_t)y == ignore_index) continue;
        if (y < 0 || (int64_t)y >= cols)
            rc = cdl_fail("nll: label %d at row %lld is outside [0, %lld)", (int)y,
                          (long long)r, (long long)cols);
        else
            dx[r * cols + y] = -S(class_g)(g, red, div, S(class_w)(rw, cw, labels, ignore_index, cols, r), r);
    }
    return rc;
}

int S(nll)(int64_t rows, int64_t cols, const T *logp, const int32_t *labels, int red, T *loss) {
    return S(nll_ex)(rows, cols, logp, labels, NULL, NULL, CDL_NO_IGNORE, red, loss);
}

int S(nll_bwd)(int64_t rows, int64_t cols, const T *g, const int32_t *labels, int red, T *dx) {
    return S(nll_ex_bwd)(rows, cols, g, labels, NULL, NULL, CDL_NO_IGNORE, red, dx);
}

/* ---------------------------------------------------------------- pair losses */

/* Forward: *loss = sum_i EXPR(u = a[i], v = b[i]) / divisor, the terms a block at a
 * time (see loss_acc). */
#define LOSS_FWD(EXPR)                                                           \
    do {                                                                         \
        if (red == CDL_RED_NONE) {                                               \
            for (int64_t i = 0; i < n; i++) { T u = a[i], v = b[i]; loss[i] = (EXPR); } \
            break;                                                               \
        }                                                                        \
        double acc[LOSS_LANES] = {0};                                            \
        T t[LOSS_BLOCK];                                                         \
        for (int64_t i0 = 0; i0 < n; i0 += LOSS_BLOCK) {                         \
            int64_t m = n - i0 < LOSS_BLOCK ? n - i0 : LOSS_BLOCK;               \
            const T *ab = a + i0, *bb = b + i0;                                  \
            for (int64_t j = 0; j < m; j++) { T u = ab[j], v = bb[j]; t[j] = (EXPR); } \
            S(loss_acc)(acc, t, m);                                              \
        }                                                                        \
        *loss = (T)(S(loss_acc_total)(acc) / S(loss_div)(red, n));               \
    } while (0)

/* Backward: d[i] = s * (wrt == 0 ? DA : DB) with s = g / divisor (none: g[i] * ...). */
#define LOSS_BWD(DA, DB)                                                         \
    do {                                                                         \
        if (red == CDL_RED_NONE) {                                               \
            if (wrt == 0) { for (int64_t i = 0; i < n; i++) { T u = a[i], v = b[i]; (void)v; d[i] = g[i] * (DA); } } \
            else          { for (int64_t i = 0; i < n; i++) { T u = a[i], v = b[i]; (void)v; d[i] = g[i] * (DB); } } \
            break;                                                               \
        }                                                                        \
        T s = (T)((double)g[0] / S(loss_div)(red, n));                           \
        if (wrt == 0) { for (int64_t i = 0; i < n; i++) { T u = a[i], v = b[i]; (void)v; d[i] = s * (DA); } } \
        else          { for (int64_t i = 0; i < n; i++) { T u = a[i], v = b[i]; (void)v; d[i] = s * (DB); } } \
    } while (0)

/* sign(x) with sign(0) = 0, as torch.sign. */
#define LOSS_SIGN(x) ((T)((x) > 0) - (T)((x) < 0))

void S(mse)(int64_t n, const T *a, const T *b, int red, T *loss) {
    LOSS_FWD((u - v) * (u - v));
}
void S(mse_bwd)(int64_t n, const T *g, const T *a, const T *b, int red, int wrt, T *d) {
    LOSS_BWD((T)2 * (u - v), (T)2 * (v - u));
}

void S(l1)(int64_t n, const T *a, const T *b, int red, T *loss) {
    LOSS_FWD(M(fabs)(u - v));
}
void S(l1_bwd)(int64_t n, const T *g, const T *a, const T *b, int red, int wrt, T *d) {
    LOSS_BWD(LOSS_SIGN(u - v), -LOSS_SIGN(u - v));
}

/* |e| <= delta: e^2 / 2;  else delta (|e| - delta / 2);  e = a - b. */
void S(huber)(int64_t n, double delta, const T *a, const T *b, int red, T *loss) {
    T dl = (T)delta, half = (T)(0.5 * delta);
    LOSS_FWD(M(fabs)(u - v) <= dl ? (T)0.5 * (u - v) * (u - v) : dl * (M(fabs)(u - v) - half));
}
void S(huber_bwd)(int64_t n, double delta, const T *g, const T *a, const T *b, int red, int wrt,
                  T *d) {
    T dl = (T)delta;
    LOSS_BWD(M(fabs)(u - v) <= dl ? u - v : dl * LOSS_SIGN(u - v),
             M(fabs)(u - v) <= dl ? v - u : -dl * LOSS_SIGN(u - v));
}

/* log clamped at -100 (PyTorch's BCELoss). */
static inline T S(clog)(T x) {
    T l = M(log)(x);
    return l > (T)-100 ? l : (T)-100;
}

void S(bce)(int64_t n, const T *a, const T *b, int red, T *loss) {
    LOSS_FWD(-(v * S(clog)(u) + ((T)1 - v) * S(clog)((T)1 - u)));
}
/* d/dp = (p - t) / max(p (1 - p), 1e-12);  d/dt = log(1 - p) - log p (clamped logs). */
void S(bce_bwd)(int64_t n, const T *g, const T *a, const T *b, int red, int wrt, T *d) {
    LOSS_BWD((u - v) / (u * ((T)1 - u) > (T)1e-12 ? u * ((T)1 - u) : (T)1e-12),
             S(clog)((T)1 - u) - S(clog)(u));
}

/* max(z, 0) - z t + log(1 + e^-|z|). */
void S(bce_logits)(int64_t n, const T *a, const T *b, int red, T *loss) {
    LOSS_FWD((u > 0 ? u : (T)0) - u * v + M(log1p)(M(exp)(-M(fabs)(u))));
}
/* d/dz = sigmoid(z) - t;  d/dt = -z. */
void S(bce_logits_bwd)(int64_t n, const T *g, const T *a, const T *b, int red, int wrt, T *d) {
    LOSS_BWD((T)1 / ((T)1 + M(exp)(-u)) - v, -u);
}

/* ---------------------------------------------------------------- kl_normal */

void S(kl_normal)(int64_t rows, int64_t cols, const T *mu, const T *logvar, int red, T *loss) {
    if (red == CDL_RED_NONE) { /* one value a row */
        for (int64_t r = 0; r < rows; r++) {
            double sr = 0;
            for (int64_t c = 0; c < cols; c++) {
                T mj = mu[r * cols + c], lv = logvar[r * cols + c];
                sr += (double)((T)1 + lv - mj * mj - M(exp)(lv));
            }
            loss[r] = (T)(-0.5 * sr);
        }
        return;
    }
    double acc[LOSS_LANES] = {0};
    T t[LOSS_BLOCK];
    int64_t n = rows * cols;
    for (int64_t i0 = 0; i0 < n; i0 += LOSS_BLOCK) {
        int64_t m = n - i0 < LOSS_BLOCK ? n - i0 : LOSS_BLOCK;
        for (int64_t j = 0; j < m; j++) {
            T mj = mu[i0 + j], lv = logvar[i0 + j];
            t[j] = (T)1 + lv - mj * mj - M(exp)(lv);
        }
        S(loss_acc)(acc, t, m);
    }
    *loss = (T)(-0.5 * S(loss_acc_total)(acc) / S(loss_div)(red, rows));
}

/* d/dmu = mu;  d/dlogvar = (e^logvar - 1) / 2;  times g / (rows for mean). */
void S(kl_normal_bwd)(int64_t rows, int64_t cols, const T *g, const T *mu, const T *logvar,
                      int red, int wrt, T *d) {
    int64_t n = rows * cols;
    if (red == CDL_RED_NONE) { /* g: one value a row */
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = r * cols; i < (r + 1) * cols; i++)
                d[i] = wrt == 0 ? g[r] * mu[i] : g[r] * (T)0.5 * (M(exp)(logvar[i]) - (T)1);
        return;
    }
    T s = (T)((double)g[0] / S(loss_div)(red, rows));
    if (wrt == 0)
        for (int64_t i = 0; i < n; i++) d[i] = s * mu[i];
    else
        for (int64_t i = 0; i < n; i++) d[i] = s * (T)0.5 * (M(exp)(logvar[i]) - (T)1);
}

#undef LOSS_FWD
#undef LOSS_BWD
#undef LOSS_SIGN
