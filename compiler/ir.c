/* ir.c -- the graph: nodes in SSA form referenced by index, the op-info table,
 * construction (ir_add runs the op's shape rule), cloning, verification and dumps. */
#include "cdlc.h"

#include <string.h>

/* ------------------------------------------------------------------ op table */

OpInfo op_info[OP_COUNT] = {
#define OP(id, nm, n, fl) [OP_##id] = {.name = nm, .nin = n, .flags = fl},
#include "../runtime/ops.def"
#undef OP
};

static void register_rules(const OpRule *rules, int n) {
    for (int i = 0; i < n; i++) {
        const OpRule *r = &rules[i];
        if (r->op < 0 || r->op >= OP_COUNT) die("rule table: bad op %d", (int)r->op);
        if (op_info[r->op].rule.shape) die("op %s has two rule blocks", op_info[r->op].name);
        op_info[r->op].rule = *r;
    }
}

/* Fill op_info's rules from every family table.  An op without rules would be reported
 * by ir_add as "not implemented" at the user's location; tests/test_ops_table.c checks
 * that none is missing. */
void ops_init(void) {
    static bool done;
    if (done) return;
    done = true;
    register_rules(ops_ew_rules, ops_ew_count);
    register_rules(ops_dense_rules, ops_dense_count);
    register_rules(ops_loss_rules, ops_loss_count);
    register_rules(ops_conv_rules, ops_conv_count);
    register_rules(ops_rnn_rules, ops_rnn_count);
    register_rules(ops_ctrl_rules, ops_ctrl_count);
    register_rules(ops_attn_rules, ops_attn_count);
    register_rules(ops_norm_rules, ops_norm_count);
    register_rules(ops_conv2_rules, ops_conv2_count);
    register_rules(ops_sel_rules, ops_sel_count);
}

/* ------------------------------------------------------------------ shapes */

int64_t shape_numel(const Shape *s) {
    int64_t n = 1;
    for (int i = 0; i < s->rank; i++) n *= s->d[i];
    return n;
}

bool shape_eq(const Shape *a, const Shape *b) {
    if (a->rank != b->rank) return false;
    for (int i = 0; i < a->rank; i++)
        if (a->d[i] != b->d[i]) return false;
    return true;
}

const char *shape_str(const Shape *s) {
    char buf[16 * MAXDIM + 4];
    int k = 0;
    buf[k++] = '[';
    for (int i = 0; i < s->rank; i++)
        k += snprintf(buf + k, sizeof buf - (size_t)k, "%s%lld", i ? ", " : "", (long long)s->d[i]);
    buf[k++] = ']';
    buf[k] = 0;
    return arena_strdup(cc_arena, buf);
}

Shape shape_make(int rank, const int64_t *d, bool batched) {
    Shape s = {.rank = rank, .batched = batched};
    for (int i = 0; i < rank; i++) s.d[i] = d[i];
    return s;
}

/* ------------------------------------------------------------------ graphs */

Graph *ir_graph_new(int64_t batch) {
    Graph *g = NEW(Graph);
    g->batch = batch;
    g->owner = -1;
    return g;
}

Graph *ir_body_new(Graph *parent) {
    Graph *g = ir_graph_new(parent->batch);
    g->parent = parent;
    return g;
}

static Node *push(Graph *g) {
    if (g->len == g->cap) {
        int cap = g->cap ? g->cap * 2 : 64;
        g->n = arena_reserve(cc_arena, g->n, sizeof(Node) * (size_t)g->cap, sizeof(Node) * (size_t)cap);
        g->cap = cap;
    }
    Node *n = &g->n[g->len++];
    memset(n, 0, sizeof *n);
    n->slot = -1;
    return n;
}

