/* pipeline.c -- the functions a model compiles to, and the passes between the
 * elaborated model and the emitters.
 *
 * A model becomes several C functions, each from its own copy of a graph: the eval
 * forward, the train step (forward and backward), the input gradient and one per extra
 * entry (static target), or the record graphs the tape runs (--target=tape).  Each pass
 * below runs over every function; main.c calls them in order and can dump the graphs
 * between any two (--dump-after), pipeline_build calls the same sequence for callers
 * that compile in memory.  Emitters read the result and change nothing.
 */
#include "cdlc.h"

#include <string.h>

/* An eval-mode function's graph: dropout is the identity there, so it becomes an
 * IDENTITY view of its input (no copy, no buffer, the gradient passes through). */
static void eval_mode(Graph *g) {
    for (int i = 0; i < g->len; i++) {
        Node *n = &g->n[i];
        if (n->sub) eval_mode(n->sub);
        if (n->op != OP_DROPOUT) continue;
        n->op = OP_IDENTITY;
        if (!n->var) n->var = "dropout";   /* the C still says what it was */
        memset(n->ia, 0, sizeof n->ia);
        memset(n->fa, 0, sizeof n->fa);
    }
}

/* cdlc.h */
bool pipeline_modes_differ(const Graph *g) {
    for (int i = 0; i < g->len; i++) {
        const Node *n = &g->n[i];
        if (n->sub && pipeline_modes_differ(n->sub)) return true;
        if (n->op == OP_DROPOUT || n->op == OP_BATCHNORM || n->op == OP_RAND || n->op == OP_RANDN) return true;
    }
    return false;
}

static void add_fn(Pipeline *p, FnKind kind, const Graph *src, const EntryFn *entry) {
    p->fn[p->nfn++] = (Fn){.kind = kind, .entry = entry, .src = src};
}

/* Function fn's own copy of its graph, in the mode it runs in. */
static void clone_fn(Fn *fn) {
    fn->g = ir_clone(fn->src);
    if (fn->kind == FN_ENTRY)
        for (int k = 0; k < fn->entry->nouts; k++) fn->g->n[fn->entry->outs[k]].flags |= NF_OUTPUT;
    if (fn->kind == FN_EVAL || fn->kind == FN_INPUT_GRAD || fn->kind == FN_EVAL_GRAD || fn->kind == FN_ENTRY) eval_mode(fn->g);
}

Pipeline *pipeline_new(const Model *m, int real_size, bool tape) {
    Pipeline *p = NEW(Pipeline);
    *p = (Pipeline){.m = m, .real_size = real_size, .tape = tape, .fn = NEWN(Fn, 4 + m->nentries)};
    if (tape) {
        add_fn(p, FN_RECORD, m->g, NULL);
    } else {
        add_fn(p, FN_EVAL, m->g, NULL);
        if (m->loss >= 0) {
            add_fn(p, FN_TRAIN, m->g, NULL);
            add_fn(p, FN_INPUT_GRAD, m->g, NULL);
            if (pipeline_modes_differ(m->g)) add_fn(p, FN_EVAL_GRAD, m->g, NULL);
        }
    }
    for (int k = 0; k < m->nentries; k++) add_fn(p, FN_ENTRY, m->entries[k].g, &m->entries[k]);
    return p;
}

Pipeline *pipeline_clone(const Model *m, int real_size, bool tape) {
    Pipeline *p = pipeline_new(m, real_size, tape);
    for (int k = 0; k < p->nfn; k++) clone_fn(&p->fn[k]);
    return p;
}

/* The tape differentiates at run time: its record graphs get no gradient nodes. */
static void autodiff_fn(const Pipeline *p, Fn *fn) {
    if (fn->kind == FN_TRAIN || fn->kind == FN_EVAL_GRAD) ad_run(p->m, fn->g, true, false);
    if (fn->kind == FN_INPUT_GRAD) ad_run(p->m, fn->g, false, true);
}

void pipeline_autodiff(Pipeline *p) {
    for (int k = 0; k < p->nfn; k++) autodiff_fn(p, &p->fn[k]);
}

