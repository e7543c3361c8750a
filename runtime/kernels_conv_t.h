/* kernels_conv_t.h -- bodies of the convolution, pooling and batch-norm kernels for one
 * element type.  Included twice by kernels_conv.c with T = float / double and
 * S(name) = cdl_name_f32 / cdl_name_f64; contracts are in cdl.h (BEGIN CONV).
 * Layout is NCHW throughout.  No allocation: the conv kernels get their scratch. */

/* Lower one image x[c, h, w] into the im2col matrix: row (ci*r + ri)*s + si, column
 * oh*ow + o holds x[ci, oh*stride - pad + ri, o*stride - pad + si] (0 in the padding).
 * Row length (leading dimension) is ld, so several images can sit side by side. */
static void S(im2col)(const cdl_conv2d_geom *gm, const T *restrict x, T *restrict col, int64_t ld) {
    const int64_t H = gm->h, W = gm->w, R = gm->r, Sk = gm->s, OH = gm->oh, OW = gm->ow;
    const int64_t st = gm->stride, pad = gm->pad;
    for (int64_t ci = 0; ci < gm->c; ci++) {
        const T *xc = x + ci * H * W;
        for (int64_t ri = 0; ri < R; ri++) {
            int64_t hlo, hhi;
            conv_span(OH, H, st, pad, ri, &hlo, &hhi);
            for (int64_t si = 0; si < Sk; si++) {
                T *row = col + ((ci * R + ri) * Sk + si) * ld;
                int64_t wlo, whi;
                conv_span(OW, W, st, pad, si, &wlo, &whi);
                for (int64_t oh = 0; oh < OH; oh++) {
                    T *d = row + oh * OW;
                    if (oh < hlo || oh >= hhi) {
                        memset(d, 0, sizeof(T) * (size_t)OW);
                        continue;
                    }
                    const T *xr = xc + (oh * st - pad + ri) * W;
                    for (int64_t o = 0; o < wlo; o++) d[o] = 0;
                    if (st == 1) {
                        if (whi > wlo) memcpy(d + wlo, xr + (wlo - pad + si), sizeof(T) * (size_t)(whi - wlo));
                    } else {
                        for (int64_t o = wlo; o < whi; o++) d[o] = xr[o * st - pad + si];
                    }
                    for (int64_t o = whi; o < OW; o++) d[o] = 0;
                }
            }
        }
    }
}

/* The adjoint of im2col: dx[c, h, w] = the sum of every column entry that im2col would
 * have copied from that pixel.  Overwrites dx. */
static void S(col2im)(const cdl_conv2d_geom *gm, const T *restrict col, int64_t ld, T *restrict dx) {
    const int64_t H = gm->h, W = gm->w, R = gm->r, Sk = gm->s, OH = gm->oh, OW = gm->ow;
    const int64_t st = gm->stride, pad = gm->pad;
    memset(dx, 0, sizeof(T) * (size_t)(gm->c * H * W));
    for (int64_t ci = 0; ci < gm->c; ci++) {
        T *dc = dx + ci * H * W;
        for (int64_t ri = 0; ri < R; ri++) {
            int64_t hlo, hhi;
            conv_span(OH, H, st, pad, ri, &hlo, &hhi);
            for (int64_t si = 0; si < Sk; si++) {
                const T *row = col + ((ci * R + ri) * Sk + si) * ld;
                int64_t wlo, whi;
                conv_span(OW, W, st, pad, si, &wlo, &whi);
                for (int64_t oh = hlo; oh < hhi; oh++) {
                    const T *restrict src = row + oh * OW;
                    T *restrict dr = dc + (oh * st - pad + ri) * W;
                    if (st == 1) {
                        const int64_t sh = si - pad; /* o + sh >= 0 for o >= wlo */
                        for (int64_t o = wlo; o < whi; o++) dr[o + sh] += src[o];
                    } else {
                        for (int64_t o = wlo; o < whi; o++) dr[o * st - pad + si] += src[o];
                    }
                }
            }
        }
    }
}

