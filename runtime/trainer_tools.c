/* trainer_tools.c -- the trainer's non-training commands: gradcheck, sample, grad.
 *
 * gradcheck  central differences on (a sample of) the trainable parameters, and of the
 *            real inputs when the model has input_grad, against the model's own
 *            gradient, on one fixed random batch, in f64 builds only.
 * sample     runs an entry point (e.g. a VAE's `generate`) on N(0, 1) noise and writes
 *            its first output as a grid of grayscale tiles (PNG).
 * grad       the loss and every parameter gradient of the first N training batches in
 *            order, as a safetensors file, for comparisons with PyTorch.
 */
#include "trainer_int.h"

#include <math.h>
#include <string.h>

static size_t tt_elem(const cdl_model *m, const cdl_tensor *t) {
    return t->dtype == CDL_I32 ? 4 : t->dtype == CDL_F64 ? 8 : (size_t)m->real_size;
}

/* ---------------------------------------------------------------- gradcheck */

/* What gradcheck needs between evaluations: the saved state part of the slab. */
typedef struct gc_ctx {
    const cdl_model *m;
    cdl_net *net;
    int nb;
    double *state0;               /* param_count - train_count saved state values */
} gc_ctx;

static void gc_restore(gc_ctx *c) {
    size_t ns = c->m->param_count - c->m->train_count;
    if (ns) memcpy((double *)c->net->param + c->m->train_count, c->state0, ns * sizeof(double));
}

/* The train-mode loss with the state restored first (same step, so same dropout). */
static double gc_loss(gc_ctx *c) {
    gc_restore(c);
    return c->m->grad(c->net, c->nb);
}

/* The eval-mode loss (what input_grad differentiates). */
static double gc_loss_eval(gc_ctx *c) {
    gc_restore(c);
    c->m->forward(c->net, c->nb);
    return c->net->loss;
}

typedef struct gc_worst { double ratio, num, ana; char what[160]; int64_t checked, failed; } gc_worst;

/* Compare one element: numeric from losses at +eps and -eps against analytic. */
static void gc_compare(gc_worst *w, double lp, double lm, double eps, double ana, const char *name,
                       int64_t idx, double *tmax) {
    double num = (lp - lm) / (2 * eps), err = fabs(num - ana), tol = 1e-5 + 1e-3 * fabs(num);
    double ratio = isfinite(err) ? err / tol : INFINITY;
    w->checked++;
    if (!(err <= tol)) w->failed++;
    if (*tmax < err || !isfinite(err)) *tmax = isfinite(err) ? err : INFINITY;
    if (ratio > w->ratio || w->checked == 1) {
        w->ratio = ratio;
        w->num = num;
        w->ana = ana;
        snprintf(w->what, sizeof w->what, "%s[%lld]", name, (long long)idx);
    }
}

/* The k-th sampled element of a tensor of n elements: all when n <= k_total. */
static int64_t gc_pick(uint64_t seed, uint64_t stream, int64_t k, int64_t count, int64_t n) {
    if (count >= n) return k;
    uint32_t w[4];
    cdl_rng_key key = {seed, 0, stream};
    cdl_philox(key, (uint64_t)k, w);
    return (int64_t)((((uint64_t)w[0] << 32) | w[1]) % (uint64_t)n);
}

