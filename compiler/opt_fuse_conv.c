/* opt_fuse_conv.c -- convolution epilogue fusion (static target only).
 *
 * A convolution's output is written once by its kernel and then, in a ResNet, read and
 * written again by each elementwise op after it: relu, the residual add, and in the
 * backward pass the add of two gradient terms and relu's mask.  Each of those is a full
 * pass over an activation-sized tensor (the bench ResNet: 3.2 MB each, ~8% of the step).
 * This pass folds them into the convolution's store, where the row is still in cache:
 *
 *   relu(conv2d(x, w, b))              -> conv2d_fused(x, w, b)             relu
 *   conv2d(x, w, b) + s   (s + conv)   -> conv2d_fused(x, w, b, s)          add
 *   relu(conv2d(x, w, b) + s)          -> conv2d_fused(x, w, b, s)          add, relu
 *   relu_bwd(conv2d_bwd_x(g, w), m)    -> conv2d_bwd_x_fused(g, w, m)       mask
 *   conv2d_bwd_x(g, w) + a             -> conv2d_bwd_x_fused(g, w, a)       add
 *   relu_bwd(conv2d_bwd_x(g, w) + a, m) -> conv2d_bwd_x_fused(g, w, m, a)   add, mask
 *   relu_bwd(maxpool2d_bwd(g, x), x)   -> maxpool2d_bwd(g, x) with ia3 = 1  (conv -> relu ->
 *                                         maxpool: the pool's input is relu's output)
 *
 * The epilogue does what the separate kernels do, in their order and precision (cdl.h:
 * v + add, then the mask or max(v, 0); an add's operands commute exactly), so the
 * static code stays bitwise equal to the tape, which keeps calling the separate kernels
 * (fusion needs the whole graph: eager mode sees one op at a time).
 *
 * The rewritten node is the last op of the chain (the relu, add or relu_bwd): it keeps
 * its id, name, flags and readers; the convolution and the add in between become
 * unread and dead-code elimination (opt_run, after this pass) drops them (a dump marks
 * each "; dead: fused into %N").  A node is
 * folded in only when the chain is its one reader and it is nothing the function
 * returns.  Top-level graphs only (loop bodies are left alone). */
#include "cdlc.h"

#include <string.h>

/* Readers of every node of top-level graph g: its own nodes' inputs, results, loop
 * bodies' captures, and the gradients autodiff hands out. */
static int *fuse_uses(const Graph *g) {
    int *u = ir_uses(g);
    for (int i = 0; i < g->len; i++) {
        const Graph *b = g->n[i].sub;
        for (int j = 0; b && j < b->len; j++)
            if (b->n[j].op == OP_LOOP_CAPTURE) u[capture_of(&b->n[j])]++;
    }
    for (int k = 0; k < g->npgrad; k++)
        if (g->pgrad[k] >= 0) u[g->pgrad[k]]++;
    for (int k = 0; k < g->nigrad; k++)
        if (g->igrad[k] >= 0) u[g->igrad[k]]++;
    return u;
}

/* Can node c be folded into its one reader? */
static bool fuse_private(const Graph *g, const int *uses, int c) {
    const unsigned keep = NF_INPUT | NF_PARAM | NF_STATE | NF_OUTPUT | NF_LOSS | NF_PARAM_GRAD | NF_INPUT_GRAD | NF_DEAD;
    return uses[c] == 1 && !(g->n[c].flags & keep) && g->n[c].dtype == DT_REAL;
}

static bool same_tensor_shape(const Node *a, const Node *b) {
    return shape_eq(&a->shape, &b->shape) && a->shape.batched == b->shape.batched && a->dtype == b->dtype;
}

/* Node r becomes fused op `op` over inputs in[0..nin), attributes ia[0..8). */
static void fuse_rewrite(Node *r, Op op, const int *in, int nin, const int64_t *ia) {
    r->op = op;
    r->nin = nin;
    r->in = NEWN(int, nin);
    memcpy(r->in, in, sizeof(int) * (size_t)nin);
    memcpy(r->ia, ia, sizeof r->ia);
    memset(r->fa, 0, sizeof r->fa);
}

/* The epilogue bits of node c as the start of a forward chain (conv2d, or conv2d_fused
 * that an add (add) or a relu may still follow), or -1. */
static int64_t fwd_bits(const Graph *g, const int *uses, int c, bool add) {
    const Node *cv = &g->n[c];
    int64_t bits = cv->op == OP_CONV2D ? (cv->nin == 3 ? CONV_FUSE_BIAS : 0) : cv->op == OP_CONV2D_FUSED ? cv->ia[2] : -1;
    if (bits < 0 || (bits & CONV_FUSE_RELU) || (add && (bits & CONV_FUSE_ADD)) || !fuse_private(g, uses, c)) return -1;
    return bits;
}

/* The forward chain: conv2d (or conv2d_fused not yet ending in relu) read by relu, or
 * by an add of a same-shaped tensor (when it has no add yet). */
