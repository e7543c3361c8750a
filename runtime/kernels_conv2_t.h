/* kernels_conv2_t.h -- bodies of the general convolution, pooling and upsampling
 * kernels for one element type (T, S(name) as in kernels_conv_t.h), included twice by
 * kernels_conv2.c.  Contracts: cdl.h, BEGIN CONV2.  No allocation. */

/* ------------------------------------------------------------------ im2col path */

/* The im2col matrix of cg channels of one image x[cg, h, w]: row (ci*r + ri)*s + si,
 * column oh*ow + o, holds x[ci, oh*sh - ph + ri*dh, o*sw - pw + si*dw] (0 outside). */
static void S(cg_im2col)(const cdl_convg_geom *g, int64_t cg, const T *restrict x, T *restrict col) {
    const int64_t H = g->h, W = g->w, OH = g->oh, OW = g->ow, P = OH * OW;
    for (int64_t ci = 0; ci < cg; ci++)
        for (int64_t ri = 0; ri < g->r; ri++) {
            int64_t hlo, hhi;
            cg_range(OH, H, g->sh, g->ph, ri * g->dh, &hlo, &hhi);
            for (int64_t si = 0; si < g->s; si++) {
                T *row = col + ((ci * g->r + ri) * g->s + si) * P;
                int64_t wlo, whi;
                cg_range(OW, W, g->sw, g->pw, si * g->dw, &wlo, &whi);
                memset(row, 0, sizeof(T) * (size_t)P);
                for (int64_t oh = hlo; oh < hhi; oh++) {
                    const T *restrict xr = x + (ci * H + oh * g->sh - g->ph + ri * g->dh) * W + si * g->dw - g->pw;
                    T *restrict d = row + oh * OW;
                    for (int64_t o = wlo; o < whi; o++) d[o] = xr[o * g->sw];
                }
            }
        }
}

/* Its adjoint: dx[cg, h, w] = the sum of the column entries each pixel fed (overwrites). */
static void S(cg_col2im)(const cdl_convg_geom *g, int64_t cg, const T *restrict col, T *restrict dx) {
    const int64_t H = g->h, W = g->w, OH = g->oh, OW = g->ow, P = OH * OW;
    memset(dx, 0, sizeof(T) * (size_t)(cg * H * W));
    for (int64_t ci = 0; ci < cg; ci++)
        for (int64_t ri = 0; ri < g->r; ri++) {
            int64_t hlo, hhi;
            cg_range(OH, H, g->sh, g->ph, ri * g->dh, &hlo, &hhi);
            for (int64_t si = 0; si < g->s; si++) {
                const T *row = col + ((ci * g->r + ri) * g->s + si) * P;
                int64_t wlo, whi;
                cg_range(OW, W, g->sw, g->pw, si * g->dw, &wlo, &whi);
                for (int64_t oh = hlo; oh < hhi; oh++) {
                    T *restrict dr = dx + (ci * H + oh * g->sh - g->ph + ri * g->dh) * W + si * g->dw - g->pw;
                    const T *restrict s = row + oh * OW;
                    for (int64_t o = wlo; o < whi; o++) dr[o * g->sw] += s[o];
                }
            }
        }
}

/* ------------------------------------------------------------------ depthwise path */

/* One input channel a group (cg = 1; kg = k / groups output channels per input
 * channel).  Tasks take ranges of planes: output planes (n, k) for the forward, input
 * planes (n, c) for bwd_x, output channels k for bwd_w (summing over the images in
 * order), so every value is computed by one task the same way for any thread count. */
typedef struct S(cg_job) {
    const cdl_convg_geom *g;
    const T *a, *w, *b;          /* forward: x, w, b; bwd_x: gy, w; bwd_w: a = gy, b = x */
    T *out;
    int64_t parts, nt;
    int kind;                    /* 0 forward, 1 bwd_x, 2 bwd_w */
} S(cg_job);

/* y[oh, ow] (+)= wv * x[oh*sh - ph + ri*dh, ow*sw - pw + si*dw] over the valid window. */
static void S(cg_tap)(const cdl_convg_geom *g, int64_t ri, int64_t si, T wv, const T *restrict x, T *restrict y) {
    int64_t hlo, hhi, wlo, whi;
    cg_range(g->oh, g->h, g->sh, g->ph, ri * g->dh, &hlo, &hhi);
    cg_range(g->ow, g->w, g->sw, g->pw, si * g->dw, &wlo, &whi);
    for (int64_t oh = hlo; oh < hhi; oh++) {
        const T *restrict xr = x + (oh * g->sh - g->ph + ri * g->dh) * g->w + si * g->dw - g->pw;
        T *restrict yr = y + oh * g->ow;
        if (g->sw == 1)
            for (int64_t o = wlo; o < whi; o++) yr[o] += wv * xr[o];
        else
            for (int64_t o = wlo; o < whi; o++) yr[o] += wv * xr[o * g->sw];
    }
}

