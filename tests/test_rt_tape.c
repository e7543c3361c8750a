/* test_rt_tape.c -- the dynamic tape (runtime/tape*.c): every op's backward rule checked
 * by central finite differences in f64 (parameters and a model input), broadcasting,
 * fan-out, random ops keyed like the static code, eval / train modes, the zero gradient
 * of unused parameters, errors (shapes, arena exhaustion, NULL propagation) without a
 * crash, no heap allocation in a step, statistics, and the f32 build against f64.
 *
 * Each case builds its ops on a small hand-made model (a cdl_model filled in at run time:
 * parameters p0.. of the case's shapes, a real input x [4, 6] and labels y i32 [4]) and
 * returns a tensor y; the loss is sum(y * R) with a fixed pseudo-random R, so that every
 * element of y carries a different weight. */
#include "test_rt_util.h"

#include <limits.h>

enum { MAXP = 6, NB = 4, NX = 6 };

typedef cdl_t *(*build_fn)(cdl_tape *tp);

typedef struct Case {
    const char *name;
    int np;
    int rank[MAXP];
    int64_t dims[MAXP][4];
    unsigned state;        /* parameters that are CDL_T_STATE (batch norm running stats) */
    unsigned positive;     /* parameters initialised in [0.5, 1.5] */
    build_fn build;
    int train;
    int check_input;       /* also check d loss / d x */
} Case;

typedef struct TM {
    cdl_model m;
    cdl_tensor params[MAXP];
    cdl_tensor inputs[2];
    cdl_net *net;
    cdl_tape *tp;
} TM;

static int64_t prod(int rank, const int64_t *d) {
    int64_t n = 1;
    for (int i = 0; i < rank; i++) n *= d[i];
    return n;
}

/* A model whose parameter table has the case's shapes (state ones last is not needed
 * for the tape: the flags say which are trainable; train_count covers the prefix up to
 * the last trainable one). */
static TM *tm_new(const Case *c, int real_size, size_t act) {
    TM *t = calloc(1, sizeof *t);
    assert_non_null(t);
    size_t off = 0, train = 0;
    for (int p = 0; p < c->np; p++) {
        static char names[MAXP][8];
        snprintf(names[p], sizeof names[p], "p%d", p);
        cdl_tensor *d = &t->params[p];
        d->name = names[p];
        d->dtype = CDL_F32;
        d->offset = off;
        d->rank = c->rank[p];
        for (int i = 0; i < d->rank; i++) d->dims[i] = c->dims[p][i];
        d->flags = (c->state >> p & 1) ? CDL_T_STATE : 0;
        off += (size_t)prod(d->rank, d->dims);
        if (!(c->state >> p & 1)) train = off;
    }
    t->inputs[0] = (cdl_tensor){.name = "x", .dtype = CDL_F32, .rank = 2, .dims = {NB, NX}, .flags = CDL_T_BATCHED};
    t->inputs[1] = (cdl_tensor){.name = "y", .dtype = CDL_I32, .rank = 1, .dims = {NB}, .flags = CDL_T_BATCHED};
    t->m = (cdl_model){.abi = CDL_ABI, .name = c->name, .real_size = real_size, .batch = NB, .n_params = c->np, .params = t->params,
                       .param_count = off, .train_count = train, .n_inputs = 2, .inputs = t->inputs, .act_bytes = act};
    t->net = cdl_net_new(&t->m);
    assert_non_null(t->net);
    t->net->seed = 7;
    t->net->step = 3;
    /* deterministic values: normals, positives where asked */
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int p = 0; p < c->np; p++) {
        const cdl_tensor *d = &t->params[p];
        int64_t n = prod(d->rank, d->dims);
        for (int64_t i = 0; i < n; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            double u = (double)(s >> 11) / 9007199254740992.0;
            double v = (c->positive >> p & 1) ? 0.5 + u : 2 * u - 1;
            if (real_size == 8) ((double *)t->net->param)[d->offset + (size_t)i] = v;
            else ((float *)t->net->param)[d->offset + (size_t)i] = (float)v;
        }
    }
    for (int i = 0; i < NB * NX; i++) {
        double v = sin(0.7 * i + 0.3);
        if (real_size == 8) ((double *)t->net->in[0])[i] = v;
        else ((float *)t->net->in[0])[i] = (float)v;
    }
    for (int i = 0; i < NB; i++) ((int32_t *)t->net->in[1])[i] = (i * 5 + 1) % NX;
    t->tp = cdl_tape_attach(t->net);
    assert_non_null(t->tp);
    return t;
}

static void tm_free(TM *t) {
    cdl_net_free(t->net);
    free(t);
}

/* loss = sum(y * R), R[i] = sin(1.3 i + 0.5) + 0.2: every element weighted differently. */
static cdl_t *project(cdl_tape *tp, cdl_t *y, int real_size) {
    if (!y) return NULL;
    if (y->rank == 0) return y;
    cdl_t *r = cdl_t_new(tp, CDL_F32, y->rank, y->dims);
    if (!r) return NULL;
    for (int64_t i = 0; i < r->numel; i++) {
        double v = sin(1.3 * (double)i + 0.5) + 0.2;
        if (real_size == 8) ((double *)r->data)[i] = v;
        else ((float *)r->data)[i] = (float)v;
    }
    return cdl_t_sum(tp, cdl_t_mul(tp, y, r), 0, 0);
}

static double run_loss(TM *t, const Case *c) {
    cdl_tape_reset(t->tp, c->train);
    cdl_t *loss = project(t->tp, c->build(t->tp), t->m.real_size);
    assert_non_null(loss);
    return cdl_t_item(loss);
}

/* Analytic gradients (parameters into net->grad, x into in_grad[0]) against central
 * differences, |num - ana| <= 1e-5 + 1e-3 |num|. */
