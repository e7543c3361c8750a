/* infer.c -- the eval graph made ready for the inference export (cdlc --inference).
 *
 * Runs on a function's own copy of a graph after cloning and before optimisation, so
 * that dead-code elimination and the planner see the smaller graph:
 *   - dropout is the identity in eval mode: it becomes a view of its input (no copy,
 *     no buffer);
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

void infer_prepare(Graph *g, Weights *w) {
    int *uses = ir_uses(g);
    for (int i = 0; i < g->len; i++) {
        Node *n = &g->n[i];
        if (n->sub) infer_prepare(n->sub, w);
        if (n->op == OP_DROPOUT) n->op = OP_STOP_GRAD;
        else if (n->op == OP_BATCHNORM && !g->parent) fold_bn(g, uses, w, i);
    }
}
