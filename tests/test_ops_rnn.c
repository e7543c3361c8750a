/* test_ops_rnn.c -- compiler rules of compiler/ops_rnn.c: LSTM_ACT / GRU_ACT and their
 * backward helpers, VIEW / VIEW_BWD: shapes, batched flags, diagnostics, aux sizes, and
 * the packed-result unpacking the gradient rules build (view offsets counted with the
 * compiled batch). */
#include "test_util.h"

static int setup(void **st) { return tu_graph_setup(st, 4, (Loc){"r.cdl", 9, 2}); }

/* The view of `packed` at offset off made by autodiff after node `after`, or -1. */
static int find_view(int after, int packed, int64_t off) {
    for (int i = after; i < g->len; i++)
        if (g->n[i].op == OP_VIEW && g->n[i].in[0] == packed && g->n[i].ia[0] == off) return i;
    return -1;
}

static int find_op(int after, Op op) {
    for (int i = after; i < g->len; i++)
        if (g->n[i].op == op) return i;
    return -1;
}

/* ------------------------------------------------------------------ LSTM */

static void test_lstm_shapes(void **st) {
    (void)st;
    int gates = LEAF(true, 4, 12), c = LEAF(true, 4, 3);
    int in[2] = {gates, c};
    int y = op(OP_LSTM_ACT, 2, in, NULL, NULL);
    SHAPE(y, false, 2, 4, 3); /* packed (h', c'): dim 0 is the part, not the batch */
    assert_int_equal(op_info[OP_LSTM_ACT].rule.aux(g, &g->n[y]), 5 * 4 * 3);
    int bin[4] = {c, c, c, y};
    SHAPE(op(OP_LSTM_ACT_BWD, 4, bin, NULL, NULL), false, 5 * 4 * 3);
}

static void test_lstm_errors(void **st) {
    (void)st;
    int gates = LEAF(true, 4, 10), c = LEAF(true, 4, 3);
    int in[2] = {gates, c};
    assert_int_equal(op(OP_LSTM_ACT, 2, in, NULL, NULL), -1);
    assert_true(said("r.cdl:9:2: error: lstm_act: gates must be [4, 12] (4 x hidden 3), got [4, 10]"));
    int c3 = LEAF(true, 4, 3, 1);
    in[1] = c3;
    assert_int_equal(op(OP_LSTM_ACT, 2, in, NULL, NULL), -1);
    assert_true(said("lstm_act: c must be 2-D [B, H], got [4, 3, 1]"));
}

static void test_lstm_grad(void **st) {
    (void)st;
    int gates = LEAF(true, 4, 12), c = LEAF(true, 4, 3);
    g->n[gates].flags |= NF_PARAM;
    g->n[c].flags |= NF_PARAM;
    int in[2] = {gates, c};
    int y = op(OP_LSTM_ACT, 2, in, NULL, NULL);
    /* as the front end does: h' and c' are views of the packed result */
    Shape hs = g->n[c].shape;
    Attrs a0 = {.i = {0}}, a1 = {.i = {12}};
    int h = op(OP_VIEW, 1, &y, &a0, &hs), cn = op(OP_VIEW, 1, &y, &a1, &hs);
    SHAPE(h, true, 4, 3);
    SHAPE(cn, true, 4, 3);
    int m2[2] = {h, cn};
    int prod = op(OP_MUL, 2, m2, NULL, NULL);
    int loss = op(OP_SUM, 1, &prod, NULL, NULL);
    Model m = {.g = g, .loss = loss};
    int before = g->len;
    ad_run(&m, g, true, false);
    /* each view's gradient scatters into a packed-shaped buffer (VIEW_BWD), but the
     * backward takes the parts' gradients before scattering: dh' = d prod * c' */
    int vb = find_op(before, OP_VIEW_BWD);
    SHAPE(vb, false, 2, 4, 3);
    int bw = find_op(before, OP_LSTM_ACT_BWD);
    SHAPE(bw, false, 60);
    for (int k = 0; k < 2; k++) {
        SHAPE(g->n[bw].in[k], true, 4, 3);
        assert_int_equal(g->n[g->n[bw].in[k]].op, OP_MUL);
    }
    assert_int_equal(g->n[bw].in[2], c);
    assert_int_equal(g->n[bw].in[3], y);
    SHAPE(find_view(before, bw, 0), true, 4, 12);  /* dgates */
    SHAPE(find_view(before, bw, 48), true, 4, 3);  /* dc at B*4H */
}

