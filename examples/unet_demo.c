/* unet_demo.c -- what a trained denoising U-Net (models/unet.cdl) does, through its
 * entry point denoise(noisy):
 *
 *   unet.png   one column per class (the first test image of each of the 10 classes):
 *              the clean image, the image with Gaussian noise of standard deviation
 *              --sigma added (the model's training noise), and the network's output
 *
 * and prints, over the test images, the mean squared error and the PSNR
 * (10 log10(1 / MSE), pixels in [0, 1]) of the noisy images and of their denoised
 * versions against the clean ones, and of the network run on the clean images (the
 * reconstruction that `unet eval` scores as its test loss).
 *
 *   unet train --save unet.ckpt                      (the trainer built by cdlc --exe)
 *   unet_demo --load unet.ckpt [--out FILE.png] [--sigma S] [--seed S] [--scale S]
 *             [--data NAME] [--test-limit N] [--threads N]
 *
 * The noise is cdl_randn_f32 with key (seed, 0, 0xD015E): the same for every run with
 * the same seed.  Built by the Makefile (block "unet") from this file,
 * $(B)/gen-models/unet.c and libcdlrt.a.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdl.h"
#include "unet.h"

enum { IMG = 28, PIX = IMG * IMG, CLASSES = 10 };

typedef struct opts {
    const char *load, *out, *data;
    double sigma;
    int scale, threads;
    long long test_limit;
    uint64_t seed;
} opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: unet_demo --load unet.ckpt [options]\n"
            "  writes a PNG of clean / noisy / denoised test images (one column per class)\n"
            "  and prints the MSE and PSNR of the noisy and the denoised test images\n"
            "  --load F          checkpoint of models/unet.cdl (e.g. from `unet train --save F`)\n"
            "  --out FILE        the PNG (default unet.png)\n"
            "  --sigma S         standard deviation of the noise, 0..2 (default 0.3, the model's SIGMA)\n"
            "  --seed S          the noise's seed (default 1)\n"
            "  --scale S         pixels per image pixel in the PNG, 1..8 (default 3)\n"
            "  --data NAME       dataset (default fashion-mnist)\n"
            "  --test-limit N    use the first N test images\n"
            "  --threads N       BLAS threads (default 1)\n");
}

static int parse_num(const char *opt, const char *s, double lo, double hi, double *v) {
    char *end;
    double x = strtod(s, &end);
    if (!*s || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "unet_demo: %s: '%s' is not a number in [%g, %g]\n", opt, s, lo, hi);
        return -1;
    }
    *v = x;
    return 0;
}

/* Command line into *o.  0 ok, 1 --help shown, 2 usage error. */
static int parse_args(int argc, char **argv, opts *o) {
    *o = (opts){.out = "unet.png", .data = "fashion-mnist", .sigma = 0.3, .scale = 3, .threads = 1, .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 1; }
        if (i + 1 >= argc) { fprintf(stderr, "unet_demo: unknown option or missing value: %s\n", a); usage(stderr); return 2; }
        const char *v = argv[++i];
        double n;
        if (!strcmp(a, "--load")) o->load = v;
        else if (!strcmp(a, "--out")) o->out = v;
        else if (!strcmp(a, "--data")) o->data = v;
        else if (!strcmp(a, "--sigma")) { if (parse_num(a, v, 0, 2, &o->sigma)) return 2; }
        else if (!strcmp(a, "--seed")) { if (parse_num(a, v, 0, 1e15, &n)) return 2; o->seed = (uint64_t)n; }
        else if (!strcmp(a, "--scale")) { if (parse_num(a, v, 1, 8, &n)) return 2; o->scale = (int)n; }
        else if (!strcmp(a, "--test-limit")) { if (parse_num(a, v, 1, 1e12, &n)) return 2; o->test_limit = (long long)n; }
        else if (!strcmp(a, "--threads")) { if (parse_num(a, v, 1, 256, &n)) return 2; o->threads = (int)n; }
        else { fprintf(stderr, "unet_demo: unknown option %s\n", a); usage(stderr); return 2; }
    }
    if (!o->load) { fprintf(stderr, "unet_demo: --load is required (train one: unet train --save unet.ckpt)\n"); return 2; }
    return 0;
}

static double sq_err(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return s;
}

static double psnr(double mse) { return 10 * log10(1 / mse); }

