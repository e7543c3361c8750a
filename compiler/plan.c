/* plan.c -- memory planning: one activation arena per model, laid out per function by
 * liveness with first-fit reuse.  A training step then performs no allocation: every
 * buffer is an offset into net->act, fixed at compile time. */
#include "cdlc.h"
#include "cdl.h"

#include <stdlib.h>

#define ALIGN 64
/* The largest function (in buffers) whose plan also tries the by-size first fit. */
#define PLAN_BY_SIZE_MAX 4096

static int64_t align_up(int64_t n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }

int64_t plan_value_bytes(const Node *n, int real_size) {
    return shape_numel(&n->shape) * (n->dtype == DT_I32 ? 4 : real_size);
}

int64_t plan_aux_bytes(const Graph *g, const Node *n, int real_size) {
    const OpRule *r = &op_info[n->op].rule;
    return r->aux && !(n->flags & NF_NO_AUX) ? r->aux(g, n) * real_size : 0;
}

/* Does node i of g own storage of its own? */
static bool owns_storage(const Graph *g, int i, const bool *external) {
    const Node *n = &g->n[i];
    if (n->flags & NF_DEAD) return false;
    if (external && external[i]) return false;
    if (op_info[n->op].flags & OPF_VIEW) return false;
    if (n->flags & NF_INPLACE) return false;    /* opt_inplace: its input's buffer */
    switch (n->op) {
    case OP_INPUT: case OP_PARAM: case OP_LOOP_CARRY: case OP_LOOP_CAPTURE: case OP_LOOP_SAVED:
        return false;
    case OP_LOOP_OUT: {
        const Graph *b = g->n[n->in[0]].sub;
        int k = loop_out_result(n);
        return k >= b->ncarry && b->n[b->res[k]].shape.batched; /* batched stacks are re-laid [B, T, ...] */
    }
    default:
        return true;
    }
}

/* The node whose storage node i uses. */
static int storage_base(const Graph *g, int i) {
    for (;;) {
        const Node *n = &g->n[i];
        if (op_info[n->op].flags & OPF_VIEW) i = n->in[0];
        else if (n->flags & NF_INPLACE) i = n->in[n->inplace];
        else if (n->op == OP_LOOP_OUT) {
            const Graph *b = g->n[n->in[0]].sub;
            int k = loop_out_result(n);
            if (k >= b->ncarry && b->n[b->res[k]].shape.batched) return i;
            i = n->in[0];
        } else return i;
    }
}

/* storage_base of every node of g, each found from its predecessor's in O(1) (a node's
 * view or in-place input comes before it), so long in-place chains cost linear time. */
static int *storage_bases(const Graph *g) {
    int *base = NEWN(int, g->len + 1);
    for (int i = 0; i < g->len; i++) {
        const Node *n = &g->n[i];
        int j = i;
        if (op_info[n->op].flags & OPF_VIEW) j = n->in[0];
        else if (n->flags & NF_INPLACE) j = n->in[n->inplace];
        else if (n->op == OP_LOOP_OUT) j = storage_base(g, i);
        base[i] = j == i ? i : j < i ? base[j] : storage_base(g, j);
    }
    return base;
}

/* A plan for a graph of len nodes; the slot layout (stride, slots) only for a loop body
 * (NULL at the top level, where every value has one slot). */
static Plan *plan_new(int len, bool body) {
    Plan *p = NEW(Plan);
    p->off = NEWN(int64_t, len + 1);
    p->aux_off = NEWN(int64_t, len + 1);
    if (body) {
        p->stride = NEWN(int64_t, len + 1);
        p->aux_stride = NEWN(int64_t, len + 1);
        p->slots = NEWN(int64_t, len + 1);
        p->aux_slots = NEWN(int64_t, len + 1);
    }
    p->sub = NEWN(Plan *, len + 1);
    for (int i = 0; i < len; i++) p->off[i] = p->aux_off[i] = -1;
    return p;
}

