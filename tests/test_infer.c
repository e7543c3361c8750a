/* test_infer.c -- the inference export's compiler side: the checkpoint reader
 * (weights.c: every refusal names the file and the reason, plain and cdl files load),
 * batch-norm folding (infer.c: the folded layer computes what layer + batch norm
 * computed), the choice of functions (infer_clone) and the refusal of ops without a
 * portable kernel.  The numbers of whole exports against the runtime are
 * tests/sh/deploy.sh's. */
#include "test_util.h"

#include "cdl.h"

#include <math.h>
#include <unistd.h>

/* linear1.weight [2, 3], linear1.bias [2] */
static const char *MODEL = "model t(B = 2) {\n  input x: f32[B, 3]\n  output linear(x, 2) as y\n}\n";
static char path[64];

static int setup(void **state) {
    tu_setup(state);
    ops_init();
    snprintf(path, sizeof path, "/tmp/test_infer_%d.st", (int)getpid());
    return 0;
}
static int teardown(void **state) {
    remove(path);
    return tu_teardown(state);
}

/* Write a safetensors file: header text hdr (its length prefix computed), then len
 * data bytes. */
static void write_st(const char *hdr, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t n = strlen(hdr);
    unsigned char pre[8];
    for (int i = 0; i < 8; i++) pre[i] = (unsigned char)(n >> (8 * i));
    fwrite(pre, 1, 8, f);
    fwrite(hdr, 1, n, f);
    fwrite(data, 1, len, f);
    fclose(f);
}

static const float W[8] = {1, 2, 3, 4, 5, 6, 0.5f, -0.5f};   /* weight 2x3, then bias 2 */
#define GOOD_HDR \
    "{\"linear1.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}," \
    "\"linear1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]}}"

/* weights_load of the file at path for MODEL; the diagnostics must contain want
 * (NULL: load must succeed). */
static Weights *load_expect(const char *want) {
    diag_reset();
    Model *m = elab_ok(MODEL);
    Weights *w = weights_load(path, m);
    if (!want) {
        if (!w) fail_msg("unexpected: %s", diags());
        return w;
    }
    assert_null(w);
    if (!said(want)) fail_msg("expected '%s', got: %s", want, diags());
    assert_true(said(path));   /* the file is named */
    return NULL;
}

static void plain_file_loads(void **state) {
    (void)state;
    write_st(GOOD_HDR, W, sizeof W);
    Weights *w = load_expect(NULL);
    assert_int_equal(w->n, 2);
    assert_memory_equal(w->t[0].data, W, 24);
    assert_memory_equal(w->t[1].data, W + 6, 8);
    assert_false(w->f64);
}

static void f64_file_loads_rounded(void **state) {
    (void)state;
    double d[8];
    for (int i = 0; i < 8; i++) d[i] = W[i] + 1e-12;
    write_st("{\"linear1.bias\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[48,64]},"
             "\"linear1.weight\":{\"dtype\":\"F64\",\"shape\":[2,3],\"data_offsets\":[0,48]},"
             "\"__metadata__\":{\"note\":\"from elsewhere\"}}",
             d, sizeof d);
    Weights *w = load_expect(NULL);
    assert_true(w->f64);
    assert_memory_equal(w->t[1].data, W + 6, 8);
}

/* A name spelled with escapes is the same name. */
static void escaped_names_decode(void **state) {
    (void)state;
    write_st("{\"linear1.w\\u0065ight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
             "\"linear1\\/bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]}}",
             W, sizeof W);
    load_expect("tensor 'linear1.bias' (parameter [2]");   /* "linear1/bias" is another name */
}

