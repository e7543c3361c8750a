/* adversarial.c -- adversarial examples: FGSM / FGM and PGD under the L-infinity or
 * the L2 norm, on a data input or on a perturbation input (`e = perturb(...)`).
 *
 * The attacks need only the model's compiled input-gradient entry point,
 * model->input_grad(net, nb): the eval-mode loss and d loss / d input in
 * net->in_grad[i], with no parameter gradients.  An attack replaces the first `rows`
 * rows of one real input, net->in[xi], by adversarial examples:
 *
 *   x0 = the clean rows (kept in the scratch buffer)
 *   x  = rand ? P(x0 + U(-eps, eps)) : x0                  random start
 *   repeat steps times:  x = P(x + alpha * sign(d loss / d x))
 *
 * where P projects onto the intersection of the eps-ball around x0 and the valid range
 * [min, max]: x_i is clamped to [max(x0_i - eps, min), min(x0_i + eps, max)].  FGSM is
 * the one-step case (alpha = eps, no random start); PGD is Madry et al.'s.  sign(0) and
 * sign(NaN) are 0, so a vanishing or broken gradient leaves an element where it is and
 * never puts a NaN into x.  Under L2 the step is alpha * g / ||g||_2 and P scales x - x0
 * back onto the ball, both per example (a zero or non-finite norm: no step), then clamps
 * into [min, max].
 *
 * On a perturbation input (the hidden delta of `e = perturb(v)`, zero while nobody
 * attacks) x0 = 0 and the attack is in the space of e: Miyato et al.'s embedding-space
 * adversarial training (cdl_adv_train_grad) adds the loss at e + r_adv to the clean
 * loss.
 *
 * The state (cdl_adv) holds one scratch buffer of the compiled batch, made once by
 * cdl_adv_new: cdl_adv_perturb allocates nothing.  Randomness (the random start) is a
 * pure function of the caller's key, so the trainer's resume stays exact.
 */
#include "adversarial_text.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- specs */

/* A number for spec key `key`: finite, >= lo; -1 and a message otherwise. */
static int adv_num(const char *spec, const char *key, const char *v, double lo, double *out) {
    double x;
    if (cdl_parse_f64(v, &x) < 0 || x < lo)
        return cdl_fail("attack '%s': %s=%s is not a number >= %g", spec, key, v, lo);
    *out = x;
    return 0;
}

const char *adv_spec_open(adv_spec *s, const char *spec) {
    s->spec = spec;
    s->rest = s->save = NULL;
    s->started = s->failed = 0;
    if (strlen(spec) >= sizeof s->buf) {
        cdl_fail("attack '%.40s...': spec too long", spec);
        return NULL;
    }
    memcpy(s->buf, spec, strlen(spec) + 1);
    char *colon = strchr(s->buf, ':');
    if (colon) *colon = 0, s->rest = colon + 1;
    return s->buf;
}

int adv_spec_next(adv_spec *s, char **key, char **val) {
    if (!s->rest) return 0;                                  /* no ':' */
    char *kv = strtok_r(s->started ? NULL : s->rest, ",", &s->save);
    s->started = 1;
    if (!kv) return 0;
    char *v = strchr(kv, '=');
    if (!v || !v[1]) {
        s->failed = 1;
        cdl_fail("attack '%s': '%s' is not key=value", s->spec, kv);
        return 0;
    }
    *v++ = 0;
    *key = kv;
    *val = v;
    return 1;
}

/* Parse "fgsm[:k=v,...]" / "pgd[:k=v,...]" (see cdl.h).  Defaults that depend on other
 * keys (alpha, rand) are filled in after every key is read, so order does not matter. */
