/* elab_core.c -- what the elaborator's files and the built-ins share: values and their
 * arithmetic, scopes, the current graph (capturing outer values into a loop body),
 * argument checks, instance names and parameters.
 *
 * Values.  Every expression evaluates to a Value: a compile-time number (header
 * constants, literals, their arithmetic), a tensor (a node of the current graph), a
 * tuple, a list, a string, the loop index, or V_ERR after an error (silent from then
 * on, so one mistake gives one message).  The batch constant (dim 0 of the first
 * input) is tracked through integer arithmetic (bfac): as a dimension it makes a
 * tensor batched; as a number in tensor arithmetic it becomes OP_BATCHSIZE.
 *
 * Naming.  Layers and block calls get instance names from per-scope counters
 * ("linear1", "residual2"); inside a block instance names are prefixed with the
 * instance's ("residual1.conv1.weight").  name="fc1" replaces the counted name; the
 * same full name means the same parameter.  Parameters always live in the function's
 * root graph; a loop body captures them.
 */
#include "cdlc.h"

#include <math.h>
#include <string.h>

void *el_grow(void *p, int *cap, int need, size_t sz) {
    if (need <= *cap) return p;
    int nc = *cap ? *cap : 8;
    while (nc < need) nc *= 2;
    p = arena_grow(cc_arena, p, sz * (size_t)*cap, sz * (size_t)nc);
    *cap = nc;
    return p;
}

const char *el_where(Loc at, Loc from) {
    if (!at.file) return "<command line>";
    if (from.file && strcmp(at.file, from.file) == 0) return cc_str("%d:%d", at.line, at.col);
    return cc_str("%s:%d:%d", at.file, at.line, at.col);
}

/* ------------------------------------------------------------------ values */

Value el_err(void) { return (Value){.k = V_ERR}; }

/* ------------------------------------------------------------------ batch expressions */

/* How a number depends on the batch constant: a small expression tree over B (op 'B'),
 * constants ('c') and the operators + - * / ** ('P'), negation ('n'), maximum ('M') and
 * minimum ('m').  Numbers keep their compiled value (B = the compiled batch) for
 * dimensions and settings; in tensor arithmetic the tree is built as scalar nodes over
 * OP_BATCHSIZE, so every arithmetic form on B gives the runtime batch (docs/language.md,
 * "The batch constant"). */
struct BExpr {
    int op;
    double c;
    const BExpr *a, *b;
};

static const BExpr *bx_new(int op, double c, const BExpr *a, const BExpr *b) {
    BExpr *x = NEW(BExpr);
    *x = (BExpr){.op = op, .c = c, .a = a, .b = b};
    return x;
}

/* v's expression: its tree, or the constant it is. */
static const BExpr *bx_of(Value v) { return v.bx ? v.bx : bx_new('c', v.r, NULL, NULL); }

/* x as k * B + c, when it is affine in B. */
static bool bx_affine(const BExpr *x, double *k, double *c) {
    double ka = 0, ca = 0, kb = 0, cb = 0;
    switch (x->op) {
    case 'B': *k = 1, *c = 0; return true;
    case 'c': *k = 0, *c = x->c; return true;
    case 'n':
        if (!bx_affine(x->a, &ka, &ca)) return false;
        *k = -ka, *c = -ca;
        return true;
    }
    if (!bx_affine(x->a, &ka, &ca) || !bx_affine(x->b, &kb, &cb)) return false;
    switch (x->op) {
    case '+': *k = ka + kb, *c = ca + cb; return true;
    case '-': *k = ka - kb, *c = ca - cb; return true;
    case '*':
        if (ka != 0 && kb != 0) return false;
        *k = ka * cb + kb * ca, *c = ca * cb;
        return true;
    case '/':
        if (kb != 0 || cb == 0) return false;
        *k = ka / cb, *c = ca / cb;
        return true;
    case 'P':
        if (kb != 0 || (cb != 1 && ka != 0)) return false;
        *k = cb == 1 ? ka : 0, *c = cb == 1 ? ca : pow(ca, cb);
        return true;
    }
    return false;
}

/* k when x == k * B for a nonzero integer k (a batch multiple), else 0. */
static int64_t bx_factor(const BExpr *x) {
    double k, c;
    if (!x || !bx_affine(x, &k, &c) || c != 0 || k != trunc(k) || fabs(k) > 1e15) return 0;
    return (int64_t)k;
}