/* Copy image x[c, h, w] into xp[c, h + 2 pad, w + 2 pad] with a zero border. */
static void S(conv_pad)(const cdl_conv2d_geom *gm, const T *restrict x, T *restrict xp) {
    const int64_t H = gm->h, W = gm->w, p = gm->pad, Hp = H + 2 * p, Wp = W + 2 * p;
    for (int64_t ci = 0; ci < gm->c; ci++) {
        T *d = xp + ci * Hp * Wp;
        memset(d, 0, sizeof(T) * (size_t)(p * Wp + p));
        for (int64_t ih = 0; ih < H; ih++) {
            T *row = d + (ih + p) * Wp + p;
            memcpy(row, x + (ci * H + ih) * W, sizeof(T) * (size_t)W);
            if (ih + 1 < H) memset(row + W, 0, sizeof(T) * (size_t)(2 * p));
        }
        memset(d + (H + p - 1) * Wp + p + W, 0, sizeof(T) * (size_t)(p * Wp + p));
    }
}

/* dx[c, h, w] = dxp[c, h + pad, w + pad]: the interior of a padded image. */
static void S(conv_crop)(const cdl_conv2d_geom *gm, const T *restrict dxp, T *restrict dx) {
    const int64_t H = gm->h, W = gm->w, p = gm->pad, Hp = H + 2 * p, Wp = W + 2 * p;
    for (int64_t ci = 0; ci < gm->c; ci++)
        for (int64_t ih = 0; ih < H; ih++)
            memcpy(dx + (ci * H + ih) * W, dxp + (ci * Hp + ih + p) * Wp + p, sizeof(T) * (size_t)W);
}

/* Wide im2col of a padded image xp (stride 1): row (ci*r + ri)*s + si is the run of
 * `cols` reals of xp starting at channel ci, row ri, column si. */
static void S(im2col_wide)(const cdl_conv2d_geom *gm, const T *restrict xp, T *restrict col, int64_t ld, int64_t cols) {
    const int64_t Hp = gm->h + 2 * gm->pad, Wp = gm->w + 2 * gm->pad;
    for (int64_t ci = 0; ci < gm->c; ci++)
        for (int64_t ri = 0; ri < gm->r; ri++)
            for (int64_t si = 0; si < gm->s; si++)
                memcpy(col + ((ci * gm->r + ri) * gm->s + si) * ld, xp + (ci * Hp + ri) * Wp + si,
                       sizeof(T) * (size_t)cols);
}

/* Adjoint of im2col_wide: dxp (padded image) = the sum of the rows added back at the
 * runs they came from.  Overwrites dxp. */
static void S(col2im_wide)(const cdl_conv2d_geom *gm, const T *restrict col, int64_t ld, int64_t cols, T *restrict dxp) {
    const int64_t Hp = gm->h + 2 * gm->pad, Wp = gm->w + 2 * gm->pad;
    memset(dxp, 0, sizeof(T) * (size_t)(gm->c * Hp * Wp));
    for (int64_t ci = 0; ci < gm->c; ci++)
        for (int64_t ri = 0; ri < gm->r; ri++)
            for (int64_t si = 0; si < gm->s; si++) {
                T *restrict d = dxp + (ci * Hp + ri) * Wp + si;
                const T *restrict src = col + ((ci * gm->r + ri) * gm->s + si) * ld;
                for (int64_t i = 0; i < cols; i++) d[i] += src[i];
            }
}

/* GEMM result of one image on a grid of row length wrow (wrow = ow, or the padded
 * width for wide lowering) -> y[k, oh, ow], plus the bias (b may be NULL). */
