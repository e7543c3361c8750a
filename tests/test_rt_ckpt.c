/* test_rt_ckpt.c -- checkpoints (runtime/ckpt.c) and the strict JSON reader under them.
 *
 * A tiny hand-made model descriptor (two trainable tensors and one state buffer) is
 * enough: round trips in f32 and f64, every single-bit flip and every truncation of a
 * small checkpoint refused (and the net left untouched), other models and mismatched
 * optimizers refused, hand-edited headers (re-signed so that the checksum passes)
 * refused for the right reason, and a save killed at each stage leaving a loadable file.
 */
#include "test_rt_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <zlib.h>

/* ---------------------------------------------------------------- fixtures */

static const cdl_tensor tiny_params[] = {
    {.name = "fc1.weight", .dtype = CDL_F32, .offset = 0, .rank = 2, .dims = {3, 2}},
    {.name = "fc1.bias", .dtype = CDL_F32, .offset = 6, .rank = 1, .dims = {3}},
    {.name = "bn.running_mean", .dtype = CDL_F32, .offset = 9, .rank = 1, .dims = {3}, .flags = CDL_T_STATE},
};
static const cdl_model tiny = {
    .abi = CDL_ABI, .name = "tiny", .source = "tiny.cdl", .fingerprint = 0x0123456789abcdefull, .real_size = 4, .batch = 4,
    .n_params = 3, .params = tiny_params, .param_count = 12, .train_count = 9,
};
static const cdl_model tiny64 = {
    .abi = CDL_ABI, .name = "tiny", .source = "tiny.cdl", .fingerprint = 0x0123456789abcdefull, .real_size = 8, .batch = 4,
    .n_params = 3, .params = tiny_params, .param_count = 12, .train_count = 9,
};
/* Same names, another shape (and fingerprint). */
static const cdl_tensor wide_params[] = {
    {.name = "fc1.weight", .dtype = CDL_F32, .offset = 0, .rank = 2, .dims = {4, 2}},
    {.name = "fc1.bias", .dtype = CDL_F32, .offset = 8, .rank = 1, .dims = {4}},
    {.name = "bn.running_mean", .dtype = CDL_F32, .offset = 12, .rank = 1, .dims = {4}, .flags = CDL_T_STATE},
};
static const cdl_model wide = {
    .abi = CDL_ABI, .name = "tiny", .fingerprint = 0x0123456789abcdefull, .real_size = 4, .batch = 4,
    .n_params = 3, .params = wide_params, .param_count = 16, .train_count = 12,
};
static const cdl_model other = {
    .abi = CDL_ABI, .name = "other", .fingerprint = 0x1111222233334444ull, .real_size = 4, .batch = 4,
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

/* RMSprop with momentum and centering keeps three slots (square_avg, momentum_buffer,
 * grad_avg): all three are saved, named and restored; a file of the 2-slot form does
 * not load into it. */
static void test_roundtrip_rmsprop_three_slots(void **st) {
    (void)st;
    cdl_optim_cfg cfg;
    assert_int_equal(cdl_optim_parse(&cfg, "rmsprop:momentum=0.9,centered=1"), 0);
    cdl_net *a = mknet(&tiny, 1.0), *b = mknet(&tiny, -5.0);
    cdl_optim oa, ob;
    assert_int_equal(cdl_optim_init(&oa, &tiny, &cfg), 0);
    assert_int_equal(cdl_optim_init(&ob, &tiny, &cfg), 0);
    assert_int_equal(oa.n_slots, 3);
    for (int s = 0; s < 3; s++)
        for (size_t i = 0; i < tiny.train_count; i++) ((float *)oa.slot[s])[i] = (float)(s + 0.5 * (double)i);
    oa.t = 9;
    const char *p = tpath("rms.ckpt");
    assert_int_equal(cdl_ckpt_save(p, a, &oa, NULL), 0);
    assert_int_equal(cdl_ckpt_load(p, b, &ob, NULL), 0);
    for (int s = 0; s < 3; s++) assert_memory_equal(oa.slot[s], ob.slot[s], tiny.train_count * 4);
    assert_int_equal(ob.t, 9);
    size_t len;
    unsigned char *f = slurp(p, &len);
    assert_non_null(find_bytes(f, len, "rmsprop.square_avg,rmsprop.momentum_buffer,rmsprop.grad_avg", 59));
    free(f);
    cdl_optim oc;
    assert_int_equal(cdl_optim_parse(&cfg, "rmsprop:centered=1"), 0);
    assert_int_equal(cdl_optim_init(&oc, &tiny, &cfg), 0);
    assert_int_equal(cdl_ckpt_load(p, b, &oc, NULL), -1);
    expect_error("(slots 'rmsprop.square_avg,rmsprop.grad_avg')");
    cdl_optim_free(&oa);
    cdl_optim_free(&ob);
    cdl_optim_free(&oc);
    cdl_net_free(a);
    cdl_net_free(b);
}

/* A text model's vocabulary and class names go into the metadata and come back from
 * the header alone (cdl_ckpt_read_meta); a checkpoint without them has none; the file
 * still loads; a corrupt header is refused. */
static void test_vocab_metadata(void **st) {
    (void)st;
    cdl_net *a = mknet(&tiny, 1.0);
    const char *p = tpath("vocab.ckpt"), *q = tpath("novocab.ckpt");
    cdl_ckpt_meta m = {.step = 5, .vocab = "chars:41,e9", .labels = "en\nfr \"x\""};
    assert_int_equal(cdl_ckpt_save(p, a, NULL, &m), 0);
    assert_int_equal(cdl_ckpt_save(q, a, NULL, NULL), 0);
    char *v = NULL;
    assert_int_equal(cdl_ckpt_read_meta(p, "vocab", &v), 1);
    assert_string_equal(v, "chars:41,e9");
    cdl_free(v);
    assert_int_equal(cdl_ckpt_read_meta(p, "labels", &v), 1);
    assert_string_equal(v, "en\nfr \"x\"");
    cdl_free(v);
    assert_int_equal(cdl_ckpt_read_meta(q, "vocab", &v), 0);
    assert_null(v);
    cdl_net *b = mknet(&tiny, 3.0);
    assert_int_equal(cdl_ckpt_load(p, b, NULL, NULL), 0);
    assert_memory_equal(a->param, b->param, tiny.param_count * 4);
    /* one flipped byte in the header: its checksum refuses it */
    FILE *f = fopen(p, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, 30, SEEK_SET), 0);
    int c = fgetc(f);
    assert_int_equal(fseek(f, 30, SEEK_SET), 0);
    fputc(c == 'a' ? 'b' : 'a', f);
    fclose(f);
    assert_int_equal(cdl_ckpt_read_meta(p, "vocab", &v), -1);
    assert_null(v);
    spit(q, "abc", 3);
    assert_int_equal(cdl_ckpt_read_meta(q, "vocab", &v), -1);
    expect_error("not a safetensors file");
    cdl_net_free(a);
    cdl_net_free(b);
}

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
    assert_int_equal(cdl_ckpt_load_mem(b, n, "g", a, NULL, NULL), -1);   /* a parameter file of others */
    expect_error("g: tensor 'fc1.weight' is missing (the file has 'w', 'ids')");
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
    char tmps[sizeof cases / sizeof cases[0]][400];
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
        snprintf(tmps[i], sizeof tmps[i], "%s.tmp.%ld", p, (long)pid);
        assert_int_equal(access(tmps[i], F_OK), cases[i].renamed ? -1 : 0);   /* the half-written temp */
        if (cases[i].renamed) assert_int_equal(cdl_ckpt_save(p, old, NULL, NULL), 0);
    }
    /* The next save removes what the killed savers left. */
    assert_int_equal(cdl_ckpt_save(p, old, NULL, NULL), 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) assert_int_equal(access(tmps[i], F_OK), -1);
    cdl_net_free(old);
    cdl_net_free(neu);
}

