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

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ liveness */

/* Nodes whose values something needs: the roots (outputs, the loss, an entry's
 * outputs, a body's results) and batch norms (they update running statistics), then
 * everything those read.  A live LOOP reads its carried initial values and the outer
 * values its live body nodes capture (loop_body_live): a layer left dead in a loop body
 * keeps no pointer to its parameters. */
static bool *live_nodes(const Graph *g, const int *roots, int nroots);

/* Is result k of top-level loop L read after the loop (a live LOOP_OUT of it)?  Carried
 * results always are: the next step reads them. */
static bool loop_result_read(const Graph *g, const bool *live, int L, int k) {
    if (k < g->n[L].sub->ncarry) return true;
    for (int i = L + 1; i < g->len; i++)
        if (live[i] && g->n[i].op == OP_LOOP_OUT && g->n[i].in[0] == L && loop_out_result(&g->n[i]) == k) return true;
    return false;
}

/* The live nodes of loop L's body: those its read results need.  *roots (when not NULL)
 * receives those results' body ids (-1 for a result nobody reads after the loop). */
static bool *loop_body_live(const Graph *g, const bool *live, int L, int **roots) {
    const Graph *b = g->n[L].sub;
    int *r = NEWN(int, b->nres + 1);
    for (int k = 0; k < b->nres; k++) r[k] = loop_result_read(g, live, L, k) ? b->res[k] : -1;
    if (roots) *roots = r;
    return live_nodes(b, r, b->nres);
}

/* Mark what live LOOP node L reads of its graph: carried initial values and captures. */
static void loop_reads(const Graph *g, const bool *live, int L, bool *mark) {
    const Node *n = &g->n[L];
    const Graph *b = n->sub;
    bool *bl = loop_body_live(g, live, L, NULL);
    for (int k = 0; k < b->ncarry && k < n->nin; k++) mark[n->in[k]] = true;
    for (int j = 0; j < b->len; j++)
        if (b->n[j].op == OP_LOOP_CAPTURE && bl[j]) mark[capture_of(&b->n[j])] = true;
}