/* A cdl checkpoint (the runtime's writer: checksums, metadata, optimizer slots). */
static void cdl_file(const char *model, const char *fp, bool slots) {
    float m1[6] = {0}, m2[2] = {0};
    cdl_st_tensor t[4] = {{"linear1.weight", CDL_F32, 2, {2, 3}, W}, {"linear1.bias", CDL_F32, 1, {2}, W + 6},
                          {"adam.m.linear1.weight", CDL_F32, 2, {2, 3}, m1}, {"adam.m.linear1.bias", CDL_F32, 1, {2}, m2}};
    const char *kv[] = {"format", "cdl-ckpt 1", "model", model, "fingerprint", fp, "optimizer_slots", slots ? "adam.m" : ""};
    assert_int_equal(cdl_safetensors_write(path, slots ? 4 : 2, t, 4, kv), 0);
}

static const char *fingerprint(void) {
    Model *m = elab_ok(MODEL);
    return cc_str("%016llx", (unsigned long long)emit_fingerprint(m, 4));
}

static void cdl_checkpoint_loads(void **state) {
    (void)state;
    cdl_file("t", fingerprint(), true);
    Weights *w = load_expect(NULL);
    assert_memory_equal(w->t[0].data, W, 24);
}

/* Flip one bit of byte `at` (from the end when negative). */
static void flip(long at) {
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, at, at < 0 ? SEEK_END : SEEK_SET);
    long pos = ftell(f);
    int c = fgetc(f);
    fseek(f, pos, SEEK_SET);
    fputc(c ^ 0x10, f);
    fclose(f);
}

static void corrupt_data_refused(void **state) {
    (void)state;
    cdl_file("t", fingerprint(), false);
    flip(-3);
    load_expect("checksum mismatch");
}

static void corrupt_header_refused(void **state) {
    (void)state;
    cdl_file("t", fingerprint(), false);
    flip(40);   /* inside a tensor name */
    load_expect("header checksum mismatch");
}

static void other_model_refused(void **state) {
    (void)state;
    cdl_file("u", fingerprint(), false);
    load_expect("a checkpoint of model 'u', not of 't'");
}

static void fingerprint_mismatch_refused(void **state) {
    (void)state;
    cdl_file("t", "0123456789abcdef", false);
    load_expect("fingerprint 0123456789abcdef");
}

static void slots_need_metadata(void **state) {
    (void)state;
    cdl_file("t", fingerprint(), true);
    /* the same tensors, but the metadata names no slots: adam.m.* are strangers */
    write_st("{\"linear1.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
             "\"linear1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]},"
             "\"adam.m.linear1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[32,40]}}",
             (float[10]){0}, 40);
    load_expect("unexpected tensor 'adam.m.linear1.bias': not a parameter of model t");
}