static void gradcheck(const Case *c) {
    TM *t = tm_new(c, 8, 1 << 22);
    cdl_tape_reset(t->tp, c->train);
    cdl_t *loss = project(t->tp, c->build(t->tp), 8);
    assert_non_null(loss);
    if (cdl_backward(t->tp, loss, 1, c->check_input) != 0) fail_msg("%s: backward: %s", c->name, cdl_last_error());
    size_t ng = t->m.train_count;
    double *ana = malloc(sizeof(double) * (ng + NB * NX));
    assert_non_null(ana);
    memcpy(ana, t->net->grad, sizeof(double) * ng);
    if (c->check_input) memcpy(ana + ng, t->net->in_grad[0], sizeof(double) * NB * NX);
    double *P = t->net->param, *X = t->net->in[0];
    const double h = 1e-6;
    int checked = 0;
    for (int p = 0; p < c->np; p++) {
        if (c->state >> p & 1) continue;
        const cdl_tensor *d = &t->params[p];
        for (int64_t i = 0; i < prod(d->rank, d->dims); i++) {
            double *v = &P[d->offset + (size_t)i], keep = *v;
            *v = keep + h;
            double lp = run_loss(t, c);
            *v = keep - h;
            double lm = run_loss(t, c);
            *v = keep;
            double num = (lp - lm) / (2 * h), a = ana[d->offset + (size_t)i];
            if (!(fabs(num - a) <= 1e-5 + 1e-3 * fabs(num)))
                fail_msg("%s: d/d%s[%lld]: numeric %.10g analytic %.10g", c->name, d->name, (long long)i, num, a);
            checked++;
        }
    }
    if (c->check_input) {
        for (int i = 0; i < NB * NX; i++) {
            double keep = X[i];
            X[i] = keep + h;
            double lp = run_loss(t, c);
            X[i] = keep - h;
            double lm = run_loss(t, c);
            X[i] = keep;
            double num = (lp - lm) / (2 * h), a = ana[ng + (size_t)i];
            if (!(fabs(num - a) <= 1e-5 + 1e-3 * fabs(num)))
                fail_msg("%s: d/dx[%d]: numeric %.10g analytic %.10g", c->name, i, num, a);
            checked++;
        }
    }
    assert_true(checked > 0);
    free(ana);
    tm_free(t);
}

/* ------------------------------------------------------------------ the cases */

#define P(i) cdl_t_param(tp, i)
#define X() cdl_t_input(tp, 0, NB)
#define Y() cdl_t_input(tp, 1, NB)

static cdl_t *b_add(cdl_tape *tp) { return cdl_t_add(tp, P(0), P(1)); }
static cdl_t *b_sub(cdl_tape *tp) { return cdl_t_sub(tp, P(0), P(1)); }
static cdl_t *b_mul(cdl_tape *tp) { return cdl_t_mul(tp, P(0), P(1)); }
static cdl_t *b_div(cdl_tape *tp) { return cdl_t_div(tp, P(0), P(1)); }
static cdl_t *b_max(cdl_tape *tp) { return cdl_t_add(tp, cdl_t_maximum(tp, P(0), P(1)), cdl_t_minimum(tp, P(1), P(0))); }
static cdl_t *b_scalar(cdl_tape *tp) { return cdl_t_div(tp, cdl_t_mul(tp, P(0), P(1)), cdl_t_add(tp, P(1), P(2))); }
static cdl_t *b_fanout(cdl_tape *tp) {
    cdl_t *a = P(0);
    return cdl_t_add(tp, cdl_t_mul(tp, a, a), cdl_t_tanh(tp, a));
}

static cdl_t *b_unary1(cdl_tape *tp) {
    cdl_t *a = P(0), *e = cdl_t_exp(tp, a);
    cdl_t *s = cdl_t_add(tp, cdl_t_log(tp, e), cdl_t_sqrt(tp, e));
    s = cdl_t_add(tp, s, cdl_t_abs(tp, a));
    s = cdl_t_add(tp, s, cdl_t_square(tp, a));
    s = cdl_t_add(tp, s, cdl_t_pow(tp, a, 3));
    s = cdl_t_add(tp, s, cdl_t_pow(tp, e, 0.5));
    s = cdl_t_add(tp, s, cdl_t_pow(tp, a, 2));
    s = cdl_t_add(tp, s, cdl_t_pow(tp, a, 1));
    s = cdl_t_add(tp, s, cdl_t_neg(tp, a));
    return s;
}

static cdl_t *b_unary2(cdl_tape *tp) {
    cdl_t *a = P(0);
    cdl_t *s = cdl_t_add(tp, cdl_t_relu(tp, a), cdl_t_leaky_relu(tp, a, 0.1));
    s = cdl_t_add(tp, s, cdl_t_sigmoid(tp, a));
    s = cdl_t_add(tp, s, cdl_t_tanh(tp, a));
    s = cdl_t_add(tp, s, cdl_t_gelu(tp, a));
    s = cdl_t_add(tp, s, cdl_t_softplus(tp, a));
    s = cdl_t_add(tp, s, cdl_t_elu(tp, a, 0.7));
    s = cdl_t_add(tp, s, cdl_t_clamp(tp, a, -0.45, 0.55));
    return s;
}

static cdl_t *b_dropout(cdl_tape *tp) { return cdl_t_dropout(tp, cdl_t_mul(tp, P(0), P(0)), 0.3, 5, 2); }
static cdl_t *b_stopgrad(cdl_tape *tp) {
    cdl_t *a = P(0);
    return cdl_t_mul(tp, a, cdl_t_stop_gradient(tp, cdl_t_exp(tp, a)));
}

static cdl_t *b_mm00(cdl_tape *tp) { return cdl_t_matmul(tp, P(0), P(1), 0, 0); }
static cdl_t *b_mm01(cdl_tape *tp) { return cdl_t_matmul(tp, P(0), P(1), 0, 1); }
static cdl_t *b_mm10(cdl_tape *tp) { return cdl_t_matmul(tp, P(0), P(1), 1, 0); }
static cdl_t *b_mm11(cdl_tape *tp) { return cdl_t_matmul(tp, P(0), P(1), 1, 1); }
static cdl_t *b_mm_same(cdl_tape *tp) { return cdl_t_matmul(tp, P(0), P(0), 1, 0); }   /* A^T A: both inputs one tensor */

