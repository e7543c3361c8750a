/* optim.c -- SGD (momentum, Nesterov, weight decay), Adam and AdamW over flat slabs.
 *
 * The update runs over the trainable prefix of net->param (train_count reals) with
 * net->grad, in the model's precision (float or double slabs).  Formulas are
 * PyTorch's (torch.optim, single-tensor path, dampening 0, maximize off, amsgrad off):
 *
 *   SGD:    g = grad + wd * p
 *           if momentum:  buf = mu * buf + g;  g = nesterov ? g + mu * buf : buf
 *           p -= lr * g
 *   Adam:   g = grad + wd * p
 *   AdamW:  p *= 1 - lr * wd
 *   both:   t += 1;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
 *           p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *
 * PyTorch's first-step `buf = g` equals `mu * 0 + g`, so a zeroed buffer needs no
 * special case.  Steps allocate nothing.
 */
#include "cdl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void cdl_optim_defaults(cdl_optim_cfg *cfg, cdl_optim_kind kind) {
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = kind;
    cfg->beta1 = 0.9;
    cfg->beta2 = 0.999;
    cfg->eps = 1e-8;
    switch (kind) {
    case CDL_OPT_SGD: cfg->lr = 0.01; break;
    case CDL_OPT_ADAM: cfg->lr = 1e-3; break;
    case CDL_OPT_ADAMW: cfg->lr = 1e-3; cfg->weight_decay = 0.01; break;  /* PyTorch's AdamW default */
    }
}

/* Parse "kind[:key=value,...]" (see cdl.h).  Keys: lr, weight_decay (wd); SGD:
 * momentum, nesterov (0/1, or bare); Adam/AdamW: beta1, beta2, eps.  Unknown keys,
 * keys of another optimizer, bad numbers and out-of-range values are errors.
 * cfg is written only on success. */
int cdl_optim_parse(cdl_optim_cfg *cfg, const char *spec) {
    if (!spec || !*spec) return cdl_fail("optimizer spec: empty");
    char buf[256];
    if (strlen(spec) >= sizeof buf) return cdl_fail("optimizer spec: too long");
    strcpy(buf, spec);
    char *args = strchr(buf, ':');
    if (args) *args++ = 0;
    cdl_optim_cfg c;
    if (strcmp(buf, "sgd") == 0) cdl_optim_defaults(&c, CDL_OPT_SGD);
    else if (strcmp(buf, "adam") == 0) cdl_optim_defaults(&c, CDL_OPT_ADAM);
    else if (strcmp(buf, "adamw") == 0) cdl_optim_defaults(&c, CDL_OPT_ADAMW);
    else return cdl_fail("optimizer spec '%s': unknown optimizer '%s' (sgd, adam, adamw)", spec, buf);
    int sgd = c.kind == CDL_OPT_SGD;
    char *save = NULL;
    for (char *kv = args ? strtok_r(args, ",", &save) : NULL; kv; kv = strtok_r(NULL, ",", &save)) {
        char *val = strchr(kv, '=');
        if (val) *val++ = 0;
        double v = 1;
        if (val && cdl_parse_f64(val, &v) < 0)
            return cdl_fail("optimizer spec '%s': bad number '%s' for %s", spec, val, kv);
        if (!val && strcmp(kv, "nesterov") != 0)
            return cdl_fail("optimizer spec '%s': '%s' needs a value (key=value)", spec, kv);
        if (strcmp(kv, "lr") == 0) c.lr = v;
        else if (strcmp(kv, "weight_decay") == 0 || strcmp(kv, "wd") == 0) c.weight_decay = v;
        else if (sgd && strcmp(kv, "momentum") == 0) c.momentum = v;
        else if (sgd && strcmp(kv, "nesterov") == 0) c.nesterov = v != 0;
        else if (!sgd && strcmp(kv, "beta1") == 0) c.beta1 = v;
        else if (!sgd && strcmp(kv, "beta2") == 0) c.beta2 = v;
        else if (!sgd && strcmp(kv, "eps") == 0) c.eps = v;
        else return cdl_fail("optimizer spec '%s': unknown key '%s' for %s", spec, kv, buf);
    }
    if (c.lr < 0) return cdl_fail("optimizer spec '%s': lr must be >= 0", spec);
    if (c.weight_decay < 0) return cdl_fail("optimizer spec '%s': weight_decay must be >= 0", spec);
    if (c.momentum < 0) return cdl_fail("optimizer spec '%s': momentum must be >= 0", spec);
    if (c.nesterov && c.momentum <= 0)
        return cdl_fail("optimizer spec '%s': nesterov needs momentum > 0", spec);
    if (c.beta1 < 0 || c.beta1 >= 1 || c.beta2 < 0 || c.beta2 >= 1)
        return cdl_fail("optimizer spec '%s': betas must be in [0, 1)", spec);
    if (c.eps < 0) return cdl_fail("optimizer spec '%s': eps must be >= 0", spec);
    *cfg = c;
    return 0;
}