/* Headers that are refused, with the reason the message must give. */
static void bad_headers_refused(void **state) {
    (void)state;
    static const struct { const char *hdr; size_t len; const char *why; } cases[] = {
        {"{\"linear1.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24,
         "tensor 'linear1.bias' (parameter [2]"},
        {"{\"linear1.weight\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24]},"
         "\"linear1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]}}", 32,
         "tensor 'linear1.weight': shape [3, 2] in the file, the model has [2, 3]"},
        {GOOD_HDR, 36, "4 bytes after the last tensor's data"},
        {"{\"linear1.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
         "\"linear1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[20,28]}}", 32, "gap or overlap"},
        {"{\"linear1.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
         "\"linear1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,40]}}", 32, "outside the 32 data bytes"},
        {"{\"linear1.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
         "\"linear1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,28]}}", 28, "span 4 bytes, but shape [2] of F32"},
        {"{\"linear1.weight\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]}}", 12, "dtype 'F16'"},
        {"{\"linear1.weight\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,24]}}", 24, "shape entries must be"},
        {"{\"linear1.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24],\"x\":1}}", 24, "exactly dtype"},
        {"{\"a\":1,\"a\":2}", 0, "key 'a' twice"},
        {"{\"a\":{\"dtype\":\"F32\",}}", 0, "header JSON: byte"},
        {"{\"a\":\"\\ud800\"}", 0, "unpaired surrogate"},
        {"{\"a\":\"x\\u0000\"}", 0, "\\u0000"},
        {"{\"a\":01}", 0, "leading zero"},
        {"[1,2]", 0, "not a JSON object"},
        {"{} x", 0, "text after the header object"},
        {"{\"__metadata__\":{\"k\":1}}", 0, "metadata 'k' is not a string"},
        {"{\"__metadata__\":{\"format\":\"cdl-ckpt 2\"},"
         "\"linear1.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
         "\"linear1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]}}", 32, "format 'cdl-ckpt 2'"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        diag_reset();
        write_st(cases[k].hdr, (float[16]){1, 2, 3, 4, 5, 6, 7, 8}, cases[k].len);
        Model *m = elab_ok(MODEL);
        if (weights_load(path, m)) fail_msg("case %zu loaded", k);
        if (!said(cases[k].why)) fail_msg("case %zu: expected '%s', got: %s", k, cases[k].why, diags());
    }
}

static void bad_values_refused(void **state) {
    (void)state;
    float v[8];
    memcpy(v, W, sizeof v);
    v[4] = NAN;
    write_st(GOOD_HDR, v, sizeof v);
    load_expect("tensor 'linear1.weight': element 4 is nan");
    double d[8] = {1, 2, 3, 4, 5, 6, 1e300, 0};
    write_st("{\"linear1.weight\":{\"dtype\":\"F64\",\"shape\":[2,3],\"data_offsets\":[0,48]},"
             "\"linear1.bias\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[48,64]}}",
             d, sizeof d);
    load_expect("tensor 'linear1.bias': element 0 is 1e+300");
}

static void bad_files_refused(void **state) {
    (void)state;
    write_st(GOOD_HDR, W, sizeof W);
    FILE *f = fopen(path, "r+b");
    fputc(0xff, f);              /* header length 255 + ...: past the end */
    fclose(f);
    load_expect("exceeds the file size");
    f = fopen(path, "wb");
    fputs("abc", f);
    fclose(f);
    load_expect("file too short (3 bytes)");
    f = fopen(path, "wb");
    for (int i = 0; i < (3 << 20); i++) fputc(0, f);
    fclose(f);
    load_expect("larger than any checkpoint of this model can be");
    remove(path);
    load_expect("cannot open: No such file");
    diag_reset();
    Model *m = elab_ok(MODEL);
    assert_null(weights_load("/tmp", m));
    assert_diag("/tmp: error: not a regular file");
}

/* A batch norm's counter <L>.num_batches_tracked (an I64 scalar in cdl's and PyTorch's
 * checkpoints) is allowed beside its layer's tensors and not read; as a float, with a
 * shape, or under a name that is no batch norm's it is refused, as is an integer
 * tensor where the model has a real one. */
static void batchnorm_counter_accepted(void **state) {
    (void)state;
    static const char *bn = "model t(B = 2) {\n  input x: f32[B, 3]\n  output x |> linear(2) |> batchnorm as y\n}\n";
#define BN_HDR(counter) \
    "{\"linear1.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}," \
    "\"linear1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]}," \
    "\"bn1.weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[32,40]}," \
    "\"bn1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[40,48]}," \
    "\"bn1.running_mean\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[48,56]}," \
    "\"bn1.running_var\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[56,64]}," counter "}"
    static const struct { const char *hdr; const char *why; } cases[] = {
        {BN_HDR("\"bn1.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[64,72]}"), NULL},
        {BN_HDR("\"bn1.num_batches_tracked\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[64,72]}"),
         "tensor 'bn1.num_batches_tracked': must be an integer scalar"},
        {BN_HDR("\"bn1.num_batches_tracked\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[64,72]}"),
         "tensor 'bn1.num_batches_tracked': must be an integer scalar (I64 [] as PyTorch writes it), not F64 []"},
        {BN_HDR("\"linear1.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[64,72]}"),
         "unexpected tensor 'linear1.num_batches_tracked'"},
        {"{\"linear1.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
         "\"linear1.bias\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[24,40]}}",
         "tensor 'linear1.bias': an integer tensor, the model's parameter is real"},
    };
#undef BN_HDR
    float data[18] = {1, 2, 3, 4, 5, 6, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1};
    int64_t steps = 7;
    memcpy(data + 16, &steps, 8);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        diag_reset();
        write_st(cases[k].hdr, data, k == 4 ? 40 : sizeof data);
        Model *m = elab_ok(k == 4 ? MODEL : bn);
        Weights *w = weights_load(path, m);
        if (!cases[k].why) {
            if (!w) fail_msg("case %zu: %s", k, diags());
            assert_int_equal(w->n, 6);   /* the parameters and state buffers, not the counter */
            continue;
        }
        if (w) fail_msg("case %zu loaded", k);
        if (!said(cases[k].why)) fail_msg("case %zu: expected '%s', got: %s", k, cases[k].why, diags());
        assert_true(said(path));
    }
}

