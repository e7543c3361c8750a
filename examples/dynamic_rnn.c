/* dynamic_rnn.c -- a recurrent classifier whose graph depends on the data, written
 * directly against the runtime's tape (cdl.h, TAPE block in cdl_tape.h): no .cdl file, no compiler.
 *
 * Each Fashion-MNIST image is read as a sequence of pixel rows, but only its own rows:
 * from the first to the last row that holds any ink.  A sandal is 10 rows tall, a shirt
 * 28, so every example has its own length.  A batch is sorted by length (longest first)
 * and the GRU runs one loop trip per row of the longest example; at step t only the
 * examples still running (length > t) are fed, so the active batch shrinks as the
 * short ones finish, and each example's final state is the one after its own last row.
 * The number of steps, the batch size of every step and hence the whole graph are
 * decided by the data at run time; the tape simply records whatever ran and
 * differentiates it.  A static graph would have to pad every sequence to 28 rows and
 * mask (see examples/README.md).
 *
 * The parameters are a hand-made table in a cdl_model descriptor, so the runtime's
 * net, optimizers (Adam over the flat slabs) and checkpoints work as for a generated
 * model; the descriptor has no functions, the loop below is the model.
 *
 *   build/examples/dynamic_rnn [EPOCHS [EXAMPLES]]     (default 1 epoch of 20000)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdl.h"

enum { D = 28, H = 64, C = 10, BATCH = 64 };
#define INK 0.05                /* a row with more ink than this (sum of pixels) counts */

/* The parameter table: a GRU cell (PyTorch layout, gates r, z, n) and a classifier. */
static const cdl_tensor params[] = {
    {"gru.weight_ih", CDL_F32, 0, 2, {3 * H, D}, 0, "dynamic_rnn.c"},
    {"gru.bias_ih", CDL_F32, 3 * H * D, 1, {3 * H}, 0, "dynamic_rnn.c"},
    {"gru.weight_hh", CDL_F32, 3 * H * D + 3 * H, 2, {3 * H, H}, 0, "dynamic_rnn.c"},
    {"gru.bias_hh", CDL_F32, 3 * H * D + 3 * H + 3 * H * H, 1, {3 * H}, 0, "dynamic_rnn.c"},
    {"fc.weight", CDL_F32, 3 * H * D + 6 * H + 3 * H * H, 2, {C, H}, 0, "dynamic_rnn.c"},
    {"fc.bias", CDL_F32, 3 * H * D + 6 * H + 3 * H * H + C * H, 1, {C}, 0, "dynamic_rnn.c"},
};
enum { NPARAM = 3 * H * D + 6 * H + 3 * H * H + C * H + C };

static const cdl_model model = {
    .abi = CDL_ABI, .name = "dynamic_rnn",
    .source = "examples/dynamic_rnn.c",
    .real_size = 4,
    .batch = BATCH,
    .n_params = 6, .params = params, .param_count = NPARAM, .train_count = NPARAM,
    .has_loss = 1,
    .act_bytes = (size_t)32 << 20,      /* the tape: one step of at most 28 rows, with room */
};

/* Rows [first, first + len) of image x hold its ink (len >= 1). */
static void ink_rows(const float *x, int *first, int *len) {
    int lo = -1, hi = -1;
    for (int r = 0; r < D; r++) {
        double s = 0;
        for (int c = 0; c < D; c++) s += x[r * D + c];
        if (s > INK) {
            if (lo < 0) lo = r;
            hi = r;
        }
    }
    if (lo < 0) lo = hi = 0;
    *first = lo;
    *len = hi - lo + 1;
}

/* One example of a batch: where it is and how long it runs. */
typedef struct Ex { int64_t idx; int first, len; } Ex;

static int by_len_desc(const void *a, const void *b) {
    const Ex *x = a, *y = b;
    return (y->len > x->len) - (y->len < x->len);
}

/* Example i's image (column x of the image set: D x D floats) and label (column y). */
static const float *image(const cdl_dataset *d, int64_t i) {
    return (const float *)d->col[0].data + i * d->col[0].stride;
}
static int32_t label(const cdl_dataset *d, int64_t i) { return ((const int32_t *)d->col[1].data)[i]; }

/* Record the forward pass of examples ex[0..nb) (sorted longest first) on the tape and
 * return the loss; *steps receives the number of loop trips, *correct the number of
 * right answers. */
