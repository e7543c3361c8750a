/* emit_tape.c -- the tape emitter (cdlc --target=tape): the same model as emit_c writes,
 * but run the PyTorch-eager way.  Each function of the model records its forward graph
 * on the runtime's tape (cdl.h, TAPE block: one cdl_t_<op> call per node, executed at
 * once) and lets cdl_backward differentiate the recorded ops at run time.  There is no
 * symbolic backward, no memory plan: the tape's bump arena in net->act holds every
 * value, gradient and saved scratch of one step.
 *
 * The output has the static build's public face: the same tables (parameters, inputs,
 * outputs, entries), fingerprint, train defaults and public names (mlp_model, mlp_new,
 * ...), so checkpoints, the generic trainer and user programs work unchanged with either
 * build.  Random ops pass the node's stream id (ia[7]) and the loop step, so both builds
 * draw the same numbers.  Compiled with -DCDL_TAPE_RENAME every public name gets a
 * "_tape" suffix after the model name (mlp_tape_model, mlp_tape_new, ...), so one
 * program can link the static and the tape build of a model (cdl-compare does).
 *
 * Loops are C loops whose body records one step's ops per trip: the tape grows with the
 * trip count at run time, the code does not.  Carried values are cdl_t pointers updated
 * at the end of a trip; collected values are gathered per step and stacked after the
 * loop (cdl_t_stack).
 */
#include "cdlc.h"
#include "cdl.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct TE {
    FILE *f;
    int indent;
    const Model *m;
    int real_size;
    int64_t batch;          /* compiled batch B (1 without one) */
    const Graph *g;         /* the function's graph */
    const char **name;      /* top-level node -> C variable */
    bool entry;             /* an extra entry: inputs come from in[] */
    /* inside a loop body */
    const Graph *body;
    const char **bname;
    int loop;               /* top-level id of the LOOP being written, -1 outside */
} TE;

/* ------------------------------------------------------------------ helpers */

