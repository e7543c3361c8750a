/* test_rt_idx.h -- what the IDX data tests share (test_rt_data_u8.c, test_rt_data_stream.c):
 * a small IDX image file whose pixels take every byte value, with its labels, and the
 * check that two datasets give the same loader epochs. */
#ifndef TEST_RT_IDX_H
#define TEST_RT_IDX_H

#include "test_rt_util.h"

#include <zlib.h>

enum { IDX_N = 203, IDX_H = 6, IDX_W = 5, IDX_HB = 16 /* the image file's header bytes */ };

/* im.idx (and im.idx.gz) of IDX_N images IDX_H x IDX_W, lb.idx of their labels, in the
 * test directory; im gets the image file's bytes. */
static inline void idx_mk_files(unsigned char im[IDX_HB + IDX_N * IDX_H * IDX_W]) {
    enum { N = IDX_N, H = IDX_H, W = IDX_W, S = IDX_HB + IDX_N * IDX_H * IDX_W };
    unsigned char lb[8 + N];
    unsigned char hi[16] = {0, 0, 8, 3, 0, 0, 0, N, 0, 0, 0, H, 0, 0, 0, W};
    unsigned char hl[8] = {0, 0, 8, 1, 0, 0, 0, N};
    memcpy(im, hi, 16);
    memcpy(lb, hl, 8);
    for (int i = 0; i < N * H * W; i++) im[IDX_HB + i] = (unsigned char)((i * 167 + i / 7) % 256);
    for (int i = 0; i < N; i++) lb[8 + i] = (unsigned char)(i % 10);
    spit(tpath("im.idx"), im, S);
    spit(tpath("lb.idx"), lb, sizeof lb);
    gzFile g = gzopen(tpath("im.idx.gz"), "wb");
    assert_non_null(g);
    assert_int_equal(gzwrite(g, im, S), S);
    assert_int_equal(gzclose(g), Z_OK);
}

/* Two epochs of cfg from datasets a and b (the same examples held two ways): the same
 * rows, bit for bit.  want: the rows an epoch must have, or -1 for any number above 0. */
static inline void idx_same_epochs(const cdl_dataset *a, const cdl_dataset *b, cdl_loader_cfg cfg, int64_t want) {
    size_t row = (size_t)a->col[0].feat * (size_t)(cfg.real_size ? cfg.real_size : 4);
    unsigned char *xa = malloc(row * (size_t)a->n), *xb = malloc(row * (size_t)a->n);
    int32_t *ya = malloc(sizeof(int32_t) * (size_t)a->n), *yb = malloc(sizeof(int32_t) * (size_t)a->n);
    cdl_loader *la = cdl_loader_new(a, &cfg), *lb = cdl_loader_new(b, &cfg);
    assert_non_null(la);
    assert_non_null(lb);
    for (uint64_t e = 0; e < 2; e++) {
        memset(xb, 0xA5, row * (size_t)a->n);
        int64_t n = rt_loader_epoch(la, e, 0, row, cfg.batch, xa, ya);
        if (want < 0) assert_true(n > 0);
        else assert_int_equal(n, want);
        assert_int_equal(rt_loader_epoch(lb, e, 0, row, cfg.batch, xb, yb), n);
        assert_memory_equal(xa, xb, row * (size_t)n);
        assert_memory_equal(ya, yb, sizeof(int32_t) * (size_t)n);
    }
    cdl_loader_free(la);
    cdl_loader_free(lb);
    free(xa);
    free(xb);
    free(ya);
    free(yb);
}

#endif