/* ------------------------------------------------------------------ loop bodies
 *
 * How many slots a body value needs (Keep, per body node, for its value and its aux):
 *   KEEP_ALL  one per step: read after its step by a later loop (the backward loop
 *             reads forward values and scratch through LOOP_SAVED), or collected into a
 *             stacked result after the loop;
 *   KEEP_TWO  two, alternating: the next value of a carried variable, read by the next
 *             step while that step writes its own (an op may read and write the carried
 *             value, e.g. a GEMM, so one slot would not do);
 *   KEEP_ONE  one slot reused by every step: written and read within the step.
 * Everything not kept per step is therefore O(1) in the step count (a backward loop's
 * temporaries and weight-gradient accumulators, the forward pre-activations). */
enum { KEEP_ONE = 0, KEEP_TWO, KEEP_ALL };

typedef struct Keep { char *val, *aux; } Keep;

static void keep_at_least(char *k, char level) {
    if (*k < level) *k = level;
}

/* Body node j of top-level loop L is read at its own step by a later loop. */
static void keep_saved(const Graph *g, Keep *keep, int L, int j, int depth) {
    const Graph *b = g->n[L].sub;
    const Node *n = &b->n[j];
    if (depth > b->len + 8) return; /* a cycle of carries: no storage behind it */
    switch (n->op) {
    case OP_LOOP_CAPTURE: return;
    case OP_LOOP_SAVED: keep_saved(g, keep, saved_loop(n), saved_node(n), depth + 1); return;
    case OP_LOOP_CARRY: {
        int r = b->res[carry_index(n)];
        if (r != j) keep_saved(g, keep, L, r, depth + 1); /* the previous step's result */
        return;
    }
    default: {
        keep_at_least(&keep[L].aux[j], KEEP_ALL); /* its own scratch, if it has one */
        int base = storage_base(b, j);          /* a view's (or in-place node's) storage */
        if (base != j) keep_saved(g, keep, L, base, depth + 1);
        else if (owns_storage(b, j, NULL)) keep_at_least(&keep[L].val[j], KEEP_ALL);
        return;
    }
    }
}

/* Is carried value k an accumulator updated in place: its next value res[k] reads it
 * only as the running sum (an elementwise ADD operand of its own shape, or a matmul's
 * accumulator input), and no other body node or result reads it?  Then one slot does:
 * the carry reads it (after the first step) and res[k] overwrites it in the same op. */
static bool acc_in_place(const Graph *b, int k) {
    int r = b->res[k], c = -1;
    for (int j = 0; j < b->len; j++)
        if (b->n[j].op == OP_LOOP_CARRY && carry_index(&b->n[j]) == k && !(b->n[j].flags & NF_DEAD)) c = j;
    if (c < 0 || r == c) return false;
    const Node *x = &b->n[r];
    bool ok = x->op == OP_ADD && x->nin == 2 && (x->in[0] == c) != (x->in[1] == c) &&
              shape_eq(&b->n[x->in[0]].shape, &x->shape) && shape_eq(&b->n[x->in[1]].shape, &x->shape);
    ok = ok || (x->op == OP_MATMUL && x->nin == 3 && x->in[2] == c && x->in[0] != c && x->in[1] != c);
    if (!ok || (x->flags & (NF_DEAD | NF_INPLACE)) || (op_info[x->op].flags & OPF_VIEW)) return false;
    for (int q = 0; q < b->nres; q++)
        if (b->res[q] == c) return false;
    for (int j = 0; j < b->len; j++) {
        const Node *y = &b->n[j];
        if (j == r || (y->flags & NF_DEAD)) continue;
        for (int q = 0; q < y->nin; q++)
            if (y->in[q] == c) return false;
    }
    return true;
}

/* The next value of carried variable k, or the node it is a view of, is read one step
 * later; if it is itself another carried value, a later step still (keep all).  An
 * accumulator updated in place needs no second slot. */
static void keep_carried(const Graph *b, Keep *kp, int k) {
    if (acc_in_place(b, k)) return;
    int node = b->res[k];
    for (int d = 1; d <= b->ncarry + 1; d++) {
        int base = storage_base(b, node);
        const Node *x = &b->n[base];
        if (x->op == OP_LOOP_CARRY) {
            int r = b->res[carry_index(x)];
            if (r == base) return; /* a constant carry: its initial value */
            node = r;
            continue;
        }
        if (owns_storage(b, base, NULL)) keep_at_least(&kp->val[base], d == 1 ? KEEP_TWO : KEEP_ALL);
        return;
    }
}

