/* main.c -- a Fashion-MNIST classifier in one C file plus the model: reads a 28x28
 * grey PGM image and prints the class a trained LeNet (models/lenet.cdl) gives it.
 *
 * The model is lenet_infer.c, written by `cdlc models/lenet.cdl --inference --weights
 * lenet.ckpt -o lenet_infer.c`: the forward pass with the weights inside, plain C99.
 * This program and that file are all there is; no runtime library, no BLAS:
 *
 *   cc -std=c99 -O2 main.c lenet_infer.c -o classify -lm
 *   ./classify shoe.pgm            ->  Ankle boot  (97.3%)
 *   ./classify --all shoe.pgm      ->  every class with its probability
 *
 * Images: binary (P5) or text (P2) PGM, 28x28, any maxval up to 65535; light pixels
 * are the garment (as in Fashion-MNIST: white on black).  `make classify` builds it
 * from a LeNet trained for one epoch (examples/README.md, docs/deploy.md).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lenet_infer.h"

static const char *const classes[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                        "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

/* The next header number of a PGM (whitespace and # comments skipped); -1 if none. */
static long pgm_number(FILE *f) {
    int c;
    for (;;) {
        c = getc(f);
        if (c == '#')
            while (c != '\n' && c != EOF) c = getc(f);
        else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    }
    long v = 0;
    int digits = 0;
    for (; c >= '0' && c <= '9' && v < 1000000; c = getc(f), digits++) v = v * 10 + (c - '0');
    return digits && (c == EOF || c == ' ' || c == '\t' || c == '\n' || c == '\r') ? v : -1;
}

/* Read path into x[784] scaled to [0, 1]; an error message (NULL: fine). */
static const char *read_pgm(const char *path, float *x) {
    FILE *f = fopen(path, "rb");
    if (!f) return "cannot open";
    const char *err = NULL;
    int c0 = getc(f), c1 = getc(f);
    long w = pgm_number(f), h = pgm_number(f), maxval = pgm_number(f);
    if (c0 != 'P' || (c1 != '5' && c1 != '2')) err = "not a PGM image (P5 or P2)";
    else if (w < 0 || h < 0 || maxval < 1 || maxval > 65535) err = "bad PGM header";
    else if (w != 28 || h != 28) err = "the image must be 28x28 pixels";
    for (int i = 0; !err && i < 784; i++) {
        long v;
        if (c1 == '2') v = pgm_number(f);
        else if (maxval < 256) v = getc(f);
        else {
            int hi = getc(f), lo = getc(f);
            v = hi == EOF || lo == EOF ? -1 : hi << 8 | lo;
        }
        if (v < 0 || v > maxval) err = "truncated or bad pixel data";
        else x[i] = (float)v / (float)maxval;
    }
    fclose(f);
    return err;
}

int main(int argc, char **argv) {
    int all = argc == 3 && !strcmp(argv[1], "--all");
    if (argc != 2 + all || argv[argc - 1][0] == '-') {
        fprintf(stderr, "usage: %s [--all] IMAGE.pgm   (28x28 grey, white garment on black)\n", argv[0]);
        return 2;
    }
    float x[LENET_INFER_X_SIZE], logits[LENET_INFER_LOGITS_SIZE], p[10], sum = 0;
    const char *err = read_pgm(argv[argc - 1], x);
    if (err) {
        fprintf(stderr, "%s: %s\n", argv[argc - 1], err);
        return 1;
    }
    lenet_infer(x, logits, NULL);          /* NULL: the file's own static arena */
    int best = 0;
    for (int k = 0; k < 10; k++) best = logits[k] > logits[best] ? k : best;
    for (int k = 0; k < 10; k++) sum += p[k] = expf(logits[k] - logits[best]);
    if (!all) {
        printf("%s  (%.1f%%)\n", classes[best], 100.0 * p[best] / sum);
        return 0;
    }
    for (int k = 0; k < 10; k++) printf("%-12s %5.1f%%%s\n", classes[k], 100.0 * p[k] / sum, k == best ? "  <-" : "");
    return 0;
}
