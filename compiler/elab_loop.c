/* elab_loop.c -- loops: `for t in a..b { }` becomes one LOOP node whose body graph is
 * elaborated once: carried variables (assigned in the body, defined before) are
 * LOOP_CARRY nodes inside and LOOP_OUT nodes after; outer values are LOOP_CAPTURE
 * nodes; `hs[t] = v` collects v over the steps.
 */
#include "cdlc.h"

#include <string.h>

static void collect_carried(Elab *e, Loop *L, const AstList *body) {
    for (int i = 0; i < body->n; i++) {
        const Ast *s = body->v[i];
        if (s->kind != S_ASSIGN) continue;
        for (int k = 0; k < s->list.n; k++) {
            const char *name = s->list.v[k]->name;
            bool seen = false;
            for (int j = 0; j < L->ncarry; j++)
                if (strcmp(L->cname[j], name) == 0) seen = true;
            Scope *home;
            Sym *y = seen ? NULL : el_lookup(e->scope, name, &home);
            if (!y || (y->kind != SYM_VAR && y->kind != SYM_INPUT && y->kind != SYM_PARAM)) continue;
            Value v = y->v;
            if (v.k == V_PARAM) v = el_tensor(e, el_param_node(e, (int)v.i, s->loc));
            if (v.k != V_TENSOR && v.k != V_ERR) {
                error_at(s->list.v[k]->loc, "'%s' is assigned in the loop and defined before it, so it is carried "
                                            "from step to step; a carried variable must be a tensor, not %s",
                         name, el_describe(e, v));
                v = el_err();
            }
            int c = L->ncarry, c2 = L->ncarry, c3 = L->ncarry, c4 = L->ncarry;
            L->cname = el_grow(L->cname, &c, L->ncarry + 1, sizeof(char *));
            L->chome = el_grow(L->chome, &c2, L->ncarry + 1, sizeof(Scope *));
            L->cinit = el_grow(L->cinit, &c3, L->ncarry + 1, sizeof(Value));
            L->cloc = el_grow(L->cloc, &c4, L->ncarry + 1, sizeof(Loc));
            L->cname[L->ncarry] = name;
            L->chome[L->ncarry] = home;
            L->cinit[L->ncarry] = v;
            L->cloc[L->ncarry] = s->list.v[k]->loc;
            L->ncarry++;
        }
    }
}

/* What the loop stacks for collected body value id.  A carried value (or a view of one)
 * has no storage of its own: it is the previous step's slot, or at the first step the
 * initial value outside the loop, so no single stride reads the steps back after the
 * loop (hs[t] = h before h changes stacked garbage).  It is collected through a copy, a
 * broadcast to its own shape. */
static int collect_source(Graph *body, int id) {
    int j = id;
    while (op_info[body->n[j].op].flags & OPF_VIEW) j = body->n[j].in[0];
    if (body->n[j].op != OP_LOOP_CARRY) return id;
    Shape sh = body->n[id].shape;
    int c = ir_add(body, OP_BROADCAST, body->n[id].loc, 1, &id, NULL, &sh, body->n[id].dtype);
    return c >= 0 ? c : id;
}