static void S(conv_unwiden)(const cdl_conv2d_geom *gm, const T *restrict t, int64_t ld, int64_t wrow, const T *b,
                            T *restrict y) {
    const int64_t OH = gm->oh, OW = gm->ow;
    for (int64_t k = 0; k < gm->k; k++) {
        const T bk = b ? b[k] : 0;
        for (int64_t oh = 0; oh < OH; oh++) {
            const T *restrict tr = t + k * ld + oh * wrow;
            T *restrict yr = y + (k * OH + oh) * OW;
            for (int64_t o = 0; o < OW; o++) yr[o] = tr[o] + bk;
        }
    }
}

/* The inverse layout change: g[k, oh, ow] of one image onto the grid (row length
 * wrow, leading dimension ld), the grid's extra columns zeroed. */
static void S(conv_widen)(const cdl_conv2d_geom *gm, const T *restrict g, T *restrict t, int64_t ld, int64_t wrow) {
    const int64_t OH = gm->oh, OW = gm->ow;
    for (int64_t k = 0; k < gm->k; k++)
        for (int64_t oh = 0; oh < OH; oh++) {
            T *restrict tr = t + k * ld + oh * wrow;
            memcpy(tr, g + (k * OH + oh) * OW, sizeof(T) * (size_t)OW);
            if (oh + 1 < OH)
                for (int64_t o = OW; o < wrow; o++) tr[o] = 0;
        }
}

/* The lowering of one conv call: scratch parts and the mode (cdl.h, cdl_conv2d_parts). */
typedef struct S(conv_lower) {
    int64_t G, cols, wrow, xs, P, CRS;
    int direct, wide;
    T *xpad, *col, *tmp, *dwt;
} S(conv_lower);

static S(conv_lower) S(conv_lowering)(const cdl_conv2d_geom *gm, T *scratch) {
    S(conv_lower) L;
    int64_t parts[5];
    cdl_conv2d_parts(gm, parts);
    L.G = gm->group > 1 ? gm->group : 1;
    L.direct = conv_direct(gm);
    L.wide = gm->stride == 1 && !L.direct;
    L.cols = parts[4];
    L.wrow = L.wide ? gm->w + 2 * gm->pad : gm->ow;
    L.xs = gm->c * gm->h * gm->w;
    L.P = gm->oh * gm->ow;
    L.CRS = gm->c * gm->r * gm->s;
    L.xpad = scratch;
    L.col = scratch ? scratch + parts[0] : NULL;
    L.tmp = scratch ? scratch + parts[0] + parts[1] : NULL;
    L.dwt = scratch ? scratch + parts[0] + parts[1] + parts[2] : NULL;
    return L;
}

/* im2col of image x into columns [j*cols, (j+1)*cols) of the matrix (leading dim ld). */
static void S(conv_lower_image)(const cdl_conv2d_geom *gm, const S(conv_lower) *L, const T *x, int64_t j, int64_t ld) {
    if (L->wide) {
        const T *xp = x;
        if (gm->pad > 0) {
            S(conv_pad)(gm, x, L->xpad);
            xp = L->xpad;
        }
        S(im2col_wide)(gm, xp, L->col + j * L->cols, ld, L->cols);
    } else {
        S(im2col)(gm, x, L->col + j * L->cols, ld);
    }
}

void S(conv2d)(const cdl_conv2d_geom *gm, const T *x, const T *w, const T *b, T *y, T *scratch) {
    S(conv_lower) L = S(conv_lowering)(gm, scratch);
    const int64_t N = gm->n, K = gm->k, P = L.P, CRS = L.CRS;
    for (int64_t n0 = 0; n0 < N; n0 += L.G) {
        const int64_t gn = N - n0 < L.G ? N - n0 : L.G;
        if (L.G == 1 && !L.wide) { /* GEMM straight into y: direct, or classic im2col */
            const T *src = x + n0 * L.xs;
            if (!L.direct) {
                S(im2col)(gm, src, L.col, P);
                src = L.col;
            }
            T *yn = y + n0 * K * P;
            if (b)
                for (int64_t k = 0; k < K; k++)
                    for (int64_t p = 0; p < P; p++) yn[k * P + p] = b[k];
            S(gemm)(0, 0, K, P, CRS, 1, w, CRS, src, P, b ? 1 : 0, yn, P);
            continue;
        }
        const int64_t ld = gn * L.cols;
        for (int64_t j = 0; j < gn; j++) S(conv_lower_image)(gm, &L, x + (n0 + j) * L.xs, j, ld);
        S(gemm)(0, 0, K, ld, CRS, 1, w, CRS, L.col, ld, 0, L.tmp, ld);
        for (int64_t j = 0; j < gn; j++) S(conv_unwiden)(gm, L.tmp + j * L.cols, ld, L.wrow, b, y + (n0 + j) * K * P);
    }
}

