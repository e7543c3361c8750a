/* test_rt_trainer.c -- the generic trainer (cdl_main) driven through hand-written
 * model descriptors: softmax regression with its own forward and gradient, in f32
 * and f64, on a synthetic CSV dataset and on Fashion-MNIST subsets.
 *
 * The test models: W[C,F], b[C] (trainable) and one state value s.  Train mode can
 * apply inverted dropout to x keyed by (net->seed, net->step), and can add the state
 * s to logit 0 and then bump it (a stand-in for batch-norm running statistics that a
 * gradient check must save and restore).  A "broken" variant (1) scales db[0], another
 * (2) dx[0] of the input gradient, so the gradient check has something to catch; g_nan_step injects a NaN loss in train mode,
 * g_nan_eval in eval mode, each with the cause g_cause (when set) recorded as a kernel
 * would (cdl_fail). */
#include "test_rt_util.h"
#include "json.h"
#include "trainer_int.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <signal.h>
#include <zlib.h>

/* ---------------------------------------------------------------- test models */

typedef struct smcfg { int F, C; double drop; int state_in_loss, broken; } smcfg;
static uint64_t g_nan_step = UINT64_MAX, g_int_step = UINT64_MAX, g_nangrad_step = UINT64_MAX;
static int g_nan_eval;
static const char *g_cause;

/* mode 0: eval forward; 1: train forward + backward; 2: eval input gradient; 3: eval
 * forward + backward (no dropout, no state). */
#define SM_DEFINE(T, S)                                                                    \
    static double sm_run_##S(const smcfg *c, cdl_net *net, int nb, int mode) {            \
        const int F = c->F, C = c->C, B = net->model->batch;                              \
        T *W = net->param, *b = W + C * F, *st = b + C, *dW = net->grad, *db = dW + C * F; \
        T *logit = net->act, *prob = logit + B * C, *xd = prob + B * C;                    \
        const T *x = net->in[0];                                                           \
        const int32_t *y = net->in[1];                                                     \
        cdl_rng_key key = {net->seed, net->step, 7};                                       \
        for (int i = 0; i < nb * F; i++) {                                                 \
            xd[i] = x[i];                                                                  \
            if (mode == 1 && c->drop > 0) {                                                \
                double u;                                                                  \
                cdl_rand_f64(key, (uint64_t)i, 1, &u);                                     \
                xd[i] = u < c->drop ? 0 : (T)(x[i] / (1 - c->drop));                       \
            }                                                                              \
        }                                                                                  \
        double loss = 0;                                                                   \
        for (int r = 0; r < nb; r++) {                                                     \
            T *l = logit + r * C, *p = prob + r * C, mx = -INFINITY;                       \
            for (int k = 0; k < C; k++) {                                                  \
                T a = b[k];                                                                \
                for (int f = 0; f < F; f++) a += W[k * F + f] * xd[r * F + f];            \
                if (k == 0 && mode == 1 && c->state_in_loss) a += st[0];                   \
                l[k] = a;                                                                  \
                if (a > mx) mx = a;                                                        \
            }                                                                              \
            double z = 0;                                                                  \
            for (int k = 0; k < C; k++) z += exp((double)(l[k] - mx));                     \
            for (int k = 0; k < C; k++) p[k] = (T)(exp((double)(l[k] - mx)) / z);          \
            loss += log(z) + mx - l[y[r]];                                                 \
        }                                                                                  \
        loss /= nb;                                                                        \
        if (mode == 1 || mode == 3) {                                                      \
            memset(dW, 0, sizeof(T) * (size_t)(C * F + C));                                \
            for (int r = 0; r < nb; r++)                                                   \
                for (int k = 0; k < C; k++) {                                              \
                    T d = (prob[r * C + k] - (k == y[r])) / nb;                            \
                    db[k] += d;                                                            \
                    for (int f = 0; f < F; f++) dW[k * F + f] += d * xd[r * F + f];        \
                }                                                                          \
            if (c->broken == 1) db[0] *= (T)1.5;                                           \
            if (mode == 1 && net->step == g_nangrad_step) dW[1] = (T)INFINITY;              \
            if (c->state_in_loss && mode == 1) st[0] += (T)0.1;                            \
        }                                                                                  \
        if (mode == 2) {                                                                   \
            T *dx = net->in_grad[0];                                                       \
            for (int r = 0; r < nb; r++)                                                   \
                for (int f = 0; f < F; f++) {                                              \
                    T a = 0;                                                               \
                    for (int k = 0; k < C; k++)                                            \
                        a += (prob[r * C + k] - (k == y[r])) * W[k * F + f];               \
                    dx[r * F + f] = a / nb;                                                \
                }                                                                          \
            if (c->broken == 2) dx[0] *= (T)1.5;                                           \
        }                                                                                  \
        if ((mode == 1 && net->step == g_nan_step) || (mode == 0 && g_nan_eval)) {         \
            loss = NAN;                                                                    \
            if (g_cause) cdl_fail("%s", g_cause);                                          \
        }                                                                                  \
        if (mode == 1 && net->step == g_int_step) raise(SIGINT);                           \
        net->out[0] = logit;                                                               \
        net->loss = loss;                                                                  \
        return loss;                                                                       \
    }                                                                                      \
    static void sm_init_##S(const smcfg *c, cdl_net *net, uint64_t seed) {                 \
        T *W = net->param;                                                                 \
        cdl_rng_key k0 = {seed, 0, 0}, k1 = {seed, 0, 1};                                  \
        cdl_init_##S(W, c->C * c->F, CDL_INIT_DEFAULT, 0, 0, c->F, c->C, k0);              \
        cdl_init_##S(W + c->C * c->F, c->C, CDL_INIT_DEFAULT, 0, 0, c->F, c->C, k1);       \
        W[c->C * c->F + c->C] = 0;                                                         \
    }
SM_DEFINE(float, f32)
SM_DEFINE(double, f64)

