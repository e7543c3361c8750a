/* opt.c -- graph optimisation before planning.
 *
 * Common-subexpression elimination (opt_cse, below), first: identical pure nodes
 * become one (the two bias-gradient reductions of a recurrent cell's step).
 *
 * No GEMM fusion here: a sum of GEMM products accumulates with beta = 1 only where the
 * tape's GEMM does the same (autodiff, ad_acc_gemm), so static and tape round alike;
 * a forward add of two products stays an add, as on the tape.
 *
 * In-place marking (opt_inplace, below): elementwise nodes write over an input that
 * dies at them, so the plan needs no buffer for them.
 *
 * Dead-code elimination: a node is live when the function's results (outputs, loss,
 * gradients) depend on it; dead nodes are marked NF_DEAD (ids stay stable, so loop
 * bodies' references to outer ids need no rewriting) and cost neither time nor memory.
 * Loop bodies are kept whole: the backward loop reads any of their values. */
#include "cdlc.h"

#include <string.h>

/* Liveness of one graph: roots are its results (outputs, loss, gradients, a body's
 * results), batch norm (it updates running statistics), and every value a backward
 * loop reads from a forward body (saved[i]). */
static void mark_dead(Graph *g, const bool *saved) {
    bool *live = NEWN(bool, g->len + 1);
    for (int i = 0; i < g->len; i++)
        if ((g->n[i].flags & (NF_OUTPUT | NF_LOSS)) || g->n[i].op == OP_BATCHNORM || (saved && saved[i])) live[i] = true;
    for (int k = 0; k < g->npgrad; k++)
        if (g->pgrad[k] >= 0) live[g->pgrad[k]] = true;
    for (int k = 0; k < g->nigrad; k++)
        if (g->igrad[k] >= 0) live[g->igrad[k]] = true;
    for (int k = 0; k < g->nres; k++) live[g->res[k]] = true;
    for (int i = g->len - 1; i >= 0; i--) {
        if (!live[i]) continue;
        const Node *n = &g->n[i];
        for (int k = 0; k < n->nin; k++) live[n->in[k]] = true;
    }
    for (int i = 0; i < g->len; i++)
        if (!live[i]) g->n[i].flags |= NF_DEAD;
}

/* ------------------------------------------------------------------ CSE
 *
 * Common-subexpression elimination: a node computing exactly what an earlier node
 * computes (same op, inputs after replacement, integer and real attributes, shape,
 * batching and dtype) is replaced by that node in every reader; it is then unread and
 * dead-code elimination drops it.  Typical: the LSTM/GRU backward step reduces d_gates
 * over the batch twice, once for the input-side bias and once for the hidden-side bias
 * (both linears' gradient rules emit the same sum).  An IDENTITY node (dropout in an
 * eval-mode function, pipeline.c) is replaced by its input the same way, so the C
 * spends not even a pointer on it.
 *
 * Only pure nodes take part: not leaves (each constant is a buffer of its own; loop
 * carries), not loop machinery, not random ops (two dropouts draw different masks),
 * not batch norm (it updates running statistics).  A node stays itself, though it may
 * still be the one others are replaced by, when its identity matters: an output, the
 * loss, a parameter's or input's gradient, a body result, a loop's carried initial
 * value (the loop may accumulate over its storage).  References by id from other graphs
 * are rewritten too: a body's LOOP_CAPTURE (outer id) and a backward body's LOOP_SAVED
 * (forward body id).  Runs before any other pass; bodies after their graph. */

static bool cse_candidate(const Node *x) {
    unsigned of = op_info[x->op].flags;
    if (of & (OPF_LEAF | OPF_CTRL | OPF_RAND)) return false;
    if (x->op == OP_BATCHNORM || x->sub) return false;
    return !(x->flags & (NF_INPUT | NF_PARAM | NF_STATE | NF_DEAD));
}

