/* trainer_gradcheck.c -- the gradcheck command: central differences on (a sample of)
 * the trainable parameters, and on the real inputs when the model has input_grad,
 * against the model's own gradient, on one fixed random batch, in f64 builds only.
 *
 * Kinks.  relu, max, abs and friends are not differentiable where their input is 0 (or
 * two inputs tie).  When such an input lies within eps of its kink, the central
 * difference averages the two sides and disagrees with the one-sided derivative the
 * model returns: a false failure, common in ReLU CNNs at large batches.  A failing
 * element is therefore also measured one-sidedly, (L(+eps) - L) / eps against
 * (L - L(-eps)) / eps: when the two slopes differ beyond the tolerance, the loss has a
 * kink within eps there, and the element is measured again at eps / 100.  Passing
 * there, it counts as checked and passed (reported as a kink); failing there, it
 * fails and the report says it sits next to a kink.
 */
#include "trainer_int.h"

#include <math.h>
#include <string.h>

#define GC_DEFAULT_BATCH 8         /* the default batch: kinks get rarer as it shrinks */
#define GC_RETRY 100.0             /* eps divisor for the second look near a kink */

/* The worst element and the counts. */
typedef struct gc_worst {
    double ratio, num, ana;
    char what[160];
    int64_t checked, failed, kinks, kink_failed;
} gc_worst;

/* What gradcheck holds between evaluations. */
typedef struct gc_ctx {
    const cdl_model *m;
    const tr_opts *o;
    cdl_net *net;
    int nb;
    double eps;
    int64_t want;                 /* elements to check (--n) */
    double *state0;               /* param_count - train_count saved state values */
    double *G, *IG;               /* the model's parameter / input gradients */
    int64_t max_in;               /* largest real input, elements */
    gc_worst w;
} gc_ctx;

static void gc_restore(gc_ctx *c) {
    size_t ns = c->m->param_count - c->m->train_count;
    if (ns) memcpy((double *)c->net->param + c->m->train_count, c->state0, ns * sizeof(double));
}

/* The loss with the state restored first (the same step, so the same dropout): train
 * mode for parameters, eval mode (what input_grad differentiates) for inputs. */
static double gc_loss(gc_ctx *c, int eval) {
    gc_restore(c);
    if (!eval) return c->m->grad(c->net, c->nb);
    c->m->forward(c->net, c->nb);
    return c->net->loss;
}

static int gc_close(double num, double ana) { return fabs(num - ana) <= 1e-5 + 1e-3 * fabs(num); }

/* Check element *v (analytic derivative ana; the loss at the unmoved point l0) by
 * central differences, with the second look near a kink; restores *v.  Updates the
 * counts, the worst element and *tmax (the largest |num - ana| of the tensor). */
static void gc_element(gc_ctx *c, double *v, double ana, double l0, int eval, const char *name, int64_t idx,
                       double *tmax) {
    double orig = *v, eps = c->eps;
    *v = orig + eps;
    double lp = gc_loss(c, eval);
    *v = orig - eps;
    double lm = gc_loss(c, eval);
    double num = (lp - lm) / (2 * eps), err = fabs(num - ana);
    int ok = gc_close(num, ana);
    if (!ok) {
        double right = (lp - l0) / eps, left = (l0 - lm) / eps;
        if (!gc_close(right, left) && isfinite(right) && isfinite(left)) {     /* a kink within eps */
            c->w.kinks++;
            double e2 = eps / GC_RETRY;
            *v = orig + e2;
            double lp2 = gc_loss(c, eval);
            *v = orig - e2;
            double lm2 = gc_loss(c, eval);
            double num2 = (lp2 - lm2) / (2 * e2);
            ok = gc_close(num2, ana);
            if (!ok) c->w.kink_failed++;
            else num = num2, err = fabs(num2 - ana);
        }
    }
    *v = orig;
    double tol = 1e-5 + 1e-3 * fabs(num), ratio = isfinite(err) ? err / tol : INFINITY;
    c->w.checked++;
    if (!ok) c->w.failed++;
    if (*tmax < err || !isfinite(err)) *tmax = isfinite(err) ? err : INFINITY;
    if (ratio > c->w.ratio || c->w.checked == 1) {
        c->w.ratio = ratio;
        c->w.num = num;
        c->w.ana = ana;
        snprintf(c->w.what, sizeof c->w.what, "%s[%lld]", name, (long long)idx);
    }
}

