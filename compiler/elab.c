/* elab.c -- elaboration: from the syntax tree of the last model in a file to a Model
 * (main graph, entry graphs, parameter table), through ir_add, which shape-checks each
 * node as it is made.  This file holds expressions, statements, entries and the model;
 * elab_core.c values, scopes and parameters; elab_call.c calls and blocks; elab_loop.c
 * loops; builtins.c the built-in functions and layers.
 *
 * Each function (main graph, each entry) starts with fresh instance counters, so an
 * entry's first decode(...) names (and shares) the main graph's first decode(...)'s
 * parameters.
 */
#include "cdlc.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------ indexing */

static bool idx_int(Elab *e, const Ast *a, const char *what, int64_t *out, bool *present) {
    *present = a != NULL;
    if (!a) return true;
    Value v = el_eval(e, a);
    if (v.k == V_ERR) return false;
    if (v.k != V_NUM || !v.isint) {
        error_at(a->loc, "slice %s must be an integer constant, got %s", what, el_describe(e, v));
        return false;
    }
    *out = v.i;
    return true;
}

static Value index_seq(Elab *e, Value base, const Ast *ix) {
    if (ix->list.n != 1 || ix->list.v[0]->kind == A_SLICE) {
        error_at(ix->loc, "a %s takes one integer index", base.k == V_TUPLE ? "tuple" : "list");
        return el_err();
    }
    Value k = el_eval(e, ix->list.v[0]);
    if (k.k == V_ERR) return k;
    if (k.k != V_NUM || !k.isint) {
        error_at(ix->loc, "index must be an integer constant, got %s", el_describe(e, k));
        return el_err();
    }
    int64_t i = k.i < 0 ? k.i + base.n : k.i;
    if (i < 0 || i >= base.n) {
        error_at(ix->loc, "index %lld is out of range for %s", (long long)k.i, el_describe(e, base));
        return el_err();
    }
    return base.v[i];
}

/* x[items]: integer and loop-index items drop their axis; a:b:c slices keep it. */
static Value index_tensor(Elab *e, Value base, const Ast *ix) {
    int x = el_node(e, base, "[]", "x", ix->loc);
    if (x < 0) return el_err();
    int rank = e->g->n[x].shape.rank;
    if (ix->list.n > rank) {
        error_at(ix->loc, "too many indices (%d) for a tensor of rank %d", ix->list.n, rank);
        return el_err();
    }
    int axis = 0;
    for (int k = 0; k < ix->list.n; k++) {
        const Ast *it = ix->list.v[k];
        const Node *n = &e->g->n[x];
        int64_t dim = n->shape.d[axis];
        bool batch_axis = axis == 0 && n->shape.batched;
        Attrs at = {.i = {axis, 0, dim, 1, 0, 0}};
        if (it->kind == A_SLICE) {
            int64_t lo = 0, hi = dim, st = 1;
            bool plo, phi, pst;
            if (!idx_int(e, it->a, "start", &lo, &plo) || !idx_int(e, it->b, "stop", &hi, &phi) ||
                !idx_int(e, it->c, "step", &st, &pst))
                return el_err();
            if (lo < 0) lo += dim;
            if (hi < 0) hi += dim;
            if (!phi) hi = dim;
            if (st <= 0 || lo < 0 || hi > dim || lo >= hi) {
                error_at(it->loc, "slice %lld:%lld:%lld is empty or out of range for axis %d of size %lld",
                         (long long)lo, (long long)hi, (long long)st, axis, (long long)dim);
                return el_err();
            }
            if (lo == 0 && hi == dim && st == 1) {
                axis++;
                continue;
            }
            if (batch_axis) {
                error_at(it->loc, "cannot slice the batch axis of a batched tensor");
                return el_err();
            }
            at.i[1] = lo;
            at.i[2] = hi;
            at.i[3] = st;
            x = el_add(e, OP_SLICE, it->loc, 1, &x, &at, NULL, n->dtype);
            if (x < 0) return el_err();
            axis++;
            continue;
        }
        Value v = el_eval(e, it);
        if (v.k == V_ERR) return v;
        if (batch_axis) {
            error_at(it->loc, "cannot index the batch axis of a batched tensor");
            return el_err();
        }
        if (v.k == V_INDEX) {
            Loop *L = e->loop;
            if (!L) die("loop index outside its loop");
            int64_t a0 = v.i + v.bfac * L->tlo, a1 = v.i + v.bfac * L->thi;
            int64_t mn = a0 < a1 ? a0 : a1, mx = a0 < a1 ? a1 : a0;
            if (mn < 0 || mx >= dim) {
                error_at(it->loc, "index goes from %lld to %lld over the loop, out of range for axis %d of size %lld",
                         (long long)a0, (long long)a1, axis, (long long)dim);
                return el_err();
            }
            at.i[1] = v.i;
            at.i[2] = v.i + 1;
            at.i[4] = 1;
            at.i[5] = v.bfac;
        } else if (v.k == V_NUM && v.isint) {
            int64_t i = v.i < 0 ? v.i + dim : v.i;
            if (i < 0 || i >= dim) {
                error_at(it->loc, "index %lld is out of range for axis %d of size %lld", (long long)v.i, axis,
                         (long long)dim);
                return el_err();
            }
            at.i[1] = i;
            at.i[2] = i + 1;
            at.i[4] = 1;
        } else {
            error_at(it->loc, "an index must be an integer constant or the loop index, got %s", el_describe(e, v));
            return el_err();
        }
        x = el_add(e, OP_SLICE, it->loc, 1, &x, &at, NULL, n->dtype);
        if (x < 0) return el_err();
    }
    return el_tensor(e, x);
}

/* ------------------------------------------------------------------ expressions */

static Value eval_name(Elab *e, const Ast *a) {
    Sym *y = el_lookup(e->scope, a->name, NULL);
    if (!y) {
        if (el_find_block(e, a->name) || builtin_find(a->name)) return (Value){.k = V_FUNC, .s = a->name};
        error_at(a->loc, "undefined name '%s'%s", a->name, el_did_you_mean(e, a->name, true));
        return el_err();
    }
    switch (y->kind) {
    case SYM_COLLECT:
        error_at(a->loc, "'%s' collects values over the loop; it can be read only after the loop", a->name);
        return el_err();
    case SYM_PARAM: return el_tensor(e, el_param_node(e, (int)y->v.i, a->loc));
    default: break;
    }
    Value v = y->v;
    if (v.k == V_TENSOR && v.g != e->g && !(e->loop && v.g == e->loop->outer)) {
        error_at(a->loc, "'%s' is computed in the model body; an entry can use only its arguments, the model's "
                         "constants and its parameters",
                 a->name);
        return el_err();
    }
    if (v.k == V_TENSOR && v.g != e->g) return el_tensor(e, el_node_of(e, v));
    return v;
}

