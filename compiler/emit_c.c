/* emit_c.c -- the C emitter: writes MODEL.c and MODEL.h for one model.
 *
 * Every function of the model (eval forward, train forward+backward, input gradient,
 * extra entries) is one graph, planned into the shared activation arena and written
 * node by node: a pointer declaration with the node's shape and source location, then
 * the op's own emitter (ops_*.c) for its kernel call.  Loops become C loops over a body
 * whose values live in one slot, two alternating, or one per step (plan.c).  Shapes are
 * constants; only the batch is a runtime value (nb <= the compiled batch).
 */
#include "cdlc.h"
#include "cdl.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ loop pointers */

/* Byte offset of step `tex`'s slot, of `slots` slots `stride` apart (plan.c): one slot
 * per step, two alternating (carried values), or one reused by every step. */
static const char *slot_off(const Node *L, int64_t off, int64_t slots, int64_t stride, const char *tex) {
    if (slots <= 1) return cc_str("%lld", (long long)off);
    /* the step's index from the loop's first step (the step itself when that is 0) */
    const char *k = loop_first_t(L) ? cc_str("(%s) - %lld", tex, (long long)loop_first_t(L)) : tex;
    if (slots == 2 && loop_count(L) > 2) return cc_str("%lld + (size_t)((%s) & 1) * %lld", (long long)off, k, (long long)stride);
    return cc_str("%lld + (size_t)(%s) * %lld", (long long)off, k, (long long)stride);
}

/* C expression (typed pointer) for body node j of top-level loop L at step `tex`. */
static const char *step_ptr(Emit *e, int L, int j, const char *tex, int depth) {
    const Node *ln = &e->top->n[L];
    const Graph *b = ln->sub;
    const Plan *bp = e->plan->sub[L];
    const Node *n = &b->n[j];
    if (depth > 64) die("step_ptr: carried values chain too deep");
    if (n->op == OP_VIEW) return cc_str("(%s + %lld)", step_ptr(e, L, n->in[0], tex, depth + 1), (long long)n->ia[0]);
    if (op_info[n->op].flags & OPF_VIEW) return step_ptr(e, L, n->in[0], tex, depth + 1);
    if (n->flags & NF_INPLACE) return step_ptr(e, L, n->in[n->inplace], tex, depth + 1);
    switch (n->op) {
    case OP_LOOP_CAPTURE: return e->name[capture_of(n)];
    case OP_LOOP_SAVED: return step_ptr(e, saved_loop(n), saved_node(n), tex, depth + 1);
    case OP_LOOP_CARRY: {
        int k = carry_index(n);
        if (b->res[k] == j) return e->name[ln->in[k]];
        const char *prev = loop_step(ln) > 0 ? cc_str("(%s) - %lld", tex, (long long)loop_step(ln))
                                             : cc_str("(%s) + %lld", tex, (long long)-loop_step(ln));
        return cc_str("((%s) == %lld ? %s : %s)", tex, (long long)loop_start(ln), e->name[ln->in[k]],
                   step_ptr(e, L, b->res[k], prev, depth + 1));
    }
    default:
        if (bp->off[j] < 0) die("body node %d (%s) has no storage", j, op_info[n->op].name);
        e->used_A = true;
        return cc_str("(%s *)(A + %s)", e_ctype(e, n), slot_off(ln, bp->off[j], bp->slots[j], bp->stride[j], tex));
    }
}

static const char *step_aux(Emit *e, int L, int j, const char *tex, const char *type) {
    const Node *ln = &e->top->n[L];
    const Plan *bp = e->plan->sub[L];
    const Node *n = &ln->sub->n[j];
    if (n->op == OP_LOOP_SAVED) return step_aux(e, saved_loop(n), saved_node(n), tex, type);
    if (bp->aux_off[j] < 0) die("body node %d has no aux", j);
    e->used_A = true;
    return cc_str("(%s *)(A + %s)", type, slot_off(ln, bp->aux_off[j], bp->aux_slots[j], bp->aux_stride[j], tex));
}

const char *e_aux_as(Emit *e, int node, const char *type) {
    if (e->infer) return "NULL";
    if (e->body) return step_aux(e, e->loop, node, "t", type);
    const Node *n = &e->top->n[node];
    if (e->plan->aux_off[node] < 0) die("node %d (%s) has no aux", node, op_info[n->op].name);
    e->used_A = true;
    return cc_str("(%s *)(A + %lld)", type, (long long)e->plan->aux_off[node]);
}