/* One descriptor: tables, config and the five function pointers. */
#define SM_MODEL(NAME, S, B, F, C, XRANK, XD1, XD2, DROP, STATE, BROKEN, ENTRIES, NENT, DEFAULTS) \
    static const smcfg NAME##_cfg = {F, C, DROP, STATE, BROKEN};                                 \
    static const cdl_tensor NAME##_params[] = {                                                  \
        {"fc.weight", CDL_F32, 0, 2, {C, F}, 0, "t:1:1"},                                        \
        {"fc.bias", CDL_F32, (size_t)(C) * (F), 1, {C}, 0, "t:1:1"},                             \
        {"fc.state", CDL_F32, (size_t)(C) * (F) + (C), 1, {1}, CDL_T_STATE, "t:1:1"}};           \
    static const cdl_tensor NAME##_inputs[] = {                                                  \
        {"x", CDL_F32, 0, XRANK, {B, XD1, XD2}, CDL_T_BATCHED, "t:2:1"},                         \
        {"y", CDL_I32, 0, 1, {B}, CDL_T_BATCHED, "t:3:1"}};                                      \
    static const cdl_tensor NAME##_outputs[] = {                                                 \
        {"logits", CDL_F32, 0, 2, {B, C}, CDL_T_BATCHED, "t:4:1"}};                              \
    static void NAME##_init(cdl_net *n, uint64_t s) { sm_init_##S(&NAME##_cfg, n, s); }          \
    static void NAME##_fwd(cdl_net *n, int nb) { sm_run_##S(&NAME##_cfg, n, nb, 0); }            \
    static double NAME##_grad(cdl_net *n, int nb) { return sm_run_##S(&NAME##_cfg, n, nb, 1); }  \
    static double NAME##_igrad(cdl_net *n, int nb) { return sm_run_##S(&NAME##_cfg, n, nb, 2); } \
    static double NAME##_egrad(cdl_net *n, int nb) { return sm_run_##S(&NAME##_cfg, n, nb, 3); } \
    static const cdl_model NAME = {                                                              \
        CDL_ABI, #NAME, "tests/test_rt_trainer.c", 0x5EED0000u + (F) * 100 + (C), sizeof(S##_t), B,       \
        3, NAME##_params, (size_t)(C) * (F) + (C) + 1, (size_t)(C) * (F) + (C),                  \
        2, NAME##_inputs, 1, NAME##_outputs, 1,                                                  \
        sizeof(S##_t) * (size_t)(B) * (2 * (C) + (F)), NENT, ENTRIES, DEFAULTS,                  \
        NAME##_init, NAME##_fwd, NAME##_grad, NAME##_igrad, NAME##_egrad};

typedef float f32_t;
typedef double f64_t;

/* An entry point for `sample`: img[r, k] = sigmoid(z[r,0] (k - 8) / 4 + z[r,1]). */
static const cdl_tensor gen_in[] = {{"z", CDL_F32, 0, 2, {16, 2}, CDL_T_BATCHED, "t:5:1"}};
static const cdl_tensor gen_out[] = {{"img", CDL_F32, 0, 2, {16, 16}, CDL_T_BATCHED, "t:5:1"}};
static void gen_run(cdl_net *net, int nb, const void *const *in, void *const *out) {
    (void)net;
    const float *z = in[0];
    float *o = out[0];
    for (int r = 0; r < nb; r++)
        for (int k = 0; k < 16; k++)
            o[r * 16 + k] = 1 / (1 + expf(-(z[r * 2] * (float)(k - 8) / 4 + z[r * 2 + 1])));
}
static const cdl_entry gen_entries[] = {{"generate", 1, gen_in, 1, gen_out, gen_run}};

/* syn: 4 features as x[B, 2, 2], 3 classes, dropout; on the synthetic CSV. */
SM_MODEL(syn, f32, 16, 4, 3, 3, 2, 2, 0.1, 0, 0, gen_entries, 1, "")
/* syn with train defaults from the model file. */
SM_MODEL(syndef, f32, 16, 4, 3, 3, 2, 2, 0.0, 0, 0, NULL, 0,
         "# defaults\n  optimizer = sgd:lr=0.3,momentum=0.9\nepochs=2\n\nbatch=8\nquiet=1\n")
SM_MODEL(synbad, f32, 16, 4, 3, 3, 2, 2, 0.0, 0, 0, NULL, 0, "epochs=2\nepoch=3\n")
/* syn without dropout, and the same with augmentation and normalisation from the model */
SM_MODEL(synplain, f32, 16, 4, 3, 3, 2, 2, 0.0, 0, 0, NULL, 0, "epochs=1\nquiet=1\n")
SM_MODEL(synaug, f32, 16, 4, 3, 3, 2, 2, 0.0, 0, 0, NULL, 0,
         "epochs=1\nquiet=1\naugment = crop=1,flip,noise=0.5\nnormalize = 0.5,2\n")
/* f64 builds for gradcheck: dropout + state in the loss; and a wrong gradient. */
SM_MODEL(gc, f64, 8, 4, 3, 2, 4, 0, 0.25, 1, 0, NULL, 0, "")
SM_MODEL(gcbad, f64, 8, 4, 3, 2, 4, 0, 0.0, 0, 1, NULL, 0, "")
SM_MODEL(gcbadin, f64, 8, 4, 3, 2, 4, 0, 0.0, 0, 2, NULL, 0, "")      /* a wrong input gradient */
SM_MODEL(gc16, f64, 16, 4, 3, 2, 4, 0, 0.25, 1, 0, NULL, 0, "")        /* gradcheck's default batch: 8 */

/* A loss with kinks next to its parameters: L = |w0| + |w1| at w = (1e-7, 1e-9).  At
 * eps 1e-6 both lie within eps of the kink at 0; w0 passes when measured again at
 * eps / 100, w1 (within eps / 100 too) does not. */
static const cdl_tensor kink_params[] = {{"w", CDL_F32, 0, 1, {2}, 0, "t:1:1"}};
static const cdl_tensor kink_inputs[] = {{"x", CDL_F32, 0, 2, {4, 1}, CDL_T_BATCHED, "t:2:1"}};
static double kink_run(cdl_net *net, int nb, int train) {
    (void)nb;
    const double *w = net->param;
    double *g = net->grad;
    if (train) g[0] = w[0] > 0 ? 1 : -1, g[1] = w[1] > 0 ? 1 : -1;
    return net->loss = fabs(w[0]) + fabs(w[1]);
}
static void kink_init(cdl_net *n, uint64_t s) {
    (void)s;
    ((double *)n->param)[0] = 1e-7;
    ((double *)n->param)[1] = 1e-9;
}
static void kink_fwd(cdl_net *n, int nb) { kink_run(n, nb, 0); }
static double kink_grad(cdl_net *n, int nb) { return kink_run(n, nb, 1); }
static const cdl_model kink = {CDL_ABI, "kink", "t", 0x6B, 8, 4, 1, kink_params, 2, 2, 1, kink_inputs, 0, NULL, 1, 64, 0,
                               NULL, "", kink_init, kink_fwd, kink_grad, NULL, kink_grad};
/* Fashion-MNIST: x[B, 1, 28, 28] is 784 values per example. */
static const cdl_tensor fm_params[] = {
    {"fc.weight", CDL_F32, 0, 2, {10, 784}, 0, "t:1:1"},
    {"fc.bias", CDL_F32, 7840, 1, {10}, 0, "t:1:1"},
    {"fc.state", CDL_F32, 7850, 1, {1}, CDL_T_STATE, "t:1:1"}};
static const cdl_tensor fm_inputs[] = {
    {"x", CDL_F32, 0, 4, {50, 1, 28, 28}, CDL_T_BATCHED, "t:2:1"},
    {"y", CDL_I32, 0, 1, {50}, CDL_T_BATCHED, "t:3:1"}};
static const cdl_tensor fm_outputs[] = {{"logits", CDL_F32, 0, 2, {50, 10}, CDL_T_BATCHED, "t:4:1"}};
static const smcfg fm_cfg = {784, 10, 0, 0, 0};
static void fm_init(cdl_net *n, uint64_t s) { sm_init_f32(&fm_cfg, n, s); }
static void fm_fwd(cdl_net *n, int nb) { sm_run_f32(&fm_cfg, n, nb, 0); }
static double fm_grad(cdl_net *n, int nb) { return sm_run_f32(&fm_cfg, n, nb, 1); }
static const cdl_model fm = {CDL_ABI, "softmax784", "t", 0xF00D, 4, 50, 3, fm_params, 7851, 7850,
                             2, fm_inputs, 1, fm_outputs, 1, sizeof(float) * 50 * (20 + 784),
                             0, NULL, "dataset=fashion-mnist\nlr=0.05\noptimizer=sgd",
                             fm_init, fm_fwd, fm_grad, NULL, NULL};

/* Linear regression with three inputs fed by name, PyTorch style: pred = w0 a + w1 b +
 * c, loss = mean((pred - t)^2), a, b, t: f32[B] (as a CSV's header columns). */
static const cdl_tensor reg_params[] = {{"w", CDL_F32, 0, 1, {2}, 0, "t:1:1"},
                                        {"c", CDL_F32, 2, 1, {1}, 0, "t:1:1"}};
static const cdl_tensor reg_inputs[] = {{"a", CDL_F32, 0, 1, {16}, CDL_T_BATCHED, "t:2:1"},
                                        {"b", CDL_F32, 0, 1, {16}, CDL_T_BATCHED, "t:3:1"},
                                        {"t", CDL_F32, 0, 1, {16}, CDL_T_BATCHED, "t:4:1"}};
static const cdl_tensor reg_outputs[] = {{"pred", CDL_F32, 0, 1, {16}, CDL_T_BATCHED, "t:5:1"}};
static double reg_run(cdl_net *net, int nb, int train) {
    const float *a = net->in[0], *b = net->in[1], *t = net->in[2], *w = net->param;
    float *g = net->grad, *pred = net->act;
    double loss = 0, g0 = 0, g1 = 0, gc = 0;
    for (int r = 0; r < nb; r++) {
        pred[r] = w[0] * a[r] + w[1] * b[r] + w[2];
        double e = (double)pred[r] - t[r];
        loss += e * e;
        g0 += 2 * e * a[r] / nb;
        g1 += 2 * e * b[r] / nb;
        gc += 2 * e / nb;
    }
    if (train) g[0] = (float)g0, g[1] = (float)g1, g[2] = (float)gc;
    net->out[0] = pred;
    return net->loss = loss / nb;
}
static void reg_init(cdl_net *n, uint64_t s) { (void)s, memset(n->param, 0, 3 * sizeof(float)); }
static void reg_fwd(cdl_net *n, int nb) { reg_run(n, nb, 0); }
static double reg_grad(cdl_net *n, int nb) { return reg_run(n, nb, 1); }
static const cdl_model reg = {CDL_ABI, "reg", "t", 0x2E6, 4, 16, 2, reg_params, 3, 3, 3, reg_inputs, 1, reg_outputs, 1,
                              sizeof(float) * 16, 0, NULL, "", reg_init, reg_fwd, reg_grad, NULL, NULL};
static const cdl_model regdef = {CDL_ABI, "regdef", "t", 0x2E6, 4, 16, 2, reg_params, 3, 3, 3, reg_inputs, 1, reg_outputs, 1,
                                 sizeof(float) * 16, 0, NULL, "feed = t=target\noptimizer=sgd:lr=0.1\nquiet=1",
                                 reg_init, reg_fwd, reg_grad, NULL, NULL};

/* ---------------------------------------------------------------- helpers */

static char g_csv[320];

/* 3 classes around separated centers in 4-D, 200 rows, label last. */
static void write_csv(const char *path) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "a,b,c,d,label\n");
    cdl_rng_key k = {99, 0, 0};
    for (int i = 0; i < 200; i++) {
        int y = i % 3;
        double n[4];
        cdl_randn_f64(k, (uint64_t)i * 4, 4, n);
        fprintf(f, "%.5f,%.5f,%.5f,%.5f,%d\n", (y == 0 ? 1.5 : 0) + 0.5 * n[0],
                (y == 1 ? 1.5 : 0) + 0.5 * n[1], (y == 2 ? 1.5 : 0) + 0.5 * n[2], 0.5 * n[3], y);
    }
    fclose(f);
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* The parameters of a checkpoint, loaded into a fresh net of m. */
static cdl_net *load_net(const cdl_model *m, const char *path, cdl_ckpt_meta *meta) {
    cdl_net *net = cdl_net_new(m);
    assert_non_null(net);
    if (cdl_ckpt_load(path, net, NULL, meta) < 0) fail_msg("load %s: %s", path, cdl_last_error());
    return net;
}

static int have_fashion(void) {
    return file_exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz") ||
           file_exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte");
}

/* ---------------------------------------------------------------- tests */

static void test_usage(void **st) {
    (void)st;
    assert_int_equal(run(&syn, NULL), 2);
    assert_non_null(strstr(g_err, "usage"));
    assert_int_equal(run(&syn, "--help", NULL), 0);
    assert_non_null(strstr(g_out, "gradcheck"));
    assert_int_equal(run(&syn, "fly", NULL), 2);
    assert_non_null(strstr(g_err, "unknown command"));
    const char *cmds[] = {"train", "eval", "gradcheck", "sample", "grad"};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(run(&syn, cmds[i], "--help", NULL), 0);
        assert_non_null(strstr(g_out, "--seed"));
    }
    assert_non_null(strstr(g_out, "--batches"));              /* grad's own option */
    assert_int_equal(run(&syn, "train", "--bogus", NULL), 2);
    assert_non_null(strstr(g_err, "unknown option"));
    assert_int_equal(run(&syn, "train", "--epochs", NULL), 2);
    assert_non_null(strstr(g_err, "needs a value"));
    assert_int_equal(run(&syn, "train", "--epochs", "x", NULL), 2);
    assert_int_equal(run(&syn, "train", "--optimizer", "lion", NULL), 2);
    assert_non_null(strstr(g_err, "lion"));
    assert_int_equal(run(&syn, "train", "--schedule=step", NULL), 2);
    assert_int_equal(run(&syn, "train", "--json=1", NULL), 2);
    assert_int_equal(run(&syn, "eval", "--epochs", "3", NULL), 2);     /* not an eval option */
    assert_int_equal(run(&synbad, "train", NULL), 2);
    assert_non_null(strstr(g_err, "unknown key 'epoch'"));
    /* batch larger than compiled */
    assert_int_equal(run(&syn, "train", "--data", g_csv, "--batch", "17", "--quiet", NULL), 1);
    assert_non_null(strstr(g_err, "compiled batch"));
}