/* x.shape: the dimensions of a tensor as a list of constants (see el_dim_value). */
static Value eval_attr(Elab *e, const Ast *a) {
    Value b = el_eval(e, a->a);
    if (b.k == V_ERR) return b;
    if (strcmp(a->name, "shape") != 0) {
        error_at(a->loc, "unknown attribute '.%s' (a tensor has .shape)", a->name);
        return el_err();
    }
    Shape sh;
    if (!el_value_shape(e, b, ".shape", "x", a->loc, &sh)) return el_err();
    Value v = {.k = V_LIST, .n = sh.rank, .v = NEWN(Value, sh.rank + 1)};
    for (int i = 0; i < sh.rank; i++) v.v[i] = el_dim_value(e, &sh, i);
    return v;
}

Value el_eval(Elab *e, const Ast *a) {
    switch (a->kind) {
    case A_ERR: return el_err();
    case A_INT: return el_int_value(a->ival, 0);
    case A_REAL: return el_real_value(a->rval);
    case A_STR: return (Value){.k = V_STR, .s = a->text};
    case A_BOOL: return (Value){.k = V_BOOL, .i = a->ival};
    case A_NAME: return eval_name(e, a);
    case A_NEG: {
        Value v = el_eval(e, a->a);
        if (v.k == V_NUM) return el_num_neg(v);
        if (v.k == V_INDEX) return (Value){.k = V_INDEX, .i = -v.i, .bfac = -v.bfac};
        if (v.k == V_ERR) return v;
        int x = el_real_node(e, v, "-", "x", a->loc);
        return el_tensor(e, el_add(e, OP_NEG, a->loc, 1, &x, NULL, NULL, DT_REAL));
    }
    case A_BIN: {
        Value l = el_eval(e, a->a);
        Value r = el_eval(e, a->b);
        return el_arith(e, a->op, l, r, a->loc);
    }
    case A_PIPE: {
        Value l = el_eval(e, a->a);
        if (l.k == V_ERR) return l;
        const Ast *r = a->b;
        if (r->kind == A_NAME) return el_call(e, r->name, NULL, &l, r->loc);
        if (r->kind == A_CALL) return el_call(e, r->name, r, &l, r->loc);
        if (r->kind == A_ERR) return el_err();
        error_at(r->loc, "the right side of '|>' must be a function name or a call");
        return el_err();
    }
    case A_CALL: return el_call(e, a->name, a, NULL, a->loc);
    case A_INDEX: {
        Value b = el_eval(e, a->a);
        if (b.k == V_ERR) return b;
        if (b.k == V_TUPLE || b.k == V_LIST) return index_seq(e, b, a);
        if (b.k != V_TENSOR && b.k != V_PARAM) {
            error_at(a->loc, "cannot index %s", el_describe(e, b));
            return el_err();
        }
        return index_tensor(e, b, a);
    }
    case A_ATTR: return eval_attr(e, a);
    case A_LIST: {
        Value v = {.k = V_LIST, .n = a->list.n, .v = NEWN(Value, a->list.n + 1)};
        for (int i = 0; i < a->list.n; i++) {
            v.v[i] = el_eval(e, a->list.v[i]);
            if (v.v[i].k == V_ERR) return el_err();
        }
        return v;
    }
    case A_SLICE: error_at(a->loc, "a slice a:b can only appear inside []"); return el_err();
    case A_KWARG: error_at(a->loc, "keyword argument outside a call"); return el_err();
    default: die("eval: unexpected %s", ast_kind_name(a->kind));
    }
}

/* ------------------------------------------------------------------ statements */

static const char *ctx_name(Ctx c) { return c == CTX_BLOCK ? "a block" : c == CTX_ENTRY ? "an entry" : "a model"; }

static void perturb_rename(Elab *e, const char *var, int id, Loc loc);

/* Bind the result of an assignment, naming the node after the variable. */
static void assign(Elab *e, const Ast *target, Value v) {
    const char *name = target->name;
    Scope *home;
    Sym *y = el_lookup(e->scope, name, &home);
    if (y && y->kind == SYM_CONST && e->bdepth == 0) {
        error_at(target->loc, "cannot assign to the constant '%s'", name);
        return;
    }
    if (y && y->kind == SYM_INDEX) {
        error_at(target->loc, "cannot assign to the loop index '%s'", name);
        return;
    }
    if (y && y->kind == SYM_COLLECT) {
        error_at(target->loc, "'%s' collects values over the loop; it cannot also be assigned", name);
        return;
    }
    if (v.k == V_PARAM) v = el_tensor(e, el_param_node(e, (int)v.i, target->loc));
    if (v.k == V_NONE) {
        error_at(target->loc, "nothing to assign to '%s'", name);
        v = el_err();
    }
    if (v.k == V_TENSOR && v.g == e->g) {
        Node *n = &e->g->n[v.id];
        if (!n->var && !(n->flags & (NF_INPUT | NF_PARAM | NF_STATE))) {
            n->var = name;
            perturb_rename(e, name, v.id, target->loc);
        }
    }
    el_define(e->scope, name, SYM_VAR, v, target->loc);
}

static bool require_ctx(const Ast *s, Ctx ctx, bool ok_model, bool ok_block, bool ok_entry, const char *what) {
    bool ok = ctx == CTX_MODEL ? ok_model : ctx == CTX_BLOCK ? ok_block : ok_entry;
    if (!ok) error_at(s->loc, "'%s' is not allowed in %s", what, ctx_name(ctx));
    return ok;
}

static bool no_loop(Elab *e, const Ast *s, const char *what) {
    if (!e->loop) return true;
    error_at(s->loc, "'%s' is not allowed inside a loop", what);
    return false;
}

/* Check for a previous definition of name that cannot be replaced. */
static bool fresh_name(Elab *e, const char *name, Loc loc) {
    Sym *y = el_scope_here(e->scope, name);
    if (y && (y->kind == SYM_CONST || y->kind == SYM_INPUT || y->kind == SYM_PARAM)) {
        error_at(loc, "'%s' is already defined at %s", name, el_where(y->loc, loc));
        return false;
    }
    return true;
}

