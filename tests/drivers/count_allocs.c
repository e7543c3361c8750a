/* count_allocs.c -- driver for tests/sh/codegen.sh: links with a generated model and
 * checks that a training step performs no allocation.  It installs a counting hook on
 * the runtime's one allocation path (cdl_set_allocator), makes the net and optimizer,
 * then runs train steps and fails if the count moved. */
#include <stdio.h>
#include <stdlib.h>

#include "cdl.h"

extern const cdl_model MODEL;

static unsigned long long calls;

static void *counting(void *ud, void *p, size_t n) {
    (void)ud;
    calls++;
    if (n == 0) {
        free(p);
        return NULL;
    }
    return realloc(p, n);
}

int main(void) {
    cdl_set_allocator(counting, NULL);
    const cdl_model *m = &MODEL;
    cdl_net *net = cdl_net_new(m);
    if (!net) return fprintf(stderr, "cdl_net_new: %s\n", cdl_last_error()), 1;
    m->init(net, 1);
    cdl_optim_cfg cfg;
    cdl_optim_defaults(&cfg, CDL_OPT_ADAM);
    cdl_optim opt;
    if (cdl_optim_init(&opt, m, &cfg) < 0) return fprintf(stderr, "optim: %s\n", cdl_last_error()), 1;
    for (int i = 0; i < m->n_inputs; i++) {
        int64_t n = cdl_tensor_numel(&m->inputs[i], m->batch);
        if (m->inputs[i].dtype == CDL_I32)
            for (int64_t k = 0; k < n; k++) ((int32_t *)net->in[i])[k] = (int32_t)(k % 10);
        else
            for (int64_t k = 0; k < n; k++) ((float *)net->in[i])[k] = (float)(k % 255) / 255.0f;
    }
    unsigned long long before = calls;
    double first = 0, last = 0;
    for (int step = 0; step < 20; step++) {
        last = m->grad(net, m->batch);
        if (step == 0) first = last;
        cdl_optim_step(&opt, net, 1e-3);
        net->step++;
        m->forward(net, m->batch - 1); /* a smaller batch, eval mode */
    }
    unsigned long long during = calls - before;
    printf("allocations during 20 train steps: %llu (loss %.4f -> %.4f)\n", during, first, last);
    cdl_optim_free(&opt);
    cdl_net_free(net);
    return during != 0 || !(last < first);
}