/* The runtime's one strict number parser (parse.c), and the options that go through it. */
static void test_strict_numbers(void **st) {
    (void)st;
    double d;
    int64_t i;
    uint64_t u;
    assert_int_equal(cdl_parse_f64("2.5e-3", &d), 0);
    assert_true(d == 2.5e-3);
    assert_int_equal(cdl_parse_f64("-0x1p3", &d), 0);
    assert_true(d == -8);
    assert_int_equal(cdl_parse_f64("1e-400", &d), 0);                  /* underflow rounds */
    const char *bad[] = {"", " 1", "1 ", "1x", "nan", "-", "e5", "1,5"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        assert_int_equal(cdl_parse_f64(bad[k], &d), CDL_PARSE_BAD);
    assert_int_equal(cdl_parse_f64("inf", &d), CDL_PARSE_RANGE);
    assert_int_equal(cdl_parse_f64("1e400", &d), CDL_PARSE_RANGE);
    assert_int_equal(cdl_parse_i64("-42", -100, 100, &i), 0);
    assert_int_equal(i, -42);
    assert_int_equal(cdl_parse_i64("010", 0, 100, &i), 0);               /* decimal, not octal */
    assert_int_equal(i, 10);
    assert_int_equal(cdl_parse_i64("-9223372036854775808", INT64_MIN, 0, &i), 0);
    assert_true(i == INT64_MIN);
    assert_int_equal(cdl_parse_i64("9223372036854775808", INT64_MIN, INT64_MAX, &i), CDL_PARSE_RANGE);
    assert_int_equal(cdl_parse_i64("101", 0, 100, &i), CDL_PARSE_RANGE);
    assert_int_equal(cdl_parse_i64("1.0", 0, 100, &i), CDL_PARSE_BAD);
    assert_int_equal(cdl_parse_i64("0x10", 0, 100, &i), CDL_PARSE_BAD);
    assert_int_equal(cdl_parse_i64("+", 0, 100, &i), CDL_PARSE_BAD);
    assert_int_equal(cdl_parse_u64("0xFFFFFFFFFFFFFFFF", &u), 0);
    assert_true(u == UINT64_MAX);
    assert_int_equal(cdl_parse_u64("18446744073709551616", &u), CDL_PARSE_RANGE);
    assert_int_equal(cdl_parse_u64("-1", &u), CDL_PARSE_BAD);
    /* every spec and option reader uses it: trailing junk is refused everywhere */
    cdl_optim_cfg oc;
    assert_int_equal(cdl_optim_parse(&oc, "sgd:lr=0.1x"), -1);
    cdl_attack a;
    assert_int_equal(cdl_attack_parse(&a, "fgsm:eps=0.1 "), -1);
    assert_int_equal(run(&syn, "train", "--seed", "12z", NULL), 2);
    assert_non_null(strstr(g_err, "--seed"));
    assert_int_equal(run(&syn, "train", "--lr", "nan", NULL), 2);
    assert_int_equal(run(&syn, "train", "--epochs", " 3", NULL), 2);
}

static void test_train_synthetic(void **st) {
    (void)st;
    const char *log = tpath("syn.csv.log"), *svg = tpath("syn.svg");
    int rc = run(&syn, "train", "--data", g_csv, "--epochs", "6", "--optimizer", "sgd:lr=0.5,momentum=0.9",
                 "--schedule", "cosine", "--warmup", "3", "--clip", "5", "--json", "--log", log, "--plot",
                 svg, "--workers", "0", NULL);
    if (rc) fail_msg("rc %d: %s", rc, g_err);
    /* stdout is exactly one JSON line with every key */
    assert_int_equal(g_out[0], '{');
    assert_non_null(strchr(g_out, '\n'));
    assert_int_equal(strchr(g_out, '\n')[1], 0);
    const char *keys[] = {"train_loss", "test_loss", "test_accuracy", "epochs", "steps", "seconds",
                          "thread_cpu_seconds"};
    for (int i = 0; i < 7; i++) assert_true(isfinite(json_num(g_out, keys[i])));
    /* the training thread's CPU time over the command: some, and at most its wall time */
    assert_true(json_num(g_out, "thread_cpu_seconds") > 0);
    assert_true(json_num(g_out, "thread_cpu_seconds") <= json_num(g_out, "seconds") + 0.002);
    assert_true(json_num(g_out, "epochs") == 6);
    assert_true(json_num(g_out, "steps") == 6 * 13);          /* 200 / 16 -> 13 batches */
    assert_true(json_num(g_out, "test_accuracy") > 0.85);
    /* per-epoch lines went to stderr (stdout is the JSON) */
    assert_non_null(strstr(g_err, "epoch 6/6"));
    /* the log: header + 6 rows, loss falling */
    FILE *f = fopen(log, "r");
    assert_non_null(f);
    char line[256];
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "epoch,step,train_loss,test_loss,test_accuracy,seconds\n");
    double first = NAN, last = NAN;
    int rows = 0;
    while (fgets(line, sizeof line, f)) {
        int e;
        unsigned long long s;
        double tl, vl, acc, sec;
        assert_int_equal(sscanf(line, "%d,%llu,%lf,%lf,%lf,%lf", &e, &s, &tl, &vl, &acc, &sec), 6);
        assert_int_equal(e, ++rows);
        assert_int_equal(s, 13ull * (unsigned long long)e);
        if (rows == 1) first = tl;
        last = tl;
    }
    fclose(f);
    assert_int_equal(rows, 6);
    assert_true(last < 0.7 * first);
    f = fopen(svg, "r");
    assert_non_null(f);
    size_t n = fread(line, 1, sizeof line - 1, f);
    line[n] = 0;
    fclose(f);
    assert_non_null(strstr(line, "<svg"));
    /* plain (non-terminal) output and no JSON without --json */
    assert_int_equal(run(&syn, "train", "--data", g_csv, "--epochs", "1", NULL), 0);
    assert_non_null(strstr(g_out, "epoch 1/1"));
    assert_null(strstr(g_out, "{"));
    assert_null(strstr(g_err, "\r"));
}

