/* kernels_norm_t.h -- normalisation kernel bodies for one element type T (S(name) the
 * suffixed public name), included twice by kernels_norm.c.  Contracts: cdl.h, BEGIN NORM.
 *
 * The three norms share one core: a segment of ch channels of hw contiguous values is
 * normalised over all ch*hw of them, with per-channel affine w[ch], b[ch].  Layer and
 * RMS norm are one row = one segment of n channels of 1 value (w, b per element);
 * group norm is one (image, group) = c/groups channels of hw values.  center = 0 is
 * the RMS form (no mean subtracted, no bias).  Statistics accumulate in double. */

/* Sum of x (center = 0: of x^2) and then of (x - mean)^2 over a run: eight double
 * lanes, so the loops vectorise without reassociating. */
static void S(nm_moments)(const T *restrict x, int64_t n, int center, double *mean, double *m2) {
    double a[8] = {0}, s = 0;
    int64_t i = 0;
    if (center) {
        for (; i + 8 <= n; i += 8)
            for (int j = 0; j < 8; j++) a[j] += (double)x[i + j];
        for (; i < n; i++) s += (double)x[i];
        for (int j = 0; j < 8; j++) s += a[j];
        *mean = n > 0 ? s / (double)n : 0;
    } else {
        *mean = 0;
    }
    const double m = *mean;
    double q[8] = {0}, r = 0;
    for (i = 0; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) q[j] += ((double)x[i + j] - m) * ((double)x[i + j] - m);
    for (; i < n; i++) r += ((double)x[i] - m) * ((double)x[i] - m);
    for (int j = 0; j < 8; j++) r += q[j];
    *m2 = r;
}

/* y = (x - mean) rstd w[ch] + b[ch] over one segment (w, b may be NULL). */
static void S(nm_fwd_seg)(int64_t ch, int64_t hw, double eps, int center, const T *restrict x, const T *restrict w,
                          const T *restrict b, T *restrict y, T *mean_out, T *rstd_out) {
    double mean, m2;
    const int64_t len = ch * hw;
    S(nm_moments)(x, len, center, &mean, &m2);
    const double rstd = 1.0 / sqrt((len > 0 ? m2 / (double)len : 0) + eps);
    const T m = (T)mean, r = (T)rstd;
    if (mean_out) *mean_out = m;
    *rstd_out = r;
    if (hw == 1) { /* layer / RMS norm: affine per element */
        for (int64_t j = 0; j < ch; j++) {
            T v = (x[j] - m) * r;
            y[j] = (w ? v * w[j] : v) + (b ? b[j] : (T)0);
        }
        return;
    }
    for (int64_t c = 0; c < ch; c++) {
        const T sc = w ? r * w[c] : r, sh = (b ? b[c] : (T)0) - m * sc;
        const T *restrict xc = x + c * hw;
        T *restrict yc = y + c * hw;
        for (int64_t j = 0; j < hw; j++) yc[j] = xc[j] * sc + sh;
    }
}

/* Layer / RMS norm backward's row sums, sum gh and sum gh xh (gh = g w, xh = (x - mean)
 * rstd), in eight double lanes like nm_moments: one chain of double adds does not
 * vectorise and was 2% of the GPT step. */
static void S(nm_bwd_row)(int64_t n, const T *restrict g, const T *restrict x, const T *restrict w, T mean, T rstd,
                          double *sgh, double *sghx) {
    double a[8] = {0}, b[8] = {0}, s = 0, sx = 0;
    int64_t i = 0;
    if (w) {
        for (; i + 8 <= n; i += 8)
            for (int j = 0; j < 8; j++) {
                const T gh = g[i + j] * w[i + j];
                a[j] += (double)gh;
                b[j] += (double)(gh * ((x[i + j] - mean) * rstd));
            }
    } else {
        for (; i + 8 <= n; i += 8)
            for (int j = 0; j < 8; j++) {
                a[j] += (double)g[i + j];
                b[j] += (double)(g[i + j] * ((x[i + j] - mean) * rstd));
            }
    }
    for (; i < n; i++) {
        const T gh = w ? g[i] * w[i] : g[i];
        s += (double)gh;
        sx += (double)(gh * ((x[i] - mean) * rstd));
    }
    for (int j = 0; j < 8; j++) {
        s += a[j];
        sx += b[j];
    }
    *sgh = s;
    *sghx = sx;
}

/* Backward of one segment, with xh = (x - mean) rstd and gh = g w[ch]:
 *   dx = rstd (gh - [center] mean(gh) - xh mean(gh xh));
 * dw[ch] += sum g xh and db[ch] += sum g (either may be NULL). */