void S(conv2d_bwd_x)(const cdl_conv2d_geom *gm, const T *g, const T *w, T *dx, T *scratch) {
    S(conv_lower) L = S(conv_lowering)(gm, scratch);
    const int64_t N = gm->n, K = gm->k, P = L.P, CRS = L.CRS;
    for (int64_t n0 = 0; n0 < N; n0 += L.G) {
        const int64_t gn = N - n0 < L.G ? N - n0 : L.G;
        if (L.G == 1 && !L.wide) {
            const T *gn0 = g + n0 * K * P;
            if (L.direct) {
                S(gemm)(1, 0, CRS, P, K, 1, w, CRS, gn0, P, 0, dx + n0 * L.xs, P);
            } else {
                S(gemm)(1, 0, CRS, P, K, 1, w, CRS, gn0, P, 0, L.col, P);
                S(col2im)(gm, L.col, P, dx + n0 * L.xs);
            }
            continue;
        }
        const int64_t ld = gn * L.cols;
        for (int64_t j = 0; j < gn; j++) S(conv_widen)(gm, g + (n0 + j) * K * P, L.tmp + j * L.cols, ld, L.wrow);
        S(gemm)(1, 0, CRS, ld, K, 1, w, CRS, L.tmp, ld, 0, L.col, ld);
        for (int64_t j = 0; j < gn; j++) {
            T *dxj = dx + (n0 + j) * L.xs;
            if (!L.wide) {
                S(col2im)(gm, L.col + j * L.cols, ld, dxj);
            } else if (gm->pad > 0) {
                S(col2im_wide)(gm, L.col + j * L.cols, ld, L.cols, L.xpad);
                S(conv_crop)(gm, L.xpad, dxj);
            } else {
                S(col2im_wide)(gm, L.col + j * L.cols, ld, L.cols, dxj);
            }
        }
    }
}

/* dw^T[CRS, K] accumulates col g^T image group by image group (a faster GEMM shape
 * than dw = g col^T for these skinny products), then is transposed into dw. */
void S(conv2d_bwd_w)(const cdl_conv2d_geom *gm, const T *g, const T *x, T *dw, T *scratch) {
    S(conv_lower) L = S(conv_lowering)(gm, scratch);
    const int64_t N = gm->n, K = gm->k, P = L.P, CRS = L.CRS;
    T *dwt = L.dwt;
    for (int64_t n0 = 0; n0 < N; n0 += L.G) {
        const int64_t gn = N - n0 < L.G ? N - n0 : L.G;
        const T beta = n0 == 0 ? 0 : 1;
        if (L.G == 1 && !L.wide) {
            const T *src = x + n0 * L.xs;
            if (!L.direct) {
                S(im2col)(gm, src, L.col, P);
                src = L.col;
            }
            S(gemm)(0, 1, CRS, K, P, 1, src, P, g + n0 * K * P, P, beta, dwt, K);
            continue;
        }
        const int64_t ld = gn * L.cols;
        for (int64_t j = 0; j < gn; j++) {
            S(conv_lower_image)(gm, &L, x + (n0 + j) * L.xs, j, ld);
            S(conv_widen)(gm, g + (n0 + j) * K * P, L.tmp + j * L.cols, ld, L.wrow);
        }
        S(gemm)(0, 1, CRS, K, ld, 1, L.col, ld, L.tmp, ld, beta, dwt, K);
    }
    if (N <= 0) memset(dwt, 0, sizeof(T) * (size_t)(K * CRS));
    for (int64_t k = 0; k < K; k++)
        for (int64_t q = 0; q < CRS; q++) dw[k * CRS + q] = dwt[q * K + k];
}