static cdl_t *forward(cdl_tape *tp, const cdl_dataset *d, const Ex *ex, int nb, int *steps, int *correct) {
    cdl_t *Wih = cdl_t_param(tp, 0), *bih = cdl_t_param(tp, 1);
    cdl_t *Whh = cdl_t_param(tp, 2), *bhh = cdl_t_param(tp, 3);
    cdl_t *Wfc = cdl_t_param(tp, 4), *bfc = cdl_t_param(tp, 5);
    cdl_t *h = cdl_t_full(tp, 0, 2, (const int64_t[]){nb, H});
    int T = ex[0].len;
    for (int t = 0; t < T; t++) {
        int active = 0;                                   /* examples still running */
        while (active < nb && ex[active].len > t) active++;
        /* this step's input rows: row first + t of each running example */
        cdl_t *x = cdl_t_new(tp, CDL_F32, 2, (const int64_t[]){active, D});
        if (!x) return NULL;
        for (int i = 0; i < active; i++)
            memcpy((float *)x->data + (size_t)i * D, image(d, ex[i].idx) + (size_t)(ex[i].first + t) * D, sizeof(float) * D);
        cdl_t *h_run = active == nb ? h : cdl_t_slice(tp, h, 0, 0, 1, active, 0);
        cdl_t *gi = cdl_t_linear(tp, x, Wih, bih), *gh = cdl_t_linear(tp, h_run, Whh, bhh);
        cdl_t *h_new = cdl_t_gru_act(tp, gi, gh, h_run);
        if (active == nb) {
            h = h_new;
        } else {                                          /* finished ones keep their state */
            cdl_t *h_done = cdl_t_slice(tp, h, 0, active, 1, nb - active, 0);
            h = cdl_t_concat(tp, 2, (cdl_t *[]){h_new, h_done}, 0);
        }
    }
    cdl_t *logits = cdl_t_linear(tp, h, Wfc, bfc);
    cdl_t *y = cdl_t_new(tp, CDL_I32, 1, (const int64_t[]){nb});
    if (!logits || !y) return NULL;
    for (int i = 0; i < nb; i++) ((int32_t *)y->data)[i] = label(d, ex[i].idx);
    *steps = T;
    *correct = 0;
    for (int i = 0; i < nb; i++) {
        const float *z = (const float *)logits->data + (size_t)i * C;
        int best = 0;
        for (int k = 1; k < C; k++)
            if (z[k] > z[best]) best = k;
        *correct += best == ((int32_t *)y->data)[i];
    }
    return cdl_t_cross_entropy(tp, logits, y, 0, CDL_RED_MEAN);
}

/* The examples of batch b of the test set (in order, mixed lengths), sorted by length. */
static int test_batch(const cdl_dataset *d, int64_t n, int64_t b, Ex *ex) {
    int nb = 0;
    for (int64_t i = b * BATCH; i < n && nb < BATCH; i++, nb++) {
        ex[nb].idx = i;
        ink_rows(image(d, i), &ex[nb].first, &ex[nb].len);
    }
    qsort(ex, (size_t)nb, sizeof *ex, by_len_desc);
    return nb;
}

/* A uniform random integer in [0, n) from (seed, stream, i). */
static int64_t rnd(uint64_t seed, uint64_t stream, uint64_t i, int64_t n) {
    uint32_t r[4];
    cdl_philox((cdl_rng_key){seed, 0, stream}, i, r);
    return (int64_t)((((uint64_t)r[0] << 32) | r[1]) % (uint64_t)n);
}

/* Training batches bucketed by length (as PyTorch users do with variable-length data):
 * the examples sorted by length with random ties, cut into batches; the batch order is
 * shuffled every epoch.  So each batch runs its own number of steps (about 6 to 28). */
static Ex *bucket(const cdl_dataset *d, int64_t n) {
    Ex *all = cdl_alloc(sizeof(Ex) * (size_t)n);
    if (!all) return NULL;
    for (int64_t i = 0; i < n; i++) {
        all[i].idx = i;
        ink_rows(image(d, i), &all[i].first, &all[i].len);
    }
    for (int64_t i = n - 1; i > 0; i--) {          /* random order within a length */
        int64_t j = rnd(7, 1, (uint64_t)i, i + 1);
        Ex t = all[i];
        all[i] = all[j];
        all[j] = t;
    }
    qsort(all, (size_t)n, sizeof *all, by_len_desc);
    return all;
}

/* argv[i] as a whole number in [1, max], or -1. */
static long long arg_count(const char *s, long long max) {
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    return end != s && !*end && v >= 1 && v <= max ? v : -1;
}

