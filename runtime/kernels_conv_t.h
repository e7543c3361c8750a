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

/* The GEMM operand of one image x in the narrow mode (G == 1, not wide): x itself when
 * direct (a 1x1 stride-1 unpadded conv), else its im2col matrix (L->col). */
static const T *S(conv_lower_one)(const cdl_conv2d_geom *gm, const S(conv_lower) *L, const T *x) {
    if (L->direct)
        return x;
    S(im2col)(gm, x, L->col, L->P);
    return L->col;
}

/* ------------------------------------------------------------------ direct stride-1 conv */

/* The vec mode of cdl.h (cdl_conv2d_vec): a stride-1 convolution computed on the
 * padded-width grid straight from the padded image, with no im2col matrix and no GEMM.
 * On that grid (rows Wp = W + pad apart: cv_pad) output pixel p (p = oh * Wp + ow) of channel k is
 *     sum over c, r, s of w[k, c, r, s] * xp[c, p + r * Wp + s],
 * so every (c, r, s) term is one unaligned vector load of xp, shared by a block of KB
 * output channels (broadcast weights, KB x CV_PB accumulators held in registers).
 * This reads each image once per channel block instead of writing and re-reading a
 * c*r*s times larger matrix, which is what bounded the im2col + sgemm version (memmove,
 * packing) on the small-channel convs of the bench ResNet and LeNet.  Columns
 * ow >= OW of the grid are computed and dropped.  Vectors are GCC vector extensions
 * (64 bytes: one AVX-512 register; the compiler splits them elsewhere). */
typedef T S(cv_vec) __attribute__((vector_size(64)));
#define CV_L ((int64_t)(64 / sizeof(T))) /* lanes */
#define CV_PB 3                          /* vectors per pixel block */
#define CV_NB (CV_PB * CV_L)             /* pixels per block (<= CDL_CONV_NB) */
#define CV_KB 8                          /* output channels per register block */
/* Keep a loaded vector in a register: left alone, gcc folds the load into each of the
 * FMAs that use it (three loads of g instead of one in bwd_w's tile: load-bound). */
#if defined(__AVX512F__) && defined(__GNUC__) /* one 64-byte register */
#define CV_IN_REG(v) __asm__("" : "+v"(v))
#else
#define CV_IN_REG(v) ((void)0)
#endif

/* out[j, p0 + i] (i < CV_NB, j < KB, rows ldo apart) = the grid sum above over the
 * cin x r x s taps of input in (channel planes hw apart, rows wrow apart), with the
 * block's weights packed tap-major: wp[tap * KB + j]. */
static inline __attribute__((always_inline)) void S(cv_tile)(const int KB, const T *restrict in, int64_t cin,
                                                               int64_t hw, int64_t wrow, int64_t R, int64_t Sk,
                                                               const T *restrict wp, T *restrict out, int64_t ldo) {
    S(cv_vec) acc[CV_KB][CV_PB];
    for (int j = 0; j < KB; j++)
        for (int i = 0; i < CV_PB; i++) acc[j][i] = (S(cv_vec)){0};
    for (int64_t c = 0; c < cin; c++)
        for (int64_t r = 0; r < R; r++) {
            const T *xr = in + c * hw + r * wrow;
            for (int64_t s = 0; s < Sk; s++, wp += KB) {
                S(cv_vec) xv[CV_PB];
                for (int i = 0; i < CV_PB; i++) memcpy(&xv[i], xr + s + i * CV_L, sizeof xv[i]);
                for (int j = 0; j < KB; j++) {
                    const T wj = wp[j];
                    for (int i = 0; i < CV_PB; i++) acc[j][i] += xv[i] * wj;
                }
            }
        }
    for (int j = 0; j < KB; j++)
        for (int i = 0; i < CV_PB; i++) memcpy(out + j * ldo + i * CV_L, &acc[j][i], sizeof acc[j][i]);
}

/* Channel blocks: the fewest blocks of at most CV_KB, as even as possible (6 channels
 * make one block of 6, not 4 + 2: a small block is bound by its loads, not its FMAs). */
static inline int S(cv_kb)(int64_t left) {
    const int64_t nblk = (left + CV_KB - 1) / CV_KB;
    return (int)((left + nblk - 1) / nblk);
}

/* Tile calls with the block size as a constant (the tile's loops unroll into registers). */
#define CV_SWITCH_KB(kb, CALL) \
    switch (kb) {              \
    case 8: CALL(8); break;    \
    case 7: CALL(7); break;    \
    case 6: CALL(6); break;    \
    case 5: CALL(5); break;    \
    case 4: CALL(4); break;    \
    case 3: CALL(3); break;    \
    case 2: CALL(2); break;    \
    default: CALL(1); break;   \
    }

/* The whole grid of one image: out[kout, cols] (cols a multiple of CV_NB) from the
 * padded input in[cin, *] and weights packed by S(cv_pack_*) (block by block). */
static void S(cv_conv)(const T *in, int64_t cin, int64_t hw, int64_t wrow, int64_t R, int64_t Sk, int64_t kout,
                       const T *wpk, T *out, int64_t cols) {
    const int64_t taps = cin * R * Sk;
    for (int64_t k0 = 0; k0 < kout; k0 += S(cv_kb)(kout - k0)) {
        const int kb = S(cv_kb)(kout - k0);
        const T *wb = wpk + k0 * taps;
        T *ob = out + k0 * cols;
#define CV_FWD(KB) \
    for (int64_t p0 = 0; p0 < cols; p0 += CV_NB) S(cv_tile)(KB, in + p0, cin, hw, wrow, R, Sk, wb, ob + p0, cols)
        CV_SWITCH_KB(kb, CV_FWD)
#undef CV_FWD
    }
}

/* Forward weights w[k, c, r, s] packed per channel block: wpk[k0*crs + tap*kb + j]. */
static void S(cv_pack_fwd)(const cdl_conv2d_geom *gm, const T *w, T *wpk) {
    const int64_t crs = gm->c * gm->r * gm->s;
    for (int64_t k0 = 0; k0 < gm->k; k0 += S(cv_kb)(gm->k - k0)) {
        const int kb = S(cv_kb)(gm->k - k0);
        for (int64_t q = 0; q < crs; q++)
            for (int j = 0; j < kb; j++) wpk[k0 * crs + q * kb + j] = w[(k0 + j) * crs + q];
    }
}

/* bwd_x weights: the convolution from g's k channels to dx's c channels with the
 * kernel turned round, w'[c, k, r, s] = w[k, c, R-1-r, S-1-s], packed as above. */
static void S(cv_pack_bwd)(const cdl_conv2d_geom *gm, const T *w, T *wpk) {
    const int64_t C = gm->c, K = gm->k, R = gm->r, Sk = gm->s, krs = K * R * Sk;
    for (int64_t c0 = 0; c0 < C; c0 += S(cv_kb)(C - c0)) {
        const int cb = S(cv_kb)(C - c0);
        T *d = wpk + c0 * krs;
        for (int64_t k = 0; k < K; k++)
            for (int64_t r = 0; r < R; r++)
                for (int64_t s = 0; s < Sk; s++, d += cb)
                    for (int j = 0; j < cb; j++) d[j] = w[((k * C + c0 + j) * R + R - 1 - r) * Sk + Sk - 1 - s];
    }
}

/* xp[c, H + 2 ph, W + pw] = x[c, H, W] with a zero border, then CV_NB + pw zeros (the
 * last pixel block of the grid reads up to a block past the image).  Rows are W + pw
 * reals apart, each image row starting at column pw: the pw zero columns between two
 * rows are both the right border of one and the left border of the next (a tap reaches
 * at most pw columns past either edge), so the grid is pw columns a row narrower than
 * with W + 2 pw (bench ResNet, 28x28 pad 1: 816 grid columns for 784 pixels instead of
 * 864, 5.6% fewer FMAs in every 3x3 call).  Every output reads the same values in the
 * same order as on the wider grid.  Only the interior
 * is written: the caller zeroes the buffer once per call (cv_pad_zero) and the border
 * stays zero from image to image (a per-image memset cost ~8% of the bench ResNet). */
