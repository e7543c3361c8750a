/* test_rt_data_u8.c -- IDX images kept as bytes (cdl_dataset_load_idx_u8, _open_u8:
 * columns flagged CDL_COL_U8) and converted by the loader a batch at a time.
 *
 * The loader's batches from the byte dataset must equal, bit for bit, those from the
 * float dataset cdl_dataset_load_idx makes of the same file: plain and normalised
 * (the table path), with crop, flip and noise (the general path), as f32 and f64, with
 * and without worker threads, sharded; the bytes are the file's, raw or gzip; the
 * named sets; Fashion-MNIST's test split when installed.
 */
#include "test_rt_idx.h"

#include <sys/stat.h>

enum { N = IDX_N, H = IDX_H, W = IDX_W };

/* The IDX files (test_rt_idx.h); px gets their pixels. */
static void mk_files(unsigned char *px) {
    unsigned char im[IDX_HB + N * H * W];
    idx_mk_files(im);
    memcpy(px, im + IDX_HB, N * H * W);
}


static void test_u8_columns(void **st) {
    (void)st;
    unsigned char px[N * H * W];
    mk_files(px);
    for (int gz = 0; gz < 2; gz++) {
        cdl_dataset f, b;
        const char *im = gz ? tpath("im.idx.gz") : tpath("im.idx");
        assert_int_equal(cdl_dataset_load_idx(&f, im, tpath("lb.idx")), 0);
        im = gz ? tpath("im.idx.gz") : tpath("im.idx");
        assert_int_equal(cdl_dataset_load_idx_u8(&b, im, tpath("lb.idx")), 0);
        assert_int_equal(b.n, N);
        assert_true(b.col[0].dtype == CDL_F32 && (b.col[0].flags & CDL_COL_U8) && !(f.col[0].flags & CDL_COL_U8));
        assert_int_equal(b.col[0].feat, H * W);
        assert_int_equal(b.col[0].stride, H * W);
        assert_memory_equal(b.col[0].data, px, sizeof px);              /* the file's bytes */
        assert_int_equal(b.col[1].nclasses, 10);
        for (int i = 0; i < N * H * W; i++)                            /* v / 255, as before */
            assert_true(((const float *)f.col[0].data)[i] == (float)px[i] / 255.0f);
        cdl_dataset_free(&f);
        cdl_dataset_free(&b);
    }
}

static void test_u8_batches_equal_floats(void **st) {
    (void)st;
    unsigned char px[N * H * W];
    mk_files(px);
    cdl_dataset f, b;
    assert_int_equal(cdl_dataset_load_idx(&f, tpath("im.idx"), tpath("lb.idx")), 0);
    assert_int_equal(cdl_dataset_load_idx_u8(&b, tpath("im.idx.gz"), tpath("lb.idx")), 0);
    cdl_transform tfs[] = {
        {0},                                                        /* plain */
        {.normalize = 1, .mean = 0.2860, .std = 0.3530},            /* Fashion-MNIST's */
        {.normalize = 1, .mean = -1.5, .std = 7},
        {.crop_pad = 2, .hflip = 1},
        {.normalize = 1, .mean = 0.5, .std = 2, .crop_pad = 1, .hflip = 1, .noise_std = 0.1},
        {.noise_std = 0.3},
    };
    for (size_t t = 0; t < sizeof tfs / sizeof tfs[0]; t++)
        for (int rs = 4; rs <= 8; rs += 4)
            for (int w = 0; w <= 2; w += 2) {
                cdl_loader_cfg cfg = {.batch = 16, .shuffle = 1, .seed = 11, .real_size = rs, .workers = w, .tf = tfs[t]};
                idx_same_epochs(&f, &b, cfg, f.n);
            }
    /* Shards and a partial last batch, no shuffle. */
    cdl_loader_cfg cfg = {.batch = 64, .nshards = 3, .shard = 1, .tf = tfs[1]};
    size_t row = (size_t)H * W * 4;
    float xf[64 * H * W], xb[64 * H * W];
    int32_t y[64];
    cdl_loader *lf = cdl_loader_new(&f, &cfg), *lb = cdl_loader_new(&b, &cfg);
    assert_int_equal(cdl_loader_start(lf, 0, 0), 0);
    assert_int_equal(cdl_loader_start(lb, 0, 0), 0);
    int r;
    while ((r = cdl_loader_next(lf, (void *[]){xf, y})) > 0) {
        assert_int_equal(cdl_loader_next(lb, (void *[]){xb, y}), r);
        assert_memory_equal(xf, xb, (size_t)r * row);
    }
    cdl_loader_free(lf);
    cdl_loader_free(lb);
    cdl_dataset_free(&f);
    cdl_dataset_free(&b);
}

/* The named sets through _open_u8: the same files, names and messages. */
static void test_u8_named(void **st) {
    (void)st;
    unsigned char px[N * H * W];
    mk_files(px);
    assert_int_equal(mkdir(tpath("fm"), 0755), 0);
    assert_int_equal(rename(tpath("im.idx"), tpath("fm/t10k-images-idx3-ubyte")), 0);
    assert_int_equal(rename(tpath("lb.idx"), tpath("fm/t10k-labels-idx1-ubyte")), 0);
    char name[600];
    snprintf(name, sizeof name, "fashion-mnist:%s", tpath("fm"));
    cdl_dataset b;
    assert_int_equal(cdl_dataset_open_u8(&b, name, 0), 0);
    assert_true((b.col[0].flags & CDL_COL_U8) && b.col[1].nclasses == 10);
    assert_string_equal(b.name, "fashion-mnist/test");
    assert_memory_equal(b.col[0].data, px, sizeof px);
    cdl_dataset_free(&b);
    assert_int_equal(cdl_dataset_open_u8(&b, name, 1), -1);
    expect_error("cannot find train-images-idx3-ubyte");
}

/* The real test split, when installed: every batch equal. */
static void test_u8_fashion_mnist(void **st) {
    (void)st;
    if (access("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", R_OK) != 0) {
        skip();
        return;
    }
    cdl_dataset f, b;
    assert_int_equal(cdl_dataset_open(&f, "fashion-mnist", 0), 0);
    assert_int_equal(cdl_dataset_open_u8(&b, "fashion-mnist", 0), 0);
    assert_int_equal(b.n, 10000);
    assert_true(b.col[0].flags & CDL_COL_U8);
    cdl_loader_cfg cfg = {.batch = 64, .shuffle = 1, .seed = 1, .workers = 1,
                          .tf = {.normalize = 1, .mean = 0.2860, .std = 0.3530}};
    idx_same_epochs(&f, &b, cfg, f.n);
    cdl_dataset_free(&f);
    cdl_dataset_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_u8_columns),
        cmocka_unit_test(test_u8_batches_equal_floats),
        cmocka_unit_test(test_u8_named),
        cmocka_unit_test(test_u8_fashion_mnist),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