/* The adjoint of one tap: dx[...] += wv * gy[oh, ow]. */
static void S(cg_tap_bwd)(const cdl_convg_geom *g, int64_t ri, int64_t si, T wv, const T *restrict gy, T *restrict dx) {
    int64_t hlo, hhi, wlo, whi;
    cg_range(g->oh, g->h, g->sh, g->ph, ri * g->dh, &hlo, &hhi);
    cg_range(g->ow, g->w, g->sw, g->pw, si * g->dw, &wlo, &whi);
    for (int64_t oh = hlo; oh < hhi; oh++) {
        T *restrict dr = dx + (oh * g->sh - g->ph + ri * g->dh) * g->w + si * g->dw - g->pw;
        const T *restrict gr = gy + oh * g->ow;
        for (int64_t o = wlo; o < whi; o++) dr[o * g->sw] += wv * gr[o];
    }
}

/* sum over the valid window of gy[oh, ow] * x[...] for one tap (double accumulation). */
static double S(cg_tap_dot)(const cdl_convg_geom *g, int64_t ri, int64_t si, const T *restrict gy, const T *restrict x) {
    int64_t hlo, hhi, wlo, whi;
    double acc = 0;
    cg_range(g->oh, g->h, g->sh, g->ph, ri * g->dh, &hlo, &hhi);
    cg_range(g->ow, g->w, g->sw, g->pw, si * g->dw, &wlo, &whi);
    for (int64_t oh = hlo; oh < hhi; oh++) {
        const T *restrict xr = x + (oh * g->sh - g->ph + ri * g->dh) * g->w + si * g->dw - g->pw;
        const T *restrict gr = gy + oh * g->ow;
        T s = 0;
        for (int64_t o = wlo; o < whi; o++) s += gr[o] * xr[o * g->sw];
        acc += (double)s;
    }
    return acc;
}

static void S(cg_task)(void *arg, int64_t t) {
    const S(cg_job) *j = arg;
    const cdl_convg_geom *g = j->g;
    const int64_t kg = g->k / g->groups, HW = g->h * g->w, P = g->oh * g->ow, RS = g->r * g->s;
    const int64_t p0 = j->parts * t / j->nt, p1 = j->parts * (t + 1) / j->nt;
    for (int64_t p = p0; p < p1; p++) {
        if (j->kind == 0) { /* output plane p = (n, kk) */
            const int64_t n = p / g->k, kk = p % g->k;
            T *y = j->out + p * P;
            const T bv = j->b ? j->b[kk] : (T)0;
            for (int64_t i = 0; i < P; i++) y[i] = bv;
            const T *x = j->a + (n * g->c + kk / kg) * HW;
            for (int64_t tap = 0; tap < RS; tap++) S(cg_tap)(g, tap / g->s, tap % g->s, j->w[kk * RS + tap], x, y);
        } else if (j->kind == 1) { /* input plane p = (n, ci) */
            const int64_t n = p / g->c, ci = p % g->c;
            T *dx = j->out + p * HW;
            memset(dx, 0, sizeof(T) * (size_t)HW);
            for (int64_t kk = ci * kg; kk < (ci + 1) * kg; kk++)
                for (int64_t tap = 0; tap < RS; tap++)
                    S(cg_tap_bwd)(g, tap / g->s, tap % g->s, j->w[kk * RS + tap], j->a + (n * g->k + kk) * P, dx);
        } else { /* output channel p: its r x s weights summed over the images */
            for (int64_t tap = 0; tap < RS; tap++) {
                double acc = 0;
                for (int64_t n = 0; n < g->n; n++)
                    acc += S(cg_tap_dot)(g, tap / g->s, tap % g->s, j->a + (n * g->k + p) * P,
                                         j->b + (n * g->c + p / kg) * HW);
                j->out[p * RS + tap] = (T)acc;
            }
        }
    }
}

