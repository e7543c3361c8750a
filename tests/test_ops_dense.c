/* test_ops_dense.c -- shape rules (shapes, batched flags, diagnostics) and gradient
 * rules (the structure autodiff builds) of the dense ops in compiler/ops_dense.c. */
#include "test_util.h"

enum { B = 64 };

static int setup(void **state) { return tu_graph_setup(state, B, (Loc){"t.cdl", 3, 7}); }

static int op1(Op o, int x, Attrs at) { return op(o, 1, &x, &at, NULL); }
static int op2_(Op o, int a, int b) {
    int in[2] = {a, b};
    return op(o, 2, in, NULL, NULL);
}

/* ---- shape rules --------------------------------------------------------------- */

static void test_matmul_shapes(void **state) {
    (void)state;
    int x = real(SH(true, B, 784)), w = real(SH(false, 784, 256));
    int in[2] = {x, w};
    assert_shape(op(OP_MATMUL, 2, in, NULL, NULL), SH(true, B, 256));
    /* dW = g^T @ x: contraction over the batch, unbatched result */
    int gy = real(SH(true, B, 10));
    int t[2] = {gy, x};
    assert_shape(op(OP_MATMUL, 2, t, &(Attrs){.i = {1, 0}}, NULL), SH(false, 10, 784));
    /* x @ W2^T with W2 [256, 784] */
    int w2 = real(SH(false, 256, 784));
    int tb[2] = {x, w2};
    assert_shape(op(OP_MATMUL, 2, tb, &(Attrs){.i = {0, 1}}, NULL), SH(true, B, 256));
    /* x @ transpose(W2): the transpose folds into the flag (no copy) */
    int tw = op1(OP_TRANSPOSE, w2, (Attrs){.i = {1, 0}});
    int f[2] = {x, tw};
    int mf = op(OP_MATMUL, 2, f, NULL, NULL);
    assert_shape(mf, SH(true, B, 256));
    assert_int_equal(g->n[mf].in[1], w2);
    assert_true(g->n[mf].ia[0] == 0 && g->n[mf].ia[1] == 1);
    assert_int_equal(diag_error_count(), 0);

    int bad = real(SH(false, 785, 256));
    int e1[2] = {x, bad};
    assert_int_equal(op(OP_MATMUL, 2, e1, NULL, NULL), -1);
    assert_diag("t.cdl:3:7: error: matmul: inner dimensions differ: [64, 784] @ [785, 256]");
    int fixed = real(SH(false, 10, B));
    int e2[2] = {fixed, x};
    assert_int_equal(op(OP_MATMUL, 2, e2, NULL, NULL), -1);
    assert_diag("matmul: the batch dimension is contracted with a fixed dimension");
    int e3[2] = {w2, x};
    assert_int_equal(op(OP_MATMUL, 2, e3, &(Attrs){.i = {0, 1}}, NULL), -1);
    assert_diag("would become the result's columns");
    int v = real(SH(false, 784));
    int e4[2] = {v, w};
    assert_int_equal(op(OP_MATMUL, 2, e4, NULL, NULL), -1);
    assert_diag("matmul: operands must be 2-D, got [784] @ [784, 256]");
    assert_int_equal(diag_error_count(), 4);
}

