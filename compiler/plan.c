/* plan.c -- memory planning: one activation arena per model, laid out per function by
 * liveness with first-fit reuse.  A training step then performs no allocation: every
 * buffer is an offset into net->act, fixed at compile time. */
#include "cdlc.h"

#include <stdlib.h>

#define ALIGN 64

static int64_t align_up(int64_t n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }

int64_t plan_value_bytes(const Node *n, int real_size) {
    return shape_numel(&n->shape) * (n->dtype == DT_I32 ? 4 : real_size);
}

int64_t plan_aux_bytes(const Graph *g, const Node *n, int real_size) {
    const OpRule *r = &op_info[n->op].rule;
    return r->aux ? r->aux(g, n) * real_size : 0;
}

/* Does node i of g own storage of its own? */
static bool owns_storage(const Graph *g, int i, const bool *external) {
    const Node *n = &g->n[i];
    if (n->flags & NF_DEAD) return false;
    if (external && external[i]) return false;
    if (op_info[n->op].flags & OPF_VIEW) return false;
    switch (n->op) {
    case OP_INPUT: case OP_PARAM: case OP_LOOP_CARRY: case OP_LOOP_CAPTURE: case OP_LOOP_SAVED:
        return false;
    case OP_LOOP_OUT: {
        const Graph *b = g->n[n->in[0]].sub;
        int k = (int)n->ia[0];
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
        else if (n->op == OP_LOOP_OUT) {
            const Graph *b = g->n[n->in[0]].sub;
            int k = (int)n->ia[0];
            if (k >= b->ncarry && b->n[b->res[k]].shape.batched) return i;
            i = n->in[0];
        } else return i;
    }
}

static Plan *plan_new(int len) {
    Plan *p = NEW(Plan);
    p->off = NEWN(int64_t, len + 1);
    p->aux_off = NEWN(int64_t, len + 1);
    p->stride = NEWN(int64_t, len + 1);
    p->aux_stride = NEWN(int64_t, len + 1);
    p->sub = NEWN(Plan *, len + 1);
    for (int i = 0; i < len; i++) p->off[i] = p->aux_off[i] = -1;
    return p;
}

/* A body keeps every value and aux for every step, laid out from `base`; returns the
 * bytes used. */
static int64_t plan_body(const Graph *b, int64_t steps, int real_size, int64_t base, Plan *p) {
    int64_t at = base;
    for (int j = 0; j < b->len; j++) {
        if (!owns_storage(b, j, NULL)) continue;
        p->stride[j] = align_up(plan_value_bytes(&b->n[j], real_size));
        p->off[j] = at;
        at += p->stride[j] * steps;
        int64_t ab = plan_aux_bytes(b, &b->n[j], real_size);
        if (ab) {
            p->aux_stride[j] = align_up(ab);
            p->aux_off[j] = at;
            at += p->aux_stride[j] * steps;
        }
    }
    return at - base;
}

typedef struct Block { int64_t off, size; int end; } Block;

static int cmp_block(const void *a, const void *b) {
    int64_t x = ((const Block *)a)->off, y = ((const Block *)b)->off;
    return x < y ? -1 : x > y;
}

Plan *plan_run(const Graph *g, int real_size, const bool *external) {
    int n = g->len;
    Plan *p = plan_new(n);
    int *last = NEWN(int, n + 1);
    for (int i = 0; i < n; i++) last[i] = i;
    for (int i = 0; i < n; i++) {
        const Node *x = &g->n[i];
        if (x->flags & NF_DEAD) continue;
        for (int k = 0; k < x->nin; k++) {
            int b = storage_base(g, x->in[k]);
            if (last[b] < i) last[b] = i;
            /* a backward loop reads its forward loop's first carried values too */
            const Node *in = &g->n[x->in[k]];
            if (in->op == OP_LOOP && x->op == OP_LOOP)
                for (int c = 0; c < in->sub->ncarry; c++) {
                    int cb = storage_base(g, in->in[c]);
                    if (last[cb] < i) last[cb] = i;
                }
        }
        if (x->flags & (NF_OUTPUT | NF_LOSS)) last[storage_base(g, i)] = n;
    }
    for (int k = 0; k < g->npgrad; k++)
        if (g->pgrad[k] >= 0) last[storage_base(g, g->pgrad[k])] = n;
    for (int k = 0; k < g->nigrad; k++)
        if (g->igrad[k] >= 0) last[storage_base(g, g->igrad[k])] = n;
    /* a view's uses keep its base alive */
    for (int i = n - 1; i >= 0; i--) {
        int b = storage_base(g, i);
        if (b != i && last[b] < last[i]) last[b] = last[i];
    }

    Block *live = NEWN(Block, n + 1);
    int nlive = 0;
    int64_t top = 0;
    for (int i = 0; i < n; i++) {
        const Node *x = &g->n[i];
        int64_t size = 0, vbytes = 0, abytes = 0;
        Plan *body = NULL;
        if (x->op == OP_LOOP && !(x->flags & NF_DEAD)) {
            body = plan_new(x->sub->len);
            size = plan_body(x->sub, x->ia[1], real_size, 0, body);
        } else if (!(x->flags & NF_DEAD)) {
            /* a node computed straight into a slab may still need its scratch */
            if (owns_storage(g, i, external)) vbytes = align_up(plan_value_bytes(x, real_size));
            if (owns_storage(g, i, NULL)) abytes = align_up(plan_aux_bytes(g, x, real_size));
            size = vbytes + abytes;
        }
        if (size == 0) continue;
        /* retire blocks whose last use is before i */
        int w = 0;
        for (int k = 0; k < nlive; k++)
            if (live[k].end >= i) live[w++] = live[k];
        nlive = w;
        qsort(live, (size_t)nlive, sizeof *live, cmp_block);
        int64_t off = 0;
        for (int k = 0; k < nlive; k++) {
            if (live[k].off - off >= size) break;
            if (live[k].off + live[k].size > off) off = live[k].off + live[k].size;
        }
        live[nlive++] = (Block){off, size, last[i]};
        if (off + size > top) top = off + size;
        if (body) {
            for (int j = 0; j < x->sub->len; j++) {
                if (body->off[j] >= 0) body->off[j] += off;
                if (body->aux_off[j] >= 0) body->aux_off[j] += off;
            }
            p->sub[i] = body;
            p->off[i] = off;
        } else {
            if (vbytes) p->off[i] = off;
            if (abytes) p->aux_off[i] = off + vbytes;
        }
    }
    p->bytes = top;
    return p;
}