int tr_gradcheck(const cdl_model *m, const tr_opts *o) {
    if (m->real_size != 8) {
        fprintf(stderr, "gradcheck: model %s is an f32 build; gradcheck needs the f64 build "
                        "(cdlc --precision=f64)\n", m->name);
        return 1;
    }
    if (!m->grad || !m->has_loss) {
        fprintf(stderr, "gradcheck: model %s has no loss\n", m->name);
        return 1;
    }
    int nb = tr_batch(m, o);
    if (nb > m->batch) {
        fprintf(stderr, "gradcheck: --batch %d is larger than the compiled batch %d\n", nb, m->batch);
        return 1;
    }
    int64_t want = o->n > 0 ? o->n : 200;
    double eps = o->eps;
    size_t tc = m->train_count, ns = m->param_count - tc;
    gc_ctx c = {m, NULL, nb, NULL};
    double *G = NULL, *IG = NULL;
    int rc = 1;
    gc_worst w;
    memset(&w, 0, sizeof w);
    if (!(c.net = tr_make_net(m, o))) goto fail;
    cdl_net *net = c.net;
    G = cdl_alloc(tc * sizeof(double));
    c.state0 = cdl_alloc(ns * sizeof(double));
    if (!G || !c.state0) goto fail;
    memcpy(c.state0, (double *)net->param + tc, ns * sizeof(double));

    /* The fixed random batch: reals U[0, 1), i32 uniform in [0, classes). */
    int classes = o->nclasses;
    if (!classes && m->n_outputs > 0 && m->outputs[0].rank >= 1)
        classes = (int)m->outputs[0].dims[m->outputs[0].rank - 1];
    if (classes < 1) classes = 10;
    int64_t max_in = 0;
    for (int i = 0; i < m->n_inputs; i++) {
        const cdl_tensor *t = &m->inputs[i];
        int64_t n = cdl_tensor_numel(t, nb);
        cdl_rng_key key = {o->seed, 0, 0xC0DE00u + (uint64_t)i};
        if (t->dtype == CDL_I32) {
            int32_t *y = net->in[i];
            for (int64_t k = 0; k < n; k++) {
                uint32_t r[4];
                cdl_philox(key, (uint64_t)k, r);
                y[k] = (int32_t)(r[0] % (uint32_t)classes);
            }
        } else {
            cdl_rand_f64(key, 0, n, net->in[i]);
            if (n > max_in) max_in = n;
        }
    }

    cdl_clear_error();
    double loss0 = gc_loss(&c);
    memcpy(G, net->grad, tc * sizeof(double));
    if (!isfinite(loss0)) {
        tr_loss_failed(loss0, "on the random batch");
        goto fail;
    }
    if (!o->quiet)
        printf("gradcheck %s: batch %d, eps %g, loss %.10g, %zu trainable values\n", m->name, nb, eps,
               loss0, tc);
    double *p = net->param;
    for (int t = 0; t < m->n_params; t++) {
        const cdl_tensor *pt = &m->params[t];
        if (pt->flags & CDL_T_STATE) continue;
        int64_t n = cdl_tensor_numel(pt, m->batch);
        if (n < 1) continue;
        /* proportional share of --n, but at least 10 (or all) of every tensor */
        int64_t k = tc <= (size_t)want ? n : (int64_t)ceil((double)want * (double)n / (double)tc);
        if (k < 10) k = 10;
        if (k > n) k = n;
        double tmax = 0;
        int64_t before = w.failed;
        for (int64_t s = 0; s < k; s++) {
            int64_t idx = gc_pick(o->seed, 0xC1EC00u + (uint64_t)t, s, k, n);
            size_t j = pt->offset + (size_t)idx;
            double orig = p[j];
            p[j] = orig + eps;
            double lp = gc_loss(&c);
            p[j] = orig - eps;
            double lm = gc_loss(&c);
            p[j] = orig;
            gc_compare(&w, lp, lm, eps, G[j], pt->name, idx, &tmax);
        }
        if (!o->quiet)
            printf("  %-32s %6lld checked  max |num - ana| %.3g  %s\n", pt->name, (long long)k, tmax,
                   w.failed > before ? "FAIL" : "ok");
    }

    /* Input gradients (adversarial training uses them), eval mode. */
    if (m->input_grad && max_in > 0 && (IG = cdl_alloc((size_t)max_in * sizeof(double)))) {
        for (int i = 0; i < m->n_inputs; i++) {
            const cdl_tensor *t = &m->inputs[i];
            if (t->dtype == CDL_I32 || !net->in_grad[i]) continue;
            int64_t n = cdl_tensor_numel(t, nb);
            gc_restore(&c);
            m->input_grad(net, nb);
            memcpy(IG, net->in_grad[i], (size_t)n * sizeof(double));
            int64_t k = n <= want ? n : want;
            double tmax = 0, *x = net->in[i];
            int64_t before = w.failed;
            for (int64_t s = 0; s < k; s++) {
                int64_t idx = gc_pick(o->seed, 0x1A9D00u + (uint64_t)i, s, k, n);
                double orig = x[idx];
                x[idx] = orig + eps;
                double lp = gc_loss_eval(&c);
                x[idx] = orig - eps;
                double lm = gc_loss_eval(&c);
                x[idx] = orig;
                gc_compare(&w, lp, lm, eps, IG[idx], t->name, idx, &tmax);
            }
            if (!o->quiet)
                printf("  input %-26s %6lld checked  max |num - ana| %.3g  %s\n", t->name, (long long)k,
                       tmax, w.failed > before ? "FAIL" : "ok");
        }
    }
    gc_restore(&c);
    rc = w.failed ? 1 : 0;
    if (o->json) {
        printf("{\"model\":\"%s\",\"ok\":%s,\"checked\":%lld,\"failed\":%lld,\"worst\":\"%s\","
               "\"numeric\":%.17g,\"analytic\":%.17g}\n", m->name, rc ? "false" : "true",
               (long long)w.checked, (long long)w.failed, w.what, w.num, w.ana);
    } else {
        printf("%s: %lld of %lld values off; worst %s: numeric %.10g analytic %.10g (|diff| %.3g, "
               "tolerance 1e-5 + 1e-3 |numeric|)\n", rc ? "FAILED" : "ok", (long long)w.failed,
               (long long)w.checked, w.what, w.num, w.ana, fabs(w.num - w.ana));
    }
    goto done;
fail:
    fprintf(stderr, "gradcheck: %s\n", cdl_last_error());
done:
    cdl_free(IG);
    cdl_free(G);
    cdl_free(c.state0);
    cdl_net_free(c.net);
    return rc;
}

