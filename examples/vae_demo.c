/* vae_demo.c -- what a trained VAE (models/vae.cdl) does, through its entry points:
 *
 *   recon.png    test images (odd rows) and their reconstructions decode(encode(x).mu)
 *                (the row below each), 8 pairs of rows of 16
 *   samples.png  decode(z) for z ~ N(0, I): new garments, 8 rows of 16
 *   interp.png   walks through latent space: each row starts at a test image of one
 *                class, decodes 8 points on the line between its code and the code of
 *                an image of another class, and ends at that image
 *   codes.csv    the compressed code of every test image: its label and the 20 values
 *                of the encoder's mean mu (784 pixels -> 20 reals)
 *
 * and prints how good the code is: the reconstruction error from the code alone, and
 * the accuracy of a k-nearest-neighbour classifier on the 20-value codes next to the
 * same classifier on the 784 raw pixels (reference: the first --ref training images).
 *
 *   vae train --epochs 10 --save vae.ckpt          (the trainer built by cdlc --exe)
 *   vae_demo --load vae.ckpt [--out DIR] [--scale S] [--seed S] [--ref N] [--k K]
 *            [--data NAME] [--test-limit N] [--threads N]
 *
 * The program calls the generated functions (vae_new, vae_load, vae_encode,
 * vae_generate) and the runtime (datasets, cdl_gemm_f32, cdl_png_write_gray).  Built by
 * the Makefile (block "vae") from this file, $(B)/gen-models/vae.c and libcdlrt.a.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdl.h"
#include "vae.h"

enum { IMG = 28, PIX = IMG * IMG, COLS = 16, ROWS = 8 };

typedef struct opts {
    const char *load, *out, *data;
    int scale, k, threads;
    long long ref, test_limit;
    uint64_t seed;
} opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: vae_demo --load vae.ckpt [options]\n"
            "  writes recon.png, samples.png, interp.png and codes.csv; prints the\n"
            "  reconstruction error and k-NN accuracy of the 20-value codes\n"
            "  --load F          checkpoint of models/vae.cdl (e.g. from `vae train --save F`)\n"
            "  --out DIR         directory for the files (default .)\n"
            "  --scale S         pixels per image pixel in the PNGs, 1..8 (default 2)\n"
            "  --seed S          latent samples of samples.png (default 1)\n"
            "  --ref N           training images used as k-NN references (default 10000)\n"
            "  --k K             neighbours (default 5)\n"
            "  --data NAME       dataset (default fashion-mnist)\n"
            "  --test-limit N    use the first N test images\n"
            "  --threads N       BLAS threads (default 1)\n");
}

static int parse_int(const char *opt, const char *s, long long lo, long long hi, long long *v) {
    char *end;
    long long x = strtoll(s, &end, 10);
    if (!*s || *end || x < lo || x > hi) {
        fprintf(stderr, "vae_demo: %s: '%s' is not an integer in [%lld, %lld]\n", opt, s, lo, hi);
        return -1;
    }
    *v = x;
    return 0;
}

/* Command line into *o.  0 ok, 1 --help shown, 2 usage error. */
static int parse_args(int argc, char **argv, opts *o) {
    *o = (opts){.out = ".", .data = "fashion-mnist", .scale = 2, .k = 5, .threads = 1,
                .ref = 10000, .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 1; }
        if (i + 1 >= argc) { fprintf(stderr, "vae_demo: unknown option or missing value: %s\n", a); usage(stderr); return 2; }
        const char *v = argv[++i];
        long long n;
        if (!strcmp(a, "--load")) o->load = v;
        else if (!strcmp(a, "--out")) o->out = v;
        else if (!strcmp(a, "--data")) o->data = v;
        else if (!strcmp(a, "--scale")) { if (parse_int(a, v, 1, 8, &n)) return 2; o->scale = (int)n; }
        else if (!strcmp(a, "--k")) { if (parse_int(a, v, 1, 100, &n)) return 2; o->k = (int)n; }
        else if (!strcmp(a, "--threads")) { if (parse_int(a, v, 1, 256, &n)) return 2; o->threads = (int)n; }
        else if (!strcmp(a, "--ref")) { if (parse_int(a, v, 1, 1LL << 40, &n)) return 2; o->ref = n; }
        else if (!strcmp(a, "--test-limit")) { if (parse_int(a, v, 1, 1LL << 40, &n)) return 2; o->test_limit = n; }
        else if (!strcmp(a, "--seed")) { if (parse_int(a, v, 0, 1LL << 62, &n)) return 2; o->seed = (uint64_t)n; }
        else { fprintf(stderr, "vae_demo: unknown option %s\n", a); usage(stderr); return 2; }
    }
    if (!o->load) { fprintf(stderr, "vae_demo: --load is required (train one: vae train --save vae.ckpt)\n"); return 2; }
    return 0;
}