Value el_int_value(int64_t i, int64_t bfac) {
    Value v = {.k = V_NUM, .isint = true, .i = i, .r = (double)i, .bfac = bfac};
    if (bfac) {
        v.bx = bx_new('B', 0, NULL, NULL);
        if (bfac != 1) v.bx = bx_new('*', 0, bx_new('c', (double)bfac, NULL, NULL), v.bx);
    }
    return v;
}
Value el_real_value(double r) { return (Value){.k = V_NUM, .r = r}; }

/* Attach to number r the expression op(a, b) when a or b depends on the batch. */
static Value with_bx(Value r, int op, Value a, Value b) {
    if (r.k != V_NUM || (!a.bx && !b.bx)) return r;
    r.bx = bx_new(op, 0, bx_of(a), op == 'n' ? NULL : bx_of(b));
    r.bfac = r.isint ? bx_factor(r.bx) : 0;
    return r;
}

Value el_num_neg(Value v) {
    Value r = v.isint ? el_int_value(-v.i, 0) : el_real_value(-v.r);
    return with_bx(r, 'n', v, v);
}

Value el_num_minmax(Value a, Value b, bool max) {
    Value r = (a.r > b.r) == max ? a : b;
    r.bx = NULL;
    r.bfac = 0;
    return with_bx(r, max ? 'M' : 'm', a, b);
}

Value el_tensor(Elab *e, int id) {
    if (id < 0) return el_err();
    return (Value){.k = V_TENSOR, .g = e->g, .id = id};
}

Value el_tuple(int n, const Value *v) {
    Value t = {.k = V_TUPLE, .n = n, .v = NEWN(Value, n > 0 ? n : 1)};
    if (n) memcpy(t.v, v, sizeof(Value) * (size_t)n);
    return t;
}

const char *el_dtype_name(DType d) { return d == DT_I32 ? "i32" : "f32"; }

const char *el_describe(Elab *e, Value v) {
    switch (v.k) {
    case V_NUM:
        return v.isint ? cc_str("the number %lld", (long long)v.i)
                       : cc_str("the number %g", v.r);
    case V_BOOL: return "a boolean";
    case V_STR: return cc_str("the string \"%s\"", v.s);
    case V_TENSOR: {
        const Node *n = &v.g->n[v.id];
        return cc_str("a tensor %s%s", el_dtype_name(n->dtype), shape_str(&n->shape));
    }
    case V_TUPLE: return cc_str("a tuple of %d values", v.n);
    case V_LIST: return cc_str("a list of %d values", v.n);
    case V_FUNC: return cc_str("the function '%s'", v.s);
    case V_PARAM: return cc_str("the parameter '%s'", e->m->params[v.i].name);
    case V_INDEX: return "the loop index";
    case V_NONE: return "nothing";
    case V_ERR: return "an error";
    }
    return "?";
}

/* ------------------------------------------------------------------ scopes */

Scope *el_scope_new(Scope *parent) {
    Scope *s = NEW(Scope);
    s->parent = parent;
    return s;
}

Sym *el_scope_here(Scope *s, const char *name) {
    int i = arena_map_get(&s->ix, name);
    return i < 0 ? NULL : &s->s[i];
}

Sym *el_lookup(Scope *s, const char *name, Scope **home) {
    for (; s; s = s->parent) {
        Sym *y = el_scope_here(s, name);
        if (y) {
            if (home) *home = s;
            return y;
        }
    }
    return NULL;
}

/* Bind name in scope s (replacing a binding in s itself). */
Sym *el_define(Scope *s, const char *name, SymKind kind, Value v, Loc loc) {
    Sym *y = el_scope_here(s, name);
    if (!y) {
        s->s = el_grow(s->s, &s->cap, s->n + 1, sizeof(Sym));
        arena_map_put(&s->ix, name, s->n);
        y = &s->s[s->n++];
    }
    *y = (Sym){.name = name, .kind = kind, .v = v, .loc = loc};
    return y;
}

/* ------------------------------------------------------------------ graph helpers */

