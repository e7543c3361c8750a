/* ops_attn.c -- batched matrix products (a @ b on rank >= 3, torch.matmul's
 * broadcasting) and fused scaled dot-product attention.  Per op: shape rule, gradient
 * rule, emitter and tape call side by side; the table at the end registers them.
 * Kernels: runtime/kernels_attn_t.h (cdl.h block ATTN); tape: runtime/tape_attn.c.
 *
 *   BMM            (a, b): ia0 / ia1 transpose the last two axes of a / b
 *   ATTENTION      (q, k, v, key mask?): ia0 causal, fa0 scale (0: 1 / sqrt(d)), ia1 heads
 *                  last (q [..., T, H, d], no copy to [..., H, T, d] and back); aux = lse,
 *                  scratch.  The key mask [q's dim 0, Tk] (torch's key_padding_mask:
 *                  nonzero = ignore that key) gets no gradient (it is piecewise constant)
 *   ATTENTION_BWD  (g, q, k, v, attention node, key mask?) -> packed [dq | dk | dv]; aux = scratch
 */
#include "cdlc.h"
#include "cdl.h" /* the attention kernels' scratch rule */

#include <string.h>

static const Node *in_node(const Graph *g, const Node *n, int k) { return &g->n[n->in[k]]; }

/* ======================================================================== bmm */

/* Is node t a transpose that swaps only the last two axes? */
static bool at_swaps_last_two(const Node *t) {
    int r = t->shape.rank;
    if (t->op != OP_TRANSPOSE || r < 2) return false;
    for (int i = 0; i < r - 2; i++)
        if (t->ia[i] != i) return false;
    return t->ia[r - 2] == r - 1 && t->ia[r - 1] == r - 2;
}

/* q @ transpose(k, [0, 1, 3, 2]) reads k with the GEMM's transpose flag instead of a
 * copy: such operands are rewired to the transpose's input.  Idempotent. */
static void bmm_fold_transposes(Graph *g, Node *n) {
    for (int k = 0; k < 2; k++)
        while (at_swaps_last_two(&g->n[n->in[k]])) {
            n->in[k] = g->n[n->in[k]].in[0];
            n->ia[k] = !n->ia[k];
        }
}

/* torch.matmul's result shape for op(a) @ op(b), operands of rank >= 2: the last two
 * axes multiply as matrices (op(a) [M, K] @ op(b) [K, N]), the leading ones broadcast
 * (numpy rules, aligned at the right).  A batched operand must have the result's rank
 * and at least 3 axes (its batch axis stays the result's first, never a matrix axis);
 * an unbatched one may meet the batch axis only with size 1.  false after a
 * diagnostic at n (*full is then the empty shape: written on every path). */
static bool bmm_full(const Graph *g, const Node *n, Shape *full) {
    const Shape *a = &in_node(g, n, 0)->shape, *b = &in_node(g, n, 1)->shape;
    *full = (Shape){0};
    int ta = (int)n->ia[0], tb = (int)n->ia[1], ra = a->rank, rb = b->rank;
    if (ra < 2 || rb < 2) {
        return shape_error(n, "matmul: operands must have at least 2 axes, got %s @ %s", shape_str(a), shape_str(b));
    }
    int64_t M = a->d[ra - 2 + ta], K = a->d[ra - 1 - ta], Kb = b->d[rb - 2 + tb], N = b->d[rb - 1 - tb];
    if (K != Kb) {
        return shape_error(n, "matmul: inner dimensions differ: %s%s @ %s%s", shape_str(a), ta ? "^T" : "", shape_str(b),
                           tb ? "^T" : "");
    }
    int nb = (ra > rb ? ra : rb) - 2;
    int64_t d[MAXDIM];
    for (int i = 0; i < nb; i++) {
        int ja = i - (nb - (ra - 2)), jb = i - (nb - (rb - 2));
        int64_t da = ja >= 0 ? a->d[ja] : 1, db = jb >= 0 ? b->d[jb] : 1;
        if (da != db && da != 1 && db != 1) {
            return shape_error(n, "matmul: batch dimensions do not broadcast: %s @ %s (axis %d: %lld and %lld)", shape_str(a),
                               shape_str(b), i, (long long)da, (long long)db);
        }
        d[i] = da != 1 ? da : db;
    }
    d[nb] = M;
    d[nb + 1] = N;
    bool batched = a->batched || b->batched;
    for (int k = 0; k < 2 && batched; k++) {
        const Shape *s = k ? b : a;
        int j = -(nb + 2 - s->rank);       /* s's axis under result axis 0 */
        if (s->batched ? s->rank != nb + 2 || s->rank < 3 : j >= 0 && s->d[j] != 1) {
            return shape_error(n, "matmul: the batch axis must stay the first axis of the result: %s @ %s", shape_str(a),
                               shape_str(b));
        }
    }
    *full = shape_make(nb + 2, d, batched);
    return true;
}

