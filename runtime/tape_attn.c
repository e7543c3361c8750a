/* tape_attn.c -- tape ops over kernels_attn.c: bmm (a @ b on batches, torch.matmul's
 * broadcasting) and fused attention.  Same pattern as tape_ops.c: the public cdl_t_<op>
 * checks shapes, records and runs the forward kernel; its static bwd_<op> is the
 * backward rule (compiler/ops_attn.c's gradient rules, with the same kernels).
 */
#include "tape_int.h"

/* ======================================================================== bmm */

/* A batched product's geometry from runtime shapes: the result's batch dims and every
 * operand's element strides along them (0 where it broadcasts). */
typedef struct BmmGeo {
    int nb;
    int64_t bd[CDL_MAXDIM], sa[CDL_MAXDIM], sb[CDL_MAXDIM], sc[CDL_MAXDIM];
    int64_t M, N, K;
} BmmGeo;

/* Strides of x (rank >= 2) along the nb result batch dims bd. */
static void bmm_strides(const cdl_t *x, int nb, const int64_t *bd, int64_t *st) {
    int off = nb - (x->rank - 2);
    int64_t s = x->dims[x->rank - 2] * x->dims[x->rank - 1];
    for (int i = nb - 1; i >= 0; i--) {
        int j = i - off;
        st[i] = j < 0 || (x->dims[j] == 1 && bd[i] != 1) ? 0 : s;
        if (j >= 0) s *= x->dims[j];
    }
}

/* 0, or -1 after a message naming the mismatch. */
static int bmm_geo(cdl_tape *tp, const cdl_t *a, const cdl_t *b, int ta, int tb, BmmGeo *g) {
    if (a->rank < 2 || b->rank < 2) {
        tape_err(tp, "bmm", "operands need at least 2 axes, got %s @ %s", DSTR(a), DSTR(b));
        return -1;
    }
    int ra = a->rank, rb = b->rank;
    g->M = a->dims[ra - 2 + ta];
    g->K = a->dims[ra - 1 - ta];
    g->N = b->dims[rb - 1 - tb];
    if (b->dims[rb - 2 + tb] != g->K) {
        tape_err(tp, "bmm", "inner dimensions differ: %s%s @ %s%s", DSTR(a), ta ? "^T" : "", DSTR(b), tb ? "^T" : "");
        return -1;
    }
    g->nb = (ra > rb ? ra : rb) - 2;
    for (int i = 0; i < g->nb; i++) {
        int ja = i - (g->nb - (ra - 2)), jb = i - (g->nb - (rb - 2));
        int64_t da = ja >= 0 ? a->dims[ja] : 1, db = jb >= 0 ? b->dims[jb] : 1;
        if (da != db && da != 1 && db != 1) {
            tape_err(tp, "bmm", "batch dimensions do not broadcast: %s @ %s", DSTR(a), DSTR(b));
            return -1;
        }
        g->bd[i] = da != 1 ? da : db;
    }
    bmm_strides(a, g->nb, g->bd, g->sa);
    bmm_strides(b, g->nb, g->bd, g->sb);
    int64_t s = g->M * g->N;
    for (int i = g->nb - 1; i >= 0; i--) {
        g->sc[i] = s;
        s *= g->bd[i];
    }
    return 0;
}

/* dA and dB through matmul_bc itself, written at the operands' strides: products that
 * land on a broadcast operand's one matrix sum there (cdl.h, BEGIN ATTN). */
static void bwd_bmm(cdl_tape *tp, cdl_t *y) {
    cdl_t *a = y->in[0], *b = y->in[1];
    int ta = (int)y->ia[0], tb = (int)y->ia[1], acc;
    BmmGeo g;
    if (bmm_geo(tp, a, b, ta, tb, &g) < 0) return;
    void *d;
    if (tape_need(tp, a) && (d = tape_gdst(tp, a, &acc))) {
        if (!ta) TK(tp, matmul_bc, g.nb, g.bd, g.sc, g.sb, g.sa, 0, !tb, g.M, g.K, g.N, y->grad, b->data, d);
        else TK(tp, matmul_bc, g.nb, g.bd, g.sb, g.sc, g.sa, tb, 1, g.K, g.M, g.N, b->data, y->grad, d);
        tape_gfin(tp, a, d, acc);
    }
    if (tape_need(tp, b) && (d = tape_gdst(tp, b, &acc))) {
        if (!tb) TK(tp, matmul_bc, g.nb, g.bd, g.sa, g.sc, g.sb, !ta, 0, g.K, g.N, g.M, a->data, y->grad, d);
        else TK(tp, matmul_bc, g.nb, g.bd, g.sc, g.sa, g.sb, 1, ta, g.N, g.K, g.M, y->grad, a->data, d);
        tape_gfin(tp, b, d, acc);
    }
}

cdl_t *cdl_t_bmm(cdl_tape *tp, cdl_t *a, cdl_t *b, int trans_a, int trans_b) {
    cdl_t *ab[2] = {a, b};
    if (!tape_need_real(tp, "bmm", ab, 2)) return NULL;
    int ta = trans_a != 0, tb = trans_b != 0;
    BmmGeo g;
    if (bmm_geo(tp, a, b, ta, tb, &g) < 0) return NULL;
    int64_t dims[CDL_MAXDIM + 2];
    memcpy(dims, g.bd, sizeof(int64_t) * (size_t)g.nb);
    dims[g.nb] = g.M;
    dims[g.nb + 1] = g.N;
    if (g.nb + 2 > CDL_MAXDIM) return tape_err(tp, "bmm", "more than %d axes", CDL_MAXDIM);
    cdl_t *y = tape_rec(tp, "bmm", tp->real, g.nb + 2, dims, 1, 2, ab);
    if (!y) return NULL;
    TK(tp, matmul_bc, g.nb, g.bd, g.sa, g.sb, g.sc, ta, tb, g.M, g.N, g.K, a->data, b->data, y->data);
    y->ia[0] = ta;
    y->ia[1] = tb;
    y->bwd = bwd_bmm;
    return y;
}