/* ---------------------------------------------------------------- sample */

/* Tiles of tw x th pixels from out (n rows of f values, real size rs), in a grid of
 * cols columns with a 2-pixel border.  Values are clamped to [0, 1] when they all lie
 * there, else min-max scaled. */
static int sample_png(const char *path, const void *out, int rs, int n, int64_t f, int tw, int th) {
    int cols = (int)ceil(sqrt((double)n)), rows = (n + cols - 1) / cols, pad = 2;
    int W = cols * (tw + pad) + pad, H = rows * (th + pad) + pad;
    if ((int64_t)tw * th != f) return cdl_fail("sample: tile %dx%d does not match %lld values", tw, th, (long long)f);
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < (int64_t)n * f; i++) {
        double v = rs == 8 ? ((const double *)out)[i] : ((const float *)out)[i];
        if (isfinite(v)) lo = fmin(lo, v), hi = fmax(hi, v);
    }
    int scale = !(lo >= 0 && hi <= 1);
    if (!(hi > lo)) lo = 0, hi = 1;
    unsigned char *pix = cdl_alloc((size_t)W * (size_t)H);
    if (!pix) return -1;
    for (int k = 0; k < n; k++) {
        int ox = pad + (k % cols) * (tw + pad), oy = pad + (k / cols) * (th + pad);
        for (int y = 0; y < th; y++)
            for (int x = 0; x < tw; x++) {
                int64_t i = (int64_t)k * f + (int64_t)y * tw + x;
                double v = rs == 8 ? ((const double *)out)[i] : ((const float *)out)[i];
                if (scale) v = (v - lo) / (hi - lo);
                v = isfinite(v) ? fmin(1, fmax(0, v)) : 0;
                pix[(size_t)(oy + y) * (size_t)W + (size_t)(ox + x)] = (unsigned char)lrint(v * 255);
            }
    }
    int rc = cdl_png_write_gray(path, W, H, pix);
    cdl_free(pix);
    return rc;
}

