/* elab_call.c -- calls: matching arguments to formal parameters (built-in signatures,
 * block parameters with defaults), inlining a user block (its own scope and instance
 * prefix; recursion and nesting depth checked), and dispatching a built-in.
 */
#include "cdlc.h"

#include <stdlib.h>
#include <string.h>

void el_index_blocks(Elab *e) {
    for (int i = 0; i < e->nblocks; i++)
        if (arena_map_get(&e->bmap, e->blocks[i]->name) < 0) arena_map_put(&e->bmap, e->blocks[i]->name, i);
}

const Ast *el_find_block(Elab *e, const char *name) {
    int i = arena_map_get(&e->bmap, name);
    return i < 0 ? NULL : e->blocks[i];
}

/* ------------------------------------------------------------------ the size budget */

/* The static count: per block, the operations its body makes with every block call
 * inlined (memoized; a recursive call counts nothing here, the elaborator reports it),
 * and the call that contributes most, to name the chain that grows. */
typedef struct Est {
    const Elab *e;
    double *size;           /* per block: -1 unknown, -2 being counted */
    int *heavy;             /* per block: the callee contributing most, or -1 */
    double *times;          /* ... how many times it is called */
} Est;

static double est_block(Est *es, int b);

/* Operations a tree makes: each call, operator and index counts one; a block call
 * counts its inlined size, which is also added to contrib[block]. */
static double est_ast(Est *es, const Ast *a, double *contrib) {
    if (!a) return 0;
    double n = 0;
    const char *callee = NULL;
    switch (a->kind) {
    case A_CALL: callee = a->name; break;
    case A_PIPE: callee = a->b && a->b->kind == A_NAME ? a->b->name : NULL; break;   /* x |> f */
    case A_BIN: case A_NEG: case A_INDEX: case A_ATTR: n = 1; break;
    default: break;
    }
    int b = callee ? arena_map_get(&es->e->bmap, callee) : -1;
    if (b >= 0) {
        double sz = est_block(es, b);
        n += sz;
        contrib[b] += sz;
    } else if (callee) {
        n += 1;
    }
    n += est_ast(es, a->a, contrib) + est_ast(es, a->b, contrib) + est_ast(es, a->c, contrib);
    for (int i = 0; i < a->list.n; i++) n += est_ast(es, a->list.v[i], contrib);
    for (int i = 0; i < a->list2.n; i++) n += est_ast(es, a->list2.v[i], contrib);
    return n;
}

/* The heaviest entry of contrib: its index (or -1) and, for blocks, the call count. */
static int heaviest(Est *es, const double *contrib, double *times) {
    int h = -1;
    for (int i = 0; i < es->e->nblocks; i++)
        if (contrib[i] > 0 && (h < 0 || contrib[i] > contrib[h])) h = i;
    if (h >= 0 && times) *times = es->size[h] > 0 ? contrib[h] / es->size[h] : 1;
    return h;
}

static double est_block(Est *es, int b) {
    if (es->size[b] == -2) return 0;
    if (es->size[b] >= 0) return es->size[b];
    es->size[b] = -2;
    double *contrib = NEWN(double, es->e->nblocks + 1);
    double n = 0;
    for (int i = 0; i < es->e->blocks[b]->list2.n; i++) n += est_ast(es, es->e->blocks[b]->list2.v[i], contrib);
    es->size[b] = n > 1 ? n : 1;
    es->heavy[b] = heaviest(es, contrib, &es->times[b]);
    return es->size[b];
}

bool el_check_size(Elab *e, const Ast *model) {
    Est es = {.e = e, .size = NEWN(double, e->nblocks + 1), .heavy = NEWN(int, e->nblocks + 1),
              .times = NEWN(double, e->nblocks + 1)};
    for (int i = 0; i < e->nblocks; i++) es.size[i] = -1, es.heavy[i] = -1;
    double *contrib = NEWN(double, e->nblocks + 1);
    double n = 0;
    for (int i = 0; i < model->list2.n; i++) n += est_ast(&es, model->list2.v[i], contrib);
    if (n <= (double)e->max_nodes) return true;
    int h = heaviest(&es, contrib, NULL);
    const char *chain = "";
    Loc at = model->loc;
    for (int k = 0, b = h; b >= 0 && es.heavy[b] >= 0; k++, b = es.heavy[b]) {
        if (k == 0) at = e->blocks[b]->loc;
        if (k < 4 || es.heavy[es.heavy[b]] < 0)
            chain = cc_str("%s%s'%s' calls '%s' %.0f times", chain, *chain ? ", " : "", e->blocks[b]->name,
                           e->blocks[es.heavy[b]]->name, es.times[b]);
        else if (k == 4)
            chain = cc_str("%s, ...", chain);
    }
    error_at(at, "inlining blocks would make about %.3g nodes, more than the limit of %lld (cdlc --max-nodes=N "
             "raises it)%s%s", n, (long long)e->max_nodes, *chain ? ": " : "", chain);
    return false;
}

