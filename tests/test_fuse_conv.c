/* test_fuse_conv.c -- the convolution epilogue fusion pass (compiler/opt_fuse_conv.c):
 *   - conv2d -> add -> relu becomes one conv2d_fused node (bias, add, relu bits, inputs
 *     x, w, b, skip) at the relu's id, and the conv and add die in opt_run;
 *   - conv2d_bwd_x -> add -> relu_bwd becomes conv2d_bwd_x_fused (inputs g, w, mask,
 *     acc), whichever operand of the add the convolution is;
 *   - what must not fuse does not: a convolution read twice, a convolution that is an
 *     output, an add after the mask (the epilogue adds first), a broadcasting add;
 *   - the pipeline fuses the static target's functions and neither the tape's graphs nor
 *     the inference export's;
 *   - opt_pair_conv marks a convolution's bwd_w, bwd_x(_fused) and bias SUM for one
 *     conv2d_bwd_xw call at the bwd_x node, and leaves alone what it cannot pair: a
 *     bwd_x whose inputs do not keep x alive, another geometry, dw read in between, a
 *     dead node; a SUM read between it and the call is not folded (read after, it is). */
#include "test_util.h"

static int setup(void **state) { return tu_graph_setup(state, 4, no_loc); }

static int sum_all(int x) { return op(OP_SUM, 1, &x, &(Attrs){0}, NULL); }

static int make_loss(int x) {
    int l = sum_all(x);
    g->n[l].flags |= NF_LOSS;
    return l;
}

/* conv2d 2 -> 3 channels, 3x3, pad 1, on x[4, 2, 6, 6] (batched), with bias */
static int conv(int x, int *w, int *b) {
    *w = param(SH(false, 3, 2, 3, 3));
    *b = param(SH(false, 3));
    int in[3] = {x, *w, *b};
    return op(OP_CONV2D, 3, in, &(Attrs){.i = {1, 1}}, NULL);
}

static int bin(Op o, int a, int b) {
    int in[2] = {a, b};
    return op(o, 2, in, NULL, NULL);
}

static void test_forward_chain(void **state) {
    (void)state;
    int x = real(SH(true, 4, 2, 6, 6)), skip = real(SH(true, 4, 3, 6, 6)), w, b;
    int c = conv(x, &w, &b);
    int a = bin(OP_ADD, skip, c);        /* the conv as the second operand */
    int r = op(OP_RELU, 1, &a, NULL, NULL);
    make_loss(r);
    assert_int_equal(opt_fuse_conv(g), 2);   /* the add, then the relu */
    const Node *f = &g->n[r];
    assert_int_equal(f->op, OP_CONV2D_FUSED);
    assert_int_equal(f->ia[2], CONV_FUSE_BIAS | CONV_FUSE_ADD | CONV_FUSE_RELU);
    assert_int_equal(f->ia[1], 1);
    assert_int_equal(f->nin, 4);
    int want[4] = {x, w, b, skip};
    assert_memory_equal(f->in, want, sizeof want);
    SHAPE(r, true, 4, 3, 6, 6);
    opt_run(g);
    assert_true(g->n[c].flags & NF_DEAD);
    assert_true(g->n[a].flags & NF_DEAD);
    assert_false(g->n[r].flags & NF_DEAD);
}

static void test_backward_chain(void **state) {
    (void)state;
    int gy = real(SH(true, 4, 3, 6, 6)), acc = real(SH(true, 4, 2, 6, 6)), mask = real(SH(true, 4, 2, 6, 6));
    int w = param(SH(false, 3, 2, 3, 3));
    int in[2] = {gy, w};
    int dx = op(OP_CONV2D_BWD_X, 2, in, &(Attrs){.i = {1, 1, 6, 6}}, NULL);
    int a = bin(OP_ADD, acc, dx);
    int r = bin(OP_RELU_BWD, a, mask);
    make_loss(r);
    assert_int_equal(opt_fuse_conv(g), 2);
    const Node *f = &g->n[r];
    assert_int_equal(f->op, OP_CONV2D_BWD_X_FUSED);
    assert_int_equal(f->ia[4], CONV_FUSE_MASK | CONV_FUSE_ADD);
    assert_int_equal(f->ia[2], 6);
    int want[4] = {gy, w, mask, acc};
    assert_int_equal(f->nin, 4);
    assert_memory_equal(f->in, want, sizeof want);
    opt_run(g);
    assert_true(g->n[dx].flags & NF_DEAD);
    assert_true(g->n[a].flags & NF_DEAD);
}