int ir_add(Graph *g, Op op, Loc loc, int nin, const int *in, const Attrs *at,
           const Shape *hint, DType dt) {
    ops_init();
    if (op < 0 || op >= OP_COUNT) die("ir_add: bad op %d", (int)op);
    const OpInfo *oi = &op_info[op];
    if (oi->nin >= 0 && nin != oi->nin) die("ir_add: %s takes %d inputs, got %d", oi->name, oi->nin, nin);
    for (int i = 0; i < nin; i++)
        if (in[i] < 0 || in[i] >= g->len) die("ir_add: %s input %d is %d (graph has %d)", oi->name, i, in[i], g->len);
    if (!oi->rule.shape) {
        error_at(loc, "%s: not implemented yet", oi->name);
        return -1;
    }
    Node *n = push(g);
    n->op = op;
    n->loc = loc;
    n->nin = nin;
    n->in = NEWN(int, nin > 0 ? nin : 1);
    if (nin) memcpy(n->in, in, sizeof(int) * (size_t)nin);
    if (at) {
        memcpy(n->ia, at->i, sizeof n->ia);
        memcpy(n->fa, at->f, sizeof n->fa);
    }
    if (hint) n->shape = *hint;
    n->dtype = dt;
    if (!oi->rule.shape(g, n)) {
        g->len--; /* drop the rejected node; ids stay dense */
        return -1;
    }
    if (!shape_checked_numel(n, &n->shape)) {
        g->len--;
        return -1;
    }
    return g->len - 1;
}

int ir_op1(Graph *g, Op op, Loc loc, int a) { return ir_add(g, op, loc, 1, &a, NULL, NULL, DT_REAL); }

int ir_op2(Graph *g, Op op, Loc loc, int a, int b) {
    int in[2] = {a, b};
    return ir_add(g, op, loc, 2, in, NULL, NULL, DT_REAL);
}

int ir_scalar(Graph *g, double v, Loc loc) {
    Attrs at = {.f = {v}};
    Shape s = {0};
    return ir_add(g, OP_CONST, loc, 0, NULL, &at, &s, DT_REAL);
}

static Graph *clone_into(const Graph *g, Graph *parent) {
    Graph *c = NEW(Graph);
    *c = *g;
    c->parent = parent;
    c->cap = g->len > 0 ? g->len : 1;
    c->n = NEWN(Node, c->cap);
    memcpy(c->n, g->n, sizeof(Node) * (size_t)g->len);
    for (int i = 0; i < g->len; i++) {
        Node *n = &c->n[i];
        n->in = NEWN(int, n->nin > 0 ? n->nin : 1);
        if (n->nin) memcpy(n->in, g->n[i].in, sizeof(int) * (size_t)n->nin);
        if (n->sub) n->sub = clone_into(g->n[i].sub, c);
    }
    if (g->nres) {
        c->res = NEWN(int, g->nres);
        memcpy(c->res, g->res, sizeof(int) * (size_t)g->nres);
    }
    return c;
}

Graph *ir_clone(const Graph *g) { return clone_into(g, g->parent); }

Graph *ir_snapshot(const Graph *g) {
    Graph *c = NEW(Graph);
    *c = *g;
    c->cap = g->len > 0 ? g->len : 1;
    c->n = NEWN(Node, c->cap);
    memcpy(c->n, g->n, sizeof(Node) * (size_t)g->len);
    return c;
}

void ir_snapshot_drop(Graph *s) {
    arena_drop(cc_arena, s->n, sizeof(Node) * (size_t)s->cap);
    s->n = NULL;
    s->len = s->cap = 0;
}

int *ir_uses(const Graph *g) {
    int *u = NEWN(int, g->len + 1);
    for (int i = 0; i < g->len; i++)
        for (int k = 0; k < g->n[i].nin; k++) u[g->n[i].in[k]]++;
    for (int k = 0; k < g->nres; k++) u[g->res[k]]++;
    return u;
}

/* ------------------------------------------------------------------ verify */