const char *el_did_you_mean(Elab *e, const char *word, bool vars) {
    int n = builtin_count + e->nblocks, k = 0;
    for (Scope *sc = vars ? e->scope : NULL; sc; sc = sc->parent) n += sc->n;
    const char **cand = NEWN(const char *, n + 1);
    for (int i = 0; i < builtin_count; i++) cand[k++] = builtins[i].name;
    for (int i = 0; i < e->nblocks; i++) cand[k++] = e->blocks[i]->name;
    for (Scope *sc = vars ? e->scope : NULL; sc; sc = sc->parent)
        for (int i = 0; i < sc->n; i++) cand[k++] = sc->s[i].name;
    return diag_did_you_mean(word, cand, k);
}

/* A signature's default value: true, false, "string", an integer or a real. */
static Value parse_default(const char *s) {
    if (strcmp(s, "true") == 0) return (Value){.k = V_BOOL, .i = 1};
    if (strcmp(s, "false") == 0) return (Value){.k = V_BOOL, .i = 0};
    if (s[0] == '"') return (Value){.k = V_STR, .s = arena_strndup(cc_arena, s + 1, strlen(s) - 2)};
    char *end;
    long long i = strtoll(s, &end, 10);
    if (*end == 0) return el_int_value(i, 0);
    return el_real_value(strtod(s, NULL));
}

void el_sig_formals(const char *sig, Formals *f) {
    f->n = 0;
    f->npos = -1;
    const char *p = sig;
    while (*p) {
        while (*p == ' ') p++;
        if (!*p) break;
        const char *q = p;
        while (*q && *q != ' ') q++;
        if (q == p + 1 && *p == '*') {
            f->npos = f->n;
            p = q;
            continue;
        }
        char *w = arena_strndup(cc_arena, p, (size_t)(q - p));
        int k = f->n++;
        if (k >= 12) die("builtin signature too long: %s", sig);
        char *eq = strchr(w, '=');
        size_t wl = strlen(w);
        f->def[k] = (Value){.k = V_NONE};
        f->defexpr[k] = NULL;
        if (eq) {
            *eq = 0;
            f->def[k] = parse_default(eq + 1);
            f->required[k] = false;
        } else if (wl && w[wl - 1] == '?') {
            w[wl - 1] = 0;
            f->required[k] = false;
        } else {
            f->required[k] = true;
        }
        f->name[k] = w;
        p = q;
    }
    if (f->npos < 0) f->npos = f->n;
}

/* "too many positional arguments" with what the formals allow. */
static void too_many(const char *fn, const Formals *f, int given, Loc loc) {
    const char *pos = "", *kw = "";
    for (int k = 0; k < f->npos; k++) pos = cc_str("%s%s%s", pos, k ? ", " : "", f->name[k]);
    for (int k = f->npos; k < f->n; k++)
        kw = cc_str("%s%s%s", kw, k == f->npos ? "" : k + 1 == f->n ? " and " : ", ", f->name[k]);
    if (f->npos == f->n)
        error_at(loc, "%s: too many arguments (%d given, at most %d: %s)", fn, given, f->n, pos);
    else
        error_at(loc, "%s: too many positional arguments (%d given, at most %d: %s); %s %s keyword-only (%s=...)",
                 fn, given, f->npos, pos, kw, f->n - f->npos > 1 ? "are" : "is", f->name[f->npos]);
}

/* el_bind_args: see cdlc.h. */
bool el_bind_args(Elab *e, const char *fn, const Formals *f, const Ast *call, const Value *pre, Loc loc,
                      Value *out) {
    bool given[MAX_FORMALS] = {false};
    int pos = 0;
    bool ok = true;
    if (pre) {
        if (f->npos == 0) {
            error_at(loc, "%s: takes no positional arguments, so it cannot be used in a pipeline", fn);
            return false;
        }
        out[pos] = *pre;
        given[pos++] = true;
    }
    int npos_total = (pre ? 1 : 0);
    const AstList *args = call ? &call->list : NULL;
    for (int i = 0; args && i < args->n; i++)
        if (args->v[i]->kind != A_KWARG) npos_total++;
    for (int i = 0; args && i < args->n; i++) {
        const Ast *a = args->v[i];
        if (a->kind == A_KWARG) {
            int k = 0;
            while (k < f->n && strcmp(f->name[k], a->name) != 0) k++;
            if (k == f->n) {
                error_at(a->loc, "%s: unknown keyword argument '%s'%s", fn, a->name,
                         diag_did_you_mean(a->name, f->name, f->n));
                ok = false;
                continue;
            }
            if (given[k]) {
                error_at(a->loc, "%s: argument '%s' given twice", fn, a->name);
                ok = false;
                continue;
            }
            out[k] = el_eval(e, a->a);
            given[k] = true;
        } else {
            if (pos >= f->npos) {
                too_many(fn, f, npos_total, a->loc);
                return false;
            }
            if (given[pos]) {
                error_at(a->loc, "%s: argument '%s' given twice", fn, f->name[pos]);
                return false;
            }
            out[pos] = el_eval(e, a);
            given[pos++] = true;
        }
    }
    for (int k = 0; k < f->n; k++) {
        if (given[k]) continue;
        if (f->required[k]) {
            error_at(loc, "%s: missing argument '%s'", fn, f->name[k]);
            ok = false;
        } else if (f->defexpr[k]) {
            Scope *sv = e->scope;           /* defaults see the model's constants, no caller variables */
            e->scope = el_scope_new(e->model_scope);
            out[k] = el_eval(e, f->defexpr[k]);
            e->scope = sv;
        } else {
            out[k] = f->def[k];
        }
    }
    return ok;
}


