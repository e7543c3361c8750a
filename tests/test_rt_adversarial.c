/* test_rt_adversarial.c -- FGSM / PGD (adversarial.c) and the trainer's --adversarial
 * and eval --attack, driven through hand-written model descriptors.
 *
 * lin: x[B, 6] -> logits [s, -s], s = sum_f c_f x_f, loss = mean over rows of s.  Its
 *      input gradient is c_f / nb everywhere, so FGSM and PGD results are known in
 *      closed form.  No trainable parameters (c is a constant).
 * sm:  softmax regression W[2, F], b[2] on x[B, F] in [0, 1] (train, eval, input
 *      gradient), for training with --adversarial and for eval --attack on a synthetic
 *      CSV whose class is carried by one strongly separated ("robust") feature and many
 *      weakly separated ("brittle") ones: an eps = 0.1 attack defeats the brittle
 *      features, so adversarial training must learn to rely on the robust one.
 * lind: lin with a perturbation input (what `e = perturb(x)` compiles to) and a weight:
 *      s = w sum_f c_f (x_f + d_f), d = the delta e.delta; the L2 attacks on d and
 *      embedding-space training (cdl_adv_train_grad) have closed forms.
 */
#include "test_rt_util.h"

/* ---------------------------------------------------------------- lin */

#define LB 8
#define LF 6
static const double lin_c[LF] = {1, -2, 0, 0.5, -0.25, 3};

#define LIN_DEFINE(T, S)                                                                   \
    static double lin_run_##S(cdl_net *net, int nb, int want_dx) {                        \
        const T *x = net->in[0];                                                           \
        T *logit = net->act, *dx = net->in_grad[0];                                        \
        double loss = 0;                                                                   \
        for (int r = 0; r < nb; r++) {                                                     \
            double s = 0;                                                                  \
            for (int f = 0; f < LF; f++) s += lin_c[f] * (double)x[r * LF + f];            \
            logit[2 * r] = (T)s;                                                           \
            logit[2 * r + 1] = (T)-s;                                                      \
            loss += s;                                                                     \
            if (want_dx)                                                                   \
                for (int f = 0; f < LF; f++) dx[r * LF + f] = (T)(lin_c[f] / nb);          \
        }                                                                                  \
        net->out[0] = logit;                                                               \
        net->loss = loss / nb;                                                             \
        return net->loss;                                                                  \
    }                                                                                      \
    static void lin_fwd_##S(cdl_net *n, int nb) { lin_run_##S(n, nb, 0); }                 \
    static double lin_grad_##S(cdl_net *n, int nb) { return lin_run_##S(n, nb, 0); }       \
    static double lin_igrad_##S(cdl_net *n, int nb) { return lin_run_##S(n, nb, 1); }
LIN_DEFINE(float, f32)
LIN_DEFINE(double, f64)

static const cdl_tensor lin_inputs[] = {{"x", CDL_F32, 0, 2, {LB, LF}, CDL_T_BATCHED, "t:1:1"},
                                        {"y", CDL_I32, 0, 1, {LB}, CDL_T_BATCHED, "t:2:1"}};
static const cdl_tensor lin_outputs[] = {{"logits", CDL_F32, 0, 2, {LB, 2}, CDL_T_BATCHED, "t:3:1"}};
static void lin_init(cdl_net *n, uint64_t s) { (void)n, (void)s; }
static const cdl_model lin32 = {CDL_ABI, "lin", "t", 0x11, 4, LB, 0, NULL, 0, 0, 2, lin_inputs, 1, lin_outputs, 1,
                                sizeof(float) * LB * 2, 0, NULL, "", lin_init, lin_fwd_f32, lin_grad_f32,
                                lin_igrad_f32, NULL};
static const cdl_model lin64 = {CDL_ABI, "lin", "t", 0x11, 8, LB, 0, NULL, 0, 0, 2, lin_inputs, 1, lin_outputs, 1,
                                sizeof(double) * LB * 2, 0, NULL, "", lin_init, lin_fwd_f64, lin_grad_f64,
                                lin_igrad_f64, NULL};
/* The same without an input gradient (a model with no loss has none). */
static const cdl_model lin_nog = {CDL_ABI, "lin", "t", 0x11, 4, LB, 0, NULL, 0, 0, 2, lin_inputs, 1, lin_outputs, 1,
                                  sizeof(float) * LB * 2, 0, NULL, "", lin_init, lin_fwd_f32, lin_grad_f32,
                                  NULL, NULL};

/* ---------------------------------------------------------------- lind */

static double lind_run(cdl_net *net, int nb, int mode) {   /* 0 eval, 1 grad, 2 input grad */
    const float *x = net->in[0], *d = net->in[1], *w = net->param;
    float *logit = net->act, *dx = net->in_grad[0], *dd = net->in_grad[1], *dw = net->grad;
    double loss = 0, g = 0;
    for (int r = 0; r < nb; r++) {
        double s = 0;
        for (int f = 0; f < LF; f++) s += lin_c[f] * ((double)x[r * LF + f] + d[r * LF + f]);
        g += s;
        logit[2 * r] = (float)(w[0] * s);
        logit[2 * r + 1] = (float)(-w[0] * s);
        loss += w[0] * s;
        if (mode == 2)
            for (int f = 0; f < LF; f++) dx[r * LF + f] = dd[r * LF + f] = (float)(w[0] * lin_c[f] / nb);
    }
    if (mode == 1) dw[0] = (float)(g / nb);
    net->out[0] = logit;
    net->loss = loss / nb;
    return net->loss;
}
static void lind_init(cdl_net *n, uint64_t s) { (void)s, ((float *)n->param)[0] = 1; }
static void lind_fwd(cdl_net *n, int nb) { lind_run(n, nb, 0); }
static double lind_grad(cdl_net *n, int nb) { return lind_run(n, nb, 1); }
static double lind_igrad(cdl_net *n, int nb) { return lind_run(n, nb, 2); }
static const cdl_tensor lind_params[] = {{"w", CDL_F32, 0, 1, {1}, 0, "t:1:1"}};
static const cdl_tensor lind_inputs[] = {{"x", CDL_F32, 0, 2, {LB, LF}, CDL_T_BATCHED, "t:1:1"},
                                         {"e.delta", CDL_F32, 0, 2, {LB, LF}, CDL_T_BATCHED | CDL_T_PERTURB, "t:2:5"},
                                         {"y", CDL_I32, 0, 1, {LB}, CDL_T_BATCHED, "t:3:1"}};