/* ------------------------------------------------------------------ pooling */

/* Index (in the plane) of the first maximum of the window at (oh, ow); NaN wins as in
 * PyTorch.  Windows always hold at least one real cell (pad <= k/2). */
static inline int64_t S(pool_argmax)(const T *xp, int64_t H, int64_t W, int64_t k, int64_t st, int64_t pad,
                                     int64_t oh, int64_t ow) {
    int64_t h0 = oh * st - pad, w0 = ow * st - pad;
    int64_t h1 = h0 + k < H ? h0 + k : H, w1 = w0 + k < W ? w0 + k : W;
    if (h0 < 0) h0 = 0;
    if (w0 < 0) w0 = 0;
    int64_t best = h0 * W + w0;
    T m = xp[best];
    for (int64_t ih = h0; ih < h1; ih++)
        for (int64_t iw = w0; iw < w1; iw++) {
            T v = xp[ih * W + iw];
            if (v > m || (v != v && m == m)) {
                m = v;
                best = ih * W + iw;
            }
        }
    return best;
}

/* 2x2, stride 2, no padding (the common case), branch-free: the maximum of a, b, c, d,
 * or NaN when one of them is NaN. */
static inline T S(max4)(T a, T b, T c, T d) {
    T m1 = a > b ? a : b, m2 = c > d ? c : d, m = m1 > m2 ? m1 : m2;
    int nan = (a != a) | (b != b) | (c != c) | (d != d);
    return nan ? a + b + c + d : m;
}

/* Index 0..3 of the first maximum of a, b, c, d (the first NaN wins).  Without NaNs
 * the selects compile to conditional moves (no branch to mispredict on ties). */
static inline int S(argmax4)(T a, T b, T c, T d) {
    T s = a + b + c + d;
    if (s != s) { /* rare: a NaN (or inf - inf) in the window */
        if (a != a) return 0;
        if (b != b) return 1;
        if (c != c) return 2;
        if (d != d) return 3;
    }
    /* i = index of the running maximum, updated arithmetically (compilers turn
     * "i = cond ? k : i" chains into branches) */
    int t = b > a, i = t;
    T m = b > a ? b : a;
    t = c > m;
    i += t * (2 - i);
    m = c > m ? c : m;
    t = d > m;
    i += t * (3 - i);
    return i;
}

void S(maxpool2d)(int64_t nc, int64_t H, int64_t W, int64_t k, int64_t st, int64_t pad, const T *x, T *y) {
    const int64_t OH = (H + 2 * pad - k) / st + 1, OW = (W + 2 * pad - k) / st + 1;
    for (int64_t q = 0; q < nc; q++) {
        const T *xp = x + q * H * W;
        T *yp = y + q * OH * OW;
        if (k == 2 && st == 2 && pad == 0) {
            for (int64_t oh = 0; oh < OH; oh++) {
                const T *restrict r0 = xp + 2 * oh * W, *restrict r1 = r0 + W;
                T *restrict yr = yp + oh * OW;
                for (int64_t ow = 0; ow < OW; ow++)
                    yr[ow] = S(max4)(r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]);
            }
            continue;
        }
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) yp[oh * OW + ow] = xp[S(pool_argmax)(xp, H, W, k, st, pad, oh, ow)];
    }
}

