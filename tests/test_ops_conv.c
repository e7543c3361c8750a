/* test_ops_conv.c -- compiler rules of the conv family (compiler/ops_conv.c): shape
 * rules (shapes, batched flags, the diagnostics on bad shapes), aux sizes (and that the
 * compiler's conv scratch formula agrees with the runtime's), and the structure the
 * gradient rules build (which backward ops, with which attributes and shapes). */
#include "test_util.h"

#include "cdl.h"

static int setup(void **st) { return tu_graph_setup(st, 8, (Loc){"t.cdl", 3, 7}); }

/* The conv family computes in reals: REAL_SHAPE(id, batched, d0, ...) is SHAPE plus
 * that check. */
static void assert_real_shape(int id, Shape want) {
    assert_shape(id, want);
    assert_int_equal(g->n[id].dtype, DT_REAL);
}
#define REAL_SHAPE(id, b, ...) assert_real_shape((id), SH(b, __VA_ARGS__))

/* ------------------------------------------------------------------ conv2d */

static void test_conv2d_shapes(void **st) {
    (void)st;
    int x = LEAF(true, 8, 1, 28, 28), w = LEAF(false, 6, 1, 5, 5), b = LEAF(false, 6);
    Attrs a = {.i = {1, 2}};
    int in3[3] = {x, w, b};
    REAL_SHAPE(op(OP_CONV2D, 3, in3, &a, NULL), true, 8, 6, 28, 28);
    int in2[2] = {x, w};
    REAL_SHAPE(op(OP_CONV2D, 2, in2, NULL, NULL), true, 8, 6, 24, 24); /* stride 0 means 1, no padding */
    int x7 = LEAF(false, 2, 3, 7, 8), w3 = LEAF(false, 4, 3, 3, 3);
    Attrs s2 = {.i = {2, 1}};
    int in[2] = {x7, w3};
    REAL_SHAPE(op(OP_CONV2D, 2, in, &s2, NULL), false, 2, 4, 4, 4);
    Attrs s3 = {.i = {3, 0}};
    REAL_SHAPE(op(OP_CONV2D, 2, in, &s3, NULL), false, 2, 4, 2, 2);
}

static void test_conv2d_errors(void **st) {
    (void)st;
    int x = LEAF(true, 8, 3, 10, 10), w = LEAF(false, 6, 2, 3, 3);
    int in[3] = {x, w, -1};
    assert_int_equal(op(OP_CONV2D, 2, in, NULL, NULL), -1);
    assert_true(said("t.cdl:3:7: error: conv2d: input has 3 channels, the weight expects 2: [8, 3, 10, 10] * [6, 2, 3, 3]"));

    int w2 = LEAF(false, 6, 3, 3, 3), b = LEAF(false, 5);
    in[1] = w2;
    in[2] = b;
    assert_int_equal(op(OP_CONV2D, 3, in, NULL, NULL), -1);
    assert_true(said("conv2d: bias must be [6] (one per output channel), got [5]"));

    int big = LEAF(false, 6, 3, 13, 3);
    in[1] = big;
    assert_int_equal(op(OP_CONV2D, 2, in, NULL, NULL), -1);
    assert_true(said("conv2d: kernel 13x3 is larger than the padded input 10x10"));

    int x3 = LEAF(false, 3, 10, 10);
    in[0] = x3;
    in[1] = w2;
    assert_int_equal(op(OP_CONV2D, 2, in, NULL, NULL), -1);
    assert_true(said("conv2d: input must be 4-D [N, C, H, W], got [3, 10, 10]"));

    in[0] = x;
    Attrs neg = {.i = {1, -1}};
    assert_int_equal(op(OP_CONV2D, 2, in, &neg, NULL), -1);
    assert_true(said("padding non-negative"));

    int xi = const_leaf(SH(true, 8, 3, 10, 10), DT_I32);
    in[0] = xi;
    assert_int_equal(op(OP_CONV2D, 2, in, NULL, NULL), -1);
    assert_true(said("conv2d: argument 1 must be f32"));
}

