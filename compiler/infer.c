/* infer.c -- the eval graph made ready for the inference export (cdlc --inference).
 *
 * Runs on a function's own copy of a graph after cloning and before optimisation, so
 * that dead-code elimination and the planner see the smaller graph:
 *   - dropout is the identity in eval mode: its readers read its input (no code, no
 *     buffer; a dropout that is itself an output becomes a view);
 *   - a batch norm right after a convolution or linear layer whose output nothing else
 *     reads is folded into that layer: per output channel k, with
 *         scale_k = gamma_k / sqrt(running_var_k + eps)
 *     the weights w_k become w_k scale_k and the bias (b_k - running_mean_k) scale_k +
 *     beta_k, computed in double from the checkpoint's values and rounded once to
 *     float (the runtime's eval computes scale and shift the same way, then applies
 *     them to the layer's output).  The batch norm node becomes the layer, reading the
 *     new tensors (weights_add); the old layer is then unread and DCE drops it, with
 *     the four batch norm tensors.  Batch norms that cannot be folded stay (the
 *     inference kernel applies the running statistics).
 * Every node is marked NF_NO_AUX: the portable kernels keep nothing for a backward
 * pass and need no scratch, so the plan reserves none.
 * The derived tensors take the place of the running-statistics nodes, which are read
 * by this batch norm only and come before it in the graph, so the graph stays in
 * topological order and ids stay stable.
 */
#include "cdlc.h"

#include <math.h>
#include <string.h>

/* The dotted prefix of a parameter's name ("residual1.bn1.weight" -> "residual1.bn1"). */
static const char *instance_of(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot ? arena_strndup(cc_arena, name, (size_t)(dot - name)) : name;
}

/* "residual1.conv1" + "residual1.bn1" -> "residual1.conv1+bn1": the common prefix
 * once. */
static const char *fold_name(const char *layer, const char *bn) {
    size_t k = 0;
    for (size_t i = 0; layer[i] && layer[i] == bn[i]; i++)
        if (layer[i] == '.') k = i + 1;
    return cc_str("%s+%s", layer, bn + k);
}

/* Node id i of g is a PARAM read by exactly one node. */
static bool lone_param(const Graph *g, const int *uses, int i) {
    return g->n[i].op == OP_PARAM && uses[i] == 1;
}

/* Fold batch norm node b of g into the layer before it, if that is possible (see the
 * file comment).  Channels are axis 1 of the batch norm's input: the output channels
 * of a convolution, or of a linear layer with a 2-D output. */
static void fold_bn(Graph *g, const int *uses, Weights *w, int b) {
    Node *bn = &g->n[b];
    const Node *L = &g->n[bn->in[0]];
    bool conv = L->op == OP_CONV2D, lin = L->op == OP_LINEAR && L->shape.rank == 2;
    if ((!conv && !lin) || uses[bn->in[0]] != 1 || (L->flags & (NF_OUTPUT | NF_LOSS))) return;
    if (g->n[L->in[1]].op != OP_PARAM || (L->nin == 3 && g->n[L->in[2]].op != OP_PARAM)) return;
    for (int k = 1; k < 5; k++)
        if (g->n[bn->in[k]].op != OP_PARAM) return;
    if (!lone_param(g, uses, bn->in[3]) || !lone_param(g, uses, bn->in[4])) return;
    const WTensor *wt = &w->t[g->n[L->in[1]].slot], *bt = L->nin == 3 ? &w->t[g->n[L->in[2]].slot] : NULL;
    const float *gamma = w->t[g->n[bn->in[1]].slot].data, *beta = w->t[g->n[bn->in[2]].slot].data;
    const float *mean = w->t[g->n[bn->in[3]].slot].data, *var = w->t[g->n[bn->in[4]].slot].data;
    const Shape ws = wt->shape;
    int64_t K = ws.d[0], per = shape_numel(&ws) / K;
    float *fw = NEWN(float, K * per), *fb = NEWN(float, K);
    for (int64_t k = 0; k < K; k++) {
        double inv = 1.0 / sqrt((double)var[k] + bn->fa[0]), scale = (double)gamma[k] * inv;
        for (int64_t j = 0; j < per; j++) fw[k * per + j] = (float)((double)wt->data[k * per + j] * scale);
        fb[k] = (float)(((bt ? (double)bt->data[k] : 0.0) - (double)mean[k]) * scale + (double)beta[k]);
    }
    const char *layer = instance_of(wt->name), *norm = instance_of(w->t[g->n[bn->in[1]].slot].name);
    const char *name = fold_name(layer, norm);
    const char *note = cc_str("%s with %s folded in", layer, norm);
    Shape bs = {.rank = 1, .d = {K}};
    int iw = weights_add(w, cc_str("%s.weight", name), ws, fw, note);
    int ib = weights_add(w, cc_str("%s.bias", name), bs, fb, note);
    /* the running statistics' nodes become the folded weight and bias */
    Node *nw = &g->n[bn->in[3]], *nb = &g->n[bn->in[4]];
    nw->slot = iw, nw->shape = ws, nw->name = w->t[iw].name, nw->flags &= ~(unsigned)NF_STATE;
    nb->slot = ib, nb->shape = bs, nb->name = w->t[ib].name, nb->flags &= ~(unsigned)NF_STATE;
    int in[3] = {L->in[0], bn->in[3], bn->in[4]};
    bn->op = L->op;
    bn->nin = 3;
    bn->in = NEWN(int, 3);
    memcpy(bn->in, in, sizeof in);
    memcpy(bn->ia, L->ia, sizeof bn->ia);
    memcpy(bn->fa, L->fa, sizeof bn->fa);
}

