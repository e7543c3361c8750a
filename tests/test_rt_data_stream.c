/* test_rt_data_stream.c -- IDX images left in their file (cdl_dataset_load_idx_stream,
 * _open_stream: columns flagged CDL_COL_U8 | CDL_COL_FILE) and read by the loader a
 * batch at a time.
 *
 * The streamed batches must equal, bit for bit, those of the in-memory byte dataset
 * (which test_rt_data_u8 holds equal to the float one): shuffled and not, sharded, with
 * every transform, f32 and f64, workers 0 and 2, raw files and gzip ones through the
 * cache.  The cache: made where $CDL_CACHE_DIR says, fsync'd before it is named, reused, rebuilt when truncated or
 * its header is wrong, a new entry for a changed source, no temporary files left, and
 * an unwritable cache falls back to memory without an error.  A file changed while
 * in use fails the batch naming it; bad files give the in-memory reader's messages;
 * no allocation per batch.
 */
#include "test_rt_idx.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <zlib.h>

/* The runtime's fsync and rename calls land here (a definition in the program wins over
 * the C library's) and go on to the kernel: the cache entry's data must be fsync'd
 * before its temporary file is renamed to the entry's name. */
static int g_fsyncs, g_fsyncs_at_rename = -1;
int fsync(int fd) {
    g_fsyncs++;
    return (int)syscall(SYS_fsync, fd);
}
int rename(const char *from, const char *to) {
    if (strstr(from, ".tmp.")) g_fsyncs_at_rename = g_fsyncs;
    return (int)syscall(SYS_rename, from, to);
}

enum { N = IDX_N, H = IDX_H, W = IDX_W, HB = IDX_HB };

static unsigned char g_im[HB + N * H * W];

static void mk_files(void) {
    idx_mk_files(g_im);
}


static int streamed(const cdl_dataset *d) {
    return d->stream && d->col[0].data == NULL && (d->col[0].flags & (CDL_COL_U8 | CDL_COL_FILE)) ==
                                                      (CDL_COL_U8 | CDL_COL_FILE);
}

static void test_stream_batches_equal(void **st) {
    (void)st;
    mk_files();
    setenv("CDL_CACHE_DIR", tpath("cache"), 1);
    cdl_dataset a, b[2];
    assert_int_equal(cdl_dataset_load_idx_u8(&a, tpath("im.idx"), tpath("lb.idx")), 0);
    assert_int_equal(cdl_dataset_load_idx_stream(&b[0], tpath("im.idx"), tpath("lb.idx")), 0);
    assert_int_equal(cdl_dataset_load_idx_stream(&b[1], tpath("im.idx.gz"), tpath("lb.idx")), 0);
    cdl_transform tfs[] = {
        {0},
        {.normalize = 1, .mean = 0.2860, .std = 0.3530},
        {.crop_pad = 2, .hflip = 1},
        {.normalize = 1, .mean = 0.5, .std = 2, .crop_pad = 1, .hflip = 1, .noise_std = 0.1},
    };
    for (int g = 0; g < 2; g++) {
        assert_true(streamed(&b[g]));
        assert_int_equal(b[g].n, N);
        assert_int_equal(b[g].col[0].feat, H * W);
        assert_int_equal(b[g].col[1].nclasses, 10);
        for (size_t t = 0; t < sizeof tfs / sizeof tfs[0]; t++)
            for (int rs = 4; rs <= 8; rs += 4)
                for (int w = 0; w <= 2; w += 2) {
                    cdl_loader_cfg cfg = {.batch = 16, .shuffle = 1, .seed = 5, .real_size = rs, .workers = w,
                                          .tf = tfs[t]};
                    idx_same_epochs(&a, &b[g], cfg, -1);
                }
        /* in order (runs of examples read at once), sharded, a partial last batch */
        for (int s = 0; s < 3; s++) {
            cdl_loader_cfg cfg = {.batch = 64, .nshards = 3, .shard = s, .workers = s, .tf = tfs[1]};
            idx_same_epochs(&a, &b[g], cfg, -1);
        }
        cdl_dataset_head(&b[g], 50);                /* --limit */
        cdl_dataset_head(&a, 50);
        idx_same_epochs(&a, &b[g], (cdl_loader_cfg){.batch = 7, .shuffle = 1, .seed = 3}, -1);
        a.n = b[g].n = N;
    }
    /* no allocation per batch */
    float x[16 * H * W];
    int32_t y[16];
    for (int w = 0; w <= 2; w += 2) {
        cdl_loader_cfg cfg = {.batch = 16, .shuffle = 1, .workers = w};
        cdl_loader *l = cdl_loader_new(&b[1], &cfg);
        assert_int_equal(cdl_loader_start(l, 0, 0), 0);
        uint64_t a0 = cdl_alloc_count();
        for (int i = 0; i < 12; i++) assert_int_equal(cdl_loader_next(l, (void *[]){x, y}), 16);
        assert_int_equal(cdl_alloc_count(), a0);
        cdl_loader_free(l);
    }
    cdl_dataset_free(&a);
    cdl_dataset_free(&b[0]);
    cdl_dataset_free(&b[1]);
    unsetenv("CDL_CACHE_DIR");
}

