/* ops_rnn.c -- the fused pointwise parts of recurrent cells (LSTM_ACT, GRU_ACT) with
 * their backward helpers, and VIEW / VIEW_BWD, which unpack the cells' (and batch
 * norm's) packed multi-part results.  The cells' matrix products are ordinary LINEAR
 * ops built by the front end.  Kernels: runtime/kernels_rnn_t.h (cdl.h block RNN).
 *
 * Packed results: part k starts at an element offset counted with the COMPILED batch
 * B (c' of LSTM_ACT at B*H); inside a part, rows are runtime rows (nb <= B).
 *   LSTM_ACT      (gates[B,4H] (i,f,g,o), c[B,H]) -> [2, B, H] = (h', c')
 *   LSTM_ACT_BWD  (dh'[B,H], dc'[B,H], c, lstm node) -> [dgates B*4H | dc B*H]
 *   GRU_ACT       (gi[B,3H], gh[B,3H] (r,z,n; gh includes b_hn), h[B,H]) -> h'[B,H]
 *   GRU_ACT_BWD   (g, gh, h, gru node) -> [dgi B*3H | dgh B*3H | dh B*H]
 *   VIEW          input 0 at element offset ia0, the node's (hint) shape; no kernel
 *   VIEW_BWD      (g) -> zeros of the hint shape with g copied in at offset ia0
 *
 * Gradient rules copy the forward node before calling ad_add (the node array may move). */
#include "cdlc.h"

#include <string.h>

static const char *rn_name(const Node *n) { return op_info[n->op].name; }

static int64_t rn_numel(const Graph *g, int id) { return shape_numel(&g->n[id].shape); }

/* The input whose rows are the runtime batch: the first batched one (else input 0). */
static int rn_rows_input(const Graph *g, const Node *n, int count) {
    for (int k = 0; k < count; k++)
        if (g->n[n->in[k]].shape.batched) return n->in[k];
    return n->in[0];
}

/* Requires every listed input to be real and 2-D with the same number of rows and
 * cols[k] * H columns (H = columns of the last one); sets *rows, *hid. */
static bool rn_check(const Graph *g, Node *n, int count, const int *mult, const char *const *what, int64_t *rows,
                     int64_t *hid) {
    for (int k = 0; k < count; k++)
        if (!shape_require_real(g, n, k)) return false;
    const Shape *last = &g->n[n->in[count - 1]].shape;
    if (last->rank != 2) {
        return shape_error(n, "%s: %s must be 2-D [B, H], got %s", rn_name(n), what[count - 1], shape_str(last));
    }
    int64_t B = last->d[0], H = last->d[1];
    for (int k = 0; k < count - 1; k++) {
        const Shape *s = &g->n[n->in[k]].shape;
        if (s->rank != 2 || s->d[0] != B || s->d[1] != mult[k] * H) {
            return shape_error(n, "%s: %s must be [%lld, %lld] (%d x hidden %lld), got %s", rn_name(n), what[k],
                               (long long)B, (long long)(mult[k] * H), mult[k], (long long)H, shape_str(s));
        }
    }
    *rows = B;
    *hid = H;
    return true;
}

/* The gradient of each part of a packed result, from gy, the gradient of the whole:
 * gy is usually a sum of VIEW_BWD scatters of whole parts (each part used through its
 * view), and then part k's gradient is the sum of what was scattered at k * |part|, so
 * the backward never zero-fills and adds packed buffers (dead after this; DCE drops
 * them).  Parts nothing was scattered to are zeros.  Any other form of gy: views. */
static void rn_parts(AD *ad, int n, int gy, int nparts, const Shape *ps, int *part) {
    const Graph *d = ad_dst(ad);
    int64_t pn = shape_numel(ps);
    int *stack = NEWN(int, d->len + 1), *leaf = NEWN(int, d->len + 1), *leaf_part = NEWN(int, d->len + 1);
    int top = 0, nleaf = 0;
    bool ok = true;
    stack[top++] = gy;
    while (top > 0 && ok) {
        const Node *x = &d->n[stack[--top]];
        if (x->op == OP_ADD && x->nin == 2 && shape_eq(&d->n[x->in[0]].shape, &x->shape) &&
            shape_eq(&d->n[x->in[1]].shape, &x->shape) && top + 2 <= d->len) {
            stack[top++] = x->in[0];
            stack[top++] = x->in[1];
        } else if (x->op == OP_VIEW_BWD && x->ia[0] % pn == 0 && x->ia[0] / pn < nparts &&
                   shape_eq(&d->n[x->in[0]].shape, ps) && nleaf < d->len) {
            leaf[nleaf] = x->in[0];
            leaf_part[nleaf++] = (int)(x->ia[0] / pn);
        } else {
            ok = false;
        }
    }
    for (int k = 0; k < nparts; k++) {
        Shape h = *ps;
        part[k] = -1;
        if (!ok) {
            Attrs at = {.i = {k * pn}};
            part[k] = ad_add(ad, n, OP_VIEW, 1, &gy, &at, &h);
            continue;
        }
        for (int q = 0; q < nleaf; q++) {
            if (leaf_part[q] != k) continue;
            int in[2] = {part[k], leaf[q]};
            part[k] = part[k] < 0 ? leaf[q] : ad_add(ad, n, OP_ADD, 2, in, NULL, NULL);
        }
        if (part[k] < 0) part[k] = ad_zero_grad(ad, n, &h);
    }
}