void S(maxpool2d_bwd)(int64_t nc, int64_t H, int64_t W, int64_t k, int64_t st, int64_t pad, const T *g, const T *x,
                      T *dx) {
    const int64_t OH = (H + 2 * pad - k) / st + 1, OW = (W + 2 * pad - k) / st + 1;
    const int fast = k == 2 && st == 2 && pad == 0;
    /* the fast path writes every cell its windows cover; only odd edges need zeros */
    if (!fast || H % 2 || W % 2) memset(dx, 0, sizeof(T) * (size_t)(nc * H * W));
    for (int64_t q = 0; q < nc; q++) {
        const T *xp = x + q * H * W, *gp = g + q * OH * OW;
        T *dp = dx + q * H * W;
        if (fast) {
            for (int64_t oh = 0; oh < OH; oh++) {
                const T *restrict r0 = xp + 2 * oh * W, *restrict r1 = r0 + W;
                T *d0 = dp + 2 * oh * W, *d1 = d0 + W; /* may alias each other: no restrict */
                const T *restrict gr = gp + oh * OW;
                for (int64_t ow = 0; ow < OW; ow++) {
                    int i = S(argmax4)(r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]);
                    d0[2 * ow] = d0[2 * ow + 1] = d1[2 * ow] = d1[2 * ow + 1] = 0;
                    d0[2 * ow + (i >> 1) * W + (i & 1)] = gr[ow]; /* computed index: no branch */
                }
            }
            continue;
        }
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++)
                dp[S(pool_argmax)(xp, H, W, k, st, pad, oh, ow)] += gp[oh * OW + ow];
    }
}

void S(avgpool2d)(int64_t nc, int64_t H, int64_t W, int64_t k, int64_t st, int64_t pad, const T *x, T *y) {
    const int64_t OH = (H + 2 * pad - k) / st + 1, OW = (W + 2 * pad - k) / st + 1;
    const T inv = (T)1 / (T)(k * k);
    for (int64_t q = 0; q < nc; q++) {
        const T *xp = x + q * H * W;
        T *yp = y + q * OH * OW;
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t h0 = oh * st - pad, h1 = h0 + k < H ? h0 + k : H;
            if (h0 < 0) h0 = 0;
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t w0 = ow * st - pad, w1 = w0 + k < W ? w0 + k : W;
                if (w0 < 0) w0 = 0;
                T s = 0;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) s += xp[ih * W + iw];
                yp[oh * OW + ow] = s * inv;
            }
        }
    }
}

void S(avgpool2d_bwd)(int64_t nc, int64_t H, int64_t W, int64_t k, int64_t st, int64_t pad, const T *g, T *dx) {
    const int64_t OH = (H + 2 * pad - k) / st + 1, OW = (W + 2 * pad - k) / st + 1;
    const T inv = (T)1 / (T)(k * k);
    memset(dx, 0, sizeof(T) * (size_t)(nc * H * W));
    for (int64_t q = 0; q < nc; q++) {
        const T *gp = g + q * OH * OW;
        T *dp = dx + q * H * W;
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t h0 = oh * st - pad, h1 = h0 + k < H ? h0 + k : H;
            if (h0 < 0) h0 = 0;
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t w0 = ow * st - pad, w1 = w0 + k < W ? w0 + k : W;
                if (w0 < 0) w0 = 0;
                const T v = gp[oh * OW + ow] * inv;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) dp[ih * W + iw] += v;
            }
        }
    }
}

/* ------------------------------------------------------------------ batch norm */

/* Sum of a contiguous run, 8 independent partial sums (vectorizable, and more accurate
 * than one running sum). */
static inline double S(bn_sum)(const T *restrict x, int64_t n) {
    T a[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) a[j] += x[i + j];
    double s = 0;
    for (; i < n; i++) s += x[i];
    for (int j = 0; j < 8; j++) s += a[j];
    return s;
}

/* Sum of (x - m)^2 over a contiguous run, as bn_sum.  (A second pass over x: a
 * one-pass shifted-sums version measured slower, its two accumulator sets spill.) */
static inline double S(bn_sqdev)(const T *restrict x, int64_t n, T m) {
    T a[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            T d = x[i + j] - m;
            a[j] += d * d;
        }
    double s = 0;
    for (; i < n; i++) s += (double)(x[i] - m) * (double)(x[i] - m);
    for (int j = 0; j < 8; j++) s += a[j];
    return s;
}