static void S(cg_direct)(const cdl_convg_geom *g, int kind, const T *a, const T *w, const T *b, T *out) {
    S(cg_job) j = {.g = g, .a = a, .w = w, .b = b, .out = out, .kind = kind};
    j.parts = kind == 0 ? g->n * g->k : kind == 1 ? g->n * g->c : g->k;
    if (j.parts <= 0) return;
    j.nt = cg_threads(j.parts, (double)g->n * (double)g->k * (double)(g->oh * g->ow * g->r * g->s));
    cdl_parallel_for(j.nt, S(cg_task), &j);
}

/* ------------------------------------------------------------------ convolution */

/* The two cases without a GEMM per group, done here (1) or not (0): a plain conv
 * (cdl_convg_square: one conv2d call) and a depthwise one (cg_direct).  kind and the
 * operands as for cg_direct: 0 y from (x, w, b), 1 dx from (g, w), 2 dw from (g, x). */
static int S(cg_special)(const cdl_convg_geom *g, int kind, const T *a, const T *w, const T *b, T *out,
                         T *scratch) {
    cdl_conv2d_geom q;
    if (cdl_convg_square(g, &q)) {
        if (kind == 0)
            S(conv2d)(&q, a, w, b, out, scratch);
        else if (kind == 1)
            S(conv2d_bwd_x)(&q, a, w, out, scratch);
        else
            S(conv2d_bwd_w)(&q, a, b, out, scratch);
        return 1;
    }
    if (g->c != g->groups)
        return 0;
    S(cg_direct)(g, kind, a, w, b, out);
    return 1;
}

/* Per image and group: y_g[kg, P] = w_g[kg, cg r s] col[cg r s, P] (+ b), one GEMM
 * over the bias rows. */
void S(convg)(const cdl_convg_geom *g, const T *x, const T *w, const T *b, T *y, T *scratch) {
    if (S(cg_special)(g, 0, x, w, b, y, scratch))
        return;
    const int64_t cg = g->c / g->groups, kg = g->k / g->groups, P = g->oh * g->ow, CRS = cg * g->r * g->s;
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t gr = 0; gr < g->groups; gr++) {
            T *yg = y + (n * g->k + gr * kg) * P;
            for (int64_t kk = 0; kk < kg; kk++) {
                const T bv = b ? b[gr * kg + kk] : (T)0;
                for (int64_t i = 0; i < P; i++) yg[kk * P + i] = bv;
            }
            S(cg_im2col)(g, cg, x + (n * g->c + gr * cg) * g->h * g->w, scratch);
            S(gemm)(0, 0, kg, P, CRS, (T)1, w + gr * kg * CRS, CRS, scratch, P, (T)1, yg, P);
        }
}

/* Per image and group: col = w_g^T g_g, then col2im into the group's channels of dx. */
void S(convg_bwd_x)(const cdl_convg_geom *g, const T *gy, const T *w, T *dx, T *scratch) {
    if (S(cg_special)(g, 1, gy, w, NULL, dx, scratch))
        return;
    const int64_t cg = g->c / g->groups, kg = g->k / g->groups, P = g->oh * g->ow, CRS = cg * g->r * g->s;
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t gr = 0; gr < g->groups; gr++) {
            S(gemm)(1, 0, CRS, P, kg, (T)1, w + gr * kg * CRS, CRS, gy + (n * g->k + gr * kg) * P, P, (T)0, scratch, P);
            S(cg_col2im)(g, cg, scratch, dx + (n * g->c + gr * cg) * g->h * g->w);
        }
}

/* dw_g[kg, cg r s] = sum over images of g_g col^T (GEMM accumulation, images in order). */
void S(convg_bwd_w)(const cdl_convg_geom *g, const T *gy, const T *x, T *dw, T *scratch) {
    if (S(cg_special)(g, 2, gy, NULL, x, dw, scratch))
        return;
    const int64_t cg = g->c / g->groups, kg = g->k / g->groups, P = g->oh * g->ow, CRS = cg * g->r * g->s;
    memset(dw, 0, sizeof(T) * (size_t)(g->k * CRS));
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t gr = 0; gr < g->groups; gr++) {
            S(cg_im2col)(g, cg, x + (n * g->c + gr * cg) * g->h * g->w, scratch);
            S(gemm)(0, 1, kg, CRS, P, (T)1, gy + (n * g->k + gr * kg) * P, P, scratch, P, (T)1, dw + gr * kg * CRS, CRS);
        }
}