static cdl_t *b_linear(cdl_tape *tp) { return cdl_t_tanh(tp, cdl_t_linear(tp, X(), P(0), P(1))); }
static cdl_t *b_linear3(cdl_tape *tp) { return cdl_t_linear(tp, P(1), P(0), NULL); }

static cdl_t *b_reduce(cdl_tape *tp) {
    cdl_t *a = cdl_t_mul(tp, P(0), P(0));                        /* [2,3,4] */
    cdl_t *s1 = cdl_t_sum(tp, a, 0x5, 0);                        /* [3] */
    cdl_t *s2 = cdl_t_mean(tp, a, 0x2, 1);                       /* [2,1,4] */
    cdl_t *s3 = cdl_t_sum(tp, a, 0, 0);                          /* [] */
    cdl_t *s4 = cdl_t_mean(tp, P(0), 0x6, 0);                    /* [2] */
    cdl_t *t = cdl_t_add(tp, cdl_t_sum(tp, cdl_t_tanh(tp, s1), 0, 0), cdl_t_sum(tp, cdl_t_tanh(tp, s2), 0, 0));
    return cdl_t_add(tp, cdl_t_add(tp, t, cdl_t_tanh(tp, s3)), cdl_t_mean(tp, cdl_t_mul(tp, s4, s4), 0, 0));
}

static cdl_t *b_shapes(cdl_tape *tp) {
    cdl_t *a = cdl_t_broadcast_to(tp, P(0), 3, (const int64_t[]){2, 3, 4});      /* [3,1] -> [2,3,4] */
    cdl_t *b = cdl_t_transpose(tp, cdl_t_mul(tp, a, P(1)), (const int[]){2, 0, 1}); /* [4,2,3] */
    cdl_t *c = cdl_t_reshape(tp, b, 2, (const int64_t[]){4, 6});
    return cdl_t_mul(tp, c, c);
}

static cdl_t *b_concat(cdl_tape *tp) {
    cdl_t *c1 = cdl_t_concat(tp, 3, (cdl_t *[]){P(0), P(1), P(2)}, 1);            /* [2,3]+[2,2]+[2,1] */
    cdl_t *c0 = cdl_t_concat(tp, 2, (cdl_t *[]){c1, cdl_t_tanh(tp, c1)}, 0);       /* [4,6] */
    return cdl_t_mul(tp, c0, c0);
}

static cdl_t *b_slice(cdl_tape *tp) {
    cdl_t *a = cdl_t_mul(tp, P(0), P(0));                                          /* [3,7] */
    cdl_t *s1 = cdl_t_slice(tp, a, 1, 1, 2, 3, 0);                                 /* [3,3] */
    cdl_t *s2 = cdl_t_slice(tp, P(0), 0, 2, 1, 1, 1);                              /* [7] */
    cdl_t *s3 = cdl_t_slice(tp, P(0), -1, 5, 1, 4, 0);                             /* [3,4], two outside: zeros */
    cdl_t *s4 = cdl_t_slice(tp, P(0), 0, -1, 1, 2, 0);                             /* [2,7], row -1 outside */
    cdl_t *t = cdl_t_add(tp, cdl_t_sum(tp, cdl_t_tanh(tp, s1), 0, 0), cdl_t_sum(tp, cdl_t_tanh(tp, s2), 0, 0));
    t = cdl_t_add(tp, t, cdl_t_sum(tp, cdl_t_mul(tp, s3, s3), 0, 0));
    return cdl_t_add(tp, t, cdl_t_sum(tp, cdl_t_tanh(tp, s4), 0, 0));
}

static cdl_t *b_stack(cdl_tape *tp) {
    cdl_t *a = cdl_t_tanh(tp, P(0)), *b = cdl_t_mul(tp, P(0), P(1));             /* [4,3] each */
    cdl_t *s = cdl_t_stack(tp, 3, (cdl_t *[]){a, b, a}, 1);                       /* [4,3,3] */
    cdl_t *u = cdl_t_stack(tp, 2, (cdl_t *[]){b, a}, 0);                          /* [2,4,3] */
    return cdl_t_add(tp, cdl_t_sum(tp, cdl_t_mul(tp, s, s), 0, 0), cdl_t_sum(tp, cdl_t_tanh(tp, u), 0, 0));
}

static cdl_t *b_view(cdl_tape *tp) {
    cdl_t *a = cdl_t_tanh(tp, P(0));                                               /* [2,3,4] */
    cdl_t *v1 = cdl_t_view(tp, a, 6, 2, (const int64_t[]){3, 4});
    cdl_t *v2 = cdl_t_view(tp, a, 0, 1, (const int64_t[]){5});
    return cdl_t_add(tp, cdl_t_sum(tp, cdl_t_mul(tp, v1, v1), 0, 0), cdl_t_sum(tp, cdl_t_exp(tp, v2), 0, 0));
}

static cdl_t *b_softmax(cdl_tape *tp) { return cdl_t_add(tp, cdl_t_softmax(tp, P(0)), cdl_t_log_softmax(tp, P(0))); }

static cdl_t *b_embedding(cdl_tape *tp) {
    cdl_t *ids = cdl_t_new(tp, CDL_I32, 2, (const int64_t[]){2, 3});
    int32_t v[6] = {0, 5, 2, 2, 9, -1};                         /* 9 and -1: outside [0, 6), zero rows */
    memcpy(ids->data, v, sizeof v);
    cdl_t *e = cdl_t_embedding(tp, ids, P(0));                  /* [2,3,4] */
    return cdl_t_mul(tp, e, e);
}

