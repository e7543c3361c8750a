/* test_rt_kernels_attn.c -- batched matmul (matmul_bc, gemm_batch) and fused attention
 * (kernels_attn.c) against naive references in f64 and f32; their gradients against
 * the naive composed backward and central finite differences in f64; attention's bits
 * the same for one and two pool threads. */
#include "test_rt_util.h"

/* ------------------------------------------------------------------ matmul_bc */

/* A batched product set up like torch.matmul: a [abd..., M, K] (or [K, M] when ta),
 * b [bbd..., K, N] (or [N, K]), batch dims right-aligned and broadcast. */
typedef struct MM {
    int nb;
    int64_t bd[4], ad[4], bbd[4];     /* output batch dims; a's and b's (1 = broadcast) */
    int ta, tb;
    int64_t M, N, K;
    int64_t sa[4], sb[4], sc[4], na, nbb, nc;
    double *a, *b, *c, *R;
} MM;

static void mm_setup(MM *m) {
    int64_t s = (m->M * m->K), t = (m->K * m->N), u = m->M * m->N;
    for (int i = m->nb - 1; i >= 0; i--) {
        m->sa[i] = m->ad[i] == 1 ? 0 : s;
        m->sb[i] = m->bbd[i] == 1 ? 0 : t;
        m->sc[i] = u;
        s *= m->ad[i];
        t *= m->bbd[i];
        u *= m->bd[i];
    }
    m->na = s;
    m->nbb = t;
    m->nc = u;
    m->a = dvec(m->na);
    m->b = dvec(m->nbb);
    m->c = dvec(m->nc);
    m->R = dvec(m->nc);
}

static void mm_free(MM *m) {
    free(m->a);
    free(m->b);
    free(m->c);
    free(m->R);
}

/* Naive: every output element from the batch index through the strides. */
static void mm_ref(const MM *m, double *c) {
    int64_t nbat = m->nc / (m->M * m->N);
    for (int64_t o = 0; o < nbat; o++) {
        int64_t rem = o, oa = 0, ob = 0;
        for (int i = m->nb - 1; i >= 0; i--) {
            int64_t ix = rem % m->bd[i];
            rem /= m->bd[i];
            oa += ix * m->sa[i];
            ob += ix * m->sb[i];
        }
        for (int64_t i = 0; i < m->M; i++)
            for (int64_t j = 0; j < m->N; j++) {
                double s = 0;
                for (int64_t k = 0; k < m->K; k++) {
                    double x = m->ta ? m->a[oa + k * m->M + i] : m->a[oa + i * m->K + k];
                    double y = m->tb ? m->b[ob + j * m->K + k] : m->b[ob + k * m->N + j];
                    s += x * y;
                }
                c[(o * m->M + i) * m->N + j] = s;
            }
    }
}

static double mm_loss(void *ctx) {
    MM *m = ctx;
    cdl_matmul_bc_f64(m->nb, m->bd, m->sa, m->sb, m->sc, m->ta, m->tb, m->M, m->N, m->K, m->a, m->b, m->c);
    return tu_dot(m->c, m->R, m->nc);
}

/* Forward in both precisions against mm_ref; dA and dB through matmul_bc itself (the
 * adjoint rules of cdl.h) against finite differences. */