/* el_count_nodes: see cdlc.h.  The error names the block calls being inlined. */
bool el_count_nodes(Elab *e, int n, Loc loc) {
    if (e->over) return false;
    e->nodes += n;
    if (e->nodes <= e->max_nodes) return true;
    e->over = true;
    const char *chain = "";
    for (int k = 0; k < e->bdepth; k++) chain = cc_str("%s%s%s", chain, k ? " -> " : "", e->bstack[k]->name);
    diag_set_trail(NULL, NULL);                 /* the chain is in the message */
    error_at(loc, "the model passes %lld nodes%s%s; that is the limit (cdlc --max-nodes=N raises it)",
             (long long)e->max_nodes, *chain ? " while inlining " : "", chain);
    return false;
}

int el_add(Elab *e, Op op, Loc loc, int nin, const int *in, const Attrs *at, const Shape *hint, DType dt) {
    for (int i = 0; i < nin; i++)
        if (in[i] < 0) return -1;
    if (!el_count_nodes(e, 1, loc)) return -1;
    return ir_add(e->g, op, loc, nin, in, at, hint, dt);
}

const Node *el_n(Elab *e, int id) { return &e->g->n[id]; }

int el_stream(Elab *e) { return e->m->g->next_stream++; }

int64_t el_batch(Elab *e) { return e->batch; }

/* The node for outer node id `outer` inside the current loop body (memoized). */
static int capture(Elab *e, int outer) {
    Loop *L = e->loop;
    for (int i = 0; i < L->ncap; i++)
        if (L->cap_outer[i] == outer) return L->cap_inner[i];
    const Node *o = &L->outer->n[outer];
    Attrs at = {.i = {outer}};
    int id = ir_add(L->body, OP_LOOP_CAPTURE, o->loc, 0, NULL, &at, &o->shape, o->dtype);
    if (id < 0) return -1;
    L->body->n[id].var = o->var ? o->var : o->name;
    int c = L->capcap;
    L->cap_outer = el_grow(L->cap_outer, &c, L->ncap + 1, sizeof(int));
    L->cap_inner = el_grow(L->cap_inner, &L->capcap, L->ncap + 1, sizeof(int));
    L->cap_outer[L->ncap] = outer;
    L->cap_inner[L->ncap++] = id;
    return id;
}

/* A tensor value's node in the current graph (capturing outer values in a loop). */
int el_node_of(Elab *e, Value v) {
    if (v.g == e->g) return v.id;
    if (e->loop && v.g == e->loop->outer) return capture(e, v.id);
    die("tensor value from an unrelated graph");
}

/* The PARAM node of parameter p in the root graph, then captured into a loop body. */
int el_param_node(Elab *e, int p, Loc loc) {
    if (p >= e->pnode_cap) {
        int old = e->pnode_cap;
        e->pnode = el_grow(e->pnode, &e->pnode_cap, p + 1, sizeof(int));
        for (int i = old; i < e->pnode_cap; i++) e->pnode[i] = -1;
    }
    Param *P = &e->m->params[p];
    P->used = true;
    if (e->pnode[p] < 0) {
        if (!el_count_nodes(e, 1, loc)) return -1;
        Attrs at = {.i = {P->init, P->fan_in, P->fan_out}, .f = {P->a, P->b}};
        int id = ir_add(e->root, OP_PARAM, loc, 0, NULL, &at, &P->shape, DT_REAL);
        if (id < 0) return -1;
        Node *n = &e->root->n[id];
        n->flags |= P->state ? NF_STATE : NF_PARAM;
        n->slot = p;
        n->name = P->name;
        e->pnode[p] = id;
    }
    int id = e->pnode[p];
    if (e->g == e->root) return id;
    return capture(e, id);
}