static cdl_t *b_conv(cdl_tape *tp) { return cdl_t_conv2d(tp, P(0), P(1), P(2), 1, 1); }
static cdl_t *b_conv_s2(cdl_tape *tp) { return cdl_t_tanh(tp, cdl_t_conv2d(tp, P(0), P(1), NULL, 2, 0)); }
static cdl_t *b_pool(cdl_tape *tp) {
    cdl_t *a = cdl_t_maxpool2d(tp, P(0), 2, 2, 0);                                  /* [2,3,3,3] */
    cdl_t *b = cdl_t_avgpool2d(tp, P(0), 3, 2, 1);                                  /* [2,3,3,3] */
    return cdl_t_add(tp, a, cdl_t_mul(tp, b, b));
}
static cdl_t *b_batchnorm(cdl_tape *tp) {
    cdl_t *y = cdl_t_batchnorm(tp, P(0), P(1), P(2), P(3), P(4), 1e-5, 0.1);
    return cdl_t_mul(tp, y, y);
}
static cdl_t *b_batchnorm2(cdl_tape *tp) { return cdl_t_tanh(tp, cdl_t_batchnorm(tp, P(0), P(1), P(2), P(3), P(4), 1e-5, 0.1)); }

static cdl_t *b_lstm(cdl_tape *tp) {
    cdl_t *pk = cdl_t_lstm_act(tp, P(0), P(1));                                     /* [2,3,4] */
    cdl_t *h = cdl_t_view(tp, pk, 0, 2, (const int64_t[]){3, 4});
    cdl_t *c = cdl_t_view(tp, pk, 12, 2, (const int64_t[]){3, 4});
    return cdl_t_add(tp, cdl_t_mul(tp, h, h), c);
}
static cdl_t *b_lstm_h(cdl_tape *tp) {                                              /* only h' used: dc' = 0 */
    cdl_t *pk = cdl_t_lstm_act(tp, P(0), P(1));
    return cdl_t_view(tp, pk, 0, 2, (const int64_t[]){3, 4});
}
static cdl_t *b_gru(cdl_tape *tp) { return cdl_t_gru_act(tp, P(0), P(1), P(2)); }

static cdl_t *b_ce(cdl_tape *tp) {
    cdl_t *z = cdl_t_linear(tp, X(), P(0), P(1));
    return cdl_t_add(tp, cdl_t_cross_entropy(tp, z, Y(), 0.1, CDL_RED_MEAN), cdl_t_cross_entropy(tp, z, Y(), 0, CDL_RED_SUM));
}
static cdl_t *b_nll(cdl_tape *tp) { return cdl_t_nll(tp, cdl_t_log_softmax(tp, cdl_t_linear(tp, X(), P(0), P(1))), Y(), CDL_RED_MEAN); }
static cdl_t *b_pairs(cdl_tape *tp) {
    cdl_t *a = P(0), *b = P(1);
    cdl_t *s = cdl_t_add(tp, cdl_t_mse(tp, a, b, CDL_RED_MEAN), cdl_t_l1(tp, a, b, CDL_RED_SUM));
    s = cdl_t_add(tp, s, cdl_t_huber(tp, a, b, 0.5, CDL_RED_MEAN));
    s = cdl_t_add(tp, s, cdl_t_bce(tp, cdl_t_sigmoid(tp, a), cdl_t_sigmoid(tp, b), CDL_RED_MEAN));
    s = cdl_t_add(tp, s, cdl_t_bce_with_logits(tp, a, cdl_t_sigmoid(tp, b), CDL_RED_SUM));
    return cdl_t_add(tp, s, cdl_t_kl_normal(tp, a, b, CDL_RED_MEAN));
}
static cdl_t *b_mlp_input(cdl_tape *tp) {
    cdl_t *h = cdl_t_relu(tp, cdl_t_linear(tp, X(), P(0), P(1)));
    cdl_t *z = cdl_t_add(tp, cdl_t_linear(tp, h, P(2), NULL), cdl_t_sum(tp, cdl_t_square(tp, X()), 2, 1));
    return cdl_t_cross_entropy(tp, z, Y(), 0, CDL_RED_MEAN);
}