/* A view of the packed result `packed` at `off` with shape s, accumulated into src input. */
static void rn_unpack(AD *ad, int n, int packed, int64_t off, const Shape *s, int src_in) {
    Attrs at = {.i = {off}};
    Shape h = *s;
    ad_acc(ad, src_in, ad_add(ad, n, OP_VIEW, 1, &packed, &at, &h));
}

/* ------------------------------------------------------------------ LSTM_ACT */

static bool shape_lstm_act(Graph *g, Node *n) {
    static const int mult[] = {4, 1};
    static const char *const what[] = {"gates", "c"};
    int64_t B, H;
    if (!rn_check(g, n, 2, mult, what, &B, &H)) return false;
    return shape_real(n, (Shape){.rank = 3, .d = {2, B, H}});
}

/* aux: activated gates [B, 4H], then tanh(c') [B, H] at offset B*4H. */
static int64_t aux_lstm_act(const Graph *g, const Node *n) { return 5 * rn_numel(g, n->in[1]); }

static void grad_lstm_act(AD *ad, int n, int gy) {
    const Node y = ad_src(ad)->n[n];
    const Shape gs = ad_src(ad)->n[y.in[0]].shape, cs = ad_src(ad)->n[y.in[1]].shape;
    int in[4];
    rn_parts(ad, n, gy, 2, &cs, in);
    in[2] = ad_x(ad, y.in[1]);
    in[3] = ad_x(ad, n);
    int bwd = ad_add(ad, n, OP_LSTM_ACT_BWD, 4, in, NULL, NULL);
    rn_unpack(ad, n, bwd, 0, &gs, y.in[0]);
    rn_unpack(ad, n, bwd, shape_numel(&gs), &cs, y.in[1]);
}

static void emit_lstm_act(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    const Shape *c = &g->n[y->in[1]].shape;
    e_line(e, "%s(%s, %lld, %lld, %s, %s, %s, %s);", e_fn(e, "lstm_act"), e_rows(e, rn_rows_input(g, y, 2)),
           (long long)c->d[1], (long long)c->d[0], e_ptr(e, y->in[0]), e_ptr(e, y->in[1]), e_ptr(e, n), e_aux(e, n));
}

/* (dh'[B, H], dc'[B, H], c[B, H], lstm node[2, B, H]) -> [5 B H] packed. */
static bool shape_lstm_act_bwd(Graph *g, Node *n) {
    const Shape *dh = &g->n[n->in[0]].shape, *dc = &g->n[n->in[1]].shape, *c = &g->n[n->in[2]].shape,
                *f = &g->n[n->in[3]].shape;
    if (c->rank != 2 || dh->rank != 2 || dh->d[0] != c->d[0] || dh->d[1] != c->d[1] || !shape_eq(dh, dc) ||
        f->rank != 3 || f->d[0] != 2 || f->d[1] != c->d[0] || f->d[2] != c->d[1]) {
        return shape_error(n, "lstm_act_bwd: gradients %s and %s, c %s, cell output %s", shape_str(dh), shape_str(dc),
                           shape_str(c), shape_str(f));
    }
    return shape_real(n, (Shape){.rank = 1, .d = {5 * shape_numel(c)}});
}

/* The cells' backward kernels: kernel(rows, H, compiled rows, in0, in1, in2, the aux of
 * the forward node in3, out), H and the compiled rows from input 2 ([B, H]). */