static uint64_t cse_hash(const Node *x) {
    uint64_t h = 1469598103934665603u;
#define MIX(v) (h = (h ^ (uint64_t)(v)) * 1099511628211u)
    MIX(x->op); MIX(x->nin); MIX(x->dtype); MIX(x->shape.rank); MIX(x->shape.batched);
    for (int k = 0; k < x->nin; k++) MIX(x->in[k]);
    for (int k = 0; k < 8; k++) MIX(x->ia[k]);
    for (int k = 0; k < x->shape.rank; k++) MIX(x->shape.d[k]);
    for (int k = 0; k < 4; k++) {
        uint64_t b;
        memcpy(&b, &x->fa[k], sizeof b);
        MIX(b);
    }
#undef MIX
    return h;
}

static bool cse_same(const Node *a, const Node *b) {
    if (a->op != b->op || a->nin != b->nin || a->dtype != b->dtype) return false;
    if (a->shape.batched != b->shape.batched || !shape_eq(&a->shape, &b->shape)) return false;
    if (memcmp(a->in, b->in, sizeof(int) * (size_t)a->nin)) return false;
    if (memcmp(a->ia, b->ia, sizeof a->ia)) return false;
    /* bitwise: -0.0 and 0.0 stay apart, which is only conservative */
    return !memcmp(a->fa, b->fa, sizeof a->fa);
}

static void opt_cse(Graph *g) {
    int n = g->len;
    int *rep = NEWN(int, n + 1);
    bool *fixed = NEWN(bool, n + 1);  /* must stay itself (see above) */
    for (int k = 0; k < g->nres; k++) fixed[g->res[k]] = true;
    for (int k = 0; k < g->npgrad; k++) if (g->pgrad[k] >= 0) fixed[g->pgrad[k]] = true;
    for (int k = 0; k < g->nigrad; k++) if (g->igrad[k] >= 0) fixed[g->igrad[k]] = true;
    for (int i = 0; i < n; i++) {
        const Node *x = &g->n[i];
        if (x->flags & (NF_OUTPUT | NF_LOSS | NF_PARAM_GRAD | NF_INPUT_GRAD)) fixed[i] = true;
        if (x->op == OP_LOOP)
            for (int k = 0; k < x->sub->ncarry && k < x->nin; k++) fixed[x->in[k]] = true;
    }
    int cap = 16;
    while (cap < 2 * n) cap *= 2;
    int *tab = NEWN(int, cap);  /* node id + 1; 0 = empty */
    bool changed = false;
    for (int i = 0; i < n; i++) {
        Node *x = &g->n[i];
        rep[i] = i;
        for (int k = 0; k < x->nin; k++) x->in[k] = rep[x->in[k]];
        if (x->op == OP_IDENTITY && !fixed[i]) {   /* eval-mode dropout: read its input */
            rep[i] = x->in[0];
            changed = true;
            continue;
        }
        if (!cse_candidate(x)) continue;
        uint64_t h = cse_hash(x);
        for (int p = (int)(h & (uint64_t)(cap - 1));; p = (p + 1) & (cap - 1)) {
            if (!tab[p]) { tab[p] = i + 1; break; }
            int j = tab[p] - 1;
            if (!cse_same(x, &g->n[j])) continue;
            if (!fixed[i]) { rep[i] = j; changed = true; }
            break;
        }
    }
    for (int i = 0; i < n && changed; i++) {
        const Node *x = &g->n[i];
        if (x->op != OP_LOOP) continue;
        for (int j = 0; j < x->sub->len; j++) {
            Node *s = &x->sub->n[j];
            if (s->op == OP_LOOP_CAPTURE) s->ia[0] = rep[capture_of(s)];   /* its outer id */
        }
    }
    if (changed && g->parent)
        for (int i = 0; i < g->parent->len; i++) {
            const Node *x = &g->parent->n[i];
            if (x->op != OP_LOOP) continue;
            for (int j = 0; j < x->sub->len; j++) {
                Node *s = &x->sub->n[j];
                if (s->op == OP_LOOP_SAVED && saved_loop(s) == g->owner) s->ia[1] = rep[saved_node(s)];   /* its body node */
            }
        }
    for (int i = 0; i < n; i++)
        if (g->n[i].op == OP_LOOP) opt_cse(g->n[i].sub);
}