/* The log's rows as read back: epoch, step, train loss, whether the test columns are
 * empty (a --log-every row).  The number of rows. */
static int read_log(const char *path, int e[], unsigned long long step[], double tl[], int empty[], int cap) {
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[256];
    int n = 0;
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "epoch,step,train_loss,test_loss,test_accuracy,seconds\n");
    while (fgets(line, sizeof line, f)) {
        assert_true(n < cap);
        double sec;
        assert_true(sscanf(line, "%d,%llu,%lf,", &e[n], &step[n], &tl[n]) == 3);
        char *p = strchr(strchr(strchr(line, ',') + 1, ',') + 1, ',');
        empty[n] = strncmp(p, ",,,", 3) == 0;
        assert_int_equal(sscanf(empty[n] ? p + 3 : strrchr(line, ',') + 1, "%lf", &sec), 1);
        assert_true(sec >= 0);
        n++;
    }
    fclose(f);
    return n;
}

/* --log-every N: a line and a row every N global steps with the mean train loss since
 * the last one; the epoch rows as before; on resume the rows up to the checkpoint's step
 * stay and later ones (a longer run that was lost) go. */
static void test_log_every(void **st) {
    (void)st;
    const char *log = tpath("every.csv.log"), *c = tpath("every.ckpt");
    int e[16], empty[16];
    unsigned long long step[16];
    double tl[16];
    /* N = the steps of an epoch (13): the window is the epoch, so the two losses agree */
    int rc = run(&syn, "train", "--data", g_csv, "--epochs", "1", "--log", log, "--log-every", "13", "--workers", "0",
                 NULL);
    if (rc) fail_msg("%s", g_err);
    assert_non_null(strstr(g_out, "epoch 1/1  step 13  train_loss "));
    assert_int_equal(read_log(log, e, step, tl, empty, 16), 2);
    assert_true(empty[0] && !empty[1] && step[0] == 13 && step[1] == 13 && e[0] == 1 && e[1] == 1);
    assert_true(tl[0] == tl[1]);
    /* every 5 steps over two epochs, in two runs: 5 10 | epoch 1 (13) | 15 20 25 | epoch 2 (26) */
    rc = run(&syn, "train", "--data", g_csv, "--epochs", "1", "--log", log, "--log-every", "5", "--save", c,
             "--quiet", NULL);
    if (rc) fail_msg("%s", g_err);
    assert_int_equal(g_out[0], 0);                                /* --quiet: rows, no lines */
    FILE *f = fopen(log, "a");                                    /* a lost run's later row */
    assert_non_null(f);
    fprintf(f, "2,20,0.5,,,1.000\n");
    fclose(f);
    rc = run(&syn, "train", "--data", g_csv, "--epochs", "2", "--resume", c, "--log", log, "--log-every", "5",
             "--quiet", NULL);
    if (rc) fail_msg("%s", g_err);
    const unsigned long long want[] = {5, 10, 13, 15, 20, 25, 26};
    const int want_e[] = {1, 1, 1, 2, 2, 2, 2}, want_empty[] = {1, 1, 0, 1, 1, 1, 0};
    assert_int_equal(read_log(log, e, step, tl, empty, 16), 7);
    for (int i = 0; i < 7; i++) {
        assert_true(step[i] == want[i]);
        assert_int_equal(e[i], want_e[i]);
        assert_int_equal(empty[i], want_empty[i]);
        assert_true(isfinite(tl[i]) && tl[i] != 0.5);
    }
    /* bad values are refused, naming the option */
    assert_int_equal(run(&syn, "train", "--log-every", "0", NULL), 2);
    assert_non_null(strstr(g_err, "--log-every"));
}

/* train 3 == train 1 + resume to 3 (worker counts differ), bit for bit. */
static void test_resume_exact(void **st) {
    (void)st;
    const char *a = tpath("a.ckpt"), *b = tpath("b.ckpt");
    char ja[512], jb[512];
    int rc = run(&syn, "train", "--data", g_csv, "--epochs", "3", "--optimizer", "adam:lr=0.05",
                 "--schedule", "step:every=1,gamma=0.5", "--seed", "7", "--save", a, "--json",
                 "--quiet", "--workers", "2", NULL);
    if (rc) fail_msg("%s", g_err);
    snprintf(ja, sizeof ja, "%.500s", g_out);
    rc = run(&syn, "train", "--data", g_csv, "--epochs", "1", "--optimizer", "adam:lr=0.05",
             "--schedule", "step:every=1,gamma=0.5", "--seed", "7", "--save", b, "--quiet", NULL);
    if (rc) fail_msg("%s", g_err);
    /* the resumed run takes its seed from the checkpoint, not --seed */
    rc = run(&syn, "train", "--data", g_csv, "--epochs", "3", "--optimizer", "adam:lr=0.05",
             "--schedule", "step:every=1,gamma=0.5", "--seed", "1234", "--resume", b, "--save", b,
             "--json", "--quiet", "--workers", "0", NULL);
    if (rc) fail_msg("%s", g_err);
    snprintf(jb, sizeof jb, "%.500s", g_out);
    cdl_ckpt_meta ma, mb;
    cdl_net *na = load_net(&syn, a, &ma), *nb = load_net(&syn, b, &mb);
    assert_memory_equal(na->param, nb->param, syn.param_count * sizeof(float));
    assert_int_equal(ma.step, 39);
    assert_int_equal(mb.step, 39);
    assert_int_equal(ma.epoch, 3);
    assert_int_equal(mb.epoch, 3);
    assert_int_equal(mb.seed, 7);
    cdl_net_free(na);
    cdl_net_free(nb);
    const char *keys[] = {"train_loss", "test_loss", "test_accuracy", "epochs", "steps"};
    for (int i = 0; i < 5; i++) assert_true(json_num(ja, keys[i]) == json_num(jb, keys[i]));
    /* Ctrl-C in the middle of epoch 2 (step 20 = its batch 7): a mid-epoch checkpoint,
     * exit status 130; resuming it still ends bit-identical to the straight run */
    const char *c = tpath("int.ckpt");
    g_int_step = 20;
    rc = run(&syn, "train", "--data", g_csv, "--epochs", "3", "--optimizer", "adam:lr=0.05",
             "--schedule", "step:every=1,gamma=0.5", "--seed", "7", "--save", c, "--quiet", NULL);
    g_int_step = UINT64_MAX;
    assert_int_equal(rc, 130);
    assert_non_null(strstr(g_err, "interrupted"));
    cdl_net *ni = load_net(&syn, c, &mb);
    cdl_net_free(ni);
    assert_int_equal(mb.epoch, 1);
    assert_int_equal(mb.batch_in_epoch, 8);
    assert_int_equal(mb.step, 21);
    rc = run(&syn, "train", "--data", g_csv, "--epochs", "3", "--optimizer", "adam:lr=0.05",
             "--schedule", "step:every=1,gamma=0.5", "--resume", c, "--save", c, "--quiet", NULL);
    if (rc) fail_msg("%s", g_err);
    na = load_net(&syn, a, NULL);
    nb = load_net(&syn, c, &mb);
    assert_memory_equal(na->param, nb->param, syn.param_count * sizeof(float));
    assert_int_equal(mb.step, 39);
    cdl_net_free(na);
    cdl_net_free(nb);
    /* a different seed really is different */
    rc = run(&syn, "train", "--data", g_csv, "--epochs", "3", "--optimizer", "adam:lr=0.05",
             "--seed", "8", "--save", b, "--quiet", NULL);
    assert_int_equal(rc, 0);
    na = load_net(&syn, a, NULL);
    nb = load_net(&syn, b, NULL);
    assert_memory_not_equal(na->param, nb->param, syn.train_count * sizeof(float));
    cdl_net_free(na);
    cdl_net_free(nb);
    /* resuming a finished run trains nothing more */
    assert_int_equal(run(&syn, "train", "--data", g_csv, "--epochs", "3", "--resume", a, "--json",
                         "--quiet", "--optimizer", "adam:lr=0.05", NULL), 0);
    assert_true(json_num(g_out, "steps") == 39);
    /* resuming with another optimizer is refused */
    assert_int_equal(run(&syn, "train", "--data", g_csv, "--epochs", "4", "--resume", a, "--quiet",
                         "--optimizer", "sgd", NULL), 1);
}

static void test_nan_stop(void **st) {
    (void)st;
    const char *c = tpath("nan.ckpt");
    g_nan_step = 13 + 5;                                     /* in epoch 2 */
    int rc = run(&syn, "train", "--data", g_csv, "--epochs", "3", "--save", c, "--quiet", NULL);
    g_nan_step = UINT64_MAX;
    assert_int_equal(rc, 1);
    assert_non_null(strstr(g_err, "the loss is nan"));
    assert_non_null(strstr(g_err, "epoch 2"));
    assert_non_null(strstr(g_err, "last good checkpoint"));
    cdl_ckpt_meta meta;
    cdl_net *net = load_net(&syn, c, &meta);
    assert_int_equal(meta.epoch, 1);                         /* epoch 1's checkpoint kept */
    assert_int_equal(meta.step, 13);
    cdl_net_free(net);
    /* a NaN before any checkpoint says so */
    g_nan_step = 2;
    rc = run(&syn, "train", "--data", g_csv, "--epochs", "1", "--quiet", NULL);
    g_nan_step = UINT64_MAX;
    assert_int_equal(rc, 1);
    assert_non_null(strstr(g_err, "no checkpoint"));
}