/* Parameter tables that point outside the slab are refused, not followed. */
static void test_bad_descriptor(void **st) {
    (void)st;
    static const cdl_tensor badp[] = {
        {.name = "w", .dtype = CDL_F32, .offset = 10, .rank = 1, .dims = {5}},
    };
    static const cdl_model bad = {.abi = CDL_ABI, .name = "bad", .real_size = 4, .batch = 1, .n_params = 1, .params = badp,
                                  .param_count = 12, .train_count = 12};
    cdl_net *n = cdl_net_new(&bad);
    assert_non_null(n);
    assert_int_equal(cdl_ckpt_save(tpath("bad.ckpt"), n, NULL, NULL), -1);
    expect_error("parameter w");
    assert_int_equal(access(tpath("bad.ckpt"), F_OK), -1);
    cdl_net_free(n);
}

/* ---------------------------------------------------------------- stale temp files */

/* A saver that stops in the hook until told to go on: a live process mid-save. */
static int pause_rd = -1, pause_wr = -1;
static void pause_hook(int stage, uint64_t bytes) {
    if (stage != 0 || bytes < 100 || pause_rd < 0) return;
    char c = 'p';
    if (write(pause_wr, &c, 1) != 1) _exit(4);
    if (read(pause_rd, &c, 1) != 1) _exit(5);
    pause_rd = -1;
}

/* The pid of a process that has exited (and been reaped). */
static pid_t dead_pid(void) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return pid;
}

