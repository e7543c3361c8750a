/* tape.c -- the dynamic tape: arena, records, leaves, the reverse sweep, statistics.
 *
 * A tape is the PyTorch-eager way of running a model: every cdl_t_<op> call (tape_ops.c,
 * tape_nn.c) runs its forward kernel at once and leaves a record (the cdl_t itself: its
 * inputs, attributes, saved scratch and a backward rule).  cdl_backward walks the records
 * newest first and lets each rule push its output's gradient to its inputs with the
 * backward kernels the static code uses.  All storage is one bump arena in net->act,
 * emptied by cdl_tape_reset, so a training step makes no heap allocation.
 */
#include "tape_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

_Static_assert(sizeof(cdl_t) + TAPE_ALIGN <= CDL_TAPE_RECORD_BYTES,
               "CDL_TAPE_RECORD_BYTES must bound a record");

static size_t round_up(size_t n) { return (n + TAPE_ALIGN - 1) & ~(size_t)(TAPE_ALIGN - 1); }

/* ------------------------------------------------------------------ arena */

static void note_peak(cdl_tape *tp) {
    size_t used = (size_t)(tp->lo - tp->base) + (size_t)(tp->end - tp->hi);
    if (used > tp->peak) tp->peak = used;
}

static void arena_full(cdl_tape *tp, size_t n) {
    if (!tp->failed)
        cdl_fail("tape: arena exhausted: %zu more bytes needed, %zu of %zu in use (model %s: act_bytes too small "
                 "for this step)",
                 n, (size_t)(tp->lo - tp->base) + (size_t)(tp->end - tp->hi), (size_t)(tp->end - tp->base),
                 tp->m && tp->m->name ? tp->m->name : "?");
    tp->failed = 1;
}

void *tape_alloc(cdl_tape *tp, size_t n) {
    n = round_up(n ? n : 1);
    if (n > (size_t)(tp->hi - tp->lo)) {
        arena_full(tp, n);
        return NULL;
    }
    void *p = tp->lo;
    tp->lo += n;
    tp->nalloc++;
    note_peak(tp);
    return p;
}

void *tape_alloc0(cdl_tape *tp, size_t n) {
    void *p = tape_alloc(tp, n);
    if (p) memset(p, 0, n ? n : 1);
    return p;
}

void *tape_temp(cdl_tape *tp, size_t n) {
    n = round_up(n ? n : 1);
    if (n > (size_t)(tp->hi - tp->lo)) {
        arena_full(tp, n);
        return NULL;
    }
    tp->hi -= n;
    tp->nalloc++;
    note_peak(tp);
    return tp->hi;
}

cdl_t *tape_err(cdl_tape *tp, const char *op, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!tp->failed) cdl_fail("tape: %s: %s", op, msg);
    tp->failed = 1;
    return NULL;
}

/* ------------------------------------------------------------------ attach, reset, stats */

cdl_tape *cdl_tape_attach(cdl_net *net) {
    if (!net || !net->model || !net->act) {
        cdl_fail("cdl_tape_attach: no net (or no activation arena)");
        return NULL;
    }
    const cdl_model *m = net->model;
    size_t head = round_up(sizeof(cdl_tape));
    size_t caches = round_up(sizeof(cdl_t *) * (size_t)(m->n_params + m->n_inputs + 2));
    if (m->act_bytes < head + caches + 4096) {
        cdl_fail("cdl_tape_attach: model %s: act_bytes %zu is too small for a tape", m->name ? m->name : "?",
                 m->act_bytes);
        return NULL;
    }
    if (m->real_size != 4 && m->real_size != 8) {
        cdl_fail("cdl_tape_attach: model %s: real_size %d", m->name ? m->name : "?", m->real_size);
        return NULL;
    }
    cdl_tape *tp = net->act;
    if (tp->magic == TAPE_MAGIC && tp->net == net && tp->m == m) return tp;
    memset(tp, 0, sizeof *tp);
    tp->magic = TAPE_MAGIC;
    tp->net = net;
    tp->m = m;
    tp->rs = m->real_size;
    tp->real = m->real_size == 8 ? CDL_F64 : CDL_F32;
    tp->pcache = (cdl_t **)(void *)((char *)net->act + head);
    tp->icache = tp->pcache + m->n_params;
    tp->base = (char *)net->act + head + caches;
    tp->end = (char *)net->act + (m->act_bytes & ~(size_t)(TAPE_ALIGN - 1));
    cdl_tape_reset(tp, 0);
    return tp;
}