/* A gradient that is not finite while the loss is stops the run at that step, with
 * Adam (which counts such values in its update: no norm pass without --clip), AdamW,
 * SGD and with --clip; the last good checkpoint stays. */
static void test_nan_grad_stop(void **st) {
    (void)st;
    const char *c = tpath("nangrad.ckpt");
    const char *opts[][2] = {{"adam", NULL}, {"adamw", NULL}, {"sgd", NULL}, {"adam", "1.0"}};
    for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) {
        g_nangrad_step = 13 + 5;                                 /* in epoch 2 */
        int rc = opts[k][1] ? run(&syn, "train", "--data", g_csv, "--epochs", "3", "--save", c, "--quiet",
                                  "--optimizer", opts[k][0], "--clip", opts[k][1], NULL)
                            : run(&syn, "train", "--data", g_csv, "--epochs", "3", "--save", c, "--quiet",
                                  "--optimizer", opts[k][0], NULL);
        g_nangrad_step = UINT64_MAX;
        assert_int_equal(rc, 1);
        assert_non_null(strstr(g_err, "the gradient norm is inf at epoch 2, step 18 (batch 5)"));
        assert_non_null(strstr(g_err, "last good checkpoint"));
        cdl_ckpt_meta meta;
        cdl_net *net = load_net(&syn, c, &meta);
        assert_int_equal(meta.epoch, 1);
        assert_int_equal(meta.step, 13);
        cdl_net_free(net);
    }
}

/* A step whose kernel recorded a cause (cdl_fail) and made the loss NaN: every command
 * prints the cause and exits 1; grad writes no file of NaN and stale gradients. */
static void test_nan_cause(void **st) {
    (void)st;
    const char *c = tpath("cause.ckpt"), *g = tpath("cause.st");
    assert_int_equal(run(&syn, "train", "--data", g_csv, "--epochs", "1", "--save", c, "--quiet", NULL), 0);
    g_cause = "cross_entropy: label 7 at row 3 is outside [0, 3)";
    g_nan_step = 13 + 2;
    int rc = run(&syn, "train", "--data", g_csv, "--epochs", "2", "--resume", c, "--quiet", NULL);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(g_err, "the loss is nan at epoch 2, step 15 (batch 2): cross_entropy: label 7 at row 3"));
    g_nan_step = 13;                                          /* grad runs at the checkpoint's step */
    rc = run(&syn, "grad", "--data", g_csv, "--load", c, "-o", g, NULL);
    g_nan_step = UINT64_MAX;
    assert_int_equal(rc, 1);
    assert_non_null(strstr(g_err, "the loss is nan on batch 0: cross_entropy: label 7"));
    assert_false(file_exists(g));
    g_nan_eval = 1;
    rc = run(&syn, "eval", "--data", g_csv, "--load", c, NULL);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(g_err, "the loss is nan on test batch 0 (eval mode): cross_entropy: label 7"));
    rc = run(&syn, "train", "--data", g_csv, "--epochs", "1", "--quiet", NULL);   /* the epoch's evaluation */
    assert_int_equal(rc, 1);
    assert_non_null(strstr(g_err, "on test batch 0 (eval mode): cross_entropy"));
    g_nan_eval = 0;
    g_cause = NULL;
}

static void test_eval_and_defaults(void **st) {
    (void)st;
    const char *c = tpath("def.ckpt");
    /* defaults from the model: sgd momentum, 2 epochs, batch 8, quiet */
    int rc = run(&syndef, "train", "--data", g_csv, "--save", c, "--json", NULL);
    if (rc) fail_msg("%s", g_err);
    assert_true(json_num(g_out, "epochs") == 2);
    assert_true(json_num(g_out, "steps") == 2 * 25);         /* 200 / 8 */
    assert_string_equal(g_err, "");                          /* quiet=1 from the model */
    double acc = json_num(g_out, "test_accuracy"), loss = json_num(g_out, "test_loss");
    assert_true(acc > 0.8);
    /* the command line beats the model */
    assert_int_equal(run(&syndef, "train", "--data", g_csv, "--epochs", "1", "--json", NULL), 0);
    assert_true(json_num(g_out, "steps") == 25);
    /* eval of the checkpoint gives the same numbers */
    rc = run(&syndef, "eval", "--data", g_csv, "--load", c, "--json", NULL);
    if (rc) fail_msg("%s", g_err);
    assert_true(json_num(g_out, "test_accuracy") == acc);
    assert_true(fabs(json_num(g_out, "test_loss") - loss) < 1e-12);
    assert_int_equal(run(&syndef, "eval", "--data", g_csv, NULL), 1);      /* --load missing */
    assert_non_null(strstr(g_err, "--load"));
    assert_int_equal(run(&syndef, "eval", "--data", g_csv, "--load", tpath("missing"), NULL), 1);
}

/* The model's augmentation and normalisation can be switched off from the command
 * line (`none`), and an --augment replaces the model's rather than adding to it (on
 * random data: its x has the model's [2, 2] per example, which crops and flips need). */
static void test_augment_off(void **st) {
    (void)st;
    assert_int_equal(run(&synplain, "train", "--data", "random:64", "--json", NULL), 0);
    double plain = json_num(g_out, "train_loss");
    int rc = run(&synaug, "train", "--data", "random:64", "--json", NULL);
    if (rc) fail_msg("%s", g_err);
    assert_true(json_num(g_out, "train_loss") != plain);       /* the model's settings act */
    rc = run(&synaug, "train", "--data", "random:64", "--augment", "none", "--normalize", "none", "--json", NULL);
    if (rc) fail_msg("%s", g_err);
    assert_true(json_num(g_out, "train_loss") == plain);
    assert_int_equal(run(&synplain, "train", "--data", "random:64", "--augment", "flip", "--json", NULL), 0);
    double flip = json_num(g_out, "train_loss");
    assert_true(flip != plain);
    assert_int_equal(run(&synaug, "train", "--data", "random:64", "--augment", "flip", "--normalize", "none", "--json",
                         NULL), 0);
    assert_true(json_num(g_out, "train_loss") == flip);        /* flip alone: no crop, no noise */
    assert_int_equal(run(&synaug, "train", "--data", "random:64", "--augment", "none,flip", NULL), 2);
    assert_non_null(strstr(g_err, "unknown item 'none'"));
}

static void test_data_mismatch(void **st) {
    (void)st;
    char bad[160];
    snprintf(bad, sizeof bad, "%s", tpath("five.csv"));
    FILE *f = fopen(bad, "w");
    assert_non_null(f);
    for (int i = 0; i < 10; i++) fprintf(f, "1,2,3,4,5,%d\n", i % 3);
    fclose(f);
    assert_int_equal(run(&syn, "train", "--data", bad, "--quiet", NULL), 1);
    assert_non_null(strstr(g_err, "5 values"));
    assert_non_null(strstr(g_err, "input x"));
    assert_int_equal(run(&syn, "train", "--data", tpath("nonexistent.csv"), "--quiet", NULL), 1);
}

/* Edges of the trainer's files: a FIFO as data is refused at once (never waited on),
 * and a log that cannot be written is an error, not a run that "succeeds" without it. */
static void test_file_edges(void **st) {
    (void)st;
    const char *fifo = tpath("data.fifo");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    alarm(20);                                                /* a hang ends the program */
    assert_int_equal(run(&syn, "train", "--data", fifo, "--quiet", NULL), 1);
    assert_non_null(strstr(g_err, "is a FIFO, not a regular file"));
    alarm(0);
    assert_int_equal(run(&syn, "train", "--data", g_csv, "--epochs", "1", "--log", "/dev/full", "--quiet", NULL), 1);
    assert_non_null(strstr(g_err, "/dev/full: cannot write the log"));
    /* resuming with a log that is not a regular file does not try to read it back */
    const char *c = tpath("edge.ckpt");
    assert_int_equal(run(&syn, "train", "--data", g_csv, "--epochs", "1", "--save", c, "--quiet", NULL), 0);
    alarm(20);
    assert_int_equal(run(&syn, "train", "--data", g_csv, "--epochs", "2", "--resume", c, "--log", "/dev/full",
                         "--quiet", NULL), 1);
    assert_non_null(strstr(g_err, "cannot write the log"));
    alarm(0);
    /* results on a stdout that cannot take them: exit status 1, not 0 */
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int full = open("/dev/full", O_WRONLY), null = open("/dev/null", O_WRONLY);
        dup2(full, 1);
        dup2(null, 2);
        char *argv[] = {"prog", "eval", "--data", g_csv, "--load", (char *)c, "--json", NULL};
        _exit(cdl_main(&syn, 7, argv));
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
}