/* y[n, c, h, w] = the adjoint of g's convolution applied to x[n, k, oh, ow], + b[c]. */
void S(conv_transpose2d)(const cdl_convg_geom *g, const T *x, const T *w, const T *b, T *y, T *scratch) {
    S(convg_bwd_x)(g, x, w, y, scratch);
    if (!b) return;
    const int64_t HW = g->h * g->w;
    for (int64_t p = 0; p < g->n * g->c; p++) {
        const T bv = b[p % g->c];
        T *restrict yp = y + p * HW;
        for (int64_t i = 0; i < HW; i++) yp[i] += bv;
    }
}

/* ------------------------------------------------------------------ pooling */

/* Index in the plane of the first maximum of window (oh, ow) (the first NaN wins). */
static int64_t S(pl_argmax)(const cdl_pool_geom *p, const T *x, int64_t oh, int64_t ow) {
    int64_t h0 = oh * p->sh - p->ph, w0 = ow * p->sw - p->pw, best = -1;
    T bv = 0;
    for (int64_t ih = h0 < 0 ? 0 : h0; ih < h0 + p->kh && ih < p->h; ih++)
        for (int64_t iw = w0 < 0 ? 0 : w0; iw < w0 + p->kw && iw < p->w; iw++) {
            T v = x[ih * p->w + iw];
            if (best < 0 || v > bv || (v != v && bv == bv)) {
                best = ih * p->w + iw;
                bv = v;
            }
        }
    return best;
}

void S(maxpool)(const cdl_pool_geom *p, const T *x, T *y) {
    for (int64_t q = 0; q < p->nc; q++)
        for (int64_t oh = 0; oh < p->oh; oh++)
            for (int64_t ow = 0; ow < p->ow; ow++) {
                const T *xq = x + q * p->h * p->w;
                int64_t a = S(pl_argmax)(p, xq, oh, ow);
                y[(q * p->oh + oh) * p->ow + ow] = a >= 0 ? xq[a] : (T)-INFINITY;
            }
}

void S(maxpool_bwd)(const cdl_pool_geom *p, const T *g, const T *x, T *dx) {
    memset(dx, 0, sizeof(T) * (size_t)(p->nc * p->h * p->w));
    for (int64_t q = 0; q < p->nc; q++)
        for (int64_t oh = 0; oh < p->oh; oh++)
            for (int64_t ow = 0; ow < p->ow; ow++) {
                int64_t a = S(pl_argmax)(p, x + q * p->h * p->w, oh, ow);
                if (a >= 0) dx[q * p->h * p->w + a] += g[(q * p->oh + oh) * p->ow + ow];
            }
}

/* Window (oh, ow) clipped to the plane: rows [*h0, *h1), columns [*w0, *w1).  Adaptive
 * windows are [floor(i in / out), ceil((i + 1) in / out)). */
static void S(pl_window)(const cdl_pool_geom *p, int adaptive, int64_t oh, int64_t ow, int64_t *h0, int64_t *h1,
                         int64_t *w0, int64_t *w1) {
    if (adaptive) {
        *h0 = oh * p->h / p->oh;
        *h1 = ((oh + 1) * p->h + p->oh - 1) / p->oh;
        *w0 = ow * p->w / p->ow;
        *w1 = ((ow + 1) * p->w + p->ow - 1) / p->ow;
        return;
    }
    int64_t a = oh * p->sh - p->ph, b = ow * p->sw - p->pw;
    *h0 = a < 0 ? 0 : a;
    *h1 = a + p->kh < p->h ? a + p->kh : p->h;
    *w0 = b < 0 ? 0 : b;
    *w1 = b + p->kw < p->w ? b + p->kw : p->w;
}

/* Average pooling, plain (divisor kh * kw: padding counted) or adaptive (divisor the
 * window's size); bwd spreads g the same way (overwrites dx). */
static void S(pl_avg)(const cdl_pool_geom *p, int adaptive, int bwd, const T *in, T *out) {
    if (bwd) memset(out, 0, sizeof(T) * (size_t)(p->nc * p->h * p->w));
    for (int64_t q = 0; q < p->nc; q++)
        for (int64_t oh = 0; oh < p->oh; oh++)
            for (int64_t ow = 0; ow < p->ow; ow++) {
                int64_t h0, h1, w0, w1;
                S(pl_window)(p, adaptive, oh, ow, &h0, &h1, &w0, &w1);
                const int64_t cnt = adaptive ? (h1 - h0) * (w1 - w0) : p->kh * p->kw;
                const int64_t o = (q * p->oh + oh) * p->ow + ow, base = q * p->h * p->w;
                if (bwd) {
                    const T v = in[o] / (T)cnt;
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++) out[base + ih * p->w + iw] += v;
                } else {
                    T s = 0;
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++) s += in[base + ih * p->w + iw];
                    out[o] = s / (T)cnt;
                }
            }
}