/* Call user block b: own scope (its parameters, then the model's constants), own
 * instance prefix. */
static Value call_block(Elab *e, const Ast *b, const Ast *call, const Value *pre, Loc loc) {
    for (int i = 0; i < e->bdepth; i++) {
        if (e->bstack[i] != b) continue;
        const char *chain = "";
        for (int k = i; k < e->bdepth; k++) chain = cc_str("%s%s -> ", chain, e->bstack[k]->name);
        error_at(loc, "block '%s' calls itself (%s%s): recursion is not allowed", b->name, chain, b->name);
        return el_err();
    }
    if (e->bdepth == BLOCK_MAX_DEPTH) {
        error_at(loc, "blocks nested more than %d deep", BLOCK_MAX_DEPTH);
        return el_err();
    }
    Formals f = {0};
    for (int i = 0; i < b->list.n; i++) {
        const Ast *p = b->list.v[i];
        f.name[f.n] = p->name;
        f.required[f.n] = p->kind == A_NAME;
        f.def[f.n] = (Value){.k = V_NONE};
        f.defexpr[f.n] = p->kind == A_KWARG ? p->a : NULL;
        f.n++;
    }
    f.npos = f.n;                           /* name= is keyword-only */
    f.name[f.n] = "name";
    f.required[f.n] = false;
    f.def[f.n] = (Value){.k = V_NONE};
    f.n++;
    Value args[MAX_FORMALS];
    if (!el_bind_args(e, b->name, &f, call, pre, loc, args)) return el_err();
    /* name="": no instance of its own, the block's names are the caller's (as if its
     * statements were written there): how the nn library makes parameters that exist
     * only for some options (in_proj_bias, q_proj_weight) under torch's names */
    bool flat = args[f.n - 1].k == V_STR && args[f.n - 1].s[0] == 0;
    const char *inst = flat ? e->inst->prefix : el_instance(e, b->name, args[f.n - 1], loc);
    if (!inst) return el_err();
    Inst *I = flat ? e->inst : NEW(Inst);
    if (!flat) I->prefix = cc_str("%s.", inst);
    Scope *s = el_scope_new(e->model_scope);    /* its parameters over the model's constants */
    for (int i = 0; i < f.n - 1; i++) {
        Value v = args[i];
        if (v.k == V_TENSOR && v.g != e->g) v = el_tensor(e, el_node_of(e, v));
        el_define(s, f.name[i], SYM_VAR, v, b->list.v[i]->loc);
    }
    Inst *si = e->inst;
    Scope *ss = e->scope;
    e->inst = I;
    e->scope = s;
    e->bcall[e->bdepth] = loc;
    e->binst[e->bdepth] = inst;
    e->bstack[e->bdepth++] = b;
    Value ret = {.k = V_NONE};
    bool has_ret = false;
    int errs = diag_error_count();
    el_stmts(e, &b->list2, CTX_BLOCK, &ret, &has_ret);
    e->bdepth--;
    e->inst = si;
    e->scope = ss;
    if (!has_ret) {
        if (diag_error_count() == errs) error_at(b->loc, "block '%s' has no return statement", b->name);
        return el_err();
    }
    return ret;
}

/* Evaluate a call: name(args) with an optional piped first argument; name may be a
 * variable whose value is a function. */
Value el_call(Elab *e, const char *name, const Ast *callast, const Value *pre, Loc loc) {
    if (e->over) return el_err();
    const Ast *b = el_find_block(e, name);
    if (b) return call_block(e, b, callast, pre, loc);
    const Builtin *bi = builtin_find(name);
    if (!bi) {
        Sym *y = el_lookup(e->scope, name, NULL);
        /* a variable holding a function (a block parameter given `activation=gelu`):
         * call what it names (always a block or a built-in, so this ends) */
        if (y && y->v.k == V_FUNC) return el_call(e, y->v.s, callast, pre, loc);
        if (y) error_at(loc, "'%s' is a variable, not a function", name);
        else error_at(loc, "unknown function '%s'%s", name, el_did_you_mean(e, name, false));
        return el_err();
    }
    Formals f;
    el_sig_formals(bi->sig, &f);
    Value args[MAX_FORMALS];
    if (!el_bind_args(e, name, &f, callast, pre, loc, args)) return el_err();
    for (int i = 0; i < f.n; i++)
        if (args[i].k == V_ERR) return el_err();
    return bi->fn(e, bi, loc, args);
}