/* A declared type f32[dims] / i32[dims].  io: an input or entry argument, whose dim 0,
 * when batched, must be the batch constant itself (the runtime's descriptor tables and
 * every consumer of them size a batched tensor as nb rows, never k * nb). */
static bool eval_type(Elab *e, const Ast *t, const char *what, bool io, Shape *s, DType *dt) {
    if (strcmp(t->name, "f32") == 0) *dt = DT_REAL;
    else if (strcmp(t->name, "i32") == 0) *dt = DT_I32;
    else {
        error_at(t->loc, "unknown type '%s' (use f32 or i32)", t->name);  /* short: every near miss is listed */
        return false;
    }
    if (t->list.n > MAXDIM) {
        error_at(t->loc, "%s: %d dimensions; at most %d are supported", what, t->list.n, MAXDIM);
        return false;
    }
    *s = (Shape){.rank = t->list.n};
    for (int i = 0; i < t->list.n; i++) {
        Value v = el_eval(e, t->list.v[i]);
        if (v.k == V_ERR) return false;
        if (v.k != V_NUM || !v.isint) {
            error_at(t->list.v[i]->loc, "%s: dimension %d must be an integer constant, got %s", what, i,
                     el_describe(e, v));
            return false;
        }
        if (v.i <= 0) {
            error_at(t->list.v[i]->loc, "%s: dimension %d must be positive, got %lld", what, i, (long long)v.i);
            return false;
        }
        s->d[i] = v.i;
        if (i == 0 && v.bfac != 0 && e->batch > 0) s->batched = true;
        if (i == 0 && s->batched && io && v.i != e->batch) {
            error_at(t->list.v[0]->loc, "%s: dimension 0 is %lld * %s; inputs and entry arguments must have the "
                     "batch %s itself as dimension 0 (declare [%s, ...] and reshape inside the model)",
                     what, (long long)v.bfac, e->bname, e->bname, e->bname);
            return false;
        }
    }
    return el_dims_ok(t->loc, what, s);
}

static void stmt_input(Elab *e, const Ast *s, Ctx ctx) {
    if (!require_ctx(s, ctx, true, false, false, "input") || !no_loop(e, s, "input")) return;
    if (!fresh_name(e, s->name, s->loc)) return;
    Shape sh;
    DType dt;
    if (!eval_type(e, s->a, cc_str("input '%s'", s->name), true, &sh, &dt)) {
        el_define(e->scope, s->name, SYM_INPUT, el_err(), s->loc);
        return;
    }
    Model *m = e->m;
    Attrs at = {.i = {m->ninputs}};
    int id = ir_add(e->g, OP_INPUT, s->loc, 0, NULL, &at, &sh, dt);
    if (id < 0) return;
    Node *n = &e->g->n[id];
    n->flags |= NF_INPUT;
    n->slot = m->ninputs;
    n->name = s->name;
    n->var = s->name;
    int cap = m->ninputs;
    m->inputs = el_grow(m->inputs, &cap, m->ninputs + 1, sizeof(int));
    m->inputs[m->ninputs++] = id;
    el_define(e->scope, s->name, SYM_INPUT, el_tensor(e, id), s->loc);
}

/* ------------------------------------------------------------------ perturb */

/* The perturbation input called name, or -1. */
static int perturb_named(const Elab *e, const char *name) {
    for (int k = 0; k < e->m->ninputs; k++) {
        const Node *n = &e->m->g->n[e->m->inputs[k]];
        if ((n->flags & NF_PERTURB) && strcmp(n->name, name) == 0) return e->m->inputs[k];
    }
    return -1;
}

/* The delta input of perturbed value x (x = v + delta), or -1. */
static int perturb_delta_of(const Graph *g, int x) {
    const Node *n = &g->n[x];
    return n->op == OP_ADD && n->nin == 2 && (g->n[n->in[1]].flags & NF_PERTURB) ? n->in[1] : -1;
}

/* A delta's name is free, or an error at loc naming the other perturbation. */
static bool perturb_name_free(Elab *e, const char *name, Loc loc) {
    int other = perturb_named(e, name);
    if (other < 0) return true;
    error_at(loc, "perturb: the name '%s' is already used by the perturbation at %s (give this one another name=)",
             name, el_where(e->m->g->n[other].loc, loc));
    return false;
}

/* cdlc.h.  perturb(x, *, name?) = x + delta: delta is a hidden input of x's shape
 * (NF_PERTURB; the runtime's CDL_T_PERTURB: never fed from a dataset, zero unless the
 * runtime writes it), so the input-gradient function returns d loss / d x in its
 * in_grad.  Named NAME.delta: name=, else the variable assigned (assign() renames),
 * else perturb<k>.  In an entry it is the identity (entries have no delta). */
Value el_perturb(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x = el_real_node(e, a[0], b->name, "x", loc);
    if (x < 0) return el_err();
    if (e->entry) return el_tensor(e, x);
    if (e->loop) {
        error_at(loc, "perturb: not inside a loop (perturb the value before the loop, or the stacked result after it)");
        return el_err();
    }
    const Node *xn = el_n(e, x);
    if (!xn->shape.batched) {
        error_at(loc, "perturb: expected a batched tensor [%s, ...] (one perturbation per example), got f32%s",
                 e->bname ? e->bname : "B", shape_str(&xn->shape));
        return el_err();
    }
    if (perturb_delta_of(e->g, x) >= 0) {
        error_at(loc, "perturb: this value is already perturbed (by %s)", e->g->n[perturb_delta_of(e->g, x)].name);
        return el_err();
    }
    const char *inst = el_instance(e, b->base, a[1], loc);
    if (!inst || !perturb_name_free(e, cc_str("%s.delta", inst), loc)) return el_err();
    Model *m = e->m;
    Shape sh = xn->shape;
    Attrs at = {.i = {m->ninputs}};
    int id = el_add(e, OP_INPUT, loc, 0, NULL, &at, &sh, DT_REAL);
    if (id < 0) return el_err();
    Node *n = &e->g->n[id];
    n->flags |= NF_INPUT | NF_PERTURB;
    n->slot = m->ninputs;
    n->name = n->var = cc_str("%s.delta", inst);
    int cap = m->ninputs;
    m->inputs = el_grow(m->inputs, &cap, m->ninputs + 1, sizeof(int));
    m->inputs[m->ninputs++] = id;
    e->perturb_auto = a[1].k == V_NONE ? id + 1 : 0;
    return el_tensor(e, el_add(e, OP_ADD, loc, 2, (int[]){x, id}, NULL, NULL, DT_REAL));
}