void opt_run(Graph *g) {
    opt_cse(g);
    mark_dead(g, NULL);
    /* Bodies: a forward body keeps what its backward loop reads (LOOP_SAVED), carried
     * values' sources included (a saved carry reads the previous step's result). */
    bool **saved = NEWN(bool *, g->len + 1);
    for (int i = 0; i < g->len; i++) {
        const Node *n = &g->n[i];
        if (n->op != OP_LOOP || (n->flags & NF_DEAD)) continue;
        for (int j = 0; j < n->sub->len; j++) {
            const Node *s = &n->sub->n[j];
            if (s->op != OP_LOOP_SAVED) continue;
            int L = saved_loop(s), k = saved_node(s);
            if (!saved[L]) saved[L] = NEWN(bool, g->n[L].sub->len + 1);
            saved[L][k] = true;
        }
    }
    for (int i = 0; i < g->len; i++) {
        Node *n = &g->n[i];
        if (n->op == OP_LOOP && !(n->flags & NF_DEAD)) mark_dead(n->sub, saved[i]);
    }
    opt_inplace(g);
}

/* ------------------------------------------------------------------ in place
 *
 * An elementwise node whose input's value dies at it can write over that input: the
 * plan (plan.c, storage_base) then gives it the input's storage instead of a buffer of
 * its own.  Typical: relu after linear (relu's backward reads relu's output, not its
 * input), the gradient of relu over its incoming gradient, add / mul over a dying
 * operand, a loss's gradient over the logits.  A node qualifies for input k when
 *   - its kernel tolerates y aliasing in[k] exactly (the op's OpRule.inplace: y[i] =
 *     f(x[i], ...) loops; never GEMMs over their operands, reductions,
 *     restrict-qualified kernels);
 *   - in[k] has the node's shape, batching and dtype;
 *   - in[k]'s storage (followed through views and earlier in-place nodes) is an arena
 *     buffer of this graph: not an input, parameter, loop value or result;
 *   - no node sharing that storage is read after this node (dies here), and no other
 *     input of the node shares it (a second, differently indexed read);
 *   - the node itself is not a parameter's or input's gradient, nor on an input
 *     gradient's accumulation chain (opt_grad_chain): those go straight to the gradient
 *     slab or net->in_grad (plan.c, plan_external).
 * Decisions are made in node order, so chains (linear -> relu -> dropout) share one
 * buffer.  Loop bodies are left alone. */

/* Does op n's kernel, as its emitter calls it, stay correct when its output is the
 * exact storage of input k (same shape)?  The op's block says (OpRule.inplace). */
static bool inplace_allowed(const Graph *g, const Node *n, int k) {
    const OpRule *r = &op_info[n->op].rule;
    if (k >= n->nin || !(r->inplace & INPLACE_IN(k))) return false;
    return !r->inplace_if || r->inplace_if(g, n);
}

/* The node whose arena storage node i uses, following views and in-place nodes; -1
 * when that is not a plain arena buffer of this graph (a leaf, a loop value, or an
 * offset view, whose pointer is not its base's). */
static int inplace_base(const Graph *g, int i) {
    for (;;) {
        const Node *n = &g->n[i];
        if (n->op == OP_VIEW) return -1;
        if (op_info[n->op].flags & OPF_VIEW) { i = n->in[0]; continue; }
        if (n->flags & NF_INPLACE) { i = n->in[n->inplace]; continue; }
        if ((op_info[n->op].flags & (OPF_LEAF | OPF_CTRL)) || n->op == OP_LOOP_OUT) return -1;
        return i;
    }
}

/* The next node of input gradient q's accumulation chain, or -1: when q is an add of
 * two contributions (ad_acc) or a GEMM accumulating onto one (ad_acc_gemm), and that
 * operand (the add's first), of q's shape, is read by q alone and computed into a
 * buffer of its own, that operand can be computed straight into net->in_grad and q
 * accumulate there (plan.c, plan_external).  uses: readers per node (ir_uses). */
