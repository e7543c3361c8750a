/* test_rt_idx.h -- what the IDX data tests share (test_rt_data_u8.c, test_rt_data_stream.c):
 * a small IDX image file whose pixels take every byte value, with its labels. */
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

#endif