/* Temp files of savers that were killed are removed by the next save of the same
 * path; a live saver's file (locked, pid alive), a live process's unlocked one, a file
 * still locked by someone whatever its pid, other paths' and non-pid names are not. */
static void test_stale_tmp_cleanup(void **st) {
    (void)st;
    const char *p = tpath("stale.ckpt");
    cdl_net *a = mknet(&tiny, 1.0), *b = mknet(&tiny, 50.0);
    assert_int_equal(cdl_ckpt_save(p, a, NULL, NULL), 0);
    char killed[400], dead[400], locked[400], live[400], other[400], odd[400], odd2[400], paused[400];
    /* A saver killed mid-write. */
    fflush(NULL);
    pid_t k = fork();
    assert_true(k >= 0);
    if (k == 0) {
        kill_stage = 0;
        kill_bytes = 100;
        cdl_ckpt_test_hook = kill_hook;
        cdl_ckpt_save(p, b, NULL, NULL);
        _exit(3);
    }
    int status;
    assert_int_equal(waitpid(k, &status, 0), k);
    assert_true(WIFSIGNALED(status));
    snprintf(killed, sizeof killed, "%s.tmp.%ld", p, (long)k);
    assert_int_equal(access(killed, F_OK), 0);
    /* Planted files. */
    snprintf(dead, sizeof dead, "%s.tmp.%ld", p, (long)dead_pid());
    snprintf(locked, sizeof locked, "%s.tmp.%ld", p, (long)dead_pid());
    snprintf(other, sizeof other, "%s.tmp.%ld", tpath("other.ckpt"), (long)dead_pid());
    snprintf(odd, sizeof odd, "%s.tmp.notes", p);
    snprintf(odd2, sizeof odd2, "%s.tmp.12x", p);
    const char *plant[] = {dead, locked, other, odd, odd2};
    for (int i = 0; i < 5; i++) spit(plant[i], "junk", 4);
    int lfd = open(locked, O_RDONLY);
    assert_true(lfd >= 0);
    assert_int_equal(flock(lfd, LOCK_EX), 0);
    /* A live process (sleeping, no lock) and a live saver paused mid-write. */
    fflush(NULL);
    pid_t sl = fork();
    assert_true(sl >= 0);
    if (sl == 0) {
        alarm(60);                               /* never outlives a failed test for long */
        pause();
        _exit(0);
    }
    snprintf(live, sizeof live, "%s.tmp.%ld", p, (long)sl);
    spit(live, "junk", 4);
    int to_child[2], from_child[2];
    assert_int_equal(pipe(to_child), 0);
    assert_int_equal(pipe(from_child), 0);
    fflush(NULL);
    pid_t sv = fork();
    assert_true(sv >= 0);
    if (sv == 0) {
        close(to_child[1]);                      /* the parent's end: EOF if it dies */
        close(from_child[0]);
        pause_rd = to_child[0];
        pause_wr = from_child[1];
        cdl_ckpt_test_hook = pause_hook;
        _exit(cdl_ckpt_save(p, b, NULL, NULL) == 0 ? 0 : 6);
    }
    char c;
    assert_int_equal(read(from_child[0], &c, 1), 1);      /* the saver is mid-write */
    snprintf(paused, sizeof paused, "%s.tmp.%ld", p, (long)sv);
    assert_int_equal(access(paused, F_OK), 0);

    assert_int_equal(cdl_ckpt_save(p, a, NULL, NULL), 0);
    assert_int_equal(access(killed, F_OK), -1);
    assert_int_equal(access(dead, F_OK), -1);
    const char *kept[] = {locked, other, odd, odd2, live, paused};
    for (int i = 0; i < 6; i++)
        if (access(kept[i], F_OK) != 0) fail_msg("%s was removed", kept[i]);

    /* The paused saver finishes: its file is the checkpoint now. */
    assert_int_equal(write(to_child[1], "g", 1), 1);
    assert_int_equal(waitpid(sv, &status, 0), sv);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(access(paused, F_OK), -1);
    cdl_net *t = mknet(&tiny, 0.0);
    assert_int_equal(cdl_ckpt_load(p, t, NULL, NULL), 0);
    assert_memory_equal(t->param, b->param, tiny.param_count * 4);
    /* Once the sleeper is gone and the lock released, they go too. */
    kill(sl, SIGKILL);
    assert_int_equal(waitpid(sl, &status, 0), sl);
    close(lfd);
    assert_int_equal(cdl_ckpt_save(p, a, NULL, NULL), 0);
    assert_int_equal(access(live, F_OK), -1);
    assert_int_equal(access(locked, F_OK), -1);
    assert_int_equal(access(odd, F_OK), 0);
    assert_int_equal(access(other, F_OK), 0);
    for (int i = 0; i < 2; i++) {
        close(to_child[i]);
        close(from_child[i]);
    }
    cdl_net_free(a);
    cdl_net_free(b);
    cdl_net_free(t);
}