/* `v = perturb(...)` without name=: the delta becomes v.delta (in the block's prefix). */
static void perturb_rename(Elab *e, const char *var, int id, Loc loc) {
    int d = perturb_delta_of(e->g, id);
    if (e->perturb_auto == 0 || d != e->perturb_auto - 1) return;
    e->perturb_auto = 0;
    const char *name = cc_str("%s%s.delta", e->inst->prefix, var);
    if (perturb_name_free(e, name, loc)) e->g->n[d].name = e->g->n[d].var = name;
}

/* param name: f32[dims] = init(...).  Initialisers and their CDL_INIT_* kinds. */
static const struct { const char *name; int kind; const char *sig; } inits[] = {
    {"zeros", 0, ""}, {"ones", 1, ""}, {"constant", 2, "value"},
    {"uniform", 3, "a=0 b=1"}, {"normal", 4, "mean=0 std=1"},
    {"xavier_uniform", 5, "gain=1"}, {"glorot_uniform", 5, "gain=1"}, {"glorot", 5, "gain=1"},
    {"xavier_normal", 6, "gain=1"}, {"glorot_normal", 6, "gain=1"},
    {"he_uniform", 7, ""}, {"kaiming_uniform", 7, ""}, {"kaiming", 7, ""},
    {"he_normal", 8, ""}, {"kaiming_normal", 8, ""}, {"default", 9, ""},
};

static void stmt_param(Elab *e, const Ast *s, Ctx ctx) {
    if (!require_ctx(s, ctx, true, true, false, "param")) return;
    if (!fresh_name(e, s->name, s->loc)) return;
    Shape sh;
    DType dt;
    el_define(e->scope, s->name, SYM_PARAM, el_err(), s->loc);
    Sym *y = el_scope_here(e->scope, s->name);
    y->kind = SYM_VAR;
    const char *full = cc_str("%s%s", e->inst->prefix, s->name);
    if (!eval_type(e, s->a, cc_str("param '%s'", s->name), false, &sh, &dt)) return;
    if (dt != DT_REAL) {
        error_at(s->a->loc, "param '%s': parameters are f32", s->name);
        return;
    }
    int64_t rf = 1;
    for (int i = 2; i < sh.rank; i++) rf *= sh.d[i];
    int64_t fan_in = sh.rank == 0 ? 1 : sh.rank == 1 ? sh.d[0] : sh.rank == 2 ? sh.d[0] : sh.d[1] * rf;
    int64_t fan_out = sh.rank == 0 ? 1 : sh.rank == 1 ? sh.d[0] : sh.rank == 2 ? sh.d[1] : sh.d[0] * rf;
    int kind = sh.rank >= 2 ? 5 : 0;
    double a = 0, b = 0;
    const Ast *init = s->b;
    if (init && (init->kind == A_INT || init->kind == A_REAL || init->kind == A_NEG)) {
        Value v = el_eval(e, init);
        if (v.k == V_ERR) return;
        if (v.k != V_NUM) {
            error_at(init->loc, "param '%s': the initial value must be a number", s->name);
            return;
        }
        kind = 2;
        a = v.r;
    } else if (init) {
        const char *iname = init->kind == A_CALL || init->kind == A_NAME ? init->name : NULL;
        int k = -1;
        for (int i = 0; iname && i < (int)(sizeof inits / sizeof inits[0]); i++)
            if (strcmp(inits[i].name, iname) == 0) k = i;
        if (k < 0) {
            const char *names[sizeof inits / sizeof inits[0]];
            for (size_t i = 0; i < sizeof inits / sizeof inits[0]; i++) names[i] = inits[i].name;
            error_at(init->loc, "param '%s': unknown initialiser%s%s%s%s (zeros, ones, constant, uniform, normal, "
                                "xavier_uniform, xavier_normal, he_uniform, he_normal)",
                     s->name, iname ? " '" : "", iname ? iname : "", iname ? "'" : "",
                     diag_did_you_mean(iname, names, (int)(sizeof inits / sizeof inits[0])));
            return;
        }
        Formals f;
        el_sig_formals(inits[k].sig, &f);
        Value args[MAX_FORMALS];
        if (!el_bind_args(e, iname, &f, init->kind == A_CALL ? init : NULL, NULL, init->loc, args)) return;
        kind = inits[k].kind;
        if (f.n > 0 && !el_num(e, args[0], iname, f.name[0], init->loc, &a)) return;
        if (f.n > 1 && !el_num(e, args[1], iname, f.name[1], init->loc, &b)) return;
        if (kind == 4 && b < 0) {
            error_at(init->loc, "normal: std must not be negative");
            return;
        }
    }
    int p = el_declare_param(e, full, sh, kind, a, b, fan_in, fan_out, false, s->loc);
    if (p < 0) return;
    y = el_scope_here(e->scope, s->name);
    y->kind = SYM_PARAM;
    y->v = (Value){.k = V_PARAM, .i = p};
}

/* The outputs of the current function (model or entry). */
static void add_output(Elab *e, int id, const char *name, Loc loc) {
    Node *n = &e->g->n[id];
    int *outs = e->entry ? e->entry->outs : e->m->outputs;
    int nouts = e->entry ? e->entry->nouts : e->m->noutputs;
    for (int i = 0; i < nouts; i++)
        if (strcmp(e->g->n[outs[i]].name, name) == 0) {
            error_at(loc, "duplicate output '%s'", name);
            return;
        }
    if (n->shape.batched && n->shape.d[0] != e->batch) {
        error_at(loc, "output '%s' is %s, whose dimension 0 is %lld * %s; outputs must have the batch %s itself "
                 "as dimension 0 (reshape to [%s, ...])", name, shape_str(&n->shape),
                 (long long)(n->shape.d[0] / e->batch), e->bname, e->bname, e->bname);
        return;
    }
    if (n->flags & (NF_INPUT | NF_PARAM | NF_STATE | NF_OUTPUT)) {
        /* An input, a parameter or another output: give it its own node (a view). */
        Shape sh = n->shape;
        id = el_add(e, OP_RESHAPE, loc, 1, &id, NULL, &sh, n->dtype);
        if (id < 0) return;
        n = &e->g->n[id];
    }
    n->flags |= NF_OUTPUT;
    n->name = name;
    if (!n->var) n->var = name;
    int cap = nouts;
    outs = el_grow(outs, &cap, nouts + 1, sizeof(int));
    outs[nouts++] = id;
    if (e->entry) e->entry->outs = outs, e->entry->nouts = nouts;
    else e->m->outputs = outs, e->m->noutputs = nouts;
}