void pipeline_verify(Pipeline *p) {
    for (int k = 0; k < p->nfn; k++) ir_verify(p->fn[k].g);
}

/* The static target's optimisation passes over one function's graph: convolution
 * epilogue fusion, opt_run (CSE, dead code, in-place marking), then the pairing of each
 * convolution's backward kernels into one conv2d_bwd_xw call (the fusion and the
 * pairing not for the inference export, whose kernels have no fused ops). */
static void opt_fn(const Pipeline *p, Fn *fn) {
    if (!p->infer) opt_fuse_conv(fn->g);
    opt_run(fn->g);
    if (!p->infer) opt_pair_conv(fn->g);
}

/* The tape runs the graph as written, op by op: no rewriting. */
void pipeline_opt(Pipeline *p) {
    if (p->tape) return;
    for (int k = 0; k < p->nfn; k++) opt_fn(p, &p->fn[k]);
}

static void plan_fn(Pipeline *p, Fn *fn) {
    fn->plan = plan_run(fn->g, p->real_size);
    if (fn->plan->bytes > p->act_bytes) p->act_bytes = fn->plan->bytes;
}

/* Static: every function's buffers; the arena is the largest function's (they never
 * run at once).  Tape: the arena bound of the largest record graph. */
void pipeline_plan(Pipeline *p) {
    if (p->tape) {
        Graph **g = NEWN(Graph *, p->nfn + 1);
        for (int k = 0; k < p->nfn; k++) g[k] = p->fn[k].g;
        p->act_bytes = plan_tape_bytes(g, p->nfn, (int64_t)p->m->nparams + p->m->ninputs, p->real_size);
        return;
    }
    p->act_bytes = 64;
    for (int k = 0; k < p->nfn; k++) plan_fn(p, &p->fn[k]);
}

Pipeline *pipeline_build(const Model *m, int real_size, bool tape) {
    Pipeline *p = pipeline_clone(m, real_size, tape);
    pipeline_autodiff(p);
    pipeline_verify(p);
    pipeline_opt(p);
    pipeline_plan(p);
    return p;
}

/* cdlc.h.  The functions' passes in pipeline_build's order, one function at a time
 * (functions do not depend on each other: the same graphs and plans). */
void pipeline_emit_c(Pipeline *p, FILE *cf, FILE *hf, bool with_main, const char *header_name) {
    if (p->tape) die("pipeline_emit_c: the tape target has no per-function passes");
    p->act_bytes = 64;
    for (int k = 0; k < p->nfn; k++)
        if (p->fn[k].plan && p->fn[k].plan->bytes > p->act_bytes) p->act_bytes = p->fn[k].plan->bytes;
    EmitC *c = emit_c_begin(p, cf, hf, with_main, header_name);
    for (int k = 0; k < p->nfn; k++) {
        Fn *fn = &p->fn[k];
        if (fn->plan) {
            emit_c_function(c, fn);
            continue;
        }
        ArenaMark mark = arena_mark(cc_arena);
        clone_fn(fn);
        autodiff_fn(p, fn);
        ir_verify(fn->g);
        opt_fn(p, fn);
        plan_fn(p, fn);
        emit_c_function(c, fn);
        arena_release(cc_arena, mark);   /* the graph, its plan and everything between */
        fn->g = NULL;
        fn->plan = NULL;
    }
    emit_c_end(c);
}

const char *pipeline_kind_name(FnKind k) {
    static const char *names[] = {[FN_EVAL] = "eval", [FN_TRAIN] = "train", [FN_INPUT_GRAD] = "input gradient",
                                  [FN_EVAL_GRAD] = "eval-mode gradient",
                                  [FN_ENTRY] = "entry", [FN_RECORD] = "tape record"};
    return names[k];
}

void pipeline_dump(FILE *f, const Pipeline *p, const char *pass) {
    for (int k = 0; k < p->nfn; k++) {
        const Fn *fn = &p->fn[k];
        const char *what = fn->entry ? cc_str("entry %s", fn->entry->name) : pipeline_kind_name(fn->kind);
        ir_dump(f, fn->g, cc_str("%s graph after %s", what, pass));
    }
}