void ir_verify(const Graph *g) {
    for (int i = 0; i < g->len; i++) {
        const Node *n = &g->n[i];
        if (n->op < 0 || n->op >= OP_COUNT) die("verify: node %d has bad op %d", i, (int)n->op);
        const OpInfo *oi = &op_info[n->op];
        if (oi->nin >= 0 && n->nin != oi->nin) die("verify: node %d (%s) has %d inputs, wants %d", i, oi->name, n->nin, oi->nin);
        for (int k = 0; k < n->nin; k++)
            if (n->in[k] < 0 || n->in[k] >= i) die("verify: node %d (%s) input %d = %d is not earlier", i, oi->name, k, n->in[k]);
        if (n->shape.rank < 0 || n->shape.rank > MAXDIM) die("verify: node %d rank %d", i, n->shape.rank);
        for (int k = 0; k < n->shape.rank; k++)
            if (n->shape.d[k] <= 0) die("verify: node %d (%s) dim %d = %lld", i, oi->name, k, (long long)n->shape.d[k]);
        if ((n->op == OP_LOOP) != (n->sub != NULL)) die("verify: node %d: loop/body mismatch", i);
        if (n->sub) {
            if (n->sub->parent != g) die("verify: node %d: body's parent is wrong", i);
            ir_verify(n->sub);
        }
        if (n->op == OP_LOOP_CAPTURE && (!g->parent || capture_of(n) < 0 || capture_of(n) >= g->parent->len))
            die("verify: capture %d refers to %d", i, capture_of(n));
    }
    for (int k = 0; k < g->nres; k++)
        if (g->res[k] < 0 || g->res[k] >= g->len) die("verify: result %d = %d", k, g->res[k]);
}

/* ------------------------------------------------------------------ dumps */

static void attrs_str(const Node *n, char *buf, size_t cap) {
    size_t k = 0;
    buf[0] = 0;
    int last = -1;
    for (int i = 0; i < 8; i++)
        if (n->ia[i]) last = i;
    if (last >= 0) {
        k += (size_t)snprintf(buf + k, cap - k, " i=[");
        for (int i = 0; i <= last && k < cap; i++)
            k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? "," : "", (long long)n->ia[i]);
        k += (size_t)snprintf(buf + k, cap - k, "]");
    }
    last = -1;
    for (int i = 0; i < 4; i++)
        if (n->fa[i] != 0) last = i;
    if (last >= 0 && k < cap) {
        k += (size_t)snprintf(buf + k, cap - k, " f=[");
        for (int i = 0; i <= last && k < cap; i++)
            k += (size_t)snprintf(buf + k, cap - k, "%s%g", i ? "," : "", n->fa[i]);
        if (k < cap) snprintf(buf + k, cap - k, "]");
    }
}

static void dump_graph(FILE *f, const Graph *g, int depth) {
    for (int i = 0; i < g->len; i++) {
        const Node *n = &g->n[i];
        char at[200];
        attrs_str(n, at, sizeof at);
        fprintf(f, "%*s%%%d = %s(", depth * 4, "", i, op_info[n->op].name);
        for (int k = 0; k < n->nin; k++) fprintf(f, "%s%%%d", k ? ", " : "", n->in[k]);
        fprintf(f, ")%s : %s%s%s", at, n->dtype == DT_I32 ? "i32" : "f32", shape_str(&n->shape),
                n->shape.batched ? "b" : "");
        if (n->name) fprintf(f, " \"%s\"", n->name);
        else if (n->var) fprintf(f, " %s", n->var);
        if (n->flags & NF_PARAM) fprintf(f, " param");
        if (n->flags & NF_STATE) fprintf(f, " state");
        if (n->flags & NF_INPUT) fprintf(f, " input");
        if (n->flags & NF_OUTPUT) fprintf(f, " output");
        if (n->flags & NF_LOSS) fprintf(f, " loss");
        if (n->flags & NF_GRAD) fprintf(f, n->grad_of ? " grad of %s" : " grad", n->grad_of);
        if (n->flags & NF_PARAM_GRAD) fprintf(f, " ->grad[%d]", n->slot);
        if (n->flags & NF_INPUT_GRAD) fprintf(f, " ->in_grad[%d]", n->slot);
        if (n->loc.file) fprintf(f, "  @ %s:%d:%d", n->loc.file, n->loc.line, n->loc.col);
        if (n->xw_dw) fprintf(f, "  ; conv2d_bwd_xw: also %%%d", n->xw_dw - 1);
        if (n->xw_db) fprintf(f, ", %%%d", n->xw_db - 1);
        if (n->xw_at) fprintf(f, "  ; written by %%%d's conv2d_bwd_xw", n->xw_at - 1);
        if ((n->flags & NF_DEAD) && n->fused_into) fprintf(f, "  ; dead: fused into %%%d", n->fused_into - 1);
        else if (n->flags & NF_DEAD) fprintf(f, "  ; dead");
        fputc('\n', f);
        if (n->sub) {
            dump_graph(f, n->sub, depth + 1);
            fprintf(f, "%*sresults:", (depth + 1) * 4, "");
            for (int k = 0; k < n->sub->nres; k++)
                fprintf(f, " %s%%%d", k == n->sub->ncarry ? "| " : "", n->sub->res[k]);
            fputc('\n', f);
        }
    }
}

