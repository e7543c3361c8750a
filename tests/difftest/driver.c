/* driver.c -- the differential-testing driver (issue 11, item 9).
 *
 * Linked with a batch of generated models, each in two builds: static (cdlc) and tape
 * (cdlc --target=tape, compiled with -DCDL_TAPE_RENAME).  tests/difftest/run.py writes
 * the table of cases (dt_cases[], one per seed) and builds the program:
 *
 *   driver [--gradcheck] [--from I] [--seed-only S]
 *
 * For every case it checks that the two builds agree and prints one line:
 *
 *   case SEED ok [bitwise|close RELDIFF] [gradcheck ok]
 *   case SEED FAIL what: detail
 *
 * preceded by "start SEED" (flushed), so that the harness can name a case that crashed
 * the process.  The checks, at the compiled batch and at smaller runtime batches:
 *   - the descriptors agree (fingerprint, tables, entries) and init gives the same slab;
 *   - train mode (grad): the loss, every parameter gradient, every output, the state
 *     buffers (batch-norm running statistics) after the step;
 *   - eval mode (forward): outputs and loss;
 *   - input_grad: loss and the gradient of every real input;
 *   - every entry point: its outputs;
 *   - after each step, the same SGD update on both, so later steps run on other weights.
 * Before steps 0 and 2 the activation arenas, gradient slabs, input gradients and entry
 * outputs are filled with NaN bytes, so a value read before it is written, or a
 * gradient that is not written, shows up as a NaN; step 1 runs on the previous step's
 * leftovers.  Differences are scale-aware (max |a - b| over a tensor divided by its
 * largest magnitude) and must stay within 1e-10 (f64) or 1e-5 (f32), or within a
 * thousandth of that absolutely (tensors that are zero but for rounding); the line says
 * whether everything agreed bitwise.  With --gradcheck (f64 builds), the static build's
 * trainer runs `gradcheck` (central differences, PyTorch's tolerances) on its loss,
 * at the compiled and at a partial batch, from slightly moved initial parameters (see
 * dt_gradcheck); a failure is retried once on another random batch (a kink hit by
 * chance), and only two failures fail the case.
 */
#include "cdl.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct dt_case {
    const char *id;              /* the seed, or the reproducer's file name */
    const cdl_model *s, *t;
    int classes;
    int gradcheck;               /* 0: the program cuts gradients (stop_gradient) */
} dt_case;
extern const dt_case dt_cases[];
extern const int dt_ncases;

typedef struct dt_state {
    const dt_case *c;
    double tol, worst;
    int failed;
    char what[512];
} dt_state;

static double rd(const void *p, int rs, int64_t i) { return rs == 8 ? ((const double *)p)[i] : ((const float *)p)[i]; }

/* Record a failure (the first one is kept). */
static void dt_fail(dt_state *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void dt_fail(dt_state *st, const char *fmt, ...) {
    if (st->failed++) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->what, sizeof st->what, fmt, ap);
    va_end(ap);
}

/* Compare n reals of a and b (scale-aware); name the tensor on failure. */
static void dt_cmp(dt_state *st, const char *phase, const char *name, const void *a, const void *b, int rs, int64_t n) {
    double dmax = 0, vmax = 0;
    int64_t at = -1;
    for (int64_t i = 0; i < n; i++) {
        double x = rd(a, rs, i), y = rd(b, rs, i), d = fabs(x - y);
        if (x == y) continue;
        if (!(d <= dmax)) {
            dmax = isnan(d) ? INFINITY : d;
            at = i;
        }
        if (fabs(x) > vmax) vmax = fabs(x);
        if (fabs(y) > vmax) vmax = fabs(y);
    }
    if (at < 0) return;
    double rel = isinf(dmax) ? INFINITY : dmax / (vmax > 0 ? vmax : 1e-300);
    if (rel > st->worst) st->worst = rel;
    /* a tensor that is zero but for rounding (a batch-norm weight's gradient at batch 1)
     * is judged on an absolute scale: tol * 1e-3 */
    if (!(rel <= st->tol) && !(dmax <= st->tol * 1e-3)) {
        char where[160];
        snprintf(where, sizeof where, "%s[%lld] static %.17g tape %.17g", name, (long long)at, rd(a, rs, at), rd(b, rs, at));
        dt_fail(st, "%s: %s: rel diff %.3g", phase, where, rel);
    }
}