static void test_conv2d_bwd_shapes(void **st) {
    (void)st;
    /* 7x7 input, 3x3 kernel, stride 2, pad 1 -> 4x4; an 8x8 input gives 4x4 too, so the
     * input size travels in the attributes */
    int gy = LEAF(true, 8, 4, 4, 4), w = LEAF(false, 4, 3, 3, 3), x = LEAF(true, 8, 3, 8, 8);
    Attrs ax = {.i = {2, 1, 8, 8}}, ax7 = {.i = {2, 1, 7, 7}}, aw = {.i = {2, 1, 3, 3}};
    int in[2] = {gy, w};
    REAL_SHAPE(op(OP_CONV2D_BWD_X, 2, in, &ax, NULL), true, 8, 3, 8, 8);
    REAL_SHAPE(op(OP_CONV2D_BWD_X, 2, in, &ax7, NULL), true, 8, 3, 7, 7);
    in[1] = x;
    REAL_SHAPE(op(OP_CONV2D_BWD_W, 2, in, &aw, NULL), false, 4, 3, 3, 3);
    Attrs bad = {.i = {2, 1, 12, 12}};
    in[1] = w;
    assert_int_equal(op(OP_CONV2D_BWD_X, 2, in, &bad, NULL), -1);
    assert_true(said("conv2d_bwd_x: gradient [8, 4, 4, 4] does not match weight [4, 3, 3, 3] for a 12x12 input"));
}

/* The compiler's scratch size for a conv node is the runtime's for the same geometry. */
static void check_aux(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r, int64_t s, int64_t st,
                      int64_t pad) {
    int x = LEAF(true, n, c, h, w), wt = LEAF(false, k, c, r, s);
    Attrs a = {.i = {st, pad}};
    int in[2] = {x, wt};
    int y = op(OP_CONV2D, 2, in, &a, NULL);
    assert_true(y >= 0);
    const Shape *ys = &g->n[y].shape;
    cdl_conv2d_geom gm = {.n = n, .c = c, .h = h, .w = w, .k = k, .r = r, .s = s, .stride = st, .pad = pad,
                          .oh = ys->d[2], .ow = ys->d[3]};
    gm.group = cdl_conv2d_pick_group(&gm);
    int64_t want = cdl_conv2d_scratch(&gm);
    assert_int_equal(op_info[OP_CONV2D].rule.aux(g, &g->n[y]), want);
    /* the backward helpers share the geometry, hence the size */
    Attrs ax = {.i = {st, pad, h, w}}, aw = {.i = {st, pad, r, s}};
    int gx[2] = {y, wt}, gw[2] = {y, x};
    int dx = op(OP_CONV2D_BWD_X, 2, gx, &ax, NULL), dw = op(OP_CONV2D_BWD_W, 2, gw, &aw, NULL);
    assert_int_equal(op_info[OP_CONV2D_BWD_X].rule.aux(g, &g->n[dx]), want);
    assert_int_equal(op_info[OP_CONV2D_BWD_W].rule.aux(g, &g->n[dw]), want);
}

static void test_conv2d_aux(void **st) {
    (void)st;
    check_aux(64, 1, 28, 28, 6, 5, 5, 1, 2);   /* LeNet conv1 */
    check_aux(64, 6, 14, 14, 16, 5, 5, 1, 0);  /* LeNet conv2 */
    check_aux(64, 16, 32, 32, 16, 3, 3, 1, 1); /* ResNet block */
    check_aux(64, 16, 8, 8, 32, 1, 1, 1, 0);   /* pointwise, grouped */
    check_aux(1, 16, 8, 8, 32, 1, 1, 1, 0);    /* pointwise, batch 1: no scratch */
    check_aux(8, 3, 7, 7, 4, 3, 3, 2, 1);
    check_aux(3, 512, 64, 64, 8, 3, 3, 1, 1);  /* big: group capped */
}