int opt_grad_chain(const Graph *g, const int *uses, int q) {
    const Node *x = &g->n[q];
    int a;
    if (x->op == OP_ADD && x->in[0] != x->in[1]) a = x->in[0];
    else if (x->op == OP_MATMUL && x->nin == 3 && x->in[2] != x->in[0] && x->in[2] != x->in[1]) a = x->in[2];
    else return -1;
    const Node *an = &g->n[a];
    if (uses[a] != 1 || !shape_eq(&an->shape, &x->shape) || an->shape.batched != x->shape.batched) return -1;
    if (op_info[an->op].flags & (OPF_VIEW | OPF_CTRL | OPF_LEAF)) return -1;
    if (an->flags & (NF_OUTPUT | NF_LOSS | NF_DEAD)) return -1;
    for (int k = 0; k < g->npgrad; k++) if (g->pgrad[k] == a) return -1;
    for (int k = 0; k < g->nigrad; k++) if (g->igrad[k] == a) return -1;
    return a;
}

/* The storage b ends in after in-place merges (moved[], see opt_inplace); halves the
 * paths it follows.  -1 stays -1. */
static int storage_of(int *moved, int b) {
    if (b < 0) return b;
    while (moved[b] >= 0) {
        if (moved[moved[b]] >= 0) moved[b] = moved[moved[b]];
        b = moved[b];
    }
    return b;
}

void opt_inplace(Graph *g) {
    int n = g->len;
    if (g->parent) return;
    /* last[b]: the last node reading storage b (n: a result, never dies).  Views are
     * resolved now; in-place links are merged in as they are made. */
    int *last = NEWN(int, n + 1);
    int *base = NEWN(int, n + 1);
    for (int i = 0; i < n; i++) {
        base[i] = inplace_base(g, i);
        last[i] = i;
    }
    for (int i = 0; i < n; i++) {
        const Node *x = &g->n[i];
        if (x->flags & NF_DEAD) continue;
        for (int k = 0; k < x->nin; k++) {
            int b = base[x->in[k]];
            if (b >= 0 && last[b] < i) last[b] = i;
        }
        if (x->op == OP_LOOP) /* a loop may read any of its inputs' storage at any step */
            for (int k = 0; k < x->nin; k++)
                if (base[x->in[k]] >= 0) last[base[x->in[k]]] = n;
        if ((x->flags & (NF_OUTPUT | NF_LOSS)) && base[i] >= 0) last[base[i]] = n;
    }
    bool *result_grad = NEWN(bool, n + 1);
    for (int k = 0; k < g->npgrad; k++)
        if (g->pgrad[k] >= 0) {
            result_grad[g->pgrad[k]] = true;
            if (base[g->pgrad[k]] >= 0) last[base[g->pgrad[k]]] = n;
        }
    int *uses = ir_uses(g);
    for (int k = 0; k < g->nigrad; k++)
        if (g->igrad[k] >= 0) {
            if (base[g->igrad[k]] >= 0) last[base[g->igrad[k]]] = n;
            for (int q = g->igrad[k]; q >= 0; q = opt_grad_chain(g, uses, q)) result_grad[q] = true;
        }

    /* moved[b]: the storage b was merged into when node b went in place (-1: none), so
     * a node's current storage is storage_of(base[...]), near-constant time. */
    int *moved = NEWN(int, n + 1);
    for (int i = 0; i < n; i++) moved[i] = -1;
    for (int i = 0; i < n; i++) {
        Node *x = &g->n[i];
        if ((x->flags & NF_DEAD) || result_grad[i] || base[i] != i) continue;
        for (int k = 0; k < x->nin; k++) {
            const Node *in = &g->n[x->in[k]];
            int b = storage_of(moved, base[x->in[k]]);
            if (b < 0 || last[b] != i || !inplace_allowed(g, x, k)) continue;
            if (in->dtype != x->dtype || in->shape.batched != x->shape.batched || !shape_eq(&in->shape, &x->shape))
                continue;
            bool shared = false;
            for (int q = 0; q < x->nin; q++)
                if (q != k && storage_of(moved, base[x->in[q]]) == b) shared = true;
            if (shared) continue;
            x->flags |= NF_INPLACE;
            x->inplace = k;
            moved[i] = b;   /* i's readers (and views of i) now read b */
            last[b] = last[i];
            break;
        }
    }
}