const char *e_aux(Emit *e, int node) { return e_aux_as(e, node, e_real(e)); }

const char *e_aux_at(Emit *e, int node, int64_t off) {
    return e->infer ? "NULL" : cc_str("%s + %lld", e_aux(e, node), (long long)off);
}

/* The pointee type of node n's pointer variable: in the inference export a value with
 * no storage of its own (a view, a loop's carried or captured value, a carried result)
 * may be the caller's input or a const weight array, and is never written through
 * (in-place nodes get their own pointer into the arena), so it is declared const. */
static const char *ptype(const Emit *e, const Node *n, bool owns) {
    return e->infer && !owns ? cc_str("const %s", e_ctype(e, n)) : e_ctype(e, n);
}

/* ------------------------------------------------------------------ uses */

/* The top-level values whose C variables body node j of loop L names through its
 * pointer expression (step_ptr, which it mirrors): a body node's pointer names no body
 * node, only the outer values its storage resolves to (a capture's value, a carry's
 * initial value, through another loop's saved values). */
static void ptr_refs(const Graph *top, int L, int j, bool *u, int depth) {
    const Node *ln = &top->n[L];
    const Graph *b = ln->sub;
    const Node *n = &b->n[j];
    if (depth > 64) return;
    if (op_info[n->op].flags & OPF_VIEW) ptr_refs(top, L, n->in[0], u, depth + 1);
    else if (n->flags & NF_INPLACE) ptr_refs(top, L, n->in[n->inplace], u, depth + 1);
    else if (n->op == OP_LOOP_CAPTURE) u[capture_of(n)] = true;
    else if (n->op == OP_LOOP_SAVED) ptr_refs(top, saved_loop(n), saved_node(n), u, depth + 1);
    else if (n->op == OP_LOOP_CARRY) {
        int k = carry_index(n);
        u[ln->in[k]] = true;
        if (b->res[k] != j) ptr_refs(top, L, b->res[k], u, depth + 1);
    }
}

static bool computes(const Node *n) {
    return !(op_info[n->op].flags & (OPF_VIEW | OPF_CTRL)) && n->op != OP_INPUT && n->op != OP_PARAM;
}

/* Does top-level node n's C name its input k?  All do but an accumulating matmul over
 * its accumulator in place (ad_acc_gemm, opt_inplace): it adds onto that buffer under its
 * own name (emit_matmul). */
static bool names_input(const Node *n, int k) {
    return !(n->op == OP_MATMUL && k == 2 && (n->flags & NF_INPLACE) && n->inplace == 2);
}

/* Which nodes' C variables are read by someone (so they are declared, and only then).
 * Every computing node is (its kernel call writes it by name), and so is what a used
 * node reads: a kernel call names its inputs, a top-level view its input, a loop what
 * its used body nodes' pointers resolve to (ptr_refs), a loop result read after the
 * loop the same.  In a body only computing nodes name their inputs (a view's pointer is
 * a storage expression).  So a layer left dead in a loop body declares no pointers to
 * its parameters, and a collected view of a captured value names the captured value. */
static bool *used_vars(const Graph *g, bool top) {
    bool *u = NEWN(bool, g->len + 1);
    for (int i = 0; i < g->len; i++) {
        const Node *n = &g->n[i];
        if (n->flags & NF_DEAD) continue;
        if (computes(n) || (top && (n->flags & (NF_OUTPUT | NF_LOSS)))) u[i] = true;
    }
    if (top) {
        for (int k = 0; k < g->npgrad; k++) if (g->pgrad[k] >= 0) u[g->pgrad[k]] = true;
        for (int k = 0; k < g->nigrad; k++) if (g->igrad[k] >= 0) u[g->igrad[k]] = true;
    }
    for (int i = g->len - 1; i >= 0; i--) {
        const Node *n = &g->n[i];
        if (n->flags & NF_DEAD) continue;
        if (!top) {
            if (u[i] && computes(n))
                for (int k = 0; k < n->nin; k++) u[n->in[k]] = true;
        } else if (n->op == OP_LOOP) {
            bool *bu = used_vars(n->sub, false);
            for (int j = 0; j < n->sub->len; j++)
                if (bu[j] && !(n->sub->n[j].flags & NF_DEAD)) ptr_refs(g, i, j, u, 0);
        } else if (n->op == OP_LOOP_OUT) {
            if (u[i]) ptr_refs(g, n->in[0], g->n[n->in[0]].sub->res[loop_out_result(n)], u, 0);
        } else if (u[i]) {
            for (int k = 0; k < n->nin; k++)
                if (names_input(n, k)) u[n->in[k]] = true;
        }
    }
    return u;
}