#define S2(a, b) {a, b}
static const Case cases[] = {
    {"add_bcast", 2, {2, 1}, {{3, 4}, {4}}, 0, 0, b_add, 0, 0},
    {"sub_bcast", 2, {2, 2}, {{3, 1}, {1, 4}}, 0, 0, b_sub, 0, 0},
    {"mul_bcast", 2, {3, 2}, {{2, 3, 4}, {3, 1}}, 0, 0, b_mul, 0, 0},
    {"div_bcast", 2, {2, 1}, {{3, 4}, {4}}, 0, 2, b_div, 0, 0},
    {"maxmin", 2, {2, 1}, {{3, 4}, {4}}, 0, 0, b_max, 0, 0},
    {"scalar", 3, {2, 0, 0}, {{3, 4}, {0}, {0}}, 0, 6, b_scalar, 0, 0},
    {"fanout", 1, {2}, {{3, 4}}, 0, 0, b_fanout, 0, 0},
    {"unary_math", 1, {2}, {{3, 4}}, 0, 0, b_unary1, 0, 0},
    {"activations", 1, {2}, {{3, 5}}, 0, 0, b_unary2, 0, 0},
    {"dropout", 1, {2}, {{4, 5}}, 0, 0, b_dropout, 1, 0},
    {"matmul", 2, {2, 2}, {{3, 4}, {4, 5}}, 0, 0, b_mm00, 0, 0},
    {"matmul_bt", 2, {2, 2}, {{3, 4}, {5, 4}}, 0, 0, b_mm01, 0, 0},
    {"matmul_at", 2, {2, 2}, {{4, 3}, {4, 5}}, 0, 0, b_mm10, 0, 0},
    {"matmul_atbt", 2, {2, 2}, {{4, 3}, {5, 4}}, 0, 0, b_mm11, 0, 0},
    {"matmul_ata", 1, {2}, {{4, 3}}, 0, 0, b_mm_same, 0, 0},
    {"linear", 2, {2, 1}, {{5, NX}, {5}}, 0, 0, b_linear, 0, 1},
    {"linear_rank3", 2, {2, 3}, {{5, 6}, {2, 3, 6}}, 0, 0, b_linear3, 0, 0},
    {"reduce", 1, {3}, {{2, 3, 4}}, 0, 0, b_reduce, 0, 0},
    {"shapes", 2, {2, 3}, {{3, 1}, {2, 3, 4}}, 0, 0, b_shapes, 0, 0},
    {"concat", 3, {2, 2, 2}, {{2, 3}, {2, 2}, {2, 1}}, 0, 0, b_concat, 0, 0},
    {"slice", 1, {2}, {{3, 7}}, 0, 0, b_slice, 0, 0},
    {"stack", 2, {2, 2}, {{4, 3}, {4, 3}}, 0, 0, b_stack, 0, 0},
    {"view", 1, {3}, {{2, 3, 4}}, 0, 0, b_view, 0, 0},
    {"softmax", 1, {2}, {{3, 5}}, 0, 0, b_softmax, 0, 0},
    {"embedding", 1, {2}, {{6, 4}}, 0, 0, b_embedding, 0, 0},
    {"conv2d", 3, {4, 4, 1}, {{2, 3, 6, 6}, {4, 3, 3, 3}, {4}}, 0, 0, b_conv, 0, 0},
    {"conv2d_stride", 2, {4, 4}, {{2, 2, 7, 7}, {3, 2, 3, 3}}, 0, 0, b_conv_s2, 0, 0},
    {"pool", 1, {4}, {{2, 3, 6, 6}}, 0, 0, b_pool, 0, 0},
    {"batchnorm_train", 5, {4, 1, 1, 1, 1}, {{4, 3, 2, 2}, {3}, {3}, {3}, {3}}, 0x18, 0x10, b_batchnorm, 1, 0},
    {"batchnorm_eval", 5, {2, 1, 1, 1, 1}, {{4, 3}, {3}, {3}, {3}, {3}}, 0x18, 0x10, b_batchnorm2, 0, 0},
    {"lstm_act", 2, {2, 2}, {{3, 16}, {3, 4}}, 0, 0, b_lstm, 0, 0},
    {"lstm_act_h", 2, {2, 2}, {{3, 16}, {3, 4}}, 0, 0, b_lstm_h, 0, 0},
    {"gru_act", 3, {2, 2, 2}, {{3, 12}, {3, 12}, {3, 4}}, 0, 0, b_gru, 0, 0},
    {"cross_entropy", 2, {2, 1}, {{NX, NX}, {NX}}, 0, 0, b_ce, 0, 1},
    {"nll", 2, {2, 1}, {{NX, NX}, {NX}}, 0, 0, b_nll, 0, 1},
    {"pair_losses", 2, {2, 2}, {{4, 5}, {4, 5}}, 0, 0, b_pairs, 0, 0},
    {"mlp_input_grad", 3, {2, 1, 2}, {{8, NX}, {8}, {NX, 8}}, 0, 0, b_mlp_input, 0, 1},
};

static void test_gradcheck(void **state) {
    const Case *c = *state;
    gradcheck(c);
}

/* ------------------------------------------------------------------ behaviour */

static const Case two_params = {"two", 2, {2, 2}, {{3, 4}, {2, 2}}, 0, 0, b_fanout, 1, 0};

/* A parameter (and an input) the loss does not use gets a zero gradient, overwriting
 * whatever the slabs held. */
static void test_unused_zero(void **state) {
    (void)state;
    TM *t = tm_new(&two_params, 8, 1 << 20);
    double *G = t->net->grad, *IG = t->net->in_grad[0];
    for (size_t i = 0; i < t->m.train_count; i++) G[i] = 123;
    for (int i = 0; i < NB * NX; i++) IG[i] = 456;
    cdl_tape_reset(t->tp, 1);
    cdl_t *loss = project(t->tp, b_fanout(t->tp), 8);
    assert_int_equal(cdl_backward(t->tp, loss, 1, 1), 0);
    for (int i = 0; i < 12; i++) assert_true(G[i] != 123);
    for (int i = 12; i < 16; i++) assert_true(G[i] == 0);
    for (int i = 0; i < NB * NX; i++) assert_true(IG[i] == 0);
    /* a second sweep over the same records gives the same gradients */
    double keep[12];
    memcpy(keep, G, sizeof keep);
    assert_int_equal(cdl_backward(t->tp, loss, 1, 0), 0);
    assert_memory_equal(keep, G, sizeof keep);
    tm_free(t);
}

