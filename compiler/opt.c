/* opt.c -- graph optimisation before planning.
 *
 * Dead-code elimination: a node is live when the function's results (outputs, loss,
 * gradients) depend on it; dead nodes are marked NF_DEAD (ids stay stable, so loop
 * bodies' references to outer ids need no rewriting) and cost neither time nor memory.
 * Loop bodies are kept whole: the backward loop reads any of their values. */
#include "cdlc.h"

void opt_run(Graph *g) {
    bool *live = NEWN(bool, g->len + 1);
    for (int i = 0; i < g->len; i++)
        if (g->n[i].flags & (NF_OUTPUT | NF_LOSS)) live[i] = true;
    for (int k = 0; k < g->npgrad; k++)
        if (g->pgrad[k] >= 0) live[g->pgrad[k]] = true;
    for (int k = 0; k < g->nigrad; k++)
        if (g->igrad[k] >= 0) live[g->igrad[k]] = true;
    for (int i = g->len - 1; i >= 0; i--) {
        const Node *n = &g->n[i];
        /* batch norm in train mode updates running statistics: keep it */
        if (n->op == OP_BATCHNORM) live[i] = true;
        if (!live[i]) continue;
        for (int k = 0; k < n->nin; k++) live[n->in[k]] = true;
    }
    for (int i = 0; i < g->len; i++)
        if (!live[i]) g->n[i].flags |= NF_DEAD;
}