/* Sum of g * h over a contiguous run, as bn_sum. */
static inline double S(bn_dot)(const T *restrict g, const T *restrict h, int64_t n) {
    T a[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) a[j] += g[i + j] * h[i + j];
    double s = 0;
    for (; i < n; i++) s += (double)g[i] * (double)h[i];
    for (int j = 0; j < 8; j++) s += a[j];
    return s;
}

void S(batchnorm)(int train, int64_t n, int64_t c, int64_t hw, double eps, double momentum, const T *x,
                  const T *gamma, const T *beta, T *running_mean, T *running_var, T *y, T *save, int save_xhat) {
    const int64_t M = n * hw;
    T *smean = save, *sinv = save + c, *sscale = save + 2 * c, *xhat = save + 3 * c;
    for (int64_t ch = 0; ch < c; ch++) {
        double mean, var;
        if (train && M > 0) {
            double s = 0;
            for (int64_t i = 0; i < n; i++) s += S(bn_sum)(x + (i * c + ch) * hw, hw);
            mean = s / (double)M;
            double q = 0;
            for (int64_t i = 0; i < n; i++) q += S(bn_sqdev)(x + (i * c + ch) * hw, hw, (T)mean);
            var = q / (double)M;
            double unbiased = M > 1 ? var * (double)M / (double)(M - 1) : var;
            running_mean[ch] = (T)((1 - momentum) * (double)running_mean[ch] + momentum * mean);
            running_var[ch] = (T)((1 - momentum) * (double)running_var[ch] + momentum * unbiased);
        } else {
            mean = (double)running_mean[ch];
            var = (double)running_var[ch];
        }
        const double inv = 1.0 / sqrt(var + eps);
        const T scale = (T)((double)gamma[ch] * inv), shift = (T)((double)beta[ch] - mean * (double)gamma[ch] * inv);
        const T m = (T)mean, is = (T)inv;
        smean[ch] = m;
        sinv[ch] = is;
        sscale[ch] = scale;
        for (int64_t i = 0; i < n; i++) {
            const int64_t o = (i * c + ch) * hw;
            const T *restrict xr = x + o;
            T *restrict yr = y + o;
            for (int64_t j = 0; j < hw; j++) yr[j] = xr[j] * scale + shift;
            if (save_xhat) {
                T *restrict hr = xhat + o;
                for (int64_t j = 0; j < hw; j++) hr[j] = (xr[j] - m) * is;
            }
        }
    }
}

void S(batchnorm_bwd)(int train, int64_t n, int64_t c, int64_t hw, const T *g, const T *save, T *out) {
    const int64_t M = n * hw;
    const T *sscale = save + 2 * c, *xhat = save + 3 * c;
    T *dgamma = out, *dbeta = out + c, *dx = out + 2 * c;
    for (int64_t ch = 0; ch < c; ch++) {
        double sg = 0, sgh = 0;
        for (int64_t i = 0; i < n; i++) {
            const int64_t o = (i * c + ch) * hw;
            sg += S(bn_sum)(g + o, hw);
            sgh += S(bn_dot)(g + o, xhat + o, hw);
        }
        dgamma[ch] = (T)sgh;
        dbeta[ch] = (T)sg;
        const T scale = sscale[ch];
        /* train: dx = scale * (g - mean(g) - xhat * mean(g * xhat)); eval: scale * g */
        const T a = train && M > 0 ? (T)(sg / (double)M) : 0, bq = train && M > 0 ? (T)(sgh / (double)M) : 0;
        for (int64_t i = 0; i < n; i++) {
            const int64_t o = (i * c + ch) * hw;
            const T *restrict gr = g + o, *restrict hr = xhat + o;
            T *restrict dr = dx + o;
            for (int64_t j = 0; j < hw; j++) dr[j] = scale * (gr[j] - a - hr[j] * bq);
        }
    }
}