/* Inputs are fed by name from the dataset's columns: a regression with a real target
 * and three inputs trains from a CSV's header columns; an input the dataset does not
 * provide is an error naming it (never zeros), and --feed (or the model's train {}
 * section) maps it. */
static void test_feed_by_name(void **st) {
    (void)st;
    const char *csv = tpath("reg.csv");
    FILE *f = fopen(csv, "w");
    assert_non_null(f);
    fprintf(f, "a,b,target\n");
    cdl_rng_key k = {5, 0, 0};
    for (int i = 0; i < 320; i++) {
        double n[3];
        cdl_randn_f64(k, (uint64_t)i * 3, 3, n);
        fprintf(f, "%.6f,%.6f,%.6f\n", n[0], n[1], 2 * n[0] - n[1] + 0.5 + 0.01 * n[2]);
    }
    fclose(f);
    assert_int_equal(run(&reg, "train", "--data", csv, "--epochs", "1", "--quiet", NULL), 1);
    assert_non_null(strstr(g_err, "input t f32[B] has no column of that name in dataset reg.csv"));
    assert_non_null(strstr(g_err, "--feed t=COLUMN"));
    const char *ck = tpath("reg.ckpt");
    int rc = run(&reg, "train", "--data", csv, "--feed", "t=target", "--epochs", "8", "--optimizer", "sgd:lr=0.1",
                 "--save", ck, "--json", NULL);
    if (rc) fail_msg("%s", g_err);
    assert_non_null(strstr(g_err, "inputs fed: t <- column target"));
    assert_true(json_num(g_out, "test_loss") < 1e-3);            /* the target is learnt, not zeros */
    assert_true(isnan(json_num(g_out, "test_accuracy")));        /* no labels: no accuracy */
    cdl_net *net = load_net(&reg, ck, NULL);
    const float *w = net->param;
    assert_true(fabs(w[0] - 2) < 0.02 && fabs(w[1] + 1) < 0.02 && fabs(w[2] - 0.5) < 0.02);
    cdl_net_free(net);
    /* the same map from the model's train {} section, for train and eval */
    const char *ck2 = tpath("regdef.ckpt");
    assert_int_equal(run(&regdef, "train", "--data", csv, "--epochs", "8", "--save", ck2, "--json", NULL), 0);
    assert_true(json_num(g_out, "test_loss") < 1e-3);
    assert_int_equal(run(&regdef, "eval", "--data", csv, "--load", ck2, "--json", NULL), 0);
    assert_true(json_num(g_out, "test_loss") < 1e-3);
    /* y is the target under its generic name too */
    rc = run(&reg, "eval", "--data", csv, "--load", ck, "--feed", "t=y", "--json", NULL);
    if (rc) fail_msg("%s", g_err);
    assert_true(json_num(g_out, "test_loss") < 1e-3);
    assert_int_equal(run(&reg, "eval", "--data", csv, "--load", ck, "--feed", "t=a,t=y", NULL), 0);   /* last wins */
    assert_int_equal(run(&reg, "eval", "--data", csv, "--load", ck, "--feed", "z=y", NULL), 1);
    assert_non_null(strstr(g_err, "model reg has no input 'z'"));
    assert_int_equal(run(&reg, "eval", "--data", csv, "--load", ck, "--feed", "t", NULL), 1);
    /* random data shaped like the inputs */
    rc = run(&syn, "train", "--data", "random", "--epochs", "1", "--json", "--quiet", NULL);
    if (rc) fail_msg("%s", g_err);
    assert_true(json_num(g_out, "steps") == 1024 / 16);
    assert_int_equal(run(&reg, "train", "--data", "random:40", "--epochs", "1", "--json", "--quiet", NULL), 0);
    assert_true(json_num(g_out, "steps") == 3);
    assert_int_equal(run(&reg, "train", "--data", "random:0", "--quiet", NULL), 1);
}

static void test_gradcheck(void **st) {
    (void)st;
    int rc = run(&gc, "gradcheck", "--json", NULL);
    if (rc) fail_msg("%s%s", g_out, g_err);
    assert_non_null(strstr(g_out, "\"ok\":true"));
    assert_true(json_num(g_out, "checked") == 15 + 32);       /* all params + the input x */
    rc = run(&gc, "gradcheck", "--batch", "5", "--n", "4", NULL);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(g_out, "fc.weight"));
    rc = run(&gcbad, "gradcheck", NULL);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(g_out, "FAILED"));
    assert_non_null(strstr(g_out, "fc.bias[0]"));
    assert_int_equal(run(&syn, "gradcheck", NULL), 1);
    assert_non_null(strstr(g_err, "f64"));
}

/* gradcheck's batch defaults to 8 rows (or the compiled batch when smaller): a small
 * batch keeps relu-like kinks away from the step; --batch still chooses. */
static void test_gradcheck_batch(void **st) {
    (void)st;
    int rc = run(&gc16, "gradcheck", "--json", NULL);
    if (rc) fail_msg("%s%s", g_out, g_err);
    assert_true(json_num(g_out, "checked") == 15 + 8 * 4);  /* all params + the 8 rows of x */
    assert_int_equal(run(&gc16, "gradcheck", NULL), 0);
    assert_non_null(strstr(g_out, "gradcheck gc16: batch 8,"));
    assert_int_equal(run(&gc16, "gradcheck", "--batch", "16", NULL), 0);
    assert_non_null(strstr(g_out, "batch 16,"));
    assert_int_equal(run(&gc, "gradcheck", "--batch", "16", NULL), 1);  /* above the compiled 8 */
    assert_non_null(strstr(g_err, "larger than the compiled batch 8"));
}

/* A failure next to a kink says so.  L = |w0| + |w1| at (1e-7, 1e-9), eps 1e-6: both
 * central differences are wrong (the kink at 0 is within eps); w0 passes when looked at
 * again at eps / 100, w1 (within eps / 100 too) fails, reported as next to a kink. */
static void test_gradcheck_kink(void **st) {
    (void)st;
    assert_int_equal(run(&kink, "gradcheck", "--json", NULL), 1);
    assert_true(json_num(g_out, "checked") == 2);
    assert_true(json_num(g_out, "failed") == 1);
    assert_true(json_num(g_out, "kinks") == 2);
    assert_true(json_num(g_out, "kink_failed") == 1);
    assert_non_null(strstr(g_out, "\"worst\":\"w[1]\""));
    assert_int_equal(run(&kink, "gradcheck", NULL), 1);
    assert_non_null(strstr(g_out, "(2 near a kink)"));
    assert_non_null(strstr(g_out, "1 values sat next to a kink"));
    assert_non_null(strstr(g_out, "1 of the values off sit next to a kink"));
    /* a plain wrong gradient is not blamed on a kink */
    assert_int_equal(run(&gcbad, "gradcheck", "--json", NULL), 1);
    assert_true(json_num(g_out, "kinks") == 0);
    assert_true(json_num(g_out, "kink_failed") == 0);
}

/* --no-input-check: the input gradient (wrong here, as a stop_gradient on a path from
 * the input makes it by design) is not checked; the parameters still are. */