/* mu (n x Z) of the n images x (n x PIX), through the encode entry in batches of the
 * compiled size; logvar goes to the caller's scratch lv (B x Z). */
static void encode_all(cdl_net *net, int64_t n, const float *x, float *mu, float *lv, int Z) {
    const int B = vae_model.batch;
    for (int64_t s = 0; s < n; s += B) {
        int nb = (int)(n - s < B ? n - s : B);
        const void *in[1] = {x + s * PIX};
        void *out[2] = {mu + s * Z, lv};
        vae_encode(net, nb, in, out);
    }
}

/* Indices of the k smallest of d[0..n) into best[0..k) (k <= n), nearest first. */
static void k_smallest(const float *d, int64_t n, int k, int64_t *best) {
    int m = 0;
    for (int64_t j = 0; j < n; j++) {
        if (m == k && d[j] >= d[best[m - 1]]) continue;
        int p = m < k ? m++ : k - 1;
        while (p > 0 && d[best[p - 1]] > d[j]) { best[p] = best[p - 1]; p--; }
        best[p] = j;
    }
}

/* Accuracy of k-nearest-neighbour (Euclidean, majority vote, ties to the nearest
 * neighbour's class) classification of the nq queries q (nq x dim) against the nr
 * references r (nr x dim) with labels ry; labels in [0, 10).  Distances come from
 * ||q||^2 - 2 q.r + ||r||^2 with one GEMM per block of 128 queries.  NaN on allocation
 * failure. */
static double knn_accuracy(const float *r, const int32_t *ry, int64_t nr, const float *q,
                           const int32_t *qy, int64_t nq, int64_t dim, int k) {
    const int64_t QB = 128;
    if (k > nr) k = (int)nr;
    float *rn = cdl_alloc((size_t)nr * sizeof(float));
    float *dist = cdl_alloc((size_t)(QB * nr) * sizeof(float));
    int64_t *best = cdl_alloc((size_t)k * sizeof(int64_t));
    if (!rn || !dist || !best) {
        cdl_free(rn);
        cdl_free(dist);
        cdl_free(best);
        return NAN;
    }
    for (int64_t j = 0; j < nr; j++) {
        double s = 0;
        for (int64_t t = 0; t < dim; t++) s += (double)r[j * dim + t] * r[j * dim + t];
        rn[j] = (float)s;
    }
    int64_t hits = 0;
    for (int64_t s = 0; s < nq; s += QB) {
        int64_t nb = nq - s < QB ? nq - s : QB;
        /* dist[i, j] = -2 q_i . r_j, then + ||r_j||^2 (||q_i||^2 does not change the ranking) */
        cdl_gemm_f32(0, 1, nb, nr, dim, -2.0f, q + s * dim, dim, r, dim, 0.0f, dist, nr);
        for (int64_t i = 0; i < nb; i++) {
            float *di = dist + i * nr;
            for (int64_t j = 0; j < nr; j++) di[j] += rn[j];
            k_smallest(di, nr, k, best);
            int votes[10] = {0}, win = ry[best[0]];
            for (int t = 0; t < k; t++) {
                int c = ry[best[t]];
                if (c >= 0 && c < 10 && ++votes[c] > votes[win]) win = c;
            }
            hits += win == qy[s + i];
        }
    }
    cdl_free(rn);
    cdl_free(dist);
    cdl_free(best);
    return (double)hits / (double)(nq ? nq : 1);
}

/* The image set's columns: x (PIX pixels an example, contiguous) and y (labels). */
static const float *pixels(const cdl_dataset *d) { return d->col[0].data; }
static const int32_t *labels(const cdl_dataset *d) { return d->col[1].data; }

/* First index of class c in y[0..n), or -1. */
static int64_t first_of(const int32_t *y, int64_t n, int c) {
    for (int64_t i = 0; i < n; i++)
        if (y[i] == c) return i;
    return -1;
}