static void mm_case(MM m) {
    mm_setup(&m);
    double *ref = dvec(m.nc);
    mm_ref(&m, ref);
    mm_loss(&m);
    tu_close("matmul", m.c, ref, m.nc, 1e-13);
    float *fa = fcopy(m.a, m.na), *fb = fcopy(m.b, m.nbb), *fc = fcopy(m.c, m.nc);
    cdl_matmul_bc_f32(m.nb, m.bd, m.sa, m.sb, m.sc, m.ta, m.tb, m.M, m.N, m.K, fa, fb, fc);
    tu_close_f("matmul f32", fc, ref, m.nc, 1e-5);

    double *da = dvec(m.na), *db = dvec(m.nbb); /* garbage: must be overwritten */
    const double *G = m.R;
    if (!m.ta) /* dA[M,K] = G[M,N] op(B)^T */
        cdl_matmul_bc_f64(m.nb, m.bd, m.sc, m.sb, m.sa, 0, !m.tb, m.M, m.K, m.N, G, m.b, da);
    else       /* dA[K,M] = op(B)[K,N] G^T */
        cdl_matmul_bc_f64(m.nb, m.bd, m.sb, m.sc, m.sa, m.tb, 1, m.K, m.M, m.N, m.b, G, da);
    if (!m.tb) /* dB[K,N] = op(A)^T G */
        cdl_matmul_bc_f64(m.nb, m.bd, m.sa, m.sc, m.sb, !m.ta, 0, m.K, m.N, m.M, m.a, G, db);
    else       /* dB[N,K] = G^T op(A) */
        cdl_matmul_bc_f64(m.nb, m.bd, m.sc, m.sa, m.sb, 1, m.ta, m.N, m.K, m.M, G, m.a, db);
    fd_check("matmul dA", m.a, m.na, da, mm_loss, &m);
    fd_check("matmul dB", m.b, m.nbb, db, mm_loss, &m);
    free(ref); free(fa); free(fb); free(fc); free(da); free(db);
    mm_free(&m);
}

static void test_matmul_batched(void **st) {
    (void)st;
    /* [2, 3, M, K] @ [2, 3, K, N], every transpose combination */
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            mm_case((MM){.nb = 2, .bd = {2, 3}, .ad = {2, 3}, .bbd = {2, 3}, .ta = ta, .tb = tb, .M = 4, .N = 5, .K = 3});
}

static void test_matmul_broadcast(void **st) {
    (void)st;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            /* b shared by every batch (x @ W): the one-GEMM path, and dB summed over the batch */
            mm_case((MM){.nb = 2, .bd = {2, 3}, .ad = {2, 3}, .bbd = {1, 1}, .ta = ta, .tb = tb, .M = 4, .N = 2, .K = 5});
            /* a [2, 1] with b [1, 3]: both broadcast, on different dims */
            mm_case((MM){.nb = 2, .bd = {2, 3}, .ad = {2, 1}, .bbd = {1, 3}, .ta = ta, .tb = tb, .M = 3, .N = 4, .K = 2});
            /* a shared, b batched over an outer dim */
            mm_case((MM){.nb = 3, .bd = {3, 2, 2}, .ad = {1, 2, 2}, .bbd = {3, 1, 2}, .ta = ta, .tb = tb, .M = 2, .N = 3, .K = 4});
        }
}

/* gemm_batch with sC = 0 sums its products in order; with sB = 0 it is one GEMM. */
static void test_gemm_batch_paths(void **st) {
    (void)st;
    const int64_t M = 3, N = 4, K = 5, nb = 4;
    double *A = dvec(nb * M * K), *B = dvec(nb * K * N), *C = dvec(M * N), *R = dvec(M * N);
    for (int64_t i = 0; i < M * N; i++) R[i] = 0.5 * C[i];
    for (int64_t b = 0; b < nb; b++)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                for (int64_t k = 0; k < K; k++) R[i * N + j] += 2 * A[b * M * K + i * K + k] * B[b * K * N + k * N + j];
    cdl_gemm_batch_f64(0, 0, M, N, K, 2, A, K, M * K, B, N, K * N, 0.5, C, N, 0, nb);
    tu_close("gemm_batch sum", C, R, M * N, 1e-13);
    /* A^T B summed over the batch (the folded-K path): A_b stored [K, M] */
    double *C2 = dvec(M * N), *R2 = dvec(M * N);
    for (int64_t i = 0; i < M * N; i++) R2[i] = 0;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                for (int64_t k = 0; k < K; k++) R2[i * N + j] += A[b * M * K + k * M + i] * B[b * K * N + k * N + j];
    cdl_gemm_batch_f64(1, 0, M, N, K, 1, A, M, K * M, B, N, K * N, 0, C2, N, 0, nb);
    tu_close("gemm_batch folded", C2, R2, M * N, 1e-13);
    /* batch 0 and M 0 touch nothing */
    double keep = C2[0];
    cdl_gemm_batch_f64(0, 0, M, N, K, 1, A, K, 0, B, N, 0, 0, C2, N, 0, 0);
    cdl_gemm_batch_f64(0, 0, 0, N, K, 1, A, K, 0, B, N, 0, 0, C2, N, 0, 3);
    assert_true(C2[0] == keep);
    free(A); free(B); free(C); free(R); free(C2); free(R2);
}

