/* kernels_attn_t.h -- bodies of the batched matmul and fused attention kernels for one
 * element type.  Included twice by kernels_attn.c with T = float / double, S(name) =
 * cdl_name_f32 / cdl_name_f64 and M(fn) the libm function for T.  Contracts: cdl.h,
 * BEGIN ATTN.  No allocation: attention gets its scratch from the caller. */

/* ------------------------------------------------------------------ batched matmul */

/* Walk the merged batch dims but the innermost, one strided GEMM batch (cdl_gemm_batch)
 * per step along the innermost.  A C slot that several steps share (sc = 0 on a
 * summed dim) is overwritten by its first step (all such dims at index 0) and added to
 * by the later ones. */
void S(matmul_bc)(int nb, const int64_t *bdims, const int64_t *sa, const int64_t *sb, const int64_t *sc, int ta,
                  int tb, int64_t M, int64_t N, int64_t K, const T *A, const T *B, T *C) {
    if (M <= 0 || N <= 0 || nb < 0 || nb > CDL_MAXDIM) return;
    for (int k = 0; k < nb; k++)
        if (bdims[k] <= 0) return;
    const int64_t lda = ta ? M : K, ldb = tb ? K : N;
    AttnBatch m = attn_batch_merge(nb, bdims, sa, sb, sc);
    if (m.n == 0) {
        S(gemm)(ta, tb, M, N, K, (T)1, A, lda, B, ldb, (T)0, C, N);
        return;
    }
    const int in = m.n - 1;
    int64_t idx[CDL_MAXDIM] = {0}, outer = 1, oa = 0, ob = 0, oc = 0;
    for (int k = 0; k < in; k++) outer *= m.d[k];
    for (int64_t o = 0; o < outer; o++) {
        int first = 1;
        for (int k = 0; k < in; k++)
            if (m.sc[k] == 0 && idx[k] != 0) first = 0;
        S(gemm_batch)(ta, tb, M, N, K, (T)1, A + oa, lda, m.sa[in], B + ob, ldb, m.sb[in], first ? (T)0 : (T)1,
                      C + oc, N, m.sc[in], m.d[in]);
        for (int k = in - 1; k >= 0; k--) {
            oa += m.sa[k];
            ob += m.sb[k];
            oc += m.sc[k];
            if (++idx[k] < m.d[k]) break;
            oa -= m.sa[k] * m.d[k];
            ob -= m.sb[k] * m.d[k];
            oc -= m.sc[k] * m.d[k];
            idx[k] = 0;
        }
    }
}

/* ------------------------------------------------------------------ attention */

/* Keys of chunk [j0, j0 + nc) that query row i may see: all, or (causal) j <= i. */
static inline int64_t S(attn_valid)(int causal, int64_t i, int64_t j0, int64_t nc) {
    if (!causal) return nc;
    int64_t v = i - j0 + 1;
    return v < 0 ? 0 : v > nc ? nc : v;
}

/* Keys that query rows [i0, i0 + nr) may see end here: all tk, or (causal) the last row's own. */
static inline int64_t S(attn_kend)(const cdl_attn_geom *g, int64_t i0, int64_t nr) {
    return g->causal && i0 + nr < g->tk ? i0 + nr : g->tk;
}

/* The forward's key chunks are twice the backward's: it holds one chunk of scores where
 * the backward holds two (P and dP) in the same scratch, and fewer, larger GEMMs run
 * faster (T = 128, causal: 4 GEMMs a slice instead of 6). */
#define ATTN_FWD_BC (2 * CDL_ATTN_BC)

/* Row strides of one slice's q (and dq), k (dk), v (dv) and y (gy): the head size when
 * the slices are dense, the heads' whole row when heads are last (g->nh > 0). */
typedef struct S(attn_ld) {
    int64_t q, k, v, y;
} S(attn_ld);

/* s[nr, nc] = scale q[i0 .. i0 + nr) k[j0 .. j0 + nc)^T for one chunk of at most bc keys
 * below kend (one GEMM); returns nc. */
static inline int64_t S(attn_scores)(const cdl_attn_geom *g, const S(attn_ld) *ld, T scale, const T *q, const T *k,
                                     int64_t i0, int64_t nr, int64_t j0, int64_t bc, int64_t kend, T *s) {
    const int64_t nc = kend - j0 < bc ? kend - j0 : bc;
    S(gemm)(0, 1, nr, nc, g->d, scale, q + i0 * ld->q, ld->q, k + j0 * ld->k, ld->k, (T)0, s, nc);
    return nc;
}