/* ------------------------------------------------------------------ nodes */

/* Is body node j of top-level loop L all zeros at one step, and which (*at)?  A carried
 * value whose initial value is a zero constant is, at the loop's first step (the zero
 * initial state h0 = zeros(...) of a recurrent cell); so is a backward body's saved copy
 * of such a carry, at the forward loop's first step. */
static bool zero_at_step(const Emit *e, int L, int j, int64_t *at) {
    const Node *ln = &e->top->n[L];
    const Node *n = &ln->sub->n[j];
    if (n->op == OP_LOOP_SAVED) return zero_at_step(e, saved_loop(n), saved_node(n), at);
    if (n->op != OP_LOOP_CARRY) return false;
    int k = carry_index(n);
    if (ln->sub->res[k] == j) return false;  /* passed through unchanged: not worth it */
    const Node *init = &e->top->n[ln->in[k]];
    if (init->op != OP_CONST || init->fa[0] != 0) return false;
    *at = loop_start(ln);
    return true;
}

/* Is body node j of loop L computed at the last step for nothing: its only reader is
 * its carried result slot, and no live LOOP_OUT or other loop reads that carry?  Then
 * the last step's value goes unread (the gradient of a constant initial state h0). */
static bool unread_at_last(const Emit *e, int L, int j, const int *uses) {
    const Graph *b = e->top->n[L].sub;
    int k = -1;
    for (int q = 0; q < b->ncarry; q++)
        if (b->res[q] == j) k = q;
    if (k < 0 || uses[j] != 1) return false;
    for (int i = 0; i < e->top->len; i++) {
        const Node *x = &e->top->n[i];
        if (x->flags & NF_DEAD) continue;
        if (x->op == OP_LOOP_OUT && x->in[0] == L && loop_out_result(x) == k) return false;
        if (x->op == OP_LOOP && i != L)
            for (int q = 0; q < x->sub->len; q++) {
                const Node *s = &x->sub->n[q];
                if (s->op == OP_LOOP_SAVED && saved_loop(s) == L && saved_node(s) == j && !(s->flags & NF_DEAD)) return false;
            }
    }
    return true;
}

const char *e_inner(Emit *e, int node, int nops, const char *k, const char **note) {
    *note = "";
    if (!e->body) return k;
    const Node *n = &e->body->n[node];
    int64_t t0 = 0;
    for (int q = 0; q < nops && q < n->nin; q++)
        if (zero_at_step(e, e->loop, n->in[q], &t0)) {
            *note = cc_str("  /* %s is zero at t = %lld */", e->bname[n->in[q]], (long long)t0);
            return cc_str("t != %lld ? %s : 0", (long long)t0, k);
        }
    return k;
}

/* Emit body node j's computation.  GEMM work the recurrence does for nothing is
 * skipped (about 3% of an LSTM step's FLOPs at T = 28):
 *   - a matmul or linear with an operand that is zero at step t0 (zero_at_step: the
 *     hidden-to-hidden product with h0 = 0 forward, dW_hh's term with h_{-1} = 0
 *     backward) gets an empty contraction at t0, `t != t0 ? K : 0` (e_inner, which
 *     their emitters call): cdl_gemm then leaves the accumulator (beta 1: the bias
 *     rows, the carried sum) or zeros (beta 0) without calling BLAS.  The call is
 *     emptied rather than branched around: a branch on t lets GCC thread t0 into later
 *     statements and warn (-Wrestrict) about the guarded accumulator memcpy of another
 *     node;
 *   - a node whose value at the last step is unread (unread_at_last: dh0) is not
 *     computed at that step. */