static void stmt_output(Elab *e, const Ast *s, Ctx ctx, bool short_entry) {
    if (!require_ctx(s, ctx, true, false, true, "output") || !no_loop(e, s, "output")) return;
    Value v = el_eval(e, s->a);
    if (v.k == V_ERR) return;
    if (v.k == V_PARAM) v = el_tensor(e, el_param_node(e, (int)v.i, s->loc));
    const char *name = s->name;
    if (!name && short_entry) name = e->entry->name;
    if (!name && s->a->kind == A_NAME) name = s->a->name;
    if (v.k == V_TUPLE && short_entry) {
        for (int i = 0; i < v.n; i++) {
            int id = el_node(e, v.v[i], "output", "value", s->loc);
            if (id >= 0) add_output(e, id, cc_str("%s%d", name, i), s->loc);
        }
        return;
    }
    if (!name) {
        error_at(s->loc, "this output needs a name: output <expression> as <name>");
        return;
    }
    if (v.k != V_TENSOR) {
        error_at(s->loc, "output '%s' must be a tensor, got %s", name, el_describe(e, v));
        return;
    }
    add_output(e, el_node_of(e, v), name, s->loc);
}

static void stmt_loss(Elab *e, const Ast *s, Ctx ctx) {
    if (!require_ctx(s, ctx, true, false, false, "loss") || !no_loop(e, s, "loss")) return;
    Value v = el_eval(e, s->a);
    if (v.k == V_ERR) return;
    if (v.k != V_TENSOR) {
        error_at(s->loc, "the loss must be a scalar tensor, got %s", el_describe(e, v));
        return;
    }
    int id = el_node_of(e, v);
    Node *n = &e->g->n[id];
    if (n->shape.rank != 0 || n->dtype != DT_REAL) {
        error_at(s->loc, "the loss must be a scalar, got %s%s (reduce it with sum() or mean())", el_dtype_name(n->dtype),
                 shape_str(&n->shape));
        return;
    }
    if (e->m->loss >= 0) {
        error_at(s->loc, "a model has one loss; the first is at %s", el_where(e->loss_loc, s->loc));
        return;
    }
    if (n->flags & (NF_INPUT | NF_PARAM | NF_STATE)) {
        Shape sh = n->shape;
        id = el_add(e, OP_RESHAPE, s->loc, 1, &id, NULL, &sh, n->dtype);
        if (id < 0) return;
        n = &e->g->n[id];
    }
    n->flags |= NF_LOSS;
    if (!n->var) n->var = "loss";
    e->m->loss = id;
    e->loss_loc = s->loc;
}

/* train { key = value ... }: values become strings (optimizer calls in
 * cdl_optim_parse's "sgd:lr=0.1,momentum=0.9" form). */
static const char *train_value(Elab *e, const Ast *a, bool top) {
    if (a->kind == A_INT || a->kind == A_REAL) return a->text;
    if (a->kind == A_NEG && (a->a->kind == A_INT || a->a->kind == A_REAL))
        return cc_str("-%s", a->a->text);
    if (a->kind == A_CALL && top) {
        const char *s = cc_str("%s:", a->name);
        for (int i = 0; i < a->list.n; i++) {
            const Ast *k = a->list.v[i];
            const char *v = train_value(e, k->kind == A_KWARG ? k->a : k, false);
            if (!v) return NULL;
            s = k->kind == A_KWARG ? cc_str("%s%s%s=%s", s, i ? "," : "", k->name, v)
                                   : cc_str("%s%s%s", s, i ? "," : "", v);
        }
        if (a->list.n == 0) s = a->name;
        return s;
    }
    if (a->kind == A_NAME && !el_lookup(e->scope, a->name, NULL)) return a->name;
    Value v = el_eval(e, a);
    switch (v.k) {
    case V_ERR: return NULL;
    case V_NUM: return v.isint ? cc_str("%lld", (long long)v.i) : cc_str("%.17g", v.r);
    case V_STR: return v.s;
    case V_BOOL: return v.i ? "1" : "0";
    default: error_at(a->loc, "train: a setting must be a number, a string, a name or a call, got %s", el_describe(e, v));
    }
    return NULL;
}

/* Keys the generic trainer accepts in a model's defaults (runtime/trainer.c, the
 * options of its train command); it rejects others when the program starts. */
static const char *const train_keys[] = {
    "data", "dataset", "epochs", "batch", "optimizer", "lr", "schedule", "warmup", "clip", "seed", "threads",
    "workers", "save", "resume", "log", "plot", "json", "quiet", "normalize", "augment", "limit", "adversarial",
    "groups", "no_decay", "freeze", NULL};
/* The runtime's optimizers (cdl_optim_parse in runtime/optim.c). */
static const char *const optimizers[] = {"sgd", "adam", "adamw", "rmsprop", "adagrad"};