static void test_gradcheck_no_input_check(void **st) {
    (void)st;
    assert_int_equal(run(&gcbadin, "gradcheck", NULL), 1);
    assert_non_null(strstr(g_out, "input x"));
    assert_non_null(strstr(g_out, "worst x[0]"));
    int rc = run(&gcbadin, "gradcheck", "--no-input-check", "--json", NULL);
    if (rc) fail_msg("%s%s", g_out, g_err);
    assert_true(json_num(g_out, "checked") == 15);
    assert_int_equal(run(&gcbad, "gradcheck", "--no-input-check", NULL), 1);
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A grayscale PNG written by cdl_png_write_gray: *w x *h pixels into pix (cap bytes). */
static void read_png_gray(const char *path, uint32_t *w, uint32_t *h, unsigned char *pix, size_t cap) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static unsigned char buf[1 << 16], raw[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_true(n > 41 && !memcmp(buf, "\x89PNG\r\n\x1a\n", 8) && !memcmp(buf + 37, "IDAT", 4));
    *w = be32(buf + 16), *h = be32(buf + 20);
    assert_true((size_t)*w * *h <= cap);
    uLongf rl = sizeof raw;
    assert_int_equal(uncompress(raw, &rl, buf + 41, be32(buf + 33)), Z_OK);
    assert_int_equal(rl, *h * (*w + 1));
    for (uint32_t y = 0; y < *h; y++) memcpy(pix + (size_t)y * *w, raw + (size_t)y * (*w + 1) + 1, *w);
}

/* cdl_png_write_tiles: the grid's geometry, the scaling, clamping, NaN and empty tiles. */
static void test_png_tiles(void **st) {
    (void)st;
    const float a[6] = {0, 0.5f, 1, 2, -1, NAN}, b[6] = {1, 1, 1, 1, 1, 1};
    const float *tiles[3] = {a, NULL, b};                 /* 3 tiles of 3x2, 2 columns */
    const char *png = tpath("tiles.png");
    assert_int_equal(cdl_png_write_tiles(png, tiles, 3, 2, 3, 2, 2), 0);
    uint32_t w, h;
    static unsigned char px[1 << 12];
    read_png_gray(png, &w, &h, px, sizeof px);
    assert_int_equal(w, 2 * (3 * 2 + 4) + 4);             /* pad 2 * scale around tiles */
    assert_int_equal(h, 2 * (2 * 2 + 4) + 4);
    const unsigned char want_a[2][3] = {{0, 128, 255}, {255, 0, 0}};
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++) {
            int tx = (int)x - 4, ty = (int)y - 4, in_a = tx >= 0 && tx < 6 && ty >= 0 && ty < 4;
            int in_b = tx >= 0 && tx < 6 && ty >= 8 && ty < 12;
            int want = in_a ? want_a[ty / 2][tx / 2] : in_b ? 255 : 96;
            if (px[y * w + x] != want) fail_msg("pixel (%u, %u) = %d, want %d", x, y, px[y * w + x], want);
        }
    assert_int_equal(cdl_png_write_tiles(png, tiles, 3, 0, 3, 2, 2), -1);
    assert_non_null(strstr(cdl_last_error(), "bad tile grid"));
    assert_int_equal(cdl_png_write_tiles(png, tiles, 3, 2, 3, 2, 0), -1);
}

static void test_sample_png(void **st) {
    (void)st;
    const char *png = tpath("s.png");
    int rc = run(&syn, "sample", "-o", png, "--n", "9", NULL);
    if (rc) fail_msg("%s", g_err);
    FILE *f = fopen(png, "rb");
    assert_non_null(f);
    static unsigned char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_true(n > 8 + 25 + 12);
    assert_memory_equal(buf, "\x89PNG\r\n\x1a\n", 8);
    assert_int_equal(be32(buf + 8), 13);
    assert_memory_equal(buf + 12, "IHDR", 4);
    uint32_t w = be32(buf + 16), h = be32(buf + 20);
    assert_int_equal(w, 3 * (4 + 2) + 2);                     /* 16 values -> 4x4 tiles, 3x3 grid */
    assert_int_equal(h, w);
    assert_int_equal(be32(buf + 29), (uint32_t)crc32(crc32(0, NULL, 0), buf + 12, 17));
    uint32_t zl = be32(buf + 33);
    assert_memory_equal(buf + 37, "IDAT", 4);
    unsigned char raw[1024];
    uLongf rl = sizeof raw;
    assert_int_equal(uncompress(raw, &rl, buf + 41, zl), Z_OK);
    assert_int_equal(rl, h * (w + 1));
    assert_memory_equal(buf + 41 + zl + 4 + 4, "IEND", 4);
    assert_int_equal(run(&gc, "sample", NULL), 1);            /* no entry point */
    assert_int_equal(run(&syn, "sample", "--entry", "nope", NULL), 1);
}

/* A safetensors file read whole, its header parsed (json.h). */
typedef struct stfile { char *buf; size_t n, hlen; json_doc doc; } stfile;

static void st_open(stfile *f, const char *path) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    static char buf[1 << 16];
    f->buf = buf;
    f->n = fread(buf, 1, sizeof buf, fp);
    assert_true(feof(fp) && f->n > 8);
    fclose(fp);
    f->hlen = 0;
    for (int k = 7; k >= 0; k--) f->hlen = f->hlen << 8 | (unsigned char)buf[k];
    char err[128];
    assert_int_equal(json_parse(&f->doc, buf + 8, f->hlen, 1 << 14, err, sizeof err), 0);
}

/* Tensor `name`: checks its dtype and shape (rank values, -1 ends), returns its data. */
static const void *st_get(const stfile *f, const char *name, const char *dtype, const int64_t *shape) {
    int32_t t = json_get(&f->doc, 0, name);
    if (t < 0) fail_msg("no tensor %s", name);
    assert_string_equal(json_str(&f->doc, json_get(&f->doc, t, "dtype")), dtype);
    int32_t sh = json_get(&f->doc, t, "shape"), k = f->doc.node[sh].first;
    for (; shape[0] >= 0; shape++, k = f->doc.node[k].next) {
        assert_true(k >= 0);
        assert_int_equal(f->doc.node[k].u, shape[0]);
    }
    assert_int_equal(k, -1);
    int32_t off = f->doc.node[json_get(&f->doc, t, "data_offsets")].first;
    return f->buf + 8 + f->hlen + f->doc.node[off].u;
}

static const char *st_meta(const stfile *f, const char *key) {
    int32_t m = json_get(&f->doc, 0, "__metadata__"), v = m < 0 ? -1 : json_get(&f->doc, m, key);
    return v < 0 ? "" : json_str(&f->doc, v);
}

/* grad writes what reproduces its computation: the parameters, every input as fed,
 * the rows and loss of each batch, the gradients, and the metadata (step, seed,
 * precision, feeds, normalisation). */
static void test_grad_dump(void **st) {
    (void)st;
    const char *c = tpath("g.ckpt"), *out = tpath("g.safetensors");
    assert_int_equal(run(&syn, "train", "--data", g_csv, "--epochs", "1", "--save", c, "--quiet", NULL), 0);
    int rc = run(&syn, "grad", "--data", g_csv, "--load", c, "--batches", "2", "-o", out, NULL);
    if (rc) fail_msg("%s", g_err);
    /* the first 16 rows of the CSV, in order */
    cdl_net *net = load_net(&syn, c, NULL);
    FILE *csv = fopen(g_csv, "r");
    char line[256];
    assert_non_null(fgets(line, sizeof line, csv));
    float *x = net->in[0];
    int32_t *y = net->in[1];
    for (int r = 0; r < 16; r++) {
        assert_non_null(fgets(line, sizeof line, csv));
        assert_int_equal(sscanf(line, "%f,%f,%f,%f,%d", x + 4 * r, x + 4 * r + 1, x + 4 * r + 2,
                                x + 4 * r + 3, y + r), 5);
    }
    fclose(csv);
    uint64_t step = net->step, seed = net->seed;
    assert_true(step > 0);
    double loss0 = syn.grad(net, 16);                         /* same step as the dump: dropout alike */
    stfile f;
    st_open(&f, out);
    static const int64_t s_x[] = {16, 2, 2, -1}, s_y[] = {16, -1}, s_1[] = {1, -1}, s_w[] = {3, 4, -1},
                         s_b[] = {3, -1};
    assert_memory_equal(st_get(&f, "x.0", "F32", s_x), x, 64 * sizeof(float));
    assert_memory_equal(st_get(&f, "y.0", "I32", s_y), y, 16 * sizeof(int32_t));
    st_get(&f, "x.1", "F32", s_x);
    int32_t rows;
    memcpy(&rows, st_get(&f, "rows.0", "I32", s_1), 4);
    assert_int_equal(rows, 16);
    double l;
    memcpy(&l, st_get(&f, "loss.0", "F64", s_1), 8);
    assert_true(l == loss0);
    assert_memory_equal(st_get(&f, "grad.0.fc.weight", "F32", s_w), net->grad, 12 * sizeof(float));
    st_get(&f, "grad.1.fc.bias", "F32", s_b);
    assert_memory_equal(st_get(&f, "param.fc.weight", "F32", s_w), net->param, 12 * sizeof(float));
    st_get(&f, "param.fc.state", "F32", s_1);                 /* state buffers too, but no gradient */
    assert_int_equal(json_get(&f.doc, 0, "grad.0.fc.state"), -1);
    char num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)step);
    assert_string_equal(st_meta(&f, "step"), num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)seed);
    assert_string_equal(st_meta(&f, "seed"), num);
    assert_string_equal(st_meta(&f, "format"), "cdl-grad 1");
    assert_string_equal(st_meta(&f, "precision"), "f32");
    assert_string_equal(st_meta(&f, "mode"), "train");
    assert_string_equal(st_meta(&f, "feeds"), "x=x,y=y");
    assert_string_equal(st_meta(&f, "normalize"), "none");
    assert_string_equal(st_meta(&f, "batches"), "2");
    json_free(&f.doc);
    float x0[64];
    memcpy(x0, x, sizeof x0);
    cdl_net_free(net);
    assert_non_null(strstr(g_out, "batch 0: 16 rows"));
    /* normalised inputs are written as fed, and the metadata says how */
    rc = run(&syn, "grad", "--data", g_csv, "--batches", "1", "--normalize", "0.5,2", "-o", out, "--quiet", NULL);
    if (rc) fail_msg("%s", g_err);
    st_open(&f, out);
    const float *xn = st_get(&f, "x.0", "F32", s_x);
    for (int k = 0; k < 64; k++) assert_true(fabsf(xn[k] - (x0[k] - 0.5f) / 2) < 1e-6f);
    assert_string_equal(st_meta(&f, "normalize"), "(x - 0.5) / 2");
    assert_string_equal(st_meta(&f, "step"), "0");
    json_free(&f.doc);
    /* the last batch is partial: its rows say so, and its inputs have that many rows */
    rc = run(&syn, "grad", "--data", g_csv, "--limit", "20", "--batches", "5", "-o", out, "--quiet", NULL);
    if (rc) fail_msg("%s", g_err);
    st_open(&f, out);
    static const int64_t s_x4[] = {4, 2, 2, -1};
    memcpy(&rows, st_get(&f, "rows.1", "I32", s_1), 4);
    assert_int_equal(rows, 4);
    st_get(&f, "x.1", "F32", s_x4);
    assert_int_equal(json_get(&f.doc, 0, "loss.2"), -1);
    assert_string_equal(st_meta(&f, "batches"), "2");
    json_free(&f.doc);
    assert_int_equal(run(&syn, "grad", "--data", g_csv, NULL), 2);     /* -o missing */
}