/* Shape errors, NULL propagation, a failed backward, and recovery at the next reset. */
static void test_errors(void **state) {
    (void)state;
    TM *t = tm_new(&two_params, 8, 1 << 20);
    cdl_tape *tp = t->tp;
    cdl_tape_reset(tp, 1);
    cdl_t *bad = cdl_t_add(tp, P(0), P(1));                     /* [3,4] + [2,2] */
    assert_null(bad);
    assert_true(cdl_tape_failed(tp));
    assert_non_null(strstr(cdl_last_error(), "add: shapes do not broadcast: [3, 4] and [2, 2]"));
    assert_null(cdl_t_relu(tp, bad));
    assert_null(cdl_t_linear(tp, bad, P(0), NULL));
    assert_null(cdl_t_concat(tp, 2, (cdl_t *[]){P(0), bad}, 0));
    assert_null(cdl_t_cross_entropy(tp, bad, Y(), 0, CDL_RED_MEAN));
    assert_non_null(strstr(cdl_last_error(), "add: shapes"));   /* the first message is kept */
    assert_int_equal(cdl_backward(tp, NULL, 1, 0), -1);
    /* more misuse, each a message and NULL */
    cdl_tape_reset(tp, 1);
    assert_null(cdl_t_matmul(tp, P(0), P(0), 0, 0));
    assert_non_null(strstr(cdl_last_error(), "matmul: inner dimensions differ"));
    /* a padding near INT_MAX: refused, never wrapped round in int arithmetic (the pool
     * once took 2 * INT_MAX as -2 and recorded the op) */
    cdl_tape_reset(tp, 1);
    cdl_t *img = cdl_t_full(tp, 0, 4, (const int64_t[]){1, 1, 4, 4});
    assert_null(cdl_t_maxpool2d(tp, img, 2, 2, INT_MAX));
    assert_non_null(strstr(cdl_last_error(), "padding 2147483647 do not fit"));
    cdl_tape_reset(tp, 1);
    img = cdl_t_full(tp, 0, 4, (const int64_t[]){1, 1, 4, 4});
    assert_null(cdl_t_conv2d(tp, img, cdl_t_full(tp, 0, 4, (const int64_t[]){1, 1, 3, 3}), NULL, 1, INT_MAX));
    assert_non_null(strstr(cdl_last_error(), "absurd size"));             /* 2^32 x 2^32 */
    cdl_tape_reset(tp, 1);
    assert_null(cdl_t_param(tp, 9));
    cdl_tape_reset(tp, 1);
    assert_null(cdl_t_input(tp, 0, NB + 1));
    cdl_tape_reset(tp, 1);
    assert_null(cdl_t_reshape(tp, P(0), 1, (const int64_t[]){5}));
    cdl_tape_reset(tp, 1);
    assert_null(cdl_t_relu(tp, Y()));                           /* i32 where reals are needed */
    cdl_tape_reset(tp, 1);
    assert_null(cdl_t_cross_entropy(tp, X(), X(), 0, CDL_RED_MEAN));
    cdl_tape_reset(tp, 1);
    assert_int_equal(cdl_backward(tp, P(0), 1, 0), -1);         /* not a scalar */
    /* a bad label: NaN loss and a message, like the static code */
    cdl_tape_reset(tp, 1);
    ((int32_t *)t->net->in[1])[2] = 99;
    cdl_t *z = cdl_t_linear(tp, X(), cdl_t_full(tp, 0.5, 2, (const int64_t[]){NX, NX}), NULL);
    assert_true(isnan(cdl_t_item(cdl_t_cross_entropy(tp, z, Y(), 0, CDL_RED_MEAN))));
    /* recovery */
    cdl_tape_reset(tp, 1);
    assert_false(cdl_tape_failed(tp));
    cdl_t *loss = project(tp, b_fanout(tp), 8);
    assert_int_equal(cdl_backward(tp, loss, 1, 0), 0);
    tm_free(t);
}

/* A step that does not fit: NULLs and "arena exhausted", never a crash. */
static void test_arena_exhausted(void **state) {
    (void)state;
    static const Case big = {"big", 1, {2}, {{64, 64}}, 0, 0, b_fanout, 1, 0};
    TM *t = tm_new(&big, 8, 64 * 1024);
    cdl_tape *tp = t->tp;
    cdl_tape_reset(tp, 1);
    cdl_t *y = P(0);
    for (int i = 0; i < 40 && y; i++) y = cdl_t_tanh(tp, y);
    assert_null(y);
    assert_true(cdl_tape_failed(tp));
    assert_non_null(strstr(cdl_last_error(), "arena exhausted"));
    assert_int_equal(cdl_backward(tp, y, 1, 0), -1);
    /* too small for a tape at all */
    cdl_model m = t->m;
    m.act_bytes = 128;
    cdl_net *net = cdl_net_new(&m);
    assert_non_null(net);
    assert_null(cdl_tape_attach(net));
    assert_non_null(strstr(cdl_last_error(), "too small"));
    cdl_net_free(net);
    assert_null(cdl_tape_attach(NULL));
    tm_free(t);
}