/* Set up o for model m: slots of train_count reals each, zeroed; t = 0.  -1 and a
 * message on a bad config or out of memory (o is then safe to free). */
int cdl_optim_init(cdl_optim *o, const cdl_model *m, const cdl_optim_cfg *cfg) {
    memset(o, 0, sizeof *o);
    if (!m || !cfg) return cdl_fail("cdl_optim_init: NULL argument");
    if (m->real_size != 4 && m->real_size != 8)
        return cdl_fail("cdl_optim_init: model real_size %d", m->real_size);
    if (cfg->kind != CDL_OPT_SGD && cfg->kind != CDL_OPT_ADAM && cfg->kind != CDL_OPT_ADAMW)
        return cdl_fail("cdl_optim_init: unknown optimizer kind %d", (int)cfg->kind);
    if (cfg->nesterov && cfg->momentum <= 0)
        return cdl_fail("cdl_optim_init: nesterov needs momentum > 0");
    o->cfg = *cfg;
    o->model = m;
    if (cfg->kind == CDL_OPT_SGD) {
        if (cfg->momentum != 0) {
            o->n_slots = 1;
            o->slot_name[0] = "sgd.momentum";
        }
    } else {
        o->n_slots = 2;
        o->slot_name[0] = "adam.m";
        o->slot_name[1] = "adam.v";
    }
    for (int s = 0; s < o->n_slots; s++) {
        o->slot[s] = cdl_alloc(m->train_count * (size_t)m->real_size);
        if (!o->slot[s]) {
            cdl_optim_free(o);
            return cdl_fail("cdl_optim_init: out of memory for %zu optimizer state values",
                            m->train_count);
        }
    }
    return 0;
}

void cdl_optim_free(cdl_optim *o) {
    if (!o) return;
    for (int s = 0; s < 2; s++) {
        cdl_free(o->slot[s]);
        o->slot[s] = NULL;
    }
    o->n_slots = 0;
}

/* The loops, once per precision.  T is the element type; scalars are rounded to T
 * once so the inner loops stay in one precision. */
#define OPTIM_SGD(T)                                                          \
    static void sgd_##T(T *restrict p, const T *restrict g, T *restrict buf, \
                        size_t n, T lr, T wd, T mu, int nesterov) {          \
        if (!buf) {                                                           \
            for (size_t i = 0; i < n; i++) p[i] -= lr * (g[i] + wd * p[i]);   \
            return;                                                           \
        }                                                                     \
        for (size_t i = 0; i < n; i++) {                                      \
            T d = g[i] + wd * p[i];                                           \
            T b = mu * buf[i] + d;                                            \
            buf[i] = b;                                                       \
            p[i] -= lr * (nesterov ? d + mu * b : b);                         \
        }                                                                     \
    }

