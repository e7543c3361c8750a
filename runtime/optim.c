/* optim.c -- SGD (momentum, Nesterov, weight decay), Adam, AdamW, RMSprop and Adagrad
 * over flat slabs.
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
 *   RMSprop: g = grad + wd * p;  sq = alpha sq + (1 - alpha) g^2
 *           centered: ga = alpha ga + (1 - alpha) g;  avg = sqrt(sq - ga^2) + eps
 *           else avg = sqrt(sq) + eps
 *           momentum: buf = mu * buf + g / avg;  p -= lr * buf;  else p -= lr * g / avg
 *   Adagrad: t += 1;  g = grad + wd * p;  clr = lr / (1 + (t - 1) lr_decay)
 *           sum += g^2 (sum starts at initial_accumulator_value);  p -= clr * g / (sqrt(sum) + eps)
 *
 * PyTorch's first-step `buf = g` equals `mu * 0 + g`, so a zeroed buffer needs no
 * special case.  Steps allocate nothing.
 */
#include "cdl.h"
#include "optim_groups.h"

#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

void cdl_optim_defaults(cdl_optim_cfg *cfg, cdl_optim_kind kind) {
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = kind;
    cfg->beta1 = 0.9;
    cfg->beta2 = 0.999;
    cfg->eps = 1e-8;
    cfg->alpha = 0.99;
    switch (kind) {
    case CDL_OPT_SGD: cfg->lr = 0.01; break;
    case CDL_OPT_ADAM: cfg->lr = 1e-3; break;
    case CDL_OPT_ADAMW: cfg->lr = 1e-3; cfg->weight_decay = 0.01; break;  /* PyTorch's AdamW default */
    case CDL_OPT_RMSPROP: cfg->lr = 0.01; break;
    case CDL_OPT_ADAGRAD: cfg->lr = 0.01; cfg->eps = 1e-10; break;
    }
}

static const char *const optim_names[] = {"sgd", "adam", "adamw", "rmsprop", "adagrad"};

const char *cdl_optim_kind_name(cdl_optim_kind kind) {
    return (unsigned)kind < sizeof optim_names / sizeof optim_names[0] ? optim_names[kind] : "?";
}

/* The keys of a spec: where each is stored and which kinds take it (bit = 1 << kind).
 * flag: a 0/1 setting, which may be written bare ("nesterov"). */
enum { O_SGD = 1, O_ADAM = 2, O_ADAMW = 4, O_RMS = 8, O_ADAG = 16, O_ALL = 31 };
static const struct optim_key {
    const char *name;
    size_t off;
    unsigned kinds;
    int flag;
} optim_keys[] = {
    {"lr", offsetof(cdl_optim_cfg, lr), O_ALL, 0},
    {"weight_decay", offsetof(cdl_optim_cfg, weight_decay), O_ALL, 0},
    {"wd", offsetof(cdl_optim_cfg, weight_decay), O_ALL, 0},
    {"momentum", offsetof(cdl_optim_cfg, momentum), O_SGD | O_RMS, 0},
    {"nesterov", offsetof(cdl_optim_cfg, nesterov), O_SGD, 1},
    {"beta1", offsetof(cdl_optim_cfg, beta1), O_ADAM | O_ADAMW, 0},
    {"beta2", offsetof(cdl_optim_cfg, beta2), O_ADAM | O_ADAMW, 0},
    {"eps", offsetof(cdl_optim_cfg, eps), O_ADAM | O_ADAMW | O_RMS | O_ADAG, 0},
    {"alpha", offsetof(cdl_optim_cfg, alpha), O_RMS, 0},
    {"centered", offsetof(cdl_optim_cfg, centered), O_RMS, 1},
    {"lr_decay", offsetof(cdl_optim_cfg, lr_decay), O_ADAG, 0},
    {"initial_accumulator_value", offsetof(cdl_optim_cfg, initial_accumulator_value), O_ADAG, 0},
};

/* A "name[:args]" spec copied into buf (size n), split at the first ':' (*args: what
 * follows, or NULL); -1 and a message naming what when it is empty or too long. */
static int spec_split(const char *what, const char *spec, char *buf, size_t n, char **args) {
    if (!spec || !*spec) return cdl_fail("%s spec: empty", what);
    if (strlen(spec) >= n) return cdl_fail("%s spec: too long", what);
    strcpy(buf, spec);
    *args = strchr(buf, ':');
    if (*args) *(*args)++ = 0;
    return 0;
}

