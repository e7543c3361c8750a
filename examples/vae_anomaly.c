/* vae_anomaly.c -- anomaly detection with the VAE of models/vae.cdl: train on every
 * Fashion-MNIST class but one, then score each test image by its negative ELBO and
 * measure how well that score separates the held-out class from the others (ROC AUC).
 *
 * Protocol (examples/README.md, section "VAE"):
 *   train  the training split without the held-out class (54000 images), Adam lr 1e-3,
 *          batch 128, --epochs epochs (default 5), shuffled with --seed;
 *   score  every test image (10000: 1000 of the held-out class, 9000 of the 9 others)
 *          by the negative ELBO in nats, the `score` entry of vae.cdl:
 *            BCE(decoder(mu + sigma * eps), x) + KL(q(z|x) || N(0, I)),
 *          with eps = 0 (the deterministic eval-mode estimate, the default) or the mean
 *          over --samples K draws of eps ~ N(0, I);
 *   report the ROC AUC of "held-out" (positive, should score high) against the rest:
 *          the probability that a random held-out image scores above a random normal one
 *          (ties count one half), plus the mean score of every class.
 * The default held-out class is 8 (bag), AUC about 0.85.  Likelihood scores are known to
 * rank simple images as "more normal" (Nalisnick et al. 2019), so held-out classes with
 * few ink pixels (trouser, sandal, sneaker) score BELOW the rest: AUC < 0.5.  The table
 * for every class is in examples/README.md.
 *
 * The program uses the generated C directly (vae_new, vae_train_step, vae_score) with
 * the runtime's data loader, Adam and checkpoints: it is also the example of writing
 * one's own training loop around a generated model.  Built by the Makefile (block
 * "vae") from this file, $(B)/gen-models/vae.c and libcdlrt.a.
 *
 *   vae_anomaly [--holdout C] [--epochs N] [--samples K] [--seed S] [--threads N]
 *               [--lr X] [--data NAME] [--limit N] [--test-limit N] [--save F]
 *               [--load F] [--scores FILE.csv] [--json] [--quiet]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cdl.h"
#include "vae.h"

static const char *const class_names[10] = {
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
};

typedef struct opts {
    int holdout, epochs, samples, threads, json, quiet;
    uint64_t seed;
    double lr;
    long long limit, test_limit;
    const char *data, *save, *load, *scores;
} opts;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: vae_anomaly [options]\n"
            "  train models/vae.cdl on every class but one, score the test split by the\n"
            "  negative ELBO, report the ROC AUC of the held-out class against the rest\n"
            "  --holdout C       held-out class 0..9 (default 8, bag)\n"
            "  --epochs N        training epochs (default 5)\n"
            "  --samples K       score = mean negative ELBO over K draws of eps (default 0:\n"
            "                    one deterministic pass with z = mu)\n"
            "  --seed S          initialisation, shuffling and eps (default 1)\n"
            "  --threads N       BLAS threads (default 1)\n"
            "  --lr X            Adam learning rate (default 1e-3)\n"
            "  --data NAME       dataset (default fashion-mnist)\n"
            "  --limit N         use the first N training images (before filtering)\n"
            "  --test-limit N    score the first N test images\n"
            "  --save F          checkpoint after training\n"
            "  --load F          skip training: load a checkpoint made with the same --holdout\n"
            "  --scores F.csv    write label,nelbo,rec,kl per test image\n"
            "  --json            one JSON line with the results on stdout\n"
            "  --quiet           no per-epoch lines\n");
}

/* Parse a whole-string integer in [lo, hi] into *v; 0, or -1 with a message. */
static int parse_int(const char *opt, const char *s, long long lo, long long hi, long long *v) {
    char *end;
    long long x = strtoll(s, &end, 10);
    if (!*s || *end || x < lo || x > hi) {
        fprintf(stderr, "vae_anomaly: %s: '%s' is not an integer in [%lld, %lld]\n", opt, s, lo, hi);
        return -1;
    }
    *v = x;
    return 0;
}