void cdl_tape_reset(cdl_tape *tp, int train) {
    if (!tp) return;
    tp->lo = tp->base;
    tp->hi = tp->end;
    tp->train = train != 0;
    tp->failed = 0;
    tp->want_p = tp->want_i = 0;
    tp->nrec = tp->nalloc = 0;
    tp->last = NULL;
    memset(tp->pcache, 0, sizeof(cdl_t *) * (size_t)(tp->m->n_params + tp->m->n_inputs));
}

int cdl_tape_failed(const cdl_tape *tp) { return !tp || tp->failed; }

void cdl_tape_stats(const cdl_tape *tp, uint64_t *ops_recorded, size_t *arena_bytes_used, uint64_t *arena_allocs) {
    if (ops_recorded) *ops_recorded = tp ? tp->nrec : 0;
    if (arena_bytes_used) *arena_bytes_used = tp ? tp->peak + (size_t)(tp->base - (char *)tp->net->act) : 0;
    if (arena_allocs) *arena_allocs = tp ? tp->nalloc : 0;
}

void cdl_tape_dump(const cdl_tape *tp, FILE *f) {
    if (!tp || !f) return;
    /* records are linked newest first: collect the chain's length, then print in order */
    uint64_t n = 0;
    for (cdl_t *t = tp->last; t; t = t->prev) n++;
    for (uint64_t k = 0; k < n; k++) {
        cdl_t *t = tp->last;
        for (uint64_t j = n - 1; j > k; j--) t = t->prev;
        fprintf(f, "%llu %s [", (unsigned long long)k, t->op);
        for (int i = 0; i < t->rank; i++) fprintf(f, "%s%lld", i ? ", " : "", (long long)t->dims[i]);
        fprintf(f, "]%s%s", t->dtype == CDL_I32 ? " i32" : "", t->nin ? " <-" : "");
        for (int i = 0; i < t->nin; i++) {
            uint64_t pos = 0;
            for (cdl_t *u = t->in[i] ? t->in[i]->prev : NULL; u; u = u->prev) pos++;
            fprintf(f, " %llu", (unsigned long long)pos);
        }
        fputc('\n', f);
    }
}

/* ------------------------------------------------------------------ records */

int tape_is_real(const cdl_tape *tp, const cdl_t *t) { return t && t->dtype == tp->real; }

const char *tape_dims_str(char *buf, size_t cap, int rank, const int64_t *dims) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < rank && k < cap; i++) k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)dims[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

int tape_need_real(cdl_tape *tp, const char *op, cdl_t *const *xs, int n) {
    if (!tp) return 0;
    for (int k = 0; k < n; k++) {
        if (!xs[k]) {
            tp->failed = 1;
            return 0;
        }
        if (!tape_is_real(tp, xs[k])) {
            tape_err(tp, op, "argument %d must be real, got %s %s", k + 1, xs[k]->dtype == CDL_I32 ? "i32" : "reals of another precision",
                     DSTR(xs[k]));
            return 0;
        }
    }
    return 1;
}

int64_t tape_prod(const int64_t *dims, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; i++) p *= dims[i];
    return p;
}

