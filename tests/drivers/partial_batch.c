/* partial_batch.c -- driver for tests/sh/partial_batch.sh: links with a generated model
 * (descriptor MODEL) and runs it at a runtime batch nb (argv[1]) smaller than or equal
 * to the compiled one.  Parameters keep the model's initialisation (seed 1); real
 * inputs are all 1, i32 inputs 0.  Prints "loss L", one "grad NAME g0 g1 ..." line per
 * trainable parameter (train mode, cdl_model.grad), then "out NAME v0 v1 ..." per
 * output of the eval forward, all with 17 significant digits. */
#include <stdio.h>
#include <stdlib.h>

#include "cdl.h"

extern const cdl_model MODEL;

static double get(const void *p, size_t k, int rs) {
    return rs == 8 ? ((const double *)p)[k] : (double)((const float *)p)[k];
}

static void print_row(const char *what, const char *name, const void *p, int64_t n, int rs) {
    printf("%s %s", what, name);
    for (int64_t k = 0; k < n; k++) printf(" %.17g", get(p, (size_t)k, rs));
    printf("\n");
}

int main(int argc, char **argv) {
    const cdl_model *m = &MODEL;
    int nb = argc > 1 ? atoi(argv[1]) : m->batch;
    if (nb < 1 || nb > m->batch) return fprintf(stderr, "usage: %s NB (1..%d)\n", argv[0], m->batch), 2;
    cdl_net *net = cdl_net_new(m);
    if (!net) return fprintf(stderr, "cdl_net_new: %s\n", cdl_last_error()), 1;
    m->init(net, 1);
    int rs = m->real_size;
    for (int i = 0; i < m->n_inputs; i++) {
        const cdl_tensor *t = &m->inputs[i];
        int64_t n = cdl_tensor_numel(t, m->batch);
        for (int64_t k = 0; k < n; k++) {
            if (t->dtype == CDL_I32) ((int32_t *)net->in[i])[k] = 0;
            else if (rs == 8) ((double *)net->in[i])[k] = 1.0;
            else ((float *)net->in[i])[k] = 1.0f;
        }
    }
    if (m->has_loss) {
        printf("loss %.17g\n", m->grad(net, nb));
        for (int p = 0; p < m->n_params; p++) {
            const cdl_tensor *t = &m->params[p];
            if (t->flags & CDL_T_STATE) continue;
            print_row("grad", t->name, (const char *)net->grad + t->offset * (size_t)rs, cdl_tensor_numel(t, nb), rs);
        }
    }
    m->forward(net, nb);
    for (int o = 0; o < m->n_outputs; o++)
        print_row("out", m->outputs[o].name, net->out[o], cdl_tensor_numel(&m->outputs[o], nb), rs);
    cdl_net_free(net);
    return 0;
}