/* Command line into *o (defaults first).  0 ok, 1 --help shown, 2 usage error. */
static int parse_args(int argc, char **argv, opts *o) {
    *o = (opts){.holdout = 8, .epochs = 5, .seed = 1, .threads = 1, .lr = 1e-3,
                .data = "fashion-mnist"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 1; }
        if (!strcmp(a, "--json")) { o->json = 1; continue; }
        if (!strcmp(a, "--quiet")) { o->quiet = 1; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "vae_anomaly: unknown option or missing value: %s\n", a); usage(stderr); return 2; }
        const char *v = argv[++i];
        long long n;
        if (!strcmp(a, "--holdout")) { if (parse_int(a, v, 0, 9, &n)) return 2; o->holdout = (int)n; }
        else if (!strcmp(a, "--epochs")) { if (parse_int(a, v, 0, 10000, &n)) return 2; o->epochs = (int)n; }
        else if (!strcmp(a, "--samples")) { if (parse_int(a, v, 0, 10000, &n)) return 2; o->samples = (int)n; }
        else if (!strcmp(a, "--seed")) { if (parse_int(a, v, 0, 1LL << 62, &n)) return 2; o->seed = (uint64_t)n; }
        else if (!strcmp(a, "--threads")) { if (parse_int(a, v, 1, 256, &n)) return 2; o->threads = (int)n; }
        else if (!strcmp(a, "--limit")) { if (parse_int(a, v, 1, 1LL << 40, &n)) return 2; o->limit = n; }
        else if (!strcmp(a, "--test-limit")) { if (parse_int(a, v, 1, 1LL << 40, &n)) return 2; o->test_limit = n; }
        else if (!strcmp(a, "--lr")) {
            char *end;
            o->lr = strtod(v, &end);
            if (!*v || *end || !(o->lr > 0 && o->lr < 10)) { fprintf(stderr, "vae_anomaly: --lr: bad value '%s'\n", v); return 2; }
        }
        else if (!strcmp(a, "--data")) o->data = v;
        else if (!strcmp(a, "--save")) o->save = v;
        else if (!strcmp(a, "--load")) o->load = v;
        else if (!strcmp(a, "--scores")) o->scores = v;
        else { fprintf(stderr, "vae_anomaly: unknown option %s\n", a); usage(stderr); return 2; }
    }
    return 0;
}

/* The image set's columns: x (784 pixels an example, contiguous) and y (labels). */
static const float *pixels(const cdl_dataset *d) { return d->col[0].data; }
static const int32_t *labels(const cdl_dataset *d) { return d->col[1].data; }

/* Keep the examples of d whose label differs from `drop`, in order, in place (x and y
 * stay the dataset's own blocks, which it allocated writable; only n shrinks).
 * Returns the number kept. */
static int64_t drop_class(cdl_dataset *d, int drop) {
    float *x = (float *)d->block[0];
    int32_t *y = (int32_t *)d->block[1];
    int64_t k = 0, F = d->col[0].feat;
    for (int64_t i = 0; i < d->n; i++) {
        if (y[i] == drop) continue;
        if (k != i) {
            memmove(x + k * F, x + i * F, (size_t)F * sizeof(float));
            y[k] = y[i];
        }
        k++;
    }
    d->n = k;
    return k;
}

/* Train net for o->epochs epochs over d with Adam (lr o->lr), batches of the compiled
 * size, shuffled by (seed, epoch).  No allocation per step.  0, or -1 and a message. */
static int train(cdl_net *net, cdl_optim *opt, const cdl_dataset *d, const opts *o) {
    cdl_loader_cfg lc = {.batch = vae_model.batch, .shuffle = 1, .workers = 1, .seed = o->seed,
                         .real_size = 4, .nfeed = 1, .feed = {{0, CDL_F32}}};   /* column x -> input x */
    cdl_loader *l = cdl_loader_new(d, &lc);
    if (!l) return -1;
    int rc = -1;
    for (int ep = 0; ep < o->epochs; ep++) {
        double t0 = now(), sum = 0;
        int64_t seen = 0;
        if (cdl_loader_start(l, (uint64_t)ep, 0) < 0) goto out;
        int rows;
        while ((rows = cdl_loader_next(l, net->in)) > 0) {
            double loss = vae_train_step(net, opt, rows, o->lr);
            if (!isfinite(loss)) {
                cdl_fail("vae_anomaly: loss %g at epoch %d step %llu", loss, ep + 1,
                         (unsigned long long)net->step);
                goto out;
            }
            sum += loss * rows;
            seen += rows;
        }
        if (rows < 0) goto out;
        if (!o->quiet)
            fprintf(stderr, "epoch %d/%d  train_loss %.4f  (%lld images)  %.1fs\n", ep + 1, o->epochs,
                    sum / (double)(seen ? seen : 1), (long long)seen, now() - t0);
    }
    rc = 0;
out:
    cdl_loader_free(l);
    return rc;
}

/* Score the n test images of d with the `score` entry in batches of the compiled size:
 * nelbo[i], rec[i], kl[i] (each n reals) = the mean over max(k, 1) passes, pass j using
 * eps = 0 when k == 0, else eps ~ N(0, I) keyed by (seed, j).  0, or -1 and a message. */