static void stmt_train(Elab *e, const Ast *s, Ctx ctx) {
    if (!require_ctx(s, ctx, true, false, false, "train") || !no_loop(e, s, "train")) return;
    if (e->seen_train) {
        error_at(s->loc, "duplicate train section");
        return;
    }
    e->seen_train = true;
    Model *m = e->m;
    m->train = NEWN(TrainKV, s->list.n + 1);
    for (int i = 0; i < s->list.n; i++) {
        const Ast *kv = s->list.v[i];
        bool dup = false;
        for (int k = 0; k < m->ntrain; k++)
            if (strcmp(m->train[k].key, kv->name) == 0) dup = true;
        if (dup) {
            error_at(kv->loc, "train: '%s' is set twice", kv->name);
            continue;
        }
        bool known = false;
        for (int k = 0; train_keys[k]; k++) known |= strcmp(train_keys[k], kv->name) == 0;
        if (!known) {
            const char *dym = diag_did_you_mean(kv->name, train_keys, (int)(sizeof train_keys / sizeof *train_keys) - 1);
            error_at(kv->loc, "train: unknown setting '%s'%s (the trainer's options: data, epochs, batch, optimizer, "
                              "lr, schedule, warmup, clip, seed, normalize, augment, adversarial, ...)",
                     kv->name, dym);
            continue;
        }
        if (strcmp(kv->name, "optimizer") == 0) {
            const char *on = kv->a->kind == A_CALL || kv->a->kind == A_NAME ? kv->a->name : "";
            int k = 0, nopt = (int)(sizeof optimizers / sizeof *optimizers);
            while (k < nopt && strcmp(on, optimizers[k]) != 0) k++;
            if (k == nopt) {
                error_at(kv->a->loc, "train: optimizer must be sgd(...), adam(...), adamw(...), rmsprop(...) or "
                                     "adagrad(...)%s", *on ? diag_did_you_mean(on, optimizers, nopt) : "");
                continue;
            }
        }
        if (strcmp(kv->name, "batch") == 0 || strcmp(kv->name, "epochs") == 0) {
            Value v = el_eval(e, kv->a);
            if (v.k == V_ERR) continue;
            if (v.k != V_NUM || !v.isint || v.i <= 0) {
                error_at(kv->a->loc, "train: %s must be a positive integer", kv->name);
                continue;
            }
        }
        const char *v = train_value(e, kv->a, true);
        if (!v) continue;
        m->train[m->ntrain++] = (TrainKV){.key = kv->name, .value = v, .loc = kv->loc};
    }
}

/* ------------------------------------------------------------------ statement lists */

/* The right side of a, b = f(a), g(b): every expression is evaluated before any name is
 * assigned (Python's rule), so g sees the old a. */
static Value tuple_expr(Elab *e, const Ast *s) {
    int n = 1 + s->list2.n;
    Value *v = NEWN(Value, n);
    v[0] = el_eval(e, s->a);
    for (int k = 1; k < n; k++) v[k] = el_eval(e, s->list2.v[k - 1]);
    for (int k = 0; k < n; k++)
        if (v[k].k == V_ERR) return el_err();
    return el_tuple(n, v);
}

void el_stmts(Elab *e, const AstList *body, Ctx ctx, Value *ret, bool *has_ret) {
    for (int i = 0; i < body->n && !e->over; i++) {
        const Ast *s = body->v[i];
        switch (s->kind) {
        case S_ASSIGN: {
            Value v = s->list2.n ? tuple_expr(e, s) : el_eval(e, s->a);
            if (s->list.n == 1) {
                assign(e, s->list.v[0], v);
                break;
            }
            if (v.k != V_TUPLE && v.k != V_ERR) {
                error_at(s->loc, "%d names on the left, but the right side is %s", s->list.n, el_describe(e, v));
                v = el_err();
            } else if (v.k == V_TUPLE && v.n != s->list.n) {
                error_at(s->loc, "%d names on the left, but the right side gives %d values", s->list.n, v.n);
                v = el_err();
            }
            for (int k = 0; k < s->list.n; k++) assign(e, s->list.v[k], v.k == V_TUPLE ? v.v[k] : el_err());
            break;
        }
        case S_COLLECT: el_stmt_collect(e, s); break;
        case S_INPUT: stmt_input(e, s, ctx); break;
        case S_PARAM: stmt_param(e, s, ctx); break;
        case S_OUTPUT: stmt_output(e, s, ctx, false); break;
        case S_LOSS: stmt_loss(e, s, ctx); break;
        case S_TRAIN: stmt_train(e, s, ctx); break;
        case S_FOR: el_stmt_for(e, s, ctx); break;
        case S_ENTRY:
            if (ctx != CTX_MODEL || e->loop) error_at(s->loc, "'entry' is allowed only in a model body");
            /* model-level entries are elaborated after the body (elab_model) */
            break;
        case S_RETURN:
            if (ctx != CTX_BLOCK || !ret) {
                error_at(s->loc, "'return' is allowed only in a block%s", e->loop ? " (and not inside a loop)" : "");
                break;
            }
            if (i != body->n - 1) {
                error_at(s->loc, "'return' must be the last statement of a block");
                break;
            }
            *has_ret = true;
            if (s->list.n == 1) {
                *ret = el_eval(e, s->list.v[0]);
                if (ret->k == V_PARAM) *ret = el_tensor(e, el_param_node(e, (int)ret->i, s->loc));
            } else {
                Value *v = NEWN(Value, s->list.n);
                bool bad = false;
                for (int k = 0; k < s->list.n; k++) {
                    v[k] = el_eval(e, s->list.v[k]);
                    if (v[k].k == V_PARAM) v[k] = el_tensor(e, el_param_node(e, (int)v[k].i, s->loc));
                    if (v[k].k == V_ERR) bad = true;
                }
                *ret = bad ? el_err() : el_tuple(s->list.n, v);
            }
            break;
        default: die("elab: unexpected statement %s", ast_kind_name(s->kind));
        }
    }
}

/* ------------------------------------------------------------------ entries */

/* The C names the emitters derive from the model name m: m_<X> for every X below, and
 * for an entry e the functions and tables m_<e>, m_entry_<e>, m_record_<e>, m_<e>_in and
 * m_<e>_out.  An entry whose derived names meet one of these would not compile. */
static const char *const generated_names[] = {
    "model", "params", "inputs", "outputs", "entries", "init_params", "new", "free", "init", "load", "save",
    "forward", "grad", "input_grad", "train_step", "fwd_eval", "fwd_bwd", "fwd_bwd_input", "fwd_bwd_eval", "record",
    "run",
};

/* Does name x, with the prefix/suffix of a derived name, equal y? */
static bool derived_eq(const char *x, const char *y) {
    static const char *const pre[] = {"", "entry_", "record_", "", ""}, *const suf[] = {"", "", "", "_in", "_out"};
    for (int k = 0; k < 5; k++) {
        size_t np = strlen(pre[k]), nx = strlen(x), ns = strlen(suf[k]);
        if (strlen(y) == np + nx + ns && !strncmp(y, pre[k], np) && !strncmp(y + np, x, nx) && !strcmp(y + np + nx, suf[k]))
            return true;
    }
    return false;
}