void el_stmt_collect(Elab *e, const Ast *s) {
    Loop *L = e->loop;
    if (!L) {
        error_at(s->loc, "'%s[...] = ...' collects a value per loop step; it is allowed only inside a loop", s->name);
        return;
    }
    Value ix = el_eval(e, s->a);
    if (ix.k == V_ERR) return;
    if (ix.k != V_INDEX || ix.bfac != 1 || ix.i != 0) {
        error_at(s->a->loc, "collect with the loop index itself: %s[%s] = ...", s->name, L->var);
        return;
    }
    for (int j = 0; j < L->ncollect; j++)
        if (strcmp(L->kname[j], s->name) == 0) {
            error_at(s->loc, "'%s' is collected twice in one loop (first at %s)", s->name, el_where(L->kloc[j], s->loc));
            return;
        }
    Sym *y = el_lookup(L->scope->parent, s->name, NULL);
    if (y) {
        error_at(s->loc, "'%s' is already defined at %s; collect into a new name", s->name, el_where(y->loc, s->loc));
        return;
    }
    if (el_scope_here(L->scope, s->name)) {
        error_at(s->loc, "'%s' is a variable of the loop body; collect into a new name", s->name);
        return;
    }
    Value v = el_eval(e, s->b);
    if (v.k == V_ERR) return;
    if (v.k == V_PARAM) v = el_tensor(e, el_param_node(e, (int)v.i, s->loc));
    if (v.k != V_TENSOR) {
        error_at(s->b->loc, "only tensors can be collected, got %s", el_describe(e, v));
        return;
    }
    v = el_tensor(e, el_node_of(e, v));
    int c = L->kcap, c2 = L->kcap;
    L->kname = el_grow(L->kname, &c, L->ncollect + 1, sizeof(char *));
    L->kval = el_grow(L->kval, &c2, L->ncollect + 1, sizeof(Value));
    L->kloc = el_grow(L->kloc, &L->kcap, L->ncollect + 1, sizeof(Loc));
    L->kname[L->ncollect] = s->name;
    L->kval[L->ncollect] = v;
    L->kloc[L->ncollect++] = s->loc;
    el_define(L->scope, s->name, SYM_COLLECT, el_err(), s->loc);
}

static bool range_bound(Elab *e, const Ast *a, int64_t *out) {
    Value v = el_eval(e, a);
    if (v.k == V_ERR) return false;
    if (v.k != V_NUM || !v.isint) {
        error_at(a->loc, "loop bounds must be integer constants, got %s", el_describe(e, v));
        return false;
    }
    *out = v.i;
    return true;
}