#define OPTIM_ADAM(T, SQRT)                                                   \
    static void adam_##T(T *restrict p, const T *restrict g, T *restrict m,  \
                         T *restrict v, size_t n, T decay, T wd, T b1, T b2,  \
                         T step, T inv_bc2s, T eps) {                         \
        for (size_t i = 0; i < n; i++) {                                      \
            T pi = p[i] * decay;                                              \
            T d = g[i] + wd * pi;                                             \
            T mi = b1 * m[i] + (1 - b1) * d;                                  \
            T vi = b2 * v[i] + (1 - b2) * d * d;                              \
            m[i] = mi;                                                        \
            v[i] = vi;                                                        \
            p[i] = pi - step * mi / (SQRT(vi) * inv_bc2s + eps);              \
        }                                                                     \
    }

OPTIM_SGD(float)
OPTIM_SGD(double)
OPTIM_ADAM(float, sqrtf)
OPTIM_ADAM(double, sqrt)

/* One update of net's trainable parameters with learning rate lr (see the file
 * comment for the formulas).  Advances o->t. */
void cdl_optim_step(cdl_optim *o, cdl_net *net, double lr) {
    const cdl_optim_cfg *c = &o->cfg;
    size_t n = o->model->train_count;
    int f64 = o->model->real_size == 8;
    o->t++;
    if (c->kind == CDL_OPT_SGD) {
        void *buf = o->n_slots ? o->slot[0] : NULL;
        if (f64)
            sgd_double(net->param, net->grad, buf, n, lr, c->weight_decay, c->momentum, c->nesterov);
        else
            sgd_float(net->param, net->grad, buf, n, (float)lr, (float)c->weight_decay,
                      (float)c->momentum, c->nesterov);
        return;
    }
    double t = (double)o->t;
    double bc1 = 1 - pow(c->beta1, t), bc2s = sqrt(1 - pow(c->beta2, t));
    double step = lr / bc1;
    double decay = 1, wd = c->weight_decay;
    if (c->kind == CDL_OPT_ADAMW) {
        decay = 1 - lr * c->weight_decay;
        wd = 0;
    }
    /* sqrt(v) / bc2s as sqrt(v) * (1 / bc2s): the loop is bound by its vector square
     * root and divisions (Adam was 9% of the MLP step), and this drops one division per
     * element; the result differs from PyTorch's division by at most an ulp of the
     * denominator. */
    if (f64)
        adam_double(net->param, net->grad, o->slot[0], o->slot[1], n, decay, wd, c->beta1,
                    c->beta2, step, 1 / bc2s, c->eps);
    else
        adam_float(net->param, net->grad, o->slot[0], o->slot[1], n, (float)decay, (float)wd,
                   (float)c->beta1, (float)c->beta2, (float)step, (float)(1 / bc2s), (float)c->eps);
}

/* ---------------------------------------------------------------- schedules, clipping */

/* Parse a schedule spec (see cdl.h) into s; warmup, steps_per_epoch and total_steps
 * are left 0 except for "warmup:steps=N".  s is written only on success. */
