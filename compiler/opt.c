/* opt.c -- graph optimisation before planning.
 *
 * Dead-code elimination: a node is live when the function's results (outputs, loss,
 * gradients) depend on it; dead nodes are marked NF_DEAD (ids stay stable, so loop
 * bodies' references to outer ids need no rewriting) and cost neither time nor memory.
 * Loop bodies are kept whole: the backward loop reads any of their values. */
#include "cdlc.h"

/* Liveness of one graph: roots are its results (outputs, loss, gradients, a body's
 * results), batch norm (it updates running statistics), and every value a backward
 * loop reads from a forward body (saved[i]). */
static void mark_dead(Graph *g, const bool *saved) {
    bool *live = NEWN(bool, g->len + 1);
    for (int i = 0; i < g->len; i++)
        if ((g->n[i].flags & (NF_OUTPUT | NF_LOSS)) || g->n[i].op == OP_BATCHNORM || (saved && saved[i])) live[i] = true;
    for (int k = 0; k < g->npgrad; k++)
        if (g->pgrad[k] >= 0) live[g->pgrad[k]] = true;
    for (int k = 0; k < g->nigrad; k++)
        if (g->igrad[k] >= 0) live[g->igrad[k]] = true;
    for (int k = 0; k < g->nres; k++) live[g->res[k]] = true;
    for (int i = g->len - 1; i >= 0; i--) {
        if (!live[i]) continue;
        const Node *n = &g->n[i];
        for (int k = 0; k < n->nin; k++) live[n->in[k]] = true;
    }
    for (int i = 0; i < g->len; i++)
        if (!live[i]) g->n[i].flags |= NF_DEAD;
}

void opt_run(Graph *g) {
    mark_dead(g, NULL);
    /* Bodies: a forward body keeps what its backward loop reads (LOOP_SAVED), carried
     * values' sources included (a saved carry reads the previous step's result). */
    bool **saved = NEWN(bool *, g->len + 1);
    for (int i = 0; i < g->len; i++) {
        const Node *n = &g->n[i];
        if (n->op != OP_LOOP || (n->flags & NF_DEAD)) continue;
        for (int j = 0; j < n->sub->len; j++) {
            const Node *s = &n->sub->n[j];
            if (s->op != OP_LOOP_SAVED) continue;
            int L = (int)s->ia[0], k = (int)s->ia[1];
            if (!saved[L]) saved[L] = NEWN(bool, g->n[L].sub->len + 1);
            saved[L][k] = true;
        }
    }
    for (int i = 0; i < g->len; i++) {
        Node *n = &g->n[i];
        if (n->op == OP_LOOP && !(n->flags & NF_DEAD)) mark_dead(n->sub, saved[i]);
    }
}