void el_stmt_for(Elab *e, const Ast *s, Ctx ctx) {
    if (e->loop) {
        error_at(s->loc, "nested loops are not supported");
        return;
    }
    const Ast *r = s->a;
    int64_t lo, hi;
    bool okb = range_bound(e, r->a, &lo);
    if (!range_bound(e, r->b, &hi) || !okb) return;
    if (hi <= lo) {
        error_at(r->loc, "empty loop range %lld..%lld", (long long)lo, (long long)hi);
        return;
    }
    if (hi - lo > INT32_MAX) {
        error_at(r->loc, "loop range %lld..%lld is too long", (long long)lo, (long long)hi);
        return;
    }
    Loop *L = NEW(Loop);
    L->outer = e->g;
    L->body = ir_body_new(e->g);
    L->loc = s->loc;
    L->var = s->name;
    L->tlo = lo;
    L->thi = hi - 1;
    L->scope = el_scope_new(e->scope);
    int errs = diag_error_count();
    collect_carried(e, L, &s->list);

    Graph *sg = e->g;
    Scope *ss = e->scope;
    e->loop = L;
    e->g = L->body;
    e->scope = L->scope;
    for (int k = 0; k < L->ncarry; k++) {
        Value v = L->cinit[k];
        if (v.k != V_TENSOR) {
            el_define(L->scope, L->cname[k], SYM_VAR, el_err(), L->cloc[k]);
            continue;
        }
        const Node *o = &v.g->n[v.id];
        Attrs at = {.i = {k}};
        int id = ir_add(L->body, OP_LOOP_CARRY, o->loc, 0, NULL, &at, &o->shape, o->dtype);
        if (id >= 0) L->body->n[id].var = L->cname[k];
        el_define(L->scope, L->cname[k], SYM_VAR, el_tensor(e, id), L->cloc[k]);
    }
    el_define(L->scope, s->name, SYM_INDEX, (Value){.k = V_INDEX, .bfac = 1}, s->loc);
    el_stmts(e, &s->list, ctx, NULL, NULL);
    e->loop = NULL;
    e->g = sg;
    e->scope = ss;

    /* Results: final carried values, then collected ones. */
    int nres = L->ncarry + L->ncollect;
    int *res = NEWN(int, nres + 1);
    bool ok = diag_error_count() == errs;
    for (int k = 0; k < L->ncarry; k++)
        if (L->cinit[k].k != V_TENSOR) ok = false;
    for (int k = 0; ok && k < L->ncarry; k++) {
        Sym *y = el_scope_here(L->scope, L->cname[k]);
        Value v = y->v;
        if (v.k != V_TENSOR) {
            if (v.k != V_ERR) error_at(y->loc, "'%s' is carried over the loop steps; it must stay a tensor", y->name);
            ok = false;
            break;
        }
        if (v.g != L->body) die("carried value outside the body");
        const Node *a = &L->outer->n[L->cinit[k].id], *b = &L->body->n[v.id];
        if (!shape_eq(&a->shape, &b->shape) || a->dtype != b->dtype) {
            error_at(y->loc, "loop-carried variable '%s' changes shape: %s%s before the loop, %s%s after a step",
                     y->name, el_dtype_name(a->dtype), shape_str(&a->shape), el_dtype_name(b->dtype), shape_str(&b->shape));
            ok = false;
            break;
        }
        res[k] = v.id;
    }
    for (int j = 0; ok && j < L->ncollect; j++) res[L->ncarry + j] = collect_source(L->body, L->kval[j].id);
    int loop = -1;
    if (ok && nres == 0) {
        warning_at(s->loc, "this loop has no effect: it changes no variable defined before it and collects nothing");
        ok = false;
    }
    if (ok) {
        L->body->res = res;
        L->body->nres = nres;
        L->body->ncarry = L->ncarry;
        int nin = L->ncarry + L->ncap;
        int *in = NEWN(int, nin + 1);
        for (int k = 0; k < L->ncarry; k++) in[k] = L->cinit[k].id;
        for (int j = 0; j < L->ncap; j++) in[L->ncarry + j] = L->cap_outer[j];
        bool rev = r->op == 1;
        Attrs at = {.i = {rev ? hi - 1 : lo, hi - lo, rev ? -1 : 1}};
        loop = ir_add_loop(e->g, s->loc, nin, in, &at, L->body);
    }
    /* Rebind carried names to the loop's outputs; define the collections. */
    for (int k = 0; k < L->ncarry; k++) {
        Sym *y = el_scope_here(L->chome[k], L->cname[k]);
        Value v = el_err();
        if (loop >= 0) {
            Shape sh = e->g->n[L->cinit[k].id].shape;
            Attrs at = {.i = {k}};
            int id = el_add(e, OP_LOOP_OUT, L->cloc[k], 1, &loop, &at, &sh, e->g->n[L->cinit[k].id].dtype);
            if (id >= 0) e->g->n[id].var = L->cname[k];
            v = el_tensor(e, id);
        }
        y->kind = SYM_VAR;
        y->v = v;
    }
    for (int j = 0; j < L->ncollect; j++) {
        Value v = el_err();
        if (loop >= 0) {
            const Node *b = &L->body->n[L->kval[j].id];
            Shape h = {.rank = b->shape.rank + 1, .batched = b->shape.batched};
            int at0 = b->shape.batched ? 1 : 0;
            for (int i = 0, k = 0; i < h.rank && i < MAXDIM; i++) h.d[i] = i == at0 ? hi - lo : b->shape.d[k++];
            Attrs at = {.i = {L->ncarry + j}};
            int id = el_add(e, OP_LOOP_OUT, L->kloc[j], 1, &loop, &at, &h, b->dtype);
            if (id >= 0) e->g->n[id].var = L->kname[j];
            v = el_tensor(e, id);
        }
        el_define(e->scope, L->kname[j], SYM_VAR, v, L->kloc[j]);
    }
}