static void test_linear_shapes(void **state) {
    (void)state;
    int x = real(SH(true, B, 784)), w = real(SH(false, 256, 784)), b = real(SH(false, 256));
    int in3[3] = {x, w, b};
    assert_shape(op(OP_LINEAR, 3, in3, NULL, NULL), SH(true, B, 256));
    int x3 = real(SH(true, B, 5, 784));
    int in2[2] = {x3, w};
    assert_shape(op(OP_LINEAR, 2, in2, NULL, NULL), SH(true, B, 5, 256));
    int v = real(SH(false, 784));
    int in1[2] = {v, w};
    assert_shape(op(OP_LINEAR, 2, in1, NULL, NULL), SH(false, 256));
    assert_int_equal(diag_error_count(), 0);

    int xb = real(SH(true, B, 783));
    int e1[2] = {xb, w};
    assert_int_equal(op(OP_LINEAR, 2, e1, NULL, NULL), -1);
    assert_diag("linear: input [64, 783] does not match the weight [256, 784]: expected [..., 784]");
    int bb = real(SH(false, 255));
    int e2[3] = {x, w, bb};
    assert_int_equal(op(OP_LINEAR, 3, e2, NULL, NULL), -1);
    assert_diag("linear: the bias must be [256] for the weight [256, 784], got [255]");
    int ids = leaf(SH(true, B, 784), DT_I32);
    int e3[2] = {ids, w};
    assert_int_equal(op(OP_LINEAR, 2, e3, NULL, NULL), -1);
    assert_diag("must be f32");
}

static void test_reduce_shapes(void **state) {
    (void)state;
    int x = real(SH(true, B, 10));
    assert_shape(op1(OP_SUM, x, (Attrs){.i = {2}}), SH(true, B));
    assert_shape(op1(OP_MEAN, x, (Attrs){.i = {1}}), SH(false, 10));
    int all = op1(OP_MEAN, x, (Attrs){.i = {0}});
    assert_int_equal(g->n[all].shape.rank, 0);
    assert_false(g->n[all].shape.batched);
    assert_int_equal(g->n[all].ia[0], 3);              /* normalized to the explicit mask */
    assert_shape(op1(OP_SUM, x, (Attrs){.i = {2, 1}}), SH(true, B, 1));
    assert_shape(op1(OP_SUM, x, (Attrs){.i = {1, 1}}), SH(false, 1, 10));
    int s0 = real((Shape){0});
    assert_int_equal(g->n[op1(OP_SUM, s0, (Attrs){0})].shape.rank, 0);
    assert_int_equal(diag_error_count(), 0);
    assert_int_equal(op1(OP_SUM, x, (Attrs){.i = {4}}), -1);
    assert_diag("sum: axis 2 is out of range for [64, 10] (rank 2)");
}

static void test_broadcast_reshape_shapes(void **state) {
    (void)state;
    int v = real(SH(false, 10));
    Shape to = SH(true, B, 10);
    assert_shape(op(OP_BROADCAST, 1, &v, NULL, &to), SH(true, B, 10));
    int xb = real(SH(true, B, 1));
    Shape to2 = SH(false, B, 3);
    assert_shape(op(OP_BROADCAST, 1, &xb, NULL, &to2), SH(true, B, 3));
    int w = real(SH(false, 3));
    Shape bad = SH(false, B, 4);
    assert_int_equal(op(OP_BROADCAST, 1, &w, NULL, &bad), -1);
    assert_diag("broadcast_to: cannot broadcast [3] to [64, 4]");
    Shape up = SH(false, 2, B, 1);
    assert_int_equal(op(OP_BROADCAST, 1, &xb, NULL, &up), -1);
    assert_diag("would move the batch dimension");

    int x = real(SH(true, B, 784));
    Shape img = SH(false, B, 28, 28);
    assert_shape(op(OP_RESHAPE, 1, &x, NULL, &img), SH(true, B, 28, 28));
    Shape inf = SH(false, -1, 28);
    assert_shape(op(OP_RESHAPE, 1, &x, NULL, &inf), SH(true, B * 28, 28));
    Shape flat = SH(false, B * 784);
    assert_shape(op(OP_RESHAPE, 1, &x, NULL, &flat), SH(true, B * 784));
    Shape t = SH(false, 784, B);
    assert_int_equal(op(OP_RESHAPE, 1, &x, NULL, &t), -1);
    assert_diag("reshape: [64, 784] to [784, 64] would mix the batch dimension into other dimensions");
    Shape wrong = SH(false, B, 785);
    assert_int_equal(op(OP_RESHAPE, 1, &x, NULL, &wrong), -1);
    assert_diag("reshape: cannot reshape [64, 784] (50176 elements) to [64, 785] (50240 elements)");
}