/* The k-th sampled element of a tensor of n elements: all when count >= n. */
static int64_t gc_pick(uint64_t seed, uint64_t stream, int64_t k, int64_t count, int64_t n) {
    if (count >= n) return k;
    uint32_t w[4];
    cdl_rng_key key = {seed, 0, stream};
    cdl_philox(key, (uint64_t)k, w);
    return (int64_t)((((uint64_t)w[0] << 32) | w[1]) % (uint64_t)n);
}

/* The net, the saved state and the fixed random batch: reals U[0, 1), i32 inputs
 * uniform in [0, classes).  -1 and a message. */
static int gc_setup(gc_ctx *c) {
    const cdl_model *m = c->m;
    size_t tc = m->train_count, ns = m->param_count - tc;
    if (!(c->net = tr_make_net(m, c->o))) return -1;
    c->G = cdl_alloc(tc * sizeof(double));
    c->state0 = cdl_alloc(ns * sizeof(double));
    if (!c->G || !c->state0) return -1;
    memcpy(c->state0, (double *)c->net->param + tc, ns * sizeof(double));
    int classes = c->o->nclasses;
    if (!classes && m->n_outputs > 0 && m->outputs[0].rank >= 1)
        classes = (int)m->outputs[0].dims[m->outputs[0].rank - 1];
    if (classes < 1) classes = 10;
    for (int i = 0; i < m->n_inputs; i++) {
        const cdl_tensor *t = &m->inputs[i];
        int64_t n = cdl_tensor_numel(t, c->nb);
        cdl_rng_key key = {c->o->seed, 0, 0xC0DE00u + (uint64_t)i};
        if (t->dtype == CDL_I32) {
            int32_t *y = c->net->in[i];
            for (int64_t k = 0; k < n; k++) {
                uint32_t r[4];
                cdl_philox(key, (uint64_t)k, r);
                y[k] = (int32_t)(r[0] % (uint32_t)classes);
            }
        } else {
            cdl_rand_f64(key, 0, n, c->net->in[i]);
            if (n > c->max_in) c->max_in = n;
        }
    }
    return 0;
}

/* k sampled elements of the n values v (analytic derivatives ana; sample stream
 * stream; the loss at the unmoved point l0; eval: the eval-mode loss), then the
 * tensor's line: "  [input ]NAME  K checked  max |num - ana| X  ok|FAIL". */
static void gc_tensor(gc_ctx *c, const char *what, const char *name, double *v, const double *ana, int64_t n,
                      int64_t k, uint64_t stream, double l0, int eval) {
    double tmax = 0;
    int64_t before = c->w.failed, kinks = c->w.kinks;
    for (int64_t s = 0; s < k; s++) {
        int64_t idx = gc_pick(c->o->seed, stream, s, k, n);
        gc_element(c, &v[idx], ana[idx], l0, eval, name, idx, &tmax);
    }
    if (c->o->quiet) return;
    printf("  %s%-*s %6lld checked  max |num - ana| %.3g  %s", what, 32 - (int)strlen(what), name, (long long)k, tmax,
           c->w.failed > before ? "FAIL" : "ok");
    if (c->w.kinks > kinks) printf("  (%lld near a kink)", (long long)(c->w.kinks - kinks));
    printf("\n");
}

/* Every trainable tensor: a proportional share of --n elements (at least 10, or all). */
static void gc_params(gc_ctx *c, double loss0) {
    const cdl_model *m = c->m;
    size_t tc = m->train_count;
    double *p = c->net->param;
    for (int t = 0; t < m->n_params; t++) {
        const cdl_tensor *pt = &m->params[t];
        if (pt->flags & CDL_T_STATE) continue;
        int64_t n = cdl_tensor_numel(pt, m->batch);
        if (n < 1) continue;
        int64_t k = tc <= (size_t)c->want ? n : (int64_t)ceil((double)c->want * (double)n / (double)tc);
        if (k < 10) k = 10;
        if (k > n) k = n;
        gc_tensor(c, "", pt->name, p + pt->offset, c->G + pt->offset, n, k, 0xC1EC00u + (uint64_t)t, loss0, 0);
    }
}