int main(int argc, char **argv) {
    opts o;
    int pr = parse_args(argc, argv, &o);
    if (pr) return pr == 1 ? 0 : 2;
    cdl_blas_set_threads(o.threads);
    const int B = vae_model.batch;
    int Z = (int)vae_model.entries[0].in[0].dims[1];      /* generate(z: f32[B, Z]) */
    int status = 1;
    char path[4096];
    cdl_dataset tr = {0}, te = {0};
    cdl_net *net = NULL;
    float *mu = NULL, *lv = NULL, *img = NULL, *z = NULL, *rmu = NULL;
    FILE *f = NULL;

    if (strcmp(vae_model.entries[0].name, "generate") || B < COLS * ROWS / 2) {
        cdl_fail("vae_demo: models/vae.cdl must have generate(z) first and a batch >= %d", COLS * ROWS / 2);
        goto fail;
    }
    if (!(net = vae_new())) goto fail;
    if (vae_load(net, NULL, o.load) < 0) goto fail;
    if (cdl_dataset_open(&te, o.data, 0) < 0) goto fail;
    if (te.ncols < 2 || te.col[0].feat != PIX || te.col[1].dtype != CDL_I32) {
        cdl_fail("vae_demo: %s: need labelled 28x28 test images", o.data);
        goto fail;
    }
    if (o.test_limit && o.test_limit < te.n) te.n = o.test_limit;
    int64_t n = te.n;
    if (n < COLS * ROWS / 2) {
        cdl_fail("vae_demo: need at least %d test images", COLS * ROWS / 2);
        goto fail;
    }
    mu = cdl_alloc((size_t)n * (size_t)Z * sizeof(float));
    lv = cdl_alloc((size_t)B * (size_t)Z * sizeof(float));
    img = cdl_alloc((size_t)B * PIX * sizeof(float));
    z = cdl_alloc((size_t)B * (size_t)Z * sizeof(float));
    if (!mu || !lv || !img || !z) { cdl_fail("vae_demo: out of memory"); goto fail; }

    /* the compressed codes of the whole test split */
    encode_all(net, n, pixels(&te), mu, lv, Z);

    /* reconstruction error from the code alone: BCE (nats per image) and MSE per pixel */
    double bce = 0, mse = 0;
    for (int64_t s = 0; s < n; s += B) {
        int nb = (int)(n - s < B ? n - s : B);
        const void *in[1] = {mu + s * Z};
        void *out[1] = {img};
        vae_generate(net, nb, in, out);
        for (int64_t i = 0; i < (int64_t)nb * PIX; i++) {
            double p = img[i], x = pixels(&te)[s * PIX + i];
            p = p < 1e-7 ? 1e-7 : p > 1 - 1e-7 ? 1 - 1e-7 : p;
            bce -= x * log(p) + (1 - x) * log(1 - p);
            mse += (p - x) * (p - x);
        }
    }
    printf("code: %d reals per image (from %d pixels, %.1fx smaller)\n", Z, PIX, (double)PIX / Z);
    printf("reconstruction from the code (%lld test images): BCE %.2f nats/image, MSE %.5f/pixel\n",
           (long long)n, bce / (double)n, mse / ((double)n * PIX));

    /* recon.png: rows of 16 originals, each followed by their reconstructions */
    {
        int m = COLS * ROWS / 2;
        const void *in[1] = {mu};
        void *out[1] = {img};
        vae_generate(net, m, in, out);
        const float *tiles[COLS * ROWS];
        for (int r = 0; r < ROWS / 2; r++)
            for (int c = 0; c < COLS; c++) {
                tiles[(2 * r) * COLS + c] = pixels(&te) + (int64_t)(r * COLS + c) * PIX;
                tiles[(2 * r + 1) * COLS + c] = img + (int64_t)(r * COLS + c) * PIX;
            }
        snprintf(path, sizeof path, "%s/recon.png", o.out);
        if (cdl_png_write_tiles(path, tiles, ROWS * COLS, COLS, IMG, IMG, o.scale) < 0) goto fail;
        printf("wrote %s: %d test images (rows 1, 3, 5, 7) and their reconstructions\n", path, m);
    }

    /* samples.png: z ~ N(0, I) */
    {
        int m = COLS * ROWS;
        if (m > B) m = B;
        cdl_randn_f32((cdl_rng_key){o.seed, 0, 0x5A3B1E00u}, 0, (int64_t)m * Z, z);
        const void *in[1] = {z};
        void *out[1] = {img};
        vae_generate(net, m, in, out);
        const float *tiles[COLS * ROWS] = {0};
        for (int i = 0; i < m; i++) tiles[i] = img + (int64_t)i * PIX;
        snprintf(path, sizeof path, "%s/samples.png", o.out);
        if (cdl_png_write_tiles(path, tiles, ROWS * COLS, COLS, IMG, IMG, o.scale) < 0) goto fail;
        printf("wrote %s: %d images decoded from z ~ N(0, I)\n", path, m);
    }

    /* interp.png: class r -> class (r + 5) % 10, endpoints are the real images */
    {
        enum { STEPS = 8, IC = STEPS + 2 };
        const float *tiles[ROWS * IC] = {0};
        int m = 0;
        for (int r = 0; r < ROWS; r++) {
            int64_t a = first_of(labels(&te), n, r % 10), b = first_of(labels(&te), n, (r + 5) % 10);
            if (a < 0 || b < 0) continue;
            tiles[r * IC] = pixels(&te) + a * PIX;
            tiles[r * IC + IC - 1] = pixels(&te) + b * PIX;
            for (int s = 0; s < STEPS && m < B; s++, m++) {
                float t = (float)s / (STEPS - 1);
                for (int j = 0; j < Z; j++) z[m * Z + j] = (1 - t) * mu[a * Z + j] + t * mu[b * Z + j];
                tiles[r * IC + 1 + s] = img + (int64_t)m * PIX;   /* filled below */
            }
        }
        const void *in[1] = {z};
        void *out[1] = {img};
        if (m > 0) vae_generate(net, m, in, out);
        snprintf(path, sizeof path, "%s/interp.png", o.out);
        if (cdl_png_write_tiles(path, tiles, ROWS * IC, IC, IMG, IMG, o.scale) < 0) goto fail;
        printf("wrote %s: latent interpolations between test images of two classes\n", path);
    }

    /* codes.csv */
    snprintf(path, sizeof path, "%s/codes.csv", o.out);
    if (!(f = fopen(path, "w"))) { cdl_fail("%s: cannot open for writing", path); goto fail; }
    fprintf(f, "label");
    for (int j = 0; j < Z; j++) fprintf(f, ",mu%d", j);
    fprintf(f, "\n");
    for (int64_t i = 0; i < n; i++) {
        fprintf(f, "%d", (int)labels(&te)[i]);
        for (int j = 0; j < Z; j++) fprintf(f, ",%.5g", mu[i * Z + j]);
        fprintf(f, "\n");
    }
    int bad = fclose(f) != 0;
    f = NULL;
    if (bad) { cdl_fail("%s: write error", path); goto fail; }
    printf("wrote %s: label and mu (%d values) of %lld test images\n", path, Z, (long long)n);

    /* k-NN on codes and on pixels, references from the training split */
    if (cdl_dataset_open(&tr, o.data, 1) < 0) goto fail;
    if (tr.ncols < 2 || tr.col[0].feat != PIX || tr.col[1].dtype != CDL_I32) { cdl_fail("vae_demo: %s: need labelled training images", o.data); goto fail; }
    if (o.ref < tr.n) tr.n = o.ref;
    if (!(rmu = cdl_alloc((size_t)tr.n * (size_t)Z * sizeof(float)))) { cdl_fail("vae_demo: out of memory"); goto fail; }
    encode_all(net, tr.n, pixels(&tr), rmu, lv, Z);
    double acc_code = knn_accuracy(rmu, labels(&tr), tr.n, mu, labels(&te), n, Z, o.k);
    double acc_pix = knn_accuracy(pixels(&tr), labels(&tr), tr.n, pixels(&te), labels(&te), n, PIX, o.k);
    if (isnan(acc_code) || isnan(acc_pix)) { cdl_fail("vae_demo: out of memory in k-NN"); goto fail; }
    printf("%d-NN test accuracy (%lld training images as references): %d-value code %.2f%%, %d raw pixels %.2f%%\n",
           o.k, (long long)tr.n, Z, 100 * acc_code, PIX, 100 * acc_pix);
    status = 0;
    goto done;
fail:
    fprintf(stderr, "vae_demo: %s\n", cdl_last_error());
done:
    if (f) fclose(f);
    cdl_free(mu);
    cdl_free(lv);
    cdl_free(img);
    cdl_free(z);
    cdl_free(rmu);
    cdl_dataset_free(&tr);
    cdl_dataset_free(&te);
    if (net) vae_free(net);
    return status;
}