static void S(cv_pad_zero)(int64_t C, int64_t H, int64_t W, int64_t ph, int64_t pw, T *xp) {
    memset(xp, 0, sizeof(T) * (size_t)(C * (H + 2 * ph) * (W + pw) + CV_NB + pw));
}
/* Short rows, copied by whole vectors (the last one overlapping the one before): gcc
 * turns a plain element loop into a memmove call per row, which cost ~10% of the bench
 * ResNet's step (profile at 2 threads); it did the same to a loop of 64-byte memcpys
 * (loop distribution sees a copy loop), so each vector passes through a register
 * (CV_IN_REG) and the loop stays inline. */
static inline void S(cv_copy_row)(T *restrict dst, const T *restrict src, int64_t W) {
    typedef T half __attribute__((vector_size(32)));
    if (W >= CV_L) {
        S(cv_vec) v;
        int64_t i = 0;
        for (; i + CV_L <= W; i += CV_L) {
            memcpy(&v, src + i, sizeof v);
            CV_IN_REG(v);
            memcpy(dst + i, &v, sizeof v);
        }
        if (i < W) memcpy(dst + W - CV_L, src + W - CV_L, sizeof v);
    } else if (W * (int64_t)sizeof(T) >= 32) {
        memcpy(dst, src, sizeof(half));
        memcpy(dst + W - 32 / (int64_t)sizeof(T), src + W - 32 / (int64_t)sizeof(T), sizeof(half));
    } else {
        for (int64_t i = 0; i < W; i++) dst[i] = src[i];
    }
}
static void S(cv_pad)(const T *restrict x, int64_t C, int64_t H, int64_t W, int64_t ph, int64_t pw, T *restrict xp) {
    const int64_t Hp = H + 2 * ph, Wp = W + pw;
    for (int64_t c = 0; c < C; c++)
        for (int64_t h = 0; h < H; h++) S(cv_copy_row)(xp + (c * Hp + h + ph) * Wp + pw, x + (c * H + h) * W, W);
}

/* The stores of a fused convolution (conv2d_fused, conv2d_bwd_x_fused): what the
 * separate add, relu and relu_bwd kernels would do to the stored value, in their order
 * (so the bits are theirs): v + add[i] (NULL: none), then mask[i] > 0 ? v : 0 (NULL:
 * none), then max(v, 0) when relu.  The tensors never alias the result. */
typedef struct S(cv_epi) {
    const T *add, *mask;
    int relu;
} S(cv_epi);

/* y[i] = the epilogue of t[i] + bk, i < n, with the choice of steps constant (each
 * variant compiles to its own loop).  Rows of at least a vector go by whole vectors,
 * the last one overlapping the one before (it stores the same values again: y aliases
 * none of t, a, m): left to itself gcc split a 28-pixel row into a vector, a half
 * vector and four scalars, ~11% of the bench ResNet's step.  Masks are bitwise ands
 * with the compare (v > 0 ? v : 0 has the same bits: NaN and -0 give +0 either way). */
typedef __typeof__((S(cv_vec)){0} > (S(cv_vec)){0}) S(cv_ivec);
static inline __attribute__((always_inline)) void S(cv_epi_vec)(const int ADD, const int MASK, const int RELU,
                                                                  const T *restrict t, T bk, const T *restrict a,
                                                                  const T *restrict m, int64_t i, T *restrict y) {
    const S(cv_vec) zero = {0};
    S(cv_vec) v, u;
    memcpy(&v, t + i, sizeof v);
    v = v + bk;
    if (ADD) {
        memcpy(&u, a + i, sizeof u);
        v = v + u;
    }
    if (MASK) {
        memcpy(&u, m + i, sizeof u);
        v = (S(cv_vec))((S(cv_ivec))(u > zero) & (S(cv_ivec))v);
    }
    if (RELU) v = (S(cv_vec))((S(cv_ivec))(v > zero) & (S(cv_ivec))v);
    memcpy(y + i, &v, sizeof v);
}
static inline __attribute__((always_inline)) void S(cv_epi_store)(const int ADD, const int MASK, const int RELU,
                                                                    const T *restrict t, T bk, const T *restrict a,
                                                                    const T *restrict m, int64_t n, T *restrict y) {
    if (n >= CV_L) {
        for (int64_t i = 0; i + CV_L <= n; i += CV_L) S(cv_epi_vec)(ADD, MASK, RELU, t, bk, a, m, i, y);
        if (n % CV_L) S(cv_epi_vec)(ADD, MASK, RELU, t, bk, a, m, n - CV_L, y);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        T v = t[i] + bk;
        if (ADD) v = v + a[i];
        if (MASK) v = m[i] > 0 ? v : (T)0;
        if (RELU) v = v > 0 ? v : (T)0;
        y[i] = v;
    }
}

/* The variant of epilogue E (NULL: none) as a number: add 1, mask 2, relu 4. */
static inline int S(cv_epi_kind)(const S(cv_epi) *E) {
    return E ? (E->add ? 1 : 0) | (E->mask ? 2 : 0) | (E->relu ? 4 : 0) : 0;
}

/* y[k, OH, OW] = the grid t[k, ld] (rows wrow apart) minus its extra columns, + b[k],
 * then the epilogue E (NULL: none) as each row is stored; E's tensors are indexed like
 * y (eoff: y's offset in them).  The bench ResNet's variants are unrolled; any other
 * (mask with relu: never made) takes the generic row. */
static void S(cv_unwiden)(const T *restrict t, int64_t ld, int64_t wrow, int64_t K, int64_t OH, int64_t OW,
                          const T *b, const S(cv_epi) *E, int64_t eoff, T *restrict y) {
    const int kind = S(cv_epi_kind)(E);
    for (int64_t k = 0; k < K; k++) {
        const T bk = b ? b[k] : 0;
        for (int64_t oh = 0; oh < OH; oh++) {
            const T *restrict tr = t + k * ld + oh * wrow;
            const int64_t off = (k * OH + oh) * OW;
            const T *a = E && E->add ? E->add + eoff + off : NULL, *m = E && E->mask ? E->mask + eoff + off : NULL;
            T *restrict yr = y + off;
            switch (kind) {
            case 0: S(cv_epi_store)(0, 0, 0, tr, bk, a, m, OW, yr); break;
            case 1: S(cv_epi_store)(1, 0, 0, tr, bk, a, m, OW, yr); break;
            case 2: S(cv_epi_store)(0, 1, 0, tr, bk, a, m, OW, yr); break;
            case 3: S(cv_epi_store)(1, 1, 0, tr, bk, a, m, OW, yr); break;
            case 4: S(cv_epi_store)(0, 0, 1, tr, bk, a, m, OW, yr); break;
            case 5: S(cv_epi_store)(1, 0, 1, tr, bk, a, m, OW, yr); break;
            default: S(cv_epi_store)(E->add != NULL, E->mask != NULL, E->relu, tr, bk, a, m, OW, yr); break;
            }
        }
    }
}

/* The epilogue over a whole result y[n] computed without it (the GEMM modes): y is
 * both t and the output, so this runs in place, element by element. */
static void S(cv_epi_inplace)(const S(cv_epi) *E, int64_t n, T *y) {
    for (int64_t i = 0; i < n; i++) {
        T v = y[i];
        if (E->add) v = v + E->add[i];
        if (E->mask) v = E->mask[i] > 0 ? v : (T)0;
        if (E->relu) v = v > 0 ? v : (T)0;
        y[i] = v;
    }
}

/* Scratch of the vec mode (cdl.h, cdl_conv2d_vec_parts): thread slot t's padded input
 * is pad + t * padsz, its grid grid + t * gridsz (bwd_w: one grid, rows by channel). */
typedef struct S(cv_lower) {
    T *pad, *grid, *wpk, *part;
    T *bsum; /* after the vec parts: bwd_xw's per-image bias sums [n, k] (cdl_conv2d_scratch) */
    int64_t padsz, gridsz;
    int64_t Hp, Wp, colsf; /* forward grid: padded input, columns per channel */
    int64_t Hq, Wq, colsx; /* bwd_x grid: g padded by r-1-pad, s-1-pad */
} S(cv_lower);