/* Can the products of shape full be summed into shape t (t's axes aligned at the right,
 * each batch dim equal or 1, the matrix dims equal)? */
static bool bmm_sums_into(const Shape *full, const Shape *t) {
    if (t->rank < 2 || t->rank > full->rank) return false;
    if (t->batched && (!full->batched || t->rank != full->rank)) return false;
    for (int i = 1; i <= t->rank; i++) {
        int64_t dt = t->d[t->rank - i], df = full->d[full->rank - i];
        if (dt != df && (i <= 2 || dt != 1)) return false;
    }
    return true;
}

/* ia2 = 0: the result is torch.matmul's (bmm_full).  ia2 = 1 (gradients only): the
 * node's shape, given by its maker, is an operand's, and the products that land on one
 * of its matrices sum there (the adjoint of the operand's broadcast), in the kernel. */
static bool shape_bmm(Graph *g, Node *n) {
    if (!shape_require_real(g, n, 0) || !shape_require_real(g, n, 1)) return false;
    n->ia[0] = n->ia[0] != 0;
    n->ia[1] = n->ia[1] != 0;
    bmm_fold_transposes(g, n);
    Shape full;
    if (!bmm_full(g, n, &full)) return false;
    if (n->ia[2] && !bmm_sums_into(&full, &n->shape))
        die("bmm: products %s do not sum into %s", shape_str(&full), shape_str(&n->shape));
    if (!n->ia[2]) n->shape = full;
    n->dtype = DT_REAL;
    return true;
}

/* C = op(A) op(B): the rules of grad_matmul (ops_dense.c), each product a bmm that sums
 * straight into its operand's shape (ia2 = 1), as the tape's backward does. */
static void grad_bmm(AD *ad, int n, int gy) {
    const Node *x = &ad_src(ad)->n[n];
    int ta = (int)x->ia[0], tb = (int)x->ia[1];
    int A = ad_x(ad, x->in[0]), B = ad_x(ad, x->in[1]);
    Shape sa = ad_src(ad)->n[x->in[0]].shape, sb = ad_src(ad)->n[x->in[1]].shape;
    int da_in[2] = {gy, B}, db_in[2] = {A, gy};
    Attrs da = {.i = {0, !tb, 1}}, db = {.i = {!ta, 0, 1}};
    if (ta) { /* dA = op(B) G^T */
        da_in[0] = B;
        da_in[1] = gy;
        da = (Attrs){.i = {tb, 1, 1}};
    }
    if (tb) { /* dB = G^T op(A) */
        db_in[0] = gy;
        db_in[1] = A;
        db = (Attrs){.i = {1, ta, 1}};
    }
    ad_acc(ad, x->in[0], ad_add(ad, n, OP_BMM, 2, da_in, &da, &sa));
    ad_acc(ad, x->in[1], ad_add(ad, n, OP_BMM, 2, db_in, &db, &sb));
}

/* Runtime size of axis i of shape s (dim 0 of a batched shape scales with nb). */
static const char *bmm_dim(Emit *e, const Shape *s, int i) {
    if (i > 0 || !s->batched) return cc_str("%lld", (long long)s->d[i]);
    int64_t k = s->d[0] / e_batch(e);
    return k == 1 ? e_nb(e) : cc_str("%s*%lld", e_nb(e), (long long)k);
}

/* The element stride of operand s per batch axis of the result out (0 where s
 * broadcasts, or sums), as a C array literal. */
static const char *bmm_strides(const Shape *s, const Shape *out) {
    int nb = out->rank - 2, off = nb - (s->rank - 2);
    const char *v[MAXDIM];
    int64_t st = s->d[s->rank - 2] * s->d[s->rank - 1], step[MAXDIM];
    for (int j = s->rank - 3; j >= 0; j--) {
        step[j] = st;
        st *= s->d[j];
    }
    for (int i = 0; i < nb; i++) {
        int j = i - off;
        v[i] = j < 0 || (s->d[j] == 1 && out->d[i] != 1) ? "0" : cc_str("%lld", (long long)step[j]);
    }
    return cc_str("(const int64_t[]){%s}", e_join(nb, v, ", "));
}