/* ======================================================================== attention */

/* km: the key mask [q's dim 0, tk] or NULL; hl: heads last ([..., T, H, d]: the slices
 * are the leading axes times H, the sequence axis is -3). */
static cdl_attn_geom attn_geom(const cdl_t *q, const cdl_t *k, const cdl_t *v, const cdl_t *km, int causal,
                               double scale, int hl) {
    int r = q->rank, t = hl ? r - 3 : r - 2;
    int64_t nh = hl ? q->dims[r - 2] : 1;
    return (cdl_attn_geom){.bh = tape_prod(q->dims, 0, t) * nh, .tq = q->dims[t], .tk = k->dims[t],
                           .d = q->dims[r - 1], .dv = v->dims[r - 1], .causal = causal, .scale = scale,
                           .heads = km ? tape_prod(q->dims, 1, t) * nh : 1, .kmask = km ? km->data : NULL,
                           .nh = hl ? nh : 0};
}

/* The kernel writes dq, dk and dv at once: each goes to its gradient (or a temporary
 * added in after), or to a throw-away temporary when not wanted. */
static void bwd_attention(cdl_tape *tp, cdl_t *y) {
    cdl_t *x[3] = {y->in[0], y->in[1], y->in[2]};
    cdl_attn_geom g = attn_geom(x[0], x[1], x[2], y->nin > 3 ? y->in[3] : NULL, (int)y->ia[0], y->fa[0], (int)y->ia[1]);
    void *scratch = tape_rtemp(tp, cdl_attention_scratch(&g)), *d[3];
    int acc[3] = {0, 0, 0}, need[3];
    if (!scratch) return;
    for (int i = 0; i < 3; i++) {
        need[i] = tape_need(tp, x[i]);
        d[i] = need[i] ? tape_gdst(tp, x[i], &acc[i]) : tape_rtemp(tp, x[i]->numel);
        if (!d[i]) return;
    }
    TK(tp, attention_bwd, &g, y->grad, x[0]->data, x[1]->data, x[2]->data, y->data, y->aux, d[0], d[1], d[2], scratch);
    for (int i = 0; i < 3; i++)
        if (need[i]) tape_gfin(tp, x[i], d[i], acc[i]);
}

/* key_mask: NULL or [q's dim 0, tk], nonzero where a key is ignored (no gradient);
 * hl: q, k, v and the result are [..., T, H, d] (heads last) instead of [..., T, d]. */
static cdl_t *attention(cdl_tape *tp, cdl_t *q, cdl_t *k, cdl_t *v, cdl_t *key_mask, int causal, double scale,
                        int hl) {
    cdl_t *in[4] = {q, k, v, key_mask};
    int nin = key_mask ? 4 : 3;
    if (!tape_need_real(tp, "attention", in, nin)) return NULL;
    int r = q->rank, t = hl ? r - 3 : r - 2;
    int ok = t >= 0 && k->rank == r && v->rank == r && k->dims[r - 1] == q->dims[r - 1] && v->dims[t] == k->dims[t];
    for (int i = 0; ok && i < r - 1; i++) ok = i == t || (k->dims[i] == q->dims[i] && v->dims[i] == q->dims[i]);
    if (!ok)
        return tape_err(tp, "attention", "q %s, k %s and v %s do not fit %s", DSTR(q), DSTR(k), DSTR(v),
                        hl ? "[..., T, H, d]" : "[..., T, d]");
    if (key_mask && (t < 1 || key_mask->rank != 2 || key_mask->dims[0] != q->dims[0] || key_mask->dims[1] != k->dims[t]))
        return tape_err(tp, "attention", "key_padding_mask %s does not fit q %s, k %s", DSTR(key_mask), DSTR(q), DSTR(k));
    int64_t dims[CDL_MAXDIM];
    memcpy(dims, q->dims, sizeof dims);
    dims[r - 1] = v->dims[r - 1];
    cdl_t *y = tape_rec(tp, "attention", tp->real, r, dims, 1, nin, in);
    if (!y) return NULL;
    cdl_attn_geom g = attn_geom(q, k, v, key_mask, causal != 0, scale, hl);
    y->aux = tape_alloc(tp, (size_t)(g.bh * g.tq) * (size_t)tp->rs);
    char *mark = tp->hi;
    void *scratch = tape_rtemp(tp, cdl_attention_scratch(&g));
    if (!y->aux || !scratch) return NULL;
    TK(tp, attention, &g, q->data, k->data, v->data, y->data, y->aux, scratch);
    tape_release(tp, mark);
    y->ia[0] = causal != 0;
    y->ia[1] = hl;
    y->fa[0] = scale;
    y->bwd = bwd_attention;
    return y;
}

cdl_t *cdl_t_attention(cdl_tape *tp, cdl_t *q, cdl_t *k, cdl_t *v, cdl_t *key_mask, int causal, double scale) {
    return attention(tp, q, k, v, key_mask, causal, scale, 0);
}

cdl_t *cdl_t_attention_heads_last(cdl_tape *tp, cdl_t *q, cdl_t *k, cdl_t *v, cdl_t *key_mask, int causal,
                                  double scale) {
    return attention(tp, q, k, v, key_mask, causal, scale, 1);
}