int cdl_attack_parse(cdl_attack *a, const char *spec) {
    memset(a, 0, sizeof *a);
    if (!spec) return cdl_fail("attack: no spec");
    if (!strncmp(spec, "hotflip", 7) && (!spec[7] || spec[7] == ':')) return cdl_hotflip_parse(a, spec);
    adv_spec sp;
    const char *buf = adv_spec_open(&sp, spec);
    if (!buf) return -1;
    if (!strcmp(buf, "fgsm")) a->kind = CDL_ATTACK_FGSM;
    else if (!strcmp(buf, "fgm")) a->kind = CDL_ATTACK_FGSM, a->norm = 2, a->given |= CDL_ATK_NORM;
    else if (!strcmp(buf, "pgd")) a->kind = CDL_ATTACK_PGD;
    else return cdl_fail("attack '%s': unknown attack '%s' (fgsm, fgm, pgd or hotflip)", spec, buf);
    double alpha = -1, rnd = -1, steps = -1, clip = 1, v = 0;
    a->eps = 0.1;
    a->lo = 0;
    a->hi = 1;
    a->ratio = 0.5;
    for (char *kv = NULL, *val = NULL; adv_spec_next(&sp, &kv, &val);) {
        if (!strcmp(kv, "eps") || !strcmp(kv, "epsilon")) {
            if (adv_num(spec, kv, val, 0, &a->eps) < 0) return -1;
        } else if (!strcmp(kv, "alpha")) {
            if (adv_num(spec, kv, val, 0, &alpha) < 0) return -1;
        } else if (!strcmp(kv, "steps")) {
            if (adv_num(spec, kv, val, 1, &steps) < 0) return -1;
            if (steps != floor(steps) || steps > 100000)
                return cdl_fail("attack '%s': steps=%s is not an integer in [1, 100000]", spec, val);
        } else if (!strcmp(kv, "rand")) {
            if (adv_num(spec, kv, val, 0, &rnd) < 0) return -1;
            if (rnd != 0 && rnd != 1) return cdl_fail("attack '%s': rand=%s is not 0 or 1", spec, val);
        } else if (!strcmp(kv, "min") || !strcmp(kv, "max")) {
            if (adv_num(spec, kv, val, -1e300, kv[1] == 'i' ? &a->lo : &a->hi) < 0) return -1;
            a->given |= CDL_ATK_RANGE;
        } else if (!strcmp(kv, "clip")) {
            if (adv_num(spec, kv, val, 0, &clip) < 0) return -1;
            if (clip != 0 && clip != 1) return cdl_fail("attack '%s': clip=%s is not 0 or 1", spec, val);
            a->given |= CDL_ATK_RANGE;
        } else if (!strcmp(kv, "ratio")) {
            if (adv_num(spec, kv, val, 0, &v) < 0) return -1;
            if (v > 1) return cdl_fail("attack '%s': ratio=%s is not in [0, 1]", spec, val);
            a->ratio = v;
            a->given |= CDL_ATK_RATIO;
        } else if (!strcmp(kv, "norm")) {
            if (strcmp(val, "inf") && strcmp(val, "2")) return cdl_fail("attack '%s': norm=%s is not inf or 2", spec, val);
            a->norm = val[0] == '2' ? 2 : 0;
            a->given |= CDL_ATK_NORM;
        } else if (!strcmp(kv, "on")) {
            if (strlen(val) >= sizeof a->on) return cdl_fail("attack '%s': on=%s: name too long", spec, val);
            memcpy(a->on, val, strlen(val) + 1);
        } else {
            return cdl_fail("attack '%s': unknown key '%s' (eps, alpha, steps, rand, min, max, clip, "
                            "ratio, norm, on)", spec, kv);
        }
    }
    if (sp.failed) return -1;
    if (a->kind == CDL_ATTACK_FGSM && steps > 1)
        return cdl_fail("attack '%s': %s takes one step (use pgd:steps=N)", spec, buf);
    a->steps = steps > 0 ? (int)steps : a->kind == CDL_ATTACK_PGD ? 7 : 1;
    a->rand_start = rnd >= 0 ? (int)rnd : a->kind == CDL_ATTACK_PGD;
    if (alpha >= 0) a->alpha = alpha;
    else if (a->kind == CDL_ATTACK_PGD) a->alpha = 2.5 * a->eps / a->steps;   /* Madry et al. */
    else a->alpha = a->rand_start ? 1.25 * a->eps : a->eps;                    /* Wong et al. */
    if (!clip) {
        a->lo = -INFINITY;
        a->hi = INFINITY;
    }
    if (!(a->lo <= a->hi)) return cdl_fail("attack '%s': min %g > max %g", spec, a->lo, a->hi);
    return 0;
}