static void test_conv2d_grad(void **st) {
    (void)st;
    int x = LEAF(true, 8, 3, 7, 7), w = LEAF(false, 4, 3, 3, 3), b = LEAF(false, 4);
    g->n[x].flags |= NF_PARAM;
    g->n[w].flags |= NF_PARAM;
    g->n[b].flags |= NF_PARAM;
    Attrs a = {.i = {2, 1}};
    int in[3] = {x, w, b};
    int y = op(OP_CONV2D, 3, in, &a, NULL);
    int loss = op(OP_SUM, 1, &y, NULL, NULL);
    Model m = {.g = g, .loss = loss};
    int before = g->len;
    ad_run(&m, g, true, false);
    int bx = -1, bw = -1, db = -1;
    for (int i = before; i < g->len; i++) {
        const Node *n = &g->n[i];
        if (n->op == OP_CONV2D_BWD_X) bx = i;
        if (n->op == OP_CONV2D_BWD_W) bw = i;
        if (n->op == OP_SUM && n->ia[0] == (1 | 4 | 8)) db = i;
    }
    REAL_SHAPE(bx, true, 8, 3, 7, 7);
    assert_int_equal(g->n[bx].in[1], w);
    assert_int_equal(g->n[bx].ia[0], 2);
    assert_int_equal(g->n[bx].ia[1], 1);
    REAL_SHAPE(bw, false, 4, 3, 3, 3);
    assert_int_equal(g->n[bw].in[1], x);
    REAL_SHAPE(db, false, 4);
}

/* ------------------------------------------------------------------ pooling */

static void test_pool_shapes(void **st) {
    (void)st;
    int x = LEAF(true, 8, 6, 28, 28);
    Attrs k2 = {.i = {2}};
    REAL_SHAPE(op(OP_MAXPOOL2D, 1, &x, &k2, NULL), true, 8, 6, 14, 14); /* stride defaults to the kernel */
    REAL_SHAPE(op(OP_AVGPOOL2D, 1, &x, &k2, NULL), true, 8, 6, 14, 14);
    int x7 = LEAF(true, 8, 2, 7, 7);
    Attrs k3 = {.i = {3, 2, 1}};
    REAL_SHAPE(op(OP_MAXPOOL2D, 1, &x7, &k3, NULL), true, 8, 2, 4, 4);
    REAL_SHAPE(op(OP_MAXPOOL2D, 1, &x7, &k2, NULL), true, 8, 2, 3, 3); /* floor */
    int x3 = LEAF(false, 5, 6, 6);
    REAL_SHAPE(op(OP_AVGPOOL2D, 1, &x3, &k3, NULL), false, 5, 3, 3);
}

static void test_pool_errors(void **st) {
    (void)st;
    int x = LEAF(true, 8, 6, 4, 4);
    Attrs pad = {.i = {2, 2, 2}};
    assert_int_equal(op(OP_MAXPOOL2D, 1, &x, &pad, NULL), -1);
    assert_true(said("maxpool2d: kernel 2, stride 2, padding 2: need kernel >= 1, stride >= 1 and padding at most half the kernel"));
    Attrs big = {.i = {5}};
    assert_int_equal(op(OP_AVGPOOL2D, 1, &x, &big, NULL), -1);
    assert_true(said("avgpool2d: kernel 5 is larger than the padded input 4x4 (input [8, 6, 4, 4])"));
    int v = LEAF(true, 8, 16);
    Attrs k2 = {.i = {2}};
    assert_int_equal(op(OP_MAXPOOL2D, 1, &v, &k2, NULL), -1);
    assert_true(said("maxpool2d: input must be [N, C, H, W] or [C, H, W], got [8, 16]"));
}

static void test_pool_grad(void **st) {
    (void)st;
    int x = LEAF(true, 8, 2, 7, 7);
    g->n[x].flags |= NF_PARAM;
    Attrs k3 = {.i = {3, 2, 1}}, k2 = {.i = {2}};
    int mp = op(OP_MAXPOOL2D, 1, &x, &k3, NULL);
    int ap = op(OP_AVGPOOL2D, 1, &x, &k2, NULL);
    int s1 = op(OP_SUM, 1, &mp, NULL, NULL), s2 = op(OP_SUM, 1, &ap, NULL, NULL);
    int in[2] = {s1, s2};
    int loss = op(OP_ADD, 2, in, NULL, NULL);
    Model m = {.g = g, .loss = loss};
    int before = g->len;
    ad_run(&m, g, true, false);
    int mb = -1, ab = -1;
    for (int i = before; i < g->len; i++) {
        if (g->n[i].op == OP_MAXPOOL2D_BWD) mb = i;
        if (g->n[i].op == OP_AVGPOOL2D_BWD) ab = i;
    }
    REAL_SHAPE(mb, true, 8, 2, 7, 7);
    assert_int_equal(g->n[mb].in[1], x);
    assert_int_equal(g->n[mb].ia[1], 2);
    REAL_SHAPE(ab, true, 8, 2, 7, 7); /* 7x7 -> 3x3 -> back to 7x7 via ia3, ia4 */
    assert_int_equal(g->n[ab].ia[1], 2);
    assert_int_equal(g->n[ab].ia[3], 7);
}

