/* test_rt_ckpt.c -- checkpoints (runtime/ckpt.c) and the strict JSON reader under them.
 *
 * A tiny hand-made model descriptor (two trainable tensors and one state buffer) is
 * enough: round trips in f32 and f64, every single-bit flip and every truncation of a
 * small checkpoint refused (and the net left untouched), other models and mismatched
 * optimizers refused, hand-edited headers (re-signed so that the checksum passes)
 * refused for the right reason, and a save killed at each stage leaving a loadable file.
 */
#include "test_rt_util.h"

#include <signal.h>
#include <sys/wait.h>
#include <zlib.h>

/* ---------------------------------------------------------------- fixtures */

static const cdl_tensor tiny_params[] = {
    {.name = "fc1.weight", .dtype = CDL_F32, .offset = 0, .rank = 2, .dims = {3, 2}},
    {.name = "fc1.bias", .dtype = CDL_F32, .offset = 6, .rank = 1, .dims = {3}},
    {.name = "bn.running_mean", .dtype = CDL_F32, .offset = 9, .rank = 1, .dims = {3}, .flags = CDL_T_STATE},
};
static const cdl_model tiny = {
    .name = "tiny", .source = "tiny.cdl", .fingerprint = 0x0123456789abcdefull, .real_size = 4, .batch = 4,
    .n_params = 3, .params = tiny_params, .param_count = 12, .train_count = 9,
};
static const cdl_model tiny64 = {
    .name = "tiny", .source = "tiny.cdl", .fingerprint = 0x0123456789abcdefull, .real_size = 8, .batch = 4,
    .n_params = 3, .params = tiny_params, .param_count = 12, .train_count = 9,
};
/* Same names, another shape (and fingerprint). */
static const cdl_tensor wide_params[] = {
    {.name = "fc1.weight", .dtype = CDL_F32, .offset = 0, .rank = 2, .dims = {4, 2}},
    {.name = "fc1.bias", .dtype = CDL_F32, .offset = 8, .rank = 1, .dims = {4}},
    {.name = "bn.running_mean", .dtype = CDL_F32, .offset = 12, .rank = 1, .dims = {4}, .flags = CDL_T_STATE},
};
static const cdl_model wide = {
    .name = "tiny", .fingerprint = 0x0123456789abcdefull, .real_size = 4, .batch = 4,
    .n_params = 3, .params = wide_params, .param_count = 16, .train_count = 12,
};
static const cdl_model other = {
    .name = "other", .fingerprint = 0x1111222233334444ull, .real_size = 4, .batch = 4,
    .n_params = 3, .params = tiny_params, .param_count = 12, .train_count = 9,
};


/* A net of model m with parameters filled from v0 (distinct values). */
static cdl_net *mknet(const cdl_model *m, double v0) {
    cdl_net *net = cdl_net_new(m);
    assert_non_null(net);
    for (size_t i = 0; i < m->param_count; i++) {
        if (m->real_size == 4) ((float *)net->param)[i] = (float)(v0 + 0.25 * (double)i);
        else ((double *)net->param)[i] = v0 + 0.25 * (double)i;
    }
    net->step = 1234;
    net->seed = 99;
    return net;
}

static void mkadam(cdl_optim *o, const cdl_model *m, double v0) {
    cdl_optim_cfg cfg;
    cdl_optim_defaults(&cfg, CDL_OPT_ADAM);
    assert_int_equal(cdl_optim_init(o, m, &cfg), 0);
    assert_int_equal(o->n_slots, 2);
    for (int s = 0; s < 2; s++)
        for (size_t i = 0; i < m->train_count; i++) ((float *)o->slot[s])[i] = (float)(v0 + (double)s + 0.5 * (double)i);
    o->t = 77;
}

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}


/* memmem (a GNU extension) by hand. */
static void *find_bytes(const void *hay, size_t n, const void *needle, size_t k) {
    const char *h = hay;
    for (size_t i = 0; k <= n && i + k <= n; i++)
        if (memcmp(h + i, needle, k) == 0) return (void *)(h + i);
    return NULL;
}


/* ---------------------------------------------------------------- round trips */