/* Parse "kind[:key=value,...]" (see cdl.h).  The keys of each kind are optim_keys';
 * unknown keys, keys of another optimizer, bad numbers and out-of-range values are
 * errors.  cfg is written only on success. */
int cdl_optim_parse(cdl_optim_cfg *cfg, const char *spec) {
    char buf[256], *args = NULL;
    if (spec_split("optimizer", spec, buf, sizeof buf, &args) < 0) return -1;
    cdl_optim_cfg c;
    int kind = -1;
    for (int k = 0; k < (int)(sizeof optim_names / sizeof optim_names[0]); k++)
        if (strcmp(buf, optim_names[k]) == 0) kind = k;
    if (kind < 0)
        return cdl_fail("optimizer spec '%s': unknown optimizer '%s' (sgd, adam, adamw, rmsprop, adagrad)", spec, buf);
    cdl_optim_defaults(&c, (cdl_optim_kind)kind);
    char *save = NULL;
    for (char *kv = args ? strtok_r(args, ",", &save) : NULL; kv; kv = strtok_r(NULL, ",", &save)) {
        char *val = strchr(kv, '=');
        if (val) *val++ = 0;
        const struct optim_key *key = NULL;
        for (size_t i = 0; i < sizeof optim_keys / sizeof optim_keys[0]; i++)
            if (strcmp(kv, optim_keys[i].name) == 0 && (optim_keys[i].kinds >> kind & 1u)) key = &optim_keys[i];
        if (!key) return cdl_fail("optimizer spec '%s': unknown key '%s' for %s", spec, kv, buf);
        double v = 1;
        if (val && cdl_parse_f64(val, &v) < 0)
            return cdl_fail("optimizer spec '%s': bad number '%s' for %s", spec, val, kv);
        if (!val && !key->flag)
            return cdl_fail("optimizer spec '%s': '%s' needs a value (key=value)", spec, kv);
        if (key->flag) *(int *)((char *)&c + key->off) = v != 0;
        else *(double *)((char *)&c + key->off) = v;
    }
    if (c.lr < 0) return cdl_fail("optimizer spec '%s': lr must be >= 0", spec);
    if (c.weight_decay < 0) return cdl_fail("optimizer spec '%s': weight_decay must be >= 0", spec);
    if (c.momentum < 0) return cdl_fail("optimizer spec '%s': momentum must be >= 0", spec);
    if (c.nesterov && c.momentum <= 0)
        return cdl_fail("optimizer spec '%s': nesterov needs momentum > 0", spec);
    if (c.beta1 < 0 || c.beta1 >= 1 || c.beta2 < 0 || c.beta2 >= 1)
        return cdl_fail("optimizer spec '%s': betas must be in [0, 1)", spec);
    if (c.eps < 0) return cdl_fail("optimizer spec '%s': eps must be >= 0", spec);
    if (c.alpha < 0 || c.alpha > 1) return cdl_fail("optimizer spec '%s': alpha must be in [0, 1]", spec);
    if (c.lr_decay < 0) return cdl_fail("optimizer spec '%s': lr_decay must be >= 0", spec);
    if (c.initial_accumulator_value < 0)
        return cdl_fail("optimizer spec '%s': initial_accumulator_value must be >= 0", spec);
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
    if ((unsigned)cfg->kind > CDL_OPT_ADAGRAD)
        return cdl_fail("cdl_optim_init: unknown optimizer kind %d", (int)cfg->kind);
    if (cfg->nesterov && cfg->momentum <= 0)
        return cdl_fail("cdl_optim_init: nesterov needs momentum > 0");
    o->cfg = *cfg;
    o->model = m;
    switch (cfg->kind) {
    case CDL_OPT_SGD:
        if (cfg->momentum != 0) o->slot_name[o->n_slots++] = "sgd.momentum";
        break;
    case CDL_OPT_ADAM:
    case CDL_OPT_ADAMW:
        o->slot_name[o->n_slots++] = "adam.m";
        o->slot_name[o->n_slots++] = "adam.v";
        break;
    case CDL_OPT_RMSPROP:
        o->slot_name[o->n_slots++] = "rmsprop.square_avg";
        if (cfg->momentum > 0) o->slot_name[o->n_slots++] = "rmsprop.momentum_buffer";
        if (cfg->centered) o->slot_name[o->n_slots++] = "rmsprop.grad_avg";
        break;
    case CDL_OPT_ADAGRAD:
        o->slot_name[o->n_slots++] = "adagrad.sum";
        break;
    }
    for (int s = 0; s < o->n_slots; s++) {
        o->slot[s] = cdl_alloc(m->train_count * (size_t)m->real_size);
        if (!o->slot[s]) {
            cdl_optim_free(o);
            return cdl_fail("cdl_optim_init: out of memory for %zu optimizer state values",
                            m->train_count);
        }
    }
    if (cfg->kind == CDL_OPT_ADAGRAD && cfg->initial_accumulator_value != 0) {
        for (size_t i = 0; i < m->train_count; i++) {
            if (m->real_size == 8) ((double *)o->slot[0])[i] = cfg->initial_accumulator_value;
            else ((float *)o->slot[0])[i] = (float)cfg->initial_accumulator_value;
        }
    }
    return 0;
}