static void test_transpose_shapes(void **state) {
    (void)state;
    int x = real(SH(true, B, 3, 5));
    assert_shape(op1(OP_TRANSPOSE, x, (Attrs){.i = {0, 2, 1}}), SH(true, B, 5, 3));
    int m = real(SH(false, 3, 5));
    int t = op1(OP_TRANSPOSE, m, (Attrs){0});             /* default: reversed axes */
    assert_shape(t, SH(false, 5, 3));
    assert_true(g->n[t].ia[0] == 1 && g->n[t].ia[1] == 0);
    assert_int_equal(diag_error_count(), 0);
    assert_int_equal(op1(OP_TRANSPOSE, x, (Attrs){.i = {1, 0, 2}}), -1);
    assert_diag("transpose: transpose would move the batch dimension of [64, 3, 5] to axis 1");
    assert_int_equal(op1(OP_TRANSPOSE, x, (Attrs){.i = {0, 0, 1}}), -1);
    assert_diag("transpose: (0, 0, 1) is not a permutation of the 3 axes of [64, 3, 5]");
}

static void test_concat_shapes(void **state) {
    (void)state;
    int a = real(SH(true, B, 3)), b = real(SH(true, B, 5));
    int in[2] = {a, b};
    int c = op(OP_CONCAT, 2, in, &(Attrs){.i = {-1}}, NULL);
    assert_shape(c, SH(true, B, 8));
    assert_int_equal(g->n[c].ia[0], 1);
    int u = real(SH(false, 4, 3)), v = real(SH(false, 2, 3));
    int in0[2] = {u, v};
    assert_shape(op(OP_CONCAT, 2, in0, NULL, NULL), SH(false, 6, 3));
    assert_int_equal(diag_error_count(), 0);
    int d = real(SH(true, B, 3, 1));
    int e1[2] = {a, d};
    assert_int_equal(op(OP_CONCAT, 2, e1, &(Attrs){.i = {1}}, NULL), -1);
    assert_diag("concat: argument 2 has shape [64, 3, 1], expected [64, 3] except along axis 1");
    assert_int_equal(op(OP_CONCAT, 2, in, NULL, NULL), -1);
    assert_diag("concat: argument 2 has shape");
    int a2 = real(SH(true, B, 3));
    int e2[2] = {a, a2};
    assert_int_equal(op(OP_CONCAT, 2, e2, NULL, NULL), -1);
    assert_diag("concat: cannot concatenate along the batch dimension of [64, 3]");
    int f = real(SH(false, B, 3));
    int e3[2] = {a, f};
    assert_int_equal(op(OP_CONCAT, 2, e3, &(Attrs){.i = {1}}, NULL), -1);
    assert_diag("concat: arguments 1 [64, 3] and 2 [64, 3] disagree on the batch dimension "
                "(only argument 1 is batched)");
}