int cdl_sched_parse(cdl_sched *s, const char *spec) {
    if (!spec || !*spec) return cdl_fail("schedule spec: empty");
    char buf[128];
    if (strlen(spec) >= sizeof buf) return cdl_fail("schedule spec: too long");
    strcpy(buf, spec);
    char *args = strchr(buf, ':');
    if (args) *args++ = 0;
    cdl_sched c;
    memset(&c, 0, sizeof c);
    c.gamma = 0.1;
    int warm = 0;
    if (strcmp(buf, "const") == 0 || strcmp(buf, "constant") == 0) c.kind = CDL_SCHED_CONST;
    else if (strcmp(buf, "step") == 0) c.kind = CDL_SCHED_STEP;
    else if (strcmp(buf, "cosine") == 0) c.kind = CDL_SCHED_COSINE;
    else if (strcmp(buf, "warmup") == 0) c.kind = CDL_SCHED_CONST, warm = 1;
    else return cdl_fail("schedule spec '%s': unknown schedule '%s' (const, step, cosine, warmup)", spec, buf);
    char *save = NULL;
    for (char *kv = args ? strtok_r(args, ",", &save) : NULL; kv; kv = strtok_r(NULL, ",", &save)) {
        char *val = strchr(kv, '=');
        double v;
        if (!val) return cdl_fail("schedule spec '%s': '%s' needs a value (key=value)", spec, kv);
        *val++ = 0;
        if (cdl_parse_f64(val, &v) < 0)
            return cdl_fail("schedule spec '%s': bad number '%s' for %s", spec, val, kv);
        int whole = v == floor(v) && v >= 1 && v < 1e15;
        if (c.kind == CDL_SCHED_STEP && strcmp(kv, "every") == 0 && whole) c.every = (int64_t)v;
        else if (c.kind == CDL_SCHED_STEP && strcmp(kv, "gamma") == 0 && v >= 0) c.gamma = v;
        else if (c.kind == CDL_SCHED_COSINE && strcmp(kv, "min") == 0 && v >= 0) c.min_lr = v;
        else if (c.kind == CDL_SCHED_COSINE && strcmp(kv, "epochs") == 0 && whole) c.span_epochs = (int64_t)v;
        else if (warm && strcmp(kv, "steps") == 0 && whole) c.warmup = (int64_t)v;
        else return cdl_fail("schedule spec '%s': bad key or value '%s=%s' for %s", spec, kv, val, buf);
    }
    if (c.kind == CDL_SCHED_STEP && c.every < 1)
        return cdl_fail("schedule spec '%s': step needs every=EPOCHS", spec);
    if (warm && c.warmup < 1) return cdl_fail("schedule spec '%s': warmup needs steps=N", spec);
    *s = c;
    return 0;
}

/* The lr at global step `step` (0-based): warmup ramp first, then the kind's curve. */
double cdl_sched_lr(const cdl_sched *s, double base_lr, uint64_t step) {
    double st = (double)step;
    if (s->warmup > 0 && st < (double)s->warmup) return base_lr * (st + 1) / (double)s->warmup;
    switch (s->kind) {
    case CDL_SCHED_STEP: {
        int64_t spe = s->steps_per_epoch > 0 ? s->steps_per_epoch : 1;
        uint64_t epoch = step / (uint64_t)spe;
        return base_lr * pow(s->gamma, (double)(epoch / (uint64_t)s->every));
    }
    case CDL_SCHED_COSINE: {
        double span = (double)(s->total_steps - s->warmup);
        double pos = st - (double)s->warmup;
        if (span <= 0 || pos >= span) return s->min_lr;
        return s->min_lr + (base_lr - s->min_lr) * 0.5 * (1 + cos(3.14159265358979323846 * pos / span));
    }
    case CDL_SCHED_CONST:
    default: return base_lr;
    }
}

double cdl_grad_norm(const cdl_net *net) {
    size_t n = net->model->train_count;
    double s = 0;
    if (net->model->real_size == 8) {
        const double *g = net->grad;
        for (size_t i = 0; i < n; i++) s += g[i] * g[i];
    } else {
        const float *g = net->grad;
        for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    }
    return sqrt(s);
}

double cdl_clip_grad_norm(cdl_net *net, double max_norm) {
    double norm = cdl_grad_norm(net);
    if (!(max_norm > 0) || !isfinite(norm) || norm <= max_norm) return norm;
    double c = max_norm / (norm + 1e-6);
    size_t n = net->model->train_count;
    if (net->model->real_size == 8) {
        double *g = net->grad;
        for (size_t i = 0; i < n; i++) g[i] *= c;
    } else {
        float *g = net->grad;
        float cf = (float)c;
        for (size_t i = 0; i < n; i++) g[i] *= cf;
    }
    return norm;
}