/* No heap allocation in a step; statistics; the dump. */
static void test_stats(void **state) {
    (void)state;
    const Case *c = &cases[sizeof cases / sizeof cases[0] - 1];      /* mlp_input_grad */
    TM *t = tm_new(c, 4, 1 << 20);
    uint64_t before = cdl_alloc_count();
    for (int k = 0; k < 3; k++) {
        cdl_tape_reset(t->tp, 1);
        cdl_t *loss = project(t->tp, c->build(t->tp), 4);
        assert_int_equal(cdl_backward(t->tp, loss, 1, 1), 0);
        assert_true(isfinite(cdl_t_item(loss)));
    }
    assert_int_equal(cdl_alloc_count(), before);
    uint64_t ops = 0, allocs = 0;
    size_t bytes = 0;
    cdl_tape_stats(t->tp, &ops, &bytes, &allocs);
    assert_true(ops >= 10 && ops < 40);
    assert_true(bytes > 1000 && bytes < (1 << 20));
    assert_true(allocs >= ops);
    cdl_tape_stats(NULL, &ops, NULL, NULL);
    assert_int_equal(ops, 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    cdl_tape_dump(t->tp, f);
    fclose(f);
    assert_non_null(strstr(buf, "linear [4, 8] <- "));
    assert_non_null(strstr(buf, "cross_entropy [] <- "));
    free(buf);
    tm_free(t);
}

/* Random ops draw the numbers the static code draws: key (seed, step, stream), counter
 * base t * numel; eval mode gives the mean; dropout's mask is the kernel's. */
static void test_random(void **state) {
    (void)state;
    TM *t = tm_new(&two_params, 8, 1 << 20);
    cdl_tape *tp = t->tp;
    cdl_rng_key k = {7, 3, 4};
    double want[20], w2[20];
    cdl_randn_f64(k, 2 * 20, 20, want);
    cdl_rand_f64(k, 3 * 20, 20, w2);
    cdl_tape_reset(tp, 1);
    cdl_t *r = cdl_t_randn(tp, 4, 2, 2, (const int64_t[]){4, 5});
    cdl_t *u = cdl_t_rand(tp, 4, 3, 2, (const int64_t[]){4, 5});
    assert_memory_equal(r->data, want, sizeof want);
    assert_memory_equal(u->data, w2, sizeof w2);
    cdl_t *x = cdl_t_full(tp, 2.0, 2, (const int64_t[]){4, 5});
    cdl_t *d = cdl_t_dropout(tp, x, 0.5, 9, 1);
    double ones[20], dk[20];
    for (int i = 0; i < 20; i++) ones[i] = 2.0;
    cdl_dropout_f64((cdl_rng_key){7, 3, 9}, 20, 20, 0.5, ones, dk);
    assert_memory_equal(d->data, dk, sizeof dk);
    int zeros = 0;
    for (int i = 0; i < 20; i++) zeros += dk[i] == 0;
    assert_true(zeros > 0 && zeros < 20);
    cdl_tape_reset(tp, 0);
    r = cdl_t_randn(tp, 4, 2, 1, (const int64_t[]){3});
    u = cdl_t_rand(tp, 4, 2, 1, (const int64_t[]){3});
    d = cdl_t_dropout(tp, cdl_t_full(tp, 2.0, 1, (const int64_t[]){3}), 0.5, 9, 1);
    for (int i = 0; i < 3; i++) {
        assert_true(((double *)r->data)[i] == 0);
        assert_true(((double *)u->data)[i] == 0.5);
        assert_true(((double *)d->data)[i] == 2.0);
    }
    assert_true(cdl_t_item(cdl_t_batch_size(tp, 3)) == 3);
    assert_true(isnan(cdl_t_item(NULL)));
    tm_free(t);
}

/* The f32 tape computes what the f64 one does, to f32 accuracy. */
static void test_f32_vs_f64(void **state) {
    (void)state;
    const Case *c = &cases[sizeof cases / sizeof cases[0] - 1];
    TM *a = tm_new(c, 8, 1 << 20), *b = tm_new(c, 4, 1 << 20);
    cdl_tape_reset(a->tp, 1);
    cdl_tape_reset(b->tp, 1);
    cdl_t *la = project(a->tp, c->build(a->tp), 8), *lb = project(b->tp, c->build(b->tp), 4);
    assert_int_equal(cdl_backward(a->tp, la, 1, 1), 0);
    assert_int_equal(cdl_backward(b->tp, lb, 1, 1), 0);
    assert_true(fabs(cdl_t_item(la) - cdl_t_item(lb)) <= 1e-5 * fabs(cdl_t_item(la)));
    double gmax = 0;
    for (size_t i = 0; i < a->m.train_count; i++) gmax = fmax(gmax, fabs(((double *)a->net->grad)[i]));
    for (size_t i = 0; i < a->m.train_count; i++)
        assert_true(fabs(((double *)a->net->grad)[i] - ((float *)b->net->grad)[i]) <= 1e-5 * gmax);
    for (int i = 0; i < NB * NX; i++)
        assert_true(fabs(((double *)a->net->in_grad[0])[i] - ((float *)b->net->in_grad[0])[i]) <= 1e-4);
    tm_free(a);
    tm_free(b);
}

/* stop_gradient: d/da sum(R a stop(exp a)) = R exp(a), the second factor a constant. */
static void test_stop_gradient(void **state) {
    (void)state;
    static const Case c = {"stop", 1, {2}, {{3, 4}}, 0, 0, b_stopgrad, 0, 0};
    TM *t = tm_new(&c, 8, 1 << 20);
    cdl_tape_reset(t->tp, 0);
    cdl_t *loss = project(t->tp, b_stopgrad(t->tp), 8);
    assert_int_equal(cdl_backward(t->tp, loss, 1, 0), 0);
    for (int i = 0; i < 12; i++) {
        double a = ((double *)t->net->param)[i], R = sin(1.3 * i + 0.5) + 0.2;
        assert_true(fabs(((double *)t->net->grad)[i] - R * exp(a)) <= 1e-12 * (1 + fabs(R * exp(a))));
    }
    tm_free(t);
}

/* Batch norm in train mode updates the running statistics (state parameters). */
static void test_batchnorm_running(void **state) {
    (void)state;
    const Case *c = NULL;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (!strcmp(cases[i].name, "batchnorm_train")) c = &cases[i];
    assert_non_null(c);
    TM *t = tm_new(c, 8, 1 << 20);
    double *P = t->net->param;
    double rm0 = P[48 + 6], rv0 = P[48 + 6 + 3];       /* x [4,3,2,2] = 48, gamma, beta, rm, rv */
    cdl_tape_reset(t->tp, 0);
    project(t->tp, c->build(t->tp), 8);
    assert_true(P[54] == rm0 && P[57] == rv0);         /* eval: unchanged */
    cdl_tape_reset(t->tp, 1);
    project(t->tp, c->build(t->tp), 8);
    assert_true(P[54] != rm0 && P[57] != rv0);         /* train: updated */
    tm_free(t);
}


/* ------------------------------------------------------------------ cdl_compare */

/* Softmax regression x[8,5] -> 3 classes written twice: by hand over the kernels (the
 * "static" build) and on the tape; cdl_compare must find them equal, and must notice a
 * tape build whose gradient is off. */
enum { CB = 8, CIN = 5, COUT = 3 };
static const cdl_tensor cmp_params[] = {
    {"w", CDL_F32, 0, 2, {COUT, CIN}, 0, ""},
    {"b", CDL_F32, COUT * CIN, 1, {COUT}, 0, ""},
};
static const cdl_tensor cmp_inputs[] = {
    {"x", CDL_F32, 0, 2, {CB, CIN}, CDL_T_BATCHED, ""},
    {"y", CDL_I32, 0, 1, {CB}, CDL_T_BATCHED, ""},
};
static const cdl_tensor cmp_outputs[] = {{"z", CDL_F32, 0, 2, {CB, COUT}, CDL_T_BATCHED, ""}};

static void cmp_init(cdl_net *net, uint64_t seed) {
    cdl_init_f32(net->param, COUT * CIN + COUT, CDL_INIT_NORMAL, 0, 0.5, CIN, COUT, (cdl_rng_key){seed, 0, 0});
}

static double s_grad(cdl_net *net, int nb) {
    float *P = net->param, *G = net->grad, *z = net->act, *probs = z + CB * COUT, *dz = probs + CB * COUT, loss, one = 1;
    cdl_linear_f32(nb, CIN, COUT, net->in[0], P, P + COUT * CIN, z);
    cdl_cross_entropy_f32(nb, COUT, z, net->in[1], 0, CDL_RED_MEAN, probs, &loss);
    cdl_cross_entropy_bwd_f32(nb, COUT, &one, net->in[1], probs, 0, CDL_RED_MEAN, dz);
    cdl_gemm_f32(1, 0, COUT, CIN, nb, 1, dz, COUT, net->in[0], CIN, 0, G, CIN);
    cdl_reduce_f32(2, (const int64_t[]){nb, COUT}, 1u, 0, dz, G + COUT * CIN);
    net->out[0] = z;
    return net->loss = loss;
}

static int tape_scale = 1;
static double t_grad(cdl_net *net, int nb) {
    cdl_tape *tp = cdl_tape_attach(net);
    cdl_tape_reset(tp, 1);
    cdl_t *z = cdl_t_linear(tp, cdl_t_input(tp, 0, nb), cdl_t_param(tp, 0), cdl_t_param(tp, 1));
    cdl_t *loss = cdl_t_cross_entropy(tp, z, cdl_t_input(tp, 1, nb), 0, CDL_RED_MEAN);
    cdl_backward(tp, loss, 1, 0);
    if (tape_scale != 1) cdl_scale_f32(COUT * CIN, tape_scale, net->grad);
    net->out[0] = z->data;
    return net->loss = cdl_t_item(loss);
}

static const cdl_model cmp_s = {.abi = CDL_ABI, .name = "sr", .fingerprint = 42, .real_size = 4, .batch = CB, .n_params = 2, .params = cmp_params,
                                .param_count = COUT * CIN + COUT, .train_count = COUT * CIN + COUT, .n_inputs = 2,
                                .inputs = cmp_inputs, .n_outputs = 1, .outputs = cmp_outputs, .has_loss = 1, .act_bytes = 4096,
                                .init = cmp_init, .grad = s_grad};
static const cdl_model cmp_t = {.abi = CDL_ABI, .name = "sr_tape", .fingerprint = 42, .real_size = 4, .batch = CB, .n_params = 2, .params = cmp_params,
                                .param_count = COUT * CIN + COUT, .train_count = COUT * CIN + COUT, .n_inputs = 2,
                                .inputs = cmp_inputs, .n_outputs = 1, .outputs = cmp_outputs, .has_loss = 1, .act_bytes = 1 << 20,
                                .init = cmp_init, .grad = t_grad};

/* cdl_compare with stdout and stderr captured in g_out / g_err. */
static int run_compare(const cdl_model *a, const cdl_model *b, int argc, char **argv) {
    capture_begin();
    int rc = cdl_compare(a, b, argc, argv);
    capture_end();
    return rc;
}

static void test_compare(void **state) {
    (void)state;
    char *ok[] = {"cmp", "--data", "random", "--steps", "4", "--json", "--tol", "1e-6", NULL};
    tape_scale = 1;
    assert_int_equal(run_compare(&cmp_s, &cmp_t, 8, ok), 0);
    assert_non_null(strstr(g_out, "\"max_loss_rel_diff\":0,"));
    assert_non_null(strstr(g_out, "\"max_grad_rel_diff\":0,"));
    assert_non_null(strstr(g_out, "\"speedup_static_over_tape\":"));
    assert_non_null(strstr(g_out, "\"tape_heap_allocs_per_step\":0,"));
    char *text[] = {"cmp", "--data", "random", "--steps", "3", "--batch", "5", NULL};
    assert_int_equal(run_compare(&cmp_s, &cmp_t, 7, text), 0);
    assert_non_null(strstr(g_out, "ms / step"));
    assert_non_null(strstr(g_out, "batch 5"));
    /* a tape build with a wrong gradient: the loss drifts and the gradients differ */
    tape_scale = 2;
    assert_int_equal(run_compare(&cmp_s, &cmp_t, 8, ok), 1);
    assert_non_null(strstr(g_out, "\"max_grad_rel_diff\":0.5"));   /* w: 2g vs g; b untouched */
    tape_scale = 1;
    /* usage errors and mismatched models */
    char *bad[] = {"cmp", "--steps", "x", NULL};
    assert_int_equal(run_compare(&cmp_s, &cmp_t, 3, bad), 2);
    char *big[] = {"cmp", "--batch", "99", NULL};
    assert_int_equal(run_compare(&cmp_s, &cmp_t, 3, big), 2);
    cdl_model other = cmp_t;
    other.fingerprint = 43;
    assert_int_equal(run_compare(&cmp_s, &other, 1, ok), 1);
}

int main(void) {
    enum { NC = sizeof cases / sizeof cases[0] };
    struct CMUnitTest tests[NC + 9];
    for (int i = 0; i < NC; i++)
        tests[i] = (struct CMUnitTest){cases[i].name, test_gradcheck, NULL, NULL, (void *)&cases[i]};
    tests[NC + 0] = (struct CMUnitTest)cmocka_unit_test(test_unused_zero);
    tests[NC + 1] = (struct CMUnitTest)cmocka_unit_test(test_errors);
    tests[NC + 2] = (struct CMUnitTest)cmocka_unit_test(test_arena_exhausted);
    tests[NC + 3] = (struct CMUnitTest)cmocka_unit_test(test_stats);
    tests[NC + 4] = (struct CMUnitTest)cmocka_unit_test(test_random);
    tests[NC + 5] = (struct CMUnitTest)cmocka_unit_test(test_f32_vs_f64);
    tests[NC + 6] = (struct CMUnitTest)cmocka_unit_test(test_batchnorm_running);
    tests[NC + 7] = (struct CMUnitTest)cmocka_unit_test(test_stop_gradient);
    tests[NC + 8] = (struct CMUnitTest)cmocka_unit_test(test_compare);
    return _cmocka_run_group_tests("tape", tests, NC + 9, NULL, NULL);
}