static bool fuse_fwd(Graph *g, const int *uses, int i) {
    Node *r = &g->n[i];
    int c = -1, skip = -1;
    int64_t bits = -1;
    if (r->op == OP_RELU) {
        c = r->in[0];
        bits = fwd_bits(g, uses, c, false);
    } else if (r->op == OP_ADD && r->in[0] != r->in[1] && same_tensor_shape(&g->n[r->in[0]], &g->n[r->in[1]])) {
        for (int k = 0; k < 2 && bits < 0; k++) {
            c = r->in[k], skip = r->in[1 - k];
            bits = fwd_bits(g, uses, c, true);
        }
    }
    if (bits < 0 || !same_tensor_shape(&g->n[c], r)) return false;
    const Node *cv = &g->n[c];
    int in[4], nin = cv->nin;   /* (x, w, b?, skip?): the chain's inputs so far, in order */
    memcpy(in, cv->in, sizeof(int) * (size_t)nin);
    if (skip >= 0) in[nin++] = skip, bits |= CONV_FUSE_ADD;
    if (r->op == OP_RELU) bits |= CONV_FUSE_RELU;
    int64_t ia[8] = {cv->ia[0], cv->ia[1], bits};
    fuse_rewrite(r, OP_CONV2D_FUSED, in, nin, ia);
    return true;
}

/* The backward chain: conv2d_bwd_x (or a fused one without a mask) read by relu_bwd as
 * its gradient, or by an add of a same-shaped tensor (when it has no add yet). */
static int64_t bwd_bits(const Graph *g, const int *uses, int c, bool add) {
    const Node *cv = &g->n[c];
    int64_t bits = cv->op == OP_CONV2D_BWD_X ? 0 : cv->op == OP_CONV2D_BWD_X_FUSED ? cv->ia[4] : -1;
    if (bits < 0 || (bits & CONV_FUSE_MASK) || (add && (bits & CONV_FUSE_ADD)) || !fuse_private(g, uses, c)) return -1;
    return bits;
}

static bool fuse_bwd(Graph *g, const int *uses, int i) {
    Node *r = &g->n[i];
    int c = -1, other = -1;
    int64_t bits = -1;
    if (r->op == OP_RELU_BWD && same_tensor_shape(&g->n[r->in[0]], &g->n[r->in[1]])) {
        c = r->in[0], other = r->in[1];
        bits = bwd_bits(g, uses, c, false);
    } else if (r->op == OP_ADD && r->in[0] != r->in[1] && same_tensor_shape(&g->n[r->in[0]], &g->n[r->in[1]])) {
        for (int k = 0; k < 2 && bits < 0; k++) {
            c = r->in[k], other = r->in[1 - k];
            bits = bwd_bits(g, uses, c, true);
        }
    }
    if (bits < 0 || !same_tensor_shape(&g->n[c], r)) return false;
    const Node *cv = &g->n[c];
    /* (g, w, mask?, acc?) */
    int in[4] = {cv->in[0], cv->in[1]}, nin = 2;
    int mask = r->op == OP_RELU_BWD ? other : -1;
    int acc = r->op == OP_ADD ? other : (bits & CONV_FUSE_ADD) ? cv->in[2] : -1;
    if (mask >= 0) in[nin++] = mask, bits |= CONV_FUSE_MASK;
    if (acc >= 0) in[nin++] = acc, bits |= CONV_FUSE_ADD;
    int64_t ia[8] = {cv->ia[0], cv->ia[1], cv->ia[2], cv->ia[3], bits};
    fuse_rewrite(r, OP_CONV2D_BWD_X_FUSED, in, nin, ia);
    return true;
}

/* relu_bwd(maxpool2d_bwd(g, x), x): the mask is the pool's own input, so the pool's
 * backward can drop the cells where x <= 0 as it writes them (maxpool2d_bwd_relu). */
static bool fuse_pool(Graph *g, const int *uses, int i) {
    Node *r = &g->n[i];
    if (r->op != OP_RELU_BWD) return false;
    const int p = r->in[0];
    const Node *pb = &g->n[p];
    if (pb->op != OP_MAXPOOL2D_BWD || pb->ia[3] || pb->in[1] != r->in[1] || !fuse_private(g, uses, p) ||
        !same_tensor_shape(pb, r))
        return false;
    int in[2] = {pb->in[0], pb->in[1]};
    int64_t ia[8] = {pb->ia[0], pb->ia[1], pb->ia[2], 1};
    fuse_rewrite(r, OP_MAXPOOL2D_BWD, in, 2, ia);
    return true;
}