/* The canonical spec of a, every key written out (parses back to the same values). */
void cdl_attack_str(const cdl_attack *a, char *buf, size_t n) {
    if (a->kind == CDL_ATTACK_HOTFLIP) {
        cdl_hotflip_str(a, buf, n);
        return;
    }
    const char *name = a->kind == CDL_ATTACK_FGSM ? (a->norm == 2 ? "fgm" : "fgsm") : "pgd";
    if (a->kind != CDL_ATTACK_FGSM && a->kind != CDL_ATTACK_PGD) {
        snprintf(buf, n, "none");
        return;
    }
    size_t k = (size_t)snprintf(buf, n, "%s:eps=%g,alpha=%g,steps=%d,rand=%d", name, a->eps, a->alpha,
                                a->steps, a->rand_start);
    if (k >= n) return;
    if (isfinite(a->lo) && isfinite(a->hi)) k += (size_t)snprintf(buf + k, n - k, ",min=%g,max=%g", a->lo, a->hi);
    else k += (size_t)snprintf(buf + k, n - k, ",clip=0");
    if (k < n) k += (size_t)snprintf(buf + k, n - k, ",ratio=%g,norm=%s", a->ratio, a->norm == 2 ? "2" : "inf");
    if (k < n && a->on[0]) snprintf(buf + k, n - k, ",on=%s", a->on);
}

/* ---------------------------------------------------------------- the attack */

struct cdl_adv {
    cdl_attack cfg;               /* as resolved for the target */
    const cdl_model *model;
    int xi;                       /* the input attacked */
    int delta;                    /* it is a perturbation input */
    int64_t feat;                 /* reals per example */
    void *x0;                     /* batch * feat reals: the clean rows */
    cdl_hotflip *text;            /* hotflip (adversarial_text.c), else NULL */
    void *acc;                    /* delta: train_count reals, the clean gradient */
};

cdl_adv *cdl_adv_new_text(const cdl_model *m, const cdl_attack *a, const cdl_hotflip_io *io) {
    cdl_hotflip *h = cdl_hotflip_new(m, a, io);
    cdl_adv *s = h ? cdl_alloc(sizeof *s) : NULL;
    if (!s) {
        if (h) cdl_fail("cdl_adv_new_text: out of memory");
        cdl_hotflip_free(h);
        return NULL;
    }
    s->cfg = *a;
    s->model = m;
    s->xi = io->ids;
    s->text = h;
    return s;
}

const cdl_hotflip *cdl_adv_text(const cdl_adv *s) { return s ? s->text : NULL; }

/* cdl.h */
int cdl_adv_target(const cdl_model *m, const cdl_attack *a, int xi) {
    const char *nm = m->name ? m->name : "?";
    if (a->on[0]) {
        char dn[80];
        snprintf(dn, sizeof dn, "%s.delta", a->on);
        xi = cdl_model_find_input(m, a->on);
        if (xi < 0) xi = cdl_model_find_input(m, dn);
        if (xi < 0) return cdl_fail("attack: model %s has no input '%s' or '%s' (on=)", nm, a->on, dn);
    } else {
        for (int i = 0; i < m->n_inputs; i++)
            if (m->inputs[i].flags & CDL_T_PERTURB) {
                xi = i;
                break;
            }
    }
    if (xi < 0 || xi >= m->n_inputs)
        return cdl_fail("model %s has no real input to attack (mark an intermediate with perturb(...), or "
                        "feed a real input)", nm);
    const cdl_tensor *t = &m->inputs[xi];
    if (t->dtype == CDL_I32)
        return cdl_fail("model %s: input %s holds integers (ids): attack their embedding, e = perturb(embedding(...))",
                        nm, t->name);
    if (!(t->flags & CDL_T_BATCHED))
        return cdl_fail("model %s: input %s has no batch dimension to attack row by row", nm, t->name);
    return xi;
}

/* The settings for a perturbation input: the defaults the spec left open become L2,
 * unclipped, every example. */
static void adv_resolve(cdl_attack *c) {
    if (!(c->given & CDL_ATK_NORM)) c->norm = 2;
    if (!(c->given & CDL_ATK_RANGE)) c->lo = -INFINITY, c->hi = INFINITY;
    if (!(c->given & CDL_ATK_RATIO)) c->ratio = 1;
}