static int score_all(cdl_net *net, const cdl_dataset *d, int k, uint64_t seed,
                     double *nelbo, double *rec, double *kl) {
    const int B = vae_model.batch;
    int Z = 0;
    for (int e = 0; e < vae_model.n_entries; e++)
        if (!strcmp(vae_model.entries[e].name, "score")) Z = (int)vae_model.entries[e].in[1].dims[1];
    if (Z <= 0) return cdl_fail("vae_anomaly: the model has no entry score(x, eps)");
    float *eps = cdl_alloc((size_t)B * (size_t)Z * sizeof(float));
    float *out = cdl_alloc((size_t)3 * (size_t)B * sizeof(float));
    if (!eps || !out) {
        cdl_free(eps);
        cdl_free(out);
        return cdl_fail("vae_anomaly: out of memory for the score buffers");
    }
    int passes = k > 0 ? k : 1;
    for (int64_t i = 0; i < d->n; i++) nelbo[i] = rec[i] = kl[i] = 0;
    for (int64_t s = 0; s < d->n; s += B) {
        int nb = (int)(d->n - s < B ? d->n - s : B);
        for (int j = 0; j < passes; j++) {
            if (k > 0) cdl_randn_f32((cdl_rng_key){seed, (uint64_t)j, 0xE75u}, (uint64_t)s * (uint64_t)Z,
                                     (int64_t)nb * Z, eps);
            const void *in[2] = {pixels(d) + s * 784, eps};
            void *o3[3] = {out, out + B, out + 2 * B};
            vae_score(net, nb, in, o3);
            for (int r = 0; r < nb; r++) {
                nelbo[s + r] += out[r] / passes;
                rec[s + r] += out[B + r] / passes;
                kl[s + r] += out[2 * B + r] / passes;
            }
        }
    }
    cdl_free(eps);
    cdl_free(out);
    return 0;
}

typedef struct ranked { double v; int pos; } ranked;
static int cmp_ranked(const void *a, const void *b) {
    double x = ((const ranked *)a)->v, y = ((const ranked *)b)->v;
    return (x > y) - (x < y);
}

/* ROC AUC of score s[i] for the n examples, positive where pos[i] != 0: the
 * Mann-Whitney statistic P(s_pos > s_neg) + P(s_pos == s_neg) / 2, from average ranks
 * (O(n log n)).  NaN when either class is empty or on allocation failure; a non-finite
 * score sorts as +infinity (most anomalous). */
static double roc_auc(int64_t n, const double *s, const unsigned char *pos) {
    ranked *r = cdl_alloc((size_t)n * sizeof *r);
    if (!r) return NAN;
    int64_t np = 0;
    for (int64_t i = 0; i < n; i++) {
        r[i].v = isnan(s[i]) ? INFINITY : s[i];
        r[i].pos = pos[i] != 0;
        np += r[i].pos;
    }
    qsort(r, (size_t)n, sizeof *r, cmp_ranked);
    double rank_sum = 0;                 /* sum of the positives' ranks, 1-based */
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        while (j < n && r[j].v == r[i].v) j++;
        double avg = 0.5 * (double)(i + 1 + j);    /* mean of ranks i+1 .. j */
        for (int64_t t = i; t < j; t++)
            if (r[t].pos) rank_sum += avg;
        i = j;
    }
    cdl_free(r);
    int64_t nn = n - np;
    if (np == 0 || nn == 0) return NAN;
    return (rank_sum - 0.5 * (double)np * (double)(np + 1)) / ((double)np * (double)nn);
}

static int write_scores(const char *path, const cdl_dataset *d, const double *nelbo,
                        const double *rec, const double *kl) {
    FILE *f = fopen(path, "w");
    if (!f) return cdl_fail("%s: cannot open for writing", path);
    fprintf(f, "label,nelbo,rec,kl\n");
    for (int64_t i = 0; i < d->n; i++)
        fprintf(f, "%d,%.4f,%.4f,%.4f\n", (int)labels(d)[i], nelbo[i], rec[i], kl[i]);
    if (fclose(f) != 0) return cdl_fail("%s: write error", path);
    return 0;
}

