/* test_rt_kernels_rnn.c -- LSTM / GRU cell kernels and view_bwd: forward against the
 * PyTorch formulas, backward by central finite differences in f64 through the packed
 * layouts, with a runtime batch (rows) below the compiled one (bmax) so that part
 * offsets counted with bmax are exercised. */
#include "test_rt_util.h"

static double sigm(double x) { return 1 / (1 + exp(-x)); }

/* ------------------------------------------------------------------ LSTM */

enum { ROWS = 3, BMAX = 5, HID = 4 };

typedef struct Lstm {
    double *gates, *c, *out, *aux, *R; /* R: weights of the loss over the packed output */
} Lstm;

/* Loss = sum over valid rows of R_h * h' + R_c * c'. */
static double lstm_loss(void *ctx) {
    Lstm *L = ctx;
    cdl_lstm_act_f64(ROWS, HID, BMAX, L->gates, L->c, L->out, L->aux);
    double s = 0;
    for (int part = 0; part < 2; part++)
        for (int64_t i = 0; i < ROWS * HID; i++) s += L->out[part * BMAX * HID + i] * L->R[part * BMAX * HID + i];
    return s;
}

static void test_lstm_forward(void **st) {
    (void)st;
    Lstm L = {dvec(BMAX * 4 * HID), dvec(BMAX * HID), dvec(2 * BMAX * HID), dvec(5 * BMAX * HID), NULL};
    for (int i = 0; i < BMAX * 4 * HID; i++) L.gates[i] *= 3;
    cdl_lstm_act_f64(ROWS, HID, BMAX, L.gates, L.c, L.out, L.aux);
    float *fg = fcopy(L.gates, BMAX * 4 * HID), *fc = fcopy(L.c, BMAX * HID), *fo = fcopy(L.out, 2 * BMAX * HID),
          *fa = fcopy(L.aux, 5 * BMAX * HID);
    cdl_lstm_act_f32(ROWS, HID, BMAX, fg, fc, fo, fa);
    for (int b = 0; b < ROWS; b++)
        for (int j = 0; j < HID; j++) {
            const double *g = L.gates + b * 4 * HID;
            double i = sigm(g[j]), f = sigm(g[HID + j]), gg = tanh(g[2 * HID + j]), o = sigm(g[3 * HID + j]);
            double cn = f * L.c[b * HID + j] + i * gg, h = o * tanh(cn);
            assert_true(fabs(L.out[b * HID + j] - h) < 1e-14);
            assert_true(fabs(L.out[BMAX * HID + b * HID + j] - cn) < 1e-14);
            assert_true(fabs(L.aux[b * 4 * HID + 2 * HID + j] - gg) < 1e-14);
            assert_true(fabs(L.aux[BMAX * 4 * HID + b * HID + j] - tanh(cn)) < 1e-14);
            assert_true(fabs(fo[b * HID + j] - h) < 1e-6);
            assert_true(fabs(fo[BMAX * HID + b * HID + j] - cn) < 1e-6);
        }
    free(L.gates); free(L.c); free(L.out); free(L.aux); free(fg); free(fc); free(fo); free(fa);
}

static void test_lstm_backward(void **st) {
    (void)st;
    Lstm L = {dvec(BMAX * 4 * HID), dvec(BMAX * HID), dvec(2 * BMAX * HID), dvec(5 * BMAX * HID),
              dvec(2 * BMAX * HID)};
    for (int i = 0; i < BMAX * 4 * HID; i++) L.gates[i] *= 2;
    lstm_loss(&L);
    double *dst = dvec(5 * BMAX * HID);
    cdl_lstm_act_bwd_f64(ROWS, HID, BMAX, L.R, L.R + BMAX * HID, L.c, L.aux, dst);
    /* only the valid rows of each part are defined */
    double *dg = dvec(ROWS * 4 * HID), *dc = dvec(ROWS * HID);
    memcpy(dg, dst, sizeof(double) * ROWS * 4 * HID);
    memcpy(dc, dst + BMAX * 4 * HID, sizeof(double) * ROWS * HID);
    fd_check("lstm dgates", L.gates, ROWS * 4 * HID, dg, lstm_loss, &L);
    fd_check("lstm dc", L.c, ROWS * HID, dc, lstm_loss, &L);
    /* f32 agrees */
    float *fR = fcopy(L.R, 2 * BMAX * HID), *fc = fcopy(L.c, BMAX * HID), *fa = fcopy(L.aux, 5 * BMAX * HID),
          *fd = fcopy(dst, 5 * BMAX * HID);
    cdl_lstm_act_bwd_f32(ROWS, HID, BMAX, fR, fR + BMAX * HID, fc, fa, fd);
    for (int i = 0; i < ROWS * 4 * HID; i++) assert_true(fabs(fd[i] - dst[i]) < 1e-5);
    for (int i = 0; i < ROWS * HID; i++) assert_true(fabs(fd[BMAX * 4 * HID + i] - dst[BMAX * 4 * HID + i]) < 1e-5);
    free(L.gates); free(L.c); free(L.out); free(L.aux); free(L.R); free(dst); free(dg); free(dc);
    free(fR); free(fc); free(fa); free(fd);
}