static void rn_emit_bwd(Emit *e, const Graph *g, int n, const char *kernel, int rows_of) {
    const Node *d = &g->n[n];
    const Shape *s = &g->n[d->in[2]].shape;
    e_line(e, "%s(%s, %lld, %lld, %s, %s, %s, %s, %s);", e_fn(e, kernel), e_rows(e, rows_of), (long long)s->d[1],
           (long long)s->d[0], e_ptr(e, d->in[0]), e_ptr(e, d->in[1]), e_ptr(e, d->in[2]), e_aux(e, d->in[3]),
           e_ptr(e, n));
}

static void emit_lstm_act_bwd(Emit *e, const Graph *g, int n) {
    rn_emit_bwd(e, g, n, "lstm_act_bwd", g->n[n].in[2]);
}

/* ------------------------------------------------------------------ GRU_ACT */

static bool shape_gru_act(Graph *g, Node *n) {
    static const int mult[] = {3, 3, 1};
    static const char *const what[] = {"gi", "gh", "h"};
    int64_t B, H;
    if (!rn_check(g, n, 3, mult, what, &B, &H)) return false;
    bool batched = false;
    for (int k = 0; k < 3; k++) batched = batched || g->n[n->in[k]].shape.batched;
    return shape_real(n, (Shape){.rank = 2, .batched = batched, .d = {B, H}});
}

/* aux: r, z, n per row: [B, 3H]. */
static int64_t aux_gru_act(const Graph *g, const Node *n) { return 3 * rn_numel(g, n->in[2]); }

static void grad_gru_act(AD *ad, int n, int gy) {
    const Node y = ad_src(ad)->n[n];
    const Graph *s = ad_src(ad);
    const Shape is = s->n[y.in[0]].shape, hs = s->n[y.in[1]].shape, ps = s->n[y.in[2]].shape;
    int in[4] = {gy, ad_x(ad, y.in[1]), ad_x(ad, y.in[2]), ad_x(ad, n)};
    int bwd = ad_add(ad, n, OP_GRU_ACT_BWD, 4, in, NULL, NULL);
    rn_unpack(ad, n, bwd, 0, &is, y.in[0]);
    rn_unpack(ad, n, bwd, shape_numel(&is), &hs, y.in[1]);
    rn_unpack(ad, n, bwd, 2 * shape_numel(&is), &ps, y.in[2]);
}

static void emit_gru_act(Emit *e, const Graph *g, int n) {
    const Node *y = &g->n[n];
    e_line(e, "%s(%s, %lld, %s, %s, %s, %s, %s);", e_fn(e, "gru_act"), e_rows(e, n), (long long)y->shape.d[1],
           e_ptr(e, y->in[0]), e_ptr(e, y->in[1]), e_ptr(e, y->in[2]), e_ptr(e, n), e_aux(e, n));
}

/* (g[B, H], gh[B, 3H], h[B, H], gru node[B, H]) -> [7 B H] packed. */
static bool shape_gru_act_bwd(Graph *g, Node *n) {
    const Shape *gs = &g->n[n->in[0]].shape, *hs = &g->n[n->in[1]].shape, *ps = &g->n[n->in[2]].shape,
                *fs = &g->n[n->in[3]].shape;
    if (!shape_eq(gs, ps) || !shape_eq(gs, fs) || gs->rank != 2 || hs->rank != 2 || hs->d[0] != gs->d[0] ||
        hs->d[1] != 3 * gs->d[1]) {
        return shape_error(n, "gru_act_bwd: gradient %s, gh %s, h %s, cell output %s", shape_str(gs), shape_str(hs),
                           shape_str(ps), shape_str(fs));
    }
    return shape_real(n, (Shape){.rank = 1, .d = {7 * shape_numel(gs)}});
}

static void emit_gru_act_bwd(Emit *e, const Graph *g, int n) {
    rn_emit_bwd(e, g, n, "gru_act_bwd", rn_rows_input(g, &g->n[n], 4));
}

/* ------------------------------------------------------------------ VIEW / VIEW_BWD */

/* The hint (already in n->shape) at element offset ia0 must lie inside the input, both
 * counted at the compiled batch. */
static bool shape_view(Graph *g, Node *n) {
    const Node *x = &g->n[n->in[0]];
    int64_t need = shape_numel(&n->shape), have = shape_numel(&x->shape);
    if (n->shape.rank < 0 || n->shape.rank > MAXDIM || n->ia[0] < 0 || n->ia[0] > have || need > have - n->ia[0]) {
        return shape_error(n, "view: %s at offset %lld does not fit in %s", shape_str(&n->shape), (long long)n->ia[0],
                           shape_str(&x->shape));
    }
    n->dtype = x->dtype;
    return true;
}