static void emit_body_node(Emit *e, int L, int j, const int *uses) {
    const Node *ln = &e->top->n[L];
    const Graph *b = ln->sub;
    bool skip_last = unread_at_last(e, L, j, uses);
    if (skip_last) {
        e_line(e, "if (t != %lld) {  /* the last step's value is carried out and unread */", (long long)loop_last(ln));
        e->indent++;
    }
    op_info[b->n[j].op].rule.emit(e, b, j);
    if (skip_last) {
        e->indent--;
        e_line(e, "}");
    }
}

/* Does loop body node n, a captured value, go by the enclosing function's variable (no
 * pointer of its own)?  Always in the training and evaluation C; in the inference
 * export only a weight array (a static const array read by its name). */
static bool reads_outer(const Emit *e, const Node *n) {
    if (n->op != OP_LOOP_CAPTURE) return false;
    return !e->infer || e->top->n[capture_of(n)].op == OP_PARAM;
}

/* The statements of loop L's body.  A node that computes nothing (a saved forward
 * value, a capture, a carry, a view) gets a pointer only when some statement reads it
 * by name (ref[j]; ref NULL: every one): not when its readers use only its scratch (a
 * dropout mask, softmax probabilities), nor when it is read only through the storage
 * of a later view (a collected flatten(c) of a captured c names c's outer pointer).
 * A captured value gets none: the body reads the enclosing function's variable. */
static void emit_body(Emit *e, int L, const bool *u, const int *uses, const bool *ref) {
    const Graph *b = e->body;
    for (int j = 0; j < b->len; j++) {
        const Node *n = &b->n[j];
        if (!u[j] || (n->flags & NF_DEAD)) continue;
        if (reads_outer(e, n)) continue;   /* the body reads the outer variable */
        bool owns = !(op_info[n->op].flags & (OPF_VIEW | OPF_CTRL));
        if (!owns && ref && !ref[j]) continue;
        e_line(e, "%s *%s = %s;  /* %s %s%s */", ptype(e, n, owns), e->bname[j], step_ptr(e, L, j, "t", 0),
               e_shape_comment(e, &n->shape), op_info[n->op].name, e_loc(n));
        if (owns) emit_body_node(e, L, j, uses);
    }
}

/* A C loop over loop L's steps.  The body is written twice: once into memory to learn
 * which variables its statements read (e_ptr marks e->bref), then for real. */
static void emit_loop(Emit *e, int L) {
    const Graph *b = e_loop_open(e, L, "values read after their step are kept per step");
    for (int j = 0; j < b->len; j++) {
        const Node *n = &b->n[j];
        e->bname[j] = reads_outer(e, n) ? e->name[capture_of(n)] : e_var_name(n, j, "s_");
    }
    bool *u = used_vars(b, false);
    int *uses = ir_uses(b);
    FILE *out = e->f;
    char *scratch = NULL;
    size_t len = 0;
    e->f = open_memstream(&scratch, &len);
    if (!e->f) die("open_memstream failed");
    e->bref = NEWN(bool, b->len + 1);
    emit_body(e, L, u, uses, NULL);
    fclose(e->f);
    free(scratch);
    e->f = out;
    bool *ref = e->bref;
    e->bref = NULL;
    emit_body(e, L, u, uses, ref);
    e_loop_close(e);
}