static void emit_bmm(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    const Shape *a = &g->n[x->in[0]].shape, *b = &g->n[x->in[1]].shape;
    Shape o;
    if (!bmm_full(g, x, &o)) die("bmm: shape rule fails at emission");
    int ta = (int)x->ia[0], tb = (int)x->ia[1], nb = o.rank - 2;
    const char *bd = "NULL", *sa = "NULL", *sb = "NULL", *sc = "NULL";
    if (nb > 0) {
        const char *v[MAXDIM];
        for (int i = 0; i < nb; i++) v[i] = bmm_dim(e, &o, i);
        bd = cc_str("(const int64_t[]){%s}", e_join(nb, v, ", "));
        sa = bmm_strides(a, &o);
        sb = bmm_strides(b, &o);
        sc = bmm_strides(&x->shape, &o);
    }
    e_line(e, "%s(%d, %s, %s, %s, %s, %d, %d, %lld, %lld, %lld, %s, %s, %s);", e_fn(e, "matmul_bc"), nb, bd, sa, sb, sc,
           ta, tb, (long long)o.d[nb], (long long)o.d[nb + 1], (long long)a->d[a->rank - 1 - ta], e_ptr(e, x->in[0]),
           e_ptr(e, x->in[1]), e_ptr(e, n));
}

static const char *tape_bmm(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    return cc_str("cdl_t_bmm(tp, %s, %s, %d, %d)", e_ptr(e, x->in[0]), e_ptr(e, x->in[1]), (int)x->ia[0], (int)x->ia[1]);
}

/* ======================================================================== attention */

/* The sequence axis of an attention operand of rank r: -2, or -3 with the heads last. */
static int attn_taxis(int r, int64_t heads_last) { return heads_last ? r - 3 : r - 2; }

/* q [..., Tq, d], k [..., Tk, d], v [..., Tk, dv] with the same leading axes (at least
 * one: [B, H, T, d] in a transformer); the result is [..., Tq, dv].  Heads last (ia1):
 * q [..., Tq, H, d], k [..., Tk, H, d], v [..., Tk, H, dv] -> [..., Tq, H, dv]. */
static bool shape_attention(Graph *g, Node *n) {
    for (int k = 0; k < 3; k++)
        if (!shape_require_real(g, n, k)) return false;
    const Shape *q = &in_node(g, n, 0)->shape, *k = &in_node(g, n, 1)->shape, *v = &in_node(g, n, 2)->shape;
    int r = q->rank, hl = n->ia[1] != 0, t = attn_taxis(r, hl);
    const char *form = hl ? "[..., T, H, d]" : "[..., T, d]";
    n->ia[1] = hl;
    bool lead = k->rank == r && v->rank == r && t >= 0 && q->batched == k->batched && q->batched == v->batched;
    for (int i = 0; lead && i < r - 1; i++) lead = i == t || (k->d[i] == q->d[i] && v->d[i] == q->d[i]);
    if (!lead) {
        return shape_error(n, "attention: q %s, k %s and v %s must share their leading axes (%s)", shape_str(q),
                           shape_str(k), shape_str(v), form);
    }
    if (q->batched && t < 1) {
        return shape_error(n, "attention: the batch axis cannot be the sequence axis: q %s%s", shape_str(q),
                           hl ? " (heads last: [..., T, H, d])" : "");
    }
    if (k->d[r - 1] != q->d[r - 1]) {
        return shape_error(n, "attention: q %s and k %s need the same head size (last axis)", shape_str(q), shape_str(k));
    }
    if (v->d[t] != k->d[t]) {
        return shape_error(n, "attention: k %s and v %s need the same length (axis %d)", shape_str(k), shape_str(v),
                           t - r);
    }
    if (n->nin == 4) {
        const Shape *m = &in_node(g, n, 3)->shape;
        if (!shape_require_real(g, n, 3)) return false;
        if (t < 1) {
            return shape_error(n, "attention: key_padding_mask needs q with a leading (batch) axis, [B, %s; "
                               "got q %s", form + 1, shape_str(q));
        }
        if (m->rank != 2 || m->d[0] != q->d[0] || m->d[1] != k->d[t] || m->batched != q->batched) {
            return shape_error(n, "attention: key_padding_mask %s must be [%lld, %lld] (q's first axis, the keys' "
                               "length)%s for q %s", shape_str(m), (long long)q->d[0], (long long)k->d[t],
                               q->batched ? ", batched" : "", shape_str(q));
        }
    }
    int64_t d[MAXDIM];
    memcpy(d, q->d, sizeof d);
    d[r - 1] = v->d[r - 1];
    return shape_real(n, shape_make(r, d, q->batched));
}