void cdl_optim_free(cdl_optim *o) {
    if (!o) return;
    free(o->pset);
    o->pset = NULL;
    for (int s = 0; s < CDL_OPTIM_SLOTS; s++) {
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

/* Adam also notes whether a gradient value it reads is Inf or NaN (g - g is NaN
 * exactly then), so that the trainer's check of every step needs no pass of its own
 * over the gradient slab (cdl_optim_step_count).  An OR of the comparisons in lanes
 * of the element's width (U) keeps the loop's vectors as they were (a size_t count
 * widened every float lane: 10% slower). */
#define OPTIM_ADAM(T, U, SQRT)                                                \
    static size_t adam_##T(T *restrict p, const T *restrict g, T *restrict m, \
                           T *restrict v, size_t n, T decay, T wd, T b1, T b2, \
                           T step, T inv_bc2s, T eps) {                       \
        U bad = 0;                                                            \
        for (size_t i = 0; i < n; i++) {                                      \
            T gi = g[i], z = gi - gi;                                         \
            bad |= (U)(z != z);                                               \
            T pi = p[i] * decay;                                              \
            T d = gi + wd * pi;                                               \
            T mi = b1 * m[i] + (1 - b1) * d;                                  \
            T vi = b2 * v[i] + (1 - b2) * d * d;                              \
            m[i] = mi;                                                        \
            v[i] = vi;                                                        \
            p[i] = pi - step * mi / (SQRT(vi) * inv_bc2s + eps);              \
        }                                                                     \
        return (size_t)bad;                                                   \
    }

/* RMSprop: ga (centered) and buf (momentum) may be NULL. */
#define OPTIM_RMSPROP(T, SQRT)                                                \
    static void rmsprop_##T(T *restrict p, const T *restrict g, T *restrict sq, \
                            T *restrict buf, T *restrict ga, size_t n, T lr,  \
                            T wd, T alpha, T eps, T mu) {                     \
        for (size_t i = 0; i < n; i++) {                                      \
            T d = g[i] + wd * p[i];                                           \
            T s = alpha * sq[i] + (1 - alpha) * d * d;                        \
            sq[i] = s;                                                        \
            if (ga) {                                                         \
                T a = alpha * ga[i] + (1 - alpha) * d;                        \
                ga[i] = a;                                                    \
                s -= a * a;                                                   \
            }                                                                 \
            T u = d / (SQRT(s) + eps);                                        \
            if (buf) {                                                        \
                u += mu * buf[i];                                             \
                buf[i] = u;                                                   \
            }                                                                 \
            p[i] -= lr * u;                                                   \
        }                                                                     \
    }

#define OPTIM_ADAGRAD(T, SQRT)                                                \
    static void adagrad_##T(T *restrict p, const T *restrict g, T *restrict sum, \
                            size_t n, T clr, T wd, T eps) {                   \
        for (size_t i = 0; i < n; i++) {                                      \
            T d = g[i] + wd * p[i];                                           \
            T s = sum[i] + d * d;                                             \
            sum[i] = s;                                                       \
            p[i] -= clr * d / (SQRT(s) + eps);                                \
        }                                                                     \
    }