int main(int argc, char **argv) {
    opts o;
    int pr = parse_args(argc, argv, &o);
    if (pr) return pr == 1 ? 0 : 2;
    cdl_blas_set_threads(o.threads);
    double t_start = now(), t_train = 0;
    int status = 1;
    cdl_dataset tr = {0}, te = {0};
    cdl_net *net = NULL;
    cdl_optim opt = {0};
    int have_opt = 0;
    double *sc = NULL;
    unsigned char *pos = NULL;
    cdl_optim_cfg ocfg;
    cdl_optim_defaults(&ocfg, CDL_OPT_ADAM);
    ocfg.lr = o.lr;

    if (!(net = vae_new())) goto fail;
    net->seed = o.seed;
    vae_init(net, o.seed);
    if (cdl_optim_init(&opt, &vae_model, &ocfg) < 0) goto fail;
    have_opt = 1;
    if (o.load) {
        if (vae_load(net, NULL, o.load) < 0) goto fail;
    } else {
        if (cdl_dataset_open(&tr, o.data, 1) < 0) goto fail;
        if (tr.ncols < 2 || tr.col[0].feat != 784 || tr.col[1].dtype != CDL_I32) {
            cdl_fail("vae_anomaly: %s: need labelled 784-pixel images", o.data);
            goto fail;
        }
        if (o.limit && o.limit < tr.n) tr.n = o.limit;
        int64_t kept = drop_class(&tr, o.holdout);
        if (!o.quiet)
            fprintf(stderr, "vae_anomaly: training on %lld images of %s without class %d (%s), %d epochs\n",
                    (long long)kept, o.data, o.holdout, class_names[o.holdout], o.epochs);
        if (kept == 0) { cdl_fail("vae_anomaly: no training images left"); goto fail; }
        double t0 = now();
        if (o.epochs > 0 && train(net, &opt, &tr, &o) < 0) goto fail;
        t_train = now() - t0;
        cdl_dataset_free(&tr);
        if (o.save && vae_save(net, &opt, o.save) < 0) goto fail;
    }

    if (cdl_dataset_open(&te, o.data, 0) < 0) goto fail;
    if (te.ncols < 2 || te.col[0].feat != 784 || te.col[1].dtype != CDL_I32) {
        cdl_fail("vae_anomaly: %s: need labelled 784-pixel test images", o.data);
        goto fail;
    }
    if (o.test_limit && o.test_limit < te.n) te.n = o.test_limit;
    int64_t n = te.n;
    if (!(sc = cdl_alloc((size_t)n * 3 * sizeof(double))) || !(pos = cdl_alloc((size_t)n))) goto fail;
    double *nelbo = sc, *rec = sc + n, *kl = sc + 2 * n;
    if (score_all(net, &te, o.samples, o.seed, nelbo, rec, kl) < 0) goto fail;
    for (int64_t i = 0; i < n; i++) pos[i] = labels(&te)[i] == o.holdout;
    double auc = roc_auc(n, nelbo, pos), auc_rec = roc_auc(n, rec, pos), auc_kl = roc_auc(n, kl, pos);
    if (o.scores && write_scores(o.scores, &te, nelbo, rec, kl) < 0) goto fail;

    /* per-class means */
    double mean[10] = {0}, mean_in = 0, mean_out = 0, mean_all = 0;
    int64_t cnt[10] = {0}, n_in = 0;
    for (int64_t i = 0; i < n; i++) {
        int c = labels(&te)[i];
        mean_all += nelbo[i];
        if (c < 0 || c > 9) continue;
        mean[c] += nelbo[i];
        cnt[c]++;
        if (c == o.holdout) mean_out += nelbo[i];
        else mean_in += nelbo[i], n_in++;
    }
    if (n_in) mean_in /= (double)n_in;
    if (cnt[o.holdout]) mean_out /= (double)cnt[o.holdout];
    FILE *f = o.json ? stderr : stdout;
    if (!o.quiet || !o.json) {
        fprintf(f, "negative ELBO (nats) per test class, %s:\n",
                o.samples ? "mean over eps samples" : "eps = 0");
        for (int c = 0; c < 10; c++)
            if (cnt[c])
                fprintf(f, "  %d %-12s %5lld images  %8.2f%s\n", c, class_names[c], (long long)cnt[c],
                        mean[c] / (double)cnt[c], c == o.holdout ? "  <- held out" : "");
        fprintf(f, "held-out class %d (%s): ROC AUC %.4f  (reconstruction term alone %.4f, KL alone %.4f)\n",
                o.holdout, class_names[o.holdout], auc, auc_rec, auc_kl);
    }
    if (o.json) {
        printf("{\"holdout\":%d,\"class\":\"%s\",\"epochs\":%d,\"samples\":%d,\"seed\":%llu,"
               "\"test_images\":%lld,\"auc\":%.6f,\"auc_rec\":%.6f,\"auc_kl\":%.6f,"
               "\"nelbo_mean\":%.4f,\"nelbo_normal\":%.4f,\"nelbo_heldout\":%.4f,\"train_seconds\":%.2f,\"seconds\":%.2f}\n",
               o.holdout, class_names[o.holdout], o.load ? -1 : o.epochs, o.samples,
               (unsigned long long)o.seed, (long long)n, auc, auc_rec, auc_kl, mean_all / (double)(n ? n : 1), mean_in, mean_out,
               t_train, now() - t_start);
    }
    status = 0;
    goto done;
fail:
    fprintf(stderr, "vae_anomaly: %s\n", cdl_last_error());
done:
    cdl_free(sc);
    cdl_free(pos);
    cdl_dataset_free(&tr);
    cdl_dataset_free(&te);
    if (have_opt) cdl_optim_free(&opt);
    if (net) vae_free(net);
    return status;
}