int main(int argc, char **argv) {
    int epochs = argc > 1 ? (int)arg_count(argv[1], 1000) : 1;
    int64_t limit = argc > 2 ? arg_count(argv[2], 1000000000) : 20000;
    if (argc > 3 || epochs < 1 || limit < 1) {
        fprintf(stderr, "usage: dynamic_rnn [EPOCHS [EXAMPLES]]   (whole numbers >= 1; default 1 epoch of 20000 examples)\n");
        return 2;
    }
    cdl_dataset train = {0}, test = {0};
    if (cdl_dataset_open(&train, "fashion-mnist", 1) < 0 || cdl_dataset_open(&test, "fashion-mnist", 0) < 0 || train.col[0].feat != D * D) {
        fprintf(stderr, "dynamic_rnn: %s\n", cdl_last_error());
        return 1;
    }
    int64_t n = limit > 0 && limit < train.n ? limit : train.n;
    cdl_blas_set_threads(1);
    cdl_net *net = cdl_net_new(&model);
    cdl_optim opt;
    cdl_optim_cfg cfg;
    cdl_optim_defaults(&cfg, CDL_OPT_ADAM);
    cfg.lr = 3e-3;
    cdl_tape *tp = net ? cdl_tape_attach(net) : NULL;
    if (!tp || cdl_optim_init(&opt, &model, &cfg) < 0) {
        fprintf(stderr, "dynamic_rnn: %s\n", cdl_last_error());
        return 1;
    }
    for (int p = 0; p < model.n_params; p++) {       /* PyTorch's defaults: U(+-1/sqrt(H)) */
        const cdl_tensor *t = &model.params[p];
        int64_t fan_in = t->rank == 2 ? t->dims[1] : H;
        cdl_init_f32((float *)net->param + t->offset, cdl_tensor_numel(t, 0), CDL_INIT_DEFAULT, 0, 0, fan_in, t->dims[0],
                     (cdl_rng_key){1, UINT64_MAX, (uint64_t)p});
    }
    printf("dynamic_rnn: GRU(%d) over the ink rows of each image, %lld training examples, batch %d, adam lr %g\n", H,
           (long long)n, BATCH, cfg.lr);
    Ex ex[BATCH], *all = bucket(&train, n);
    int64_t nbatch = (n + BATCH - 1) / BATCH, *order = cdl_alloc(sizeof(int64_t) * (size_t)nbatch);
    if (!all || !order) return 1;
    for (int ep = 0; ep < epochs; ep++) {
        for (int64_t b = 0; b < nbatch; b++) order[b] = b;
        for (int64_t b = nbatch - 1; b > 0; b--) {
            int64_t j = rnd((uint64_t)ep, 2, (uint64_t)b, b + 1), t = order[b];
            order[b] = order[j];
            order[j] = t;
        }
        double sum = 0;
        int cnt = 0, right = 0, seen = 0, tmin = D, tmax = 0;
        for (int64_t b = 0; b < nbatch; b++) {
            int64_t at = order[b] * BATCH;
            int nb = (int)(n - at < BATCH ? n - at : BATCH), steps = 0, correct = 0;
            memcpy(ex, all + at, sizeof(Ex) * (size_t)nb);
            cdl_tape_reset(tp, 1);
            cdl_t *loss = forward(tp, &train, ex, nb, &steps, &correct);
            if (cdl_backward(tp, loss, 1, 0) < 0) {
                fprintf(stderr, "dynamic_rnn: %s\n", cdl_last_error());
                return 1;
            }
            cdl_optim_step(&opt, net, cfg.lr);
            net->step++;
            sum += cdl_t_item(loss);
            cnt++;
            right += correct;
            seen += nb;
            if (steps < tmin) tmin = steps;
            if (steps > tmax) tmax = steps;
            if (cnt == 50 || b == nbatch - 1) {
                uint64_t ops;
                cdl_tape_stats(tp, &ops, NULL, NULL);
                printf("epoch %d  batch %5lld/%lld  loss %.4f  train acc %5.1f%%  steps per batch %d..%d  (last: %d steps, %llu ops on the tape)\n",
                       ep + 1, (long long)b + 1, (long long)nbatch, sum / cnt, 100.0 * right / seen, tmin, tmax, steps,
                       (unsigned long long)ops);
                fflush(stdout);
                sum = 0;
                cnt = right = seen = 0;
                tmin = D;
                tmax = 0;
            }
        }
        /* test accuracy: the same dynamic graph in eval mode, no backward */
        int64_t tn = test.n > 5000 ? 5000 : test.n, right_t = 0;
        double tl = 0;
        for (int64_t b = 0; b * BATCH < tn; b++) {
            int nb = test_batch(&test, tn, b, ex), steps, correct;
            cdl_tape_reset(tp, 0);
            tl += cdl_t_item(forward(tp, &test, ex, nb, &steps, &correct)) * nb;
            right_t += correct;
        }
        printf("epoch %d  test loss %.4f  test accuracy %.2f%% (%lld examples)\n", ep + 1, tl / (double)tn, 100.0 * (double)right_t / (double)tn,
               (long long)tn);
    }
    cdl_free(all);
    cdl_free(order);
    cdl_optim_free(&opt);
    cdl_net_free(net);
    cdl_dataset_free(&train);
    cdl_dataset_free(&test);
    return 0;
}