/* The kernel geometry as a C compound literal, for q node qn, k node kn, output (or
 * v) last axis dv, causal, scale, heads last and key mask node mn (-1: none); bh (the
 * slices) at the runtime batch: the product of q's axes but the sequence and the last;
 * heads (slices per key mask row): bh over the first axis. */
static const char *attn_geom(Emit *e, const Graph *g, int qn, int kn, int64_t dv, int64_t causal, double scale,
                             int64_t hl, int mn) {
    const Shape *q = &g->n[qn].shape, *k = &g->n[kn].shape;
    int r = q->rank, t = attn_taxis(r, hl);
    const char *bh = "1", *km = "", *nh = hl ? cc_str(", .nh = %lld", (long long)q->d[r - 2]) : "";
    for (int i = 0; i < r - 1; i++)
        if (i != t) bh = cc_str("%s * %s", bh, e_dim(e, qn, i));
    if (mn >= 0) {
        int64_t heads = 1;
        for (int i = 1; i < r - 1; i++)
            if (i != t) heads *= q->d[i];
        km = cc_str(", .heads = %lld, .kmask = %s", (long long)heads, e_ptr(e, mn));
    }
    return cc_str("&(cdl_attn_geom){.bh = %s, .tq = %lld, .tk = %lld, .d = %lld, .dv = %lld, .causal = %d, .scale = "
                  "%s%s%s}", bh, (long long)q->d[t], (long long)k->d[t], (long long)q->d[r - 1], (long long)dv,
                  (int)causal, e_lit(scale), km, nh);
}

/* bh * Tq at the compiled batch. */
static int64_t attn_rows(const Graph *g, const Node *x) {
    const Shape *q = &g->n[x->in[0]].shape;
    return shape_numel(q) / q->d[q->rank - 1];
}

/* The kernels' scratch for query shape q (heads last: hl). */
static int64_t attn_scratch(const Shape *q, int64_t hl) {
    cdl_attn_geom geo = {.tq = q->d[attn_taxis(q->rank, hl)]};
    return cdl_attention_scratch(&geo);
}

/* aux: the log-sum-exp of every query row (what the backward keeps: O(B H T)), then
 * the kernel's short-lived scratch. */
static int64_t aux_attention(const Graph *g, const Node *n) {
    return attn_rows(g, n) + attn_scratch(&in_node(g, n, 0)->shape, n->ia[1]);
}

static void emit_attention(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    e_line(e, "%s(%s, %s, %s, %s, %s, %s, %s);", e_fn(e, "attention"),
           attn_geom(e, g, x->in[0], x->in[1], x->shape.d[x->shape.rank - 1], x->ia[0], x->fa[0], x->ia[1],
                     x->nin > 3 ? x->in[3] : -1), e_ptr(e, x->in[0]),
           e_ptr(e, x->in[1]), e_ptr(e, x->in[2]), e_ptr(e, n), e_aux(e, n), e_aux_at(e, n, attn_rows(g, x)));
}

/* ATTENTION_BWD makes the packed [dq | dk | dv] (parts at the compiled batch's
 * offsets); three views unpack it.  It carries causal and scale itself, so that it
 * needs nothing but the forward's output and aux (a LOOP_SAVED in a loop body). */