static void test_roundtrip_f32_adam(void **st) {
    (void)st;
    cdl_net *a = mknet(&tiny, 1.0);
    cdl_optim oa;
    mkadam(&oa, &tiny, 10.0);
    cdl_ckpt_meta m = {.step = 500, .epoch = 3, .seed = 42, .batch_in_epoch = 17};
    const char *p = tpath("rt.ckpt");
    assert_int_equal(cdl_ckpt_save(p, a, &oa, &m), 0);
    assert_int_equal(access(tpath("rt.ckpt.tmp"), F_OK), -1);

    cdl_net *b = mknet(&tiny, -5.0);
    cdl_optim ob;
    mkadam(&ob, &tiny, -50.0);
    ob.t = 0;
    cdl_ckpt_meta got;
    assert_int_equal(cdl_ckpt_load(p, b, &ob, &got), 0);
    assert_memory_equal(a->param, b->param, tiny.param_count * 4);
    assert_memory_equal(oa.slot[0], ob.slot[0], tiny.train_count * 4);
    assert_memory_equal(oa.slot[1], ob.slot[1], tiny.train_count * 4);
    assert_int_equal(ob.t, 77);
    assert_int_equal(got.step, 500);
    assert_int_equal(got.epoch, 3);
    assert_int_equal(got.seed, 42);
    assert_int_equal(got.batch_in_epoch, 17);
    assert_string_equal(got.model, "tiny");
    assert_true(got.fingerprint == tiny.fingerprint);
    assert_int_equal(b->step, 500);
    assert_int_equal(b->seed, 42);

    /* Parameters only: the optimizer state in the file is checked and ignored. */
    cdl_net *c = mknet(&tiny, 7.0);
    assert_int_equal(cdl_ckpt_load(p, c, NULL, NULL), 0);
    assert_memory_equal(a->param, c->param, tiny.param_count * 4);

    cdl_optim_free(&oa);
    cdl_optim_free(&ob);
    cdl_net_free(a);
    cdl_net_free(b);
    cdl_net_free(c);
}

static void test_roundtrip_f64_noopt(void **st) {
    (void)st;
    cdl_net *a = mknet(&tiny64, 3.0);
    const char *p = tpath("rt64.ckpt");
    assert_int_equal(cdl_ckpt_save(p, a, NULL, NULL), 0);   /* meta from the net */
    cdl_net *b = mknet(&tiny64, 0.0);
    b->step = 0;
    cdl_ckpt_meta got;
    assert_int_equal(cdl_ckpt_load(p, b, NULL, &got), 0);
    assert_memory_equal(a->param, b->param, tiny64.param_count * 8);
    assert_int_equal(got.step, 1234);
    assert_int_equal(got.seed, 99);
    assert_int_equal(got.epoch, 0);
    /* An f32 net refuses the f64 file, naming the dtype. */
    cdl_net *c = mknet(&tiny, 0.0);
    assert_int_equal(cdl_ckpt_load(p, c, NULL, NULL), -1);
    expect_error("dtype F64");
    /* A file without optimizer state cannot resume an Adam optimizer. */
    cdl_optim o;
    cdl_optim_cfg cfg;
    cdl_optim_defaults(&cfg, CDL_OPT_ADAM);
    assert_int_equal(cdl_optim_init(&o, &tiny64, &cfg), 0);
    assert_int_equal(cdl_ckpt_load(p, b, &o, NULL), -1);
    expect_error("optimizer");
    cdl_optim_free(&o);
    cdl_net_free(a);
    cdl_net_free(b);
    cdl_net_free(c);
}

/* The file is a plain safetensors file: 8-byte length, JSON, data at the offsets. */
static void test_plain_reader_layout(void **st) {
    (void)st;
    cdl_net *a = mknet(&tiny, 1.0);
    const char *p = tpath("plain.ckpt");
    assert_int_equal(cdl_ckpt_save(p, a, NULL, NULL), 0);
    size_t n;
    unsigned char *b = slurp(p, &n);
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--) h = h << 8 | b[i];
    assert_true(8 + h <= n);
    assert_int_equal((8 + h) % 8, 0);
    char *json = strndup((char *)b + 8, (size_t)h);
    const char *e = strstr(json, "\"fc1.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[24,36]}");
    assert_non_null(e);
    assert_non_null(strstr(json, "\"format\":\"cdl-ckpt 1\""));
    float bias[3];
    memcpy(bias, b + 8 + h + 24, sizeof bias);
    assert_true(bias[0] == 1.0f + 0.25f * 6 && bias[2] == 1.0f + 0.25f * 8);
    assert_int_equal(n, 8 + h + 12 * 4);
    free(json);
    free(b);
    cdl_net_free(a);
}

/* ---------------------------------------------------------------- corruption */