/* ------------------------------------------------------------------ batch norm */

static int bn(int x, int64_t C) {
    int p[4];
    for (int k = 0; k < 4; k++) p[k] = LEAF(false, C);
    Attrs a = {.f = {1e-5, 0.1}};
    int in[5] = {x, p[0], p[1], p[2], p[3]};
    return op(OP_BATCHNORM, 5, in, &a, NULL);
}

static void test_batchnorm_shapes(void **st) {
    (void)st;
    int x4 = LEAF(true, 8, 3, 5, 5), x2 = LEAF(true, 8, 16);
    int b4 = bn(x4, 3), b2 = bn(x2, 16);
    REAL_SHAPE(b4, true, 8, 3, 5, 5);
    REAL_SHAPE(b2, true, 8, 16);
    /* no backward reads it: mean, invstd, scale only */
    assert_int_equal(op_info[OP_BATCHNORM].rule.aux(g, &g->n[b4]), 9);
    int in[2] = {b4, b4};
    int bw = op(OP_BATCHNORM_BWD, 2, in, NULL, NULL);
    REAL_SHAPE(bw, false, 2 * 3 + 8 * 75);
    assert_int_equal(op_info[OP_BATCHNORM].rule.aux(g, &g->n[b4]), 9 + 8 * 75);
    g->n[bw].flags |= NF_DEAD;
    assert_int_equal(op_info[OP_BATCHNORM].rule.aux(g, &g->n[b4]), 9);
}

static void test_batchnorm_errors(void **st) {
    (void)st;
    int x = LEAF(true, 8, 3, 5, 5);
    assert_int_equal(bn(x, 4), -1);
    assert_true(said("batchnorm: weight (gamma) must be [3] for input [8, 3, 5, 5], got [4]"));
    int v = LEAF(true, 8);
    assert_int_equal(bn(v, 8), -1);
    assert_true(said("batchnorm: input must be [N, C] or [N, C, ...], got [8]"));
}

static void test_batchnorm_grad(void **st) {
    (void)st;
    int x = LEAF(true, 8, 3, 5, 5);
    int p[4];
    for (int k = 0; k < 4; k++) p[k] = LEAF(false, 3);
    g->n[x].flags |= NF_PARAM;
    g->n[p[0]].flags |= NF_PARAM;
    g->n[p[1]].flags |= NF_PARAM;
    g->n[p[2]].flags |= NF_STATE;
    g->n[p[3]].flags |= NF_STATE;
    Attrs a = {.f = {1e-5, 0.1}};
    int in[5] = {x, p[0], p[1], p[2], p[3]};
    int y = op(OP_BATCHNORM, 5, in, &a, NULL);
    int sq = op(OP_SQUARE, 1, &y, NULL, NULL);
    int loss = op(OP_SUM, 1, &sq, NULL, NULL);
    Model m = {.g = g, .loss = loss};
    int before = g->len;
    ad_run(&m, g, true, false);
    int bw = -1, views = 0;
    for (int i = before; i < g->len; i++) {
        const Node *n = &g->n[i];
        if (n->op == OP_BATCHNORM_BWD) {
            bw = i;
            assert_int_equal(n->in[1], y);
        }
        if (n->op == OP_VIEW && bw >= 0 && n->in[0] == bw) {
            views++;
            if (n->ia[0] == 6) REAL_SHAPE(i, true, 8, 3, 5, 5);
            else if (n->ia[0] == 0 || n->ia[0] == 3) REAL_SHAPE(i, false, 3);
            else fail_msg("unexpected view offset %lld", (long long)n->ia[0]);
        }
    }
    REAL_SHAPE(bw, false, 6 + 600);
    assert_int_equal(views, 3);
    assert_int_equal(op_info[OP_BATCHNORM].rule.aux(g, &g->n[y]), 9 + 600);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_conv2d_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_conv2d_errors, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_conv2d_bwd_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_conv2d_aux, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_conv2d_grad, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_pool_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_pool_errors, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_pool_grad, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_batchnorm_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_batchnorm_errors, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_batchnorm_grad, setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