/* d input = zeros of the input's shape with gy copied in at the view's offset. */
static void grad_view(AD *ad, int n, int gy) {
    const Node y = ad_src(ad)->n[n];
    Shape xs = ad_src(ad)->n[y.in[0]].shape;
    Attrs at = {.i = {y.ia[0]}};
    ad_acc(ad, y.in[0], ad_add(ad, n, OP_VIEW_BWD, 1, &gy, &at, &xs));
}

/* The framework points a view into its input; nothing to compute. */
static void emit_view(Emit *e, const Graph *g, int n) {
    (void)e;
    (void)g;
    (void)n;
}

/* The hint is the viewed tensor's shape; g must fit inside it at offset ia0. */
static bool shape_view_bwd(Graph *g, Node *n) {
    if (!shape_require_real(g, n, 0)) return false;
    int64_t need = rn_numel(g, n->in[0]), have = shape_numel(&n->shape);
    if (n->shape.rank < 0 || n->shape.rank > MAXDIM || n->ia[0] < 0 || n->ia[0] > have || need > have - n->ia[0]) {
        return shape_error(n, "view_bwd: gradient %s at offset %lld does not fit in %s", shape_str(&g->n[n->in[0]].shape),
                           (long long)n->ia[0], shape_str(&n->shape));
    }
    n->dtype = DT_REAL;
    return true;
}

/* Zero the whole (compiled-size) buffer so that rows past the runtime batch are zeros
 * too, then copy the runtime elements of g in. */
static void emit_view_bwd(Emit *e, const Graph *g, int n) {
    const Node *d = &g->n[n];
    e_line(e, "%s(%lld, %lld, %s, %s, %s);", e_fn(e, "view_bwd"), (long long)shape_numel(&d->shape),
           (long long)d->ia[0], e_numel(e, d->in[0]), e_ptr(e, d->in[0]), e_ptr(e, n));
}

/* ------------------------------------------------------------------ table */

/* ------------------------------------------------------------------ tape calls */

/* The tape's lstm_act keeps the activated gates and tanh(c') (5 [B, H] blocks) and its
 * backward takes as much again; gru_act keeps r, z, n and takes seven [B, H] blocks. */
static void tape_scratch_lstm_act(const Graph *g, const Node *n, int real_size, int64_t *keep, int64_t *tmp) {
    *keep = *tmp = 5 * shape_numel(&g->n[n->in[1]].shape) * real_size;
}

static void tape_scratch_gru_act(const Graph *g, const Node *n, int real_size, int64_t *keep, int64_t *tmp) {
    (void)g;
    *keep = 3 * shape_numel(&n->shape) * real_size;
    *tmp = 7 * shape_numel(&n->shape) * real_size;
}

/* A view of a packed result: the tape packs parts with the runtime rows, the static
 * code (and ia0) with the compiled batch B. */
static const char *tape_view(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    const char *off = cc_str("%lld", (long long)x->ia[0]);
    if (x->shape.batched) {
        if (x->ia[0] % e_batch(e)) die("tape: view offset %lld is not a multiple of the batch", (long long)x->ia[0]);
        int64_t k = x->ia[0] / e_batch(e);
        off = k == 0 ? "0" : cc_str("(int64_t)nb*%lld", (long long)k);
    }
    return cc_str("cdl_t_view(tp, %s, %s, %s)", e_ptr(e, x->in[0]), off, e_dims_arg(e, n));
}

const OpRule ops_rnn_rules[] = {
    {OP_LSTM_ACT, shape_lstm_act, grad_lstm_act, emit_lstm_act, aux_lstm_act, .tape = e_tape_plain,
     .tape_scratch = tape_scratch_lstm_act},
    {OP_LSTM_ACT_BWD, shape_lstm_act_bwd, NULL, emit_lstm_act_bwd, NULL, .tape = NULL},
    {OP_GRU_ACT, shape_gru_act, grad_gru_act, emit_gru_act, aux_gru_act, .tape = e_tape_plain,
     .tape_scratch = tape_scratch_gru_act},
    {OP_GRU_ACT_BWD, shape_gru_act_bwd, NULL, emit_gru_act_bwd, NULL, .tape = NULL},
    {OP_VIEW, shape_view, grad_view, emit_view, NULL, .tape = tape_view},
    {OP_VIEW_BWD, shape_view_bwd, NULL, emit_view_bwd, NULL, .tape = NULL},
};
const int ops_rnn_count = sizeof ops_rnn_rules / sizeof ops_rnn_rules[0];