/* ------------------------------------------------------------------ GRU */

static void test_gru_shapes(void **st) {
    (void)st;
    int gi = LEAF(true, 4, 15), gh = LEAF(true, 4, 15), h = LEAF(false, 4, 5);
    int in[3] = {gi, gh, h};
    int y = op(OP_GRU_ACT, 3, in, NULL, NULL);
    SHAPE(y, true, 4, 5);
    assert_int_equal(op_info[OP_GRU_ACT].rule.aux(g, &g->n[y]), 3 * 4 * 5);
    int bin[4] = {y, gh, h, y};
    SHAPE(op(OP_GRU_ACT_BWD, 4, bin, NULL, NULL), false, 7 * 4 * 5);
    int bad = LEAF(true, 4, 10);
    in[1] = bad;
    assert_int_equal(op(OP_GRU_ACT, 3, in, NULL, NULL), -1);
    assert_true(said("gru_act: gh must be [4, 15] (3 x hidden 5), got [4, 10]"));
}

static void test_gru_grad(void **st) {
    (void)st;
    int gi = LEAF(true, 4, 15), gh = LEAF(true, 4, 15), h = LEAF(true, 4, 5);
    g->n[gi].flags |= NF_PARAM;
    g->n[gh].flags |= NF_PARAM;
    g->n[h].flags |= NF_PARAM;
    int in[3] = {gi, gh, h};
    int y = op(OP_GRU_ACT, 3, in, NULL, NULL);
    int sq = op(OP_SQUARE, 1, &y, NULL, NULL);
    int loss = op(OP_SUM, 1, &sq, NULL, NULL);
    Model m = {.g = g, .loss = loss};
    int before = g->len;
    ad_run(&m, g, true, false);
    int bw = find_op(before, OP_GRU_ACT_BWD);
    SHAPE(bw, false, 140);
    assert_int_equal(g->n[bw].in[1], gh);
    assert_int_equal(g->n[bw].in[2], h);
    assert_int_equal(g->n[bw].in[3], y);
    SHAPE(find_view(before, bw, 0), true, 4, 15);
    SHAPE(find_view(before, bw, 60), true, 4, 15);
    SHAPE(find_view(before, bw, 120), true, 4, 5);
}

/* ------------------------------------------------------------------ VIEW */

static void test_view(void **st) {
    (void)st;
    int x = LEAF(false, 2, 4, 3);
    Shape s = {.rank = 2, .batched = true, .d = {4, 3}};
    Attrs a = {.i = {12}};
    SHAPE(op(OP_VIEW, 1, &x, &a, &s), true, 4, 3);
    Attrs over = {.i = {13}};
    assert_int_equal(op(OP_VIEW, 1, &x, &over, &s), -1);
    assert_true(said("view: [4, 3] at offset 13 does not fit in [2, 4, 3]"));
    Attrs neg = {.i = {-1}};
    assert_int_equal(op(OP_VIEW, 1, &x, &neg, &s), -1);
    /* view_bwd: the gradient must fit in the hint */
    int gy = LEAF(true, 4, 3);
    Shape p = {.rank = 3, .d = {2, 4, 3}};
    SHAPE(op(OP_VIEW_BWD, 1, &gy, &a, &p), false, 2, 4, 3);
    assert_int_equal(op(OP_VIEW_BWD, 1, &gy, &over, &p), -1);
    assert_true(said("view_bwd: gradient [4, 3] at offset 13 does not fit in [2, 4, 3]"));
}

static void test_view_grad(void **st) {
    (void)st;
    int x = LEAF(false, 2, 4, 3);
    g->n[x].flags |= NF_PARAM;
    Shape s = {.rank = 2, .batched = true, .d = {4, 3}};
    Attrs a = {.i = {12}};
    int v = op(OP_VIEW, 1, &x, &a, &s);
    int sq = op(OP_SQUARE, 1, &v, NULL, NULL);
    int loss = op(OP_SUM, 1, &sq, NULL, NULL);
    Model m = {.g = g, .loss = loss};
    int before = g->len;
    ad_run(&m, g, true, false);
    int vb = find_op(before, OP_VIEW_BWD);
    SHAPE(vb, false, 2, 4, 3);
    assert_int_equal(g->n[vb].ia[0], 12);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lstm_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_lstm_errors, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_lstm_grad, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_gru_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_gru_grad, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_view, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_view_grad, setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