/* The one cache entry in dir (and no other file) into out. */
static void only_entry(const char *dir, char *out, size_t n) {
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    struct dirent *e;
    int k = 0;
    while ((e = readdir(dp)))
        if (e->d_name[0] != '.') {
            assert_true(strncmp(e->d_name, "im.idx-", 7) == 0 && strlen(e->d_name) == 7 + 16);
            snprintf(out, n, "%s/%s", dir, e->d_name);
            k++;
        }
    closedir(dp);
    assert_int_equal(k, 1);
}

static void open_gz(cdl_dataset *d) {
    assert_int_equal(cdl_dataset_load_idx_stream(d, tpath("im.idx.gz"), tpath("lb.idx")), 0);
    assert_true(streamed(d));
}

static void test_stream_cache(void **st) {
    (void)st;
    mk_files();
    char dir[400], entry[800], *got = malloc(sizeof g_im);
    snprintf(dir, sizeof dir, "%s", tpath("c1/made/here"));       /* made as needed */
    setenv("CDL_CACHE_DIR", dir, 1);
    cdl_dataset a, b;
    assert_int_equal(cdl_dataset_load_idx_u8(&a, tpath("im.idx"), tpath("lb.idx")), 0);
    g_fsyncs = 0;
    open_gz(&b);
    assert_true(g_fsyncs_at_rename >= 1);                          /* written, then named */
    only_entry(dir, entry, sizeof entry);
    struct stat s0, s1;
    assert_int_equal(stat(entry, &s0), 0);
    assert_int_equal(s0.st_size, (off_t)sizeof g_im);
    FILE *f = fopen(entry, "rb");
    assert_int_equal(fread(got, 1, sizeof g_im, f), sizeof g_im);   /* the uncompressed file */
    fclose(f);
    assert_memory_equal(got, g_im, sizeof g_im);
    cdl_dataset_free(&b);
    open_gz(&b);                                                    /* reused, not rewritten */
    assert_int_equal(stat(entry, &s1), 0);
    assert_true(s1.st_ino == s0.st_ino && s1.st_mtim.tv_nsec == s0.st_mtim.tv_nsec);
    cdl_dataset_free(&b);
    /* truncated (a full disk long ago, a copy cut short): rebuilt */
    assert_int_equal(truncate(entry, 100), 0);
    open_gz(&b);
    assert_int_equal(stat(entry, &s1), 0);
    assert_int_equal(s1.st_size, (off_t)sizeof g_im);
    idx_same_epochs(&a, &b, (cdl_loader_cfg){.batch = 16, .shuffle = 1, .seed = 9, .workers = 2}, -1);
    cdl_dataset_free(&b);
    /* the right size but another header: rebuilt */
    unsigned char bad[sizeof g_im];
    memcpy(bad, g_im, sizeof g_im);
    bad[11] = W, bad[15] = H;
    spit(entry, bad, sizeof bad);
    open_gz(&b);
    f = fopen(entry, "rb");
    assert_int_equal(fread(got, 1, sizeof g_im, f), sizeof g_im);
    fclose(f);
    assert_memory_equal(got, g_im, sizeof g_im);
    assert_int_equal(b.col[0].dims[0], H);
    cdl_dataset_free(&b);
    only_entry(dir, entry, sizeof entry);                           /* no temporary files left */
    /* a changed source: a new entry */
    struct timespec ts[2] = {{.tv_sec = 1000000000}, {.tv_sec = 1000000000}};
    assert_int_equal(utimensat(AT_FDCWD, tpath("im.idx.gz"), ts, 0), 0);
    open_gz(&b);
    cdl_dataset_free(&b);
    DIR *dp = opendir(dir);
    int k = 0;
    for (struct dirent *e; (e = readdir(dp));) k += e->d_name[0] != '.';
    closedir(dp);
    assert_int_equal(k, 2);
    cdl_dataset_free(&a);
    free(got);
    unsetenv("CDL_CACHE_DIR");
}

