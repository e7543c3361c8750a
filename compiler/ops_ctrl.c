/* ops_ctrl.c -- graph leaves (inputs, parameters) and loop machinery: a loop is one LOOP node whose body is a graph run once
 * per step (the emitter writes a C loop; generated code does not grow with the step
 * count).  Shape rules here; the emitter and autodiff treat these ops structurally
 * (emit_c.c, autodiff.c), so their emit functions are never called. */
#include "cdlc.h"

static void emit_structural(Emit *e, const Graph *g, int n) {
    (void)e;
    die("%s is emitted structurally, not by its rule", op_info[g->n[n].op].name);
}

/* Carried values must keep shape and dtype from one step to the next. */
static bool shape_loop(Graph *g, Node *n) {
    n->shape = (Shape){0};
    const Graph *b = n->sub;
    if (!b) return true; /* ir_add_loop attaches the body, then runs this again */
    if (b->ncarry > n->nin) die("loop: %d carried values, %d inputs", b->ncarry, n->nin);
    if (n->ia[1] <= 0) {
        shape_error(n, "for: the range is empty");
        return false;
    }
    for (int k = 0; k < b->ncarry; k++) {
        const Node *init = &g->n[n->in[k]], *next = &b->n[b->res[k]];
        if (!shape_eq(&init->shape, &next->shape) || init->dtype != next->dtype) {
            const char *v = init->var ? init->var : next->var ? next->var : "a carried value";
            shape_error(n, "for: loop-carried variable '%s' changes shape: %s before the loop, %s after a step", v,
                        shape_str(&init->shape), shape_str(&next->shape));
            return false;
        }
    }
    return true;
}

/* Stacked results are [B, T, ...] for batched step values, [T, ...] otherwise. */
static bool shape_loop_out(Graph *g, Node *n) {
    const Node *L = &g->n[n->in[0]];
    if (L->op != OP_LOOP || !L->sub) die("loop_out of a non-loop");
    const Graph *b = L->sub;
    int k = (int)n->ia[0];
    if (k < 0 || k >= b->nres) die("loop_out %d of %d", k, b->nres);
    const Node *r = &b->n[b->res[k]];
    n->dtype = r->dtype;
    if (k < b->ncarry) {
        n->shape = r->shape;
        return true;
    }
    if (r->shape.rank + 1 > MAXDIM) {
        shape_error(n, "for: collected value has rank %d; at most %d allowed", r->shape.rank, MAXDIM - 1);
        return false;
    }
    Shape s = {.rank = r->shape.rank + 1, .batched = r->shape.batched};
    int at = r->shape.batched ? 1 : 0;
    for (int i = 0, j = 0; i < s.rank; i++) s.d[i] = i == at ? L->ia[1] : r->shape.d[j++];
    n->shape = s;
    return true;
}

/* Leaves inside a body: shape given as the hint (the outer value's, or the carried one's). */
static bool shape_hinted(Graph *g, Node *n) {
    (void)g;
    if (n->op == OP_LOOP_CAPTURE) {
        const Graph *p = g->parent;
        if (!p || n->ia[0] < 0 || n->ia[0] >= p->len) die("capture of %lld outside the enclosing graph", (long long)n->ia[0]);
        n->shape = p->n[n->ia[0]].shape;
        n->dtype = p->n[n->ia[0]].dtype;
    }
    return true;
}

const OpRule ops_ctrl_rules[] = {
    {OP_INPUT, shape_hinted, NULL, emit_structural, NULL},
    {OP_PARAM, shape_hinted, NULL, emit_structural, NULL},
    {OP_LOOP, shape_loop, NULL, emit_structural, NULL},
    {OP_LOOP_OUT, shape_loop_out, NULL, emit_structural, NULL},
    {OP_LOOP_CARRY, shape_hinted, NULL, emit_structural, NULL},
    {OP_LOOP_CAPTURE, shape_hinted, NULL, emit_structural, NULL},
    {OP_LOOP_SAVED, shape_hinted, NULL, emit_structural, NULL},
};
const int ops_ctrl_count = sizeof ops_ctrl_rules / sizeof ops_ctrl_rules[0];