static const cdl_model lind = {CDL_ABI, "lind", "t", 0x1D, 4, LB, 1, lind_params, 1, 1, 3, lind_inputs, 1, lin_outputs, 1,
                               sizeof(float) * LB * 2, 0, NULL, "optimizer=sgd:lr=0.01\nepochs=2\nworkers=0",
                               lind_init, lind_fwd, lind_grad, lind_igrad, NULL};
static double lin_cnorm(void) {
    double c2 = 0;
    for (int f = 0; f < LF; f++) c2 += lin_c[f] * lin_c[f];
    return sqrt(c2);
}

/* ---------------------------------------------------------------- sm */

#define SB 32
#define SF 21
static double sm_run(cdl_net *net, int nb, int mode) {   /* 0 eval, 1 grad, 2 input grad */
    const float *x = net->in[0], *W = net->param, *b = W + 2 * SF;
    const int32_t *y = net->in[1];
    float *logit = net->act, *dW = net->grad, *db = dW + 2 * SF, *dx = net->in_grad[0];
    double loss = 0;
    if (mode == 1) memset(dW, 0, sizeof(float) * (2 * SF + 2));
    for (int r = 0; r < nb; r++) {
        double l[2], p[2];
        for (int k = 0; k < 2; k++) {
            double a = b[k];
            for (int f = 0; f < SF; f++) a += (double)W[k * SF + f] * x[r * SF + f];
            l[k] = a;
            logit[2 * r + k] = (float)a;
        }
        double mx = fmax(l[0], l[1]), z = exp(l[0] - mx) + exp(l[1] - mx);
        for (int k = 0; k < 2; k++) p[k] = exp(l[k] - mx) / z;
        loss += log(z) + mx - l[y[r]];
        for (int k = 0; k < 2; k++) {
            double d = (p[k] - (k == y[r])) / nb;
            if (mode == 1) {
                db[k] += (float)d;
                for (int f = 0; f < SF; f++) dW[k * SF + f] += (float)(d * x[r * SF + f]);
            }
        }
        if (mode == 2)
            for (int f = 0; f < SF; f++)
                dx[r * SF + f] = (float)(((p[0] - (y[r] == 0)) * W[f] + (p[1] - (y[r] == 1)) * W[SF + f]) / nb);
    }
    net->out[0] = logit;
    net->loss = loss / nb;
    return net->loss;
}
static void sm_init(cdl_net *net, uint64_t seed) {
    cdl_rng_key k = {seed, 0, 1};
    cdl_init_f32(net->param, 2 * SF + 2, CDL_INIT_UNIFORM, -0.05, 0.05, SF, 2, k);
}
static void sm_fwd(cdl_net *n, int nb) { sm_run(n, nb, 0); }
static double sm_grad(cdl_net *n, int nb) { return sm_run(n, nb, 1); }
static double sm_igrad(cdl_net *n, int nb) { return sm_run(n, nb, 2); }
static const cdl_tensor sm_params[] = {{"fc.weight", CDL_F32, 0, 2, {2, SF}, 0, "t:1:1"},
                                       {"fc.bias", CDL_F32, 2 * SF, 1, {2}, 0, "t:1:1"}};
static const cdl_tensor sm_inputs[] = {{"x", CDL_F32, 0, 2, {SB, SF}, CDL_T_BATCHED, "t:2:1"},
                                       {"y", CDL_I32, 0, 1, {SB}, CDL_T_BATCHED, "t:3:1"}};
static const cdl_tensor sm_outputs[] = {{"logits", CDL_F32, 0, 2, {SB, 2}, CDL_T_BATCHED, "t:4:1"}};
static const cdl_model sm = {CDL_ABI, "sm", "t", 0x5A, 4, SB, 2, sm_params, 2 * SF + 2, 2 * SF + 2, 2, sm_inputs,
                             1, sm_outputs, 1, sizeof(float) * SB * 2, 0, NULL,
                             "optimizer=sgd:lr=0.5,momentum=0.9\nepochs=8\nworkers=0",
                             sm_init, sm_fwd, sm_grad, sm_igrad, NULL};

/* ---------------------------------------------------------------- helpers */

static char g_sm_csv[320], g_lin_csv[320];

/* sm data (after Tsipras et al.): 400 rows, label y = r % 2.  Feature 0 is robust but
 * only 90% right: 0.2 or 0.8 (-+ 0.05) by the label, flipped in 10% of the rows.
 * Features 1..20 are brittle but perfectly separating: 0.5 -+ 0.06 plus U(-0.05, 0.05)
 * noise, so an eps of 0.1 can move each across.  Standard training leans on the
 * brittle features; adversarial training must fall back on feature 0. */
static void write_sm_csv(const char *path) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    cdl_rng_key k = {5, 0, 0};
    for (int r = 0; r < 400; r++) {
        int y = r % 2;
        double u[SF + 1];
        cdl_rand_f64(k, (uint64_t)r * (SF + 1), SF + 1, u);
        int shown = u[SF] < 0.1 ? !y : y;
        fprintf(f, "%.5f", (shown ? 0.8 : 0.2) + 0.1 * (u[0] - 0.5));
        for (int j = 1; j < SF; j++) fprintf(f, ",%.5f", 0.5 + (y ? 0.06 : -0.06) + 0.1 * (u[j] - 0.5));
        fprintf(f, ",%d\n", y);
    }
    fclose(f);
}

/* lin data: 20 rows of 6 values in [0.3, 0.7] (no clipping at eps 0.1 with min/max
 * 0/1, nor at eps 0.2 in units normalized by 0.5, 0.5), labels 0/1. */