/* A batch expression as scalar nodes of the current graph (-1 after a diagnostic). */
static int bx_node(Elab *e, const BExpr *x, Loc loc) {
    if (x->op == 'c') return ir_scalar(e->g, x->c, loc);
    if (x->op == 'B') return ir_add(e->g, OP_BATCHSIZE, loc, 0, NULL, NULL, &(Shape){0}, DT_REAL);
    int a = bx_node(e, x->a, loc);
    if (x->op == 'n') return el_add(e, OP_NEG, loc, 1, &a, NULL, NULL, DT_REAL);
    if (x->op == 'P') {
        double k, c;
        if (!bx_affine(x->b, &k, &c) || k != 0) {
            error_at(loc, "'**': the exponent cannot depend on the batch size");
            return -1;
        }
        if (c == 1) return a;
        Attrs at = {.f = {c}};
        return c == 2 ? el_add(e, OP_SQUARE, loc, 1, &a, NULL, NULL, DT_REAL)
                      : el_add(e, OP_POWS, loc, 1, &a, &at, NULL, DT_REAL);
    }
    int in[2] = {a, bx_node(e, x->b, loc)};
    Op op = x->op == '+' ? OP_ADD : x->op == '-' ? OP_SUB : x->op == '*' ? OP_MUL : x->op == '/' ? OP_DIV
          : x->op == 'M' ? OP_MAXIMUM : OP_MINIMUM;
    return el_add(e, op, loc, 2, in, NULL, NULL, DT_REAL);
}

/* A number as a scalar node; one that depends on the batch constant is computed from
 * the runtime batch (OP_BATCHSIZE, times k for a batch multiple k * B). */
static int scalar_node(Elab *e, Value v, Loc loc) {
    if (!v.bx || e->batch == 0) return ir_scalar(e->g, v.r, loc);
    if (v.isint && v.bfac != 0) {
        Shape s = {0};
        int b = ir_add(e->g, OP_BATCHSIZE, loc, 0, NULL, NULL, &s, DT_REAL);
        if (b < 0 || v.bfac == 1) return b;
        return el_add(e, OP_MUL, loc, 2, (int[]){b, ir_scalar(e->g, (double)v.bfac, loc)}, NULL, NULL, DT_REAL);
    }
    return bx_node(e, v.bx, loc);
}

/* ------------------------------------------------------------------ argument checks */

static bool arg_err(Value v) { return v.k == V_ERR; }

int el_node(Elab *e, Value v, const char *fn, const char *arg, Loc loc) {
    if (arg_err(v)) return -1;
    if (v.k == V_PARAM) return el_param_node(e, (int)v.i, loc);
    if (v.k != V_TENSOR) {
        error_at(loc, "%s: argument '%s' must be a tensor, got %s", fn, arg, el_describe(e, v));
        return -1;
    }
    return el_node_of(e, v);
}

int el_real_node(Elab *e, Value v, const char *fn, const char *arg, Loc loc) {
    int id = el_node(e, v, fn, arg, loc);
    if (id < 0) return -1;
    const Node *n = &e->g->n[id];
    if (n->dtype != DT_REAL) {
        error_at(loc, "%s: argument '%s' must be f32, got i32%s", fn, arg, shape_str(&n->shape));
        return -1;
    }
    return id;
}

int el_operand(Elab *e, Value v, const char *fn, const char *arg, Loc loc) {
    if (v.k == V_NUM) return scalar_node(e, v, loc);
    return el_real_node(e, v, fn, arg, loc);
}

/* A mask or comparison operand: an f32 tensor, a number, or an i32 tensor converted to
 * f32 (float(x): exact for |values| <= 2^24 in f32 builds, every i32 in f64 ones), so
 * that `ids == 0`, `lengths > t` and where(ids != pad, ...) work on ids and labels. */
int el_mask_operand(Elab *e, Value v, const char *fn, const char *arg, Loc loc) {
    if (v.k == V_NUM) return scalar_node(e, v, loc);
    int id = el_node(e, v, fn, arg, loc);
    if (id < 0 || e->g->n[id].dtype == DT_REAL) return id;
    Attrs at = {.i = {0}};
    return el_add(e, OP_CAST, loc, 1, &id, &at, NULL, DT_REAL);
}

/* Argument arg of fn is of the wanted kind (ok), or an error saying it must be `want`;
 * false too for V_ERR (an error already reported). */
static bool el_arg_kind(Elab *e, Value v, bool ok, const char *want, const char *fn, const char *arg, Loc loc) {
    if (v.k == V_ERR) return false;
    if (!ok) error_at(loc, "%s: argument '%s' must be %s, got %s", fn, arg, want, el_describe(e, v));
    return ok;
}

bool el_int(Elab *e, Value v, const char *fn, const char *arg, Loc loc, int64_t *out) {
    if (!el_arg_kind(e, v, v.k == V_NUM && v.isint, "an integer constant", fn, arg, loc)) return false;
    *out = v.i;
    return true;
}