static void test_slice_shapes(void **state) {
    (void)state;
    int x = real(SH(true, B, 10, 7));
    int s = op1(OP_SLICE, x, (Attrs){.i = {1, 2, 8, 3}});
    assert_shape(s, SH(true, B, 2, 7));
    int i = op1(OP_SLICE, x, (Attrs){.i = {-2, -1, 0, 1, 1}});   /* x[:, -1] */
    assert_shape(i, SH(true, B, 7));
    assert_int_equal(g->n[i].ia[0], 1);
    assert_int_equal(g->n[i].ia[1], 9);
    assert_shape(op1(OP_SLICE, x, (Attrs){.i = {2, 0, INT64_MAX, 2}}), SH(true, B, 10, 4));
    /* along the batch axis: partial -> unbatched; full -> batched */
    assert_shape(op1(OP_SLICE, x, (Attrs){.i = {0, 0, 10, 1}}), SH(false, 10, 10, 7));
    assert_shape(op1(OP_SLICE, x, (Attrs){.i = {0, 0, B, 1}}), SH(true, B, 10, 7));
    /* moving index inside a loop: x[:, t] */
    assert_shape(op1(OP_SLICE, x, (Attrs){.i = {1, 0, 1, 1, 1, 1}}), SH(true, B, 7));
    int lab = leaf(SH(true, B, 10), DT_I32);
    int ls = op1(OP_SLICE, lab, (Attrs){.i = {1, 3, 0, 1, 1}});
    assert_shape(ls, SH(true, B));
    assert_int_equal(g->n[ls].dtype, DT_I32);
    assert_int_equal(diag_error_count(), 0);

    assert_int_equal(op1(OP_SLICE, x, (Attrs){.i = {1, 10, 0, 1, 1}}), -1);
    assert_diag("slice: index 10 is out of range for axis 1 of [64, 10, 7]");
    assert_int_equal(op1(OP_SLICE, x, (Attrs){.i = {1, 5, 5, 1}}), -1);
    assert_diag("slice: the slice 5:5:1 of axis 1 of [64, 10, 7] is empty");
    assert_int_equal(op1(OP_SLICE, x, (Attrs){.i = {3, 0, 1}}), -1);
    assert_diag("slice: axis 3 is out of range");

    /* slice_bwd: the hint is the sliced tensor's shape */
    Shape xs = g->n[x].shape;
    int gs = real(SH(true, B, 2, 7));
    assert_shape(op(OP_SLICE_BWD, 1, &gs, &(Attrs){.i = {1, 2, 8, 3}}, &xs), SH(true, B, 10, 7));
    assert_int_equal(op(OP_SLICE_BWD, 1, &gs, &(Attrs){.i = {1, 2, 9, 3}}, &xs), -1);
    assert_diag("slice_bwd: gradient [64, 2, 7] does not match the slice [64, 3, 7] of [64, 10, 7]");
}

static void test_softmax_embedding_shapes(void **state) {
    (void)state;
    int x = real(SH(true, B, 10));
    int y = op1(OP_SOFTMAX, x, (Attrs){0});
    assert_shape(y, SH(true, B, 10));
    assert_shape(op1(OP_LOG_SOFTMAX, x, (Attrs){0}), SH(true, B, 10));
    int in[2] = {x, y};
    assert_shape(op(OP_SOFTMAX_BWD, 2, in, NULL, NULL), SH(true, B, 10));
    int s = real((Shape){0});
    assert_int_equal(op1(OP_SOFTMAX, s, (Attrs){0}), -1);
    assert_diag("softmax: needs at least one axis, got a scalar");

    int ids = leaf(SH(true, B, 12), DT_I32), w = real(SH(false, 1000, 32));
    int ein[2] = {ids, w};
    int e = op(OP_EMBEDDING, 2, ein, NULL, NULL);
    assert_shape(e, SH(true, B, 12, 32));
    int gin[2] = {e, ids};
    assert_shape(op(OP_EMBEDDING_BWD, 2, gin, &(Attrs){.i = {1000}}, NULL), SH(false, 1000, 32));
    int fids = real(SH(true, B, 12));
    int bad[2] = {fids, w};
    assert_int_equal(op(OP_EMBEDDING, 2, bad, NULL, NULL), -1);
    assert_diag("embedding: ids must be i32, got f32 [64, 12]");
}

/* ---- gradient rules: the nodes autodiff builds ---------------------------------- */