/* Zeroes rows [r0, r1) of n elements, ld apart. */
static inline void S(attn_zero_rows)(T *x, int64_t r0, int64_t r1, int64_t n, int64_t ld) {
    if (r1 <= r0) return;
    if (ld == n) {
        memset(x + r0 * n, 0, sizeof(T) * (size_t)((r1 - r0) * n));
        return;
    }
    for (int64_t r = r0; r < r1; r++) memset(x + r * ld, 0, sizeof(T) * (size_t)n);
}

/* Lanes of the row max and sum loops: a max or sum in one variable is a chain the
 * compiler keeps scalar (and spilled, it was most of the forward's own time). */
#define ATTN_LANES 16

/* Masks the keys of a chunk that km (the slice's key_padding_mask row, or NULL) marks:
 * their scores become -inf; returns the largest of the first nv that is left (-inf
 * when none). */
static inline T S(attn_kmask)(const T *km, int64_t j0, int64_t nv, T *restrict s) {
    if (km)
        for (int64_t c = 0; c < nv; c++)
            if (km[j0 + c] != 0) s[c] = (T)-INFINITY;
    T mx[ATTN_LANES];
    for (int j = 0; j < ATTN_LANES; j++) mx[j] = (T)-INFINITY;
    int64_t c = 0;
    for (; c + ATTN_LANES <= nv; c += ATTN_LANES)
        for (int j = 0; j < ATTN_LANES; j++) mx[j] = s[c + j] > mx[j] ? s[c + j] : mx[j];
    for (; c < nv; c++) mx[0] = s[c] > mx[0] ? s[c] : mx[0];
    for (int j = 1; j < ATTN_LANES; j++) mx[0] = mx[j] > mx[0] ? mx[j] : mx[0];
    return mx[0];
}

/* a . b over n, in ATTN_LANES lanes */
static inline T S(attn_dot)(int64_t n, const T *restrict a, const T *restrict b) {
    T acc[ATTN_LANES] = {0}, sum = 0;
    int64_t c = 0;
    for (; c + ATTN_LANES <= n; c += ATTN_LANES)
        for (int j = 0; j < ATTN_LANES; j++) acc[j] += a[c + j] * b[c + j];
    for (; c < n; c++) sum += a[c] * b[c];
    for (int j = 0; j < ATTN_LANES; j++) sum += acc[j];
    return sum;
}

/* sum of s[0 .. n) in ATTN_LANES lanes (one chain of adds does not vectorise) */
static inline T S(attn_sum)(int64_t n, const T *restrict s) {
    T a[ATTN_LANES] = {0}, sum = 0;
    int64_t c = 0;
    for (; c + ATTN_LANES <= n; c += ATTN_LANES)
        for (int j = 0; j < ATTN_LANES; j++) a[j] += s[c + j];
    for (; c < n; c++) sum += s[c];
    for (int j = 0; j < ATTN_LANES; j++) sum += a[j];
    return sum;
}

/* One bh slice of the forward.  Per block of CDL_ATTN_BR query rows, the key chunks
 * stream through an online softmax: s = scale q k^T for the chunk (one GEMM), the row
 * maximum so far m and the sum l of exp(s - m) updated, the earlier part of y rescaled
 * by exp(m_old - m_new), then y += exp(s - m_new) v_chunk (one GEMM).  At the end
 * y /= l and lse = m + log l.  sc holds one chunk of scores (CDL_ATTN_BR x ATTN_FWD_BC),
 * m and l one value a row.
 * Keys masked by km (NULL: none) weigh 0; a row with every key masked gets y = 0. */