/* ---------------------------------------------------------------- special files */

/* A FIFO is refused at load without blocking (the open used to wait for a writer
 * forever), and a save never replaces a FIFO or a symbolic link. */
static void test_special_files(void **st) {
    (void)st;
    const char *fifo = tpath("fifo.ckpt"), *reg = tpath("target.ckpt"), *lnk = tpath("link.ckpt");
    cdl_net *a = mknet(&tiny, 1.0);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    alarm(20);                                   /* a hang is a failure, not a stuck suite */
    assert_int_equal(cdl_ckpt_load(fifo, a, NULL, NULL), -1);
    expect_error("fifo.ckpt: is a FIFO, not a regular file");
    assert_int_equal(cdl_ckpt_save(fifo, a, NULL, NULL), -1);
    expect_error("fifo.ckpt: is a FIFO; a save replaces only regular files");
    alarm(0);
    struct stat sb;
    assert_int_equal(lstat(fifo, &sb), 0);
    assert_true(S_ISFIFO(sb.st_mode));

    assert_int_equal(cdl_ckpt_save(reg, a, NULL, NULL), 0);
    size_t n0, n1;
    unsigned char *before = slurp(reg, &n0);
    assert_int_equal(symlink(reg, lnk), 0);
    cdl_net *b = mknet(&tiny, 9.0);
    assert_int_equal(cdl_ckpt_save(lnk, b, NULL, NULL), -1);
    expect_error("link.ckpt: is a symbolic link");
    assert_int_equal(lstat(lnk, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));
    unsigned char *after = slurp(reg, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    assert_int_equal(cdl_ckpt_check_target(tmp_dir), -1);
    expect_error("is a directory");
    assert_int_equal(cdl_ckpt_check_target(tpath("new.ckpt")), 0);
    assert_int_equal(cdl_ckpt_check_target(reg), 0);
    /* Loading through a symbolic link to a regular file is fine. */
    assert_int_equal(cdl_ckpt_load(lnk, b, NULL, NULL), 0);
    assert_memory_equal(a->param, b->param, tiny.param_count * 4);
    free(before);
    free(after);
    cdl_net_free(a);
    cdl_net_free(b);
}

/* ---------------------------------------------------------------- non-finite values */

/* Replace the stored crc32 of tensor name with the CRC of its current bytes, then
 * re-sign the header: an edited tensor with valid checksums. */
static void recrc(unsigned char *b, size_t n, const char *name, uint64_t begin, uint64_t end) {
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--) h = h << 8 | b[i];
    char key[200];
    snprintf(key, sizeof key, "\"crc32:%s\":\"", name);
    char *v = find_bytes(b + 8, (size_t)h, key, strlen(key));
    assert_non_null(v);
    v += strlen(key);
    uLong c = crc32(0L, b + 8 + h + begin, (uInt)(end - begin));
    char hx[9];
    snprintf(hx, sizeof hx, "%08lx", c);
    memcpy(v, hx, 8);
    resign(b);
    (void)n;
}

static void test_nonfinite_refused(void **st) {
    (void)st;
    const char *p = tpath("nan.ckpt");
    cdl_net *a = mknet(&tiny, 1.0);
    cdl_optim oa;
    mkadam(&oa, &tiny, 1.0);
    assert_int_equal(cdl_ckpt_save(p, a, &oa, NULL), 0);
    size_t n0;
    unsigned char *good = slurp(p, &n0);

    /* Never saved: a NaN weight, an infinite optimizer value; the old file stays. */
    ((float *)a->param)[4] = NAN;                           /* fc1.weight [3, 2]: element [2, 0] */
    assert_int_equal(cdl_ckpt_save(p, a, &oa, NULL), -1);
    expect_error("nan.ckpt: not saved: parameter 'fc1.weight' element 4 [2, 0] is nan");
    ((float *)a->param)[4] = 1.0f;
    ((float *)oa.slot[1])[7] = -INFINITY;                   /* fc1.bias element 1 */
    assert_int_equal(cdl_ckpt_save(p, a, &oa, NULL), -1);
    expect_error("optimizer state 'adam.v.fc1.bias' element 1 [1] is -inf");
    ((float *)oa.slot[1])[7] = 0.5f;
    ((float *)a->param)[10] = INFINITY;                     /* a state buffer too */
    assert_int_equal(cdl_ckpt_save(p, a, NULL, NULL), -1);
    expect_error("'bn.running_mean' element 1 [1] is inf");
    size_t n1;
    unsigned char *now = slurp(p, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(good, now, n0);
    free(now);

    /* Refused at load, checksums valid: the tensor and the first bad index named. */
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--) h = h << 8 | good[i];
    const float qnan = NAN;
    memcpy(good + 8 + h + 3 * 4, &qnan, 4);                 /* fc1.weight element 3 = [1, 1] */
    memcpy(good + 8 + h + 5 * 4, &qnan, 4);
    recrc(good, n0, "fc1.weight", 0, 24);
    cdl_net *t = mknet(&tiny, 3.0);
    float before[12];
    memcpy(before, t->param, sizeof before);
    assert_int_equal(cdl_ckpt_load_mem(good, n0, "nanw", t, NULL, NULL), -1);
    expect_error("nanw: tensor 'fc1.weight': element 3 [1, 1] is nan: non-finite weights are refused");
    assert_memory_equal(before, t->param, sizeof before);
    free(good);

    /* The optimizer state is checked too (even when only the parameters are taken). */
    good = slurp(p, &n0);
    char *e = find_bytes(good, n0, "\"adam.m.fc1.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[", 61);
    assert_non_null(e);
    uint64_t beg = strtoull(e + 61, NULL, 10);
    const float inf = INFINITY;
    memcpy(good + 8 + h + beg + 8, &inf, 4);
    recrc(good, n0, "adam.m.fc1.bias", beg, beg + 12);
    assert_int_equal(cdl_ckpt_load_mem(good, n0, "infm", t, NULL, NULL), -1);
    expect_error("infm: tensor 'adam.m.fc1.bias': element 2 [2] is inf");
    free(good);
    cdl_optim_free(&oa);
    cdl_net_free(a);
    cdl_net_free(t);
}