static void line(TE *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line(TE *e, const char *fmt, ...) {
    va_list ap;
    fprintf(e->f, "%*s", e->indent * 4, "");
    va_start(ap, fmt);
    vfprintf(e->f, fmt, ap);
    va_end(ap);
    fputc('\n', e->f);
}

static const Graph *cur(TE *e) { return e->body ? e->body : e->g; }

static const char *var(TE *e, int node) {
    const char *s = e->body ? e->bname[node] : e->name[node];
    if (!s) die("tape emitter: node %d has no C variable", node);
    return s;
}

/* A readable C identifier for node i (as emit_c names them): "logits_12", "fc1_weight_3". */
static const char *var_name(const Node *n, int i, const char *prefix) {
    const char *base = n->op == OP_PARAM && n->name ? n->name : n->var ? n->var : n->name ? n->name : op_info[n->op].name;
    char buf[96];
    size_t k = 0;
    for (const char *p = prefix; *p && k < 40; p++) buf[k++] = *p;
    for (const char *p = base; *p && k < 60; p++) buf[k++] = isalnum((unsigned char)*p) ? *p : '_';
    if (k == 0 || isdigit((unsigned char)buf[0])) buf[k++] = 'v';
    snprintf(buf + k, sizeof buf - k, "_%d", i);
    return arena_strdup(cc_arena, buf);
}

/* Runtime size of dim 0 of shape s: "nb", "nb*28" when batched, else the number. */
static const char *rows_of(TE *e, const Shape *s) {
    if (s->rank == 0) return "1";
    if (!s->batched) return cc_str("%lld", (long long)s->d[0]);
    int64_t k = s->d[0] / e->batch;
    return k == 1 ? "nb" : cc_str("nb*%lld", (long long)k);
}

/* "rank, (const int64_t[]){nb, 128}" (runtime dims) or "0, NULL". */
static const char *dims_arg(TE *e, const Shape *s) {
    if (s->rank == 0) return "0, NULL";
    char *r = arena_printf(cc_arena, "%d, (const int64_t[]){%s", s->rank, rows_of(e, s));
    for (int i = 1; i < s->rank; i++) r = arena_printf(cc_arena, "%s, %lld", r, (long long)s->d[i]);
    return arena_printf(cc_arena, "%s}", r);
}

/* "(B, 256)" */
static const char *shape_comment(TE *e, const Shape *s) {
    char buf[160];
    size_t k = (size_t)snprintf(buf, sizeof buf, "(");
    for (int i = 0; i < s->rank && k < sizeof buf; i++) {
        if (i == 0 && s->batched) {
            int64_t m = s->d[0] / e->batch;
            k += (size_t)(m == 1 ? snprintf(buf + k, sizeof buf - k, "B") : snprintf(buf + k, sizeof buf - k, "B*%lld", (long long)m));
        } else {
            k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%lld", i ? ", " : "", (long long)s->d[i]);
        }
    }
    if (k < sizeof buf) snprintf(buf + k, sizeof buf - k, ")");
    return arena_strdup(cc_arena, buf);
}

static const char *loc_str(const Node *n) {
    if (!n->loc.file) return "";
    const char *f = strrchr(n->loc.file, '/');
    return cc_str(" @ %s:%d:%d", f ? f + 1 : n->loc.file, n->loc.line, n->loc.col);
}

static const char *red(const Node *n) { return n->ia[0] == RED_SUM ? "CDL_RED_SUM" : "CDL_RED_MEAN"; }

/* ------------------------------------------------------------------ liveness */

/* Nodes whose values something needs: the roots (outputs, the loss, an entry's
 * outputs, a body's results) and batch norms (they update running statistics), then
 * everything those read.  A live LOOP keeps all its inputs; in a body, every capture
 * of a live outer value may be read. */
static bool *live_nodes(const Graph *g, const int *roots, int nroots) {
    bool *live = NEWN(bool, g->len + 1);
    for (int k = 0; k < nroots; k++)
        if (roots[k] >= 0) live[roots[k]] = true;
    for (int i = 0; i < g->len; i++)
        if (g->n[i].op == OP_BATCHNORM) live[i] = true;
    for (int i = g->len - 1; i >= 0; i--) {
        if (!live[i]) continue;
        const Node *n = &g->n[i];
        for (int k = 0; k < n->nin; k++) live[n->in[k]] = true;
    }
    return live;
}

/* Is node i read by a live node or a root?  (A live node nobody reads is a batch norm
 * kept for its running statistics: its call is written as a statement.) */
static bool *read_nodes(const Graph *g, const bool *live, const int *roots, int nroots) {
    bool *rd = NEWN(bool, g->len + 1);
    for (int k = 0; k < nroots; k++)
        if (roots[k] >= 0) rd[roots[k]] = true;
    for (int i = 0; i < g->len; i++)
        if (live[i])
            for (int k = 0; k < g->n[i].nin; k++) rd[g->n[i].in[k]] = true;
    return rd;
}

/* ------------------------------------------------------------------ one node */

/* The cdl_t_<op>(...) call computing node i of the current graph, or NULL for nodes
 * written structurally (loops) or not at all. */
static const char *call_of(TE *e, int i) {
    const Graph *g = cur(e);
    const Node *n = &g->n[i];
    const char *t = e->body ? "t" : "0";
#define A(k) var(e, n->in[k])
    switch (n->op) {
    case OP_INPUT:
        if (e->entry)
            return cc_str("cdl_t_from(tp, %s, (void *)in[%d], %s)", n->dtype == DT_I32 ? "CDL_I32" : e->real_size == 8 ? "CDL_F64" : "CDL_F32",
                       n->slot, dims_arg(e, &n->shape));
        return cc_str("cdl_t_input(tp, %d, nb)", n->slot);
    case OP_PARAM: return cc_str("cdl_t_param(tp, %d)", n->slot);
    case OP_CONST:
        if (n->dtype == DT_I32) return cc_str("cdl_t_full_i32(tp, %lld, %s)", (long long)n->fa[0], dims_arg(e, &n->shape));
        return cc_str("cdl_t_full(tp, %s, %s)", e_lit(n->fa[0]), dims_arg(e, &n->shape));
    case OP_BATCHSIZE: return "cdl_t_batch_size(tp, nb)";
    case OP_RANDN:
    case OP_RAND:
        return cc_str("cdl_t_%s(tp, %lld, %s, %s)", n->op == OP_RANDN ? "randn" : "rand", (long long)n->ia[7], t, dims_arg(e, &n->shape));
    case OP_ADD: case OP_SUB: case OP_MUL: case OP_DIV: case OP_MAXIMUM: case OP_MINIMUM:
        return cc_str("cdl_t_%s(tp, %s, %s)", op_info[n->op].name, A(0), A(1));
    case OP_NEG: case OP_EXP: case OP_LOG: case OP_SQRT: case OP_ABS: case OP_SQUARE: case OP_RELU:
    case OP_SIGMOID: case OP_TANH: case OP_GELU: case OP_SOFTPLUS: case OP_SOFTMAX: case OP_LOG_SOFTMAX:
        return cc_str("cdl_t_%s(tp, %s)", op_info[n->op].name, A(0));
    case OP_POWS: return cc_str("cdl_t_pow(tp, %s, %s)", A(0), e_lit(n->fa[0]));
    case OP_CLAMP: return cc_str("cdl_t_clamp(tp, %s, %s, %s)", A(0), e_lit(n->fa[0]), e_lit(n->fa[1]));
    case OP_LEAKY_RELU: return cc_str("cdl_t_leaky_relu(tp, %s, %s)", A(0), e_lit(n->fa[0]));
    case OP_ELU: return cc_str("cdl_t_elu(tp, %s, %s)", A(0), e_lit(n->fa[0]));
    case OP_DROPOUT: return cc_str("cdl_t_dropout(tp, %s, %s, %lld, %s)", A(0), e_lit(n->fa[0]), (long long)n->ia[7], t);
    case OP_STOP_GRAD: return cc_str("cdl_t_stop_gradient(tp, %s)", A(0));
    case OP_MATMUL: return cc_str("cdl_t_matmul(tp, %s, %s, %d, %d)", A(0), A(1), n->ia[0] != 0, n->ia[1] != 0);
    case OP_LINEAR: return cc_str("cdl_t_linear(tp, %s, %s, %s)", A(0), A(1), n->nin > 2 ? A(2) : "NULL");
    case OP_SUM:
    case OP_MEAN:
        return cc_str("cdl_t_%s(tp, %s, 0x%llxu, %d)", op_info[n->op].name, A(0), (unsigned long long)n->ia[0], n->ia[1] != 0);
    case OP_BROADCAST: return cc_str("cdl_t_broadcast_to(tp, %s, %s)", A(0), dims_arg(e, &n->shape));
    case OP_RESHAPE: return cc_str("cdl_t_reshape(tp, %s, %s)", A(0), dims_arg(e, &n->shape));
    case OP_TRANSPOSE: {
        char *p = arena_printf(cc_arena, "(const int[]){");
        for (int k = 0; k < n->shape.rank; k++) p = arena_printf(cc_arena, "%s%s%lld", p, k ? ", " : "", (long long)n->ia[k]);
        return cc_str("cdl_t_transpose(tp, %s, %s%s})", A(0), p, n->shape.rank ? "" : "0");
    }
    case OP_CONCAT: {
        char *p = arena_printf(cc_arena, "(cdl_t *[]){");
        for (int k = 0; k < n->nin; k++) p = arena_printf(cc_arena, "%s%s%s", p, k ? ", " : "", A(k));
        return cc_str("cdl_t_concat(tp, %d, %s}, %lld)", n->nin, p, (long long)n->ia[0]);
    }
    case OP_SLICE: {
        /* start moves with the loop step (ia5); a full slice of the batch axis has the
         * runtime number of rows */
        const char *start = !n->ia[5] ? cc_str("%lld", (long long)n->ia[1])
                            : n->ia[1] == 0 && n->ia[5] == 1 ? t
                                                             : cc_str("%lld + %lld*%s", (long long)n->ia[1], (long long)n->ia[5], t);
        int axis = (int)n->ia[0];
        const char *count = n->ia[4] ? "1" : axis == 0 && n->shape.batched ? rows_of(e, &n->shape)
                                                                           : cc_str("%lld", (long long)n->shape.d[axis]);
        return cc_str("cdl_t_slice(tp, %s, %d, %s, %lld, %s, %d)", A(0), axis, start, (long long)n->ia[3], count, n->ia[4] != 0);
    }
    case OP_EMBEDDING: return cc_str("cdl_t_embedding(tp, %s, %s)", A(0), A(1));
    case OP_CONV2D:
        return cc_str("cdl_t_conv2d(tp, %s, %s, %s, %lld, %lld)", A(0), A(1), n->nin > 2 ? A(2) : "NULL",
                   (long long)(n->ia[0] > 0 ? n->ia[0] : 1), (long long)n->ia[1]);
    case OP_MAXPOOL2D:
    case OP_AVGPOOL2D:
        return cc_str("cdl_t_%s(tp, %s, %lld, %lld, %lld)", op_info[n->op].name, A(0), (long long)n->ia[0],
                   (long long)(n->ia[1] > 0 ? n->ia[1] : n->ia[0]), (long long)n->ia[2]);
    case OP_BATCHNORM:
        return cc_str("cdl_t_batchnorm(tp, %s, %s, %s, %s, %s, %s, %s)", A(0), A(1), A(2), A(3), A(4), e_lit(n->fa[0]), e_lit(n->fa[1]));
    case OP_LSTM_ACT: return cc_str("cdl_t_lstm_act(tp, %s, %s)", A(0), A(1));
    case OP_GRU_ACT: return cc_str("cdl_t_gru_act(tp, %s, %s, %s)", A(0), A(1), A(2));
    case OP_VIEW: {
        /* a view of a packed result: the tape packs parts with the runtime rows, the
         * static code (and ia0) with the compiled batch B */
        const char *off = cc_str("%lld", (long long)n->ia[0]);
        if (n->shape.batched) {
            if (n->ia[0] % e->batch) die("tape emitter: view offset %lld is not a multiple of the batch", (long long)n->ia[0]);
            int64_t k = n->ia[0] / e->batch;
            off = k == 0 ? "0" : cc_str("(int64_t)nb*%lld", (long long)k);
        }
        return cc_str("cdl_t_view(tp, %s, %s, %s)", A(0), off, dims_arg(e, &n->shape));
    }
    case OP_CROSS_ENTROPY: return cc_str("cdl_t_cross_entropy(tp, %s, %s, %s, %s)", A(0), A(1), e_lit(n->fa[0]), red(n));
    case OP_NLL: return cc_str("cdl_t_nll(tp, %s, %s, %s)", A(0), A(1), red(n));
    case OP_MSE: case OP_L1: case OP_BCE: case OP_BCE_LOGITS: case OP_KL_NORMAL:
        return cc_str("cdl_t_%s(tp, %s, %s, %s)", op_info[n->op].name, A(0), A(1), red(n));
    case OP_HUBER: return cc_str("cdl_t_huber(tp, %s, %s, %s, %s)", A(0), A(1), e_lit(n->fa[0]), red(n));
    case OP_LOOP_CARRY: return cc_str("L%d_carry%lld", e->loop, (long long)n->ia[0]);
    case OP_LOOP_CAPTURE: return e->name[n->ia[0]];
    default:
        die("tape emitter: op %s cannot appear in a forward graph", op_info[n->op].name);
    }
#undef A
}


/* int64 product of a shape's dims at the compiled batch (for loop buffers). */
static int64_t loop_last(const Node *L) { return L->ia[0] + (L->ia[1] - 1) * L->ia[2]; }
static int64_t loop_tmin(const Node *L) { return L->ia[2] > 0 ? L->ia[0] : loop_last(L); }

/* A loop: carried values as cdl_t pointers, collected ones in per-step arrays, a C loop
 * recording one step of the body per trip. */
static void emit_loop(TE *e, int L) {
    const Node *ln = &e->g->n[L];
    const Graph *b = ln->sub;
    int64_t start = ln->ia[0], count = ln->ia[1], step = ln->ia[2], last = loop_last(ln);
    line(e, "/* loop%s: t = %lld %s %lld (%lld steps); each trip records one more step on the tape */", loc_str(ln),
         (long long)start, step > 0 ? "up to" : "down to", (long long)last, (long long)count);
    for (int k = 0; k < b->ncarry; k++) line(e, "cdl_t *L%d_carry%d = %s;", L, k, e->name[ln->in[k]]);
    for (int k = b->ncarry; k < b->nres; k++) line(e, "cdl_t *L%d_collect%d[%lld];", L, k, (long long)count);
    line(e, "for (int t = %lld; t %s %lld; t += %lld) {", (long long)start, step > 0 ? "<=" : ">=", (long long)last, (long long)step);
    e->indent++;
    e->body = b;
    e->loop = L;
    e->bname = NEWN(const char *, b->len + 1);
    bool *live = live_nodes(b, b->res, b->nres), *rd = read_nodes(b, live, b->res, b->nres);
    for (int j = 0; j < b->len; j++) {
        const Node *n = &b->n[j];
        e->bname[j] = var_name(n, j, "s_");
        if (!live[j]) continue;
        const char *c = call_of(e, j);
        if (!rd[j]) line(e, "(void)%s;  /* %s %s%s */", c, shape_comment(e, &n->shape), op_info[n->op].name, loc_str(n));
        else line(e, "cdl_t *%s = %s;  /* %s %s%s */", e->bname[j], c, shape_comment(e, &n->shape), op_info[n->op].name, loc_str(n));
    }
    for (int k = 0; k < b->ncarry; k++) line(e, "L%d_carry%d = %s;", L, k, e->bname[b->res[k]]);
    for (int k = b->ncarry; k < b->nres; k++)
        line(e, "L%d_collect%d[t - %lld] = %s;", L, k, (long long)loop_tmin(ln), e->bname[b->res[k]]);
    e->indent--;
    line(e, "}");
    e->body = NULL;
    e->bname = NULL;
    e->loop = -1;
}

static void emit_node(TE *e, int i, bool read) {
    const Node *n = &e->g->n[i];
    const char *what = cc_str("/* %s %s%s%s */", shape_comment(e, &n->shape), op_info[n->op].name, n->name ? cc_str(" \"%s\"", n->name) : "",
                           loc_str(n));
    if (n->op == OP_LOOP_OUT) {
        const Node *ln = &e->g->n[n->in[0]];
        const Graph *b = ln->sub;
        int k = (int)n->ia[0];
        if (k < b->ncarry) line(e, "cdl_t *%s = L%d_carry%d;  %s", e->name[i], n->in[0], k, what);
        else
            line(e, "cdl_t *%s = cdl_t_stack(tp, %lld, L%d_collect%d, %d);  %s", e->name[i], (long long)ln->ia[1], n->in[0], k,
                 b->n[b->res[k]].shape.batched, what);
        return;
    }
    if (!read) line(e, "(void)%s;  %s", call_of(e, i), what);
    else line(e, "cdl_t *%s = %s;  %s", e->name[i], call_of(e, i), what);
}

/* ------------------------------------------------------------------ functions */

/* The record function of graph g: every live node in order; writes out[] and returns the
 * loss (or NULL). */
static void emit_record(TE *e, const char *cname, const Graph *g, const int *outs, int nouts, int loss) {
    e->g = g;
    e->loop = -1;
    e->name = NEWN(const char *, g->len + 1);
    for (int i = 0; i < g->len; i++) e->name[i] = var_name(&g->n[i], i, "");
    int *roots = NEWN(int, nouts + 2);
    for (int k = 0; k < nouts; k++) roots[k] = outs[k];
    roots[nouts] = loss;
    bool *live = live_nodes(g, roots, nouts + 1), *rd = read_nodes(g, live, roots, nouts + 1);
    if (e->entry) {
        fprintf(e->f, "\n/* Records entry %s's graph on the tape (eval mode); its outputs into out[]. */\n", cname);
        fprintf(e->f, "static void %s(cdl_tape *tp, cdl_net *net, int nb, const void *const *in, cdl_t **out)\n{\n", cname);
    } else {
        fprintf(e->f, "\n/* Records the model's graph on the tape: every op runs now and leaves a record that\n"
                      " * cdl_backward can differentiate.  Outputs into out[]; returns the loss (NULL: none). */\n");
        fprintf(e->f, "static cdl_t *%s(cdl_tape *tp, cdl_net *net, int nb, cdl_t **out)\n{\n", cname);
    }
    e->indent = 1;
    line(e, "(void)net; (void)nb; (void)out;%s", e->entry ? " (void)in;" : "");
    for (int i = 0; i < g->len; i++) {
        if (!live[i]) continue;
        if (g->n[i].op == OP_LOOP) emit_loop(e, i);
        else emit_node(e, i, rd[i]);
    }
    for (int k = 0; k < nouts; k++) line(e, "out[%d] = %s;", k, e->name[outs[k]]);
    if (!e->entry) line(e, "return %s;", loss >= 0 ? e->name[loss] : "NULL");
    fprintf(e->f, "}\n");
}

/* ------------------------------------------------------------------ driver */

/* Write MODEL_tape.c to cf and its header (header_name) to hf. */
void emit_tape(const Pipeline *p, FILE *cf, FILE *hf, bool with_main, const char *header_name) {
    const Model *m = p->m;
    int real_size = p->real_size;
    TE E = {.f = cf, .m = m, .real_size = real_size, .batch = m->batch > 0 ? m->batch : 1, .loop = -1};
    TE *e = &E;
    const char *mn = m->name;
    int64_t act = p->act_bytes;

    EmitLayout L = emit_layout(m);
    emit_header(hf, m, header_name, true);
    emit_prologue(cf, m, header_name,
                  cc_str(" * --target=tape: the model run the eager way: each function records its ops on the\n"
                         " * runtime's tape (one cdl_t_<op> call per node, computed at once) and cdl_backward\n"
                         " * differentiates the record.  Same tables, names and random numbers as the static\n"
                         " * build; the batch nb is at most %lld.  The tape lives in net->act (%lld bytes: one\n"
                         " * step's values, gradients and records).",
                         (long long)m->batch, (long long)act));
    emit_tables(cf, m, real_size, &L);

    /* record functions */
    for (int k = 0; k < p->nfn; k++) {
        const Fn *fn = &p->fn[k];
        e->entry = fn->kind == FN_ENTRY;
        if (e->entry)
            emit_record(e, cc_str("%s_record_%s", mn, fn->entry->name), fn->g, fn->entry->outs, fn->entry->nouts, -1);
        else
            emit_record(e, cc_str("%s_record", mn), fn->g, m->outputs, m->noutputs, m->loss);
    }
    e->entry = false;

    /* the descriptor's functions */
    int no = m->noutputs > 0 ? m->noutputs : 1;
    fprintf(cf, "\n/* Record one step (train: dropout and sampling on, batch norm on batch statistics) and\n"
                " * point net->out[] at the outputs.  After a failed step (cdl_last_error) the loss is\n"
                " * NaN and the outputs point at the arena's start (never out of bounds). */\n");
    fprintf(cf, "static cdl_t *%s_run(cdl_net *net, int nb, int train)\n{\n", mn);
    fprintf(cf, "    cdl_t *out[%d] = {0}, *loss = NULL;\n", no);
    fprintf(cf, "    cdl_tape *tp = cdl_tape_attach(net);\n");
    fprintf(cf, "    if (tp) {\n        cdl_tape_reset(tp, train);\n        loss = %s_record(tp, net, nb, out);\n    }\n", mn);
    for (int k = 0; k < m->noutputs; k++) fprintf(cf, "    net->out[%d] = out[%d] ? out[%d]->data : net->act;\n", k, k, k);
    if (m->loss >= 0) fprintf(cf, "    net->loss = cdl_t_item(loss);\n");
    fprintf(cf, "    return loss;\n}\n");

    fprintf(cf, "\n/* Eval mode: outputs and loss. */\nstatic void %s_fwd_eval(cdl_net *net, int nb) { (void)%s_run(net, nb, 0); }\n",
            mn, mn);
    if (m->loss >= 0) {
        fprintf(cf, "\n/* Train mode: forward, then the tape's backward; every parameter gradient into net->grad. */\n");
        fprintf(cf, "static double %s_fwd_bwd(cdl_net *net, int nb)\n{\n    cdl_t *loss = %s_run(net, nb, 1);\n", mn, mn);
        fprintf(cf, "    if (cdl_backward(cdl_tape_attach(net), loss, 1, 0) != 0) net->loss = cdl_t_item(NULL);\n");
        fprintf(cf, "    return net->loss;\n}\n");
        fprintf(cf, "\n/* Eval mode: the loss and its gradient with respect to the inputs. */\n");
        fprintf(cf, "static double %s_fwd_bwd_input(cdl_net *net, int nb)\n{\n    cdl_t *loss = %s_run(net, nb, 0);\n", mn, mn);
        fprintf(cf, "    if (cdl_backward(cdl_tape_attach(net), loss, 0, 1) != 0) net->loss = cdl_t_item(NULL);\n");
        fprintf(cf, "    return net->loss;\n}\n");
    }
    for (int k = 0; k < m->nentries; k++) {
        const EntryFn *en = &m->entries[k];
        fprintf(cf, "\n/* Entry %s: reads in[], writes out[] (nb rows each). */\n", en->name);
        fprintf(cf, "static void %s_entry_%s(cdl_net *net, int nb, const void *const *in, void *const *out)\n{\n", mn, en->name);
        fprintf(cf, "    cdl_t *o[%d] = {0};\n    cdl_tape *tp = cdl_tape_attach(net);\n", en->nouts > 0 ? en->nouts : 1);
        fprintf(cf, "    if (tp) {\n        cdl_tape_reset(tp, 0);\n        %s_record_%s(tp, net, nb, in, o);\n    }\n", mn, en->name);
        fprintf(cf, "    for (int k = 0; k < %d; k++)\n", en->nouts);
        fprintf(cf, "        if (o[k]) memcpy(out[k], o[k]->data, (size_t)o[k]->numel * (o[k]->dtype == CDL_I32 ? 4 : %d));\n", real_size);
        fprintf(cf, "}\n");
    }

    emit_descriptor(cf, m, real_size, &L, act, "  /* the tape's arena */", with_main);
}