/* conv (no bias) + batch norm, folded: the folded conv's weights and bias are those of
 * the layer scaled per channel; the batch norm node is now the conv, the old conv is
 * unread, and the running statistics' nodes hold the new tensors. */
static void batchnorm_folds(void **state) {
    (void)state;
    Model *m = elab_ok("model t(B = 1) {\n  input x: f32[B, 1, 2, 2]\n"
                       "  output x |> conv2d(2, 1, bias=false) |> batchnorm as y\n}\n");
    Weights w = {.path = "mem", .n = m->nparams, .cap = m->nparams + 4};
    w.t = calloc((size_t)w.cap, sizeof *w.t);
    static float cw[2] = {2, -3}, gamma[2] = {1, 0.5f}, beta[2] = {0.25f, -1}, mean[2] = {1, 2}, var[2] = {3, 0};
    const float *vals[5] = {cw, gamma, beta, mean, var};
    for (int p = 0; p < m->nparams; p++) w.t[p] = (WTensor){.name = m->params[p].name, .shape = m->params[p].shape, .data = (float *)vals[p]};
    Pipeline *p = infer_clone(m, 0, NULL);
    assert_non_null(p);
    Graph *gr = p->fn[0].g;
    infer_prepare(gr, &w);
    int bn = -1, convs = 0;
    for (int i = 0; i < gr->len; i++)
        if (gr->n[i].flags & NF_OUTPUT) bn = i;
    assert_int_equal(gr->n[bn].op, OP_CONV2D);
    assert_int_equal(gr->n[bn].nin, 3);
    for (int i = 0; i < gr->len; i++) convs += gr->n[i].op == OP_CONV2D;
    assert_int_equal(convs, 2);   /* the old one is left to DCE */
    const WTensor *fw = &w.t[gr->n[gr->n[bn].in[1]].slot], *fb = &w.t[gr->n[gr->n[bn].in[2]].slot];
    assert_string_equal(fw->name, "conv1+bn1.weight");
    assert_string_equal(fb->name, "conv1+bn1.bias");
    for (int k = 0; k < 2; k++) {
        double s = gamma[k] / sqrt((double)var[k] + 1e-5);
        assert_float_equal(fw->data[k], cw[k] * s, 1e-6);
        assert_float_equal(fb->data[k], beta[k] - mean[k] * s, 1e-6);
    }
    ir_verify(gr);
    opt_run(gr);
    for (int i = 0; i < gr->len; i++)   /* what is left: input, the two new tensors, the conv */
        if (!(gr->n[i].flags & NF_DEAD)) assert_true(gr->n[i].op == OP_INPUT || gr->n[i].op == OP_PARAM || i == bn);
    free(w.t);
}