static S(cv_lower) S(cv_lowering)(const cdl_conv2d_geom *gm, T *scratch) {
    S(cv_lower) L;
    int64_t parts[6];
    cdl_conv2d_vec_parts(gm, parts);
    L.pad = scratch;
    L.grid = scratch + parts[0];
    L.wpk = L.grid + parts[1];
    L.part = L.wpk + parts[2];
    L.bsum = L.part + parts[3];
    L.padsz = parts[4], L.gridsz = parts[5];
    L.Hp = gm->h + 2 * gm->pad, L.Wp = gm->w + gm->pad; /* rows share a border (cv_pad) */
    L.Hq = gm->oh + 2 * (gm->r - 1 - gm->pad), L.Wq = gm->ow + (gm->s - 1 - gm->pad);
    L.colsf = ((gm->oh - 1) * L.Wp + gm->ow + CV_NB - 1) / CV_NB * CV_NB;
    L.colsx = ((gm->h - 1) * L.Wq + gm->w + CV_NB - 1) / CV_NB * CV_NB;
    return L;
}

/* How many pool threads one conv call takes: at most the pool, CDL_CONV_THREADS and
 * `parts` (the images or channels it splits), and 1 when the call is too small to pay
 * for waking a worker (about 20 us; CV_PAR_MACS multiply-adds take about that long). */
#define CV_PAR_MACS CDL_CONV_PAR_MACS
static int S(cv_threads)(const cdl_conv2d_geom *gm, int64_t parts) {
    const int64_t macs = gm->n * gm->k * gm->c * gm->r * gm->s * gm->oh * gm->ow;
    int64_t t = cdl_parallel_threads();
    if (t > CDL_CONV_THREADS) t = CDL_CONV_THREADS;
    if (t > parts) t = parts;
    if (macs < CV_PAR_MACS) t = 1;
    return t < 1 ? 1 : (int)t;
}

/* One forward or bwd_x call split over the pool: nt threads (scratch slots), and
 * CV_TASKS_PER_THREAD times as many tasks of consecutive images, handed out as the
 * threads come (cdl_parallel_slots), so that a thread that starts late or is
 * descheduled leaves its share to the other instead of the call waiting for it.  Each
 * image is computed alone, so the bits do not depend on the cut.  A slot's padded
 * buffer is zeroed by the first task that uses it in the call.  in = x (forward) or g
 * (bwd_x); the same code serves both, with the geometry of the convolution it computes. */
#define CV_TASKS_PER_THREAD 4
typedef struct S(cv_job) {
    const cdl_conv2d_geom *gm;
    const S(cv_lower) *L;
    const T *in, *b;
    const S(cv_epi) *E; /* the fused epilogue, or NULL */
    T *out;
    int64_t cin, cout, h, w, ph, pw, oh, ow; /* in[cin, h, w] -> out[cout, oh, ow], padding ph, pw */
    int64_t hw, wrow, cols;                  /* the padded input's plane and row, grid columns */
    int nt;                                  /* threads (slots) */
    int64_t ntask;                           /* tasks */
    int zeroed[CDL_CONV_THREADS];            /* slot's padded buffer zeroed in this call */
} S(cv_job);

static int64_t S(cv_ntask)(int nt, int64_t n) {
    return nt < 2 ? 1 : n < nt * CV_TASKS_PER_THREAD ? n : nt * CV_TASKS_PER_THREAD;
}

static void S(cv_task)(void *arg, int64_t t, int slot) {
    S(cv_job) *J = arg;
    const S(cv_lower) *L = J->L;
    const int64_t N = J->gm->n, n0 = N * t / J->ntask, n1 = N * (t + 1) / J->ntask;
    const int64_t is = J->cin * J->h * J->w, os = J->cout * J->oh * J->ow;
    T *pad = L->pad + slot * L->padsz, *grid = L->grid + slot * L->gridsz;
    if (!J->zeroed[slot]) S(cv_pad_zero)(J->cin, J->h, J->w, J->ph, J->pw, pad);
    J->zeroed[slot] = 1;
    for (int64_t n = n0; n < n1; n++) {
        S(cv_pad)(J->in + n * is, J->cin, J->h, J->w, J->ph, J->pw, pad);
        S(cv_conv)(pad, J->cin, J->hw, J->wrow, J->gm->r, J->gm->s, J->cout, L->wpk, grid, J->cols);
        S(cv_unwiden)(grid, J->cols, J->wrow, J->cout, J->oh, J->ow, J->b, J->E, n * os, J->out + n * os);
    }
}

#include "kernels_conv_lane_t.h" /* the lane mode: narrow images, images in lanes */

static void S(cv_conv2d)(const cdl_conv2d_geom *gm, const T *x, const T *w, const T *b, const S(cv_epi) *E, T *y,
                         T *scratch) {
    if (S(conv2d_lanes)(gm)) {
        S(cvl_conv)(gm, 0, x, w, b, E, y, scratch);
        return;
    }
    S(cv_lower) L = S(cv_lowering)(gm, scratch);
    S(cv_pack_fwd)(gm, w, L.wpk);
    S(cv_job) J = {.gm = gm, .L = &L, .in = x, .b = b, .E = E, .out = y, .cin = gm->c, .cout = gm->k,
                   .h = gm->h, .w = gm->w, .ph = gm->pad, .pw = gm->pad, .oh = gm->oh, .ow = gm->ow,
                   .hw = L.Hp * L.Wp, .wrow = L.Wp, .cols = L.colsf, .nt = S(cv_threads)(gm, gm->n)};
    J.ntask = S(cv_ntask)(J.nt, gm->n);
    cdl_parallel_slots(J.ntask, J.nt, S(cv_task), &J);
}

/* dx = the stride-1 convolution of g, padded by r-1-pad rows and s-1-pad columns, with
 * the turned kernel (pad < r, s: cdl_conv2d_vec). */
static void S(cv_conv2d_bwd_x)(const cdl_conv2d_geom *gm, const T *g, const T *w, const S(cv_epi) *E, T *dx,
                               T *scratch) {
    if (S(conv2d_lanes)(gm)) {
        S(cvl_conv)(gm, 1, g, w, NULL, E, dx, scratch);
        return;
    }
    S(cv_lower) L = S(cv_lowering)(gm, scratch);
    S(cv_pack_bwd)(gm, w, L.wpk);
    S(cv_job) J = {.gm = gm, .L = &L, .in = g, .b = NULL, .E = E, .out = dx, .cin = gm->k, .cout = gm->c,
                   .h = gm->oh, .w = gm->ow, .ph = gm->r - 1 - gm->pad, .pw = gm->s - 1 - gm->pad,
                   .oh = gm->h, .ow = gm->w, .hw = L.Hq * L.Wq, .wrow = L.Wq, .cols = L.colsx,
                   .nt = S(cv_threads)(gm, gm->n)};
    J.ntask = S(cv_ntask)(J.nt, gm->n);
    cdl_parallel_slots(J.ntask, J.nt, S(cv_task), &J);
}

/* part[(j*taps + tap) lanes] += sum over the grids of gn images of gw[k0+j, p] *
 * xp[tap offset + p], for KB channels and SB consecutive s taps of one (c, r) row
 * (lane-wise sums: the horizontal sums wait for the end of the batch).  Channel j's
 * grid row sits j * ks reals after channel 0's; image i's grid and padded input sit
 * gs and xs reals after image i-1's.  Each partial takes its images in order and the
 * pixels in order, so grouping the images differently gives the same bits. */