OPTIM_SGD(float)
OPTIM_SGD(double)
OPTIM_RMSPROP(float, sqrtf)
OPTIM_RMSPROP(double, sqrt)
OPTIM_ADAGRAD(float, sqrtf)
OPTIM_ADAGRAD(double, sqrt)
OPTIM_ADAM(float, uint32_t, sqrtf)
OPTIM_ADAM(double, uint64_t, sqrt)

/* slot k at element offset off (NULL when absent). */
static void *slot_at(const cdl_optim *o, int k, size_t off) {
    return o->slot[k] ? (char *)o->slot[k] + off * (size_t)o->model->real_size : NULL;
}

/* The update of the n trainable reals at element offset off with learning rate lr and
 * weight decay wd (o->t already advanced).  Returns 1 when Adam or AdamW met a
 * non-finite gradient value, else 0 (the others do not look). */
static size_t optim_range(cdl_optim *o, cdl_net *net, size_t off, size_t n, double lr, double wd) {
    const cdl_optim_cfg *c = &o->cfg;
    int f64 = o->model->real_size == 8;
    size_t rs = (size_t)o->model->real_size;
    void *p = (char *)net->param + off * rs, *g = (char *)net->grad + off * rs;
    if (c->kind == CDL_OPT_SGD) {
        void *buf = o->n_slots ? slot_at(o, 0, off) : NULL;
        if (f64) sgd_double(p, g, buf, n, lr, wd, c->momentum, c->nesterov);
        else sgd_float(p, g, buf, n, (float)lr, (float)wd, (float)c->momentum, c->nesterov);
        return 0;
    }
    if (c->kind == CDL_OPT_RMSPROP) {
        int k = 1;
        void *buf = c->momentum > 0 ? slot_at(o, k++, off) : NULL, *ga = c->centered ? slot_at(o, k, off) : NULL;
        if (f64) rmsprop_double(p, g, slot_at(o, 0, off), buf, ga, n, lr, wd, c->alpha, c->eps, c->momentum);
        else
            rmsprop_float(p, g, slot_at(o, 0, off), buf, ga, n, (float)lr, (float)wd, (float)c->alpha,
                          (float)c->eps, (float)c->momentum);
        return 0;
    }
    if (c->kind == CDL_OPT_ADAGRAD) {
        double clr = lr / (1 + (double)(o->t - 1) * c->lr_decay);
        if (f64) adagrad_double(p, g, slot_at(o, 0, off), n, clr, wd, c->eps);
        else adagrad_float(p, g, slot_at(o, 0, off), n, (float)clr, (float)wd, (float)c->eps);
        return 0;
    }
    double t = (double)o->t;
    double bc1 = 1 - pow(c->beta1, t), bc2s = sqrt(1 - pow(c->beta2, t));
    double step = lr / bc1;
    double decay = 1;
    if (c->kind == CDL_OPT_ADAMW) {
        decay = 1 - lr * wd;
        wd = 0;
    }
    /* sqrt(v) / bc2s as sqrt(v) * (1 / bc2s): the loop is bound by its vector square
     * root and divisions (Adam was 9% of the MLP step), and this drops one division per
     * element; the result differs from PyTorch's division by at most an ulp of the
     * denominator. */
    if (f64)
        return adam_double(p, g, slot_at(o, 0, off), slot_at(o, 1, off), n, decay, wd, c->beta1, c->beta2, step,
                           1 / bc2s, c->eps);
    return adam_float(p, g, slot_at(o, 0, off), slot_at(o, 1, off), n, (float)decay, (float)wd, (float)c->beta1,
                      (float)c->beta2, (float)step, (float)(1 / bc2s), (float)c->eps);
}

/* optim_range over the pool: every element is updated alone (no sums; -std=c11 keeps
 * gcc from contracting into FMAs, so a vector body and a scalar tail round alike), so
 * any cut gives the same bits and ranges start on 16-element boundaries.  A range
 * costs ~6 elements of memory traffic per parameter (parameter, gradient and state
 * read, parameter and state written): from ~22K parameters two threads share it. */
typedef struct OptimJob {
    cdl_optim *o;
    cdl_net *net;
    size_t off;
    double lr, wd;
    atomic_size_t bad;           /* ranges that met a non-finite gradient value (Adam, AdamW) */
} OptimJob;