/* Declare top-level node i's pointer and emit its computation. */
static void emit_node(Emit *e, int i) {
    const Graph *g = e->top;
    const Node *n = &g->n[i];
    const char *t = e_ctype(e, n);
    if (n->op == OP_LOOP) {
        emit_loop(e, i);
        return;
    }
    const char *nm = e->name[i];
    /* a node computed over its input's buffer (opt_inplace) says so */
    const char *shared = n->flags & NF_INPLACE ? cc_str("; in place of %s", e->name[n->in[n->inplace]]) : "";
    const char *what = cc_str("/* %s %s%s%s%s */", e_shape_comment(e, &n->shape), op_info[n->op].name,
                              n->name ? cc_str(" \"%s\"", n->name) : "", e_loc(n), shared);
    if (e->infer && (n->op == OP_INPUT || n->op == OP_PARAM)) return;  /* named by the caller */
    switch (n->op) {
    case OP_INPUT:
        if (e->entry) e_line(e, "%s *%s = (%s *)in[%d];  %s", t, nm, t, n->slot, what), e->used_in = true;
        else e_line(e, "%s *%s = net->in[%d];  %s", t, nm, n->slot, what);
        return;
    case OP_PARAM:
        e->used_P = true;
        e_line(e, "%s *%s = P + %lld;  %s", t, nm, (long long)e->slab_off[n->slot], what);
        return;
    case OP_LOOP_OUT: {
        const Node *ln = &g->n[n->in[0]];
        const Graph *b = ln->sub;
        int k = loop_out_result(n);
        const Node *r = &b->n[b->res[k]];
        if (k < b->ncarry) {
            e_line(e, "%s *%s = %s;  %s", ptype(e, n, false), nm, step_ptr(e, n->in[0], b->res[k], cc_str("%lld", (long long)loop_last(ln)), 0), what);
        } else if (!r->shape.batched) {
            e_line(e, "%s *%s = %s;  %s", ptype(e, n, false), nm, step_ptr(e, n->in[0], b->res[k], cc_str("%lld", (long long)loop_first_t(ln)), 0), what);
        } else {
            const char *first = step_ptr(e, n->in[0], b->res[k], cc_str("%lld", (long long)loop_first_t(ln)), 0);
            const char *second = step_ptr(e, n->in[0], b->res[k], cc_str("%lld", (long long)loop_first_t(ln) + 1), 0);
            e->used_A = e->used_nb = true;
            e_line(e, "%s *%s = (%s *)(A + %lld);  %s", t, nm, t, (long long)e->plan->off[i], what);
            int64_t per_row = shape_numel(&r->shape) / r->shape.d[0] * (r->shape.d[0] / e_batch(e));
            e_line(e, "cdl_steps_to_batch_%s(%lld, nb, %lld, %s, %s - %s, %s);", e->real_size == 8 ? "f64" : "f32",
                   (long long)loop_count(ln), (long long)per_row, first, second, first, nm);
        }
        return;
    }
    default:
        break;
    }
    if (op_info[n->op].flags & OPF_VIEW) {
        const char *vt = ptype(e, n, false);
        if (n->op == OP_VIEW) e_line(e, "%s *%s = %s + %lld;  %s", vt, nm, e->name[n->in[0]], (long long)n->ia[0], what);
        else e_line(e, "%s *%s = %s;  %s", vt, nm, e->name[n->in[0]], what);
        return;
    }
    if (e->plan->external[i]) {
        int p = e->plan->ext_param[i], q = e->plan->ext_input[i];
        e->used_G = e->used_G || p >= 0;
        if (p >= 0)
            e_line(e, "%s *%s = G + %lld;  /* %s %s%s: gradient of %s, in the slab */", t, nm, (long long)e->slab_off[p],
                   e_shape_comment(e, &n->shape), op_info[n->op].name, e_loc(n), e->m->params[p].name);
        else
            e_line(e, "%s *%s = (%s *)net->in_grad[%d];  /* %s %s%s: d loss / d %s (or a part), in net->in_grad */", t, nm, t, q,
                   e_shape_comment(e, &n->shape), op_info[n->op].name, e_loc(n), e->m->g->n[e->m->inputs[q]].name);
    } else {
        e->used_A = true;
        e_line(e, "%s *%s = (%s *)(A + %lld);  %s", t, nm, t, (long long)e->plan->off[i], what);
    }
    op_info[n->op].rule.emit(e, g, i);
}

/* The inference export's function bodies (emit_infer.c). */
const char **emit_c_infer_body(FILE *f, const Model *m, const Fn *fn, const char *const *leaf) {
    Emit E = {.f = f, .m = m, .real_size = 4, .infer = true, .top = fn->g, .plan = fn->plan, .loop = -1, .indent = 1};
    Emit *e = &E;
    const Graph *g = fn->g;
    e->name = NEWN(const char *, g->len + 1);
    for (int i = 0; i < g->len; i++) e->name[i] = leaf[i] ? leaf[i] : e_var_name(&g->n[i], i, "");
    bool *u = used_vars(g, true);
    for (int i = 0; i < g->len; i++)
        if (!(g->n[i].flags & NF_DEAD) && (u[i] || g->n[i].op == OP_LOOP)) emit_node(e, i);
    return e->name;
}

/* ------------------------------------------------------------------ functions */