static inline __attribute__((always_inline)) void S(cv_wtile)(const int KB, const int SB, const T *restrict gw,
                                                                int64_t cols, int64_t ks, const T *restrict xr, int64_t gn,
                                                                int64_t gs, int64_t xs, T *restrict part,
                                                                int64_t taps) {
    S(cv_vec) acc[CV_KB][3];
    for (int j = 0; j < KB; j++)
        for (int t = 0; t < SB; t++) memcpy(&acc[j][t], part + (j * taps + t) * CV_L, sizeof acc[j][t]);
    for (int64_t i = 0; i < gn; i++, gw += gs, xr += xs)
        for (int64_t p = 0; p < cols; p += CV_L) {
            S(cv_vec) xv[3], gv;
            for (int t = 0; t < SB; t++) memcpy(&xv[t], xr + p + t, sizeof xv[t]);
            for (int j = 0; j < KB; j++) {
                memcpy(&gv, gw + j * ks + p, sizeof gv);
                CV_IN_REG(gv);
                for (int t = 0; t < SB; t++) acc[j][t] += gv * xv[t];
            }
        }
    for (int j = 0; j < KB; j++)
        for (int t = 0; t < SB; t++) memcpy(part + (j * taps + t) * CV_L, &acc[j][t], sizeof acc[j][t]);
}

/* One KB-channel block of bwd_w for gn images (padded inputs at xpad, g's grid rows
 * ks apart): every (c, r) row, s in runs of <= 3. */
static inline __attribute__((always_inline)) void S(cv_wblock)(const int KB, const cdl_conv2d_geom *gm,
                                                                 const S(cv_lower) *L, const T *xpad,
                                                                 const T *gw, int64_t ks, int64_t gn, T *part) {
    const int64_t taps = gm->c * gm->r * gm->s, gs = gm->k * L->colsf, xs = gm->c * L->Hp * L->Wp;
    for (int64_t c = 0; c < gm->c; c++)
        for (int64_t r = 0; r < gm->r; r++) {
            const T *xr = xpad + (c * L->Hp + r) * L->Wp;
            T *pr = part + ((c * gm->r + r) * gm->s) * CV_L;
            int64_t s = 0;
            for (; s + 3 <= gm->s; s += 3)
                S(cv_wtile)(KB, 3, gw, L->colsf, ks, xr + s, gn, gs, xs, pr + s * CV_L, taps);
            if (gm->s - s == 2) S(cv_wtile)(KB, 2, gw, L->colsf, ks, xr + s, gn, gs, xs, pr + s * CV_L, taps);
            if (gm->s - s == 1) S(cv_wtile)(KB, 1, gw, L->colsf, ks, xr + s, gn, gs, xs, pr + s * CV_L, taps);
        }
}

/* bwd_w split over the pool by images: the batch is cut into nch chunks (cv_wchunks:
 * a function of the geometry only, never of the thread count), chunk t summing its
 * images into its own lane partials (part + t * k*crs*lanes), with its own padded-input
 * slot and widened-g grid; the chunks' partials are then added in chunk order.  So
 * each task does exactly the work one thread does for its images (every channel
 * block, each image padded once), and the bits are the same for any thread count. */
typedef struct S(cv_wjob) {
    const cdl_conv2d_geom *gm;
    const S(cv_lower) *L;
    const T *g, *x;
    T *dw;
    int64_t nch, nq; /* chunks; tasks of the final sum */
} S(cv_wjob);

static void S(cv_wtask)(void *arg, int64_t t) {
    const S(cv_wjob) *J = arg;
    const cdl_conv2d_geom *gm = J->gm;
    const S(cv_lower) *L = J->L;
    const int64_t C = gm->c, K = gm->k, OH = gm->oh, OW = gm->ow, xs = C * gm->h * gm->w, ys = K * OH * OW;
    const int64_t taps = C * gm->r * gm->s, G = cdl_conv2d_vec_group(gm), xps = C * L->Hp * L->Wp;
    const int64_t n1 = gm->n * t / J->nch, n2 = gm->n * (t + 1) / J->nch;
    T *xpad = L->pad + t * L->padsz, *grid = L->grid + t * G * K * L->colsf, *part = L->part + t * K * taps * CV_L;
    memset(part, 0, sizeof(T) * (size_t)(K * taps * CV_L));
    for (int64_t i = 0; i < G; i++) S(cv_pad_zero)(C, gm->h, gm->w, gm->pad, gm->pad, xpad + i * xps);
    memset(grid, 0, sizeof(T) * (size_t)(G * K * L->colsf)); /* the grid's extra columns stay 0 */
    for (int64_t n0 = n1; n0 < n2; n0 += G) {
        const int64_t gn = n2 - n0 < G ? n2 - n0 : G;
        for (int64_t i = 0; i < gn; i++) {
            S(cv_pad)(J->x + (n0 + i) * xs, C, gm->h, gm->w, gm->pad, gm->pad, xpad + i * xps);
            for (int64_t k = 0; k < K; k++)
                for (int64_t oh = 0; oh < OH; oh++)
                    S(cv_copy_row)(grid + (i * K + k) * L->colsf + oh * L->Wp, J->g + (n0 + i) * ys + (k * OH + oh) * OW,
                                   OW);
        }
        for (int64_t k0 = 0; k0 < K; k0 += S(cv_kb)(K - k0)) {
#define CV_BWD_W(KB) S(cv_wblock)(KB, gm, L, xpad, grid + k0 * L->colsf, L->colsf, gn, part + k0 * taps * CV_L)
            CV_SWITCH_KB(S(cv_kb)(K - k0), CV_BWD_W)
#undef CV_BWD_W
        }
    }
}

/* dw[q] = the lanes of chunk 0's partial q, then chunk 1's, ...: task t takes a range
 * of q (each dw element summed by one task, in the same order for any split). */
static void S(cv_wsum)(void *arg, int64_t t) {
    const S(cv_wjob) *J = arg;
    const int64_t nq = J->gm->k * J->gm->c * J->gm->r * J->gm->s, q1 = nq * t / J->nq, q2 = nq * (t + 1) / J->nq;
    for (int64_t q = q1; q < q2; q++) {
        T sum = 0;
        for (int64_t c = 0; c < J->nch; c++)
            for (int64_t l = 0; l < CV_L; l++) sum += J->L->part[(c * nq + q) * CV_L + l];
        J->dw[q] = sum;
    }
}

/* The elements cv_wsum reads in all (the partials of every chunk): LeNet's and the bench
 * ResNet's are 70-80K, a job the calling thread runs faster than the pool. */
static int64_t S(cv_wsum_work)(const S(cv_wjob) *J) {
    return J->gm->k * J->gm->c * J->gm->r * J->gm->s * J->nch * CV_L;
}

/* dw[k, c, r, s] = sum over images and grid pixels of gw[k, p] * xp[c, p + r*Wp + s],
 * gw = g on the grid with zeros in the extra columns (so they add nothing).  Small
 * grids are taken cdl_conv2d_vec_group images at a time, so that a tile's accumulators
 * live through a few hundred pixels between their loads and stores. */
static void S(cv_conv2d_bwd_w)(const cdl_conv2d_geom *gm, const T *g, const T *x, T *dw, T *scratch) {
    S(cv_lower) L = S(cv_lowering)(gm, scratch);
    const int64_t nch = cdl_conv2d_vec_chunks(gm);
    S(cv_wjob) J = {.gm = gm, .L = &L, .g = g, .x = x, .dw = dw, .nch = nch, .nq = 1};
    const int nt = S(cv_threads)(gm, nch);
    if (nt > 1)
        cdl_parallel_for(nch, S(cv_wtask), &J);
    else
        for (int64_t t = 0; t < nch; t++) S(cv_wtask)(&J, t);
    J.nq = nt;
    cdl_parallel_for_work(J.nq, S(cv_wsum_work)(&J), S(cv_wsum), &J);
}

#include "kernels_sum_t.h" /* S(run_sum): bwd_xw's bias gradient has reduce's bits */

/* dx and dw of one convolution in one pass (cdl_conv2d_bwd_xw): when r = s = 2 pad + 1
 * (a "same" stride-1 conv), bwd_x's padded g (rows W + pad apart, pad rows and columns
 * of zeros) is exactly bwd_w's grid at offset pad * Wq + pad, channel planes Hq * Wq
 * apart, provided the zeros after a channel's last pixel cover the grid's rounding
 * (checked here; the last channel has cv_pad_zero's tail).  The lane mode's bwd_x and
 * the GEMM modes take the separate kernels. */
