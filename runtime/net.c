/* net.c -- model instances (cdl_net) and lookups in a model descriptor.
 *
 * A net owns, each as one cdl_alloc block: the struct with its pointer arrays, the
 * parameter slab (param_count reals), the gradient slab (train_count reals), the
 * activation arena (act_bytes), every input buffer (sized for the compiled batch, each
 * 64-byte aligned inside one block) and the input-gradient buffers of real inputs
 * (the same, NULL for i32 inputs).  out[] is filled in by forward/grad.
 */
#include "cdl.h"

#include <string.h>

/* Bytes per element of tensor t in model m: CDL_F32 is "the model's real type". */
static size_t net_elem_size(const cdl_model *m, const cdl_tensor *t) {
    switch (t->dtype) {
    case CDL_I32: return 4;
    case CDL_F64: return 8;
    case CDL_F32:
    default: return (size_t)m->real_size;
    }
}

/* Elements of t at runtime batch nb: the product of its dims, with dims[0] replaced by
 * nb when t is CDL_T_BATCHED.  A rank-0 tensor has one element. */
int64_t cdl_tensor_numel(const cdl_tensor *t, int nb) {
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++)
        n *= (i == 0 && (t->flags & CDL_T_BATCHED)) ? (int64_t)nb : t->dims[i];
    return n;
}

static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Bytes of input i at the compiled batch, rounded up to 64. */
static size_t net_in_bytes(const cdl_model *m, int i) {
    const cdl_tensor *t = &m->inputs[i];
    return round64((size_t)cdl_tensor_numel(t, m->batch) * net_elem_size(m, t));
}

/* Check the descriptor fields the net relies on; -1 and a message naming the field. */
static int net_check_model(const cdl_model *m) {
    const char *nm = m->name ? m->name : "?";
    if (m->real_size != 4 && m->real_size != 8)
        return cdl_fail("cdl_net_new: model %s: real_size %d is not 4 or 8", nm, m->real_size);
    if (m->batch < 1) return cdl_fail("cdl_net_new: model %s: batch %d < 1", nm, m->batch);
    if (m->train_count > m->param_count)
        return cdl_fail("cdl_net_new: model %s: train_count %zu > param_count %zu", nm,
                        m->train_count, m->param_count);
    if (m->n_inputs < 0 || m->n_outputs < 0 || m->n_params < 0 ||
        (m->n_inputs && !m->inputs) || (m->n_outputs && !m->outputs) ||
        (m->n_params && !m->params))
        return cdl_fail("cdl_net_new: model %s: bad tensor tables", nm);
    for (int i = 0; i < m->n_inputs; i++) {
        const cdl_tensor *t = &m->inputs[i];
        if (t->rank < 0 || t->rank > CDL_MAXDIM)
            return cdl_fail("cdl_net_new: model %s: input %s: rank %d", nm,
                            t->name ? t->name : "?", t->rank);
        for (int d = 0; d < t->rank; d++)
            if (t->dims[d] < 0)
                return cdl_fail("cdl_net_new: model %s: input %s: negative dim", nm,
                                t->name ? t->name : "?");
    }
    return 0;
}

/* The allocation behind a cdl_net: the public struct first, then the bases of the
 * input and input-gradient blocks (private), then the pointer arrays. */
typedef struct net_box {
    cdl_net net;
    char *in_block, *grad_block;
} net_box;

/* A new instance of m, parameters zero (call m->init to initialise), step 0.
 * NULL and a message on a bad descriptor or out of memory. */
cdl_net *cdl_net_new(const cdl_model *m) {
    if (!m) {
        cdl_fail("cdl_net_new: NULL model");
        return NULL;
    }
    if (net_check_model(m) < 0) return NULL;
    int ni = m->n_inputs, no = m->n_outputs;
    size_t head = round64(sizeof(net_box));
    size_t ptrs = sizeof(void *) * (size_t)(2 * ni + no);
    size_t in_total = 0, ig_total = 0;
    for (int i = 0; i < ni; i++) {
        in_total += net_in_bytes(m, i);
        if (m->inputs[i].dtype != CDL_I32) ig_total += net_in_bytes(m, i);
    }
    size_t rs = (size_t)m->real_size;
    net_box *box = cdl_alloc(head + ptrs);
    if (!box) return NULL;
    cdl_net *net = &box->net;
    net->model = m;
    void **p = (void **)(void *)((char *)box + head);
    net->in = p;
    net->in_grad = p + ni;
    net->out = p + 2 * ni;
    net->param = cdl_alloc(m->param_count * rs);
    net->grad = cdl_alloc(m->train_count * rs);
    net->act = cdl_alloc(m->act_bytes);
    box->in_block = cdl_alloc(in_total);
    box->grad_block = cdl_alloc(ig_total);
    if (!net->param || !net->grad || !net->act || !box->in_block || !box->grad_block) {
        cdl_net_free(net);
        cdl_fail("cdl_net_new: model %s: out of memory", m->name ? m->name : "?");
        return NULL;
    }
    size_t oi = 0, og = 0;
    for (int i = 0; i < ni; i++) {
        size_t b = net_in_bytes(m, i);
        net->in[i] = box->in_block + oi;
        oi += b;
        net->in_grad[i] = NULL;
        if (m->inputs[i].dtype != CDL_I32) {
            net->in_grad[i] = box->grad_block + og;
            og += b;
        }
    }
    return net;
}

/* Free everything cdl_net_new allocated (NULL is fine; so is a half-built net). */
void cdl_net_free(cdl_net *net) {
    if (!net) return;
    net_box *box = (net_box *)(void *)net;
    cdl_free(net->param);
    cdl_free(net->grad);
    cdl_free(net->act);
    cdl_free(box->in_block);
    cdl_free(box->grad_block);
    cdl_free(box);
}

uint64_t cdl_net_row_base(const cdl_net *net, int nb, uint64_t t) {
    uint64_t rows = net->batch_rows > 0 ? (uint64_t)net->batch_rows : (uint64_t)nb;
    return t * rows + (uint64_t)net->batch_row0;
}

int cdl_model_find_param(const cdl_model *m, const char *name) {
    if (!m || !name) return -1;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].name && strcmp(m->params[i].name, name) == 0) return i;
    return -1;
}

int cdl_model_find_input(const cdl_model *m, const char *name) {
    if (!m || !name) return -1;
    for (int i = 0; i < m->n_inputs; i++)
        if (m->inputs[i].name && strcmp(m->inputs[i].name, name) == 0) return i;
    return -1;
}