static void S(attn_fwd_slice)(const cdl_attn_geom *g, const S(attn_ld) *ld, T scale, const T *q, const T *k,
                              const T *v, const T *km, T *y, T *lse, T *sc, T *m, T *l) {
    const int64_t tq = g->tq, DV = g->dv, LY = ld->y;
    for (int64_t i0 = 0; i0 < tq; i0 += CDL_ATTN_BR) {
        const int64_t nr = tq - i0 < CDL_ATTN_BR ? tq - i0 : CDL_ATTN_BR;
        for (int64_t r = 0; r < nr; r++) {
            m[r] = (T)-INFINITY;
            l[r] = 0;
        }
        const int64_t kend = S(attn_kend)(g, i0, nr);
        for (int64_t j0 = 0; j0 < kend; j0 += ATTN_FWD_BC) {
            const int64_t nc = S(attn_scores)(g, ld, scale, q, k, i0, nr, j0, ATTN_FWD_BC, kend, sc);
            for (int64_t r = 0; r < nr; r++) {
                T *restrict s = sc + r * nc;
                int64_t nv = S(attn_valid)(g->causal, i0 + r, j0, nc);
                const T mx = S(attn_kmask)(km, j0, nv, s);
                if (mx == (T)-INFINITY) nv = 0;
                for (int64_t c = nv; c < nc; c++) s[c] = 0;
                if (nv == 0) continue; /* no key of this chunk: m, l and y unchanged */
                const T mn = mx > m[r] ? mx : m[r], corr = M(exp)(m[r] - mn);
                for (int64_t c = 0; c < nv; c++) s[c] = M(exp)(s[c] - mn);
                l[r] = l[r] * corr + S(attn_sum)(nv, s);
                m[r] = mn;
                if (j0 > 0) {
                    T *restrict yr = y + (i0 + r) * LY;
                    for (int64_t c = 0; c < DV; c++) yr[c] *= corr;
                }
            }
            /* chunk 0 holds key 0, which every row sees: it overwrites every y row */
            S(gemm)(0, 0, nr, DV, nc, (T)1, sc, nc, v + j0 * ld->v, ld->v, j0 == 0 ? (T)0 : (T)1, y + i0 * LY, LY);
        }
        for (int64_t r = 0; r < nr; r++) {
            T *restrict yr = y + (i0 + r) * LY;
            const T inv = l[r] > 0 ? (T)1 / l[r] : (T)0;
            for (int64_t c = 0; c < DV; c++) yr[c] *= inv;
            lse[i0 + r] = m[r] + M(log)(l[r]);
        }
    }
}

/* One bh slice of the backward (flash attention's): with D_i = gy_i . y_i and the
 * scores recomputed chunk by chunk, p = exp(s - lse_i) (0 where masked),
 *   dv += p^T gy,  dp = gy v^T,  ds = p (dp - D_i),  dq += scale ds k,  dk += scale ds^T q.
 * P and dP hold one chunk each, Dr one value per query row of the slice.  Keys masked by
 * km (NULL: none) have p = 0. */
static void S(attn_bwd_slice)(const cdl_attn_geom *g, const S(attn_ld) *ld, T scale, const T *q, const T *k,
                              const T *v, const T *km, const T *gy, const T *y, const T *lse, T *dq, T *dk, T *dv,
                              T *P, T *dP, T *Dr) {
    const int64_t tq = g->tq, tk = g->tk, D = g->d, DV = g->dv, LQ = ld->q, LK = ld->k, LV = ld->v, LY = ld->y;
    for (int64_t i = 0; i < tq; i++) Dr[i] = S(attn_dot)(DV, gy + i * LY, y + i * LY);
    int64_t kdone = 0; /* dk, dv rows below kdone hold sums, the rest is not written yet */
    for (int64_t i0 = 0; i0 < tq; i0 += CDL_ATTN_BR) {
        const int64_t nr = tq - i0 < CDL_ATTN_BR ? tq - i0 : CDL_ATTN_BR;
        const int64_t kend = S(attn_kend)(g, i0, nr);
        for (int64_t j0 = 0; j0 < kend; j0 += CDL_ATTN_BC) {
            const int64_t nc = S(attn_scores)(g, ld, scale, q, k, i0, nr, j0, CDL_ATTN_BC, kend, P);
            for (int64_t r = 0; r < nr; r++) {
                T *restrict p = P + r * nc;
                const int64_t nv = S(attn_valid)(g->causal, i0 + r, j0, nc);
                const T ls = lse[i0 + r];
                for (int64_t c = 0; c < nv; c++) p[c] = M(exp)(p[c] - ls);
                for (int64_t c = 0; km && c < nv; c++)
                    if (km[j0 + c] != 0) p[c] = 0;
                for (int64_t c = nv; c < nc; c++) p[c] = 0;
            }
            /* the first product into a dq, dk or dv row overwrites it (no memset pass over
             * the slice).  A key chunk is wider than a query block, so it can straddle kdone:
             * its rows from kdone on are zeroed and the products add to the whole chunk. */
            if (j0 < kdone && j0 + nc > kdone) {
                S(attn_zero_rows)(dk, kdone, j0 + nc, D, LK);
                S(attn_zero_rows)(dv, kdone, j0 + nc, DV, LV);
            }
            const T bk = j0 < kdone ? (T)1 : (T)0, bq = j0 > 0 ? (T)1 : (T)0;
            S(gemm)(1, 0, nc, DV, nr, (T)1, P, nc, gy + i0 * LY, LY, bk, dv + j0 * LV, LV);
            S(gemm)(0, 1, nr, nc, DV, (T)1, gy + i0 * LY, LY, v + j0 * LV, LV, (T)0, dP, nc);
            for (int64_t r = 0; r < nr; r++) {
                const T *restrict p = P + r * nc;
                T *restrict dp = dP + r * nc;
                const T di = Dr[i0 + r];
                for (int64_t c = 0; c < nc; c++) dp[c] = p[c] * (dp[c] - di);
            }
            S(gemm)(0, 0, nr, D, nc, scale, dP, nc, k + j0 * LK, LK, bq, dq + i0 * LQ, LQ);
            S(gemm)(1, 0, nc, D, nr, scale, dP, nc, q + i0 * LQ, LQ, bk, dk + j0 * LK, LK);
        }
        kdone = kend > kdone ? kend : kdone;
    }
    if (kdone < tk) { /* keys no query sees (causal, tk > tq) */
        S(attn_zero_rows)(dk, kdone, tk, D, LK);
        S(attn_zero_rows)(dv, kdone, tk, DV, LV);
    }
}