/* The C name of function fn: NAME_fwd_eval, NAME_fwd_bwd, NAME_fwd_bwd_input,
 * NAME_fwd_bwd_eval, NAME_entry_E (the descriptor, emit_common.c, refers to them by these names). */
static const char *fn_cname(const Model *m, const Fn *fn) {
    switch (fn->kind) {
    case FN_EVAL: return cc_str("%s_fwd_eval", m->name);
    case FN_TRAIN: return cc_str("%s_fwd_bwd", m->name);
    case FN_INPUT_GRAD: return cc_str("%s_fwd_bwd_input", m->name);
    case FN_EVAL_GRAD: return cc_str("%s_fwd_bwd_eval", m->name);
    case FN_ENTRY: return cc_str("%s_entry_%s", m->name, fn->entry->name);
    default: unreachable();
    }
}

static void emit_function(Emit *e, const Fn *fn) {
    const Model *m = e->m;
    Graph *g = fn->g;
    e->top = g;
    e->plan = fn->plan;
    const char *cname = fn_cname(m, fn);
    e->train = fn->kind == FN_TRAIN;
    e->entry = fn->kind == FN_ENTRY;
    e->loop = -1;
    e->name = NEWN(const char *, g->len + 1);
    for (int i = 0; i < g->len; i++) e->name[i] = e_var_name(&g->n[i], i, "");
    bool *u = used_vars(g, true);

    static const char *doc[] = {
        [FN_EVAL] = "Eval mode (no dropout, no sampling, batch norm on running statistics): outputs and loss.",
        [FN_TRAIN] = "Train mode: forward, then backward; every parameter gradient into net->grad.",
        [FN_INPUT_GRAD] = "Eval mode: the loss and its gradient with respect to the inputs (no parameter gradients).",
        [FN_EVAL_GRAD] = "Eval mode: forward, then backward; every parameter gradient into net->grad.",
        [FN_ENTRY] = "Extra entry point: reads in[], writes out[] (nb rows each).",
    };
    /* the body first (aside), so the prologue declares only what it uses */
    FILE *out = e->f;
    Spool body;
    e->f = e_spool_open(&body);
    e->used_A = e->used_P = e->used_G = e->used_nb = e->used_in = false;
    e->indent = 1;
    for (int i = 0; i < g->len; i++) {
        const Node *n = &g->n[i];
        if (n->flags & NF_DEAD) continue;
        if (!u[i] && n->op != OP_LOOP) continue;
        ArenaMark mark = arena_mark(cc_arena);  /* a node's strings die with its lines */
        emit_node(e, i);
        arena_release(cc_arena, mark);
    }
    /* results */
    if (fn->kind == FN_TRAIN || fn->kind == FN_EVAL_GRAD) {
        for (int p = 0; p < m->nparams; p++) {
            if (m->params[p].state) continue;
            int q = g->pgrad[p];
            int64_t numel = shape_numel(&m->params[p].shape);
            e->used_G = e->used_G || q < 0 || !fn->plan->external[q];
            if (q < 0) e_line(e, "memset(G + %lld, 0, %lld * sizeof(%s));  /* %s: the loss does not depend on it */",
                              (long long)e->slab_off[p], (long long)numel, e_real(e), m->params[p].name);
            else if (!fn->plan->external[q]) e_line(e, "memcpy(G + %lld, %s, %lld * sizeof(%s));  /* gradient of %s */",
                                          (long long)e->slab_off[p], e->name[q], (long long)numel, e_real(e), m->params[p].name);
        }
    }
    if (fn->kind == FN_INPUT_GRAD) {
        for (int k = 0; k < m->ninputs; k++) {
            const Node *in = &m->g->n[m->inputs[k]];
            if (in->dtype != DT_REAL) continue;
            int q = g->igrad[k];
            e->body = NULL;
            if (q < 0) e_line(e, "memset(net->in_grad[%d], 0, (size_t)(%s) * sizeof(%s));", k, e_numel(e, m->inputs[k]), e_real(e));
            else if (!fn->plan->external[q])
                e_line(e, "memcpy(net->in_grad[%d], %s, (size_t)(%s) * sizeof(%s));  /* d loss / d %s */", k, e->name[q],
                        e_numel(e, m->inputs[k]), e_real(e), in->name);
        }
    }
    if (fn->kind == FN_ENTRY) {
        for (int k = 0; k < fn->entry->nouts; k++)
            e_line(e, "memcpy(out[%d], %s, (size_t)(%s) * sizeof(%s));", k, e->name[fn->entry->outs[k]],
                   e_numel(e, fn->entry->outs[k]), e_ctype(e, &g->n[fn->entry->outs[k]]));
    } else {
        for (int k = 0; k < m->noutputs; k++) e_line(e, "net->out[%d] = %s;", k, e->name[m->outputs[k]]);
        if (m->loss >= 0) e_line(e, "net->loss = %s[0];", e->name[m->loss]);
        if (fn->kind != FN_EVAL) e_line(e, "return net->loss;");
    }
    e->f = out;
    fprintf(e->f, "\n/* %s\n * Activation arena: %lld bytes. */\n", doc[fn->kind], (long long)fn->plan->bytes);
    if (fn->kind == FN_ENTRY)
        fprintf(e->f, "static void %s(cdl_net *net, int nb, const void *const *in, void *const *out)\n{\n", cname);
    else if (fn->kind == FN_EVAL) fprintf(e->f, "static void %s(cdl_net *net, int nb)\n{\n", cname);
    else fprintf(e->f, "static double %s(cdl_net *net, int nb)\n{\n", cname);
    if (e->used_A) e_line(e, "char *A = net->act;");
    if (e->used_P) e_line(e, "%s *P = net->param;", e_real(e));
    if (e->used_G) e_line(e, "%s *G = net->grad;", e_real(e));
    if (fn->kind == FN_ENTRY && !(e->used_A || e->used_P)) e_line(e, "(void)net;");
    if (fn->kind == FN_ENTRY && !e->used_in) e_line(e, "(void)in;  /* the entry reads none of its arguments */");
    if (!e->used_nb) e_line(e, "(void)nb;  /* every size here is a constant */");
    e_spool_copy(&body, e->f);
    fprintf(e->f, "}\n");
}