bool el_num(Elab *e, Value v, const char *fn, const char *arg, Loc loc, double *out) {
    if (!el_arg_kind(e, v, v.k == V_NUM, "a number", fn, arg, loc)) return false;
    *out = v.r;
    return true;
}

/* true / false, or the 1 / 0 of a comparison of numbers (`choose(dropout > 0, ...)`). */
bool el_bool(Elab *e, Value v, const char *fn, const char *arg, Loc loc, bool *out) {
    bool cmp01 = v.k == V_NUM && v.isint && !v.bx && (v.i == 0 || v.i == 1);
    if (!el_arg_kind(e, v, v.k == V_BOOL || cmp01, "true or false", fn, arg, loc)) return false;
    *out = v.i != 0;
    return true;
}

bool el_reduce(Elab *e, Value v, const char *fn, Loc loc, int64_t *red) {
    if (v.k == V_ERR) return false;
    const char *s = v.k == V_STR || v.k == V_FUNC ? v.s : NULL;
    if (s && strcmp(s, "mean") == 0) *red = RED_MEAN;
    else if (s && strcmp(s, "sum") == 0) *red = RED_SUM;
    else if (s && strcmp(s, "none") == 0) *red = RED_NONE;
    else {
        error_at(loc, "%s: reduce must be \"mean\", \"sum\" or \"none\", got %s", fn, el_describe(e, v));
        return false;
    }
    return true;
}

/* Checked product of dims: false (and a diagnostic) on overflow or absurd size. */
bool el_dims_ok(Loc loc, const char *what, const Shape *s) {
    int64_t total = 1;
    for (int i = 0; i < s->rank; i++) {
        if (s->d[i] <= 0) {
            error_at(loc, "%s: dimension %d must be positive, got %lld", what, i, (long long)s->d[i]);
            return false;
        }
        if (__builtin_mul_overflow(total, s->d[i], &total)) {
            error_at(loc, "%s: integer overflow in the shape's element count", what);
            return false;
        }
    }
    if (total > MAX_ELEMS) {
        error_at(loc, "%s: tensor too large: %lld elements (the limit is 2^40)", what, (long long)total);
        return false;
    }
    return true;
}

bool el_dims(Elab *e, Value v, const char *fn, const char *arg, Loc loc, Shape *out) {
    if (v.k == V_ERR) return false;
    if (v.k != V_LIST && v.k != V_TUPLE) {
        error_at(loc, "%s: argument '%s' must be a list of dimensions like [B, 10], got %s", fn, arg,
                 el_describe(e, v));
        return false;
    }
    if (v.n > MAXDIM) {
        error_at(loc, "%s: %d dimensions; at most %d are supported", fn, v.n, MAXDIM);
        return false;
    }
    Shape s = {.rank = v.n};
    for (int i = 0; i < v.n; i++) {
        if (v.v[i].k == V_ERR) return false;
        if (v.v[i].k != V_NUM || !v.v[i].isint) {
            error_at(loc, "%s: dimension %d must be an integer constant, got %s", fn, i, el_describe(e, v.v[i]));
            return false;
        }
        s.d[i] = v.v[i].i;
        if (s.d[i] == -1 && (i > 0 || e->batch == 0)) {
            error_at(loc, "%s: -1 stands for the batch, so only dimension 0 may be -1%s", fn,
                     e->batch ? "" : ", and this model has no batch constant");
            return false;
        }
    }
    bool minus1 = v.n > 0 && s.d[0] == -1;
    if (minus1) s.d[0] = e->batch;
    s.batched = v.n > 0 && e->batch > 0 && (v.v[0].bfac != 0 || minus1);
    if (!el_dims_ok(loc, fn, &s)) return false;
    *out = s;
    return true;
}

bool el_value_shape(Elab *e, Value v, const char *fn, const char *arg, Loc loc, Shape *out) {
    if (v.k == V_ERR) return false;
    if (v.k == V_PARAM) *out = e->m->params[v.i].shape;
    else if (v.k == V_TENSOR) *out = v.g->n[v.id].shape;
    else {
        error_at(loc, "%s: argument '%s' must be a tensor, got %s", fn, arg, el_describe(e, v));
        return false;
    }
    return true;
}

Value el_dim_value(Elab *e, const Shape *s, int axis) {
    bool batch = axis == 0 && s->batched && e->batch > 0;
    return el_int_value(s->d[axis], batch ? s->d[0] / e->batch : 0);
}