/* Keep levels for the body of every top-level loop of g. */
static Keep *plan_keep(const Graph *g) {
    Keep *keep = NEWN(Keep, g->len + 1);
    for (int L = 0; L < g->len; L++) {
        const Node *x = &g->n[L];
        if (x->op != OP_LOOP || (x->flags & NF_DEAD)) continue;
        const Graph *b = x->sub;
        keep[L].val = NEWN(char, b->len + 1);
        keep[L].aux = NEWN(char, b->len + 1);
        for (int k = 0; k < b->ncarry; k++) keep_carried(b, &keep[L], k);
        for (int k = b->ncarry; k < b->nres; k++) {
            int base = storage_base(b, b->res[k]);
            if (owns_storage(b, base, NULL)) keep_at_least(&keep[L].val[base], KEEP_ALL);
        }
    }
    for (int M = 0; M < g->len; M++) {
        const Node *x = &g->n[M];
        if (x->op != OP_LOOP || (x->flags & NF_DEAD)) continue;
        for (int j = 0; j < x->sub->len; j++) {
            const Node *s = &x->sub->n[j];
            if (s->op == OP_LOOP_SAVED && !(s->flags & NF_DEAD) && keep[saved_loop(s)].val)
                keep_saved(g, keep, saved_loop(s), saved_node(s), 0);
        }
    }
    return keep;
}

static int64_t keep_slots(char level, int64_t steps) {
    return level == KEEP_ALL ? steps : level == KEEP_TWO && steps > 1 ? 2 : 1;
}

/* Lays out a body's values and aux from `base` with the slot counts of `kp`; returns
 * the bytes used.  A collected result that is not batched is read after the loop as
 * one [T, ...] tensor, so its slots are packed without padding. */
static int64_t plan_body(const Graph *b, int64_t steps, int real_size, int64_t base, const Keep *kp, Plan *p) {
    int64_t at = base;
    for (int j = 0; j < b->len; j++) {
        if (!owns_storage(b, j, NULL)) continue;
        bool packed = false;
        for (int k = b->ncarry; k < b->nres; k++) packed = packed || (b->res[k] == j && !b->n[j].shape.batched);
        int64_t vb = plan_value_bytes(&b->n[j], real_size);
        p->stride[j] = packed ? vb : align_up(vb);
        p->slots[j] = keep_slots(kp->val[j], steps);
        p->off[j] = at;
        at = align_up(at + p->stride[j] * p->slots[j]);
        int64_t ab = plan_aux_bytes(b, &b->n[j], real_size);
        if (ab) {
            p->aux_stride[j] = align_up(ab);
            p->aux_slots[j] = keep_slots(kp->aux[j], steps);
            p->aux_off[j] = at;
            at += p->aux_stride[j] * p->aux_slots[j];
        }
    }
    return at - base;
}

/* A buffer of the top-level arena: live from node `start` (written) to node `end` (last
 * read) inclusive, so blocks meeting at one node overlap (that node reads one while
 * writing the other). */
typedef struct Block { int64_t off, size; int start, end; } Block;

static int cmp_block_off(const void *a, const void *b) {
    int64_t x = (*(Block *const *)a)->off, y = (*(Block *const *)b)->off;
    return x < y ? -1 : x > y;
}

/* Offsets for blocks b[order[0]], b[order[1]], ...: each goes at the lowest offset
 * where it fits beside the blocks already placed that are live at the same time.
 * Returns the arena size.  `near` is scratch of nb pointers.  O(nb * live) time: used
 * for the by-size order, and only up to PLAN_BY_SIZE_MAX blocks. */
static int64_t place_blocks(Block *b, int nb, const int *order, Block **near) {
    int64_t top = 0;
    for (int k = 0; k < nb; k++) b[k].off = -1;
    for (int q = 0; q < nb; q++) {
        Block *x = &b[order[q]];
        int nn = 0;
        for (int k = 0; k < nb; k++)
            if (b[k].off >= 0 && b[k].start <= x->end && x->start <= b[k].end) near[nn++] = &b[k];
        qsort(near, (size_t)nn, sizeof *near, cmp_block_off);
        int64_t off = 0;
        for (int k = 0; k < nn; k++) {
            if (near[k]->off - off >= x->size) break;
            if (near[k]->off + near[k]->size > off) off = near[k]->off + near[k]->size;
        }
        x->off = off;
        if (off + x->size > top) top = off + x->size;
    }
    return top;
}