/* ------------------------------------------------------------------ attention */

typedef struct AT {
    cdl_attn_geom g;
    int64_t nq, nk, nv, ny;
    double *q, *k, *v, *y, *lse, *R, *scratch;
} AT;

static void at_setup(AT *a, cdl_attn_geom g) {
    a->g = g;
    a->nq = g.bh * g.tq * g.d;
    a->nk = g.bh * g.tk * g.d;
    a->nv = g.bh * g.tk * g.dv;
    a->ny = g.bh * g.tq * g.dv;
    a->q = dvec(a->nq);
    a->k = dvec(a->nk);
    a->v = dvec(a->nv);
    for (int64_t i = 0; i < a->nq; i++) a->q[i] *= 2; /* scores of a few units: a peaked softmax */
    a->y = dvec(a->ny);
    a->lse = dvec(g.bh * g.tq);
    a->R = dvec(a->ny);
    a->scratch = dvec(cdl_attention_scratch(&g));
}

static void at_free(AT *a) {
    free(a->q); free(a->k); free(a->v); free(a->y); free(a->lse); free(a->R); free(a->scratch);
}

/* The composed version, materialising P = softmax(scale q k^T + mask) per slice:
 * y = P v, lse per row; with gy also the composed backward
 *   dv = P^T gy, dP = gy v^T, dS = P (dP - rowsum(dP P)), dq = scale dS k, dk = scale dS^T q. */
static void at_ref(const AT *a, const double *gy, double *y, double *lse, double *dq, double *dk, double *dv) {
    const cdl_attn_geom *g = &a->g;
    const int64_t TQ = g->tq, TK = g->tk, D = g->d, DV = g->dv;
    double scale = g->scale > 0 ? g->scale : 1 / sqrt((double)D);
    double *P = calloc((size_t)(TQ * TK), sizeof(double)), *dP = calloc((size_t)(TQ * TK), sizeof(double));
    for (int64_t b = 0; b < g->bh; b++) {
        const double *q = a->q + b * TQ * D, *k = a->k + b * TK * D, *v = a->v + b * TK * DV;
        for (int64_t i = 0; i < TQ; i++) {
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < TK; j++) {
                double s = g->causal && j > i ? -INFINITY : scale * tu_dot(q + i * D, k + j * D, D);
                P[i * TK + j] = s;
                mx = s > mx ? s : mx;
            }
            for (int64_t j = 0; j < TK; j++) sum += exp(P[i * TK + j] - mx);
            for (int64_t j = 0; j < TK; j++) P[i * TK + j] = exp(P[i * TK + j] - mx) / sum;
            if (lse) lse[b * TQ + i] = mx + log(sum);
            for (int64_t c = 0; c < DV; c++) {
                double s = 0;
                for (int64_t j = 0; j < TK; j++) s += P[i * TK + j] * v[j * DV + c];
                y[(b * TQ + i) * DV + c] = s;
            }
        }
        if (!gy) continue;
        const double *G = gy + b * TQ * DV;
        for (int64_t i = 0; i < TQ; i++) {
            double rs = 0;
            for (int64_t j = 0; j < TK; j++) {
                dP[i * TK + j] = tu_dot(G + i * DV, v + j * DV, DV);
                rs += dP[i * TK + j] * P[i * TK + j];
            }
            for (int64_t j = 0; j < TK; j++) dP[i * TK + j] = P[i * TK + j] * (dP[i * TK + j] - rs);
        }
        for (int64_t j = 0; j < TK; j++) {
            for (int64_t c = 0; c < DV; c++) {
                double s = 0;
                for (int64_t i = 0; i < TQ; i++) s += P[i * TK + j] * G[i * DV + c];
                dv[(b * TK + j) * DV + c] = s;
            }
            for (int64_t c = 0; c < D; c++) {
                double s = 0;
                for (int64_t i = 0; i < TQ; i++) s += dP[i * TK + j] * q[i * D + c];
                dk[(b * TK + j) * D + c] = scale * s;
            }
        }
        for (int64_t i = 0; i < TQ; i++)
            for (int64_t c = 0; c < D; c++) {
                double s = 0;
                for (int64_t j = 0; j < TK; j++) s += dP[i * TK + j] * k[j * D + c];
                dq[(b * TQ + i) * D + c] = scale * s;
            }
    }
    free(P);
    free(dP);
}