void S(avgpool)(const cdl_pool_geom *p, const T *x, T *y) { S(pl_avg)(p, 0, 0, x, y); }
void S(avgpool_bwd)(const cdl_pool_geom *p, const T *g, T *dx) { S(pl_avg)(p, 0, 1, g, dx); }
void S(adaptive_avgpool)(const cdl_pool_geom *p, const T *x, T *y) { S(pl_avg)(p, 1, 0, x, y); }
void S(adaptive_avgpool_bwd)(const cdl_pool_geom *p, const T *g, T *dx) { S(pl_avg)(p, 1, 1, g, dx); }

/* ------------------------------------------------------------------ upsampling */

/* Nearest: y[q, i, j] = x[q, src(i), src(j)]; bwd adds g back to the sources. */
static void S(up_nn)(int bwd, int64_t nc, int64_t h, int64_t w, int64_t oh, int64_t ow, double sh, double sw,
                     const T *in, T *out) {
    if (bwd) memset(out, 0, sizeof(T) * (size_t)(nc * h * w));
    for (int64_t i = 0; i < oh; i++) {
        const int64_t si = up_nearest(i, h, oh, sh);
        for (int64_t q = 0; q < nc; q++) {
            const int64_t xr = (q * h + si) * w, yr = (q * oh + i) * ow;
            for (int64_t j = 0; j < ow; j++) {
                const int64_t sj = up_nearest(j, w, ow, sw);
                if (bwd) out[xr + sj] += in[yr + j];
                else out[yr + j] = in[xr + sj];
            }
        }
    }
}

void S(upsample_nearest)(int64_t nc, int64_t h, int64_t w, int64_t oh, int64_t ow, double sh, double sw, const T *x, T *y) {
    S(up_nn)(0, nc, h, w, oh, ow, sh, sw, x, y);
}
void S(upsample_nearest_bwd)(int64_t nc, int64_t h, int64_t w, int64_t oh, int64_t ow, double sh, double sw, const T *g,
                             T *dx) {
    S(up_nn)(1, nc, h, w, oh, ow, sh, sw, g, dx);
}

/* Bilinear (align_corners = False): each output mixes its four source neighbours with
 * weights (1 - lh, lh) x (1 - lw, lw); bwd adds g back with the same weights. */
static void S(up_bl)(int bwd, int64_t nc, int64_t h, int64_t w, int64_t oh, int64_t ow, double sh, double sw,
                     const T *in, T *out) {
    const double rh = up_scale(sh, h, oh), rw = up_scale(sw, w, ow);
    if (bwd) memset(out, 0, sizeof(T) * (size_t)(nc * h * w));
    for (int64_t i = 0; i < oh; i++) {
        int64_t h0, hp;
        double lh;
        up_linear(i, h, rh, &h0, &hp, &lh);
        const T a1 = (T)lh, a0 = (T)1 - a1;
        for (int64_t q = 0; q < nc; q++) {
            const int64_t r0 = (q * h + h0) * w, r1 = r0 + hp * w, yr = (q * oh + i) * ow;
            for (int64_t j = 0; j < ow; j++) {
                int64_t w0, wp;
                double lw;
                up_linear(j, w, rw, &w0, &wp, &lw);
                const T b1 = (T)lw, b0 = (T)1 - b1;
                if (bwd) {
                    const T gv = in[yr + j];
                    out[r0 + w0] += a0 * b0 * gv;
                    out[r0 + w0 + wp] += a0 * b1 * gv;
                    out[r1 + w0] += a1 * b0 * gv;
                    out[r1 + w0 + wp] += a1 * b1 * gv;
                } else {
                    out[yr + j] = a0 * (b0 * in[r0 + w0] + b1 * in[r0 + w0 + wp]) +
                                  a1 * (b0 * in[r1 + w0] + b1 * in[r1 + w0 + wp]);
                }
            }
        }
    }
}

void S(upsample_bilinear)(int64_t nc, int64_t h, int64_t w, int64_t oh, int64_t ow, double sh, double sw, const T *x,
                          T *y) {
    S(up_bl)(0, nc, h, w, oh, ow, sh, sw, x, y);
}
void S(upsample_bilinear_bwd)(int64_t nc, int64_t h, int64_t w, int64_t oh, int64_t ow, double sh, double sw,
                              const T *g, T *dx) {
    S(up_bl)(1, nc, h, w, oh, ow, sh, sw, g, dx);
}