/* ---------------------------------------------------------------- precision */

/* tiny in f32 and f64 with the fingerprints cdlc would give them, and a reordered
 * table with the same names and shapes. */
static cdl_model std32, std64, swapped32;
static const cdl_tensor swapped_params[] = {
    {.name = "fc1.bias", .dtype = CDL_F32, .offset = 0, .rank = 1, .dims = {3}},
    {.name = "fc1.weight", .dtype = CDL_F32, .offset = 3, .rank = 2, .dims = {3, 2}},
    {.name = "bn.running_mean", .dtype = CDL_F32, .offset = 9, .rank = 1, .dims = {3}, .flags = CDL_T_STATE},
};
static void std_models(void) {
    std32 = tiny;
    std32.fingerprint = cdl_model_fingerprint(&tiny, 4);
    std64 = tiny64;
    std64.fingerprint = cdl_model_fingerprint(&tiny64, 8);
    swapped32 = tiny;
    swapped32.params = swapped_params;
    swapped32.fingerprint = cdl_model_fingerprint(&swapped32, 4);
    assert_true(std32.fingerprint != std64.fingerprint && std32.fingerprint != swapped32.fingerprint);
}

/* An f32 checkpoint loads into the f64 build of the same model and back, converted,
 * optimizer state included; other differences are named. */