/* ------------------------------------------------------------------ naming, params */

const char *el_instance(Elab *e, const char *base, Value name, Loc loc) {
    Inst *I = e->inst;
    if (name.k == V_STR) {
        const char *s = name.s;
        bool ok = *s != 0;
        for (const char *p = s; *p; p++)
            if (!(*p == '_' || *p == '.' || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
                  (*p >= 'A' && *p <= 'Z')))
                ok = false;
        if (!ok || s[0] == '.' || s[strlen(s) - 1] == '.') {
            error_at(loc, "name \"%s\": use letters, digits, '_' and inner '.'", s);
            return NULL;
        }
        return cc_str("%s%s", I->prefix, s);
    }
    if (name.k == V_ERR) return NULL;
    if (name.k != V_NONE) {
        error_at(loc, "name= must be a string, got %s", el_describe(e, name));
        return NULL;
    }
    int k = 0;
    while (k < I->n && strcmp(I->key[k], base) != 0) k++;
    if (k == I->n) {
        int c = I->cap;
        I->key = el_grow(I->key, &c, I->n + 1, sizeof(char *));
        I->count = el_grow(I->count, &I->cap, I->n + 1, sizeof(int));
        I->key[k] = base;
        I->count[k] = 0;
        I->n++;
    }
    return cc_str("%s%s%d", I->prefix, base, ++I->count[k]);
}


/* " (in the call at 14:5)" for level k of a parameter's block-call path, or "". */
static const char *call_at(const Loc *calls, int n, int k, Loc from) {
    return k < n ? cc_str(" (in the call at %s)", el_where(calls[k], from)) : "";
}

static bool same_loc(Loc a, Loc b) {
    return a.line == b.line && a.col == b.col && (a.file == b.file || (a.file && b.file && !strcmp(a.file, b.file)));
}

/* el_declare_param: see cdlc.h.  A shape clash names both places; for parameters made
 * inside blocks, the block calls where the two paths part. */
int el_declare_param(Elab *e, const char *name, Shape s, int init, double a, double b, int64_t fan_in,
                     int64_t fan_out, bool state, Loc loc) {
    int p = arena_map_get(&e->pmap, name);
    if (p >= 0) {
        Param *P = &e->m->params[p];
        if (!shape_eq(&P->shape, &s) || P->state != state) {
            int k = 0;
            while (k < P->ncalls && k < e->bdepth && same_loc(P->calls[k], e->bcall[k])) k++;
            error_at(loc, "parameter '%s' has shape %s here%s, but %s where it was first made at %s%s", name,
                     shape_str(&s), call_at(e->bcall, e->bdepth, k, loc), shape_str(&P->shape),
                     el_where(P->loc, loc), call_at(P->calls, P->ncalls, k, loc));
            if (k < P->ncalls) note_at(P->calls[k], "'%s' was first made in this call", name);
            else note_at(P->loc, "'%s' first made here", name);
            return -1;
        }
        return p;
    }
    Model *m = e->m;
    m->params = el_grow(m->params, &e->pcap, m->nparams + 1, sizeof(Param));
    s.batched = false;
    Loc *calls = NEWN(Loc, e->bdepth + 1);
    memcpy(calls, e->bcall, sizeof(Loc) * (size_t)e->bdepth);
    m->params[m->nparams] = (Param){.name = name, .shape = s, .init = init, .a = a, .b = b, .fan_in = fan_in,
                                    .fan_out = fan_out, .state = state, .loc = loc, .calls = calls,
                                    .ncalls = e->bdepth};
    arena_map_put(&e->pmap, name, m->nparams);
    return m->nparams++;
}

int el_param(Elab *e, const char *inst, const char *leaf, Shape s, int init, double a, double b, int64_t fan_in,
             int64_t fan_out, bool state, Loc loc) {
    if (!inst) return -1;
    const char *name = cc_str("%s.%s", inst, leaf);
    if (!el_dims_ok(loc, name, &s)) return -1;
    int p = el_declare_param(e, name, s, init, a, b, fan_in, fan_out, state, loc);
    return p < 0 ? -1 : el_param_node(e, p, loc);
}

/* ------------------------------------------------------------------ operators: + - * / @ ** */