static bool *live_nodes(const Graph *g, const int *roots, int nroots) {
    bool *live = NEWN(bool, g->len + 1);
    for (int k = 0; k < nroots; k++)
        if (roots[k] >= 0) live[roots[k]] = true;
    for (int i = 0; i < g->len; i++)
        if (g->n[i].op == OP_BATCHNORM) live[i] = true;
    for (int i = g->len - 1; i >= 0; i--) {
        if (!live[i]) continue;
        const Node *n = &g->n[i];
        if (n->op == OP_LOOP) loop_reads(g, live, i, live);
        else
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
    for (int i = 0; i < g->len; i++) {
        if (!live[i]) continue;
        if (g->n[i].op == OP_LOOP) loop_reads(g, live, i, rd);
        else
            for (int k = 0; k < g->n[i].nin; k++) rd[g->n[i].in[k]] = true;
    }
    return rd;
}

/* ------------------------------------------------------------------ one node */

/* The cdl_t_<op>(...) call recording node i of the current graph (its op's block). */
static const char *tape_call(Emit *e, int i) {
    const Graph *g = e_graph(e);
    const Node *n = &g->n[i];
    if (!op_info[n->op].rule.tape) die("tape emitter: op %s has no tape call", op_info[n->op].name);
    return op_info[n->op].rule.tape(e, g, i);
}

const char *e_tape_carry(Emit *e, int k) { return cc_str("L%d_carry%d", e->loop, k); }

/* Is result k of loop body b (a collected one) also a carried result of the body? */
static bool collects_carry(const Graph *b, int k) {
    for (int j = 0; j < b->ncarry; j++)
        if (b->res[j] == b->res[k]) return true;
    return false;
}

/* Is carried initial value k of top-level loop L read by anything else (a live node,
 * or another carry of L)? */
static bool init_shared(const Graph *g, const bool *live, int L, int k) {
    const Node *ln = &g->n[L];
    int x = ln->in[k];
    for (int j = 0; j < ln->sub->ncarry; j++)
        if (j != k && ln->in[j] == x) return true;
    for (int i = x + 1; i < g->len; i++) {
        if (i == L || !live[i]) continue;
        const Node *n = &g->n[i];
        if (n->op == OP_LOOP) {
            bool *rd = NEWN(bool, g->len + 1);
            loop_reads(g, live, i, rd);
            if (rd[x]) return true;
            continue;
        }
        for (int q = 0; q < n->nin; q++)
            if (n->in[q] == x) return true;
    }
    return false;
}

/* A loop: carried values as cdl_t pointers, collected ones in per-step arrays, a C loop
 * recording one step of the body per trip.
 *
 * Two views keep the tape's order of gradient sums the static backward loop's (static
 * == tape bit for bit): a carried value that is also collected is collected through a
 * view recorded at the end of its step, so its stacked gradient joins its gradient
 * after the next step's reads of it (the static loop adds the collected slice to the
 * carried gradient), not before them (cdl_t_stack after the loop); a carried initial
 * value read elsewhere too enters the loop through a view, so the first step's reads
 * sum among themselves before they join the other readers' gradient (the static loop
 * hands over one sum).  A view costs a record and a gradient buffer (plan.c counts
 * them in the tape's arena). */
static void emit_loop(Emit *e, int L, const bool *top_live) {
    const Node *ln = &e->top->n[L];
    const Graph *b = ln->sub;
    int *roots;
    bool *live = loop_body_live(e->top, top_live, L, &roots), *rd = read_nodes(b, live, roots, b->nres);
    for (int k = b->ncarry - 1; k >= 0; k--) {   /* the reverse sweep hands carry 0's first, as the static loop */
        const Node *x = &e->top->n[ln->in[k]];
        if (x->dtype == DT_REAL && init_shared(e->top, top_live, L, k))
            e_line(e, "cdl_t *L%d_carry%d = cdl_t_view(tp, %s, 0, %s);  /* enters the loop by itself */", L, k, e->name[ln->in[k]],
                   e_dims_arg(e, ln->in[k]));
        else
            e_line(e, "cdl_t *L%d_carry%d = %s;", L, k, e->name[ln->in[k]]);
    }
    for (int k = b->ncarry; k < b->nres; k++)
        if (roots[k] >= 0) e_line(e, "cdl_t *L%d_collect%d[%lld];", L, k, (long long)loop_count(ln));
    e_loop_open(e, L, "each trip records one more step on the tape");
    for (int j = 0; j < b->len; j++) {
        const Node *n = &b->n[j];
        if (n->op == OP_LOOP_CAPTURE) {   /* the body reads the outer variable */
            e->bname[j] = e->name[capture_of(n)];
            continue;
        }
        e->bname[j] = e_var_name(n, j, "s_");
        if (!live[j]) continue;
        const char *c = tape_call(e, j), *what = cc_str("/* %s %s%s */", e_shape_comment(e, &n->shape), op_info[n->op].name, e_loc(n));
        if (!rd[j]) e_line(e, "(void)%s;  %s", c, what);
        else e_line(e, "cdl_t *%s = %s;  %s", e->bname[j], c, what);
    }
    for (int k = b->nres - 1; k >= b->ncarry; k--) {   /* the views' gradients join in the static order */
        if (roots[k] < 0) continue;
        const char *v = e->bname[b->res[k]];
        if (b->n[b->res[k]].dtype == DT_REAL && collects_carry(b, k))
            v = cc_str("cdl_t_view(tp, %s, 0, %s)", v, e_dims_arg(e, b->res[k]));
        e_line(e, "L%d_collect%d[t - %lld] = %s;%s", L, k, (long long)loop_first_t(ln), v,
               v == e->bname[b->res[k]] ? "" : "  /* its gradient joins after the next step's reads */");
    }
    for (int k = 0; k < b->ncarry; k++) e_line(e, "L%d_carry%d = %s;", L, k, e->bname[b->res[k]]);
    e_loop_close(e);
}

static void emit_node(Emit *e, int i, bool read) {
    const Node *n = &e->top->n[i];
    const char *what = cc_str("/* %s %s%s%s */", e_shape_comment(e, &n->shape), op_info[n->op].name,
                              n->name ? cc_str(" \"%s\"", n->name) : "", e_loc(n));
    if (n->op == OP_LOOP_OUT) {
        const Node *ln = &e->top->n[n->in[0]];
        const Graph *b = ln->sub;
        int k = loop_out_result(n);
        if (k < b->ncarry) e_line(e, "cdl_t *%s = L%d_carry%d;  %s", e->name[i], n->in[0], k, what);
        else
            e_line(e, "cdl_t *%s = cdl_t_stack(tp, %lld, L%d_collect%d, %d);  %s", e->name[i], (long long)loop_count(ln), n->in[0], k,
                   b->n[b->res[k]].shape.batched, what);
        return;
    }
    if (!read) e_line(e, "(void)%s;  %s", tape_call(e, i), what);
    else e_line(e, "cdl_t *%s = %s;  %s", e->name[i], tape_call(e, i), what);
}

/* ------------------------------------------------------------------ functions */

/* The record function of graph g: every live node in order; writes out[] and returns the
 * loss (or NULL). */
static void emit_record(Emit *e, const char *cname, const Graph *g, const int *outs, int nouts, int loss) {
    e->top = g;
    e->loop = -1;
    e->name = NEWN(const char *, g->len + 1);
    for (int i = 0; i < g->len; i++) e->name[i] = e_var_name(&g->n[i], i, "");
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
    /* the body first (into memory), so that only the parameters it leaves unread get a (void) */
    FILE *f = e->f;
    char *body = NULL;
    size_t len = 0;
    e->f = open_memstream(&body, &len);
    if (!e->f) die("open_memstream failed");
    e->indent = 1;
    for (int i = 0; i < g->len; i++) {
        if (!live[i]) continue;
        ArenaMark mark = arena_mark(cc_arena);  /* a node's strings die with its line */
        if (g->n[i].op == OP_LOOP) emit_loop(e, i, live);
        else emit_node(e, i, rd[i]);
        arena_release(cc_arena, mark);
    }
    for (int k = 0; k < nouts; k++) e_line(e, "out[%d] = %s;", k, e->name[outs[k]]);
    if (!e->entry) e_line(e, "return %s;", loss >= 0 ? e->name[loss] : "NULL");
    fclose(e->f);
    e->f = f;
    const char *unread = "";
    static const char *const params[] = {"net", "nb", "in", "out"};
    for (int k = 0; k < 4; k++)
        if ((k != 2 || e->entry) && !e_mentions(body, params[k])) unread = cc_str("%s%s(void)%s;", unread, *unread ? " " : "", params[k]);
    if (*unread) fprintf(e->f, "    %s\n", unread);
    fputs(body, e->f);
    free(body);
    fprintf(e->f, "}\n");
}

/* ------------------------------------------------------------------ driver */

/* Write MODEL_tape.c to cf and its header (header_name) to hf. */
void emit_tape(const Pipeline *p, FILE *cf, FILE *hf, bool with_main, const char *header_name) {
    const Model *m = p->m;
    int real_size = p->real_size;
    Emit E = {.f = cf, .m = m, .real_size = real_size, .tape = true, .loop = -1};
    Emit *e = &E;
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
        fprintf(cf, "\n/* Eval mode: forward, then the tape's backward; every parameter gradient into net->grad. */\n");
        fprintf(cf, "static double %s_fwd_bwd_eval(cdl_net *net, int nb)\n{\n    cdl_t *loss = %s_run(net, nb, 0);\n", mn, mn);
        fprintf(cf, "    if (cdl_backward(cdl_tape_attach(net), loss, 1, 0) != 0) net->loss = cdl_t_item(NULL);\n");
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