/* The f32 cells use libmvec's vector expf / tanhf (runtime/vmath.h): accurate to a few
 * 1e-7 over the whole range, saturating cleanly, NaN propagating. */
static void test_lstm_f32_extremes(void **st) {
    (void)st;
    static const float vals[] = {-1000, -100, -30, -8, -1.5f, -0.63f, -0.1f, -1e-6f, 0,
                                 1e-7f, 0.2f, 0.62f, 0.7f, 3, 9, 40, 100, 1000};
    enum { NV = sizeof vals / sizeof vals[0], H = NV };
    float gates[4 * H], c[H], out[2 * H], aux[5 * H];
    for (int j = 0; j < H; j++) {
        gates[j] = vals[j];                       /* i */
        gates[H + j] = vals[(j + 3) % NV];        /* f */
        gates[2 * H + j] = vals[(j + 7) % NV];    /* g */
        gates[3 * H + j] = vals[(j + 11) % NV];   /* o */
        c[j] = vals[(j + 5) % NV] / 50;
    }
    cdl_lstm_act_f32(1, H, 1, gates, c, out, aux);
    for (int j = 0; j < H; j++) {
        double i = sigm(gates[j]), f = sigm(gates[H + j]), g = tanh(gates[2 * H + j]), o = sigm(gates[3 * H + j]);
        double cn = f * c[j] + i * g, h = o * tanh(cn);
        assert_true(fabs(out[j] - h) <= 1e-6 * (1 + fabs(h)));
        assert_true(fabs(out[H + j] - cn) <= 1e-6 * (1 + fabs(cn)));
        assert_true(fabs(aux[2 * H + j] - g) <= 3e-7 * fabs(g) + 1e-30);
    }
    gates[0] = NAN;
    cdl_lstm_act_f32(1, H, 1, gates, c, out, aux);
    assert_true(isnan(out[0]) && isnan(out[H]));
    assert_false(isnan(out[1]));
}

/* ------------------------------------------------------------------ GRU */

typedef struct Gru {
    double *gi, *gh, *h, *out, *aux, *R;
} Gru;

static double gru_loss(void *ctx) {
    Gru *G = ctx;
    cdl_gru_act_f64(ROWS, HID, G->gi, G->gh, G->h, G->out, G->aux);
    double s = 0;
    for (int64_t i = 0; i < ROWS * HID; i++) s += G->out[i] * G->R[i];
    return s;
}

