/* ops_ctrl.c -- graph leaves (inputs, parameters) and loop machinery: a loop is one
 * LOOP node whose body is a graph run once per step (the emitter writes a C loop;
 * generated code does not grow with the step count).  Shape rules and tape calls here;
 * the static emitter and autodiff treat these ops structurally (emit_c.c, autodiff.c),
 * so their emit functions are never called. */
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
    if (loop_count(n) <= 0) {
        return shape_error(n, "for: the range is empty");
    }
    for (int k = 0; k < b->ncarry; k++) {
        const Node *init = &g->n[n->in[k]], *next = &b->n[b->res[k]];
        if (!shape_eq(&init->shape, &next->shape) || init->dtype != next->dtype) {
            const char *v = init->var ? init->var : next->var ? next->var : "a carried value";
            return shape_error(n, "for: loop-carried variable '%s' changes shape: %s before the loop, %s after a step", v,
                               shape_str(&init->shape), shape_str(&next->shape));
        }
    }
    return true;
}

/* Stacked results are [B, T, ...] for batched step values, [T, ...] otherwise. */
static bool shape_loop_out(Graph *g, Node *n) {
    const Node *L = &g->n[n->in[0]];
    if (L->op != OP_LOOP || !L->sub) die("loop_out of a non-loop");
    const Graph *b = L->sub;
    int k = loop_out_result(n);
    if (k < 0 || k >= b->nres) die("loop_out %d of %d", k, b->nres);
    const Node *r = &b->n[b->res[k]];
    n->dtype = r->dtype;
    if (k < b->ncarry) {
        n->shape = r->shape;
        return true;
    }
    if (r->shape.rank + 1 > MAXDIM) {
        return shape_error(n, "for: collected value has rank %d; at most %d allowed", r->shape.rank, MAXDIM - 1);
    }
    Shape s = {.rank = r->shape.rank + 1, .batched = r->shape.batched};
    int at = r->shape.batched ? 1 : 0;
    for (int i = 0, j = 0; i < s.rank; i++) s.d[i] = i == at ? loop_count(L) : r->shape.d[j++];
    n->shape = s;
    return true;
}

/* Leaves inside a body: shape given as the hint (the outer value's, or the carried one's). */
static bool shape_hinted(Graph *g, Node *n) {
    (void)g;
    if (n->op == OP_LOOP_CAPTURE) {
        const Graph *p = g->parent;
        int c = capture_of(n);
        if (!p || c < 0 || c >= p->len) die("capture of %d outside the enclosing graph", c);
        n->shape = p->n[c].shape;
        n->dtype = p->n[c].dtype;
    }
    return true;
}

/* The tape reads an entry's arguments from in[], the model's inputs from net->in. */
static const char *tape_input(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    if (e_entry(e)) return cc_str("cdl_t_from(tp, %s, (void *)in[%d], %s)", e_dtype(e, x), x->slot, e_dims_arg(e, n));
    return cc_str("cdl_t_input(tp, %d, nb)", x->slot);
}

static const char *tape_param(Emit *e, const Graph *g, int n) {
    (void)e;
    return cc_str("cdl_t_param(tp, %d)", g->n[n].slot);
}

/* In a body: the carried value's variable of this trip, or the outer value. */
static const char *tape_carry(Emit *e, const Graph *g, int n) { return e_tape_carry(e, carry_index(&g->n[n])); }
static const char *tape_capture(Emit *e, const Graph *g, int n) { return e_outer(e, capture_of(&g->n[n])); }

/* A LOOP_OUT's bytes: the tape stacks a collected value's steps through an array of
 * step pointers. */
static void tape_scratch_loop_out(const Graph *g, const Node *n, int real_size, int64_t *keep, int64_t *tmp) {
    (void)g, (void)real_size, (void)keep;
    *tmp = 16 * (n->shape.rank > 1 ? n->shape.d[1] : n->shape.d[0]);
}

const OpRule ops_ctrl_rules[] = {
    {OP_INPUT, shape_hinted, NULL, emit_structural, NULL, .tape = tape_input},
    {OP_PARAM, shape_hinted, NULL, emit_structural, NULL, .tape = tape_param},
    {OP_LOOP, shape_loop, NULL, emit_structural, NULL, .tape = NULL},
    {OP_LOOP_OUT, shape_loop_out, NULL, emit_structural, NULL, .tape_scratch = tape_scratch_loop_out},
    {OP_LOOP_CARRY, shape_hinted, NULL, emit_structural, NULL, .tape = tape_carry},
    {OP_LOOP_CAPTURE, shape_hinted, NULL, emit_structural, NULL, .tape = tape_capture},
    {OP_LOOP_SAVED, shape_hinted, NULL, emit_structural, NULL, .tape = NULL},
};
const int ops_ctrl_count = sizeof ops_ctrl_rules / sizeof ops_ctrl_rules[0];