/* The live blocks of the node-order sweep, by offset: a treap (random priorities, a
 * fixed seed) whose nodes are block indices, each subtree knowing its lowest offset
 * (lo), the highest end of its blocks (hi) and the largest gap between one of its
 * blocks and those before it in the subtree (gap), so the lowest hole of a size is
 * found in O(log n). */
typedef struct Live {
    const Block *b;
    int *l, *r, root;
    uint32_t *pri;
    int64_t *lo, *hi, *gap;
} Live;

#define NO_GAP INT64_MIN

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Recompute t's summary from its children's. */
static void live_pull(Live *L, int t) {
    int a = L->l[t], c = L->r[t];
    int64_t run = a >= 0 ? L->hi[a] : NO_GAP, g = a >= 0 ? L->gap[a] : NO_GAP;
    if (a >= 0) g = max64(g, L->b[t].off - run);
    run = max64(run, L->b[t].off + L->b[t].size);
    if (c >= 0) {
        g = max64(max64(g, L->gap[c]), L->lo[c] - run);
        run = max64(run, L->hi[c]);
    }
    L->lo[t] = a >= 0 ? L->lo[a] : L->b[t].off;
    L->hi[t] = run;
    L->gap[t] = g;
}

static bool live_before(const Live *L, int x, int y) {
    return L->b[x].off < L->b[y].off || (L->b[x].off == L->b[y].off && x < y);
}

/* Split t into the blocks before x (*a) and the others (*c). */
static void live_split(Live *L, int t, int x, int *a, int *c) {
    if (t < 0) {
        *a = *c = -1;
    } else if (live_before(L, t, x)) {
        live_split(L, L->r[t], x, &L->r[t], c);
        *a = t;
        live_pull(L, t);
    } else {
        live_split(L, L->l[t], x, a, &L->l[t]);
        *c = t;
        live_pull(L, t);
    }
}

static int live_merge(Live *L, int a, int c) {
    if (a < 0) return c;
    if (c < 0) return a;
    if (L->pri[a] > L->pri[c]) {
        L->r[a] = live_merge(L, L->r[a], c);
        live_pull(L, a);
        return a;
    }
    L->l[c] = live_merge(L, a, L->l[c]);
    live_pull(L, c);
    return c;
}

static void live_insert(Live *L, int x) {
    int a, c;
    L->l[x] = L->r[x] = -1;
    live_pull(L, x);
    live_split(L, L->root, x, &a, &c);
    L->root = live_merge(L, live_merge(L, a, x), c);
}

static int live_remove(Live *L, int t, int x) {
    if (t == x) return live_merge(L, L->l[t], L->r[t]);
    if (live_before(L, x, t)) L->l[t] = live_remove(L, L->l[t], x);
    else L->r[t] = live_remove(L, L->r[t], x);
    live_pull(L, t);
    return t;
}

/* The lowest offset at or after `prev` (the end of everything before subtree t) where
 * size bytes fit before one of t's blocks, or -1. */
static int64_t live_fit(const Live *L, int t, int64_t prev, int64_t size) {
    if (t < 0) return -1;
    int a = L->l[t], c = L->r[t];
    if (a >= 0) {
        if (L->lo[a] - prev >= size) return prev;
        int64_t at = L->gap[a] >= size ? live_fit(L, a, prev, size) : -1;
        if (at >= 0) return at;
        prev = max64(prev, L->hi[a]);
    }
    if (L->b[t].off - prev >= size) return prev;
    prev = max64(prev, L->b[t].off + L->b[t].size);
    if (c >= 0 && L->lo[c] - prev >= size) return prev;
    return c >= 0 && L->gap[c] >= size ? live_fit(L, c, prev, size) : -1;
}

/* The same first fit as place_blocks for blocks in node order (b[k].start increasing),
 * as a sweep: the blocks already placed that are live with b[k] are those still live at
 * its start, kept by offset in a Live treap.  O(nb log nb). */