static int S(cv_xw_ok)(const cdl_conv2d_geom *gm) {
    if (!cdl_conv2d_vec_xw(gm) || S(conv2d_lanes)(gm)) return 0;
    const int64_t p = gm->pad, Wp = gm->w + p, cols = (gm->oh - 1) * Wp + gm->ow;
    const int64_t colsf = (cols + CV_NB - 1) / CV_NB * CV_NB;
    return colsf - cols <= 2 * p * Wp + p;
}

/* Chunk t of bwd_xw: bwd_w's chunk (cv_wtask: the same images, partials and order),
 * each image's g padded once for both: bwd_x's tile and store as cv_task, then bwd_w's
 * blocks read the padded g in place of their own copy of g.  g's padded image sits in
 * the chunk's pad slot, x's right after it (cdl_conv2d_vec_parts sizes the slot). */
typedef struct S(cv_xwjob) {
    S(cv_wjob) w;
    const S(cv_epi) *E;
    T *dx;
    T *bsum; /* the bias gradient's per-image sums [n, k] (cv_xw_bias), or NULL */
} S(cv_xwjob);

static void S(cv_xwtask)(void *arg, int64_t t) {
    const S(cv_xwjob) *X = arg;
    const cdl_conv2d_geom *gm = X->w.gm;
    const S(cv_lower) *L = X->w.L;
    const int64_t C = gm->c, K = gm->k, H = gm->h, W = gm->w, p = gm->pad, xs = C * H * W, ys = K * gm->oh * gm->ow;
    const int64_t taps = C * gm->r * gm->s, ks = L->Hq * L->Wq;
    const int64_t n1 = gm->n * t / X->w.nch, n2 = gm->n * (t + 1) / X->w.nch;
    T *gpad = L->pad + t * L->padsz, *xpad = gpad + K * ks + CV_NB + p, *grid = L->grid + t * L->gridsz;
    T *part = L->part + t * K * taps * CV_L;
    memset(part, 0, sizeof(T) * (size_t)(K * taps * CV_L));
    S(cv_pad_zero)(K, gm->oh, gm->ow, p, p, gpad);
    S(cv_pad_zero)(C, H, W, p, p, xpad);
    for (int64_t n = n1; n < n2; n++) {
        S(cv_pad)(X->w.g + n * ys, K, gm->oh, gm->ow, p, p, gpad);
        if (X->bsum)
            for (int64_t k = 0; k < K; k++)
                X->bsum[n * K + k] = (T)S(run_sum)(X->w.g + n * ys + k * (ys / K), ys / K);
        S(cv_conv)(gpad, K, ks, L->Wq, gm->r, gm->s, C, L->wpk, grid, L->colsx);
        S(cv_unwiden)(grid, L->colsx, L->Wq, C, H, W, NULL, X->E, n * xs, X->dx + n * xs);
        S(cv_pad)(X->w.x + n * xs, C, H, W, p, p, xpad);
        for (int64_t k0 = 0; k0 < K; k0 += S(cv_kb)(K - k0)) {
#define CV_BWD_W(KB) S(cv_wblock)(KB, gm, L, xpad, gpad + p * L->Wq + p + k0 * ks, ks, 1, part + k0 * taps * CV_L)
            CV_SWITCH_KB(S(cv_kb)(K - k0), CV_BWD_W)
#undef CV_BWD_W
        }
    }
}

/* Whether bwd_xw sums db itself: reduce (kernels_dense_t.h) sums g[n, k, oh, ow] over
 * n, oh, ow as db[k] = 0, then db[k] += (T)run_sum(g[n, k]) for n in order when the
 * axes group as (n, k, oh*ow) -- k and oh*ow above 1 (size-1 axes merge the runs
 * otherwise; n = 1 drops out and gives the same order).  Each image's run sums go to
 * the scratch after the vec parts (cdl_conv2d_scratch) as the image is padded, and are
 * added in image order after the chunks: reduce's roundings, any thread count. */
static int S(cv_xw_bias)(const cdl_conv2d_geom *gm) {
    return gm->k > 1 && gm->oh * gm->ow > 1;
}

static void S(cv_conv2d_bwd_xw)(const cdl_conv2d_geom *gm, const T *g, const T *w, const T *x, const S(cv_epi) *E,
                                T *dx, T *dw, T *db, T *scratch) {
    S(cv_lower) L = S(cv_lowering)(gm, scratch);
    S(cv_pack_bwd)(gm, w, L.wpk);
    S(cv_xwjob) X = {.w = {.gm = gm, .L = &L, .g = g, .x = x, .dw = dw, .nch = cdl_conv2d_vec_chunks(gm), .nq = 1},
                     .E = E, .dx = dx, .bsum = db ? L.bsum : NULL};
    const int nt = S(cv_threads)(gm, X.w.nch);
    if (nt > 1)
        cdl_parallel_for(X.w.nch, S(cv_xwtask), &X);
    else
        for (int64_t t = 0; t < X.w.nch; t++) S(cv_xwtask)(&X, t);
    X.w.nq = nt;
    cdl_parallel_for_work(X.w.nq, S(cv_wsum_work)(&X.w), S(cv_wsum), &X.w);
    if (!db) return;
    for (int64_t k = 0; k < gm->k; k++) db[k] = 0;
    for (int64_t n = 0; n < gm->n; n++)
        for (int64_t k = 0; k < gm->k; k++) db[k] += X.bsum[n * gm->k + k];
}

#undef CV_L
#undef CV_PB
#undef CV_NB
#undef CV_KB
#undef CV_IN_REG
#undef CV_SWITCH_KB
#undef CV_PAR_MACS