static double at_loss(void *ctx) {
    AT *a = ctx;
    cdl_attention_f64(&a->g, a->q, a->k, a->v, a->y, a->lse, a->scratch);
    return tu_dot(a->y, a->R, a->ny);
}

/* Forward and lse against the composed version (f64 1e-12, f32 1e-5), gradients against
 * the composed backward, and (fd != 0) against finite differences. */
static void at_case(cdl_attn_geom g, int fd) {
    AT a;
    at_setup(&a, g);
    double *ry = dvec(a.ny), *rl = dvec(g.bh * g.tq), *rq = dvec(a.nq), *rk = dvec(a.nk), *rv = dvec(a.nv);
    at_ref(&a, a.R, ry, rl, rq, rk, rv);
    at_loss(&a);
    tu_close("attention y", a.y, ry, a.ny, 1e-12);
    tu_close("attention lse", a.lse, rl, g.bh * g.tq, 1e-12);

    double *dq = dvec(a.nq), *dk = dvec(a.nk), *dv = dvec(a.nv);
    cdl_attention_bwd_f64(&g, a.R, a.q, a.k, a.v, a.y, a.lse, dq, dk, dv, a.scratch);
    tu_close("attention dq", dq, rq, a.nq, 1e-11);
    tu_close("attention dk", dk, rk, a.nk, 1e-11);
    tu_close("attention dv", dv, rv, a.nv, 1e-11);
    if (fd) {
        fd_check("attention dq", a.q, a.nq, dq, at_loss, &a);
        fd_check("attention dk", a.k, a.nk, dk, at_loss, &a);
        fd_check("attention dv", a.v, a.nv, dv, at_loss, &a);
    }

    int64_t ns = cdl_attention_scratch(&g);
    float *fq = fcopy(a.q, a.nq), *fk = fcopy(a.k, a.nk), *fv = fcopy(a.v, a.nv), *fy = fcopy(a.y, a.ny);
    float *fl = fcopy(a.lse, g.bh * g.tq), *fs = fcopy(a.scratch, ns), *fg = fcopy(a.R, a.ny);
    float *fdq = fcopy(dq, a.nq), *fdk = fcopy(dk, a.nk), *fdv = fcopy(dv, a.nv);
    cdl_attention_f32(&g, fq, fk, fv, fy, fl, fs);
    tu_close_f("attention f32 y", fy, ry, a.ny, 1e-5);
    cdl_attention_bwd_f32(&g, fg, fq, fk, fv, fy, fl, fdq, fdk, fdv, fs);
    tu_close_f("attention f32 dq", fdq, rq, a.nq, 1e-4);
    tu_close_f("attention f32 dk", fdk, rk, a.nk, 1e-4);
    tu_close_f("attention f32 dv", fdv, rv, a.nv, 1e-4);
    free(fq); free(fk); free(fv); free(fy); free(fl); free(fs); free(fg); free(fdq); free(fdk); free(fdv);
    free(ry); free(rl); free(rq); free(rk); free(rv); free(dq); free(dk); free(dv);
    at_free(&a);
}