static int64_t place_in_order(Block *b, int nb, int nnodes) {
    Live L = {.b = b, .l = NEWN(int, nb + 1), .r = NEWN(int, nb + 1), .root = -1, .pri = NEWN(uint32_t, nb + 1),
              .lo = NEWN(int64_t, nb + 1), .hi = NEWN(int64_t, nb + 1), .gap = NEWN(int64_t, nb + 1)};
    int *head = NEWN(int, nnodes + 2), *next = NEWN(int, nb + 1); /* blocks by their end */
    for (int t = 0; t <= nnodes + 1; t++) head[t] = -1;
    uint32_t seed = 2463534242u;
    for (int k = 0; k < nb; k++) {
        seed ^= seed << 13, seed ^= seed >> 17, seed ^= seed << 5;   /* xorshift32 */
        L.pri[k] = seed;
    }
    int64_t top = 0;
    int t = 0;
    for (int k = 0; k < nb; k++) {
        for (; t < b[k].start; t++)          /* blocks whose last read was before this start */
            for (int q = head[t]; q >= 0; q = next[q]) L.root = live_remove(&L, L.root, q);
        int64_t off = live_fit(&L, L.root, 0, b[k].size);
        b[k].off = off >= 0 ? off : L.root >= 0 ? max64(0, L.hi[L.root]) : 0;
        live_insert(&L, k);
        next[k] = head[b[k].end];
        head[b[k].end] = k;
        top = max64(top, b[k].off + b[k].size);
    }
    return top;
}

static const Block *sort_blocks;
static int cmp_size_desc(const void *a, const void *b) {
    const Block *x = &sort_blocks[*(const int *)a], *y = &sort_blocks[*(const int *)b];
    if (x->size != y->size) return x->size > y->size ? -1 : 1;
    return x->start - y->start;
}

/* Gradients that can be computed straight into the gradient slab, or (an input's)
 * into net->in_grad: no arena buffer and no copy.  A parameter's gradient qualifies
 * when it is an ordinary computed node that is no other result; an input's, with the
 * accumulation chain opt_grad_chain finds under it (a sum of contributions accumulates
 * in net->in_grad), when it is not also computed in place.  Fills p->external and, per
 * such node, p->ext_param or p->ext_input (which slab slot or net->in_grad). */
static void plan_external(const Graph *g, Plan *p) {
    bool *ext = p->external = NEWN(bool, g->len + 1);
    p->ext_param = NEWN(int, g->len + 1);
    p->ext_input = NEWN(int, g->len + 1);
    int *cnt = NEWN(int, g->len + 1);
    for (int i = 0; i < g->len; i++) p->ext_param[i] = p->ext_input[i] = -1;
    for (int k = 0; k < g->npgrad; k++)
        if (g->pgrad[k] >= 0) cnt[g->pgrad[k]]++;
    for (int k = 0; k < g->nigrad; k++)
        if (g->igrad[k] >= 0) cnt[g->igrad[k]] += 2;
    for (int k = 0; k < g->npgrad; k++) {
        int q = g->pgrad[k];
        if (q < 0 || cnt[q] != 1) continue;
        const Node *n = &g->n[q];
        if (op_info[n->op].flags & (OPF_VIEW | OPF_CTRL | OPF_LEAF)) continue;
        if (n->flags & (NF_OUTPUT | NF_LOSS | NF_DEAD)) continue;
        ext[q] = true;
        p->ext_param[q] = k;
    }
    int *uses = ir_uses(g);
    for (int k = 0; k < g->nigrad; k++) {
        int q = g->igrad[k];
        if (q < 0 || cnt[q] != 2) continue;
        const Node *n = &g->n[q];
        if (op_info[n->op].flags & (OPF_VIEW | OPF_CTRL | OPF_LEAF)) continue;
        if (n->flags & (NF_OUTPUT | NF_LOSS | NF_DEAD | NF_INPLACE)) continue;
        for (; q >= 0; q = opt_grad_chain(g, uses, q)) {
            ext[q] = true;
            p->ext_input[q] = k;
        }
    }
}

/* The top-level value that body node j of loop L resolves to when it has no storage of
 * its own: a (view of a) captured value, or a carried value passed through from its
 * initial value; -1 when the body owns it.  A loop result read after the loop that
 * resolves so (ws[t] = reshape(v, ...)) keeps that outer value alive until it is read. */