void S(conv2d)(const cdl_conv2d_geom *gm, const T *x, const T *w, const T *b, T *y, T *scratch) {
    if (cdl_conv2d_vec(gm)) {
        S(cv_conv2d)(gm, x, w, b, NULL, y, scratch);
        return;
    }
    S(conv_lower) L = S(conv_lowering)(gm, scratch);
    const int64_t N = gm->n, K = gm->k, P = L.P, CRS = L.CRS;
    for (int64_t n0 = 0; n0 < N; n0 += L.G) {
        const int64_t gn = N - n0 < L.G ? N - n0 : L.G;
        if (L.G == 1 && !L.wide) { /* GEMM straight into y: direct, or classic im2col */
            const T *src = S(conv_lower_one)(gm, &L, x + n0 * L.xs);
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
    if (cdl_conv2d_vec(gm)) {
        S(cv_conv2d_bwd_x)(gm, g, w, NULL, dx, scratch);
        return;
    }
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
    if (cdl_conv2d_vec_w(gm)) {
        S(cv_conv2d_bwd_w)(gm, g, x, dw, scratch);
        return;
    }
    S(conv_lower) L = S(conv_lowering)(gm, scratch);
    const int64_t N = gm->n, K = gm->k, P = L.P, CRS = L.CRS;
    T *dwt = L.dwt;
    for (int64_t n0 = 0; n0 < N; n0 += L.G) {
        const int64_t gn = N - n0 < L.G ? N - n0 : L.G;
        const T beta = n0 == 0 ? 0 : 1;
        if (L.G == 1 && !L.wide) {
            const T *src = S(conv_lower_one)(gm, &L, x + n0 * L.xs);
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

/* The fused convolutions: the vec mode applies the epilogue as it stores each row of
 * an image; the GEMM modes (not the bench models' convolutions) run it over the whole
 * result afterwards, which gives the same values. */
void S(conv2d_fused)(const cdl_conv2d_geom *gm, const T *x, const T *w, const T *b, const T *skip, int relu, T *y,
                     T *scratch) {
    const S(cv_epi) E = {.add = skip, .relu = relu};
    if (cdl_conv2d_vec(gm)) {
        S(cv_conv2d)(gm, x, w, b, &E, y, scratch);
        return;
    }
    S(conv2d)(gm, x, w, b, y, scratch);
    S(cv_epi_inplace)(&E, gm->n * gm->k * gm->oh * gm->ow, y);
}

void S(conv2d_bwd_x_fused)(const cdl_conv2d_geom *gm, const T *g, const T *w, const T *acc, const T *mask, T *dx,
                           T *scratch) {
    const S(cv_epi) E = {.add = acc, .mask = mask};
    if (cdl_conv2d_vec(gm)) {
        S(cv_conv2d_bwd_x)(gm, g, w, &E, dx, scratch);
        return;
    }
    S(conv2d_bwd_x)(gm, g, w, dx, scratch);
    S(cv_epi_inplace)(&E, gm->n * gm->c * gm->h * gm->w, dx);
}

/* dx as conv2d_bwd_x_fused(g, w, acc, mask), dw as conv2d_bwd_w(g, x) and db (if not
 * NULL) as reduce's bias gradient of g, the same bits, in one pass over g when the
 * geometry allows (cv_xw_ok, cv_xw_bias). */
void S(conv2d_bwd_xw)(const cdl_conv2d_geom *gm, const T *g, const T *w, const T *x, const T *acc, const T *mask,
                      T *dx, T *dw, T *db, T *scratch) {
    const S(cv_epi) E = {.add = acc, .mask = mask};
    if (S(cv_xw_ok)(gm)) {
        S(cv_conv2d_bwd_xw)(gm, g, w, x, &E, dx, dw, S(cv_xw_bias)(gm) ? db : NULL, scratch);
        if (!db || S(cv_xw_bias)(gm)) return;
    } else {
        S(conv2d_bwd_x_fused)(gm, g, w, acc, mask, dx, scratch);
        S(conv2d_bwd_w)(gm, g, x, dw, scratch);
    }
    if (db) S(reduce)(4, (const int64_t[]){gm->n, gm->k, gm->oh, gm->ow}, 0xdu, 0, g, db);
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

/* Pooling split over the pool: task t takes planes [nc t/nt, nc (t+1)/nt) (planes are
 * independent, so the bits do not depend on the thread count).  Smaller calls than
 * PL_PAR cells stay on one thread (waking a worker costs about 20 us). */
#define PL_PAR ((int64_t)1 << 16)
typedef struct S(pool_job) {
    int64_t nc, H, W, k, st, pad;
    const T *x, *g;
    T *out;
    int nt, relu; /* relu: maxpool2d_bwd_relu */
} S(pool_job);

/* relu_bwd's select over one plane in place: d[i] = x[i] > 0 ? d[i] : 0 (when relu). */
static void S(pool_relu_mask)(int relu, const T *restrict x, int64_t n, T *restrict d) {
    if (!relu) return;
    for (int64_t i = 0; i < n; i++) d[i] = x[i] > 0 ? d[i] : (T)0;
}

/* Tasks of a pooling call: 1 below PL_PAR elements or at 1 thread, else
 * CV_TASKS_PER_THREAD per thread (planes are independent: any cut gives the same bits),
 * so that a thread that starts late leaves its share to the other. */
static int S(pool_threads)(int64_t nc, int64_t H, int64_t W) {
    int64_t t = cdl_parallel_threads();
    if (t > 1) t *= CV_TASKS_PER_THREAD;
    if (t > nc) t = nc;
    return nc * H * W < PL_PAR || t < 1 ? 1 : (int)t;
}

/* Vectors of the 2x2 / stride-2 max-pool fast paths.  Vector selects are bit masks
 * (PL_SEL): C has no vector ?:. */
typedef T S(pl_vec) __attribute__((vector_size(32)));
typedef T S(pl_half) __attribute__((vector_size(16)));
typedef __typeof__((S(pl_vec)){0} == (S(pl_vec)){0}) S(pl_mask);
#define PL_L ((int64_t)TLANES)
#define PL_SEL(m, a, b) ((S(pl_vec))(((S(pl_mask))(a) & (m)) | ((S(pl_mask))(b) & ~(m))))
/* PL_EVEN / PL_ODD take the even / odd lanes of two vectors (a row's left and
 * right window columns), PL_LO / PL_HI interleave two vectors' low / high halves (their
 * inverse), PL_LOW / PL_HIGH are a vector's halves and PL_CAT joins two halves; the
 * index lists depend on the lane count. */
#if TLANES == 8
#define PL_LOW(v) __builtin_shufflevector(v, v, 0, 1, 2, 3)
#define PL_HIGH(v) __builtin_shufflevector(v, v, 4, 5, 6, 7)
#define PL_CAT(u, v) __builtin_shufflevector(u, v, 0, 1, 2, 3, 4, 5, 6, 7)
#define PL_EVEN(u, v) __builtin_shufflevector(u, v, 0, 2, 4, 6, 8, 10, 12, 14)
#define PL_ODD(u, v) __builtin_shufflevector(u, v, 1, 3, 5, 7, 9, 11, 13, 15)
#define PL_LO(u, v) __builtin_shufflevector(u, v, 0, 8, 1, 9, 2, 10, 3, 11)
#define PL_HI(u, v) __builtin_shufflevector(u, v, 4, 12, 5, 13, 6, 14, 7, 15)
#else
#define PL_LOW(v) __builtin_shufflevector(v, v, 0, 1)
#define PL_HIGH(v) __builtin_shufflevector(v, v, 2, 3)
#define PL_CAT(u, v) __builtin_shufflevector(u, v, 0, 1, 2, 3)
#define PL_EVEN(u, v) __builtin_shufflevector(u, v, 0, 2, 4, 6)
#define PL_ODD(u, v) __builtin_shufflevector(u, v, 1, 3, 5, 7)
#define PL_LO(u, v) __builtin_shufflevector(u, v, 0, 4, 1, 5)
#define PL_HI(u, v) __builtin_shufflevector(u, v, 2, 6, 3, 7)
#endif

/* A block of PL_L windows of the 2x2 / stride-2 max pool: lanes [0, PL_L/2) are the
 * windows whose top-left cells start at a (bottom row a + W), lanes [PL_L/2, PL_L) the
 * ones at b; one vector per window corner: ca top left, cb top right, cc bottom left,
 * cd bottom right.  b = a + PL_L for a row's next windows, or the same columns of
 * another row pair (rows of fewer than PL_L windows: two rows per block). */
typedef struct S(pl_cells) {
    S(pl_vec) ca, cb, cc, cd;
} S(pl_cells);

static inline S(pl_cells) S(pool2_cells)(const T *a, const T *b, int64_t W) {
    S(pl_vec) t0, t1, b0, b1;
    memcpy(&t0, a, sizeof t0);
    memcpy(&t1, b, sizeof t1);
    memcpy(&b0, a + W, sizeof b0);
    memcpy(&b1, b + W, sizeof b1);
    return (S(pl_cells)){PL_EVEN(t0, t1), PL_ODD(t0, t1), PL_EVEN(b0, b1), PL_ODD(b0, b1)};
}

/* Whether any lane of a mask is set.  By pointer: a vector argument's ABI depends on
 * the target's vector width (clang -Wpsabi, in builds without -march=native). */
static inline int S(pl_any)(const S(pl_mask) *m) {
    uint64_t u[sizeof *m / 8], r = 0;
    memcpy(u, m, sizeof *m);
    for (size_t i = 0; i < sizeof *m / 8; i++) r |= u[i];
    return r != 0;
}


/* Forward of one block (window outputs ya, yb for the two halves): max4's selects and
 * NaN sum lane by lane, so the bits are max4's. */
static inline void S(pool2_fwd_block)(const T *a, const T *b, int64_t W, T *ya, T *yb) {
    const S(pl_cells) C = S(pool2_cells)(a, b, W);
    const S(pl_vec) m1 = PL_SEL(C.ca > C.cb, C.ca, C.cb), m2 = PL_SEL(C.cc > C.cd, C.cc, C.cd);
    const S(pl_vec) sum = C.ca + C.cb + C.cc + C.cd;
    S(pl_vec) m = PL_SEL(m1 > m2, m1, m2);
    const S(pl_mask) nan = sum != sum;
    if (S(pl_any)(&nan)) /* a NaN cell (or inf - inf): almost never, so tested only then */
        m = PL_SEL((C.ca != C.ca) | (C.cb != C.cb) | (C.cc != C.cc) | (C.cd != C.cd), sum, m);
    const S(pl_half) lo = PL_LOW(m), hi = PL_HIGH(m);
    memcpy(ya, &lo, sizeof lo);
    memcpy(yb, &hi, sizeof hi);
}

/* Backward of one block (window gradients ga, gb; the windows' cells of dx at da, db
 * as a, b in x): g goes to each window's first maximum, or its first NaN (argmax4's
 * choice lane by lane); every cell of the windows is written.  relu: then each cell
 * is kept only where its x > 0 (relu_bwd's select, cell by cell). */
static inline void S(pool2_bwd_block)(const int relu, const T *a, const T *b, int64_t W, const T *ga, const T *gb,
                                      T *da, T *db) {
    const S(pl_cells) C = S(pool2_cells)(a, b, W);
    S(pl_half) gl, gh;
    memcpy(&gl, ga, sizeof gl);
    memcpy(&gh, gb, sizeof gh);
    const S(pl_vec) g = PL_CAT(gl, gh);
    const S(pl_mask) t = C.cb > C.ca, u = C.cc > PL_SEL(t, C.cb, C.ca);
    const S(pl_mask) v = C.cd > PL_SEL(u, C.cc, PL_SEL(t, C.cb, C.ca));
    S(pl_mask) s0 = ~t & ~u & ~v, s1 = t & ~u & ~v, s2 = u & ~v, s3 = v;
    const S(pl_vec) sum = C.ca + C.cb + C.cc + C.cd;
    const S(pl_mask) nan = sum != sum;
    if (S(pl_any)(&nan)) { /* as in the forward; the first NaN of a window wins */
        const S(pl_mask) na = C.ca != C.ca, nb = C.cb != C.cb, nc = C.cc != C.cc, nd = C.cd != C.cd;
        const S(pl_mask) any = na | nb | nc | nd;
        s0 = (any & na) | (~any & s0), s1 = (any & ~na & nb) | (~any & s1);
        s2 = (any & ~na & ~nb & nc) | (~any & s2), s3 = (any & ~na & ~nb & ~nc & nd) | (~any & s3);
    }
    if (relu) {
        const S(pl_vec) z = {0};
        s0 &= C.ca > z, s1 &= C.cb > z, s2 &= C.cc > z, s3 &= C.cd > z;
    }
    const S(pl_vec) oa = (S(pl_vec))((S(pl_mask))g & s0), ob = (S(pl_vec))((S(pl_mask))g & s1);
    const S(pl_vec) oc = (S(pl_vec))((S(pl_mask))g & s2), od = (S(pl_vec))((S(pl_mask))g & s3);
    const S(pl_vec) ta = PL_LO(oa, ob), tb = PL_HI(oa, ob), ba = PL_LO(oc, od), bb = PL_HI(oc, od);
    memcpy(da, &ta, sizeof ta);
    memcpy(db, &tb, sizeof tb);
    memcpy(da + W, &ba, sizeof ba);
    memcpy(db + W, &bb, sizeof bb);
}

/* One plane of the 2x2 / stride-2 max pool, forward (bwd 0: y) or backward (bwd 1: dx
 * from g), OW >= PL_L / 2 windows a row, in blocks of PL_L windows: PL_L of one row
 * when OW >= PL_L, else PL_L / 2 of each of two rows.  The last block of a row (or the
 * last row pair when OH is odd) overlaps the one before: its lanes are recomputed to
 * the same values.  Called with a constant bwd (2: backward with relu's mask). */
static inline void S(pool2_plane)(int bwd, const T *xp, const T *gp, T *out, int64_t W, int64_t OH, int64_t OW) {
    const int64_t h = PL_L / 2, wide = OW >= PL_L, step = wide ? PL_L : h;
    for (int64_t oh = 0; oh < OH; oh += 2 - wide) {
        const int64_t ob = wide ? oh : (oh + 1 < OH ? oh + 1 : oh); /* the second half's row */
        for (int64_t o = 0; o < OW; o += step) {
            if (o + step > OW) o = OW - step;
            const int64_t ia = 2 * oh * W + 2 * o, ib = wide ? ia + PL_L : 2 * ob * W + 2 * o;
            const int64_t ja = oh * OW + o, jb = wide ? ja + h : ob * OW + o;
            if (bwd) S(pool2_bwd_block)(bwd == 2, xp + ia, xp + ib, W, gp + ja, gp + jb, out + ia, out + ib);
            else S(pool2_fwd_block)(xp + ia, xp + ib, W, out + ja, out + jb);
        }
    }
}

static void S(maxpool_planes)(int64_t q0, int64_t q1, int64_t H, int64_t W, int64_t k, int64_t st, int64_t pad,
                              const T *x, T *y) {
    const int64_t OH = (H + 2 * pad - k) / st + 1, OW = (W + 2 * pad - k) / st + 1;
    for (int64_t q = q0; q < q1; q++) {
        const T *xp = x + q * H * W;
        T *yp = y + q * OH * OW;
        if (k == 2 && st == 2 && pad == 0 && OW >= PL_L / 2) {
            S(pool2_plane)(0, xp, NULL, yp, W, OH, OW);
            continue;
        }
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

static void S(maxpool_task)(void *arg, int64_t t) {
    const S(pool_job) *J = arg;
    S(maxpool_planes)(J->nc * t / J->nt, J->nc * (t + 1) / J->nt, J->H, J->W, J->k, J->st, J->pad, J->x, J->out);
}

void S(maxpool2d)(int64_t nc, int64_t H, int64_t W, int64_t k, int64_t st, int64_t pad, const T *x, T *y) {
    S(pool_job) J = {.nc = nc, .H = H, .W = W, .k = k, .st = st, .pad = pad, .x = x, .out = y,
                     .nt = S(pool_threads)(nc, H, W)};
    cdl_parallel_for(J.nt, S(maxpool_task), &J);
}

static void S(maxpool_bwd_planes)(int relu, int64_t q0, int64_t q1, int64_t H, int64_t W, int64_t k, int64_t st,
                                  int64_t pad, const T *g, const T *x, T *dx) {
    const int64_t OH = (H + 2 * pad - k) / st + 1, OW = (W + 2 * pad - k) / st + 1;
    const int fast = k == 2 && st == 2 && pad == 0;
    /* the fast path writes every cell its windows cover; only odd edges need zeros */
    if (!fast || H % 2 || W % 2) memset(dx + q0 * H * W, 0, sizeof(T) * (size_t)((q1 - q0) * H * W));
    for (int64_t q = q0; q < q1; q++) {
        const T *xp = x + q * H * W, *gp = g + q * OH * OW;
        T *dp = dx + q * H * W;
        if (fast && OW >= PL_L / 2) {
            if (relu) /* the cells no window covers (odd edges) stay 0, as relu_bwd leaves them */
                S(pool2_plane)(2, xp, gp, dp, W, OH, OW);
            else
                S(pool2_plane)(1, xp, gp, dp, W, OH, OW);
            continue;
        }
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
            S(pool_relu_mask)(relu, xp, H * W, dp);
            continue;
        }
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++)
                dp[S(pool_argmax)(xp, H, W, k, st, pad, oh, ow)] += gp[oh * OW + ow];
        S(pool_relu_mask)(relu, xp, H * W, dp);
    }
}

static void S(maxpool_bwd_task)(void *arg, int64_t t) {
    const S(pool_job) *J = arg;
    S(maxpool_bwd_planes)(J->relu, J->nc * t / J->nt, J->nc * (t + 1) / J->nt, J->H, J->W, J->k, J->st, J->pad, J->g, J->x,
                          J->out);
}

void S(maxpool2d_bwd)(int64_t nc, int64_t H, int64_t W, int64_t k, int64_t st, int64_t pad, const T *g, const T *x,
                      T *dx) {
    S(pool_job) J = {.relu = 0, .nc = nc, .H = H, .W = W, .k = k, .st = st, .pad = pad, .x = x, .g = g, .out = dx,
                     .nt = S(pool_threads)(nc, H, W)};
    cdl_parallel_for(J.nt, S(maxpool_bwd_task), &J);
}

/* maxpool2d_bwd, then relu_bwd with x as the mask, in one pass (x is the output of a
 * relu: compiler/opt_fuse_conv.c folds the relu_bwd in). */
void S(maxpool2d_bwd_relu)(int64_t nc, int64_t H, int64_t W, int64_t k, int64_t st, int64_t pad, const T *g,
                           const T *x, T *dx) {
    S(pool_job) J = {.relu = 1, .nc = nc, .H = H, .W = W, .k = k, .st = st, .pad = pad, .x = x, .g = g, .out = dx,
                     .nt = S(pool_threads)(nc, H, W)};
    cdl_parallel_for(J.nt, S(maxpool_bwd_task), &J);
}
#undef PL_PAR

/* Average pooling over k x k windows (stride st, padding pad counted in the divisor, as
 * count_include_pad): forward (bwd 0) b = the window means of a (x, y); backward (bwd 1)
 * b += a / (k * k) over each window (g, dx).  Called with a constant bwd, so each
 * caller's loop keeps only its own body. */
static inline void S(avgpool_walk)(int bwd, int64_t nc, int64_t H, int64_t W, int64_t k, int64_t st,
                                   int64_t pad, const T *a, T *b) {
    const int64_t OH = (H + 2 * pad - k) / st + 1, OW = (W + 2 * pad - k) / st + 1;
    const T inv = (T)1 / (T)(k * k);
    for (int64_t q = 0; q < nc; q++) {
        const T *ap = a + q * (bwd ? OH * OW : H * W);
        T *bp = b + q * (bwd ? H * W : OH * OW);
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t h0 = oh * st - pad, h1 = h0 + k < H ? h0 + k : H;
            if (h0 < 0) h0 = 0;
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t w0 = ow * st - pad, w1 = w0 + k < W ? w0 + k : W;
                if (w0 < 0) w0 = 0;
                if (bwd) {
                    const T v = ap[oh * OW + ow] * inv;
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++) bp[ih * W + iw] += v;
                } else {
                    T s = 0;
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++) s += ap[ih * W + iw];
                    bp[oh * OW + ow] = s * inv;
                }
            }
        }
    }
}

void S(avgpool2d)(int64_t nc, int64_t H, int64_t W, int64_t k, int64_t st, int64_t pad, const T *x, T *y) {
    S(avgpool_walk)(0, nc, H, W, k, st, pad, x, y);
}

void S(avgpool2d_bwd)(int64_t nc, int64_t H, int64_t W, int64_t k, int64_t st, int64_t pad, const T *g, T *dx) {
    memset(dx, 0, sizeof(T) * (size_t)(nc * H * W));
    S(avgpool_walk)(1, nc, H, W, k, st, pad, g, dx);
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

/* Channels [c0, c1)'s batch statistics into mean[], var[] (indexed from c0): over the
 * n rows, or with cdl_bn_sharded set over every shard of the global batch (each sum
 * summed over the shards).  *count: the elements per channel they are over. */
static void S(bn_stats)(int64_t n, int64_t c, int64_t hw, const T *x, int64_t c0, int64_t c1, double *mean,
                        double *var, double *count) {
    const cdl_bn_shards *sh = cdl_bn_sharded;
    const double M = sh ? (double)(n * hw) * (double)sh->global_rows / (double)sh->rows : (double)(n * hw);
    for (int64_t ch = c0; ch < c1; ch++) {
        double s = 0;
        for (int64_t i = 0; i < n; i++) s += S(bn_sum)(x + (i * c + ch) * hw, hw);
        mean[ch - c0] = s;
    }
    if (sh) sh->sum(mean, c1 - c0);
    for (int64_t ch = c0; ch < c1; ch++) {
        mean[ch - c0] /= M;
        double q = 0;
        for (int64_t i = 0; i < n; i++) q += S(bn_sqdev)(x + (i * c + ch) * hw, hw, (T)mean[ch - c0]);
        var[ch - c0] = q;
    }
    if (sh) sh->sum(var, c1 - c0);
    for (int64_t ch = c0; ch < c1; ch++) var[ch - c0] /= M;
    *count = M;
}

void S(batchnorm)(int train, int64_t n, int64_t c, int64_t hw, double eps, double momentum, const T *x,
                  const T *gamma, const T *beta, T *running_mean, T *running_var, T *y, T *save, int save_xhat) {
    T *smean = save, *sinv = save + c, *sscale = save + 2 * c, *xhat = save + 3 * c;
    double bmean[CDL_BN_BLOCK], bvar[CDL_BN_BLOCK], M = 0;
    const int batch = train && n * hw > 0;
    for (int64_t c0 = 0; c0 < c; c0 += CDL_BN_BLOCK) {
        const int64_t c1 = c - c0 < CDL_BN_BLOCK ? c : c0 + CDL_BN_BLOCK;
        if (batch) S(bn_stats)(n, c, hw, x, c0, c1, bmean, bvar, &M);
        for (int64_t ch = c0; ch < c1; ch++) {
            double mean, var;
            if (batch) {
                mean = bmean[ch - c0];
                var = bvar[ch - c0];
                double unbiased = M > 1 ? var * M / (M - 1) : var;
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
}

/* With cdl_bn_sharded set, g is the gradient of this shard's mean loss, which is
 * global_rows / rows times that of the global batch's mean loss: the shards' sums are
 * weighted by rows / global_rows before they are summed, and dx is again in this
 * shard's units (dgamma and dbeta stay this shard's own sums: the trainer weights and
 * sums them with the other gradients). */
void S(batchnorm_bwd)(int train, int64_t n, int64_t c, int64_t hw, const T *g, const T *save, T *out) {
    const int64_t M = n * hw;
    const cdl_bn_shards *sh = train && M > 0 ? cdl_bn_sharded : NULL;
    const T *sscale = save + 2 * c, *xhat = save + 3 * c;
    T *dgamma = out, *dbeta = out + c, *dx = out + 2 * c;
    double sums[2 * CDL_BN_BLOCK];
    for (int64_t c0 = 0; c0 < c; c0 += CDL_BN_BLOCK) {
        const int64_t c1 = c - c0 < CDL_BN_BLOCK ? c : c0 + CDL_BN_BLOCK, nb = c1 - c0;
        for (int64_t ch = c0; ch < c1; ch++) {
            double sg = 0, sgh = 0;
            for (int64_t i = 0; i < n; i++) {
                const int64_t o = (i * c + ch) * hw;
                sg += S(bn_sum)(g + o, hw);
                sgh += S(bn_dot)(g + o, xhat + o, hw);
            }
            dgamma[ch] = (T)sgh;
            dbeta[ch] = (T)sg;
            sums[ch - c0] = sg;
            sums[nb + ch - c0] = sgh;
        }
        if (sh) {
            const double w = (double)sh->rows / (double)sh->global_rows;
            for (int64_t k = 0; k < 2 * nb; k++) sums[k] *= w;
            sh->sum(sums, 2 * nb);
        }
        for (int64_t ch = c0; ch < c1; ch++) {
            const T scale = sscale[ch];
            /* train: dx = scale * (g - mean(g) - xhat * mean(g * xhat)); eval: scale * g */
            const double sg = sums[ch - c0], sgh = sums[nb + ch - c0];
            const T a = train && M > 0 ? (T)(sg / (double)M) : 0, bq = train && M > 0 ? (T)(sgh / (double)M) : 0;
            for (int64_t i = 0; i < n; i++) {
                const int64_t o = (i * c + ch) * hw;
                const T *restrict gr = g + o, *restrict hr = xhat + o;
                T *restrict dr = dx + o;
                for (int64_t j = 0; j < hw; j++) dr[j] = scale * (gr[j] - a - hr[j] * bq);
            }
        }
    }
}

#undef PL_L
#undef PL_LOW
#undef PL_HIGH
#undef PL_CAT
#undef PL_EVEN
#undef PL_ODD
#undef PL_LO
#undef PL_HI
#undef PL_SEL