static void dt_cmp1(dt_state *st, const char *phase, const char *name, double a, double b) {
    dt_cmp(st, phase, name, &a, &b, 8, 1);
}

/* Inputs of one step: reals U[-1, 1), i32 uniform in [0, classes). */
static void dt_fill(const cdl_tensor *t, int nb, int rs, int classes, cdl_rng_key k, void *buf) {
    int64_t n = cdl_tensor_numel(t, nb);
    if (t->dtype == CDL_I32) {
        int32_t *y = buf;
        for (int64_t j = 0; j < n; j++) {
            uint32_t out[4];
            cdl_philox(k, (uint64_t)j, out);
            y[j] = (int32_t)(out[0] % (uint32_t)classes);
        }
        return;
    }
    if (rs == 8) {
        double *x = buf;
        cdl_rand_f64(k, 0, n, x);
        for (int64_t j = 0; j < n; j++) x[j] = 2 * x[j] - 1;
    } else {
        float *x = buf;
        cdl_rand_f32(k, 0, n, x);
        for (int64_t j = 0; j < n; j++) x[j] = 2 * x[j] - 1;
    }
}

static size_t dt_bytes(const cdl_model *m, const cdl_tensor *t, int nb) {
    return (size_t)cdl_tensor_numel(t, nb) * (t->dtype == CDL_I32 ? 4 : (size_t)m->real_size);
}

/* The two descriptors must describe one model. */
static int dt_same_model(dt_state *st, const cdl_model *s, const cdl_model *t) {
    if (s->real_size != t->real_size || s->param_count != t->param_count || s->train_count != t->train_count ||
        s->n_params != t->n_params || s->n_inputs != t->n_inputs || s->n_outputs != t->n_outputs ||
        s->batch != t->batch || s->fingerprint != t->fingerprint || s->has_loss != t->has_loss ||
        s->n_entries != t->n_entries || !s->grad != !t->grad || !s->input_grad != !t->input_grad) {
        dt_fail(st, "descriptor: the two builds' tables differ");
        return -1;
    }
    for (int e = 0; e < s->n_entries; e++) {
        const cdl_entry *a = &s->entries[e], *b = &t->entries[e];
        if (strcmp(a->name, b->name) || a->n_in != b->n_in || a->n_out != b->n_out) {
            dt_fail(st, "descriptor: entry %s / %s differs", a->name, b->name);
            return -1;
        }
    }
    return 0;
}

/* Every real input's gradient after input_grad. */
static void dt_input_grads(dt_state *st, const cdl_model *m, cdl_net *ns, cdl_net *nt, int nb) {
    for (int i = 0; i < m->n_inputs; i++) {
        if (m->inputs[i].dtype == CDL_I32 || !ns->in_grad[i] || !nt->in_grad[i]) continue;
        dt_cmp(st, "input_grad", m->inputs[i].name, ns->in_grad[i], nt->in_grad[i], m->real_size,
               cdl_tensor_numel(&m->inputs[i], nb));
    }
}

static void dt_outputs(dt_state *st, const char *phase, const cdl_model *m, cdl_net *ns, cdl_net *nt, int nb) {
    for (int k = 0; k < m->n_outputs; k++) {
        if (m->outputs[k].dtype == CDL_I32) continue;
        if (!ns->out[k] || !nt->out[k]) {
            dt_fail(st, "%s: output %s not set", phase, m->outputs[k].name);
            continue;
        }
        dt_cmp(st, phase, m->outputs[k].name, ns->out[k], nt->out[k], m->real_size, cdl_tensor_numel(&m->outputs[k], nb));
    }
}