/* Input gradients (adversarial training uses them), eval mode: up to --n elements of
 * every real input. */
static int gc_inputs(gc_ctx *c) {
    const cdl_model *m = c->m;
    cdl_net *net = c->net;
    if (!m->input_grad || c->max_in < 1 || c->o->no_input_check) return 0;
    if (!(c->IG = cdl_alloc((size_t)c->max_in * sizeof(double)))) return -1;
    for (int i = 0; i < m->n_inputs; i++) {
        const cdl_tensor *t = &m->inputs[i];
        if (t->dtype == CDL_I32 || !net->in_grad[i]) continue;
        int64_t n = cdl_tensor_numel(t, c->nb);
        gc_restore(c);
        double l0 = m->input_grad(net, c->nb);
        memcpy(c->IG, net->in_grad[i], (size_t)n * sizeof(double));
        int64_t k = n <= c->want ? n : c->want;
        gc_tensor(c, "input ", t->name, net->in[i], c->IG, n, k, 0x1A9D00u + (uint64_t)i, l0, 1);
    }
    return 0;
}

/* The summary line (or JSON); the exit status. */
static int gc_report(const gc_ctx *c) {
    const gc_worst *w = &c->w;
    int rc = w->failed ? 1 : 0;
    if (c->o->json) {
        printf("{\"model\":\"%s\",\"ok\":%s,\"checked\":%lld,\"failed\":%lld,\"kinks\":%lld,\"kink_failed\":%lld,"
               "\"worst\":\"%s\",\"numeric\":%.17g,\"analytic\":%.17g}\n", c->m->name, rc ? "false" : "true",
               (long long)w->checked, (long long)w->failed, (long long)w->kinks, (long long)w->kink_failed, w->what,
               w->num, w->ana);
        return rc;
    }
    printf("%s: %lld of %lld values off; worst %s: numeric %.10g analytic %.10g (|diff| %.3g, "
           "tolerance 1e-5 + 1e-3 |numeric|)\n", rc ? "FAILED" : "ok", (long long)w->failed, (long long)w->checked,
           w->what, w->num, w->ana, fabs(w->num - w->ana));
    if (w->kinks > w->kink_failed)
        printf("%lld values sat next to a kink (an input of relu/max/abs within eps of it: the one-sided slopes "
               "differ) and passed at eps %g\n", (long long)(w->kinks - w->kink_failed), c->eps / GC_RETRY);
    if (w->kink_failed)
        printf("%lld of the values off sit next to a kink (an input of relu/max/abs within eps of it: the one-sided "
               "slopes differ, also at eps %g): likely not a wrong gradient; try a smaller --batch or --eps\n",
               (long long)w->kink_failed, c->eps / GC_RETRY);
    return rc;
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
    gc_ctx c;
    memset(&c, 0, sizeof c);
    c.m = m;
    c.o = o;
    c.nb = o->batch > 0 ? (int)o->batch : m->batch < GC_DEFAULT_BATCH ? m->batch : GC_DEFAULT_BATCH;
    c.eps = o->eps;
    c.want = o->n > 0 ? o->n : 200;
    if (c.nb > m->batch) {
        fprintf(stderr, "gradcheck: --batch %d is larger than the compiled batch %d\n", c.nb, m->batch);
        return 1;
    }
    int rc = 1;
    if (gc_setup(&c) < 0) goto fail;
    cdl_clear_error();
    double loss0 = gc_loss(&c, 0);
    memcpy(c.G, c.net->grad, m->train_count * sizeof(double));
    if (!isfinite(loss0)) {
        tr_loss_failed(loss0, "on the random batch");
        goto fail;
    }
    if (!o->quiet)
        printf("gradcheck %s: batch %d, eps %g, loss %.10g, %zu trainable values\n", m->name, c.nb, c.eps, loss0,
               m->train_count);
    gc_params(&c, loss0);
    if (gc_inputs(&c) < 0) goto fail;
    gc_restore(&c);
    rc = gc_report(&c);
    goto done;
fail:
    fprintf(stderr, "gradcheck: %s\n", cdl_last_error());
done:
    cdl_free(c.IG);
    cdl_free(c.G);
    cdl_free(c.state0);
    cdl_net_free(c.net);
    return rc;
}