cdl_t *tape_rec(cdl_tape *tp, const char *op, cdl_dtype dt, int rank, const int64_t *dims, int alloc_data, int nin,
                cdl_t *const *in) {
    if (!tp) return NULL;
    for (int k = 0; k < nin; k++)
        if (!in[k]) {
            tp->failed = 1;
            return NULL;
        }
    if (rank < 0 || rank > CDL_MAXDIM) return tape_err(tp, op, "rank %d (at most %d)", rank, CDL_MAXDIM);
    int64_t numel = 1;
    for (int i = 0; i < rank; i++) {
        if (dims[i] < 0 || dims[i] > ((int64_t)1 << 40)) return tape_err(tp, op, "dimension %lld", (long long)dims[i]);
        if (dims[i] > 0 && numel > ((int64_t)1 << 40) / dims[i])     /* checked before it can overflow */
            return tape_err(tp, op, "absurd size (more than 2^40 elements)");
        numel *= dims[i];
    }
    cdl_t *t = tape_alloc(tp, sizeof(cdl_t));
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    t->dtype = dt;
    t->rank = rank;
    for (int i = 0; i < rank; i++) t->dims[i] = dims[i];
    t->numel = numel;
    t->op = op;
    t->slot = -1;
    t->nin = nin;
    if (nin <= 3) {
        t->in = t->in1;
    } else {
        t->in = tape_alloc(tp, sizeof(cdl_t *) * (size_t)nin);
        if (!t->in) return NULL;
    }
    for (int k = 0; k < nin; k++) {
        t->in[k] = in[k];
        if (dt != CDL_I32) t->flags |= in[k]->flags & (CDL_TF_PARAM | CDL_TF_INPUT);
    }
    if (alloc_data) {
        t->data = tape_alloc(tp, (size_t)numel * (dt == CDL_I32 ? 4 : (size_t)tp->rs));
        if (!t->data) return NULL;
    }
    t->prev = tp->last;
    tp->last = t;
    tp->nrec++;
    return t;
}

/* ------------------------------------------------------------------ leaves */

cdl_t *cdl_t_input(cdl_tape *tp, int slot, int nb) {
    if (!tp) return NULL;
    const cdl_model *m = tp->m;
    if (slot < 0 || slot >= m->n_inputs) return tape_err(tp, "input", "no input %d (model %s has %d)", slot, m->name, m->n_inputs);
    if (nb < 1 || nb > m->batch) return tape_err(tp, "input", "batch %d outside [1, %d]", nb, m->batch);
    const cdl_tensor *d = &m->inputs[slot];
    int64_t dims[CDL_MAXDIM];
    for (int i = 0; i < d->rank && i < CDL_MAXDIM; i++) dims[i] = i == 0 && (d->flags & CDL_T_BATCHED) ? nb : d->dims[i];
    cdl_t *c = tp->icache[slot];
    if (c && c->rank == d->rank && (d->rank == 0 || c->dims[0] == dims[0])) return c;
    cdl_dtype dt = d->dtype == CDL_I32 ? CDL_I32 : tp->real;
    cdl_t *t = tape_rec(tp, "input", dt, d->rank, dims, 0, 0, NULL);
    if (!t) return NULL;
    t->data = tp->net->in[slot];
    t->slot = slot;
    if (dt != CDL_I32 && tp->net->in_grad[slot]) {
        t->flags |= CDL_TF_INPUT | CDL_TF_FIXED;
        t->grad = tp->net->in_grad[slot];
    }
    tp->icache[slot] = t;
    return t;
}

cdl_t *cdl_t_param(cdl_tape *tp, int index) {
    if (!tp) return NULL;
    const cdl_model *m = tp->m;
    if (index < 0 || index >= m->n_params) return tape_err(tp, "param", "no parameter %d (model %s has %d)", index, m->name, m->n_params);
    if (tp->pcache[index]) return tp->pcache[index];
    const cdl_tensor *d = &m->params[index];
    cdl_t *t = tape_rec(tp, "param", tp->real, d->rank, d->dims, 0, 0, NULL);
    if (!t) return NULL;
    if (d->offset + (size_t)t->numel > m->param_count) return tape_err(tp, "param", "%s lies outside the slab", d->name);
    t->data = (char *)tp->net->param + d->offset * (size_t)tp->rs;
    t->slot = index;
    if (!(d->flags & CDL_T_STATE) && d->offset + (size_t)t->numel <= m->train_count) {
        t->flags |= CDL_TF_PARAM | CDL_TF_FIXED;
        t->grad = (char *)tp->net->grad + d->offset * (size_t)tp->rs;
    }
    tp->pcache[index] = t;
    return t;
}

cdl_t *cdl_t_from(cdl_tape *tp, cdl_dtype dt, void *data, int rank, const int64_t *dims) {
    if (!tp) return NULL;
    if (!data) return tape_err(tp, "from", "NULL data");
    if (dt != CDL_I32) dt = tp->real;
    cdl_t *t = tape_rec(tp, "from", dt, rank, dims, 0, 0, NULL);
    if (t) t->data = data;
    return t;
}