static bool entry_name_ok(const Model *m, const Ast *s) {
    for (size_t k = 0; k < sizeof generated_names / sizeof *generated_names; k++)
        if (derived_eq(s->name, generated_names[k])) {
            error_at(s->loc, "entry '%s' would clash with the generated function or table %s_%s; choose another name", s->name,
                     m->name, generated_names[k]);
            return false;
        }
    for (int i = 0; i < m->nentries; i++) {
        const char *o = m->entries[i].name;
        if (strcmp(o, s->name) == 0) {
            error_at(s->loc, "duplicate entry '%s' (first at %s)", s->name, el_where(m->entries[i].loc, s->loc));
            return false;
        }
        static const char *const form[] = {"%s", "entry_%s", "record_%s", "%s_in", "%s_out"};
        for (int k = 0; k < 5; k++) {
            char buf[512];
            snprintf(buf, sizeof buf, form[k], o);
            if (derived_eq(s->name, buf)) {
                error_at(s->loc, "entry '%s' would clash with the generated C of entry '%s' (at %s): both define %s_%s; choose another name",
                         s->name, o, el_where(m->entries[i].loc, s->loc), m->name, buf);
                return false;
            }
        }
    }
    return true;
}

static void elab_entry(Elab *e, const Ast *s) {
    Model *m = e->m;
    if (!entry_name_ok(m, s)) return;
    int cap = m->nentries;
    m->entries = el_grow(m->entries, &cap, m->nentries + 1, sizeof(EntryFn));
    EntryFn *en = &m->entries[m->nentries];
    *en = (EntryFn){.name = s->name, .g = ir_graph_new(e->batch), .loc = s->loc};
    EntryFn tmp = *en;
    e->entry = &tmp;
    e->root = e->g = tmp.g;
    e->inst = NEW(Inst);
    e->inst->prefix = "";
    for (int i = 0; i < e->pnode_cap; i++) e->pnode[i] = -1;
    e->scope = el_scope_new(e->model_scope);
    int errs = diag_error_count();
    for (int i = 0; i < s->list.n; i++) {
        const Ast *a = s->list.v[i];
        Shape sh;
        DType dt;
        if (el_scope_here(e->scope, a->name)) {
            error_at(a->loc, "duplicate argument '%s'", a->name);
            continue;
        }
        if (!eval_type(e, a->a, cc_str("argument '%s'", a->name), true, &sh, &dt)) {
            el_define(e->scope, a->name, SYM_INPUT, el_err(), a->loc);
            continue;
        }
        Attrs at = {.i = {i}};
        int id = ir_add(e->g, OP_INPUT, a->loc, 0, NULL, &at, &sh, dt);
        if (id < 0) continue;
        Node *n = &e->g->n[id];
        n->flags |= NF_INPUT;
        n->slot = i;
        n->name = a->name;
        n->var = a->name;
        el_define(e->scope, a->name, SYM_INPUT, el_tensor(e, id), a->loc);
    }
    if (s->op == 1) stmt_output(e, s->list2.v[0], CTX_ENTRY, true);
    else el_stmts(e, &s->list2, CTX_ENTRY, NULL, NULL);
    if (tmp.nouts == 0 && diag_error_count() == errs) error_at(s->loc, "entry '%s' has no output", s->name);
    e->entry = NULL;
    m->entries[m->nentries++] = tmp;
}

/* ------------------------------------------------------------------ model */

/* -D NAME=VALUE overrides: parsed into values; NULL name on a malformed one. */
static bool parse_def(const char *d, const char **name, Value *v) {
    const char *eq = strchr(d, '=');
    if (!eq || eq == d) return false;
    *name = arena_strndup(cc_arena, d, (size_t)(eq - d));
    const char *s = eq + 1;
    char *end;
    errno = 0;
    long long i = strtoll(s, &end, 10);
    if (*s && *end == 0 && errno == 0) {
        *v = el_int_value(i, 0);
        return true;
    }
    errno = 0;
    double r = strtod(s, &end);
    if (*s && *end == 0 && errno == 0 && isfinite(r)) {
        *v = el_real_value(r);
        return true;
    }
    return false;
}

/* The batch constant: the header constant named as dim 0 of the first input. */
static const char *batch_const(const Ast *model) {
    for (int i = 0; i < model->list2.n; i++) {
        const Ast *s = model->list2.v[i];
        if (s->kind != S_INPUT) continue;
        const Ast *t = s->a;
        if (t->list.n == 0 || t->list.v[0]->kind != A_NAME) return NULL;
        const char *n = t->list.v[0]->name;
        for (int k = 0; k < model->list.n; k++)
            if (strcmp(model->list.v[k]->name, n) == 0) return n;
        return NULL;
    }
    return NULL;
}

static void finish_params(Elab *e) {
    Model *m = e->m;
    int n = m->nparams;
    int *map = NEWN(int, n + 1);
    Param *np = NEWN(Param, n + 1);
    int k = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            Param *P = &m->params[i];
            if (P->state != (pass == 1)) continue;
            if (!P->used) {
                warning_at(P->loc, "parameter '%s' is declared but never used", P->name);
                map[i] = -1;
                continue;
            }
            map[i] = k;
            np[k++] = *P;
        }
    for (int j = -1; j < m->nentries; j++) {
        Graph *g = j < 0 ? m->g : m->entries[j].g;
        for (int i = 0; i < g->len; i++) {
            Node *nd = &g->n[i];
            if (nd->op == OP_PARAM) nd->slot = map[nd->slot];
        }
    }
    m->params = np;
    m->nparams = k;
}

/* Where -D overrides are reported: "<command line>: error: ...". */
static const Loc cmdline = {"<command line>", 0, 0};

/* Which header constants are integers with the file's own values (no -D): a muted
 * evaluation in a scratch scope.  NULL when there are no overrides. */
static bool *file_ints(Elab *e, const Ast *md, int ndefs) {
    if (ndefs == 0) return NULL;
    bool *isint = NEWN(bool, md->list.n + 1);
    Scope *ss = e->scope, *ms = e->model_scope, *tmp = el_scope_new(NULL);
    e->scope = e->model_scope = tmp;
    diag_mute(true);
    for (int i = 0; i < md->list.n; i++) {
        Value v = el_eval(e, md->list.v[i]->a);
        isint[i] = v.k == V_NUM && v.isint;
        el_define(tmp, md->list.v[i]->name, SYM_CONST, v.k == V_NUM ? v : el_err(), md->list.v[i]->loc);
    }
    diag_mute(false);
    e->scope = ss;
    e->model_scope = ms;
    return isint;
}