/* Every single-bit flip anywhere in the file is refused and leaves the net alone. */
static void test_every_bit_flip_refused(void **st) {
    (void)st;
    cdl_net *a = mknet(&tiny, 1.0);
    cdl_optim oa;
    mkadam(&oa, &tiny, 2.0);
    const char *p = tpath("flip.ckpt");
    assert_int_equal(cdl_ckpt_save(p, a, &oa, NULL), 0);
    size_t n;
    unsigned char *b = slurp(p, &n);
    assert_true(n < 4096);
    cdl_net *t = mknet(&tiny, -1.0);
    cdl_optim ot;
    mkadam(&ot, &tiny, -2.0);
    float before[12], sbefore[9];
    memcpy(before, t->param, sizeof before);
    memcpy(sbefore, ot.slot[0], sizeof sbefore);
    assert_int_equal(cdl_ckpt_load_mem(b, n, "flip", t, NULL, NULL), 0);   /* intact: loads */
    memcpy(t->param, before, sizeof before);
    int accepted = 0;
    for (size_t i = 0; i < n; i++)
        for (int bit = 0; bit < 8; bit++) {
            b[i] ^= (unsigned char)(1u << bit);
            /* With the optimizer on even bits, parameters only on odd ones. */
            if (cdl_ckpt_load_mem(b, n, "flip", t, bit & 1 ? NULL : &ot, NULL) == 0) {
                if (accepted++ < 5) print_error("bit %d of byte %zu accepted\n", bit, i);
            }
            b[i] ^= (unsigned char)(1u << bit);
        }
    assert_int_equal(accepted, 0);
    assert_memory_equal(before, t->param, sizeof before);
    assert_memory_equal(sbefore, ot.slot[0], sizeof sbefore);
    free(b);
    cdl_optim_free(&oa);
    cdl_optim_free(&ot);
    cdl_net_free(a);
    cdl_net_free(t);
}

static void test_every_truncation_refused(void **st) {
    (void)st;
    cdl_net *a = mknet(&tiny, 1.0);
    const char *p = tpath("trunc.ckpt");
    assert_int_equal(cdl_ckpt_save(p, a, NULL, NULL), 0);
    size_t n;
    unsigned char *b = slurp(p, &n);
    unsigned char *c = malloc(n + 1);
    for (size_t k = 0; k < n; k++) {
        memcpy(c, b, k);               /* an exact-size copy: ASan sees overreads */
        assert_int_equal(cdl_ckpt_load_mem(k ? c : NULL, k, "trunc", a, NULL, NULL), -1);
    }
    memcpy(c, b, n);
    c[n] = 0;
    assert_int_equal(cdl_ckpt_load_mem(c, n + 1, "grown", a, NULL, NULL), -1);
    expect_error("after the last tensor");
    /* Truncated on disk too. */
    spit(tpath("trunc2.ckpt"), b, n - 1);
    assert_int_equal(cdl_ckpt_load(tpath("trunc2.ckpt"), a, NULL, NULL), -1);
    expect_error("trunc2.ckpt");
    spit(tpath("empty.ckpt"), b, 0);
    assert_int_equal(cdl_ckpt_load(tpath("empty.ckpt"), a, NULL, NULL), -1);
    expect_error("too short");
    assert_int_equal(cdl_ckpt_load(tpath("missing.ckpt"), a, NULL, NULL), -1);
    expect_error("missing.ckpt: cannot open");
    free(c);
    free(b);
    cdl_net_free(a);
}

/* ---------------------------------------------------------------- other models */

static void test_other_model_refused(void **st) {
    (void)st;
    cdl_net *a = mknet(&tiny, 1.0);
    const char *p = tpath("model.ckpt");
    assert_int_equal(cdl_ckpt_save(p, a, NULL, NULL), 0);
    cdl_net *o = mknet(&other, 0.0);
    assert_int_equal(cdl_ckpt_load(p, o, NULL, NULL), -1);
    expect_error("not of 'other'");
    cdl_net *w = mknet(&wide, 0.0);
    float before[16];
    memcpy(before, w->param, sizeof before);
    assert_int_equal(cdl_ckpt_load(p, w, NULL, NULL), -1);   /* same fingerprint, other shape */
    expect_error("shape [3, 2] in the file, the model has [4, 2]");
    assert_memory_equal(before, w->param, sizeof before);

    /* An optimizer of another kind is refused; SGD vs Adam slots named. */
    cdl_optim oa, os;
    mkadam(&oa, &tiny, 1.0);
    assert_int_equal(cdl_ckpt_save(p, a, &oa, NULL), 0);
    cdl_optim_cfg cfg;
    assert_int_equal(cdl_optim_parse(&cfg, "sgd:momentum=0.9"), 0);
    assert_int_equal(cdl_optim_init(&os, &tiny, &cfg), 0);
    assert_int_equal(cdl_ckpt_load(p, a, &os, NULL), -1);
    expect_error("optimizer 'adam'");
    cdl_optim_free(&oa);
    cdl_optim_free(&os);
    cdl_net_free(a);
    cdl_net_free(o);
    cdl_net_free(w);
}