static int outer_storage(const Graph *g, int L, int j, int depth) {
    const Node *ln = &g->n[L];
    const Graph *b = ln->sub;
    const Node *n = &b->n[j];
    if (depth > b->len + 8) return -1;
    if (op_info[n->op].flags & OPF_VIEW) return outer_storage(g, L, n->in[0], depth + 1);
    if (n->flags & NF_INPLACE) return outer_storage(g, L, n->in[n->inplace], depth + 1);
    if (n->op == OP_LOOP_CAPTURE) return capture_of(n);
    if (n->op == OP_LOOP_CARRY) {
        int k = carry_index(n);
        return b->res[k] == j ? ln->in[k] : outer_storage(g, L, b->res[k], depth + 1);
    }
    return -1;
}

Plan *plan_run(const Graph *g, int real_size) {
    int n = g->len;
    Plan *p = plan_new(n, false);
    plan_external(g, p);
    const bool *external = p->external;
    const int *base = storage_bases(g);
    int *last = NEWN(int, n + 1);
    for (int i = 0; i < n; i++) last[i] = i;
    for (int i = 0; i < n; i++) {
        const Node *x = &g->n[i];
        if (x->flags & NF_DEAD) continue;
        for (int k = 0; k < x->nin; k++) {
            int b = base[x->in[k]];
            if (last[b] < i) last[b] = i;
            /* a backward loop reads its forward loop's first carried values too */
            const Node *in = &g->n[x->in[k]];
            if (in->op == OP_LOOP && x->op == OP_LOOP)
                for (int c = 0; c < in->sub->ncarry; c++) {
                    int cb = base[in->in[c]];
                    if (last[cb] < i) last[cb] = i;
                }
        }
        if (x->op == OP_LOOP_OUT) {
            int o = outer_storage(g, x->in[0], g->n[x->in[0]].sub->res[loop_out_result(x)], 0);
            if (o >= 0 && last[base[o]] < i) last[base[o]] = i;
        }
        if (x->flags & (NF_OUTPUT | NF_LOSS)) last[base[i]] = n;
    }
    for (int k = 0; k < g->npgrad; k++)
        if (g->pgrad[k] >= 0) last[base[g->pgrad[k]]] = n;
    for (int k = 0; k < g->nigrad; k++)
        if (g->igrad[k] >= 0) last[base[g->igrad[k]]] = n;
    /* a view's uses keep its base alive */
    for (int i = n - 1; i >= 0; i--) {
        int b = base[i];
        if (b != i && last[b] < last[i]) last[b] = last[i];
    }

    Keep *keep = plan_keep(g);
    /* Sizes and lifetimes first (a node's scratch, and an in-place node's, lives as
     * long as its value's buffer), then offsets. */
    Block *blk = NEWN(Block, n + 1);
    int *blk_of = NEWN(int, n + 1);
    int64_t *vbytes = NEWN(int64_t, n + 1), *abytes = NEWN(int64_t, n + 1);
    int nblk = 0;
    for (int i = 0; i < n; i++) {
        const Node *x = &g->n[i];
        int64_t size = 0;
        blk_of[i] = -1;
        if (x->op == OP_LOOP && !(x->flags & NF_DEAD)) {
            p->sub[i] = plan_new(x->sub->len, true);
            size = plan_body(x->sub, loop_count(x), real_size, 0, &keep[i], p->sub[i]);
        } else if (!(x->flags & NF_DEAD)) {
            /* a node computed straight into a slab may still need its scratch */
            if (owns_storage(g, i, external)) vbytes[i] = align_up(plan_value_bytes(x, real_size));
            /* an in-place node (opt_inplace) has its input's buffer, but its own scratch */
            if (owns_storage(g, i, NULL) || (x->flags & NF_INPLACE)) abytes[i] = align_up(plan_aux_bytes(g, x, real_size));
            size = vbytes[i] + abytes[i];
        }
        if (size == 0) continue;
        blk_of[i] = nblk;
        blk[nblk++] = (Block){-1, size, i, last[base[i]]};
    }
    /* Two placements, the smaller kept: first fit in node order, and first fit by
     * decreasing size (big buffers first leave fewer holes too small for them).  The
     * second costs time in the number of buffers times those live at once, quadratic
     * for a long training step (forward values live until their backward use), so a
     * function of more than PLAN_BY_SIZE_MAX buffers gets the first alone. */
    int64_t top = place_in_order(blk, nblk, n);
    if (nblk <= PLAN_BY_SIZE_MAX) {
        int *order = NEWN(int, nblk + 1);
        Block **near = NEWN(Block *, nblk + 1);
        Block *by_size = NEWN(Block, nblk + 1);
        for (int k = 0; k < nblk; k++) order[k] = k, by_size[k] = blk[k];
        sort_blocks = by_size;
        qsort(order, (size_t)nblk, sizeof *order, cmp_size_desc);
        int64_t top2 = place_blocks(by_size, nblk, order, near);
        if (top2 < top) {
            blk = by_size;
            top = top2;
        }
    }
    for (int i = 0; i < n; i++) {
        const Node *x = &g->n[i];
        if (x->flags & NF_INPLACE && !(x->flags & NF_DEAD)) p->off[i] = p->off[base[i]];
        if (blk_of[i] < 0) continue;
        int64_t off = blk[blk_of[i]].off;
        if (p->sub[i]) {
            Plan *body = p->sub[i];
            for (int j = 0; j < x->sub->len; j++) {
                if (body->off[j] >= 0) body->off[j] += off;
                if (body->aux_off[j] >= 0) body->aux_off[j] += off;
            }
            p->off[i] = off;
        } else {
            if (vbytes[i]) p->off[i] = off;
            if (abytes[i]) p->aux_off[i] = off + vbytes[i];
        }
    }
    p->bytes = top;
    return p;
}