cdl_adv *cdl_adv_new(const cdl_model *m, int xi, const cdl_attack *a) {
    if (!m || !a) {
        cdl_fail("cdl_adv_new: NULL model or attack");
        return NULL;
    }
    const char *nm = m->name ? m->name : "?";
    if (a->kind != CDL_ATTACK_FGSM && a->kind != CDL_ATTACK_PGD) {
        cdl_fail("cdl_adv_new: model %s: no attack kind", nm);
        return NULL;
    }
    if (!(a->eps >= 0) || !(a->alpha >= 0) || a->steps < 1 || !(a->lo <= a->hi) || !(a->ratio >= 0 && a->ratio <= 1) ||
        (a->norm != 0 && a->norm != 2)) {
        cdl_fail("cdl_adv_new: model %s: bad attack settings (eps %g, alpha %g, steps %d, range [%g, %g], "
                 "ratio %g, norm %d)", nm, a->eps, a->alpha, a->steps, a->lo, a->hi, a->ratio, a->norm);
        return NULL;
    }
    if (!m->input_grad) {
        cdl_fail("model %s has no input-gradient entry point (input_grad): it has no loss to attack", nm);
        return NULL;
    }
    if (m->real_size != 4 && m->real_size != 8) {
        cdl_fail("cdl_adv_new: model %s: real_size %d", nm, m->real_size);
        return NULL;
    }
    if ((xi = cdl_adv_target(m, a, xi)) < 0) return NULL;
    cdl_adv *s = cdl_alloc(sizeof *s);
    if (!s) {
        cdl_fail("cdl_adv_new: out of memory");
        return NULL;
    }
    s->cfg = *a;
    s->model = m;
    s->xi = xi;
    s->delta = (m->inputs[xi].flags & CDL_T_PERTURB) != 0;
    if (s->delta) adv_resolve(&s->cfg);
    s->feat = cdl_tensor_numel(&m->inputs[xi], 1);
    if (!(s->x0 = cdl_alloc((size_t)(s->feat * m->batch) * (size_t)m->real_size + 1)) ||
        (s->delta && !(s->acc = cdl_alloc(m->train_count * (size_t)m->real_size + 1)))) {
        cdl_adv_free(s);
        cdl_fail("cdl_adv_new: out of memory for the %d x %lld scratch", m->batch, (long long)s->feat);
        return NULL;
    }
    return s;
}

void cdl_adv_free(cdl_adv *s) {
    if (!s) return;
    cdl_hotflip_free(s->text);
    cdl_free(s->x0);
    cdl_free(s->acc);
    cdl_free(s);
}

const cdl_attack *cdl_adv_attack(const cdl_adv *s) { return &s->cfg; }
int cdl_adv_input(const cdl_adv *s) { return s->xi; }
int cdl_adv_on_delta(const cdl_adv *s) { return s->delta; }

/* P: clamp v into [max(c - eps, lo), min(c + eps, hi)]; when that is empty (c itself
 * outside the range), into the range. */
static inline double adv_project(double v, double c, double eps, double lo, double hi) {
    double a = c - eps, b = c + eps;
    if (a < lo) a = lo;
    if (b > hi) b = hi;
    if (a > b) a = lo, b = hi;
    return v < a ? a : v > b ? b : v;
}

static inline double adv_clamp(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The loops of an attack over real type T (suffix S), on n = rows * feat reals: the
 * L2 projection of each row, the random start, and one gradient step (L-inf: the
 * signed gradient, element by element; L2: the row's gradient over its norm). */
#define ADV_DEFINE(T, S)                                                                       \
    static void adv_l2_project_##S(const cdl_attack *a, int64_t n, int64_t feat, const T *x0, T *x) { \
        for (int64_t r = 0; r < n; r += feat) {                                                \
            double d2 = 0;                                                                     \
            for (int64_t i = r; i < r + feat; i++) d2 += ((double)x[i] - x0[i]) * ((double)x[i] - x0[i]); \
            double sc = d2 > a->eps * a->eps ? a->eps / sqrt(d2) : 1;                          \
            for (int64_t i = r; i < r + feat; i++)                                             \
                x[i] = (T)adv_clamp((double)x0[i] + sc * ((double)x[i] - x0[i]), a->lo, a->hi); \
        }                                                                                      \
    }                                                                                          \
    static void adv_start_##S(const cdl_attack *a, int64_t n, int64_t feat, const T *x0, T *x, \
                              cdl_rng_key k, uint64_t base) {                                  \
        if (a->rand_start) {                                                                   \
            cdl_rand_##S(k, base, n, x);               /* U[0, 1) into x, then the ball */     \
            for (int64_t i = 0; i < n; i++)                                                    \
                x[i] = a->norm == 2 ? (T)(x0[i] + a->eps * (2 * (double)x[i] - 1))             \
                                    : (T)adv_project((double)x0[i] + a->eps * (2 * (double)x[i] - 1), \
                                                     (double)x0[i], a->eps, a->lo, a->hi);     \
            if (a->norm == 2) adv_l2_project_##S(a, n, feat, x0, x);                           \
        } else {                                                                               \
            for (int64_t i = 0; i < n; i++) x[i] = x0[i];                                      \
        }                                                                                      \
    }                                                                                          \
    static void adv_step_##S(const cdl_attack *a, int64_t n, int64_t feat, const T *x0, const T *g, T *x) { \
        if (a->norm == 2) {                                                                    \
            for (int64_t r = 0; r < n; r += feat) {                                            \
                double g2 = 0;                                                                 \
                for (int64_t i = r; i < r + feat; i++) g2 += (double)g[i] * g[i];              \
                if (!(g2 > 0) || !isfinite(g2)) continue;      /* no direction: stay */        \
                double sc = a->alpha / sqrt(g2);                                               \
                for (int64_t i = r; i < r + feat; i++) x[i] = (T)((double)x[i] + sc * g[i]);   \
            }                                                                                  \
            adv_l2_project_##S(a, n, feat, x0, x);                                             \
            return;                                                                            \
        }                                                                                      \
        for (int64_t i = 0; i < n; i++) {                                                      \
            double d = g[i] > 0 ? a->alpha : g[i] < 0 ? -a->alpha : 0;                         \
            x[i] = (T)adv_project((double)x[i] + d, (double)x0[i], a->eps, a->lo, a->hi);       \
        }                                                                                      \
    }
