/* dump_model.c -- driver for tests/sh/codegen_equiv.sh: links with one generated model
 * (static or tape build, -DMODEL=name_model) and writes, in binary, everything the
 * model computes on fixed inputs, so two builds of the same model can be compared byte
 * for byte (cmp):
 *   - two train steps at the full batch: loss, every parameter gradient, the whole
 *     parameter slab (state buffers such as running statistics included) and the
 *     train-mode outputs; between the steps a plain SGD update (p -= 0.01 g) and
 *     net->step++, so the second step sees new weights and new dropout masks;
 *   - eval mode at a partial batch (nb = B - 1): outputs and loss;
 *   - the input gradient at the partial batch: loss and every real input's gradient;
 *   - every extra entry at the partial batch on fixed arguments: its outputs.
 * Inputs are a fixed pseudo-random pattern; i32 inputs (labels, ids) are 0 or 1, valid
 * for every class count and vocabulary.
 * usage: dump_model OUT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdl.h"

extern const cdl_model MODEL;

static FILE *out;

static void put(const void *p, size_t n) {
    if (n && fwrite(p, 1, n, out) != n) {
        perror("dump_model: write");
        exit(1);
    }
}

static void put_loss(double v) { put(&v, sizeof v); }

/* A tensor of the model's real type or i32, nb rows when batched. */
static void put_tensor(const cdl_tensor *t, const void *p, int nb, int rs) {
    int64_t n = cdl_tensor_numel(t, nb);
    put(p, (size_t)n * (t->dtype == CDL_I32 ? 4 : (size_t)rs));
}

static void fill(const cdl_tensor *t, void *p, int nb, int rs, unsigned seed) {
    int64_t n = cdl_tensor_numel(t, nb);
    uint32_t s = 2463534242u ^ seed;
    for (int64_t k = 0; k < n; k++) {
        s ^= s << 13, s ^= s >> 17, s ^= s << 5;
        double v = (double)(s % 2001) / 1000.0 - 1.0;
        if (t->dtype == CDL_I32) ((int32_t *)p)[k] = (int32_t)(s >> 7) & 1;
        else if (rs == 8) ((double *)p)[k] = v;
        else ((float *)p)[k] = (float)v;
    }
}

int main(int argc, char **argv) {
    const cdl_model *m = &MODEL;
    if (argc != 2) return fprintf(stderr, "usage: dump_model OUT\n"), 2;
    out = fopen(argv[1], "wb");
    if (!out) return perror(argv[1]), 1;
    int rs = m->real_size, nb = m->batch, part = nb > 1 ? nb - 1 : nb;
    cdl_net *net = cdl_net_new(m);
    if (!net) return fprintf(stderr, "cdl_net_new: %s\n", cdl_last_error()), 1;
    m->init(net, 7);
    net->seed = 7;
    for (int i = 0; i < m->n_inputs; i++) fill(&m->inputs[i], net->in[i], nb, rs, 17u * (unsigned)i + 1);
    for (int step = 0; m->has_loss && step < 2; step++) {
        put_loss(m->grad(net, nb));
        put(net->grad, m->train_count * (size_t)rs);
        put(net->param, m->param_count * (size_t)rs);
        for (int k = 0; k < m->n_outputs; k++) put_tensor(&m->outputs[k], net->out[k], nb, rs);
        for (size_t k = 0; k < m->train_count; k++) {
            if (rs == 8) ((double *)net->param)[k] -= 0.01 * ((double *)net->grad)[k];
            else ((float *)net->param)[k] -= 0.01f * ((float *)net->grad)[k];
        }
        net->step++;
    }
    m->forward(net, part);
    for (int k = 0; k < m->n_outputs; k++) put_tensor(&m->outputs[k], net->out[k], part, rs);
    if (m->has_loss) put_loss(net->loss);
    if (m->input_grad) {
        put_loss(m->input_grad(net, part));
        for (int i = 0; i < m->n_inputs; i++)
            if (net->in_grad[i]) put_tensor(&m->inputs[i], net->in_grad[i], part, rs);
    }
    for (int e = 0; e < m->n_entries; e++) {
        const cdl_entry *en = &m->entries[e];
        void **in = calloc((size_t)en->n_in + 1, sizeof *in), **o = calloc((size_t)en->n_out + 1, sizeof *o);
        for (int i = 0; i < en->n_in; i++) {
            in[i] = calloc((size_t)cdl_tensor_numel(&en->in[i], nb) + 1, 8);
            fill(&en->in[i], in[i], part, rs, 31u * (unsigned)i + 5);
        }
        for (int i = 0; i < en->n_out; i++) o[i] = calloc((size_t)cdl_tensor_numel(&en->out[i], nb) + 1, 8);
        en->run(net, part, (const void *const *)in, o);
        for (int i = 0; i < en->n_out; i++) put_tensor(&en->out[i], o[i], part, rs);
        for (int i = 0; i < en->n_in; i++) free(in[i]);
        for (int i = 0; i < en->n_out; i++) free(o[i]);
        free(in);
        free(o);
    }
    cdl_net_free(net);
    if (fclose(out)) return perror(argv[1]), 1;
    return 0;
}