void ir_dump(FILE *f, const Graph *g, const char *title) {
    fprintf(f, "# %s\n", title);
    dump_graph(f, g, 0);
}

static void dot_graph(FILE *f, const Graph *g, const char *prefix) {
    for (int i = 0; i < g->len; i++) {
        const Node *n = &g->n[i];
        const char *color = n->flags & (NF_PARAM | NF_STATE) ? "lightblue"
                            : n->flags & NF_INPUT           ? "palegreen"
                            : n->flags & (NF_LOSS | NF_OUTPUT) ? "gold"
                            : n->flags & NF_GRAD            ? "mistyrose"
                                                            : "white";
        fprintf(f, "  %s%d [label=\"%s%s%s\\n%s\", style=filled, fillcolor=%s];\n", prefix, i,
                op_info[n->op].name, n->name || n->var ? " " : "", n->name ? n->name : n->var ? n->var : "",
                shape_str(&n->shape), color);
        for (int k = 0; k < n->nin; k++) fprintf(f, "  %s%d -> %s%d;\n", prefix, n->in[k], prefix, i);
        if (n->sub) {
            char *p = cc_str("%sL%d_", prefix, i);
            fprintf(f, "  subgraph cluster_%s {\n  label=\"loop %lld steps\";\n", p, (long long)loop_count(n));
            dot_graph(f, n->sub, p);
            fprintf(f, "  }\n");
            /* outside the cluster: an edge inside it would pull the outer node in */
            for (int k = 0; k < n->sub->len; k++)
                if (n->sub->n[k].op == OP_LOOP_CAPTURE)
                    fprintf(f, "  %s%lld -> %s%d [style=dashed];\n", prefix, (long long)capture_of(&n->sub->n[k]), p, k);
            for (int k = 0; k < n->sub->nres; k++) fprintf(f, "  %s%d -> %s%d [style=dotted];\n", p, n->sub->res[k], prefix, i);
        }
    }
}

void ir_dump_dot(FILE *f, const Graph *g, const char *title) {
    fprintf(f, "digraph \"%s\" {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n", title);
    dot_graph(f, g, "n");
    fprintf(f, "}\n");
}

int ir_add_loop(Graph *g, Loc loc, int nin, const int *in, const Attrs *at, Graph *body) {
    if (body->parent != g) die("ir_add_loop: body belongs to another graph");
    Shape none = {0};
    int id = ir_add(g, OP_LOOP, loc, nin, in, at, &none, DT_REAL);
    if (id < 0) return -1;
    g->n[id].sub = body;
    body->owner = id;
    /* The rule runs again now that the body is attached (ir_add ran it without). */
    if (!op_info[OP_LOOP].rule.shape(g, &g->n[id])) {
        g->len--;
        return -1;
    }
    return id;
}