/* The model's header constants into the model scope, with the -D overrides: an
 * override is reported at the command line, a constant that an override turns from an
 * integer into a real at the constant.  Sets e->batch from the batch constant. */
static const char *model_consts(Elab *e, const Ast *md, int ndefs, const char *const *defs) {
    const char **dn = NEWN(const char *, ndefs + 1);
    Value *dv = NEWN(Value, ndefs + 1);
    bool *dused = NEWN(bool, ndefs + 1);
    const char *alld = "";
    for (int i = 0; i < ndefs; i++) {
        alld = cc_str("%s%s-D %s", alld, i ? " " : "", defs[i]);
        if (!parse_def(defs[i], &dn[i], &dv[i])) {
            error_at(cmdline, "-D %s: expected NAME=NUMBER", defs[i]);
            dn[i] = NULL;
        }
    }
    bool *was_int = file_ints(e, md, ndefs);
    const char *bname = e->bname, *cs = "";
    for (int i = 0; i < md->list.n; i++) {
        const Ast *c = md->list.v[i];
        if (el_scope_here(e->model_scope, c->name)) {
            error_at(c->loc, "constant '%s' is already defined", c->name);
            continue;
        }
        Value v = {.k = V_NONE};
        int d = -1;
        for (int k = 0; k < ndefs; k++)
            if (dn[k] && strcmp(dn[k], c->name) == 0) v = dv[k], dused[k] = true, d = k;
        if (v.k == V_NONE) v = el_eval(e, c->a);
        if (v.k != V_NUM && v.k != V_ERR) {
            error_at(c->a->loc, "constant '%s' must be a number, got %s", c->name, el_describe(e, v));
            v = el_err();
        }
        bool is_batch = bname && strcmp(bname, c->name) == 0;
        if (v.k == V_NUM && is_batch && (!v.isint || v.i <= 0)) {
            if (d >= 0) error_at(cmdline, "-D %s: the batch size '%s' must be a positive integer", defs[d], c->name);
            else error_at(c->loc, "the batch size '%s' must be a positive integer", c->name);
            v = el_err();
        } else if (v.k == V_NUM && was_int && was_int[i] && !v.isint) {
            if (d >= 0)
                error_at(cmdline, "-D %s: constant '%s' is an integer in the model, so it must stay one", defs[d],
                         c->name);
            else
                error_at(c->loc, "constant '%s' is %g with %s, not an integer as with the file's values "
                         "(write a real expression, e.g. 1.0 * ..., if a real is meant)", c->name, v.r, alld);
            v = el_err();
        }
        if (v.k == V_NUM) {
            cs = v.isint ? cc_str("%s%s%s=%lld", cs, *cs ? " " : "", c->name, (long long)v.i)
                         : cc_str("%s%s%s=%g", cs, *cs ? " " : "", c->name, v.r);
            if (is_batch) {
                v = el_int_value(v.i, 1);
                e->batch = v.i;
            }
        }
        el_define(e->model_scope, c->name, SYM_CONST, v, c->loc);
    }
    for (int k = 0; k < ndefs; k++)
        if (dn[k] && !dused[k]) error_at(cmdline, "-D %s: model '%s' has no constant '%s'", defs[k], e->m->name, dn[k]);
    return cs;
}

static Model *elab_model(Elab *e, const Ast *md, int ndefs, const char *const *defs) {
    Model *m = NEW(Model);
    e->m = m;
    m->name = md->name;
    m->file = md->loc.file;
    m->loc = md->loc;
    m->loss = -1;
    if (strncasecmp(md->name, "cdl", 3) == 0 && (md->name[3] == 0 || md->name[3] == '_'))
        error_at(md->loc, "model name '%s' is reserved: the runtime's names are cdl and cdl_... (the generated C "
                 "would define %s_model, %s_new, ... beside them); choose another name", md->name, md->name, md->name);
    e->model_scope = e->scope = el_scope_new(NULL);
    e->bname = batch_const(md);
    m->consts_str = model_consts(e, md, ndefs, defs);
    m->batch = e->batch;
    m->batch_name = e->batch > 0 ? e->bname : NULL;
    m->g = ir_graph_new(e->batch);
    e->root = e->g = m->g;
    e->inst = NEW(Inst);
    e->inst->prefix = "";
    if (!el_check_size(e, md)) return m;
    el_stmts(e, &md->list2, CTX_MODEL, NULL, NULL);
    if (m->loss < 0 && m->noutputs == 0 && diag_error_count() == 0)
        error_at(md->loc, "model '%s' has no loss and no output", m->name);
    for (int i = 0; i < md->list2.n; i++)
        if (md->list2.v[i]->kind == S_ENTRY) elab_entry(e, md->list2.v[i]);
    e->root = e->g = m->g;
    finish_params(e);
    return m;
}

/* ------------------------------------------------------------------ entry points */

static int64_t max_nodes = ELAB_MAX_NODES_DEFAULT;

void elab_set_max_nodes(int64_t n) { max_nodes = n > 0 ? n : ELAB_MAX_NODES_DEFAULT; }

/* After each diagnostic inside inlined blocks: the chain of calls, innermost first. */
static void block_trail(void *ctx) {
    const Elab *e = ctx;
    for (int k = e->bdepth - 1; k >= 0; k--)
        note_at(e->bcall[k], "in block '%s' (instance %s), called here", e->bstack[k]->name, e->binst[k]);
}

static Model *elab_any(const char *path, const char *text, size_t len, int ndefs, const char *const *defs) {
    Elab *e = NEW(Elab);
    Program p;
    load_program(path, text, len, &p);
    if (diag_error_count() > 0 || !p.model) return NULL;
    e->blocks = p.blocks;
    e->nblocks = p.nblocks;
    e->max_nodes = max_nodes;
    el_index_blocks(e);
    diag_set_trail(block_trail, e);
    Model *m = elab_model(e, p.model, ndefs, defs);
    diag_set_trail(NULL, NULL);
    return diag_error_count() > 0 ? NULL : m;
}

Model *elab_file(const char *path, int ndefs, const char *const *defs) {
    return elab_any(path, NULL, 0, ndefs, defs);
}

Model *elab_text(const char *file, const char *text, size_t len, int ndefs, const char *const *defs) {
    return elab_any(file, text ? text : "", len, ndefs, defs);
}