/* The mask first, then an add: the epilogue cannot add after masking, so the add stays. */
static void test_add_after_mask_stays(void **state) {
    (void)state;
    int gy = real(SH(true, 4, 3, 6, 6)), acc = real(SH(true, 4, 2, 6, 6)), mask = real(SH(true, 4, 2, 6, 6));
    int w = param(SH(false, 3, 2, 3, 3));
    int in[2] = {gy, w};
    int dx = op(OP_CONV2D_BWD_X, 2, in, &(Attrs){.i = {1, 1, 6, 6}}, NULL);
    int m = bin(OP_RELU_BWD, dx, mask);
    int a = bin(OP_ADD, m, acc);
    make_loss(a);
    assert_int_equal(opt_fuse_conv(g), 1);
    assert_int_equal(g->n[m].op, OP_CONV2D_BWD_X_FUSED);
    assert_int_equal(g->n[m].ia[4], CONV_FUSE_MASK);
    assert_int_equal(g->n[a].op, OP_ADD);
}

static void test_shared_or_output_conv_stays(void **state) {
    (void)state;
    int x = real(SH(true, 4, 2, 6, 6)), w, b;
    int c = conv(x, &w, &b);
    int r = op(OP_RELU, 1, &c, NULL, NULL);
    make_loss(bin(OP_ADD, r, c));        /* the conv is read again: the relu cannot own it */
    assert_int_equal(opt_fuse_conv(g), 0);
    assert_int_equal(g->n[r].op, OP_RELU);

    int c2 = conv(x, &w, &b);
    g->n[c2].flags |= NF_OUTPUT;         /* a result of the function */
    int r2 = op(OP_RELU, 1, &c2, NULL, NULL);
    sum_all(r2);
    assert_int_equal(opt_fuse_conv(g), 0);
    assert_int_equal(g->n[r2].op, OP_RELU);
}

static void test_broadcast_add_stays(void **state) {
    (void)state;
    int x = real(SH(true, 4, 2, 6, 6)), w, b;
    int c = conv(x, &w, &b);
    int s = param(SH(false, 3, 1, 1));   /* a per-channel add broadcasts: not an epilogue */
    int a = bin(OP_ADD, c, s);
    make_loss(a);
    assert_int_equal(opt_fuse_conv(g), 0);
    assert_int_equal(g->n[a].op, OP_ADD);
}

/* A convolution's backward as autodiff and opt_fuse_conv leave it: dw = bwd_w(gy, x),
 * db = sum(gy) over N, H, W, then dx = bwd_x_fused(gy, w, x as relu's mask), with a
 * negation of node `read` (XW_DW: dw, XW_DB: db, XW_NONE: gy) between the SUM and the
 * bwd_x.  bwd_w's kernel is kr x kr at padding kr / 2 (bwd_x's: 3 x 3, padding 1). */
typedef struct XwBwd { int gy, x, w, m, s, r, n; } XwBwd;
enum { XW_NONE, XW_DW, XW_DB };