/* Node id i of g with dropout (the identity in eval mode) looked through. */
static int skip_dropout(const Graph *g, int i) {
    while (g->n[i].op == OP_DROPOUT) i = g->n[i].in[0];
    return i;
}

/* Readers of a dropout read its input instead: in g, in g's loop bodies' captures and
 * in g's own results; a dropout that is still a result (an output, a loop's carried
 * value) becomes a view. */
static void drop_dropout(Graph *g) {
    for (int i = 0; i < g->len; i++) {
        Node *n = &g->n[i];
        for (int k = 0; k < n->nin; k++) n->in[k] = skip_dropout(g, n->in[k]);
        for (int j = 0; n->sub && j < n->sub->len; j++)
            if (n->sub->n[j].op == OP_LOOP_CAPTURE) n->sub->n[j].ia[0] = skip_dropout(g, (int)n->sub->n[j].ia[0]);
    }
    for (int i = 0; i < g->len; i++)
        if (g->n[i].op == OP_DROPOUT) g->n[i].op = OP_IDENTITY;
}

void infer_prepare(Graph *g, Weights *w) {
    int *uses = ir_uses(g);
    for (int i = 0; i < g->len; i++) {
        Node *n = &g->n[i];
        n->flags |= NF_NO_AUX;
        if (n->sub) infer_prepare(n->sub, w);
        if (n->op == OP_BATCHNORM && !g->parent) fold_bn(g, uses, w, i);
        /* perturb(x) = x + delta: x itself (the delta is never an argument of the export) */
        if (n->op == OP_ADD && (g->n[n->in[1]].flags & NF_PERTURB)) n->op = OP_IDENTITY, n->nin = 1;
    }
    drop_dropout(g);
}

/* The functions of the export: the forward ("forward": the model's outputs, without
 * its loss) and the entries named in sel (all n of them; none: the forward alone). */
Pipeline *infer_clone(const Model *m, int n, const char *const *sel) {
    Pipeline *p = NEW(Pipeline);
    *p = (Pipeline){.m = m, .real_size = 4, .infer = true, .fn = NEWN(Fn, n + 2)};
    for (int k = 0; k < (n ? n : 1); k++) {
        const char *want = n ? sel[k] : "forward";
        const EntryFn *en = NULL;
        for (int q = 0; q < m->nentries; q++)
            if (!strcmp(m->entries[q].name, want)) en = &m->entries[q];
        for (int q = 0; q < p->nfn; q++)
            if (!strcmp(want, p->fn[q].entry ? p->fn[q].entry->name : "forward")) en = NULL, want = NULL;
        if (!want) continue;   /* named twice */
        if (!en && strcmp(want, "forward")) {
            char *all = arena_strdup(cc_arena, "forward");
            for (int q = 0; q < m->nentries; q++) all = cc_str("%s, %s", all, m->entries[q].name);
            error_at(no_loc, "--entry %s: model %s (%s) has no entry '%s' (it has: %s)", want, m->name, m->file, want, all);
            continue;
        }
        if (!en && m->noutputs == 0) {
            error_at(m->loc, "model %s has no outputs: its forward computes nothing to export (choose an entry with --entry)",
                     m->name);
            continue;
        }
        Fn *fn = &p->fn[p->nfn++];
        *fn = (Fn){.kind = en ? FN_ENTRY : FN_EVAL, .entry = en, .g = ir_clone(en ? en->g : m->g)};
        for (int q = 0; en && q < en->nouts; q++) fn->g->n[en->outs[q]].flags |= NF_OUTPUT;
        for (int i = 0; i < fn->g->len; i++) fn->g->n[i].flags &= ~(unsigned)NF_LOSS;   /* outputs only */
    }
    return diag_error_count() ? NULL : p;
}
