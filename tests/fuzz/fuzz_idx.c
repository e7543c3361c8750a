/* fuzz_idx.c -- libFuzzer harness for the IDX reader (runtime/data.c).
 *
 * Input: one byte k, then the image file; when k is odd the last k bytes of the
 * rest are the label file instead.  Parsed with cdl_dataset_parse_idx; an accepted
 * dataset must be self-consistent.  With CDL_FUZZ_CORPUS=DIR, initialisation writes
 * a valid seed there.
 */
#include "cdl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *dir = getenv("CDL_FUZZ_CORPUS");
    if (!dir) return 0;
    /* k = 11: 3 images of 2 x 3 (16 + 18 bytes), then 3 labels (8 + 3 bytes). */
    unsigned char s[1 + 16 + 18 + 11] = {11, 0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 3};
    for (int i = 0; i < 18; i++) s[17 + i] = (unsigned char)(i * 13);
    unsigned char lab[11] = {0, 0, 8, 1, 0, 0, 0, 3, 2, 0, 1};
    memcpy(s + 35, lab, 11);
    char p[4096];
    snprintf(p, sizeof p, "%s/seed.idx", dir);
    FILE *f = fopen(p, "wb");
    if (f) {
        fwrite(s, 1, sizeof s, f);
        fclose(f);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (size < 1) return 0;
    size_t k = data[0];
    const unsigned char *img = data + 1, *lab = NULL;
    size_t ni = size - 1, nl = 0;
    if ((k & 1) && k <= ni) {
        lab = img + ni - k;
        nl = k;
        ni -= k;
    }
    cdl_dataset d;
    if (cdl_dataset_parse_idx(&d, img, ni, lab, nl, "fuzz") == 0) {
        const cdl_column *x = &d.col[0], *y = d.ncols > 1 ? &d.col[1] : NULL;
        if (d.n < 1 || x->feat < 1 || !x->data || x->stride != x->feat || (lab != NULL) != (y != NULL)) abort();
        const float *px = x->data;
        for (int64_t i = 0; i < d.n * x->feat; i++)
            if (!(px[i] >= 0.0f && px[i] <= 1.0f)) abort();
        for (int64_t i = 0; y && i < d.n; i++)
            if (((const int32_t *)y->data)[i] < 0 || ((const int32_t *)y->data)[i] >= y->nclasses) abort();
        cdl_dataset_free(&d);
    }
    return 0;
}