static void test_attention_small(void **st) {
    (void)st;
    for (int causal = 0; causal < 2; causal++) {
        at_case((cdl_attn_geom){.bh = 3, .tq = 5, .tk = 5, .d = 4, .dv = 4, .causal = causal}, 1);
        at_case((cdl_attn_geom){.bh = 2, .tq = 4, .tk = 7, .d = 3, .dv = 5, .causal = causal, .scale = 0.7}, 1);
        at_case((cdl_attn_geom){.bh = 1, .tq = 6, .tk = 3, .d = 2, .dv = 2, .causal = causal}, 1);
    }
}

/* Lengths across block edges (64 query rows, 128 keys in the backward, 256 in the
 * forward): several query blocks and key chunks, causal chunks skipped and partly masked. */
static void test_attention_blocks(void **st) {
    (void)st;
    for (int causal = 0; causal < 2; causal++) {
        at_case((cdl_attn_geom){.bh = 2, .tq = 130, .tk = 130, .d = 8, .dv = 8, .causal = causal}, 0);
        at_case((cdl_attn_geom){.bh = 1, .tq = 70, .tk = 150, .d = 5, .dv = 3, .causal = causal}, 0);
    }
    /* finite differences through a block edge on a small head */
    at_case((cdl_attn_geom){.bh = 1, .tq = 66, .tk = 67, .d = 1, .dv = 1, .causal = 1}, 1);
}

/* One pool thread or two: the same bits (each slice is computed the same way on any
 * thread), forward and backward. */
static void test_attention_threads(void **st) {
    (void)st;
    cdl_attn_geom g = {.bh = 8, .tq = 40, .tk = 40, .d = 16, .dv = 16, .causal = 1};
    AT a;
    at_setup(&a, g);
    double *y1 = dvec(a.ny), *l1 = dvec(g.bh * g.tq), *q1 = dvec(a.nq), *k1 = dvec(a.nk), *v1 = dvec(a.nv);
    double *q2 = dvec(a.nq), *k2 = dvec(a.nk), *v2 = dvec(a.nv);
    cdl_parallel_set_threads(1);
    cdl_attention_f64(&g, a.q, a.k, a.v, y1, l1, a.scratch);
    cdl_attention_bwd_f64(&g, a.R, a.q, a.k, a.v, y1, l1, q1, k1, v1, a.scratch);
    cdl_parallel_set_threads(2);
    assert_int_equal(cdl_parallel_threads(), 2);
    cdl_attention_f64(&g, a.q, a.k, a.v, a.y, a.lse, a.scratch);
    cdl_attention_bwd_f64(&g, a.R, a.q, a.k, a.v, a.y, a.lse, q2, k2, v2, a.scratch);
    cdl_parallel_set_threads(1);
    assert_memory_equal(a.y, y1, sizeof(double) * (size_t)a.ny);
    assert_memory_equal(a.lse, l1, sizeof(double) * (size_t)(g.bh * g.tq));
    assert_memory_equal(q1, q2, sizeof(double) * (size_t)a.nq);
    assert_memory_equal(k1, k2, sizeof(double) * (size_t)a.nk);
    assert_memory_equal(v1, v2, sizeof(double) * (size_t)a.nv);
    free(y1); free(l1); free(q1); free(k1); free(v1); free(q2); free(k2); free(v2);
    at_free(&a);
}

/* Whether a call at two pool threads used the second scratch slot (task 1's, whichever
 * thread runs it): the slot is filled with a sentinel first. */
static int at_used_slot1_f64(cdl_attn_geom g) {
    AT a;
    at_setup(&a, g);
    const int64_t slot = cdl_attention_scratch(&g) / CDL_ATTN_THREADS;
    for (int64_t i = slot; i < 2 * slot; i++) a.scratch[i] = 12345.0;
    cdl_parallel_set_threads(2);
    cdl_attention_f64(&g, a.q, a.k, a.v, a.y, a.lse, a.scratch);
    cdl_parallel_set_threads(1);
    int used = 0;
    for (int64_t i = slot; i < 2 * slot; i++) used |= a.scratch[i] != 12345.0;
    at_free(&a);
    return used;
}