int main(int argc, char **argv) {
    opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : 2;
    cdl_blas_set_threads(o.threads);
    const int B = unet_model.batch;
    cdl_dataset te = {0};
    cdl_net *net = NULL;
    float *noisy = NULL, *out = NULL, *fig = NULL;
    if (!(net = unet_new())) goto fail;
    if (unet_load(net, NULL, o.load) < 0) goto fail;
    if (cdl_dataset_open(&te, o.data, 0) < 0) goto fail;
    if (te.ncols < 2 || te.col[0].feat != PIX || te.col[1].dtype != CDL_I32) {
        cdl_fail("unet_demo: %s: need labelled 28x28 test images", o.data);
        goto fail;
    }
    int64_t n = te.n;
    if (o.test_limit > 0 && o.test_limit < n) n = o.test_limit;
    const float *clean = te.col[0].data;
    const int32_t *label = te.col[1].data;
    noisy = cdl_alloc((size_t)B * PIX * sizeof(float));
    out = cdl_alloc((size_t)B * PIX * sizeof(float));
    fig = cdl_alloc((size_t)2 * CLASSES * PIX * sizeof(float));
    if (!noisy || !out || !fig) { cdl_fail("unet_demo: out of memory"); goto fail; }
    const float *tiles[3 * CLASSES] = {0};
    double e_noisy = 0, e_den = 0, e_rec = 0;
    cdl_rng_key key = {o.seed, 0, 0xD015Eu};
    cdl_clear_error();                        /* an entry that fails leaves a message */
    for (int64_t s = 0; s < n; s += B) {
        int nb = (int)(n - s < B ? n - s : B);
        const float *x = clean + s * PIX;
        cdl_randn_f32(key, (uint64_t)(s * PIX), (int64_t)nb * PIX, noisy);
        for (int64_t i = 0; i < (int64_t)nb * PIX; i++) noisy[i] = x[i] + (float)o.sigma * noisy[i];
        unet_denoise(net, nb, (const void *[]){noisy}, (void *[]){out});
        e_noisy += sq_err(noisy, x, (int64_t)nb * PIX);
        e_den += sq_err(out, x, (int64_t)nb * PIX);
        for (int i = 0; i < nb; i++) {            /* the first image of each class: a column */
            int c = label[s + i];
            if (c < 0 || c >= CLASSES || tiles[c]) continue;
            tiles[c] = x + (int64_t)i * PIX;
            memcpy(fig + (size_t)c * PIX, noisy + (size_t)i * PIX, PIX * sizeof(float));
            memcpy(fig + (size_t)(CLASSES + c) * PIX, out + (size_t)i * PIX, PIX * sizeof(float));
            tiles[CLASSES + c] = fig + (size_t)c * PIX;
            tiles[2 * CLASSES + c] = fig + (size_t)(CLASSES + c) * PIX;
        }
        unet_denoise(net, nb, (const void *[]){x}, (void *[]){out});
        e_rec += sq_err(out, x, (int64_t)nb * PIX);
    }
    const char *err = cdl_last_error();
    if (err && *err) goto fail;
    double m = (double)n * PIX;
    printf("%lld test images, noise sigma %g (seed %llu)\n", (long long)n, o.sigma, (unsigned long long)o.seed);
    printf("noisy input:         MSE %.6f  PSNR %.2f dB\n", e_noisy / m, psnr(e_noisy / m));
    printf("denoised:            MSE %.6f  PSNR %.2f dB\n", e_den / m, psnr(e_den / m));
    printf("clean input, output: MSE %.6f  PSNR %.2f dB (the eval test loss)\n", e_rec / m, psnr(e_rec / m));
    if (cdl_png_write_tiles(o.out, tiles, 3 * CLASSES, CLASSES, IMG, IMG, o.scale) < 0) goto fail;
    printf("wrote %s: rows clean / noisy / denoised, one column per class\n", o.out);
    cdl_free(noisy);
    cdl_free(out);
    cdl_free(fig);
    cdl_dataset_free(&te);
    unet_free(net);
    return 0;
fail:
    fprintf(stderr, "unet_demo: %s\n", cdl_last_error());
    cdl_free(noisy);
    cdl_free(out);
    cdl_free(fig);
    cdl_dataset_free(&te);
    unet_free(net);
    return 1;
}