/* Run every entry on both builds with the same random inputs; compare the outputs. */
static void dt_entries(dt_state *st, const cdl_model *m, cdl_net *ns, cdl_net *nt, int nb, uint64_t step, int poison) {
    for (int e = 0; e < m->n_entries; e++) {
        const cdl_entry *es = &m->entries[e], *et = &st->c->t->entries[e];
        void *in[CDL_MAXDIM * 4] = {0}, *os[CDL_MAXDIM * 4] = {0}, *ot[CDL_MAXDIM * 4] = {0};
        int nin = es->n_in, nout = es->n_out, ok = nin <= CDL_MAXDIM * 4 && nout <= CDL_MAXDIM * 4;
        for (int i = 0; ok && i < nin; i++) {
            size_t n = dt_bytes(m, &es->in[i], m->batch);
            if (!(in[i] = cdl_alloc(n ? n : 1))) ok = 0;
            else dt_fill(&es->in[i], nb, m->real_size, st->c->classes, (cdl_rng_key){7, step, 500 + (uint64_t)(e * 16 + i)}, in[i]);
        }
        for (int k = 0; ok && k < nout; k++) {
            size_t n = dt_bytes(m, &es->out[k], m->batch);
            if (!(os[k] = cdl_alloc(n ? n : 1)) || !(ot[k] = cdl_alloc(n ? n : 1))) ok = 0;
            else if (poison) memset(os[k], 0xff, n), memset(ot[k], 0xff, n);
        }
        if (!ok) {
            dt_fail(st, "entry %s: cannot allocate its buffers", es->name);
        } else {
            if (poison) memset(ns->act, 0xff, m->act_bytes), memset(nt->act, 0xff, st->c->t->act_bytes);
            es->run(ns, nb, (const void *const *)in, os);
            et->run(nt, nb, (const void *const *)in, ot);
            char phase[128];
            snprintf(phase, sizeof phase, "entry %s", es->name);
            for (int k = 0; k < nout; k++)
                if (es->out[k].dtype != CDL_I32)
                    dt_cmp(st, phase, es->out[k].name, os[k], ot[k], m->real_size, cdl_tensor_numel(&es->out[k], nb));
        }
        for (int i = 0; i < nin; i++) cdl_free(in[i]);
        for (int k = 0; k < nout; k++) cdl_free(os[k]), cdl_free(ot[k]);
    }
}

/* p -= lr * g on the trainable prefix, the same on both builds. */
static void dt_sgd(const cdl_model *m, cdl_net *net) {
    for (size_t i = 0; i < m->train_count; i++) {
        if (m->real_size == 8) ((double *)net->param)[i] -= 0.01 * ((double *)net->grad)[i];
        else ((float *)net->param)[i] -= 0.01f * ((float *)net->grad)[i];
    }
}

