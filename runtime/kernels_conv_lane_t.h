/* kernels_conv_lane_t.h -- the lane mode of the direct stride-1 convolution (forward and
 * bwd_x): images in vector lanes.  Included by kernels_conv_t.h once per element type,
 * after the vec mode whose pieces it uses (S(cv_vec), CV_L, CV_KB, the weight packing,
 * the epilogue, S(cv_threads)).
 *
 * The vec mode computes a padded-width grid whose columns ow >= OW are dropped and
 * whose last pixel block is rounded up to CV_NB: on narrow images that is most of the
 * work (LeNet's conv2, 14x14 -> 10x10: 144 grid columns for 100 pixels; its bwd_x on g
 * padded by 4: 288 columns for 196 pixels, and 2/3 of the taps read the zero border).
 * Here CV_L images sit side by side in the lanes, laid out in[c][h][w][lane], so every
 * output pixel of every image is one vector: a tile of KB channels x CVL_PB pixels of
 * one output row sums over the taps whose input row is inside the image (exact) and
 * whose column is inside for some pixel of the tile (the rest read a zero border of
 * CVL_PB - 1 columns).  Each output is the same chain of FMAs over the taps in the
 * same (c, r, s) order as the grid's, minus terms that are exact zeros (0 * w; they
 * leave an FMA chain that starts at +0 unchanged unless w is inf or NaN), so the
 * results are the grid's bit for bit.  The images go in and out through L x L
 * transposes; the epilogue (bias, add, mask, relu) runs as the results come out. */

#define CVL_PB 2 /* pixels (vectors) per tile */

/* m[i][j] <-> m[j][i] over an L x L block of T (L = CV_L), in registers: log2(L)
 * stages, stage s swapping bit s of the row index with bit s of the column index. */