int tr_sample(const cdl_model *m, const tr_opts *o) {
    const cdl_entry *e = NULL;
    for (int i = 0; i < m->n_entries; i++)
        if (!o->entry[0] || !strcmp(m->entries[i].name, o->entry)) {
            e = &m->entries[i];
            break;
        }
    if (!e) {
        if (o->entry[0]) fprintf(stderr, "sample: model %s has no entry point '%s'\n", m->name, o->entry);
        else fprintf(stderr, "sample: model %s has no entry point (e.g. `entry generate(z) = ...`)\n", m->name);
        return 1;
    }
    int n = (int)(o->n > 0 ? o->n : (m->batch < 64 ? m->batch : 64));
    if (o->n > m->batch) {
        fprintf(stderr, "sample: --n %lld is larger than the compiled batch %d\n", (long long)o->n, m->batch);
        return 1;
    }
    if (e->n_out < 1 || e->n_in > 16 || e->n_out > 16) {
        fprintf(stderr, "sample: entry %s has %d inputs and %d outputs\n", e->name, e->n_in, e->n_out);
        return 1;
    }
    const char *path = o->out[0] ? o->out : "sample.png";
    void *in[16] = {0}, *out[16] = {0};
    int rc = 1;
    cdl_net *net = tr_make_net(m, o);
    if (!net) goto fail;
    for (int i = 0; i < e->n_in; i++) {
        const cdl_tensor *t = &e->in[i];
        int64_t cnt = cdl_tensor_numel(t, n);
        if (!(in[i] = cdl_alloc((size_t)cnt * tt_elem(m, t)))) goto fail;
        cdl_rng_key key = {o->seed, 0, 0x5A3B1E00u + (uint64_t)i};
        if (t->dtype == CDL_I32) continue;                /* zeros */
        if (m->real_size == 8) cdl_randn_f64(key, 0, cnt, in[i]);
        else cdl_randn_f32(key, 0, cnt, in[i]);
    }
    for (int i = 0; i < e->n_out; i++)
        if (!(out[i] = cdl_alloc((size_t)cdl_tensor_numel(&e->out[i], n) * tt_elem(m, &e->out[i])))) goto fail;
    cdl_clear_error();
    e->run(net, n, (const void *const *)in, (void *const *)out);
    if (cdl_last_error()[0]) {
        char msg[600];
        snprintf(msg, sizeof msg, "entry %s failed: %s", e->name, cdl_last_error());
        cdl_fail("%s", msg);
        goto fail;
    }
    const cdl_tensor *t0 = &e->out[0];
    if (t0->dtype == CDL_I32) {
        cdl_fail("entry %s: output %s is not real-valued", e->name, t0->name);
        goto fail;
    }
    int64_t f = cdl_tensor_numel(t0, n) / n;
    int tw, th;
    if (f == 784) tw = th = 28;
    else if ((int64_t)llround(sqrt((double)f)) * llround(sqrt((double)f)) == f) tw = th = (int)llround(sqrt((double)f));
    else tw = (int)f, th = 1;
    if (f > (1 << 20) || sample_png(path, out[0], m->real_size, n, f, tw, th) < 0) goto fail;
    if (!o->quiet) printf("wrote %s: %d samples of %s.%s (%dx%d tiles)\n", path, n, m->name, e->name, tw, th);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "sample: %s\n", cdl_last_error());
done:
    for (int i = 0; i < 16; i++) {
        cdl_free(in[i]);
        cdl_free(out[i]);
    }
    cdl_net_free(net);
    return rc;
}

/* ---------------------------------------------------------------- grad */

/* Tensors written: "loss.<b>" (f64 [1]) and "grad.<b>.<param>" (the model's real type,
 * the parameter's shape) for batches b = 0..N-1 of the training split in order. */