static void test_linear_grad_structure(void **state) {
    (void)state;
    int x = real(SH(true, B, 5, 784));
    int p[2] = {param(SH(false, 256, 784)), param(SH(false, 256))};
    int in[3] = {x, p[0], p[1]};
    int y = op(OP_LINEAR, 3, in, NULL, NULL);
    int loss = op1(OP_MEAN, y, (Attrs){0});
    Model m = model_of(loss, p, 2);
    ad_run(&m, g, true, false);
    assert_int_equal(diag_error_count(), 0);
    const Node *dw = &g->n[g->pgrad[0]], *db = &g->n[g->pgrad[1]];
    assert_int_equal(dw->op, OP_MATMUL);
    assert_true(dw->ia[0] == 1 && dw->ia[1] == 0);         /* g^T @ x, no copies */
    assert_shape(g->pgrad[0], SH(false, 256, 784));
    assert_int_equal(db->op, OP_SUM);
    assert_shape(g->pgrad[1], SH(false, 256));
    /* the mean over a batched tensor divides by the runtime batch size */
    bool divides_by_nb = false;
    for (int i = loss + 1; i < g->len; i++)
        if (g->n[i].op == OP_BATCHSIZE) divides_by_nb = true;
    assert_true(divides_by_nb);
    free(m.params);
}

static void test_matmul_grad_structure(void **state) {
    (void)state;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            tu_teardown(NULL);
            setup(NULL);
            int p[2] = {param(ta ? SH(false, 4, 3) : SH(false, 3, 4)),
                        param(tb ? SH(false, 5, 4) : SH(false, 4, 5))};
            int c = op(OP_MATMUL, 2, p, &(Attrs){.i = {ta, tb}}, NULL);
            int loss = op1(OP_SUM, c, (Attrs){0});
            Model m = model_of(loss, p, 2);
            ad_run(&m, g, true, false);
            assert_int_equal(diag_error_count(), 0);
            for (int k = 0; k < 2; k++) {
                const Node *d = &g->n[g->pgrad[k]];
                assert_int_equal(d->op, OP_MATMUL);
                assert_shape(g->pgrad[k], g->n[p[k]].shape);
            }
            free(m.params);
        }
}

/* A gradient's GEMM parts accumulate as the tape's GEMMs do (beta = 1 onto the gradient
 * so far): a weight read by two matmuls gets GEMM, then GEMM over it, also when it is
 * the parameter's gradient; a product an add passes on is added, not folded into a
 * GEMM over the other part (the tape adds it: static == tape bit for bit). */
static void test_gemm_parts_accumulate(void **state) {
    (void)state;
    int x = real(SH(true, B, 8));
    int p[2] = {param(SH(false, 8, 8)), param(SH(false, 8, 8))};
    int y = op1(OP_TANH, op(OP_MATMUL, 2, (int[]){x, p[0]}, NULL, NULL), (Attrs){0});
    int z = op(OP_MATMUL, 2, (int[]){y, p[0]}, NULL, NULL);                 /* p0 read twice */
    int a = op1(OP_TANH, op(OP_MATMUL, 2, (int[]){x, p[1]}, NULL, NULL), (Attrs){0});
    int q = op(OP_MATMUL, 2, (int[]){op(OP_ADD, 2, (int[]){a, x}, NULL, NULL), p[1]}, NULL, NULL);
    int aa = op(OP_MUL, 2, (int[]){a, a}, NULL, NULL);
    Attrs all = {.i = {0}};
    int t[3] = {op1(OP_SUM, z, all), op1(OP_SUM, q, all), op1(OP_SUM, aa, all)};
    int loss = op(OP_ADD, 2, (int[]){op(OP_ADD, 2, t, NULL, NULL), t[2]}, NULL, NULL);
    g->n[loss].flags |= NF_LOSS;
    Model m = model_of(loss, p, 2);
    ad_run(&m, g, true, false);
    opt_run(g);
    assert_int_equal(diag_error_count(), 0);
    const Node *d0 = &g->n[g->pgrad[0]];
    assert_int_equal(d0->op, OP_MATMUL);              /* the second product over the first */
    assert_int_equal(d0->nin, 3);
    assert_int_equal(g->n[d0->in[2]].op, OP_MATMUL);
    /* a's gradient: the square's part plus the add's pass-through of q's product */
    int n3 = 0, pass = 0;
    for (int i = loss + 1; i < g->len; i++) {
        const Node *n = &g->n[i];
        if (n->flags & NF_DEAD) continue;
        if (n->op == OP_MATMUL && n->nin == 3) n3++;
        if (n->op == OP_ADD && n->nin == 2)
            for (int k = 0; k < 2; k++) pass += g->n[n->in[k]].op == OP_MATMUL && g->n[n->in[k]].ia[1] == 1 && g->n[n->in[k]].in[1] == p[1];
    }
    assert_int_equal(n3, 2);                          /* p0's, and p1's (q then a's matmul) */
    assert_int_equal(pass, 1);                        /* d(a + x) = G p1^T, added */
    free(m.params);
}