ADV_DEFINE(float, f32)
ADV_DEFINE(double, f64)

int cdl_adv_perturb(cdl_adv *s, cdl_net *net, int rows, cdl_rng_key key) {
    const cdl_model *m = s->model;
    if (!net || net->model != m)
        return cdl_fail("cdl_adv_perturb: the net is not an instance of model %s", m->name ? m->name : "?");
    if (s->text) return cdl_hotflip_perturb(s->text, net, rows);
    if (rows <= 0) return 0;
    if (rows > m->batch)
        return cdl_fail("cdl_adv_perturb: %d rows > model %s's compiled batch %d", rows, m->name, m->batch);
    if (!net->in_grad || !net->in_grad[s->xi])
        return cdl_fail("cdl_adv_perturb: model %s: input %s has no gradient buffer", m->name,
                        m->inputs[s->xi].name);
    const cdl_attack *a = &s->cfg;
    int64_t n = (int64_t)rows * s->feat;
    void *x = net->in[s->xi];
    const void *g = net->in_grad[s->xi];
    memcpy(s->x0, x, (size_t)n * (size_t)m->real_size);
    uint64_t base = (uint64_t)net->batch_row0 * (uint64_t)s->feat;   /* keyed by the global row */
    if (m->real_size == 8) adv_start_f64(a, n, s->feat, s->x0, x, key, base);
    else adv_start_f32(a, n, s->feat, s->x0, x, key, base);
    for (int it = 0; it < a->steps; it++) {
        m->input_grad(net, rows);
        if (m->real_size == 8) adv_step_f64(a, n, s->feat, s->x0, g, x);
        else adv_step_f32(a, n, s->feat, s->x0, g, x);
    }
    return 0;
}

void cdl_adv_reset(cdl_adv *s, cdl_net *net) {
    if (s && net && s->delta) memset(net->in[s->xi], 0, (size_t)(s->feat * s->model->batch) * (size_t)s->model->real_size);
}

/* cdl.h.  L(clean) and its gradient, kept aside; r_adv into the delta; L(clean + r_adv)
 * and its gradient; the sum of both (Miyato et al.'s objective with lambda 1). */
double cdl_adv_train_grad(cdl_adv *s, cdl_net *net, int rows, cdl_rng_key key) {
    const cdl_model *m = s->model;
    if (!s->delta) {
        cdl_fail("cdl_adv_train_grad: input %s of model %s is not a perturbation input", m->inputs[s->xi].name, m->name);
        return NAN;
    }
    cdl_adv_reset(s, net);
    double lc = m->grad(net, rows);
    size_t n = m->train_count;
    memcpy(s->acc, net->grad, n * (size_t)m->real_size);
    if (cdl_adv_perturb(s, net, rows, key) < 0) {
        cdl_adv_reset(s, net);
        return NAN;
    }
    double la = m->grad(net, rows);
    cdl_adv_reset(s, net);
    if (m->real_size == 8)
        for (size_t i = 0; i < n; i++) ((double *)net->grad)[i] += ((const double *)s->acc)[i];
    else
        for (size_t i = 0; i < n; i++) ((float *)net->grad)[i] += ((const float *)s->acc)[i];
    net->loss = lc + la;
    return lc + la;
}