/* Recompute header_crc32 after editing the JSON text (same length), so that the
 * semantic checks behind the checksum can be reached. */
static void resign(unsigned char *b) {
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--) h = h << 8 | b[i];
    char *j = (char *)b + 8;
    char *v = NULL;
    for (char *q = j; q + 16 < j + h; q++)
        if (memcmp(q, "\"header_crc32\":\"", 16) == 0) v = q + 16;
    assert_non_null(v);
    memcpy(v, "00000000", 8);
    uLong c = crc32(0L, (const Bytef *)j, (uInt)h);
    char hx[9];
    snprintf(hx, sizeof hx, "%08lx", c);
    memcpy(v, hx, 8);
}

/* Replace the first occurrence of from by to (same length) in the header and re-sign;
 * then the load must fail with a message containing needle. */
static void edit_expect(const unsigned char *orig, size_t n, const char *from, const char *to,
                        const char *needle) {
    assert_int_equal(strlen(from), strlen(to));
    unsigned char *b = malloc(n);
    memcpy(b, orig, n);
    char *at = find_bytes(b, n, from, strlen(from));
    if (!at) fail_msg("'%s' not in the header", from);
    memcpy(at, to, strlen(to));
    resign(b);
    cdl_net *t = mknet(&tiny, 5.0);
    float before[12];
    memcpy(before, t->param, sizeof before);
    if (cdl_ckpt_load_mem(b, n, "edit", t, NULL, NULL) == 0) fail_msg("edit '%s' -> '%s' accepted", from, to);
    expect_error(needle);
    assert_memory_equal(before, t->param, sizeof before);
    cdl_net_free(t);
    free(b);
}

static void test_edited_headers_refused(void **st) {
    (void)st;
    cdl_net *a = mknet(&tiny, 1.0);
    const char *p = tpath("edit.ckpt");
    assert_int_equal(cdl_ckpt_save(p, a, NULL, NULL), 0);
    size_t n;
    unsigned char *b = slurp(p, &n);
    /* Re-signing alone keeps it valid. */
    unsigned char *ok = malloc(n);
    memcpy(ok, b, n);
    resign(ok);
    assert_int_equal(cdl_ckpt_load_mem(ok, n, "ok", a, NULL, NULL), 0);
    free(ok);
    edit_expect(b, n, "\"shape\":[3],", "\"shape\":[4],", "data_offsets span");
    edit_expect(b, n, "[24,36]", "[24,35]", "data_offsets span");
    edit_expect(b, n, "\"dtype\":\"F32\"", "\"dtype\":\"F16\"", "unsupported dtype");
    edit_expect(b, n, "\"dtype\":\"F32\"", "\"dtype\":\"I32\"", "dtype I32");
    edit_expect(b, n, "fc1.bias\":{", "fc1.bias\":[", "header JSON");
    edit_expect(b, n, "\"step\":", "\"seed\":", "duplicate key \"seed\"");
    edit_expect(b, n, "\"fc1.bias\":{", "\"fc1.bia2\":{", "checksum for a tensor 'fc1.bias'");
    edit_expect(b, n, "cdl-ckpt 1", "cdl-ckpt 2", "not a cdl checkpoint");
    edit_expect(b, n, "\"step\":\"1234\"", "\"step\":\"12x4\"", "'step'");
    edit_expect(b, n, "0123456789abcdef", "0123456789abcdee", "fingerprint");
    edit_expect(b, n, "\"shape\"", "\"shapf\"", "exactly dtype, shape, data_offsets");
    free(b);

    /* Two tensors swapped in data order: gaps/overlaps detected. */
    b = slurp(p, &n);
    edit_expect(b, n, "[0,24]", "[4,28]", "gap or overlap");
    free(b);

    /* A header length past the limit or the file. */
    b = slurp(p, &n);
    b[5] = 0x10;
    assert_int_equal(cdl_ckpt_load_mem(b, n, "huge", a, NULL, NULL), -1);
    expect_error("exceeds the limit");
    free(b);
    cdl_net_free(a);
}

/* Files written by cdl_safetensors_write (not checkpoints) are refused by the checkpoint
 * loader with a reason, and bad writer calls fail cleanly. */