static XwBwd xw_bwd(int read, int64_t kr) {
    XwBwd b = {.gy = real(SH(true, 4, 3, 6, 6)), .x = real(SH(true, 4, 2, 6, 6)), .w = param(SH(false, 3, 2, 3, 3))};
    int in[3] = {b.gy, b.x};
    b.m = op(OP_CONV2D_BWD_W, 2, in, &(Attrs){.i = {1, kr / 2, kr, kr}}, NULL);
    b.s = op(OP_SUM, 1, &b.gy, &(Attrs){.i = {1 | 4 | 8}}, NULL);
    int what = read == XW_DW ? b.m : read == XW_DB ? b.s : b.gy;
    b.r = op(OP_NEG, 1, &what, NULL, NULL);
    in[1] = b.w, in[2] = b.x;
    b.n = op(OP_CONV2D_BWD_X_FUSED, 3, in, &(Attrs){.i = {1, 1, 6, 6, CONV_FUSE_MASK}}, NULL);
    assert_true(b.m >= 0 && b.s >= 0 && b.r >= 0 && b.n >= 0);
    return b;
}

static void assert_unpaired(const XwBwd *b) {
    assert_int_equal(g->n[b->n].xw_dw, 0);
    assert_int_equal(g->n[b->n].xw_db, 0);
    assert_int_equal(g->n[b->m].xw_at, 0);
    assert_int_equal(g->n[b->s].xw_at, 0);
}

static void test_pair_and_fold_bias(void **state) {
    (void)state;
    XwBwd b = xw_bwd(XW_NONE, 3);
    int after = op(OP_NEG, 1, &b.s, NULL, NULL);   /* the SUM read after the call: fine */
    assert_true(after > b.n);
    assert_int_equal(opt_pair_conv(g), 1);
    assert_int_equal(g->n[b.n].xw_dw, b.m + 1);
    assert_int_equal(g->n[b.n].xw_db, b.s + 1);
    assert_int_equal(g->n[b.m].xw_at, b.n + 1);
    assert_int_equal(g->n[b.s].xw_at, b.n + 1);
    /* marks only: the nodes keep their ops and inputs */
    assert_int_equal(g->n[b.m].op, OP_CONV2D_BWD_W);
    assert_int_equal(g->n[b.s].op, OP_SUM);
    assert_int_equal(g->n[b.n].op, OP_CONV2D_BWD_X_FUSED);
    assert_int_equal(g->n[b.n].nin, 3);
}

/* The call writes db at the bwd_x node: a reader of the SUM before it would read it
 * unwritten, so the SUM stays a reduce (dx and dw still pair). */
static void test_bias_read_between_stays(void **state) {
    (void)state;
    XwBwd b = xw_bwd(XW_DB, 3);
    assert_int_equal(opt_pair_conv(g), 1);
    assert_int_equal(g->n[b.n].xw_dw, b.m + 1);
    assert_int_equal(g->n[b.m].xw_at, b.n + 1);
    assert_int_equal(g->n[b.n].xw_db, 0);
    assert_int_equal(g->n[b.s].xw_at, 0);
}

/* dw read before the call: it must exist there. */
static void test_dw_read_between_stays(void **state) {
    (void)state;
    XwBwd b = xw_bwd(XW_DW, 3);
    assert_int_equal(opt_pair_conv(g), 0);
    assert_unpaired(&b);
}

/* Same g, another geometry (a 1x1 kernel's bwd_w beside a 3x3's bwd_x). */
static void test_other_geometry_stays(void **state) {
    (void)state;
    XwBwd b = xw_bwd(XW_NONE, 1);
    SHAPE(b.m, false, 3, 2, 1, 1);
    assert_int_equal(opt_pair_conv(g), 0);
    assert_unpaired(&b);
}

static void test_dead_stays(void **state) {
    (void)state;
    XwBwd b = xw_bwd(XW_NONE, 3);
    g->n[b.m].flags |= NF_DEAD;
    assert_int_equal(opt_pair_conv(g), 0);
    assert_unpaired(&b);
}