/* cdlc.h */
int opt_fuse_conv(Graph *g) {
    if (g->parent) return 0;
    int *uses = fuse_uses(g), fused = 0;
    for (int i = 0; i < g->len; i++) {
        if (g->n[i].flags & NF_DEAD) continue;
        /* the counts follow the rewrite: r's old inputs lose r as a reader, and the
         * chain's head, now unread, its own inputs; r's new inputs gain r */
        const Node before = g->n[i];
        if (!fuse_fwd(g, uses, i) && !fuse_bwd(g, uses, i) && !fuse_pool(g, uses, i)) continue;
        for (int k = 0; k < before.nin; k++)
            if (--uses[before.in[k]] == 0) {
                g->n[before.in[k]].fused_into = i + 1; /* for the dumps: dead, folded into i */
                for (int j = 0; j < g->n[before.in[k]].nin; j++) uses[g->n[before.in[k]].in[j]]--;
            }
        for (int k = 0; k < g->n[i].nin; k++) uses[g->n[i].in[k]]++;
        fused++;
    }
    return fused;
}

/* ------------------------------------------------------------------ conv2d_bwd_xw pairing
 *
 * A convolution's backward is a bwd_w node m (autodiff writes it first), a bwd_x or
 * bwd_x_fused node n a node or two later, both over the same gradient g, and, with a
 * bias, a SUM of g over N, H, W (grad_conv2d).  The static code computes all three in
 * one cdl_conv2d_bwd_xw call at n, which pads g once (ops_conv.c).  The call writes m's
 * dw (and the SUM's db) at n instead of at m (s), so it needs:
 *   - a top-level graph, the same geometry, neither node dead nor in place;
 *   - nothing between m and n reading dw (nor a loop, which may read anything); m's
 *     buffer is m's from m on, so writing it later clobbers nothing;
 *   - m's x one of n's inputs (the mask: the conv's input is a relu's output), so that
 *     x is alive at n;
 *   - for the SUM: at most 4 nodes before n, axes 0, 2, 3 of n's g, and nothing
 *     between it and n reading it (a SUM with another reader in between stays a
 *     reduce).
 * Marks only: no node changes op, inputs or flags, so the plan is the same. */

/* Whether a node strictly between a and b reads node v (a loop may read anything). */
static bool read_between(const Graph *g, int v, int a, int b) {
    for (int j = a + 1; j < b; j++) {
        if (g->n[j].op == OP_LOOP) return true;
        for (int k = 0; k < g->n[j].nin; k++)
            if (g->n[j].in[k] == v && !(g->n[j].flags & NF_DEAD)) return true;
    }
    return false;
}

static bool xw_pair(const Graph *g, int m, int n) {
    const Node *w = &g->n[m], *x = &g->n[n];
    if (w->op != OP_CONV2D_BWD_W || (x->op != OP_CONV2D_BWD_X && x->op != OP_CONV2D_BWD_X_FUSED)) return false;
    if (((w->flags | x->flags) & (NF_DEAD | NF_INPLACE)) || w->in[0] != x->in[0] || w->dtype != x->dtype) return false;
    if (!conv_same_geom(g, m, n)) return false;
    bool alive = false;
    for (int k = 2; k < x->nin; k++) alive = alive || x->in[k] == w->in[1];
    return alive && !read_between(g, m, m, n);
}

/* The first bwd_x node bwd_w node m pairs with (-1: none); at most 4 nodes later. */
static int xw_of_w(const Graph *g, int m) {
    for (int n = m + 1; n < g->len && n <= m + 4; n++)
        if (xw_pair(g, m, n)) return n;
    return -1;
}

/* The nearest bwd_w node before bwd_x node n whose first pair n is (-1: none). */
static int xw_of_x(const Graph *g, int n) {
    for (int m = n - 1; m >= 0 && m >= n - 4; m--)
        if (xw_pair(g, m, n) && xw_of_w(g, m) == n) return m;
    return -1;
}

/* The bias gradient paired bwd_x node n also computes (-1: none): the nearest SUM of
 * n's g over axes 0, 2, 3 at most 4 nodes before n, if nothing between reads it. */
static int xw_bias(const Graph *g, int n) {
    const Node *x = &g->n[n];
    for (int s = n - 1; s >= 0 && s >= n - 4; s--) {
        const Node *d = &g->n[s];
        if (d->op == OP_LOOP) return -1;
        if (d->op != OP_SUM || d->in[0] != x->in[0] || d->ia[0] != (1 | 4 | 8) || d->dtype != x->dtype ||
            (d->flags & (NF_DEAD | NF_INPLACE)) || g->n[d->in[0]].shape.rank != 4)
            continue;
        return read_between(g, s, s, n) ? -1 : s;
    }
    return -1;
}

/* cdlc.h */
int opt_pair_conv(Graph *g) {
    if (g->parent) return 0;
    int paired = 0;
    for (int n = 0; n < g->len; n++) {
        const int m = xw_of_x(g, n);
        if (m < 0) continue;
        g->n[n].xw_dw = m + 1;
        g->n[m].xw_at = n + 1;
        const int s = xw_bias(g, n);
        if (s >= 0) {
            g->n[n].xw_db = s + 1;
            g->n[s].xw_at = n + 1;
        }
        paired++;
    }
    return paired;
}