/* A forward or backward call split over the pool: task t takes slices
 * [bh t / nt, bh (t+1) / nt) in scratch slot t. */
typedef struct S(attn_job) {
    const cdl_attn_geom *g;
    T scale;
    const T *q, *k, *v, *gy, *y, *lse;
    T *yo, *lseo, *dq, *dk, *dv, *scratch;
    int64_t nt;
} S(attn_job);

static void S(attn_task)(void *arg, int64_t t) {
    const S(attn_job) *j = arg;
    const cdl_attn_geom *g = j->g;
    const int64_t BRC = (int64_t)CDL_ATTN_BR * CDL_ATTN_BC;
    T *slot = j->scratch + t * (cdl_attention_scratch(g) / CDL_ATTN_THREADS);
    const int64_t b0 = g->bh * t / j->nt, b1 = g->bh * (t + 1) / j->nt, nh = g->nh > 0 ? g->nh : 1;
    const S(attn_ld) ld = {.q = nh * g->d, .k = nh * g->d, .v = nh * g->dv, .y = nh * g->dv};
    for (int64_t b = b0; b < b1; b++) {
        const T *km = g->kmask ? (const T *)g->kmask + (b / (g->heads > 0 ? g->heads : 1)) * g->tk : NULL;
        /* slice b's first element: head b % nh of row block b / nh (dense: b * t * d) */
        const int64_t o = b / nh, h = b % nh;
        const int64_t oq = o * g->tq * ld.q + h * g->d, ok = o * g->tk * ld.k + h * g->d;
        const int64_t ov = o * g->tk * ld.v + h * g->dv, oy = o * g->tq * ld.y + h * g->dv;
        if (j->yo)
            S(attn_fwd_slice)(g, &ld, j->scale, j->q + oq, j->k + ok, j->v + ov, km, j->yo + oy, j->lseo + b * g->tq,
                              slot, slot + 2 * BRC, slot + 2 * BRC + CDL_ATTN_BR);
        else
            S(attn_bwd_slice)(g, &ld, j->scale, j->q + oq, j->k + ok, j->v + ov, km, j->gy + oy, j->y + oy,
                              j->lse + b * g->tq, j->dq + oq, j->dk + ok, j->dv + ov, slot, slot + BRC,
                              slot + 2 * BRC + 2 * CDL_ATTN_BR);
    }
}

static void S(attn_run)(S(attn_job) *j) {
    const cdl_attn_geom *g = j->g;
    if (g->bh <= 0 || g->tq <= 0 || g->tk <= 0 || g->d <= 0 || g->dv <= 0 || (g->nh > 0 && g->bh % g->nh)) return;
    j->scale = g->scale > 0 ? (T)g->scale : (T)(1.0 / sqrt((double)g->d));
    j->nt = attn_threads(g->bh, (double)g->tq * (double)g->tk * (double)(g->d + g->dv) * (j->yo ? 1 : 2),
                         attn_blas_tiny(g, sizeof(T) == sizeof(double)));
    cdl_parallel_for(j->nt, S(attn_task), j);
}

void S(attention)(const cdl_attn_geom *g, const T *q, const T *k, const T *v, T *y, T *lse, T *scratch) {
    S(attn_job) j = {.g = g, .q = q, .k = k, .v = v, .yo = y, .lseo = lse, .scratch = scratch};
    S(attn_run)(&j);
}

void S(attention_bwd)(const cdl_attn_geom *g, const T *gy, const T *q, const T *k, const T *v, const T *y,
                      const T *lse, T *dq, T *dk, T *dv, T *scratch) {
    S(attn_job) j = {.g = g, .q = q, .k = k, .v = v, .gy = gy, .y = y, .lse = lse,
                     .dq = dq, .dk = dk, .dv = dv, .scratch = scratch};
    S(attn_run)(&j);
}