static void S(nm_bwd_seg)(int64_t ch, int64_t hw, int center, const T *restrict g, const T *restrict x,
                          const T *restrict w, T mean, T rstd, T *restrict dx, T *restrict dw, T *restrict db) {
    const int64_t len = ch * hw;
    double sgh = 0, sghx = 0;
    if (hw == 1) {
        S(nm_bwd_row)(ch, g, x, w, mean, rstd, &sgh, &sghx);
        if (dw)
            for (int64_t j = 0; j < ch; j++) dw[j] += g[j] * ((x[j] - mean) * rstd);
        if (db)
            for (int64_t j = 0; j < ch; j++) db[j] += g[j];
    } else {
        for (int64_t c = 0; c < ch; c++) {
            const T *restrict gc = g + c * hw, *restrict xc = x + c * hw;
            double sg = 0, sgx = 0;
            for (int64_t j = 0; j < hw; j++) {
                sg += (double)gc[j];
                sgx += (double)(gc[j] * ((xc[j] - mean) * rstd));
            }
            const double wc = w ? (double)w[c] : 1.0;
            sgh += wc * sg;
            sghx += wc * sgx;
            if (dw) dw[c] += (T)sgx;
            if (db) db[c] += (T)sg;
        }
    }
    const T a = center && len > 0 ? (T)(sgh / (double)len) : (T)0;
    const T bq = len > 0 ? (T)(sghx / (double)len) : (T)0;
    if (hw == 1) {
        for (int64_t j = 0; j < ch; j++) {
            const T gh = w ? g[j] * w[j] : g[j];
            dx[j] = rstd * (gh - a - (x[j] - mean) * rstd * bq);
        }
        return;
    }
    for (int64_t c = 0; c < ch; c++) {
        const T wc = w ? w[c] : (T)1;
        const T *restrict gc = g + c * hw, *restrict xc = x + c * hw;
        T *restrict dc = dx + c * hw;
        for (int64_t j = 0; j < hw; j++) dc[j] = rstd * (gc[j] * wc - a - (xc[j] - mean) * rstd * bq);
    }
}

static void S(nm_zero)(T *p, int64_t n) {
    if (p && n > 0) memset(p, 0, sizeof(T) * (size_t)n);
}

void S(layer_norm)(int64_t rows, int64_t n, double eps, const T *x, const T *w, const T *b, T *y, T *save) {
    for (int64_t r = 0; r < rows; r++)
        S(nm_fwd_seg)(n, 1, eps, 1, x + r * n, w, b, y + r * n, save + r, save + rows + r);
}

void S(layer_norm_bwd)(int64_t rows, int64_t n, const T *g, const T *x, const T *w, const T *save, T *dx, T *dw,
                       T *db) {
    S(nm_zero)(dw, n);
    S(nm_zero)(db, n);
    for (int64_t r = 0; r < rows; r++)
        S(nm_bwd_seg)(n, 1, 1, g + r * n, x + r * n, w, save[r], save[rows + r], dx + r * n, dw, db);
}

void S(rms_norm)(int64_t rows, int64_t n, double eps, const T *x, const T *w, T *y, T *save) {
    for (int64_t r = 0; r < rows; r++)
        S(nm_fwd_seg)(n, 1, eps, 0, x + r * n, w, NULL, y + r * n, NULL, save + r);
}

void S(rms_norm_bwd)(int64_t rows, int64_t n, const T *g, const T *x, const T *w, const T *save, T *dx, T *dw) {
    S(nm_zero)(dw, n);
    for (int64_t r = 0; r < rows; r++)
        S(nm_bwd_seg)(n, 1, 0, g + r * n, x + r * n, w, (T)0, save[r], dx + r * n, dw, NULL);
}

void S(group_norm)(int64_t n, int64_t c, int64_t hw, int64_t groups, double eps, const T *x, const T *w,
                   const T *b, T *y, T *save) {
    if (groups <= 0 || c % groups) return;
    const int64_t cpg = c / groups, ng = n * groups, seg = cpg * hw;
    for (int64_t i = 0; i < ng; i++) {
        const int64_t c0 = (i % groups) * cpg;
        S(nm_fwd_seg)(cpg, hw, eps, 1, x + i * seg, w ? w + c0 : NULL, b ? b + c0 : NULL, y + i * seg, save + i,
                      save + ng + i);
    }
}

void S(group_norm_bwd)(int64_t n, int64_t c, int64_t hw, int64_t groups, const T *g, const T *x, const T *w,
                       const T *save, T *dx, T *dw, T *db) {
    if (groups <= 0 || c % groups) return;
    const int64_t cpg = c / groups, ng = n * groups, seg = cpg * hw;
    S(nm_zero)(dw, c);
    S(nm_zero)(db, c);
    for (int64_t i = 0; i < ng; i++) {
        const int64_t c0 = (i % groups) * cpg;
        S(nm_bwd_seg)(cpg, hw, 1, g + i * seg, x + i * seg, w ? w + c0 : NULL, save[i], save[ng + i], dx + i * seg,
                      dw ? dw + c0 : NULL, db ? db + c0 : NULL);
    }
}