static void test_shape_op_grads(void **state) {
    (void)state;
    int p[1] = {param(SH(false, 4, 6))};
    int t = op1(OP_TRANSPOSE, p[0], (Attrs){.i = {1, 0}});
    int s = op1(OP_SLICE, t, (Attrs){.i = {0, 1, 5, 2}});
    int in[2] = {s, s};
    int c = op(OP_CONCAT, 2, in, &(Attrs){.i = {1}}, NULL);
    int sm = op1(OP_LOG_SOFTMAX, c, (Attrs){0});
    int loss = op1(OP_SUM, sm, (Attrs){0});
    Model m = model_of(loss, p, 1);
    ad_run(&m, g, true, false);
    assert_int_equal(diag_error_count(), 0);
    assert_shape(g->pgrad[0], SH(false, 4, 6));
    int n_slice_bwd = 0, n_slice = 0;
    for (int i = loss + 1; i < g->len; i++) {
        n_slice_bwd += g->n[i].op == OP_SLICE_BWD;
        n_slice += g->n[i].op == OP_SLICE;
    }
    assert_int_equal(n_slice_bwd, 1);
    assert_int_equal(n_slice, 2);                        /* one per concat input */
    assert_int_equal(g->n[g->pgrad[0]].op, OP_TRANSPOSE);
    free(m.params);
}

static void test_mean_embedding_grads(void **state) {
    (void)state;
    int ids = leaf(SH(true, B, 5), DT_I32);
    int p[2] = {param(SH(false, 100, 8)), param(SH(false, 8))};
    int e = op2_(OP_EMBEDDING, ids, p[0]);
    int m = op1(OP_MEAN, e, (Attrs){.i = {6}});            /* over the unbatched axes: [B] */
    int sb = op1(OP_SUM, p[1], (Attrs){0});
    int in[2] = {m, sb};
    int loss = op1(OP_SUM, op(OP_MUL, 2, in, NULL, NULL), (Attrs){0});
    Model md = model_of(loss, p, 2);
    ad_run(&md, g, true, false);
    assert_int_equal(diag_error_count(), 0);
    const Node *dw = &g->n[g->pgrad[0]];
    assert_int_equal(dw->op, OP_EMBEDDING_BWD);
    assert_int_equal(dw->ia[0], 100);
    assert_shape(g->pgrad[0], SH(false, 100, 8));
    int batchsize = 0, scale = 0;
    for (int i = loss + 1; i < g->len; i++) {
        batchsize += g->n[i].op == OP_BATCHSIZE;
        scale += g->n[i].op == OP_CONST && g->n[i].shape.rank == 0 && g->n[i].fa[0] == 1.0 / 40;
    }
    assert_int_equal(batchsize, 0);                      /* no runtime count needed */
    assert_int_equal(scale, 1);                          /* 1 / (5 * 8) */
    free(md.params);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_matmul_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_linear_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_reduce_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_broadcast_reshape_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_transpose_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_concat_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_slice_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_softmax_embedding_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_linear_grad_structure, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_matmul_grad_structure, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_gemm_parts_accumulate, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_shape_op_grads, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_mean_embedding_grads, setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