static int at_used_slot1_f32(cdl_attn_geom g) {
    const int64_t nq = g.bh * g.tq * g.d, nk = g.bh * g.tk * g.d, nv = g.bh * g.tk * g.dv;
    const int64_t slot = cdl_attention_scratch(&g) / CDL_ATTN_THREADS;
    float *q = calloc((size_t)nq, sizeof(float)), *k = calloc((size_t)nk, sizeof(float));
    float *v = calloc((size_t)nv, sizeof(float)), *y = calloc((size_t)(g.bh * g.tq * g.dv), sizeof(float));
    float *lse = calloc((size_t)(g.bh * g.tq), sizeof(float)), *scratch = calloc((size_t)(2 * slot), sizeof(float));
    for (int64_t i = slot; i < 2 * slot; i++) scratch[i] = 12345.0f;
    cdl_parallel_set_threads(2);
    cdl_attention_f32(&g, q, k, v, y, lse, scratch);
    cdl_parallel_set_threads(1);
    int used = 0;
    for (int64_t i = slot; i < 2 * slot; i++) used |= scratch[i] != 12345.0f;
    free(q); free(k); free(v); free(y); free(lse); free(scratch);
    return used;
}

/* The transformer's attention (64 images x 4 heads of 29 tokens, head size 16): its
 * 29x29x16 block products are tiny, so where OpenBLAS serves them (f64 always; f32
 * unless oneDNN does) the call stays on one thread, two threads calling OpenBLAS at
 * once being slower than one (kernels_attn.c, ATTN_BLAS_TINY_MACS); oneDNN takes them
 * (over CDL_DNNL_MIN_MACS) and the call uses both threads.  Blocks of 40x40x16 are
 * over the limit and use both threads on any backend. */
static void test_attention_tiny_blocks_one_thread(void **st) {
    (void)st;
    const cdl_attn_geom tiny = {.bh = 256, .tq = 29, .tk = 29, .d = 16, .dv = 16};
    const cdl_attn_geom wider = {.bh = 8, .tq = 40, .tk = 40, .d = 16, .dv = 16};
    assert_false(at_used_slot1_f64(tiny));
    assert_true(at_used_slot1_f64(wider));
    assert_int_equal(at_used_slot1_f32(tiny), !strcmp(cdl_backend(), "onednn"));
    assert_true(at_used_slot1_f32(wider));
}

/* Large scores: the online softmax must not overflow where exp(score) would. */
static void test_attention_large_scores(void **st) {
    (void)st;
    cdl_attn_geom g = {.bh = 1, .tq = 3, .tk = 80, .d = 2, .dv = 2, .scale = 400};
    AT a;
    at_setup(&a, g);
    double *ry = dvec(a.ny), *rl = dvec(g.tq);
    at_ref(&a, NULL, ry, rl, NULL, NULL, NULL);
    at_loss(&a);
    for (int64_t i = 0; i < a.ny; i++) assert_true(isfinite(a.y[i]));
    tu_close("attention y", a.y, ry, a.ny, 1e-12);
    tu_close("attention lse", a.lse, rl, g.tq, 1e-12);
    free(ry); free(rl);
    at_free(&a);
}

/* The forward's key chunks (256 keys) with the online softmax's rescaling across them
 * at large scores, and the backward overwriting dq, dk, dv (NaN before the call) where
 * it no longer zeroes them first: rows of every query block, a key chunk (128) that
 * straddles the keys earlier query blocks reached (causal: keys 0-63 hold sums, 64-127
 * are new), and (causal, tk > tq) keys no query sees. */