static void test_gru_forward(void **st) {
    (void)st;
    Gru G = {dvec(BMAX * 3 * HID), dvec(BMAX * 3 * HID), dvec(BMAX * HID), dvec(BMAX * HID), dvec(BMAX * 3 * HID),
             NULL};
    cdl_gru_act_f64(ROWS, HID, G.gi, G.gh, G.h, G.out, G.aux);
    float *fi = fcopy(G.gi, BMAX * 3 * HID), *fh = fcopy(G.gh, BMAX * 3 * HID), *fp = fcopy(G.h, BMAX * HID),
          *fo = fcopy(G.out, BMAX * HID), *fa = fcopy(G.aux, BMAX * 3 * HID);
    cdl_gru_act_f32(ROWS, HID, fi, fh, fp, fo, fa);
    for (int b = 0; b < ROWS; b++)
        for (int j = 0; j < HID; j++) {
            const double *i = G.gi + b * 3 * HID, *h = G.gh + b * 3 * HID;
            double r = sigm(i[j] + h[j]), z = sigm(i[HID + j] + h[HID + j]);
            double n = tanh(i[2 * HID + j] + r * h[2 * HID + j]);
            double want = (1 - z) * n + z * G.h[b * HID + j];
            assert_true(fabs(G.out[b * HID + j] - want) < 1e-14);
            assert_true(fabs(fo[b * HID + j] - want) < 1e-6);
            assert_true(fabs(G.aux[b * 3 * HID + HID + j] - z) < 1e-14);
        }
    free(G.gi); free(G.gh); free(G.h); free(G.out); free(G.aux); free(fi); free(fh); free(fp); free(fo); free(fa);
}

static void test_gru_backward(void **st) {
    (void)st;
    Gru G = {dvec(BMAX * 3 * HID), dvec(BMAX * 3 * HID), dvec(BMAX * HID), dvec(BMAX * HID), dvec(BMAX * 3 * HID),
             dvec(BMAX * HID)};
    gru_loss(&G);
    double *dst = dvec(7 * BMAX * HID);
    cdl_gru_act_bwd_f64(ROWS, HID, BMAX, G.R, G.gh, G.h, G.aux, dst);
    double *dgi = dvec(ROWS * 3 * HID), *dgh = dvec(ROWS * 3 * HID), *dh = dvec(ROWS * HID);
    memcpy(dgi, dst, sizeof(double) * ROWS * 3 * HID);
    memcpy(dgh, dst + BMAX * 3 * HID, sizeof(double) * ROWS * 3 * HID);
    memcpy(dh, dst + BMAX * 6 * HID, sizeof(double) * ROWS * HID);
    fd_check("gru dgi", G.gi, ROWS * 3 * HID, dgi, gru_loss, &G);
    fd_check("gru dgh", G.gh, ROWS * 3 * HID, dgh, gru_loss, &G);
    fd_check("gru dh", G.h, ROWS * HID, dh, gru_loss, &G);
    float *fR = fcopy(G.R, BMAX * HID), *fh = fcopy(G.gh, BMAX * 3 * HID), *fp = fcopy(G.h, BMAX * HID),
          *fa = fcopy(G.aux, BMAX * 3 * HID), *fd = fcopy(dst, 7 * BMAX * HID);
    cdl_gru_act_bwd_f32(ROWS, HID, BMAX, fR, fh, fp, fa, fd);
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < ROWS * (p < 2 ? 3 : 1) * HID; i++)
            assert_true(fabs(fd[p * BMAX * 3 * HID + i] - dst[p * BMAX * 3 * HID + i]) < 1e-5);
    free(G.gi); free(G.gh); free(G.h); free(G.out); free(G.aux); free(G.R); free(dst); free(dgi); free(dgh);
    free(dh); free(fR); free(fh); free(fp); free(fa); free(fd);
}

/* ------------------------------------------------------------------ view_bwd */

static void test_view_bwd(void **st) {
    (void)st;
    float g[3] = {1, 2, 3}, d[8];
    for (int i = 0; i < 8; i++) d[i] = 9;
    cdl_view_bwd_f32(8, 4, 3, g, d);
    const float want[8] = {0, 0, 0, 0, 1, 2, 3, 0};
    for (int i = 0; i < 8; i++) assert_true(d[i] == want[i]);
    double gd[2] = {5, 6}, dd[4] = {7, 7, 7, 7};
    cdl_view_bwd_f64(4, 0, 0, gd, dd); /* empty batch: all zeros */
    for (int i = 0; i < 4; i++) assert_true(dd[i] == 0);
}

int main(void) {
    urand_seed(0x2545f4914f6cdd1dull);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lstm_forward), cmocka_unit_test(test_lstm_backward),
        cmocka_unit_test(test_lstm_f32_extremes),
        cmocka_unit_test(test_gru_forward),  cmocka_unit_test(test_gru_backward),
        cmocka_unit_test(test_view_bwd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