static void grad_attention(AD *ad, int n, int gy) {
    const Node y = ad_src(ad)->n[n];
    Shape qs = ad_src(ad)->n[y.in[0]].shape, ks = ad_src(ad)->n[y.in[1]].shape, vs = ad_src(ad)->n[y.in[2]].shape;
    int in[6] = {gy, ad_x(ad, y.in[0]), ad_x(ad, y.in[1]), ad_x(ad, y.in[2]), ad_x(ad, n),
                 y.nin > 3 ? ad_x(ad, y.in[3]) : -1};
    Attrs at = {.i = {y.ia[0], y.ia[1]}, .f = {y.fa[0]}};
    int bwd = ad_add(ad, n, OP_ATTENTION_BWD, y.nin > 3 ? 6 : 5, in, &at, NULL);
    Attrs a0 = {.i = {0}}, a1 = {.i = {shape_numel(&qs)}}, a2 = {.i = {shape_numel(&qs) + shape_numel(&ks)}};
    ad_acc(ad, y.in[0], ad_add(ad, n, OP_VIEW, 1, &bwd, &a0, &qs));
    ad_acc(ad, y.in[1], ad_add(ad, n, OP_VIEW, 1, &bwd, &a1, &ks));
    ad_acc(ad, y.in[2], ad_add(ad, n, OP_VIEW, 1, &bwd, &a2, &vs));
}

/* (g, q, k, v, attention node, key mask?) -> [numel q + numel k + numel v], not batched. */
static bool shape_attention_bwd(Graph *g, Node *n) {
    const Node *f = in_node(g, n, 4);
    if (f->op != OP_ATTENTION && f->op != OP_LOOP_SAVED) die("attention_bwd: input 5 must be the attention node");
    if (!shape_eq(&in_node(g, n, 0)->shape, &f->shape)) {
        return shape_error(n, "attention_bwd: gradient %s, attention output %s", shape_str(&in_node(g, n, 0)->shape),
                           shape_str(&f->shape));
    }
    int64_t total = 0;
    for (int k = 1; k < 4; k++) total += shape_numel(&in_node(g, n, k)->shape);
    return shape_real(n, (Shape){.rank = 1, .d = {total}});
}

static int64_t aux_attention_bwd(const Graph *g, const Node *n) { return attn_scratch(&in_node(g, n, 1)->shape, n->ia[1]); }

static void emit_attention_bwd(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    int64_t nq = shape_numel(&in_node(g, x, 1)->shape), nk = shape_numel(&in_node(g, x, 2)->shape);
    const Shape *v = &in_node(g, x, 3)->shape;
    int f = x->in[4];
    e_line(e, "%s(%s, %s, %s, %s, %s, %s, %s, %s, %s + %lld, %s + %lld, %s);", e_fn(e, "attention_bwd"),
           attn_geom(e, g, x->in[1], x->in[2], v->d[v->rank - 1], x->ia[0], x->fa[0], x->ia[1],
                     x->nin > 5 ? x->in[5] : -1),
           e_ptr(e, x->in[0]),
           e_ptr(e, x->in[1]), e_ptr(e, x->in[2]), e_ptr(e, x->in[3]), e_ptr(e, f), e_aux(e, f), e_ptr(e, n),
           e_ptr(e, n), (long long)nq, e_ptr(e, n), (long long)(nq + nk), e_aux(e, n));
}

static const char *tape_attention(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    const char *m = x->nin > 3 ? e_ptr(e, x->in[3]) : "NULL";
    if (x->ia[1])
        return cc_str("cdl_t_attention_heads_last(tp, %s, %s, %s, %s, %d, %s)", e_ptr(e, x->in[0]), e_ptr(e, x->in[1]),
                      e_ptr(e, x->in[2]), m, (int)x->ia[0], e_lit(x->fa[0]));
    return cc_str("cdl_t_attention(tp, %s, %s, %s, %s, %d, %s)", e_ptr(e, x->in[0]), e_ptr(e, x->in[1]),
                  e_ptr(e, x->in[2]), m, (int)x->ia[0], e_lit(x->fa[0]));
}

/* The tape keeps the log-sum-exp; its forward and backward take the kernel's scratch. */
static void tape_scratch_attention(const Graph *g, const Node *n, int real_size, int64_t *keep, int64_t *tmp) {
    *keep = attn_rows(g, n) * real_size;
    *tmp = attn_scratch(&in_node(g, n, 0)->shape, n->ia[1]) * real_size;
}

const OpRule ops_attn_rules[] = {
    {OP_BMM, shape_bmm, grad_bmm, emit_bmm, NULL, .tape = tape_bmm},
    {OP_ATTENTION, shape_attention, grad_attention, emit_attention, aux_attention, .tape = tape_attention,
     .tape_scratch = tape_scratch_attention},
    {OP_ATTENTION_BWD, shape_attention_bwd, NULL, emit_attention_bwd, aux_attention_bwd, .tape = NULL},
};
const int ops_attn_count = sizeof ops_attn_rules / sizeof ops_attn_rules[0];