/* One step at runtime batch nb: train, eval, input gradients, entries, then SGD. */
static void dt_step(dt_state *st, cdl_net *ns, cdl_net *nt, int nb, int s, int poison) {
    const cdl_model *m = st->c->s, *mt = st->c->t;
    int rs = m->real_size;
    char phase[64];
    for (int i = 0; i < m->n_inputs; i++) {
        dt_fill(&m->inputs[i], nb, rs, st->c->classes, (cdl_rng_key){3, (uint64_t)s, 100 + (uint64_t)i}, ns->in[i]);
        memcpy(nt->in[i], ns->in[i], dt_bytes(m, &m->inputs[i], nb));
    }
    ns->seed = nt->seed = 11;
    ns->step = nt->step = (uint64_t)s;
    if (m->grad) {
        if (poison) {
            memset(ns->act, 0xff, m->act_bytes), memset(nt->act, 0xff, mt->act_bytes);
            memset(ns->grad, 0xff, m->train_count * (size_t)rs), memset(nt->grad, 0xff, m->train_count * (size_t)rs);
        }
        double ls = m->grad(ns, nb), lt = mt->grad(nt, nb);
        snprintf(phase, sizeof phase, "grad (step %d, batch %d)", s, nb);
        dt_cmp1(st, phase, "loss", ls, lt);
        if (!isfinite(ls)) dt_fail(st, "%s: loss is %g", phase, ls);
        for (int p = 0; p < m->n_params; p++) {
            const cdl_tensor *d = &m->params[p];
            size_t off = d->offset * (size_t)rs;
            int64_t n = cdl_tensor_numel(d, 0);
            if (d->flags & CDL_T_STATE) dt_cmp(st, phase, d->name, (char *)ns->param + off, (char *)nt->param + off, rs, n);
            else dt_cmp(st, phase, d->name, (char *)ns->grad + off, (char *)nt->grad + off, rs, n);
        }
        dt_outputs(st, phase, m, ns, nt, nb);
    }
    if (poison) memset(ns->act, 0xff, m->act_bytes), memset(nt->act, 0xff, mt->act_bytes);
    m->forward(ns, nb);
    mt->forward(nt, nb);
    snprintf(phase, sizeof phase, "forward (step %d, batch %d)", s, nb);
    if (m->has_loss) dt_cmp1(st, phase, "loss", ns->loss, nt->loss);
    dt_outputs(st, phase, m, ns, nt, nb);
    if (m->input_grad) {
        for (int i = 0; poison && i < m->n_inputs; i++) {
            if (ns->in_grad[i]) memset(ns->in_grad[i], 0xff, dt_bytes(m, &m->inputs[i], nb));
            if (nt->in_grad[i]) memset(nt->in_grad[i], 0xff, dt_bytes(m, &m->inputs[i], nb));
        }
        if (poison) memset(ns->act, 0xff, m->act_bytes), memset(nt->act, 0xff, mt->act_bytes);
        double ls = m->input_grad(ns, nb), lt = mt->input_grad(nt, nb);
        snprintf(phase, sizeof phase, "input_grad (step %d, batch %d)", s, nb);
        dt_cmp1(st, phase, "loss", ls, lt);
        dt_input_grads(st, m, ns, nt, nb);
    }
    dt_entries(st, m, ns, nt, nb, (uint64_t)s, poison);
    if (m->grad) {
        dt_sgd(m, ns);
        dt_sgd(m, nt);
    }
}

/* The trainer's gradcheck on build m (f64); 0 when it passes on one of two batches.
 * It runs on a checkpoint of the initial parameters moved by U(-0.02, 0.02) each: zero
 * biases and constant initialisers put values exactly on kinks (relu(0 + b) with b = 0,
 * a tie of maximum), where central differences see the mean of the two sides; moved
 * parameters leave the kinks (the generator's value bounds allow 0.05). */
static int dt_gradcheck(const cdl_model *m, const char *id, int classes, int nb) {
    char cls[32], bs[32], ck[128];
    snprintf(cls, sizeof cls, "%d", classes);
    snprintf(bs, sizeof bs, "%d", nb);
    snprintf(ck, sizeof ck, "gradcheck_%s.ckpt", id);
    cdl_net *net = cdl_net_new(m);
    if (!net) return -1;
    m->init(net, 5);
    double *p = net->param;
    double *u = cdl_alloc(m->train_count * sizeof(double) + 1);
    if (!u) {
        cdl_net_free(net);
        return -1;
    }
    cdl_rand_f64((cdl_rng_key){9, 0, 0}, 0, (int64_t)m->train_count, u);
    for (size_t i = 0; i < m->train_count; i++) p[i] += 0.04 * u[i] - 0.02;
    cdl_free(u);
    int rc = cdl_ckpt_save(ck, net, NULL, NULL);
    cdl_net_free(net);
    if (rc < 0) {
        printf("gradcheck: cannot save %s: %s\n", ck, cdl_last_error());
        return -1;
    }
    int r = -1;
    for (int attempt = 0; attempt < 2 && r < 0; attempt++) {
        char *av[] = {"driver", "gradcheck", "--load", ck, "--threads", "1", "--classes", cls, "--n", "60", "--batch", bs,
                      "--json", "--seed", attempt ? "7" : "1", NULL};
        fflush(stdout);
        if (cdl_main(m, 15, av) == 0) r = attempt;
    }
    remove(ck);
    return r;
}