cdl_t *cdl_t_new(cdl_tape *tp, cdl_dtype dt, int rank, const int64_t *dims) {
    if (!tp) return NULL;
    if (dt != CDL_I32) dt = tp->real;
    cdl_t *t = tape_rec(tp, "new", dt, rank, dims, 1, 0, NULL);
    if (t) memset(t->data, 0, (size_t)t->numel * tape_esize(tp, t));
    return t;
}

cdl_t *cdl_t_full(cdl_tape *tp, double v, int rank, const int64_t *dims) {
    cdl_t *t = tape_rec(tp, "const", tp ? tp->real : CDL_F32, rank, dims, 1, 0, NULL);
    if (t) TK(tp, fill, t->numel, v, t->data);
    return t;
}

cdl_t *cdl_t_full_i32(cdl_tape *tp, int32_t v, int rank, const int64_t *dims) {
    cdl_t *t = tape_rec(tp, "const", CDL_I32, rank, dims, 1, 0, NULL);
    if (t) cdl_fill_i32(t->numel, v, t->data);
    return t;
}

cdl_t *cdl_t_batch_size(cdl_tape *tp, int nb) {
    cdl_t *t = tape_rec(tp, "batch_size", tp ? tp->real : CDL_F32, 0, NULL, 1, 0, NULL);
    if (t) TK(tp, fill, 1, (double)nb, t->data);
    return t;
}

/* Train mode: numbers keyed by (seed, step, stream), element i of step t at counter
 * t * numel + i; eval mode: the distribution's mean. */
static cdl_t *random_leaf(cdl_tape *tp, const char *op, int normal, int stream, int64_t t, int rank, const int64_t *dims) {
    cdl_t *y = tape_rec(tp, op, tp ? tp->real : CDL_F32, rank, dims, 1, 0, NULL);
    if (!y) return NULL;
    if (tp->train) {
        cdl_rng_key k = {tp->net->seed, tp->net->step, (uint64_t)stream};
        uint64_t base = (uint64_t)t * (uint64_t)y->numel;
        if (normal) TK(tp, randn, k, base, y->numel, y->data);
        else TK(tp, rand, k, base, y->numel, y->data);
    } else {
        TK(tp, fill, y->numel, normal ? 0.0 : 0.5, y->data);
    }
    return y;
}

cdl_t *cdl_t_randn(cdl_tape *tp, int stream, int64_t t, int rank, const int64_t *dims) {
    return random_leaf(tp, "randn", 1, stream, t, rank, dims);
}

cdl_t *cdl_t_rand(cdl_tape *tp, int stream, int64_t t, int rank, const int64_t *dims) {
    return random_leaf(tp, "rand", 0, stream, t, rank, dims);
}

double cdl_t_item(const cdl_t *t) {
    if (!t || !t->data || t->numel < 1) return NAN;
    switch (t->dtype) {
    case CDL_F64: return ((const double *)t->data)[0];
    case CDL_I32: return ((const int32_t *)t->data)[0];
    case CDL_F32:
    default: return ((const float *)t->data)[0];
    }
}

/* ------------------------------------------------------------------ gradient plumbing */

/* x->grad allocated (not initialised) unless its storage is fixed. */
static void *gbuf(cdl_tape *tp, cdl_t *x) {
    if (!x->grad) x->grad = tape_alloc(tp, (size_t)x->numel * (size_t)tp->rs);
    return x->grad;
}

void *tape_gdst(cdl_tape *tp, cdl_t *x, int *acc) {
    if (x->flags & CDL_TF_GRAD) {
        *acc = 1;
        return tape_rtemp(tp, x->numel);
    }
    *acc = 0;
    void *g = gbuf(tp, x);
    if (g) x->flags |= CDL_TF_GRAD;
    return g;
}

void tape_gfin(cdl_tape *tp, cdl_t *x, void *dst, int acc) {
    if (acc && dst && x->grad) TK(tp, add_inplace, x->numel, dst, x->grad);
}

void tape_gadd(cdl_tape *tp, cdl_t *x, const void *src) {
    if (!src) return;
    if (x->flags & CDL_TF_GRAD) {
        TK(tp, add_inplace, x->numel, src, x->grad);
        return;
    }
    void *g = gbuf(tp, x);
    if (!g) return;
    memcpy(g, src, (size_t)x->numel * (size_t)tp->rs);
    x->flags |= CDL_TF_GRAD;
}