static void write_lin_csv(const char *path) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    cdl_rng_key k = {6, 0, 0};
    for (int r = 0; r < 20; r++) {
        double u[LF];
        cdl_rand_f64(k, (uint64_t)r * LF, LF, u);
        for (int j = 0; j < LF; j++) fprintf(f, "%.5f,", 0.3 + 0.4 * u[j]);
        fprintf(f, "%d\n", r % 2);
    }
    fclose(f);
}

/* A fixed batch for lin: values spread over [0, 1] so that some hit the range. */
static void lin_batch(cdl_net *net, int rows) {
    cdl_rng_key k = {42, 0, 0};
    double u[LB * LF];
    cdl_rand_f64(k, 0, rows * LF, u);
    for (int i = 0; i < rows * LF; i++) {
        if (net->model->real_size == 8) ((double *)net->in[0])[i] = u[i];
        else ((float *)net->in[0])[i] = (float)u[i];
    }
    for (int r = 0; r < rows; r++) ((int32_t *)net->in[1])[r] = r % 2;
}

static double xval(const cdl_net *net, const void *buf, int i) {
    return net->model->real_size == 8 ? ((const double *)buf)[i] : ((const float *)buf)[i];
}

/* ---------------------------------------------------------------- specs */

static void test_parse(void **st) {
    (void)st;
    cdl_attack a, b;
    assert_int_equal(cdl_attack_parse(&a, "fgsm"), 0);
    assert_int_equal(a.kind, CDL_ATTACK_FGSM);
    assert_true(a.eps == 0.1 && a.alpha == 0.1 && a.steps == 1 && a.rand_start == 0);
    assert_true(a.lo == 0 && a.hi == 1 && a.ratio == 0.5);
    assert_int_equal(cdl_attack_parse(&a, "fgsm:eps=0.2,rand=1"), 0);
    assert_true(a.rand_start == 1 && fabs(a.alpha - 0.25) < 1e-15);          /* 1.25 eps */
    assert_int_equal(cdl_attack_parse(&a, "pgd:eps=0.07"), 0);
    assert_int_equal(a.kind, CDL_ATTACK_PGD);
    assert_true(a.steps == 7 && a.rand_start == 1 && fabs(a.alpha - 0.025) < 1e-15);
    /* keys in any order; alpha stays as given */
    assert_int_equal(cdl_attack_parse(&a, "pgd:alpha=0.01,steps=40,eps=0.3,rand=0,ratio=1,min=-1,max=2"), 0);
    assert_true(a.eps == 0.3 && a.alpha == 0.01 && a.steps == 40 && a.rand_start == 0);
    assert_true(a.lo == -1 && a.hi == 2 && a.ratio == 1);
    assert_int_equal(cdl_attack_parse(&a, "pgd:epsilon=0.2,clip=0"), 0);
    assert_true(a.eps == 0.2 && isinf(a.lo) && a.lo < 0 && isinf(a.hi) && a.hi > 0);
    /* the canonical string parses back to the same settings */
    const char *specs[] = {"fgsm", "pgd:eps=0.3,alpha=0.01,steps=40,ratio=0.25", "pgd:clip=0,rand=0",
                           "fgsm:eps=0.05,rand=1,min=-0.5,max=0.5", "fgm:eps=2", "pgd:norm=2,on=emb,clip=0"};
    for (int i = 0; i < 6; i++) {
        char s[256];
        assert_int_equal(cdl_attack_parse(&a, specs[i]), 0);
        cdl_attack_str(&a, s, sizeof s);
        if (cdl_attack_parse(&b, s) < 0) fail_msg("%s -> %s: %s", specs[i], s, cdl_last_error());
        assert_true(a.kind == b.kind && a.eps == b.eps && fabs(a.alpha - b.alpha) < 1e-6 * a.alpha &&
                    a.steps == b.steps && a.rand_start == b.rand_start && a.lo == b.lo && a.hi == b.hi &&
                    a.ratio == b.ratio && a.norm == b.norm && !strcmp(a.on, b.on));
    }
    /* fgm is fgsm under L2 (Miyato et al.); norm and on; which keys were given */
    assert_int_equal(cdl_attack_parse(&a, "fgsm"), 0);
    assert_true(a.norm == 0 && a.given == 0 && a.on[0] == 0);
    assert_int_equal(cdl_attack_parse(&a, "fgm:eps=0.5"), 0);
    assert_true(a.kind == CDL_ATTACK_FGSM && a.norm == 2 && a.eps == 0.5 && a.alpha == 0.5 && a.given == CDL_ATK_NORM);
    assert_int_equal(cdl_attack_parse(&a, "pgd:norm=2,on=e,ratio=1,max=3"), 0);
    assert_true(a.norm == 2 && !strcmp(a.on, "e") && a.given == (CDL_ATK_NORM | CDL_ATK_RATIO | CDL_ATK_RANGE));
    assert_int_equal(cdl_attack_parse(&a, "pgd:norm=inf"), 0);
    assert_true(a.norm == 0 && a.given == CDL_ATK_NORM);
    /* errors name the problem */
    const struct { const char *spec, *msg; } bad[] = {
        {"bim", "unknown attack"}, {"fgsm:eps=-1", "eps"}, {"pgd:steps=0", "steps"},
        {"pgd:steps=2.5", "steps"}, {"fgsm:steps=3", "one step"}, {"pgd:foo=1", "unknown key 'foo'"},
        {"pgd:eps", "key=value"}, {"pgd:eps=", "key=value"}, {"fgsm:min=1,max=0", "min"},
        {"fgsm:ratio=2", "ratio"}, {"pgd:rand=2", "rand"}, {"fgsm:eps=nan", "eps"},
        {"fgsm:eps=1e999", "eps"}, {"pgd:clip=0.5", "clip"}, {"", "unknown attack"}, {"pgd:norm=1", "norm"},
        {"fgm:steps=2", "fgm takes one step"}, {"pgd:on=0123456789012345678901234567890123456789012345678901234567890123", "too long"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (cdl_attack_parse(&a, bad[i].spec) != -1) fail_msg("'%s' accepted", bad[i].spec);
        if (!strstr(cdl_last_error(), bad[i].msg)) fail_msg("'%s': %s", bad[i].spec, cdl_last_error());
    }
    assert_int_equal(cdl_attack_parse(&a, NULL), -1);
    assert_int_equal(cdl_attack_parse(&a, "pgd:steps=3,,eps=0.2"), 0);  /* empty items skipped */
    assert_true(a.steps == 3 && a.eps == 0.2);
    assert_int_equal(cdl_attack_parse(&a, "pgd:"), 0);
    char longspec[300];
    memset(longspec, 'x', sizeof longspec - 1);
    longspec[sizeof longspec - 1] = 0;
    memcpy(longspec, "pgd:", 4);
    assert_int_equal(cdl_attack_parse(&a, longspec), -1);
    assert_non_null(strstr(cdl_last_error(), "spec too long"));
    memcpy(longspec, "hotflip:", 8);
    assert_int_equal(cdl_attack_parse(&a, longspec), -1);
    assert_non_null(strstr(cdl_last_error(), "spec too long"));
}

/* ---------------------------------------------------------------- attacks */

/* FGSM: x_adv = clamp(x + eps sign(grad), 0, 1), exactly, in both precisions; rows
 * beyond `rows` untouched; zero gradient elements unmoved. */
static void test_fgsm_exact(void **st) {
    (void)st;
    const cdl_model *models[] = {&lin32, &lin64};
    for (int mi = 0; mi < 2; mi++) {
        const cdl_model *m = models[mi];
        cdl_net *net = cdl_net_new(m);
        assert_non_null(net);
        cdl_attack a;
        assert_int_equal(cdl_attack_parse(&a, "fgsm:eps=0.15"), 0);
        cdl_adv *adv = cdl_adv_new(m, 0, &a);
        assert_non_null(adv);
        lin_batch(net, LB);
        size_t rs = (size_t)m->real_size;
        char x0[LB * LF * 8];
        memcpy(x0, net->in[0], LB * LF * rs);
        const int rows = 5;
        cdl_rng_key key = {1, 2, 3};
        assert_int_equal(cdl_adv_perturb(adv, net, rows, key), 0);
        int clipped = 0;
        for (int r = 0; r < LB; r++)
            for (int f = 0; f < LF; f++) {
                int i = r * LF + f;
                double c = xval(net, x0, i), got = xval(net, net->in[0], i), want = c;
                if (r < rows) {
                    double s = lin_c[f] > 0 ? 1 : lin_c[f] < 0 ? -1 : 0;
                    want = fmin(fmax(c + 0.15 * s, 0.0), 1.0);
                    if (m->real_size == 4) want = (float)want;
                    clipped += want == 0 || want == 1;
                }
                if (got != want) fail_msg("real_size %d x[%d][%d]: %.9g -> %.9g, want %.9g", m->real_size, r, f, c, got, want);
            }
        assert_true(clipped > 0);                      /* the batch does reach the range */
        cdl_adv_free(adv);
        cdl_net_free(net);
    }
}

/* PGD: inside the eps-ball and the valid range after every call; with enough steps a
 * linear loss is driven to the corner x0 + eps sign(c) (clipped); zero-gradient
 * elements stay at their random start; the random start is a function of the key. */
static void test_pgd_ball(void **st) {
    (void)st;
    cdl_net *net = cdl_net_new(&lin32);
    assert_non_null(net);
    cdl_attack a;
    assert_int_equal(cdl_attack_parse(&a, "pgd:eps=0.1,alpha=0.03,steps=10,min=0.05,max=0.9"), 0);
    cdl_adv *adv = cdl_adv_new(&lin32, 0, &a);
    assert_non_null(adv);
    lin_batch(net, LB);
    float x0[LB * LF], x1[LB * LF];
    memcpy(x0, net->in[0], sizeof x0);
    cdl_rng_key key = {9, 0, 1};
    assert_int_equal(cdl_adv_perturb(adv, net, LB, key), 0);
    float *x = net->in[0];
    for (int i = 0; i < LB * LF; i++) {
        int f = i % LF;
        double c = x0[i];
        assert_true(fabs(x[i] - c) <= 0.1 + 1e-6);
        assert_true(x[i] >= 0.05f && x[i] <= 0.9f);
        if (lin_c[f] != 0) {
            double want = fmin(fmax(c + (lin_c[f] > 0 ? 0.1 : -0.1), 0.05), 0.9);
            if (fabs(x[i] - want) > 1e-6) fail_msg("x[%d] (c %g): %.9g, want %.9g", i, lin_c[f], x[i], want);
        }
    }
    memcpy(x1, x, sizeof x1);
    /* same key, same result; another key moves the zero-gradient column elsewhere */
    memcpy(net->in[0], x0, sizeof x0);
    assert_int_equal(cdl_adv_perturb(adv, net, LB, key), 0);
    assert_memory_equal(x, x1, sizeof x1);
    memcpy(net->in[0], x0, sizeof x0);
    key.step = 1;
    assert_int_equal(cdl_adv_perturb(adv, net, LB, key), 0);
    int moved = 0;
    for (int r = 0; r < LB; r++) moved += x[r * LF + 2] != x1[r * LF + 2];
    assert_true(moved >= LB / 2);
    /* random start only (alpha 0): a uniform point of the ball, not the centre */
    cdl_adv_free(adv);
    assert_int_equal(cdl_attack_parse(&a, "pgd:eps=0.1,alpha=0,steps=1,clip=0"), 0);
    assert_non_null(adv = cdl_adv_new(&lin32, 0, &a));
    memcpy(net->in[0], x0, sizeof x0);
    assert_int_equal(cdl_adv_perturb(adv, net, LB, key), 0);
    double mean_abs = 0;
    for (int i = 0; i < LB * LF; i++) {
        assert_true(fabs(x[i] - x0[i]) <= 0.1 + 1e-6);
        mean_abs += fabs(x[i] - x0[i]) / (LB * LF);
    }
    assert_true(mean_abs > 0.03 && mean_abs < 0.07);            /* E|U(-0.1, 0.1)| = 0.05 */
    cdl_adv_free(adv);
    cdl_net_free(net);
}

/* PGD against a nonlinear model (softmax regression with random weights) on random
 * inputs: every element inside the ball and the range, and the loss does not drop. */
static void test_pgd_nonlinear(void **st) {
    (void)st;
    cdl_net *net = cdl_net_new(&sm);
    assert_non_null(net);
    cdl_rng_key k = {3, 0, 0};
    cdl_init_f32(net->param, 2 * SF + 2, CDL_INIT_NORMAL, 0, 2, SF, 2, k);
    float x0[SB * SF];
    k.stream = 1;
    cdl_rand_f32(k, 0, SB * SF, x0);
    for (int r = 0; r < SB; r++) ((int32_t *)net->in[1])[r] = r % 2;
    memcpy(net->in[0], x0, sizeof x0);
    sm_fwd(net, SB);
    double clean = net->loss;
    cdl_attack a;
    assert_int_equal(cdl_attack_parse(&a, "pgd:eps=0.05,steps=5"), 0);
    cdl_adv *adv = cdl_adv_new(&sm, 0, &a);
    assert_non_null(adv);
    uint64_t before = cdl_alloc_count();
    for (int rep = 0; rep < 4; rep++) {
        memcpy(net->in[0], x0, sizeof x0);
        cdl_rng_key key = {1, (uint64_t)rep, 2};
        assert_int_equal(cdl_adv_perturb(adv, net, SB, key), 0);
        const float *x = net->in[0];
        for (int i = 0; i < SB * SF; i++) {
            assert_true(fabs((double)x[i] - x0[i]) <= 0.05 + 1e-6);
            assert_true(x[i] >= 0 && x[i] <= 1);
        }
        sm_fwd(net, SB);
        assert_true(net->loss > clean);
    }
    assert_true(cdl_alloc_count() == before);              /* no allocation per attack */
    cdl_adv_free(adv);
    cdl_net_free(net);
}

static void test_errors(void **st) {
    (void)st;
    cdl_attack a;
    assert_int_equal(cdl_attack_parse(&a, "fgsm"), 0);
    assert_null(cdl_adv_new(&lin_nog, 0, &a));
    assert_non_null(strstr(cdl_last_error(), "input_grad"));
    assert_null(cdl_adv_new(&lin32, 1, &a));                /* the labels */
    assert_null(cdl_adv_new(&lin32, 2, &a));
    assert_null(cdl_adv_new(&lin32, 0, NULL));
    cdl_attack z = a;
    z.kind = CDL_ATTACK_NONE;
    assert_null(cdl_adv_new(&lin32, 0, &z));
    z = a;
    z.eps = NAN;
    assert_null(cdl_adv_new(&lin32, 0, &z));
    cdl_adv *adv = cdl_adv_new(&lin32, 0, &a);
    assert_non_null(adv);
    cdl_net *net = cdl_net_new(&lin32), *other = cdl_net_new(&lin64);
    assert_int_equal(cdl_adv_perturb(adv, net, LB + 1, (cdl_rng_key){0, 0, 0}), -1);
    assert_non_null(strstr(cdl_last_error(), "compiled batch"));
    assert_int_equal(cdl_adv_perturb(adv, other, 1, (cdl_rng_key){0, 0, 0}), -1);
    assert_int_equal(cdl_adv_perturb(adv, net, 0, (cdl_rng_key){0, 0, 0}), 0);
    cdl_adv_free(adv);
    cdl_adv_free(NULL);
    cdl_net_free(net);
    cdl_net_free(other);
}

/* ---------------------------------------------------------------- perturbation inputs */

/* lind's examples: x = U[0, 1), labels r % 2, the delta zero. */
static void lind_batch(cdl_net *net) {
    cdl_rng_key k = {43, 0, 0};
    cdl_rand_f32(k, 0, LB * LF, net->in[0]);
    for (int r = 0; r < LB; r++) ((int32_t *)net->in[2])[r] = r % 2;
}

/* The attack goes to the perturbation input by default (on= picks another), in L2,
 * unclipped: FGM gives eps c / ||c|| per row exactly; PGD stays in the ball and ends
 * near that point; the delta is zero again after cdl_adv_reset; no allocation. */
static void test_l2_delta(void **st) {
    (void)st;
    cdl_net *net = cdl_net_new(&lind);
    assert_non_null(net);
    lind_init(net, 0);
    lind_batch(net);
    float x0[LB * LF];
    memcpy(x0, net->in[0], sizeof x0);
    cdl_attack a;
    assert_int_equal(cdl_attack_parse(&a, "fgm:eps=0.3"), 0);
    cdl_adv *adv = cdl_adv_new(&lind, 0, &a);
    assert_non_null(adv);
    assert_true(cdl_adv_input(adv) == 1 && cdl_adv_on_delta(adv));
    const cdl_attack *r = cdl_adv_attack(adv);
    assert_true(r->norm == 2 && isinf(r->lo) && isinf(r->hi) && r->ratio == 1);
    const float *d = net->in[1];
    const double cn = lin_cnorm();
    size_t before = cdl_alloc_count();
    assert_int_equal(cdl_adv_perturb(adv, net, 5, (cdl_rng_key){1, 2, 3}), 0);
    for (int i = 0; i < LB * LF; i++) {
        double want = i < 5 * LF ? 0.3 * lin_c[i % LF] / cn : 0;
        if (fabs(d[i] - want) > 1e-6) fail_msg("delta[%d] = %.9g, want %.9g", i, d[i], want);
    }
    assert_memory_equal(x0, net->in[0], sizeof x0);          /* the data input is untouched */
    cdl_adv_reset(adv, net);
    for (int i = 0; i < LB * LF; i++) assert_true(d[i] == 0);
    assert_true(cdl_alloc_count() == before);
    cdl_adv_free(adv);
    /* PGD under L2 from a random start: inside the ball, close to the best direction, a
     * function of the key */
    assert_int_equal(cdl_attack_parse(&a, "pgd:eps=0.3,steps=30,alpha=0.1"), 0);
    assert_non_null(adv = cdl_adv_new(&lind, 0, &a));
    before = cdl_alloc_count();
    float first[LB * LF];
    for (int rep = 0; rep < 2; rep++) {
        cdl_adv_reset(adv, net);
        assert_int_equal(cdl_adv_perturb(adv, net, LB, (cdl_rng_key){7, 1, 3}), 0);
        if (rep) assert_memory_equal(first, d, sizeof first);
        memcpy(first, d, sizeof first);
    }
    for (int row = 0; row < LB; row++) {
        double n2 = 0, dot = 0;
        for (int f = 0; f < LF; f++) n2 += (double)d[row * LF + f] * d[row * LF + f], dot += d[row * LF + f] * lin_c[f];
        if (sqrt(n2) > 0.3 * (1 + 1e-6) || dot / (sqrt(n2) * cn) < 0.99)
            fail_msg("row %d: ||d|| %.9g, cos %.6f", row, sqrt(n2), dot / (sqrt(n2) * cn));
    }
    assert_true(cdl_alloc_count() == before);
    cdl_adv_free(adv);
    /* on= names the target; a data input keeps the L-inf defaults */
    assert_int_equal(cdl_attack_parse(&a, "fgsm:eps=0.1,on=x"), 0);
    assert_non_null(adv = cdl_adv_new(&lind, 1, &a));
    assert_true(cdl_adv_input(adv) == 0 && !cdl_adv_on_delta(adv) && cdl_adv_attack(adv)->norm == 0);
    assert_true(cdl_adv_attack(adv)->lo == 0 && cdl_adv_attack(adv)->hi == 1);
    cdl_adv_free(adv);
    assert_int_equal(cdl_attack_parse(&a, "fgm:on=e"), 0);                  /* NAME for NAME.delta */
    assert_non_null(adv = cdl_adv_new(&lind, 0, &a));
    assert_int_equal(cdl_adv_input(adv), 1);
    cdl_adv_free(adv);
    assert_int_equal(cdl_attack_parse(&a, "fgm:on=nope"), 0);
    assert_null(cdl_adv_new(&lind, 0, &a));
    assert_non_null(strstr(cdl_last_error(), "no input 'nope'"));
    assert_int_equal(cdl_attack_parse(&a, "fgm:on=y"), 0);
    assert_null(cdl_adv_new(&lind, 0, &a));
    assert_non_null(strstr(cdl_last_error(), "perturb"));
    assert_int_equal(cdl_attack_parse(&a, "fgm"), 0);
    assert_null(cdl_adv_new(&lin32, -1, &a));                 /* no real input at all */
    assert_non_null(strstr(cdl_last_error(), "perturb(...)"));
    cdl_net_free(net);
}

/* Miyato et al.'s objective: L(clean) + L(clean + r_adv) and the sum of both
 * gradients, in closed form for both signs of w; the delta ends at zero; a data-input
 * attack refuses. */
static void test_train_grad_delta(void **st) {
    (void)st;
    cdl_net *net = cdl_net_new(&lind);
    assert_non_null(net);
    lind_batch(net);
    double S = 0, cn = lin_cnorm();
    for (int row = 0; row < LB; row++)
        for (int f = 0; f < LF; f++) S += lin_c[f] * ((const float *)net->in[0])[row * LF + f];
    S /= LB;
    cdl_attack a;
    assert_int_equal(cdl_attack_parse(&a, "fgm:eps=0.3"), 0);
    cdl_adv *adv = cdl_adv_new(&lind, 0, &a);
    assert_non_null(adv);
    size_t before = cdl_alloc_count();
    for (int sgn = -1; sgn <= 1; sgn += 2) {
        ((float *)net->param)[0] = (float)sgn;
        double L = cdl_adv_train_grad(adv, net, LB, (cdl_rng_key){1, 1, 1});
        double la = sgn * S + 0.3 * cn;                       /* r_adv = eps sign(w) c / ||c|| */
        if (fabs(L - (sgn * S + la)) > 1e-5 || net->loss != L) fail_msg("w %d: loss %.9g, want %.9g", sgn, L, sgn * S + la);
        double dw = ((const float *)net->grad)[0], want = S + (S + sgn * 0.3 * cn);
        if (fabs(dw - want) > 1e-5) fail_msg("w %d: dw %.9g, want %.9g", sgn, dw, want);
        for (int i = 0; i < LB * LF; i++) assert_true(((const float *)net->in[1])[i] == 0);
    }
    assert_true(cdl_alloc_count() == before);
    cdl_adv_free(adv);
    assert_int_equal(cdl_attack_parse(&a, "fgsm:on=x"), 0);
    assert_non_null(adv = cdl_adv_new(&lind, 0, &a));
    assert_true(isnan(cdl_adv_train_grad(adv, net, LB, (cdl_rng_key){1, 1, 1})));
    assert_non_null(strstr(cdl_last_error(), "not a perturbation input"));
    cdl_adv_free(adv);
    cdl_net_free(net);
}

/* The trainer on lind: eval --attack fgm reports the loss at the L2 point (not scaled
 * by --normalize: the delta is in the model's units), on=x the L-inf one; train
 * --adversarial fgm / pgd trains embedding-space, exactly on resume; ratio < 1 refused. */
static void test_trainer_delta(void **st) {
    (void)st;
    const char *ck = tpath("lind.ckpt"), *p = tpath("lp.ckpt"), *r = tpath("lr.ckpt");
    cdl_net *net = cdl_net_new(&lind);
    lind_init(net, 0);
    assert_int_equal(cdl_ckpt_save(ck, net, NULL, NULL), 0);
    cdl_net_free(net);
    double cn = lin_cnorm(), sum_c = 0;
    for (int f = 0; f < LF; f++) sum_c += fabs(lin_c[f]);
    const char *norm[] = {NULL, "--normalize", "0.5,0.5"};
    for (int k = 0; k < 2; k++) {
        int rc = run(&lind, "eval", "--data", g_lin_csv, "--load", ck, "--attack", "fgm:eps=0.2", "--json",
                     k ? norm[1] : NULL, norm[2], NULL);
        if (rc) fail_msg("rc %d: %s", rc, g_err);
        assert_non_null(strstr(g_out, "\"attack\":\"fgm:eps=0.2,alpha=0.2,steps=1,rand=0,clip=0,ratio=1,norm=2\""));
        if (fabs(json_num(g_out, "robust_loss") - json_num(g_out, "test_loss") - 0.2 * cn) > 1e-5) fail_msg("%s", g_out);
    }
    int rc = run(&lind, "eval", "--data", g_lin_csv, "--load", ck, "--attack", "fgsm:eps=0.1,on=x", "--json", NULL);
    if (rc) fail_msg("rc %d: %s", rc, g_err);
    assert_true(fabs(json_num(g_out, "robust_loss") - json_num(g_out, "test_loss") - 0.1 * sum_c) < 1e-5);
    rc = run(&lind, "train", "--data", g_lin_csv, "--save", p, "--adversarial", "pgd:eps=0.2,steps=2", "--json", NULL);
    if (rc) fail_msg("%s", g_err);
    assert_non_null(strstr(g_out, "\"adversarial\":\"pgd:eps=0.2,alpha=0.25,steps=2,rand=1,clip=0,ratio=1,norm=2\""));
    assert_true(isfinite(json_num(g_out, "train_loss")));
    rc = run(&lind, "train", "--data", g_lin_csv, "--save", r, "--adversarial", "pgd:eps=0.2,steps=2", "--epochs", "1",
             "--quiet", NULL);
    if (rc) fail_msg("%s", g_err);
    rc = run(&lind, "train", "--data", g_lin_csv, "--resume", r, "--save", r, "--adversarial", "pgd:eps=0.2,steps=2",
             "--quiet", NULL);
    if (rc) fail_msg("%s", g_err);
    cdl_net *na = cdl_net_new(&lind), *nb = cdl_net_new(&lind);
    assert_int_equal(cdl_ckpt_load(p, na, NULL, NULL), 0);
    assert_int_equal(cdl_ckpt_load(r, nb, NULL, NULL), 0);
    assert_memory_equal(na->param, nb->param, sizeof(float));
    assert_true(((float *)na->param)[0] != 1);                 /* it did train */
    cdl_net_free(na);
    cdl_net_free(nb);
    assert_int_equal(run(&lind, "train", "--data", g_lin_csv, "--adversarial", "fgm:ratio=0.5", NULL), 1);
    assert_non_null(strstr(g_err, "ratio must be 1"));
}

/* ---------------------------------------------------------------- trainer */

/* eval --attack: the JSON keys; robust loss = clean loss + eps sum |c| on lin (no
 * clipping), in data units also under --normalize; robust <= clean accuracy. */
static void test_eval_attack(void **st) {
    (void)st;
    const char *ck = tpath("lin.ckpt");
    cdl_net *net = cdl_net_new(&lin32);
    assert_int_equal(cdl_ckpt_save(ck, net, NULL, NULL), 0);
    cdl_net_free(net);
    double sum_c = 0;
    for (int f = 0; f < LF; f++) sum_c += fabs(lin_c[f]);
    int rc = run(&lin32, "eval", "--data", g_lin_csv, "--load", ck, "--attack", "fgsm:eps=0.1", "--json", NULL);
    if (rc) fail_msg("rc %d: %s", rc, g_err);
    const char *keys[] = {"test_loss", "test_accuracy", "clean_accuracy", "robust_accuracy", "robust_loss",
                          "examples", "seconds"};
    for (int i = 0; i < 7; i++)
        if (!isfinite(json_num(g_out, keys[i]))) fail_msg("no %s in %s", keys[i], g_out);
    assert_non_null(strstr(g_out, "\"attack\":\"fgsm:eps=0.1,"));
    assert_true(fabs(json_num(g_out, "robust_loss") - json_num(g_out, "test_loss") - 0.1 * sum_c) < 1e-5);
    assert_true(json_num(g_out, "clean_accuracy") == json_num(g_out, "test_accuracy"));
    assert_true(json_num(g_out, "robust_accuracy") <= json_num(g_out, "clean_accuracy"));
    /* normalized feed: (x - 0.5) / 0.5, so eps 0.1 in data units is 0.2 in the feed */
    rc = run(&lin32, "eval", "--data", g_lin_csv, "--load", ck, "--attack", "pgd:eps=0.1,steps=3", "--normalize",
             "0.5,0.5", "--json", NULL);
    if (rc) fail_msg("rc %d: %s", rc, g_err);
    assert_true(fabs(json_num(g_out, "robust_loss") - json_num(g_out, "test_loss") - 0.2 * sum_c) < 1e-5);
    /* plain text names the attack and both accuracies */
    assert_int_equal(run(&lin32, "eval", "--data", g_lin_csv, "--load", ck, "--attack", "pgd", NULL), 0);
    assert_non_null(strstr(g_out, "robust_acc"));
    assert_non_null(strstr(g_out, "pgd:eps=0.1,alpha=0.0357143,steps=7,rand=1"));
    /* without --attack: no robust keys */
    assert_int_equal(run(&lin32, "eval", "--data", g_lin_csv, "--load", ck, "--json", NULL), 0);
    assert_null(strstr(g_out, "robust"));
    assert_int_equal(run(&lin32, "eval", "--data", g_lin_csv, "--load", ck, "--attack", "none", "--json", NULL), 0);
    assert_null(strstr(g_out, "robust"));
    /* usage errors and a model with no input gradient */
    assert_int_equal(run(&lin32, "eval", "--data", g_lin_csv, "--load", ck, "--attack", "pgd:steps=0", NULL), 2);
    assert_non_null(strstr(g_err, "steps"));
    assert_int_equal(run(&lin32, "eval", "--load", ck, "--attack", NULL), 2);
    assert_int_equal(run(&lin_nog, "eval", "--data", g_lin_csv, "--load", ck, "--attack", "fgsm", NULL), 1);
    assert_non_null(strstr(g_err, "input_grad"));
    assert_int_equal(run(&lin32, "train", "--attack", "fgsm", NULL), 2);     /* an eval option */
    assert_int_equal(run(&lin32, "eval", "--adversarial", "fgsm", NULL), 2); /* a train option */
}

/* Adversarial training on the robust/brittle data: the undefended model is fooled by
 * eps 0.1 (it leans on the brittle features), the FGSM- and PGD-trained ones are not;
 * robust accuracy never exceeds clean accuracy; resume stays exact. */
static void test_train_adversarial(void **st) {
    (void)st;
    const char *u = tpath("u.ckpt"), *f = tpath("f.ckpt"), *p = tpath("p.ckpt"), *r = tpath("r.ckpt");
    int rc = run(&sm, "train", "--data", g_sm_csv, "--save", u, "--json", NULL);
    if (rc) fail_msg("%s", g_err);
    assert_null(strstr(g_out, "adversarial"));
    rc = run(&sm, "train", "--data", g_sm_csv, "--save", f, "--adversarial", "fgsm:eps=0.1,ratio=1", "--json", NULL);
    if (rc) fail_msg("%s", g_err);
    assert_non_null(strstr(g_out, "\"adversarial\":\"fgsm:eps=0.1,"));
    assert_non_null(strstr(g_err, "adversarial training: fgsm"));
    assert_true(isfinite(json_num(g_out, "train_loss")));
    rc = run(&sm, "train", "--data", g_sm_csv, "--save", p, "--adversarial", "pgd:eps=0.1,steps=3", "--quiet", NULL);
    if (rc) fail_msg("%s", g_err);
    double clean[3], fgsm[3], pgd[3];
    const char *cks[] = {u, f, p};
    for (int i = 0; i < 3; i++) {
        rc = run(&sm, "eval", "--data", g_sm_csv, "--load", cks[i], "--attack", "fgsm:eps=0.1", "--json", NULL);
        if (rc) fail_msg("%s", g_err);
        clean[i] = json_num(g_out, "clean_accuracy");
        fgsm[i] = json_num(g_out, "robust_accuracy");
        rc = run(&sm, "eval", "--data", g_sm_csv, "--load", cks[i], "--attack", "pgd:eps=0.1", "--json", NULL);
        if (rc) fail_msg("%s", g_err);
        pgd[i] = json_num(g_out, "robust_accuracy");
        print_message("model %d: clean %.3f fgsm %.3f pgd %.3f\n", i, clean[i], fgsm[i], pgd[i]);
        assert_true(fgsm[i] <= clean[i] && pgd[i] <= clean[i]);
        assert_true(pgd[i] <= fgsm[i] + 0.02);
        assert_true(clean[i] > 0.8);
    }
    assert_true(fgsm[0] < 0.5 && pgd[0] < 0.5);
    assert_true(fgsm[1] > fgsm[0] + 0.3 && pgd[1] > pgd[0] + 0.3);
    assert_true(fgsm[2] > fgsm[0] + 0.3 && pgd[2] > pgd[0] + 0.3);
    /* eps 0: robust == clean */
    assert_int_equal(run(&sm, "eval", "--data", g_sm_csv, "--load", u, "--attack", "pgd:eps=0", "--json", NULL), 0);
    assert_true(json_num(g_out, "robust_accuracy") == json_num(g_out, "clean_accuracy"));
    /* 8 epochs == 3 + resume to 8, bit for bit, with PGD's random starts */
    rc = run(&sm, "train", "--data", g_sm_csv, "--save", r, "--adversarial", "pgd:eps=0.1,steps=3", "--epochs",
             "3", "--quiet", NULL);
    if (rc) fail_msg("%s", g_err);
    rc = run(&sm, "train", "--data", g_sm_csv, "--resume", r, "--save", r, "--adversarial", "pgd:eps=0.1,steps=3",
             "--quiet", NULL);
    if (rc) fail_msg("%s", g_err);
    cdl_net *na = cdl_net_new(&sm), *nb = cdl_net_new(&sm);
    assert_int_equal(cdl_ckpt_load(p, na, NULL, NULL), 0);
    assert_int_equal(cdl_ckpt_load(r, nb, NULL, NULL), 0);
    assert_memory_equal(na->param, nb->param, sm.param_count * sizeof(float));
    cdl_net_free(na);
    cdl_net_free(nb);
    /* ratio 0 is clean training, bit for bit */
    rc = run(&sm, "train", "--data", g_sm_csv, "--save", r, "--adversarial", "pgd:ratio=0", "--quiet", NULL);
    if (rc) fail_msg("%s", g_err);
    na = cdl_net_new(&sm), nb = cdl_net_new(&sm);
    assert_int_equal(cdl_ckpt_load(u, na, NULL, NULL), 0);
    assert_int_equal(cdl_ckpt_load(r, nb, NULL, NULL), 0);
    assert_memory_equal(na->param, nb->param, sm.param_count * sizeof(float));
    cdl_net_free(na);
    cdl_net_free(nb);
    /* bad specs are usage errors; a model without input_grad cannot be trained so */
    assert_int_equal(run(&sm, "train", "--data", g_sm_csv, "--adversarial", "fgsm:eps=x", NULL), 2);
    assert_non_null(strstr(g_err, "--adversarial"));
    assert_int_equal(run(&lin_nog, "train", "--data", g_lin_csv, "--adversarial", "fgsm", "--epochs", "1", NULL), 1);
    assert_non_null(strstr(g_err, "input_grad"));
}

static int setup(void **st) {
    if (tmpdir_setup(st)) return -1;
    snprintf(g_sm_csv, sizeof g_sm_csv, "%s/sm.csv", tmp_dir);
    snprintf(g_lin_csv, sizeof g_lin_csv, "%s/lin.csv", tmp_dir);
    write_sm_csv(g_sm_csv);
    write_lin_csv(g_lin_csv);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_fgsm_exact),
        cmocka_unit_test(test_pgd_ball),
        cmocka_unit_test(test_pgd_nonlinear),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_eval_attack),
        cmocka_unit_test(test_train_adversarial),
        cmocka_unit_test(test_l2_delta),
        cmocka_unit_test(test_train_grad_delta),
        cmocka_unit_test(test_trainer_delta),
    };
    return cmocka_run_group_tests(tests, setup, tmpdir_teardown);
}