static void test_safetensors_write(void **st) {
    (void)st;
    float w[6] = {1, 2, 3, 4, 5, 6};
    int32_t ids[2] = {7, 8};
    cdl_st_tensor t[2] = {
        {.name = "w", .dtype = CDL_F32, .rank = 2, .dims = {2, 3}, .data = w},
        {.name = "ids", .dtype = CDL_I32, .rank = 1, .dims = {2}, .data = ids},
    };
    const char *kv[] = {"what", "gradients", "note", "caf\xc3\xa9 \"quoted\""};
    const char *p = tpath("g.safetensors");
    assert_int_equal(cdl_safetensors_write(p, 2, t, 2, kv), 0);
    size_t n;
    unsigned char *b = slurp(p, &n);
    assert_non_null(find_bytes(b, n, "\"ids\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[24,32]}", 55));
    assert_non_null(find_bytes(b, n, "\"note\":\"caf\xc3\xa9 \\\"quoted\\\"\"", 24));
    cdl_net *a = mknet(&tiny, 1.0);
    assert_int_equal(cdl_ckpt_load_mem(b, n, "g", a, NULL, NULL), -1);
    expect_error("not a cdl checkpoint");
    free(b);

    cdl_st_tensor dup[2] = {t[0], t[0]};
    assert_int_equal(cdl_safetensors_write(p, 2, dup, 0, NULL), -1);
    expect_error("given twice");
    const char *bad[] = {"header_crc32", "x"};
    assert_int_equal(cdl_safetensors_write(p, 1, t, 1, bad), -1);
    expect_error("reserved");
    assert_int_equal(cdl_safetensors_write("/nonexistent-dir/x.st", 1, t, 0, NULL), -1);
    expect_error("cannot create");
    cdl_net_free(a);
}

/* ---------------------------------------------------------------- crash mid-save */

static int kill_stage;
static uint64_t kill_bytes;
static void kill_hook(int stage, uint64_t bytes) {
    if (stage == kill_stage && bytes >= kill_bytes) raise(SIGKILL);
}

/* A child saving new parameters is killed at a stage; the file then holds either the
 * old checkpoint (before the rename) or the new one (after), and always loads. */
static void test_crash_mid_save(void **st) {
    (void)st;
    const char *p = tpath("crash.ckpt");
    cdl_net *old = mknet(&tiny, 1.0);
    assert_int_equal(cdl_ckpt_save(p, old, NULL, NULL), 0);
    cdl_net *neu = mknet(&tiny, 100.0);
    struct { int stage; uint64_t bytes; int renamed; } cases[] = {
        {0, 1, 0}, {0, 8, 0}, {0, 100, 0}, {0, 300, 0}, {1, 0, 0}, {2, 0, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            kill_stage = cases[i].stage;
            kill_bytes = cases[i].bytes;
            cdl_ckpt_test_hook = kill_hook;
            cdl_ckpt_save(p, neu, NULL, NULL);
            _exit(3);                            /* the hook did not fire */
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        cdl_net *t = mknet(&tiny, 0.0);
        assert_int_equal(cdl_ckpt_load(p, t, NULL, NULL), 0);
        assert_memory_equal(t->param, cases[i].renamed ? neu->param : old->param, tiny.param_count * 4);
        cdl_net_free(t);
        char tmp[400];
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)pid);
        assert_int_equal(access(tmp, F_OK), cases[i].renamed ? -1 : 0);   /* the half-written temp */
        unlink(tmp);
        if (cases[i].renamed) assert_int_equal(cdl_ckpt_save(p, old, NULL, NULL), 0);
    }
    cdl_net_free(old);
    cdl_net_free(neu);
}

/* Parameter tables that point outside the slab are refused, not followed. */
static void test_bad_descriptor(void **st) {
    (void)st;
    static const cdl_tensor badp[] = {
        {.name = "w", .dtype = CDL_F32, .offset = 10, .rank = 1, .dims = {5}},
    };
    static const cdl_model bad = {.name = "bad", .real_size = 4, .batch = 1, .n_params = 1, .params = badp,
                                  .param_count = 12, .train_count = 12};
    cdl_net *n = cdl_net_new(&bad);
    assert_non_null(n);
    assert_int_equal(cdl_ckpt_save(tpath("bad.ckpt"), n, NULL, NULL), -1);
    expect_error("parameter w");
    assert_int_equal(access(tpath("bad.ckpt"), F_OK), -1);
    cdl_net_free(n);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_f32_adam),
        cmocka_unit_test(test_roundtrip_f64_noopt),
        cmocka_unit_test(test_plain_reader_layout),
        cmocka_unit_test(test_every_bit_flip_refused),
        cmocka_unit_test(test_every_truncation_refused),
        cmocka_unit_test(test_other_model_refused),
        cmocka_unit_test(test_edited_headers_refused),
        cmocka_unit_test(test_safetensors_write),
        cmocka_unit_test(test_crash_mid_save),
        cmocka_unit_test(test_bad_descriptor),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