static void test_attention_chunks_overwrite(void **st) {
    (void)st;
    for (int causal = 0; causal < 2; causal++) {
        cdl_attn_geom g = {.bh = 2, .tq = 140, .tk = 300, .d = 3, .dv = 2, .causal = causal, .scale = 300};
        AT a;
        at_setup(&a, g);
        double *ry = dvec(a.ny), *rl = dvec(g.bh * g.tq), *rq = dvec(a.nq), *rk = dvec(a.nk), *rv = dvec(a.nv);
        double *dq = dvec(a.nq), *dk = dvec(a.nk), *dv = dvec(a.nv);
        at_ref(&a, a.R, ry, rl, rq, rk, rv);
        at_loss(&a);
        for (int64_t i = 0; i < a.ny; i++) assert_true(isfinite(a.y[i]));
        tu_close("attention y", a.y, ry, a.ny, 1e-12);
        tu_close("attention lse", a.lse, rl, g.bh * g.tq, 1e-12);
        for (int64_t i = 0; i < a.nq; i++) dq[i] = NAN;
        for (int64_t i = 0; i < a.nk; i++) dk[i] = NAN;
        for (int64_t i = 0; i < a.nv; i++) dv[i] = NAN;
        cdl_attention_bwd_f64(&g, a.R, a.q, a.k, a.v, a.y, a.lse, dq, dk, dv, a.scratch);
        tu_close("attention dq", dq, rq, a.nq, 1e-9);
        tu_close("attention dk", dk, rk, a.nk, 1e-9);
        tu_close("attention dv", dv, rv, a.nv, 1e-11);
        if (causal)
            for (int64_t i = g.tq * g.d; i < g.tk * g.d; i++) assert_true(dk[i] == 0);
        /* f32 (dnnl_sgemm on the oneDNN build): beta 0 must not read the NaNs either */
        float *fq = fcopy(a.q, a.nq), *fk = fcopy(a.k, a.nk), *fv = fcopy(a.v, a.nv), *fy = fcopy(a.y, a.ny);
        float *fl = fcopy(a.lse, g.bh * g.tq), *fg = fcopy(a.R, a.ny);
        float *fs = fcopy(a.scratch, cdl_attention_scratch(&g));
        float *fdq = fcopy(dq, a.nq), *fdk = fcopy(dk, a.nk), *fdv = fcopy(dv, a.nv);
        for (int64_t i = 0; i < a.nq; i++) fdq[i] = NAN;
        for (int64_t i = 0; i < a.nk; i++) fdk[i] = NAN;
        for (int64_t i = 0; i < a.nv; i++) fdv[i] = NAN;
        cdl_attention_f32(&g, fq, fk, fv, fy, fl, fs);
        cdl_attention_bwd_f32(&g, fg, fq, fk, fv, fy, fl, fdq, fdk, fdv, fs);
        for (int64_t i = 0; i < a.nq; i++) assert_true(isfinite(fdq[i]));
        for (int64_t i = 0; i < a.nk; i++) assert_true(isfinite(fdk[i]));
        tu_close_f("attention f32 dv", fdv, rv, a.nv, 1e-4);
        free(fq); free(fk); free(fv); free(fy); free(fl); free(fs); free(fg); free(fdq); free(fdk); free(fdv);
        free(ry); free(rl); free(rq); free(rk); free(rv); free(dq); free(dk); free(dv);
        at_free(&a);
    }
}

/* [nb, nh, t, n] <-> [nb, t, nh, n]: to = 1 gathers dense slices into heads-last rows. */
static void at_perm(const double *src, double *dst, int64_t nb, int64_t nh, int64_t t, int64_t n, int to) {
    for (int64_t o = 0; o < nb; o++)
        for (int64_t h = 0; h < nh; h++)
            for (int64_t i = 0; i < t; i++)
                for (int64_t c = 0; c < n; c++) {
                    int64_t dense = ((o * nh + h) * t + i) * n + c, last = ((o * t + i) * nh + h) * n + c;
                    if (to) dst[last] = src[dense];
                    else dst[dense] = src[last];
                }
}

/* Heads last (g.nh > 0): q, k, v, y, dq, dk, dv in [B, T, H, d] give the dense
 * kernel's values on the same data in [B, H, T, d] (the same products on the same
 * rows: the same bits), with the key mask row b / heads and NaN in every output before
 * the call (the backward's straddling chunk and unseen keys are zeroed row by row,
 * the other heads' columns of those rows left to their own slices). */