static const char *op_spelling(int op) {
    switch (op) {
    case 'P': return "**";
    case '+': return "+";
    case '-': return "-";
    case '*': return "*";
    case '/': return "/";
    case '@': return "@";
    case '<': return "<";
    case '>': return ">";
    case 'l': return "<=";
    case 'g': return ">=";
    case 'e': return "==";
    case 'n': return "!=";
    }
    return "?";
}

/* The compiled value of a op b (integers stay exact; / is an integer when it divides). */
static Value num_arith(int op, Value a, Value b, Loc loc) {
    if (a.isint && b.isint) {
        int64_t r = 0;
        bool ovf = false;
        switch (op) {
        case '+':
            ovf = __builtin_add_overflow(a.i, b.i, &r);
            break;
        case '-':
            ovf = __builtin_sub_overflow(a.i, b.i, &r);
            break;
        case '*':
            ovf = __builtin_mul_overflow(a.i, b.i, &r);
            break;
        case '/':
            if (b.i == 0) {
                error_at(loc, "division by zero");
                return el_err();
            }
            if (a.i % b.i != 0 || (a.i == INT64_MIN && b.i == -1)) return el_real_value((double)a.i / (double)b.i);
            r = a.i / b.i;
            break;
        case 'P':
            if (b.i < 0) return el_real_value(pow((double)a.i, (double)b.i));
            r = 1;
            for (int64_t k = 0; k < b.i && !ovf; k++) ovf = __builtin_mul_overflow(r, a.i, &r);
            break;
        default:
            error_at(loc, "'%s' needs tensors, not numbers", op_spelling(op));
            return el_err();
        }
        if (ovf) {
            error_at(loc, "integer overflow in constant expression");
            return el_err();
        }
        return el_int_value(r, 0);
    }
    double x = a.r, y = b.r, r;
    switch (op) {
    case '+': r = x + y; break;
    case '-': r = x - y; break;
    case '*': r = x * y; break;
    case '/':
        if (y == 0) {
            error_at(loc, "division by zero");
            return el_err();
        }
        r = x / y;
        break;
    case 'P': r = pow(x, y); break;
    default:
        error_at(loc, "'%s' needs tensors, not numbers", op_spelling(op));
        return el_err();
    }
    if (!isfinite(r)) {
        error_at(loc, "constant expression is not finite");
        return el_err();
    }
    return el_real_value(r);
}

/* Numbers: the compiled value, and how it depends on the batch constant. */
static Value const_arith(int op, Value a, Value b, Loc loc) {
    return with_bx(num_arith(op, a, b, loc), op, a, b);
}

/* Affine arithmetic on the loop index: only what indexing needs (t + k, k - t, -t, c*t). */
static Value index_arith(int op, Value a, Value b, Loc loc) {
    Value r = {.k = V_INDEX};
    bool ai = a.k == V_INDEX, bi = b.k == V_INDEX;
    Value n = ai ? b : a;
    if ((ai && bi) || n.k != V_NUM || !n.isint || (op != '+' && op != '-' && op != '*')) {
        error_at(loc, "the loop index can only be used in indexing, as in x[:, t] or x[:, T - 1 - t]");
        return el_err();
    }
    Value t = ai ? a : b;
    if (op == '+') r.bfac = t.bfac, r.i = t.i + n.i;
    else if (op == '-' && ai) r.bfac = t.bfac, r.i = t.i - n.i;
    else if (op == '-') r.bfac = -t.bfac, r.i = n.i - t.i;
    else r.bfac = t.bfac * n.i, r.i = t.i * n.i;
    return r;
}

/* The comparison of an operator character ('<', 'l' for <=, ...): CMP_*, or -1. */
static int cmp_kind(int op) {
    switch (op) {
    case '<': return CMP_LT;
    case 'l': return CMP_LE;
    case '>': return CMP_GT;
    case 'g': return CMP_GE;
    case 'e': return CMP_EQ;
    case 'n': return CMP_NE;
    }
    return -1;
}

/* a < b, ... on numbers: 1 or 0 at compile time (not on the batch size, which a
 * smaller last batch changes). */