#if TLANES == 8
#define CVL_LO1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define CVL_HI1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
#define CVL_LO2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define CVL_HI2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define CVL_LO4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define CVL_HI4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define CVL_LO8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define CVL_HI8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#else
#define CVL_LO1 0, 8, 2, 10, 4, 12, 6, 14
#define CVL_HI1 1, 9, 3, 11, 5, 13, 7, 15
#define CVL_LO2 0, 1, 8, 9, 4, 5, 12, 13
#define CVL_HI2 2, 3, 10, 11, 6, 7, 14, 15
#define CVL_LO4 0, 1, 2, 3, 8, 9, 10, 11
#define CVL_HI4 4, 5, 6, 7, 12, 13, 14, 15
#define CVL_LO8 CVL_LO4 /* unused: 8 lanes take three stages */
#define CVL_HI8 CVL_HI4
#endif
#define CVL_STAGE(s)                                                       \
    for (int i = 0; i < CV_L; i++)                                         \
        if (!(i & (s))) {                                                  \
            const S(cv_vec) a = v[i], b = v[i + (s)];                      \
            v[i] = __builtin_shufflevector(a, b, CVL_LO##s);               \
            v[i + (s)] = __builtin_shufflevector(a, b, CVL_HI##s);         \
        }
static inline __attribute__((always_inline)) void S(cvl_transpose)(T m[][CV_L]) {
    S(cv_vec) v[CV_L];
    memcpy(v, m, sizeof v);
    CVL_STAGE(1)
    CVL_STAGE(2)
    CVL_STAGE(4)
#if TLANES == 8
    CVL_STAGE(8)
#endif
    memcpy(m, v, sizeof v);
}
#undef CVL_STAGE

/* Images x + i*xs, i < ni (<= L), planes [C, H, W] -> lanes in[c][h][cp + w][i], the
 * lanes of images i >= ni zero.  The border columns are not written (zeroed once). */
static void S(cvl_in)(const T *x, int64_t xs, int64_t ni, int64_t C, int64_t H, int64_t W, int64_t cp, T *in) {
    const int64_t HW = H * W, wl = W + 2 * cp;
    T blk[CV_L][CV_L] __attribute__((aligned(64)));
    for (int64_t c = 0; c < C; c++)
        for (int64_t p = 0; p < HW; p += CV_L) {
            const int64_t np = HW - p < CV_L ? HW - p : CV_L;
            for (int64_t i = 0; i < CV_L; i++) { /* fixed-size copies: gcc makes a variable one rep movs */
                const int64_t at = i * xs + c * HW + p;
                if (i < ni && np == CV_L) memcpy(blk[i], x + at, sizeof blk[i]);
                else
                    for (int64_t j = 0; j < CV_L; j++) blk[i][j] = i < ni && j < np ? x[at + j] : (T)0;
            }
            S(cvl_transpose)(blk);
            for (int64_t j = 0; j < np; j++) {
                const int64_t h = (p + j) / W, w = (p + j) % W;
                memcpy(in + ((c * H + h) * wl + cp + w) * CV_L, blk[j], sizeof blk[j]);
            }
        }
}

/* The epilogue of cv_epi_store over n values, the variant chosen by kind (cv_epi_kind). */
static inline void S(cvl_store)(int kind, const T *t, T bk, const T *a, const T *m, int64_t n, T *y) {
    switch (kind) {
    case 0: S(cv_epi_store)(0, 0, 0, t, bk, a, m, n, y); break;
    case 1: S(cv_epi_store)(1, 0, 0, t, bk, a, m, n, y); break;
    case 2: S(cv_epi_store)(0, 1, 0, t, bk, a, m, n, y); break;
    case 4: S(cv_epi_store)(0, 0, 1, t, bk, a, m, n, y); break;
    default: S(cv_epi_store)(kind & 1, (kind >> 1) & 1, (kind >> 2) & 1, t, bk, a, m, n, y); break;
    }
}

/* Lanes out[k][p][i] (p < P pixels, i < ni images) -> y[n0 + i][k][p], + b[k], then
 * the epilogue E (indexed like y). */
static void S(cvl_out)(const T *out, int64_t K, int64_t P, int64_t ni, int64_t n0, const T *b, const S(cv_epi) *E,
                       T *y) {
    const int kind = S(cv_epi_kind)(E);
    T blk[CV_L][CV_L] __attribute__((aligned(64)));
    for (int64_t k = 0; k < K; k++) {
        const T bk = b ? b[k] : 0;
        for (int64_t p = 0; p < P; p += CV_L) {
            const int64_t np = P - p < CV_L ? P - p : CV_L;
            for (int64_t j = 0; j < CV_L; j++)
                if (j < np) memcpy(blk[j], out + (k * P + p + j) * CV_L, sizeof blk[j]);
                else memset(blk[j], 0, sizeof blk[j]);
            S(cvl_transpose)(blk);
            for (int64_t i = 0; i < ni; i++) {
                const int64_t off = ((n0 + i) * K + k) * P + p;
                S(cvl_store)(kind, blk[i], bk, E && E->add ? E->add + off : NULL, E && E->mask ? E->mask + off : NULL,
                             np, y + off);
            }
        }
    }
}

/* out[j][i] (lanes; j < KB, i < CVL_PB, channel planes ldo apart) = the sum over input
 * channels c < cin, nr rows and ns columns of taps of wp[tap][j] * in at (c, row,
 * column + i): in and wp point at channel 0's first tap (rows rs, channels chs apart in
 * in; in wp a row of taps is wrs, a channel wcs reals on). */
static inline __attribute__((always_inline)) void S(cvl_tile)(const int KB, const T *restrict in, int64_t cin,
                                                                int64_t chs, int64_t rs, int64_t nr, int64_t ns,
                                                                const T *restrict wp, int64_t wcs, int64_t wrs,
                                                                T *restrict out, int64_t ldo) {
    S(cv_vec) acc[CV_KB][CVL_PB];
    for (int j = 0; j < KB; j++)
        for (int i = 0; i < CVL_PB; i++) acc[j][i] = (S(cv_vec)){0};
    for (int64_t c = 0; c < cin; c++)
        for (int64_t r = 0; r < nr; r++) {
            const T *xr = in + c * chs + r * rs, *wr = wp + c * wcs + r * wrs;
            for (int64_t s = 0; s < ns; s++, wr += KB) {
                S(cv_vec) xv[CVL_PB];
                for (int i = 0; i < CVL_PB; i++) memcpy(&xv[i], xr + (s + i) * CV_L, sizeof xv[i]);
                for (int j = 0; j < KB; j++) {
                    const T wj = wr[j];
                    for (int i = 0; i < CVL_PB; i++) acc[j][i] += xv[i] * wj;
                }
            }
        }
    for (int j = 0; j < KB; j++)
        for (int i = 0; i < CVL_PB; i++) memcpy(out + j * ldo + i * CV_L, &acc[j][i], sizeof acc[j][i]);
}

/* One lane call: in[cin, hi, wi] -> out[cout, oh, ow] per image, out(y, x) = sum over
 * c, r, s of wpk * in(y + r - pr, x + s - pc) (zero outside the image), the weights
 * packed per channel block by cv_pack_fwd / cv_pack_bwd. */
typedef struct S(cvl_job) {
    const T *in, *wpk, *b;
    const S(cv_epi) *E;
    T *out, *slots;
    int64_t n, cin, hi, wi, cout, oh, ow, pr, pc, R, Sk, slot, insz;
    int nt;                       /* threads (scratch slots); the tasks are the groups */
    int zeroed[CDL_CONV_THREADS]; /* slot's lanes zeroed in this call (the border) */
} S(cvl_job);

/* The lanes' geometry: column border, input and output sizes (reals). */
#define CVL_CP (CVL_PB - 1)
static inline int64_t S(cvl_insz)(int64_t cin, int64_t hi, int64_t wi) {
    return cin * hi * (wi + 2 * CVL_CP) * CV_L;
}

/* The tiles of one group in lanes, channel block kb at k0. */
static inline __attribute__((always_inline)) void S(cvl_block)(const int KB, const S(cvl_job) *J, const T *in,
                                                                 int64_t k0, T *out) {
    const int64_t wl = J->wi + 2 * CVL_CP, rs = wl * CV_L, chs = J->hi * rs, P = J->oh * J->ow;
    const int64_t taps = J->cin * J->R * J->Sk;
    for (int64_t y = 0; y < J->oh; y++) {
        int64_t r0 = J->pr - y, r1 = J->hi + J->pr - y; /* 0 <= y + r - pr < hi */
        r0 = r0 < 0 ? 0 : r0;
        r1 = r1 > J->R ? J->R : r1;
        for (int64_t x0 = 0; x0 < J->ow; x0 += CVL_PB) {
            const int64_t x = x0 + CVL_PB <= J->ow ? x0 : J->ow - CVL_PB; /* the last tile overlaps */
            int64_t s0 = J->pc - x - (CVL_PB - 1), s1 = J->wi + J->pc - x; /* some pixel's column inside */
            s0 = s0 < 0 ? 0 : s0;
            s1 = s1 > J->Sk ? J->Sk : s1;
            if (r0 >= r1 || s0 >= s1) { /* no tap reaches the image: the sum is 0 */
                for (int j = 0; j < KB; j++)
                    memset(out + ((k0 + j) * P + y * J->ow + x) * CV_L, 0, sizeof(T) * CVL_PB * CV_L);
                continue;
            }
            /* row y + r0 - pr >= 0, column CVL_CP + x + s0 - pc >= 0 */
            const int64_t at = (y + r0 - J->pr) * rs + (CVL_CP + x + s0 - J->pc) * CV_L;
            S(cvl_tile)(KB, in + at, J->cin, chs, rs, r1 - r0, s1 - s0, J->wpk + k0 * taps + (r0 * J->Sk + s0) * KB,
                        J->R * J->Sk * KB, J->Sk * KB, out + (k0 * P + y * J->ow + x) * CV_L, P * CV_L);
        }
    }
}

/* Task g: the group of images [g L, g L + L) in scratch slot `slot` (cdl_parallel_slots;
 * each image is computed alone, so the bits do not depend on who runs it). */
static void S(cvl_task)(void *arg, int64_t g, int slot) {
    S(cvl_job) *J = arg;
    const int64_t is = J->cin * J->hi * J->wi, P = J->oh * J->ow;
    T *in = J->slots + slot * J->slot, *out = in + J->insz;
    if (!J->zeroed[slot]) memset(in, 0, sizeof(T) * (size_t)J->insz);
    J->zeroed[slot] = 1;
    const int64_t n0 = g * CV_L, ni = J->n - n0 < CV_L ? J->n - n0 : CV_L;
    S(cvl_in)(J->in + n0 * is, is, ni, J->cin, J->hi, J->wi, CVL_CP, in);
    for (int64_t k0 = 0; k0 < J->cout; k0 += S(cv_kb)(J->cout - k0)) {
#define CVL_BLOCK(KB) S(cvl_block)(KB, J, in, k0, out)
        CV_SWITCH_KB(S(cv_kb)(J->cout - k0), CVL_BLOCK)
#undef CVL_BLOCK
    }
    S(cvl_out)(out, J->cout, P, ni, n0, J->b, J->E, J->out);
}

/* Scratch of the lane mode (reals): the packed weights, then CDL_CONV_THREADS slots of
 * the larger of the forward's and bwd_x's lanes in and out. */
static int64_t S(cvl_need)(const cdl_conv2d_geom *gm) {
    const int64_t fwd = S(cvl_insz)(gm->c, gm->h, gm->w) + gm->k * gm->oh * gm->ow * CV_L;
    const int64_t bwd = S(cvl_insz)(gm->k, gm->oh, gm->ow) + gm->c * gm->h * gm->w * CV_L;
    return gm->k * gm->c * gm->r * gm->s + CDL_CONV_THREADS * (fwd > bwd ? fwd : bwd);
}

/* The lane mode takes the vec mode's narrow images (rows under 16 pixels, in and out:
 * the grid wastes a third or more) with kernels larger than 3x3, when its lanes fit the
 * scratch the vec mode has (cdl_conv2d_scratch: the contract with generated C). */
int S(conv2d_lanes)(const cdl_conv2d_geom *gm) {
    return cdl_conv_lanes && cdl_conv2d_vec(gm) && gm->r * gm->s > 9 && gm->ow >= CVL_PB && gm->w >= CVL_PB &&
           gm->ow < CDL_CONV_VL && gm->w < CDL_CONV_VL && S(cvl_need)(gm) <= cdl_conv2d_scratch(gm);
}

/* Forward (bwd = 0: x -> y, weights w) or bwd_x (bwd = 1: g -> dx, the kernel turned
 * round) of a lane-mode geometry; b the bias (forward), E the epilogue or NULL. */
static void S(cvl_conv)(const cdl_conv2d_geom *gm, int bwd, const T *in, const T *w, const T *b, const S(cv_epi) *E,
                        T *out, T *scratch) {
    S(cvl_job) J = {.in = in, .wpk = scratch, .b = b, .E = E, .out = out, .n = gm->n, .R = gm->r, .Sk = gm->s};
    if (bwd) {
        S(cv_pack_bwd)(gm, w, scratch);
        J.cin = gm->k, J.hi = gm->oh, J.wi = gm->ow, J.cout = gm->c, J.oh = gm->h, J.ow = gm->w;
        J.pr = gm->r - 1 - gm->pad, J.pc = gm->s - 1 - gm->pad;
    } else {
        S(cv_pack_fwd)(gm, w, scratch);
        J.cin = gm->c, J.hi = gm->h, J.wi = gm->w, J.cout = gm->k, J.oh = gm->oh, J.ow = gm->ow;
        J.pr = J.pc = gm->pad;
    }
    J.slots = scratch + gm->k * gm->c * gm->r * gm->s;
    J.insz = S(cvl_insz)(J.cin, J.hi, J.wi);
    J.slot = J.insz + J.cout * J.oh * J.ow * CV_L;
    const int64_t ng = (gm->n + CV_L - 1) / CV_L;
    J.nt = S(cv_threads)(gm, ng);
    cdl_parallel_slots(ng, J.nt, S(cvl_task), &J);
}

#undef CVL_PB
#undef CVL_CP
#undef CVL_LO1
#undef CVL_HI1
#undef CVL_LO2
#undef CVL_HI2
#undef CVL_LO4
#undef CVL_HI4
#undef CVL_LO8
#undef CVL_HI8