/* No cache can be written: the images are read into memory, no error. */
static void test_stream_fallback(void **st) {
    (void)st;
    mk_files();
    spit(tpath("afile"), "x", 1);
    setenv("CDL_CACHE_DIR", tpath("afile/cache"), 1);              /* under a regular file */
    cdl_dataset a, b;
    assert_int_equal(cdl_dataset_load_idx_u8(&a, tpath("im.idx"), tpath("lb.idx")), 0);
    assert_int_equal(cdl_dataset_load_idx_stream(&b, tpath("im.idx.gz"), tpath("lb.idx")), 0);
    assert_true(!b.stream && b.col[0].data && (b.col[0].flags & CDL_COL_U8) && !(b.col[0].flags & CDL_COL_FILE));
    idx_same_epochs(&a, &b, (cdl_loader_cfg){.batch = 16, .shuffle = 1, .seed = 2}, -1);
    cdl_dataset_free(&b);
    unsetenv("CDL_CACHE_DIR");                                      /* no variable at all */
    char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL, *xdg = getenv("XDG_CACHE_HOME")
                                                                     ? strdup(getenv("XDG_CACHE_HOME")) : NULL;
    unsetenv("HOME");
    unsetenv("XDG_CACHE_HOME");
    assert_int_equal(cdl_dataset_load_idx_stream(&b, tpath("im.idx.gz"), tpath("lb.idx")), 0);
    assert_true(!b.stream && b.col[0].data);
    cdl_dataset_free(&b);
    /* a raw file needs no cache */
    assert_int_equal(cdl_dataset_load_idx_stream(&b, tpath("im.idx"), tpath("lb.idx")), 0);
    assert_true(streamed(&b));
    cdl_dataset_free(&b);
    if (home) setenv("HOME", home, 1);
    if (xdg) setenv("XDG_CACHE_HOME", xdg, 1);
    free(home);
    free(xdg);
    cdl_dataset_free(&a);
}

/* A streamed file changed under a loader: the batch fails naming it. */
static void test_stream_changed(void **st) {
    (void)st;
    mk_files();
    float x[16 * H * W];
    int32_t y[16];
    for (int w = 0; w <= 2; w += 2)
        for (int how = 0; how < 2; how++) {
            spit(tpath("ch.idx"), g_im, sizeof g_im);
            cdl_dataset b;
            assert_int_equal(cdl_dataset_load_idx_stream(&b, tpath("ch.idx"), tpath("lb.idx")), 0);
            cdl_loader_cfg cfg = {.batch = 16, .shuffle = 1, .workers = w, .prefetch = 1};
            cdl_loader *l = cdl_loader_new(&b, &cfg);
            assert_int_equal(cdl_loader_start(l, 0, 0), 0);
            assert_int_equal(cdl_loader_next(l, (void *[]){x, y}), 16);
            if (how == 0) {
                assert_int_equal(truncate(tpath("ch.idx"), 100), 0);     /* cut short */
            } else {                                                     /* rewritten in place */
                struct timespec ts[2] = {{.tv_sec = 1234567}, {.tv_sec = 1234567}};
                assert_int_equal(utimensat(AT_FDCWD, tpath("ch.idx"), ts, 0), 0);
            }
            assert_int_equal(cdl_loader_start(l, 1, 0), 0);              /* past any batch in flight */
            assert_int_equal(cdl_loader_next(l, (void *[]){x, y}), -1);
            expect_error(tpath("ch.idx"));
            expect_error("changed while in use");
            cdl_loader_free(l);
            cdl_dataset_free(&b);
        }
}