/* grad --eval: the model's eval-mode gradient (no dropout), said in the metadata; the
 * file's loss and gradients are eval_grad's on the file's own inputs. */
static void test_grad_eval(void **st) {
    (void)st;
    const char *c = tpath("ge.ckpt"), *out = tpath("ge.safetensors");
    assert_int_equal(run(&syn, "train", "--data", g_csv, "--epochs", "1", "--save", c, "--quiet", NULL), 0);
    int rc = run(&syn, "grad", "--eval", "--data", g_csv, "--load", c, "--batches", "1", "-o", out, NULL);
    if (rc) fail_msg("%s", g_err);
    assert_non_null(strstr(g_out, "(eval mode)"));
    stfile f;
    st_open(&f, out);
    assert_string_equal(st_meta(&f, "mode"), "eval");
    static const int64_t s_x[] = {16, 2, 2, -1}, s_y[] = {16, -1}, s_1[] = {1, -1}, s_w[] = {3, 4, -1};
    cdl_net *net = load_net(&syn, c, NULL);
    memcpy(net->in[0], st_get(&f, "x.0", "F32", s_x), 64 * sizeof(float));
    memcpy(net->in[1], st_get(&f, "y.0", "I32", s_y), 16 * sizeof(int32_t));
    double le = syn.eval_grad(net, 16), l;
    memcpy(&l, st_get(&f, "loss.0", "F64", s_1), 8);
    assert_true(l == le);
    assert_memory_equal(st_get(&f, "grad.0.fc.weight", "F32", s_w), net->grad, 12 * sizeof(float));
    json_free(&f.doc);
    double ltrain = syn.grad(net, 16);                        /* syn's dropout makes train mode differ */
    assert_true(ltrain != le);
    cdl_net_free(net);
    assert_int_equal(run(&syn, "eval", "--eval", "--data", g_csv, NULL), 2);   /* grad's option only */
}

static void test_schedules_plot(void **st) {
    (void)st;
    /* the plot writer alone, with missing values */
    double e[3] = {1, 2, 3}, tl[3] = {1, 0.5, 0.25}, vl[3] = {NAN, 0.6, 0.3}, acc[3] = {NAN, NAN, NAN};
    const char *svg = tpath("p.svg");
    assert_int_equal(cdl_plot_svg(svg, "a <b> & c", 3, e, tl, vl, acc), 0);
    FILE *f = fopen(svg, "r");
    static char buf[1 << 14];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    assert_non_null(strstr(buf, "a &lt;b&gt; &amp; c"));
    assert_non_null(strstr(buf, "train loss"));
    assert_null(strstr(buf, "nan"));
    assert_int_equal(cdl_plot_svg("/nonexistent/dir/x.svg", "t", 3, e, tl, vl, acc), -1);
    unsigned char px[4] = {0, 64, 128, 255};
    assert_int_equal(cdl_png_write_gray(tpath("t.png"), 2, 2, px), 0);
    assert_int_equal(cdl_png_write_gray(tpath("t.png"), 0, 2, px), -1);
}

static void test_fashion_subset(void **st) {
    (void)st;
    if (!have_fashion()) {
        print_message("fashion-mnist not installed; skipped\n");
        skip();
    }
    const char *c = tpath("fm.ckpt");
    /* defaults from the model (sgd, lr 0.05, fashion-mnist); a 2000/1000 subset */
    int rc = run(&fm, "train", "--epochs", "3", "--limit", "2000", "--test-limit", "1000", "--json",
                 "--save", c, "--quiet", NULL);
    if (rc) fail_msg("%s", g_err);
    assert_true(json_num(g_out, "steps") == 3 * 40);
    assert_true(json_num(g_out, "test_accuracy") > 0.65);
    assert_true(json_num(g_out, "train_loss") < 1.0);
    rc = run(&fm, "eval", "--load", c, "--test-limit", "500", "--json", NULL);
    if (rc) fail_msg("%s", g_err);
    assert_true(json_num(g_out, "test_accuracy") > 0.6);
    assert_true(json_num(g_out, "examples") == 500);
    /* the synthetic model cannot eat 784-value images */
    assert_int_equal(run(&syn, "eval", "--data", "fashion-mnist", "--load", c, NULL), 1);
    assert_non_null(strstr(g_err, "784 values"));
}

/* tr_prefault (the trainer faults in the first step's blocks while oneDNN makes its
 * kernels): every page of a block that starts and ends inside a page becomes resident,
 * the contents unchanged (a pattern on the first page, zeros elsewhere); NULL and 0
 * bytes do nothing.  The residency check is skipped where the kernel lacks
 * MADV_POPULATE_WRITE (then tr_prefault is a no-op by design). */
static void test_prefault(void **st) {
    (void)st;
    long pg = sysconf(_SC_PAGESIZE);
    assert_true(pg > 0);
    enum { PAGES = 64 };
    size_t len = (size_t)(PAGES + 2) * (size_t)pg;
    unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    unsigned char *blk = m + pg + 100;            /* from inside page 1 to inside page PAGES */
    size_t bytes = (size_t)(PAGES - 1) * (size_t)pg;
    for (int i = 0; i < 50; i++) blk[i] = (unsigned char)(i * 7 + 1);
    unsigned char vec[PAGES + 2];
    assert_int_equal(mincore(m, len, vec), 0);
    int before = 0;
    for (int p = 2; p <= PAGES; p++) before += vec[p] & 1;
    assert_int_equal(before, 0);                  /* untouched: not resident yet */
    tr_prefault(NULL, 100);
    tr_prefault(blk, 0);
    tr_prefault(blk, bytes);
#ifdef MADV_POPULATE_WRITE
    if (madvise(m, (size_t)pg, MADV_POPULATE_WRITE) == 0) {
        assert_int_equal(mincore(m, len, vec), 0);
        for (int p = 1; p <= PAGES; p++) assert_int_equal(vec[p] & 1, 1);
    }
#endif
    for (int i = 0; i < 50; i++) assert_int_equal(blk[i], (unsigned char)(i * 7 + 1));
    for (size_t i = 50; i < bytes; i++)
        if (blk[i]) fail_msg("byte %zu of the block changed to %d", i, blk[i]);
    munmap(m, len);
}

static int setup(void **st) {
    if (tmpdir_setup(st)) return -1;
    snprintf(g_csv, sizeof g_csv, "%s/syn.csv", tmp_dir);
    write_csv(g_csv);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_usage),
        cmocka_unit_test(test_strict_numbers),
        cmocka_unit_test(test_train_synthetic),
        cmocka_unit_test(test_resume_exact),
        cmocka_unit_test(test_prefault),
        cmocka_unit_test(test_log_every),
        cmocka_unit_test(test_nan_stop),
        cmocka_unit_test(test_nan_grad_stop),
        cmocka_unit_test(test_nan_cause),
        cmocka_unit_test(test_eval_and_defaults),
        cmocka_unit_test(test_data_mismatch),
        cmocka_unit_test(test_file_edges),
        cmocka_unit_test(test_feed_by_name),
        cmocka_unit_test(test_augment_off),
        cmocka_unit_test(test_gradcheck),
        cmocka_unit_test(test_gradcheck_batch),
        cmocka_unit_test(test_gradcheck_kink),
        cmocka_unit_test(test_gradcheck_no_input_check),
        cmocka_unit_test(test_sample_png),
        cmocka_unit_test(test_png_tiles),
        cmocka_unit_test(test_grad_dump),
        cmocka_unit_test(test_grad_eval),
        cmocka_unit_test(test_schedules_plot),
        cmocka_unit_test(test_fashion_subset),
    };
    return cmocka_run_group_tests(tests, setup, tmpdir_teardown);
}