int tr_grad(const cdl_model *m, const tr_opts *o) {
    if (!o->out[0]) {
        fprintf(stderr, "grad: -o FILE.safetensors is required\n");
        return 2;
    }
    if (!m->grad || !m->has_loss) {
        fprintf(stderr, "grad: model %s has no loss\n", m->name);
        return 1;
    }
    int B = tr_batch(m, o);
    if (B > m->batch) {
        fprintf(stderr, "grad: --batch %d is larger than the compiled batch %d\n", B, m->batch);
        return 1;
    }
    int ntrain = 0;
    for (int t = 0; t < m->n_params; t++) ntrain += !(m->params[t].flags & CDL_T_STATE);
    int64_t nbat = o->batches;
    size_t nt = (size_t)nbat * (size_t)(ntrain + 1), rs = (size_t)m->real_size;
    cdl_dataset d;
    tr_map map;
    cdl_loader *l = NULL;
    cdl_net *net = NULL;
    cdl_st_tensor *st = NULL;
    char *names = NULL;
    double *losses = NULL;
    char *grads = NULL;
    int rc = 1;
    if (tr_open_dataset(m, o, 1, o->limit, &d) < 0) {
        fprintf(stderr, "grad: %s\n", cdl_last_error());
        return 1;
    }
    if (tr_map_inputs(m, &d, o, &map) < 0 || !(net = tr_make_net(m, o))) goto fail;
    if (!(l = tr_plain_loader(m, o, &d, &map)) || cdl_loader_start(l, 0, 0) < 0) goto fail;
    st = cdl_alloc(nt * sizeof *st);
    names = cdl_alloc(nt * 160);
    losses = cdl_alloc((size_t)nbat * sizeof(double));
    grads = cdl_alloc((size_t)nbat * m->train_count * rs);
    if (!st || !names || !losses || !grads) goto fail;
    size_t k = 0;
    uint64_t step0 = net->step;
    int64_t b;
    for (b = 0; b < nbat; b++) {
        int rows = cdl_loader_next(l, net->in);
        if (rows < 0) goto fail;
        if (rows == 0) break;
        net->step = step0 + (uint64_t)b;
        cdl_clear_error();
        losses[b] = m->grad(net, rows);
        if (!isfinite(losses[b])) {
            char what[64];
            snprintf(what, sizeof what, "on batch %lld", (long long)b);
            tr_loss_failed(losses[b], what);          /* no file: NaN and stale gradients help no one */
            goto fail;
        }
        char *g = grads + (size_t)b * m->train_count * rs;
        memcpy(g, net->grad, m->train_count * rs);
        snprintf(names + k * 160, 160, "loss.%lld", (long long)b);
        st[k] = (cdl_st_tensor){names + k * 160, CDL_F64, 1, {1}, &losses[b]};
        k++;
        for (int t = 0; t < m->n_params; t++) {
            const cdl_tensor *pt = &m->params[t];
            if (pt->flags & CDL_T_STATE) continue;
            cdl_st_tensor *s = &st[k];
            snprintf(names + k * 160, 160, "grad.%lld.%s", (long long)b, pt->name);
            s->name = names + k * 160;
            s->dtype = m->real_size == 8 ? CDL_F64 : CDL_F32;
            s->rank = pt->rank;
            memcpy(s->dims, pt->dims, sizeof s->dims);
            s->data = g + pt->offset * rs;
            k++;
        }
        if (!o->quiet) printf("batch %lld: %d rows, loss %.9g\n", (long long)b, rows, losses[b]);
    }
    char sb[32], sn[32];
    snprintf(sb, sizeof sb, "%d", B);
    snprintf(sn, sizeof sn, "%lld", (long long)b);
    const char *meta[] = {"model", m->name, "data", o->data, "batch", sb, "batches", sn};
    if (cdl_safetensors_write(o->out, (int)k, st, 4, meta) < 0) goto fail;
    if (!o->quiet) printf("wrote %s: %lld batches, %d gradients each\n", o->out, (long long)b, ntrain);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "grad: %s\n", cdl_last_error());
done:
    cdl_free(st);
    cdl_free(names);
    cdl_free(losses);
    cdl_free(grads);
    cdl_loader_free(l);
    cdl_net_free(net);
    cdl_dataset_free(&d);
    return rc;
}