/* A plain bwd_x (g, w): x is none of its inputs, so x may be gone by then. */
static void test_x_not_alive_stays(void **state) {
    (void)state;
    int gy = real(SH(true, 4, 3, 6, 6)), x = real(SH(true, 4, 2, 6, 6)), w = param(SH(false, 3, 2, 3, 3));
    int in[2] = {gy, x};
    int m = op(OP_CONV2D_BWD_W, 2, in, &(Attrs){.i = {1, 1, 3, 3}}, NULL);
    in[1] = w;
    int n = op(OP_CONV2D_BWD_X, 2, in, &(Attrs){.i = {1, 1, 6, 6}}, NULL);
    assert_true(m >= 0 && n >= 0);
    assert_int_equal(opt_pair_conv(g), 0);
    assert_int_equal(g->n[n].xw_dw, 0);
    assert_int_equal(g->n[m].xw_at, 0);
}

/* The whole pipeline on a residual block: the static target's train function has only
 * fused convolutions left (no relu, relu_bwd of a convolution, no add) and paired
 * backward ones, the tape's record graph none. */
static const char *block_src =
    "model m(B = 4) {\n"
    "    input x: f32[B, 2, 6, 6]\n"
    "    input y: i32[B]\n"
    "    a = x |> conv2d(2, 3, pad=1) |> relu\n"
    "    h = a |> conv2d(2, 3, pad=1) |> relu |> conv2d(2, 3, pad=1)\n"
    "    logits = relu(h + a) |> global_avgpool |> flatten |> linear(3)\n"
    "    loss cross_entropy(logits, y)\n"
    "}\n";

static int count_live(const Graph *gr, Op o) {
    int n = 0;
    for (int i = 0; i < gr->len; i++) n += gr->n[i].op == o && !(gr->n[i].flags & NF_DEAD);
    return n;
}

/* conv2d_bwd_xw calls in gr: bwd_x nodes paired with their bwd_w and bias SUM, each
 * marked back. */
static int count_xw(const Graph *gr) {
    int n = 0;
    for (int i = 0; i < gr->len; i++) {
        const Node *x = &gr->n[i];
        if (!x->xw_dw) continue;
        assert_int_equal(gr->n[x->xw_dw - 1].xw_at, i + 1);
        assert_true(x->xw_db > 0);
        assert_int_equal(gr->n[x->xw_db - 1].xw_at, i + 1);
        n++;
    }
    return n;
}

static void test_pipeline_fuses_static_only(void **state) {
    (void)state;
    Model *m = elab_ok(block_src);
    Pipeline *p = pipeline_build(m, 4, false);
    const Graph *train = NULL;
    for (int k = 0; k < p->nfn; k++)
        if (p->fn[k].kind == FN_TRAIN) train = p->fn[k].g;
    assert_non_null(train);
    assert_int_equal(count_live(train, OP_CONV2D_FUSED), 3);
    assert_int_equal(count_live(train, OP_CONV2D), 0);
    assert_int_equal(count_live(train, OP_RELU), 0);
    assert_int_equal(count_live(train, OP_ADD), 0);
    assert_int_equal(count_live(train, OP_CONV2D_BWD_X_FUSED), 2);   /* a relu's mask; the skip's add + mask */
    assert_int_equal(count_live(train, OP_CONV2D_BWD_X), 0);
    /* both go with their bwd_w and bias gradient (opt_pair_conv); the stem's bwd_w is
     * alone (x is an input: no bwd_x) */
    assert_int_equal(count_xw(train), 2);
    Pipeline *t = pipeline_build(m, 4, true);
    assert_int_equal(count_live(t->fn[0].g, OP_CONV2D_FUSED), 0);
    assert_int_equal(count_live(t->fn[0].g, OP_RELU), 3);
    assert_int_equal(count_xw(t->fn[0].g), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_forward_chain, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_backward_chain, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_add_after_mask_stays, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_shared_or_output_conv_stays, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_broadcast_add_stays, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_fuses_static_only, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_pair_and_fold_bias, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_bias_read_between_stays, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_dw_read_between_stays, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_other_geometry_stays, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_dead_stays, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_x_not_alive_stays, setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