static void test_cross_precision(void **st) {
    (void)st;
    std_models();
    const char *p = tpath("x32.ckpt"), *q = tpath("x64.ckpt");
    cdl_net *a = mknet(&std32, 1.0);
    ((float *)a->param)[2] = 0.1f;
    cdl_optim oa;
    mkadam(&oa, &std32, 2.0);
    assert_int_equal(cdl_ckpt_save(p, a, &oa, NULL), 0);
    cdl_net *d = mknet(&std64, 0.0);
    cdl_optim od;
    cdl_optim_cfg cfg;
    cdl_optim_defaults(&cfg, CDL_OPT_ADAM);
    assert_int_equal(cdl_optim_init(&od, &std64, &cfg), 0);
    assert_int_equal(cdl_ckpt_load(p, d, &od, NULL), 0);
    for (size_t i = 0; i < std32.param_count; i++)
        assert_true(((double *)d->param)[i] == (double)((float *)a->param)[i]);
    for (size_t i = 0; i < std32.train_count; i++)
        assert_true(((double *)od.slot[1])[i] == (double)((float *)oa.slot[1])[i]);
    assert_int_equal(od.t, 77);
    assert_int_equal(d->step, 1234);
    /* Back: f64 values round to f32. */
    ((double *)d->param)[0] = 1.0 / 3.0;
    assert_int_equal(cdl_ckpt_save(q, d, NULL, NULL), 0);
    cdl_net *b = mknet(&std32, 0.0);
    assert_int_equal(cdl_ckpt_load(q, b, NULL, NULL), 0);
    assert_true(((float *)b->param)[0] == (float)(1.0 / 3.0));
    assert_true(((float *)b->param)[2] == 0.1f);
    /* An f64 value beyond f32's range cannot be rounded: refused, named. */
    ((double *)d->param)[7] = 1e300;
    assert_int_equal(cdl_ckpt_save(q, d, NULL, NULL), 0);
    assert_int_equal(cdl_ckpt_load(q, b, NULL, NULL), -1);
    expect_error("tensor 'fc1.bias': element 1 [1] is 1e+300 (beyond f32's range)");

    /* Differences other than the precision: say which. */
    cdl_net *s = mknet(&swapped32, 0.0);
    assert_int_equal(cdl_ckpt_load(p, s, NULL, NULL), -1);
    expect_error("checkpoint of another build of 'tiny'");
    expect_error("same precision, tensor names and shapes, so the parameter table differs in order");
    cdl_net *s64 = NULL;
    static cdl_model swapped64;
    swapped64 = swapped32;
    swapped64.real_size = 8;
    swapped64.fingerprint = cdl_model_fingerprint(&swapped64, 8);
    s64 = mknet(&swapped64, 0.0);
    assert_int_equal(cdl_ckpt_load(p, s64, NULL, NULL), -1);
    expect_error("an f32 checkpoint, and not of this model's f32 build either");
    static cdl_model wide64;
    wide64 = wide;
    wide64.real_size = 8;
    wide64.fingerprint = cdl_model_fingerprint(&wide64, 8);
    cdl_net *w = mknet(&wide64, 0.0);
    assert_int_equal(cdl_ckpt_load(p, w, NULL, NULL), -1);
    expect_error("checkpoint of another build of 'tiny' (fingerprint");
    expect_error("tensor 'fc1.weight': shape [3, 2] in the file, the model has [4, 2]");
    /* A hand-made descriptor whose fingerprint is not the hash: no conversion. */
    cdl_net *h = mknet(&tiny64, 0.0);
    assert_int_equal(cdl_ckpt_load(p, h, NULL, NULL), -1);
    expect_error("an f32 checkpoint for an f64 build; this model's fingerprint is not the hash of its table");
    cdl_optim_free(&oa);
    cdl_optim_free(&od);
    cdl_net *nets[] = {a, d, b, s, s64, w, h};
    for (int i = 0; i < 7; i++) cdl_net_free(nets[i]);
}

/* ---------------------------------------------------------------- parameter files */

/* A model with a batch-norm layer: its checkpoint carries bn.num_batches_tracked. */
static const cdl_tensor bnm_params[] = {
    {.name = "fc.weight", .dtype = CDL_F32, .offset = 0, .rank = 2, .dims = {2, 3}},
    {.name = "fc.bias", .dtype = CDL_F32, .offset = 6, .rank = 1, .dims = {2}},
    {.name = "bn.weight", .dtype = CDL_F32, .offset = 8, .rank = 1, .dims = {2}},
    {.name = "bn.bias", .dtype = CDL_F32, .offset = 10, .rank = 1, .dims = {2}},
    {.name = "bn.running_mean", .dtype = CDL_F32, .offset = 12, .rank = 1, .dims = {2}, .flags = CDL_T_STATE},
    {.name = "bn.running_var", .dtype = CDL_F32, .offset = 14, .rank = 1, .dims = {2}, .flags = CDL_T_STATE},
};
static const cdl_model bnm = {
    .abi = CDL_ABI, .name = "bnm", .fingerprint = 0x5555666677778888ull, .real_size = 4, .batch = 2,
    .n_params = 6, .params = bnm_params, .param_count = 16, .train_count = 12,
};

/* One tensor of a hand-built safetensors file. */
typedef struct pf_t { const char *name, *dtype; int rank; int64_t dims[2]; const void *data; size_t bytes; } pf_t;

/* A safetensors file as another writer makes it: meta (a JSON object text, or NULL for
 * no __metadata__), then the tensors in the given order, no checksums. */
static unsigned char *pf_build(const char *meta, int n, const pf_t *t, size_t *len) {
    char hdr[4096];
    size_t k = (size_t)snprintf(hdr, sizeof hdr, "{");
    if (meta) k += (size_t)snprintf(hdr + k, sizeof hdr - k, "\"__metadata__\":%s", meta);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        k += (size_t)snprintf(hdr + k, sizeof hdr - k, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", meta || i ? "," : "",
                              t[i].name, t[i].dtype);
        for (int d = 0; d < t[i].rank; d++)
            k += (size_t)snprintf(hdr + k, sizeof hdr - k, "%s%lld", d ? "," : "", (long long)t[i].dims[d]);
        k += (size_t)snprintf(hdr + k, sizeof hdr - k, "],\"data_offsets\":[%zu,%zu]}", off, off + t[i].bytes);
        off += t[i].bytes;
    }
    k += (size_t)snprintf(hdr + k, sizeof hdr - k, "}");
    assert_true(k < sizeof hdr);
    *len = 8 + k + off;
    unsigned char *b = malloc(*len);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)k >> (8 * i));
    memcpy(b + 8, hdr, k);
    off = 8 + k;
    for (int i = 0; i < n; i++) {
        memcpy(b + off, t[i].data, t[i].bytes);
        off += t[i].bytes;
    }
    return b;
}