void *tape_gzero(cdl_tape *tp, cdl_t *x) {
    if (x->flags & CDL_TF_GRAD) return x->grad;
    void *g = gbuf(tp, x);
    if (!g) return NULL;
    memset(g, 0, (size_t)x->numel * (size_t)tp->rs);
    x->flags |= CDL_TF_GRAD;
    return g;
}

void *tape_gemm_dst(cdl_tape *tp, cdl_t *x, double *beta) {
    *beta = (x->flags & CDL_TF_GRAD) ? 1.0 : 0.0;
    void *g = gbuf(tp, x);
    if (g) x->flags |= CDL_TF_GRAD;
    return g;
}

void tape_acc_bcast(cdl_tape *tp, cdl_t *x, const cdl_t *y, const void *src) {
    if (!src || !tape_need(tp, x)) return;
    if (x->numel == y->numel) {
        tape_gadd(tp, x, src);
        return;
    }
    unsigned mask = 0;
    int lead = y->rank - x->rank;
    for (int i = 0; i < y->rank; i++)
        if (i < lead || (x->dims[i - lead] == 1 && y->dims[i] != 1)) mask |= 1u << i;
    int acc;
    void *dst = tape_gdst(tp, x, &acc);
    if (!dst) return;
    TK(tp, reduce, y->rank, y->dims, mask, 0, src, dst);
    tape_gfin(tp, x, dst, acc);
}

/* ------------------------------------------------------------------ the sweep */

/* Zero the gradient slots of leaves no gradient reached (the loss does not depend on
 * them, or they were never recorded this step). */
static void zero_unreached(cdl_tape *tp) {
    const cdl_model *m = tp->m;
    cdl_net *net = tp->net;
    if (tp->want_p) {
        for (int p = 0; p < m->n_params; p++) {
            const cdl_tensor *d = &m->params[p];
            if (d->flags & CDL_T_STATE) continue;
            int64_t n = 1;
            for (int i = 0; i < d->rank; i++) n *= d->dims[i];
            if (d->offset + (size_t)n > m->train_count) continue;
            cdl_t *t = tp->pcache[p];
            if (t && (t->flags & CDL_TF_GRAD)) continue;
            memset((char *)net->grad + d->offset * (size_t)tp->rs, 0, (size_t)n * (size_t)tp->rs);
        }
    }
    if (tp->want_i) {
        for (int s = 0; s < m->n_inputs; s++) {
            if (m->inputs[s].dtype == CDL_I32 || !net->in_grad[s]) continue;
            cdl_t *t = tp->icache[s];
            if (t && (t->flags & CDL_TF_GRAD)) continue;
            int64_t n = t ? t->numel : cdl_tensor_numel(&m->inputs[s], m->batch);
            memset(net->in_grad[s], 0, (size_t)n * (size_t)tp->rs);
        }
    }
}

int cdl_backward(cdl_tape *tp, cdl_t *loss, int want_params, int want_inputs) {
    if (!tp) return cdl_fail("cdl_backward: no tape");
    tp->want_p = want_params != 0;
    tp->want_i = want_inputs != 0;
    if (tp->failed || !loss) {
        if (!tp->failed) cdl_fail("cdl_backward: no loss");
        tp->failed = 1;
        return -1;
    }
    if (loss->numel != 1 || loss->dtype == CDL_I32) {
        tape_err(tp, "backward", "the loss must be one real, got %lld %s", (long long)loss->numel,
                 loss->dtype == CDL_I32 ? "i32" : "reals");
        return -1;
    }
    /* forget gradients of an earlier sweep over the same records */
    for (cdl_t *t = tp->last; t; t = t->prev) {
        t->flags &= ~(unsigned)CDL_TF_GRAD;
        if (!(t->flags & CDL_TF_FIXED)) t->grad = NULL;
    }
    if (tape_need(tp, loss)) {
        void *g = tape_gdst(tp, loss, &(int){0});
        if (!g) return -1;
        TK(tp, fill, 1, 1.0, g);
        for (cdl_t *t = tp->last; t && !tp->failed; t = t->prev) {
            if (!(t->flags & CDL_TF_GRAD) || !t->bwd || !tape_need(tp, t)) continue;
            char *mark = tp->hi;
            t->bwd(tp, t);
            tape_release(tp, mark);
        }
    }
    if (tp->failed) return -1;
    zero_unreached(tp);
    return 0;
}