static void test_attention_heads_last(void **st) {
    (void)st;
    for (int causal = 0; causal < 2; causal++) {
        const int64_t B = 2, H = 3;
        cdl_attn_geom gd = {.bh = B * H, .tq = 70, .tk = 150, .d = 5, .dv = 3, .causal = causal, .scale = 0.9};
        double *km = dvec(B * gd.tk);
        for (int64_t i = 0; i < B * gd.tk; i++) km[i] = i % 7 == 3;
        gd.heads = H;
        gd.kmask = km;
        cdl_attn_geom gl = gd;
        gl.nh = H;
        AT a;
        at_setup(&a, gd);
        double *q = dvec(a.nq), *k = dvec(a.nk), *v = dvec(a.nv), *gy = dvec(a.ny), *y = dvec(a.ny);
        double *lse = dvec(B * H * gd.tq), *y1 = dvec(a.ny), *lse1 = dvec(B * H * gd.tq);
        at_perm(a.q, q, B, H, gd.tq, gd.d, 1);
        at_perm(a.k, k, B, H, gd.tk, gd.d, 1);
        at_perm(a.v, v, B, H, gd.tk, gd.dv, 1);
        at_perm(a.R, gy, B, H, gd.tq, gd.dv, 1);
        for (int64_t i = 0; i < a.ny; i++) y[i] = NAN;
        cdl_attention_f64(&gd, a.q, a.k, a.v, a.y, a.lse, a.scratch);
        cdl_attention_f64(&gl, q, k, v, y, lse, a.scratch);
        at_perm(y, y1, B, H, gd.tq, gd.dv, 0);
        assert_memory_equal(y1, a.y, sizeof(double) * (size_t)a.ny);
        assert_memory_equal(lse, a.lse, sizeof(double) * (size_t)(B * H * gd.tq));
        double *dq = dvec(a.nq), *dk = dvec(a.nk), *dv = dvec(a.nv), *lq = dvec(a.nq), *lk = dvec(a.nk);
        double *lv = dvec(a.nv), *t = dvec(a.nv > a.nk ? (a.nv > a.nq ? a.nv : a.nq) : (a.nk > a.nq ? a.nk : a.nq));
        cdl_attention_bwd_f64(&gd, a.R, a.q, a.k, a.v, a.y, a.lse, dq, dk, dv, a.scratch);
        for (int64_t i = 0; i < a.nq; i++) lq[i] = NAN;
        for (int64_t i = 0; i < a.nk; i++) lk[i] = NAN;
        for (int64_t i = 0; i < a.nv; i++) lv[i] = NAN;
        cdl_attention_bwd_f64(&gl, gy, q, k, v, y, lse, lq, lk, lv, a.scratch);
        at_perm(lq, t, B, H, gd.tq, gd.d, 0);
        assert_memory_equal(t, dq, sizeof(double) * (size_t)a.nq);
        at_perm(lk, t, B, H, gd.tk, gd.d, 0);
        assert_memory_equal(t, dk, sizeof(double) * (size_t)a.nk);
        at_perm(lv, t, B, H, gd.tk, gd.dv, 0);
        assert_memory_equal(t, dv, sizeof(double) * (size_t)a.nv);
        /* and the dense kernel against the composed version with this mask's keys dropped
         * is test_attention_*'s: here the layouts must agree, and be finite */
        for (int64_t i = 0; i < a.nk; i++) assert_true(isfinite(lk[i]));
        free(q); free(k); free(v); free(gy); free(y); free(lse); free(y1); free(lse1); free(km);
        free(dq); free(dk); free(dv); free(lq); free(lk); free(lv); free(t);
        at_free(&a);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_batched),    cmocka_unit_test(test_matmul_broadcast),
        cmocka_unit_test(test_gemm_batch_paths),  cmocka_unit_test(test_attention_small),
        cmocka_unit_test(test_attention_blocks),  cmocka_unit_test(test_attention_threads),
        cmocka_unit_test(test_attention_large_scores), cmocka_unit_test(test_attention_chunks_overwrite),
        cmocka_unit_test(test_attention_heads_last), cmocka_unit_test(test_attention_tiny_blocks_one_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