static Value num_compare(int k, Value a, Value b, Loc loc) {
    if (a.bx || b.bx) {
        error_at(loc, "'%s' of numbers cannot depend on the batch size", cmp_symbol(k));
        return el_err();
    }
    double x = a.isint ? (double)a.i : a.r, y = b.isint ? (double)b.i : b.r;
    bool r = k == CMP_LT ? x < y : k == CMP_LE ? x <= y : k == CMP_GT ? x > y : k == CMP_GE ? x >= y
                                                                              : k == CMP_EQ ? x == y : x != y;
    if (a.isint && b.isint)
        r = k == CMP_LT ? a.i < b.i : k == CMP_LE ? a.i <= b.i : k == CMP_GT ? a.i > b.i : k == CMP_GE ? a.i >= b.i
                                                                              : k == CMP_EQ ? a.i == b.i : a.i != b.i;
    return el_int_value(r, 0);
}

/* el_arith: see cdlc.h.  Numbers fold at compile time; the loop index takes affine
 * offsets; tensors get ADD/SUB/MUL/DIV (numbers become scalar constants, the batch
 * constant the runtime batch size), MATMUL, and SQUARE/POWS for a constant exponent. */
Value el_arith(Elab *e, int op, Value a, Value b, Loc loc) {
    if (a.k == V_ERR || b.k == V_ERR) return el_err();
    int cmp = cmp_kind(op);
    if (cmp >= 0 && a.k == V_NUM && b.k == V_NUM) return num_compare(cmp, a, b, loc);
    if (a.k == V_NUM && b.k == V_NUM) return const_arith(op, a, b, loc);
    if (a.k == V_INDEX || b.k == V_INDEX) return index_arith(op, a, b, loc);
    const char *sp = op_spelling(op);
    for (int k = 0; k < 2; k++) {
        Value v = k ? b : a;
        if (v.k != V_NUM && v.k != V_TENSOR && v.k != V_PARAM) {
            error_at(loc, "'%s' cannot be applied to %s", sp, el_describe(e, v));
            return el_err();
        }
        if (v.k == V_TENSOR && v.g->n[v.id].dtype != DT_REAL && cmp < 0) {
            error_at(loc, "'%s' needs f32 tensors, got i32%s (i32 tensors are labels and ids)", sp,
                     shape_str(&v.g->n[v.id].shape));
            return el_err();
        }
    }
    if (op == 'P') {
        if (b.k != V_NUM) {
            error_at(loc, "'**' needs a constant exponent");
            return el_err();
        }
        if (b.bx) {
            error_at(loc, "'**': the exponent cannot depend on the batch size");
            return el_err();
        }
        if (a.k == V_NUM) {
            error_at(loc, "'**' of a number by a tensor is not supported");
            return el_err();
        }
        int x = el_node(e, a, sp, "x", loc);
        if (b.r == 1) return el_tensor(e, x);
        if (b.r == 2) return el_tensor(e, el_add(e, OP_SQUARE, loc, 1, &x, NULL, NULL, DT_REAL));
        Attrs at = {.f = {b.r}};
        return el_tensor(e, el_add(e, OP_POWS, loc, 1, &x, &at, NULL, DT_REAL));
    }
    if (op == '@') {
        if (a.k == V_NUM || b.k == V_NUM) {
            error_at(loc, "'@' needs two tensors, got %s", el_describe(e, a.k == V_NUM ? a : b));
            return el_err();
        }
        int in[2] = {el_node(e, a, sp, "a", loc), el_node(e, b, sp, "b", loc)};
        bool batched = el_n(e, in[0])->shape.rank > 2 || el_n(e, in[1])->shape.rank > 2;   /* torch.matmul */
        return el_tensor(e, el_add(e, batched ? OP_BMM : OP_MATMUL, loc, 2, in, NULL, NULL, DT_REAL));
    }
    Op o = cmp >= 0 ? OP_COMPARE : op == '+' ? OP_ADD : op == '-' ? OP_SUB : op == '*' ? OP_MUL : OP_DIV;
    int in[2] = {cmp >= 0 ? el_mask_operand(e, a, sp, "a", loc) : el_operand(e, a, sp, "a", loc),
                 cmp >= 0 ? el_mask_operand(e, b, sp, "b", loc) : el_operand(e, b, sp, "b", loc)};
    Attrs at = {.i = {cmp}};
    return el_tensor(e, el_add(e, o, loc, 2, in, cmp >= 0 ? &at : NULL, NULL, DT_REAL));
}