/* The runtime batches of the steps: the compiled batch, a partial one, then 1. */
static int dt_batch(const cdl_model *m, int s) {
    int B = m->batch;
    if (s == 0 || B == 1) return B;
    if (s == 1) return B > 2 ? B - 1 - (int)(strlen(m->name) % (unsigned)(B - 2)) : 1;
    return 1;
}

static int dt_run(const dt_case *c, int gradcheck) {
    /* f32: the builds may sum in other orders (the static code fuses and skips GEMM work,
     * accumulates loop gradients in place) and each SGD step moves the two builds' weights
     * by their own rounded gradients: a recurrent gradient with cancellation came out
     * 2.5e-5 apart at step 1 (seed 47) while the f64 builds agreed bitwise */
    dt_state st = {.c = c, .tol = c->s->real_size == 8 ? 1e-10 : 1e-4};
    const cdl_model *m = c->s;
    cdl_net *ns = NULL, *nt = NULL;
    if (dt_same_model(&st, c->s, c->t) == 0) {
        ns = cdl_net_new(c->s);
        nt = cdl_net_new(c->t);
        if (!ns || !nt) {
            dt_fail(&st, "cdl_net_new: %s", cdl_last_error());
        } else {
            m->init(ns, 5);
            c->t->init(nt, 5);
            if (memcmp(ns->param, nt->param, m->param_count * (size_t)m->real_size) != 0)
                dt_fail(&st, "init: the two builds initialise differently");
            for (int s = 0; s < 3 && !st.failed; s++) dt_step(&st, ns, nt, dt_batch(m, s), s, s != 1);
        }
    }
    cdl_net_free(ns);
    cdl_net_free(nt);
    if (st.failed) {
        printf("case %s FAIL %s\n", c->id, st.what);
        return 1;
    }
    char gc[64] = "";
    if (gradcheck && c->gradcheck && m->has_loss && m->real_size == 8) {
        int nb = dt_batch(m, 1);
        int r = dt_gradcheck(m, c->id, c->classes, m->batch);
        if (r >= 0 && nb != m->batch) {
            int r2 = dt_gradcheck(m, c->id, c->classes, nb);
            r = r2 < 0 ? r2 : r > r2 ? r : r2;
        }
        if (r < 0) {
            printf("case %s FAIL gradcheck: the static build's gradients differ from central differences\n", c->id);
            return 1;
        }
        snprintf(gc, sizeof gc, " gradcheck ok%s", r ? " (on the second batch)" : "");
    }
    if (st.worst == 0) printf("case %s ok bitwise%s\n", c->id, gc);
    else printf("case %s ok close %.3g%s\n", c->id, st.worst, gc);
    return 0;
}

int main(int argc, char **argv) {
    int gradcheck = 0, from = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--gradcheck")) gradcheck = 1;
        else if (!strcmp(argv[i], "--from") && i + 1 < argc) from = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seed-only") && i + 1 < argc) only = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--gradcheck] [--from I] [--seed-only SEED]\n", argv[0]);
            return 2;
        }
    }
    cdl_blas_set_threads(1);
    int bad = 0;
    for (int i = from; i < dt_ncases; i++) {
        if (only && strcmp(only, dt_cases[i].id)) continue;
        printf("start %s\n", dt_cases[i].id);
        fflush(stdout);
        bad += dt_run(&dt_cases[i], gradcheck);
        fflush(stdout);
    }
    return bad ? 1 : 0;
}