/* ------------------------------------------------------------------ driver */

/* The C of a pipeline being written: emit_c_begin writes the header, the prologue and
 * the tables, emit_c_function one function, emit_c_end the descriptor. */
struct EmitC {
    Emit e;
    EmitLayout L;
    const Pipeline *p;
    bool with_main;
};

EmitC *emit_c_begin(const Pipeline *p, FILE *cf, FILE *hf, bool with_main, const char *header_name) {
    const Model *m = p->m;
    EmitC *c = NEW(EmitC);
    c->p = p;
    c->with_main = with_main;
    c->e = (Emit){.f = cf, .m = m, .real_size = p->real_size, .loop = -1};
    c->L = emit_layout(m);
    c->e.slab_off = c->L.slab;
    emit_header(hf, m, header_name, false);
    emit_prologue(cf, m, header_name,
                  cc_str(" * Forward and backward passes for this exact model: every shape is a constant but the\n"
                         " * batch nb (at most %lld); parameters, gradients and activations live in flat slabs\n"
                         " * carved once by cdl_net_new, so a training step allocates nothing.",
                         (long long)m->batch));
    emit_tables(cf, m, p->real_size, &c->L);
    return c;
}

void emit_c_function(EmitC *c, const Fn *fn) { emit_function(&c->e, fn); }

void emit_c_end(EmitC *c) {
    const Model *m = c->p->m;
    FILE *cf = c->e.f;
    if (m->loss >= 0 && !pipeline_modes_differ(m->g))
        fprintf(cf, "\n/* Eval mode: no dropout, sampling or batch norm here, so train mode's gradient. */\n"
                    "static double %s_fwd_bwd_eval(cdl_net *net, int nb) { return %s_fwd_bwd(net, nb); }\n",
                m->name, m->name);
    emit_descriptor(cf, m, c->p->real_size, &c->L, c->p->act_bytes, "", c->with_main);
}

/* Write MODEL.c to cf and MODEL.h to hf. */
void emit_c(const Pipeline *p, FILE *cf, FILE *hf, bool with_main, const char *header_name) {
    EmitC *c = emit_c_begin(p, cf, hf, with_main, header_name);
    for (int k = 0; k < p->nfn; k++) emit_c_function(c, &p->fn[k]);
    emit_c_end(c);
}