/* Expect buf to be refused with needle and to leave the net alone. */
static void pf_refused(const unsigned char *b, size_t n, cdl_net *t, const char *needle) {
    float before[16];
    memcpy(before, t->param, sizeof before);
    if (cdl_ckpt_load_mem(b, n, "pf", t, NULL, NULL) == 0) fail_msg("accepted; expected '%s'", needle);
    expect_error(needle);
    assert_memory_equal(before, t->param, sizeof before);
}

/* Files as safetensors.torch.save_file writes them: no cdl metadata, any order, F64
 * or F32, PyTorch's num_batches_tracked; checked by names, shapes, dtypes, values. */
static void test_param_files(void **st) {
    (void)st;
    /* Our own checkpoint of a batch-norm model carries the counter. */
    cdl_net *a = mknet(&bnm, 1.0);
    a->step = 321;
    const char *p = tpath("bnm.ckpt");
    assert_int_equal(cdl_ckpt_save(p, a, NULL, NULL), 0);
    size_t n;
    unsigned char *b = slurp(p, &n);
    char *e = find_bytes(b, n, "\"bn.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[", 67);
    assert_non_null(e);
    uint64_t h = 0, at = strtoull(e + 67, NULL, 10);
    for (int i = 7; i >= 0; i--) h = h << 8 | b[i];
    int64_t cnt;
    memcpy(&cnt, b + 8 + h + at, 8);
    assert_int_equal(cnt, 321);
    cdl_net *t = mknet(&bnm, 0.0);
    assert_int_equal(cdl_ckpt_load(p, t, NULL, NULL), 0);
    assert_memory_equal(a->param, t->param, 16 * 4);
    free(b);

    float fb[2] = {7, 8}, bw[2] = {1, 1}, bb[2] = {0, 0}, rm[2] = {0.5f, -0.5f},
          rv[2] = {2, 3};
    double wd[6] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6};
    int64_t nbt = 42;
    pf_t full[] = {
        {"bn.running_var", "F32", 1, {2}, rv, 8}, {"fc.weight", "F64", 2, {2, 3}, wd, 48},
        {"bn.bias", "F32", 1, {2}, bb, 8},        {"bn.num_batches_tracked", "I64", 0, {0}, &nbt, 8},
        {"fc.bias", "F32", 1, {2}, fb, 8},        {"bn.weight", "F32", 1, {2}, bw, 8},
        {"bn.running_mean", "F32", 1, {2}, rm, 8},
    };
    const char *metas[] = {NULL, "{\"format\":\"pt\"}", "{}"};
    for (int m = 0; m < 3; m++) {
        unsigned char *f = pf_build(metas[m], 7, full, &n);
        cdl_net *u = mknet(&bnm, 9.0);
        cdl_ckpt_meta got;
        assert_int_equal(cdl_ckpt_load_mem(f, n, "pf", u, NULL, &got), 0);
        const float *q = u->param;
        for (int i = 0; i < 6; i++) assert_true(q[i] == (float)wd[i]);
        assert_true(q[6] == 7 && q[7] == 8 && q[12] == 0.5f && q[15] == 3);
        assert_int_equal(u->step, 1234);                     /* a parameter file has no step */
        assert_int_equal(got.step, 0);
        assert_string_equal(got.model, "");
        /* No optimizer state to resume from. */
        cdl_optim o;
        cdl_optim_cfg cfg;
        cdl_optim_defaults(&cfg, CDL_OPT_ADAM);
        assert_int_equal(cdl_optim_init(&o, &bnm, &cfg), 0);
        assert_int_equal(cdl_ckpt_load_mem(f, n, "pf", u, &o, NULL), -1);
        expect_error("a parameter file (no cdl checkpoint metadata) holds no optimizer state");
        cdl_optim_free(&o);
        cdl_net_free(u);
        free(f);
    }
    /* Without the counter it loads too. */
    pf_t nocnt[6];
    memcpy(nocnt, full, 3 * sizeof *full);
    memcpy(nocnt + 3, full + 4, 3 * sizeof *full);
    unsigned char *f = pf_build(NULL, 6, nocnt, &n);
    assert_int_equal(cdl_ckpt_load_mem(f, n, "pf", t, NULL, NULL), 0);
    free(f);
    /* Missing, unexpected, reshaped, mistyped, non-finite, bad counter. */
    f = pf_build(NULL, 5, nocnt, &n);
    pf_refused(f, n, t, "pf: tensor 'bn.running_mean' is missing");
    free(f);
    pf_t ren[6];
    memcpy(ren, nocnt, sizeof ren);
    ren[5].name = "bn.running_avg";
    f = pf_build(NULL, 6, ren, &n);
    pf_refused(f, n, t, "tensor 'bn.running_mean' is missing (the file has 'bn.running_avg')");
    free(f);
    pf_t extra[8];
    memcpy(extra, full, sizeof full);
    extra[7] = (pf_t){"fc2.weight", "F32", 1, {2}, fb, 8};
    f = pf_build(NULL, 8, extra, &n);
    pf_refused(f, n, t, "unexpected tensor 'fc2.weight' (not a parameter of model bnm)");
    free(f);
    memcpy(ren, nocnt, sizeof ren);
    ren[1] = (pf_t){"fc.weight", "F64", 2, {3, 2}, wd, 48};
    f = pf_build(NULL, 6, ren, &n);
    pf_refused(f, n, t, "tensor 'fc.weight': shape [3, 2] in the file, the model has [2, 3]");
    free(f);
    int32_t ib[2] = {1, 2};
    memcpy(ren, nocnt, sizeof ren);
    ren[3] = (pf_t){"fc.bias", "I32", 1, {2}, ib, 8};
    f = pf_build(NULL, 6, ren, &n);
    pf_refused(f, n, t, "tensor 'fc.bias': dtype I32, the model needs a real type");
    free(f);
    ren[3] = (pf_t){"fc.bias", "F16", 1, {2}, ib, 4};
    f = pf_build(NULL, 6, ren, &n);
    pf_refused(f, n, t, "tensor 'fc.bias': unsupported dtype 'F16'");
    free(f);
    double wn[6] = {0.1, 0.2, 0.3, 0.4, NAN, 0.6};
    memcpy(ren, nocnt, sizeof ren);
    ren[1].data = wn;
    f = pf_build(NULL, 6, ren, &n);
    pf_refused(f, n, t, "tensor 'fc.weight': element 4 [1, 1] is nan");
    free(f);
    int64_t neg = -3;
    memcpy(extra, full, sizeof full);
    extra[3].data = &neg;
    f = pf_build(NULL, 7, extra, &n);
    pf_refused(f, n, t, "tensor 'bn.num_batches_tracked': -3 batches tracked");
    free(f);
    extra[3] = (pf_t){"bn.num_batches_tracked", "F32", 0, {0}, fb, 4};
    f = pf_build(NULL, 7, extra, &n);
    pf_refused(f, n, t, "tensor 'bn.num_batches_tracked': must be an integer scalar");
    free(f);
    /* Checksums where present are verified; a bad header_crc32 is never ignored. */
    char meta[200];
    uLong c = crc32(0L, (const Bytef *)fb, 8);
    snprintf(meta, sizeof meta, "{\"crc32:fc.bias\":\"%08lx\"}", c);
    f = pf_build(meta, 6, nocnt, &n);
    assert_int_equal(cdl_ckpt_load_mem(f, n, "pf", t, NULL, NULL), 0);
    free(f);
    snprintf(meta, sizeof meta, "{\"crc32:fc.bias\":\"%08lx\"}", c ^ 1);
    f = pf_build(meta, 6, nocnt, &n);
    pf_refused(f, n, t, "tensor 'fc.bias': checksum mismatch");
    free(f);
    f = pf_build("{\"header_crc32\":\"00000000\"}", 6, nocnt, &n);
    pf_refused(f, n, t, "header checksum mismatch");
    free(f);
    f = pf_build("{\"format\":\"cdl-ckpt 7\"}", 6, nocnt, &n);
    pf_refused(f, n, t, "not a cdl checkpoint this build reads (format 'cdl-ckpt 7'");
    free(f);
    f = pf_build("[1]", 6, nocnt, &n);
    pf_refused(f, n, t, "__metadata__ is not an object");
    free(f);
    cdl_net_free(a);
    cdl_net_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_f32_adam),
        cmocka_unit_test(test_vocab_metadata),
        cmocka_unit_test(test_roundtrip_rmsprop_three_slots),
        cmocka_unit_test(test_roundtrip_f64_noopt),
        cmocka_unit_test(test_plain_reader_layout),
        cmocka_unit_test(test_every_bit_flip_refused),
        cmocka_unit_test(test_every_truncation_refused),
        cmocka_unit_test(test_other_model_refused),
        cmocka_unit_test(test_edited_headers_refused),
        cmocka_unit_test(test_safetensors_write),
        cmocka_unit_test(test_crash_mid_save),
        cmocka_unit_test(test_bad_descriptor),
        cmocka_unit_test(test_stale_tmp_cleanup),
        cmocka_unit_test(test_special_files),
        cmocka_unit_test(test_nonfinite_refused),
        cmocka_unit_test(test_cross_precision),
        cmocka_unit_test(test_param_files),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