/* Dropout disappears: its readers read its input. */
static void dropout_goes(void **state) {
    (void)state;
    Model *m = elab_ok("model t(B = 1) {\n  input x: f32[B, 3]\n  output x |> dropout(0.5) |> relu as y\n}\n");
    Weights w = {0};
    Pipeline *p = infer_clone(m, 0, NULL);
    Graph *gr = p->fn[0].g;
    infer_prepare(gr, &w);
    opt_run(gr);
    for (int i = 0; i < gr->len; i++)
        if (!(gr->n[i].flags & NF_DEAD)) assert_true(gr->n[i].op == OP_INPUT || gr->n[i].op == OP_RELU);
}

static void functions_chosen(void **state) {
    (void)state;
    Model *m = elab_ok("model t(B = 1) {\n  input x: f32[B, 3]\n  output relu(x) as y\n"
                       "  entry twice(z: f32[B, 3]) = 2 * z\n}\n");
    Pipeline *p = infer_clone(m, 2, (const char *[]){"twice", "forward"});
    assert_non_null(p);
    assert_int_equal(p->nfn, 2);
    assert_int_equal(p->fn[0].kind, FN_ENTRY);
    assert_int_equal(p->fn[1].kind, FN_EVAL);
    assert_null(infer_clone(m, 1, (const char *[]){"thrice"}));
    assert_diag("cdlc: error: --entry thrice: model t (t.cdl) has no entry 'thrice' (it has: forward, twice)");
}

static void no_outputs_refused(void **state) {
    (void)state;
    Model *m = elab_ok("model t(B = 1) {\n  input x: f32[B, 3]\n  loss sum(x)\n}\n");
    assert_null(infer_clone(m, 0, NULL));
    assert_diag("model t has no outputs");
}

/* Models the export refuses while writing: the diagnostic, and nothing is written to the
 * C file.  An op without a portable kernel (here a loss used as an output) is reported
 * at its source location; train { normalize = "MEAN,STD" } is read as the trainer reads
 * it: a number out of double range is refused, not taken as inf (sscanf's %lf took it). */
static void export_refused(void **state) {
    (void)state;
    static const struct { const char *src, *diag; } cases[] = {
        {"model t(B = 1) {\n  input x: f32[B, 3]\n  output mse(x, 2 * x) as e\n}\n",
         "t.cdl:3:10: error: mse: the inference export (forward) has no kernel for this op"},
        {"model t(B = 1) {\n  input x: f32[B, 3]\n  output relu(x) as y\n  train {\n    normalize = \"1e999,0.5\"\n  }\n}\n",
         "normalize: expected \"MEAN,STD\", finite, with STD > 0, got \"1e999,0.5\""},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        diag_reset();
        Model *m = elab_ok(cases[k].src);
        Weights w = {.path = "mem"};
        Pipeline *p = infer_clone(m, 0, NULL);
        infer_prepare(p->fn[0].g, &w);
        pipeline_opt(p);
        pipeline_plan(p);
        FILE *c = tmpfile(), *h = tmpfile();
        emit_infer(p, &w, false, c, h, "t_infer.c", "t_infer.h");
        if (!said(cases[k].diag)) fail_msg("case %zu: expected '%s', got: %s", k, cases[k].diag, diags());
        if (ftell(c) != 0) fail_msg("case %zu: %ld bytes of C written", k, ftell(c));
        fclose(c);
        fclose(h);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(plain_file_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(f64_file_loads_rounded, setup, teardown),
        cmocka_unit_test_setup_teardown(escaped_names_decode, setup, teardown),
        cmocka_unit_test_setup_teardown(cdl_checkpoint_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(corrupt_data_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(corrupt_header_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(other_model_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(fingerprint_mismatch_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(slots_need_metadata, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_headers_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_values_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_files_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(batchnorm_counter_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(batchnorm_folds, setup, teardown),
        cmocka_unit_test_setup_teardown(dropout_goes, setup, teardown),
        cmocka_unit_test_setup_teardown(functions_chosen, setup, teardown),
        cmocka_unit_test_setup_teardown(no_outputs_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(export_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