static void optim_part(void *ctx, int64_t i0, int64_t i1) {
    OptimJob *J = ctx;
    size_t bad = i1 > i0 ? optim_range(J->o, J->net, J->off + (size_t)i0, (size_t)(i1 - i0), J->lr, J->wd) : 0;
    if (bad) atomic_fetch_add(&J->bad, bad);
}

static size_t optim_par(cdl_optim *o, cdl_net *net, size_t off, size_t n, double lr, double wd) {
    OptimJob J = {o, net, off, lr, wd, 0};
    cdl_parallel_ranges((int64_t)n, 6, 16, optim_part, &J);
    return atomic_load(&J.bad);
}

/* One update of net's trainable parameters with learning rate lr (see the file
 * comment for the formulas).  Advances o->t.  Without parameter groups one pass over
 * the whole trainable slab; with them one per tensor, with its lr and weight decay,
 * skipping the frozen ones (their parameters and optimizer state stay as they are). */
int64_t cdl_optim_step_count(cdl_optim *o, cdl_net *net, double lr) {
    const cdl_model *m = o->model;
    o->t++;
    if (!o->pset) return (int64_t)optim_par(o, net, 0, m->train_count, lr, o->cfg.weight_decay);
    size_t bad = 0;
    for (int i = 0; i < m->n_params; i++) {
        const cdl_tensor *t = &m->params[i];
        const cdl_optim_pset *ps = &o->pset[i];
        if ((t->flags & CDL_T_STATE) || ps->frozen) continue;
        bad += optim_par(o, net, t->offset, (size_t)cdl_tensor_numel(t, m->batch), lr * ps->lr_scale,
                         ps->weight_decay);
    }
    return (int64_t)bad;
}

void cdl_optim_step(cdl_optim *o, cdl_net *net, double lr) { (void)cdl_optim_step_count(o, net, lr); }

int cdl_optim_counts_nonfinite(const cdl_optim *o) {
    return o->cfg.kind == CDL_OPT_ADAM || o->cfg.kind == CDL_OPT_ADAMW;
}

/* ---------------------------------------------------------------- schedules, clipping */

/* Parse a schedule spec (see cdl.h) into s; warmup, steps_per_epoch and total_steps
 * are left 0 except for "warmup:steps=N".  s is written only on success. */
int cdl_sched_parse(cdl_sched *s, const char *spec) {
    char buf[128], *args = NULL;
    if (spec_split("schedule", spec, buf, sizeof buf, &args) < 0) return -1;
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
        else if (c.kind == CDL_SCHED_COSINE && strcmp(kv, "steps") == 0 && whole) c.span_steps = (int64_t)v;
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
        double span = (double)((s->span_steps > 0 ? s->span_steps : s->total_steps) - s->warmup);
        double pos = st - (double)s->warmup;
        if (span <= 0 || pos >= span) return s->min_lr;
        return s->min_lr + (base_lr - s->min_lr) * 0.5 * (1 + cos(3.14159265358979323846 * pos / span));
    }
    case CDL_SCHED_CONST:
    default: return base_lr;
    }
}

/* Sum of squares of g[0..n) in double, in GN_LANES running sums added at the end.  One
 * running sum is a chain of dependent adds (about 4 cycles an element: 0.25 ms a step
 * for the Fashion-MNIST MLP's 235k parameters, a third of its training step, since the
 * trainer takes the norm every step to catch non-finite gradients); independent sums
 * vectorise.  NaN and Inf propagate to the result. */
#define GN_LANES 16
#define GN_SUMSQ(T)                                                                     \
    static double sumsq_##T(const T *g, size_t n) {                                     \
        double acc[GN_LANES] = {0};                                                     \
        size_t i = 0;                                                                   \
        for (; i + GN_LANES <= n; i += GN_LANES)                                        \
            for (int k = 0; k < GN_LANES; k++) acc[k] += (double)g[i + k] * (double)g[i + k]; \
        for (; i < n; i++) acc[i % GN_LANES] += (double)g[i] * (double)g[i];            \
        double s = 0;                                                                   \
        for (int k = 0; k < GN_LANES; k++) s += acc[k];                                 \
        return s;                                                                       \
    }
GN_SUMSQ(float)
GN_SUMSQ(double)

double cdl_grad_norm(const cdl_net *net) {
    size_t n = net->model->train_count;
    return sqrt(net->model->real_size == 8 ? sumsq_double(net->grad, n) : sumsq_float(net->grad, n));
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