/* Bad files: the in-memory reader's messages, nothing leaked. */
static void test_stream_errors(void **st) {
    (void)st;
    mk_files();
    setenv("CDL_CACHE_DIR", tpath("cache2"), 1);
    cdl_dataset b;
    unsigned char big[sizeof g_im + 3];
    memcpy(big, g_im, sizeof g_im);
    spit(tpath("long.idx"), big, sizeof big);
    assert_int_equal(cdl_dataset_load_idx_stream(&b, tpath("long.idx"), tpath("lb.idx")), -1);
    expect_error("long.idx: 3 bytes of trailing garbage after the data");
    spit(tpath("short.idx"), g_im, sizeof g_im - 5);
    assert_int_equal(cdl_dataset_load_idx_stream(&b, tpath("short.idx"), tpath("lb.idx")), -1);
    expect_error("short.idx: truncated");
    gzFile g = gzopen(tpath("long.idx.gz"), "wb");
    assert_int_equal(gzwrite(g, big, sizeof big), (int)sizeof big);
    assert_int_equal(gzclose(g), Z_OK);
    assert_int_equal(cdl_dataset_load_idx_stream(&b, tpath("long.idx.gz"), tpath("lb.idx")), -1);
    expect_error("long.idx.gz: 3 bytes of trailing garbage after the data");
    g = gzopen(tpath("short.idx.gz"), "wb");
    assert_int_equal(gzwrite(g, g_im, sizeof g_im - 5), (int)sizeof g_im - 5);
    assert_int_equal(gzclose(g), Z_OK);
    assert_int_equal(cdl_dataset_load_idx_stream(&b, tpath("short.idx.gz"), tpath("lb.idx")), -1);
    expect_error("short.idx.gz: truncated: 6085 data bytes, the header promises 6090");
    DIR *dp = opendir(tpath("cache2"));                 /* no entry, no temporary file */
    for (struct dirent *e; (e = readdir(dp));) assert_true(e->d_name[0] == '.');
    closedir(dp);
    unsigned char lb[8 + 3] = {0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3};
    spit(tpath("lb3.idx"), lb, sizeof lb);
    assert_int_equal(cdl_dataset_load_idx_stream(&b, tpath("im.idx"), tpath("lb3.idx")), -1);
    expect_error("3 labels");
    /* the named sets */
    assert_int_equal(mkdir(tpath("fm"), 0755), 0);
    assert_int_equal(rename(tpath("im.idx.gz"), tpath("fm/t10k-images-idx3-ubyte.gz")), 0);
    assert_int_equal(rename(tpath("lb.idx"), tpath("fm/t10k-labels-idx1-ubyte")), 0);
    char name[600];
    snprintf(name, sizeof name, "fashion-mnist:%s", tpath("fm"));
    assert_int_equal(cdl_dataset_open_stream(&b, name, 0), 0);
    assert_true(streamed(&b));
    assert_string_equal(b.name, "fashion-mnist/test");
    cdl_dataset_free(&b);
    assert_int_equal(cdl_dataset_open_stream(&b, name, 1), -1);
    expect_error("cannot find train-images-idx3-ubyte");
    unsetenv("CDL_CACHE_DIR");
}

/* The feed check reads a streamed column too: an i32 input fed from the images names
 * the first real value, as for the bytes in memory. */
static const cdl_tensor k_in[] = {{"k", CDL_I32, 0, 3, {8, H, W}, CDL_T_BATCHED, "m:1:1"}};
static const cdl_model k_model = {.abi = CDL_ABI, .name = "km", .real_size = 4, .batch = 8, .n_inputs = 1, .inputs = k_in};

static void test_stream_feed_check(void **st) {
    (void)st;
    mk_files();
    cdl_dataset a, b;
    cdl_feed f[CDL_DATA_MAXFEED];
    char want[512];
    assert_int_equal(cdl_dataset_load_idx_u8(&a, tpath("im.idx"), tpath("lb.idx")), 0);
    assert_int_equal(cdl_dataset_load_idx_stream(&b, tpath("im.idx"), tpath("lb.idx")), 0);
    assert_true(streamed(&b));
    assert_int_equal(cdl_dataset_feeds(&a, &k_model, "k=x", f), -1);
    snprintf(want, sizeof want, "%s", cdl_last_error());
    assert_non_null(strstr(want, "column x holds real values (0.654902 at example 0)"));
    assert_int_equal(cdl_dataset_feeds(&b, &k_model, "k=x", f), -1);
    assert_string_equal(cdl_last_error(), want);
    cdl_dataset_free(&a);
    cdl_dataset_free(&b);
}

/* The real test split, when installed: every batch equal. */
static void test_stream_fashion_mnist(void **st) {
    (void)st;
    if (access("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", R_OK) != 0) {
        skip();
        return;
    }
    setenv("CDL_CACHE_DIR", tpath("fmcache"), 1);
    cdl_dataset a, b;
    assert_int_equal(cdl_dataset_open_u8(&a, "fashion-mnist", 0), 0);
    assert_int_equal(cdl_dataset_open_stream(&b, "fashion-mnist", 0), 0);
    assert_true(streamed(&b));
    assert_int_equal(b.n, 10000);
    cdl_loader_cfg cfg = {.batch = 64, .shuffle = 1, .seed = 1, .workers = 1,
                          .tf = {.normalize = 1, .mean = 0.2860, .std = 0.3530}};
    idx_same_epochs(&a, &b, cfg, -1);
    cdl_dataset_free(&a);
    cdl_dataset_free(&b);
    unsetenv("CDL_CACHE_DIR");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_batches_equal),
        cmocka_unit_test(test_stream_cache),
        cmocka_unit_test(test_stream_fallback),
        cmocka_unit_test(test_stream_changed),
        cmocka_unit_test(test_stream_errors),
        cmocka_unit_test(test_stream_feed_check),
        cmocka_unit_test(test_stream_fashion_mnist),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