/* ------------------------------------------------------------------ the tape's arena */

/* Bytes one step needs for graph g (bodies times their trip count), an upper bound of
 * what the tape allocates: per node a record (and its input array), its value, its
 * gradient and its saved scratch; plus the largest short-lived scratch of any single
 * op, which the tape frees after each op: a backward rule's temporaries are at most
 * three of its output and two of each input (an input's gradient computed aside when
 * one has already arrived, or reduced from a broadcast), plus the op's own packed
 * buffers and im2col matrix.  *tmp collects that maximum. */
static int64_t graph_bytes(const Graph *g, int real_size, int64_t *tmp) {
    int64_t total = 0;
    for (int i = 0; i < g->len; i++) {
        const Node *n = &g->n[i];
        if (n->op == OP_LOOP) {
            /* and the views emit_tape.c may put on a carried initial value (once) and on a
             * collected carried value (each step): a record and a gradient each */
            const Graph *b = n->sub;
            int64_t views = 0, once = 0;
            for (int k = 0; k < b->nres; k++) {
                int64_t v = CDL_TAPE_RECORD_BYTES + 4 * 64 + align_up(8) + align_up(shape_numel(&b->n[b->res[k]].shape) * real_size);
                if (k < b->ncarry) once += v;
                else views += v;
            }
            total += loop_count(n) * (graph_bytes(b, real_size, tmp) + 64 * b->nres + views) + once;
            continue;
        }
        int64_t numel = shape_numel(&n->shape), es = n->dtype == DT_I32 ? 4 : real_size, ins = 0;
        for (int k = 0; k < n->nin; k++) ins += shape_numel(&g->n[n->in[k]].shape);
        int64_t keep = 0, extra = 0, t = (3 * numel + 2 * ins) * real_size + 16 * n->nin + 1024;
        if (op_info[n->op].rule.tape_scratch) op_info[n->op].rule.tape_scratch(g, n, real_size, &keep, &extra);
        t += extra;
        if (t > *tmp) *tmp = t;
        const Node *L = n->op == OP_LOOP_OUT ? &g->n[n->in[0]] : NULL;
        int64_t stack = L && loop_out_result(n) >= L->sub->ncarry ? 8 * loop_count(L) : 0;
        total += CDL_TAPE_RECORD_BYTES + 4 * 64 + align_up(8 * n->nin + stack) + align_up(numel * es) + align_up(numel * real_size) +
                 align_up(keep);
    }
    return total;
}

int64_t plan_tape_bytes(Graph *const *g, int ng, int64_t nleaves, int real_size) {
    int64_t act = 0, tmp = 0;
    for (int k = 0; k < ng; k++) {
        int64_t t = 0, a = graph_bytes(g[k], real_size, &t);
        if (a > act) act = a;
        if (t > tmp) tmp = t;
    }
    /* plus the tape's header, its per-parameter and per-input leaf caches, slack */
    return align_up(act + tmp + 8 * nleaves + 4096 + 65536);
}
