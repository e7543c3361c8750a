/* test_ops_ew.c -- shape rules (shapes, batched flags, diagnostics) and gradient rules
 * (the nodes autodiff builds) of the elementwise ops (compiler/ops_ew.c) and the
 * losses (compiler/ops_loss.c). */
#include "test_util.h"

enum { B = 64 };

/* Leaves take their shape from the hint; stand in for the framework's leaf rules if
 * they are not in the tree yet. */
static bool leaf_hint(Graph *gr, Node *n) {
    (void)gr;
    (void)n;
    return true;
}

static int setup(void **state) {
    tu_graph_setup(state, B, (Loc){"t.cdl", 4, 9});
    if (!op_info[OP_PARAM].rule.shape) op_info[OP_PARAM].rule.shape = leaf_hint;
    if (!op_info[OP_INPUT].rule.shape) op_info[OP_INPUT].rule.shape = leaf_hint;
    return 0;
}

static const Shape scalar = {0};

static int labels(Shape s) { return leaf(s, DT_I32); }

static int op1a(Op o, int a, Attrs at) { return op(o, 1, &a, &at, NULL); }
static int op2a(Op o, int a, int b, Attrs at) {
    int in[2] = {a, b};
    return op(o, 2, in, &at, NULL);
}
static int op2(Op o, int a, int b) { return op2a(o, a, b, (Attrs){0}); }

/* ------------------------------------------------------------------ shapes */

static void test_leaf_shapes(void **state) {
    (void)state;
    Shape s = SH(true, B, 20);
    assert_shape(op(OP_CONST, 0, NULL, &(Attrs){.f = {2.5}}, &s), s);
    assert_shape(op(OP_RANDN, 0, NULL, &(Attrs){.i = {[7] = 3}}, &s), s);
    assert_shape(op(OP_RAND, 0, NULL, NULL, &scalar), scalar);
    int bs = op(OP_BATCHSIZE, 0, NULL, NULL, NULL);
    assert_shape(bs, scalar);
    assert_int_equal(g->n[bs].dtype, DT_REAL);
    int ci = ir_add(g, OP_CONST, here, 0, NULL, NULL, &s, DT_I32);       /* i32 constants stay i32 */
    assert_int_equal(g->n[ci].dtype, DT_I32);
    assert_int_equal(diag_error_count(), 0);
}

static void test_binary_shapes(void **state) {
    (void)state;
    int x = real(SH(true, B, 10)), bias = param(SH(false, 10)), w = param(SH(false, 5, 1));
    int c = op(OP_CONST, 0, NULL, &(Attrs){.f = {0.5}}, &scalar);
    assert_shape(op2(OP_ADD, x, bias), SH(true, B, 10));            /* row broadcast keeps the batch */
    assert_shape(op2(OP_MUL, c, x), SH(true, B, 10));               /* scalar */
    assert_shape(op2(OP_SUB, bias, x), SH(true, B, 10));
    assert_shape(op2(OP_DIV, w, bias), SH(false, 5, 10));           /* outer */
    assert_shape(op2(OP_MAXIMUM, x, x), SH(true, B, 10));
    assert_shape(op2(OP_MINIMUM, c, c), scalar);
    int img = real(SH(true, B, 3, 8, 8)), cb = param(SH(false, 3, 1, 1));
    assert_shape(op2(OP_ADD, img, cb), SH(true, B, 3, 8, 8));
    int col = real(SH(true, B, 1));
    assert_shape(op2(OP_SUB, x, col), SH(true, B, 10));
    assert_int_equal(diag_error_count(), 0);
}

static void test_binary_errors(void **state) {
    (void)state;
    int x = real(SH(true, B, 10)), v = param(SH(false, 7));
    assert_true(op2(OP_ADD, x, v) < 0);
    assert_diag("t.cdl:4:9: error: add: shapes do not broadcast: [64, 10] and [7]");
    int y = labels(SH(true, B));
    assert_true(op2(OP_MUL, x, y) < 0);
    assert_diag("mul: argument 2 must be f32, got i32");
    int z = param(SH(false, 3, 1, 1));
    assert_true(op2(OP_DIV, x, z) < 0);
    assert_diag("div: broadcasting [64, 10] to [3, 64, 10] would move its batch axis away from axis 0");
    assert_int_equal(diag_error_count(), 3);
}

static void test_unary_shapes(void **state) {
    (void)state;
    int x = real(SH(true, B, 3, 4));
    const Op ops[] = {OP_NEG, OP_EXP, OP_LOG, OP_SQRT, OP_ABS, OP_SQUARE, OP_POWS, OP_RELU, OP_LEAKY_RELU,
                      OP_SIGMOID, OP_TANH, OP_GELU, OP_SOFTPLUS, OP_ELU, OP_STOP_GRAD};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++)
        assert_shape(op1a(ops[k], x, (Attrs){.f = {2}}), SH(true, B, 3, 4));
    assert_shape(op1a(OP_CLAMP, x, (Attrs){.f = {-1, 1}}), SH(true, B, 3, 4));
    assert_shape(op1a(OP_DROPOUT, x, (Attrs){.f = {0.5}}), SH(true, B, 3, 4));
    int y = labels(SH(true, B));
    assert_shape(op1a(OP_STOP_GRAD, y, (Attrs){0}), SH(true, B));   /* any dtype */
    assert_int_equal(diag_error_count(), 0);
    assert_true(op1a(OP_CLAMP, x, (Attrs){.f = {2, 1}}) < 0);
    assert_diag("clamp: min 2 is greater than max 1");
    assert_true(op1a(OP_DROPOUT, x, (Attrs){.f = {1.5}}) < 0);
    assert_diag("dropout: p must be in [0, 1], got 1.5");
    assert_true(op1a(OP_RELU, y, (Attrs){0}) < 0);
    assert_diag("relu: argument 1 must be f32, got i32");
}

static void test_bwd_helper_shapes(void **state) {
    (void)state;
    int gr = real(SH(true, B, 10)), x = real(SH(true, B, 10)), b = param(SH(false, 10));
    assert_shape(op2(OP_RELU_BWD, gr, x), SH(true, B, 10));
    assert_shape(op2a(OP_CLAMP_BWD, gr, x, (Attrs){.f = {0, 1}}), SH(true, B, 10));
    int dr = op1a(OP_DROPOUT, x, (Attrs){.f = {0.1}});
    assert_shape(op2a(OP_DROPOUT_BWD, gr, dr, (Attrs){.f = {0.1}}), SH(true, B, 10));
    int in[3] = {gr, x, b};
    assert_shape(op(OP_MAXMIN_BWD, 3, in, &(Attrs){.i = {1}}, NULL), SH(true, B, 10));
    assert_int_equal(diag_error_count(), 0);
    assert_true(op2(OP_TANH_BWD, gr, b) < 0);
    assert_diag("tanh_bwd: input 2 has shape [10], the gradient [64, 10]");
}

static void test_loss_shapes(void **state) {
    (void)state;
    int logits = real(SH(true, B, 10)), y = labels(SH(true, B)), t = real(SH(true, B, 10));
    int ce = op2a(OP_CROSS_ENTROPY, logits, y, (Attrs){.f = {0.1}});
    assert_shape(ce, scalar);
    assert_shape(op2a(OP_NLL, logits, y, (Attrs){.i = {RED_SUM}}), scalar);
    int seq = real(SH(true, B, 7, 30)), ys = labels(SH(true, B, 7));
    assert_shape(op2(OP_CROSS_ENTROPY, seq, ys), scalar);          /* [..., C] with labels [...] */
    const Op pair[] = {OP_MSE, OP_L1, OP_BCE, OP_BCE_LOGITS, OP_KL_NORMAL};
    for (size_t k = 0; k < sizeof pair / sizeof pair[0]; k++) assert_shape(op2(pair[k], logits, t), scalar);
    assert_shape(op2a(OP_HUBER, logits, t, (Attrs){.f = {1.0}}), scalar);
    assert_int_equal(diag_error_count(), 0);

    int y2 = labels(SH(false, 5));
    assert_true(op2(OP_CROSS_ENTROPY, logits, y2) < 0);
    assert_diag("cross_entropy: labels [5] do not match scores [64, 10] (want the scores' shape without the class axis)");
    assert_true(op2(OP_NLL, logits, t) < 0);
    assert_diag("nll: labels must be i32, got f32 [64, 10]");
    assert_true(op2a(OP_CROSS_ENTROPY, logits, y, (Attrs){.f = {1.5}}) < 0);
    assert_diag("cross_entropy: label_smoothing must be in [0, 1], got 1.5");
    int v = real(SH(true, B, 9));
    assert_true(op2(OP_MSE, logits, v) < 0);
    assert_diag("mse: shapes differ: [64, 10] and [64, 9]");
    assert_true(op2a(OP_HUBER, logits, t, (Attrs){.f = {0}}) < 0);
    assert_diag("huber: delta must be positive, got 0");
    assert_true(op2(OP_KL_NORMAL, logits, v) < 0);
    assert_diag("kl_normal: mu [64, 10] and logvar [64, 9] differ");
    assert_true(op2a(OP_L1, logits, t, (Attrs){.i = {5}}) < 0);
    assert_diag("l1: reduction must be mean, sum or none");
}

/* reduce="none": a value a row (class losses: the labels' shape, kl_normal: [dim 0]) or
 * an element (pair losses), batched as the operands; an optional row weight. */
static void test_loss_none_shapes(void **state) {
    (void)state;
    const Attrs none = {.i = {RED_NONE}};
    int seq = real(SH(true, B, 7, 30)), ys = labels(SH(true, B, 7)), w = real(SH(true, B, 7));
    assert_shape(op2a(OP_CROSS_ENTROPY, seq, ys, none), SH(true, B, 7));
    int in[3] = {seq, ys, w};
    assert_shape(op(OP_NLL, 3, in, &none, NULL), SH(true, B, 7));
    assert_shape(op(OP_CROSS_ENTROPY, 3, in, &(Attrs){.i = {RED_MEAN, 0, 1, -100}}, NULL), scalar);
    int a = real(SH(true, B, 10)), b = real(SH(true, B, 10));
    assert_shape(op2a(OP_MSE, a, b, none), SH(true, B, 10));
    assert_shape(op2a(OP_KL_NORMAL, a, b, none), SH(true, B));
    int p = real(SH(false, 4, 3)), q = real(SH(false, 4, 3));
    assert_shape(op2a(OP_L1, p, q, none), SH(false, 4, 3));
    assert_int_equal(diag_error_count(), 0);
    int wc = real(SH(false, 30));
    int bad[3] = {seq, ys, wc};
    assert_true(op(OP_CROSS_ENTROPY, 3, bad, &none, NULL) < 0);
    assert_diag("cross_entropy: row_weight [30] must have the labels' shape [64, 7] (one weight a row; weight= is "
                "PyTorch's per-class weight)");
    /* ia4 = 1: the last input is the per-class weight [C] (PyTorch's weight=) */
    assert_shape(op(OP_CROSS_ENTROPY, 3, bad, &(Attrs){.i = {RED_MEAN, 0, 0, 0, 1}}, NULL), scalar);
    int full[4] = {seq, ys, w, wc};
    assert_shape(op(OP_NLL, 4, full, &(Attrs){.i = {RED_NONE, 0, 0, 0, 1}}, NULL), SH(true, B, 7));
    int wrong[3] = {seq, ys, real(SH(false, 7))};
    assert_true(op(OP_CROSS_ENTROPY, 3, wrong, &(Attrs){.i = {RED_SUM, 0, 0, 0, 1}}, NULL) < 0);
    assert_diag("cross_entropy: weight [7] must be [30], one per class (PyTorch's weight=; row_weight= weights rows)");
    int v = real(SH(false, 6));
    assert_true(op2a(OP_KL_NORMAL, v, v, none) < 0);
    assert_diag("kl_normal: reduce=\"none\" gives one value a row (dim 0) and needs operands of rank >= 2, got [6]");
}

static void test_loss_bwd_shapes(void **state) {
    (void)state;
    int logits = real(SH(true, B, 10)), y = labels(SH(true, B)), t = real(SH(true, B, 10));
    int ce = op2(OP_CROSS_ENTROPY, logits, y);
    int gs = op(OP_CONST, 0, NULL, &(Attrs){.f = {1}}, &scalar);
    int in[3] = {gs, y, ce};
    assert_shape(op(OP_CROSS_ENTROPY_BWD, 3, in, NULL, NULL), SH(true, B, 10));   /* from the forward */
    Shape h = SH(true, B, 10);
    assert_shape(op(OP_CROSS_ENTROPY_BWD, 3, in, NULL, &h), SH(true, B, 10));     /* from the hint */
    assert_shape(op2a(OP_NLL_BWD, gs, y, (Attrs){.i = {RED_MEAN, 10}}), SH(true, B, 10));
    int v = real(SH(false, 3));
    int in2[3] = {gs, t, v};
    assert_shape(op(OP_LOSS_BWD, 3, in2, &(Attrs){.i = {0, OP_MSE}}, NULL), SH(true, B, 10));
    assert_shape(op(OP_LOSS_BWD_B, 3, in2, &(Attrs){.i = {0, OP_MSE}}, NULL), SH(false, 3));
    assert_int_equal(diag_error_count(), 0);
    assert_true(op(OP_LOSS_BWD, 3, in2, &(Attrs){.i = {0, OP_RELU}}, NULL) < 0);
    assert_diag("loss_bwd: ia1 =");
}

/* ------------------------------------------------------------------ gradient rules */

/* How many nodes with op o autodiff appended after node `from`. */
static int count_after(int from, Op o) {
    int c = 0;
    for (int i = from + 1; i < g->len; i++) c += g->n[i].op == o;
    return c;
}

static int sum_all(int x) { return op1a(OP_SUM, x, (Attrs){0}); }

static void test_grad_activations(void **state) {
    (void)state;
    const struct { Op f, bwd; } t[] = {
        {OP_RELU, OP_RELU_BWD}, {OP_LEAKY_RELU, OP_LEAKY_RELU_BWD}, {OP_SIGMOID, OP_SIGMOID_BWD},
        {OP_TANH, OP_TANH_BWD}, {OP_GELU, OP_GELU_BWD}, {OP_SIN, OP_ACT_BWD}, {OP_ELU, OP_ELU_BWD}, {OP_CLAMP, OP_CLAMP_BWD},
    };
    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
        tu_teardown(NULL);
        setup(NULL);
        int p[1] = {param(SH(false, 4, 5))};
        int y = op1a(t[k].f, p[0], (Attrs){.f = {-0.5, 0.5}});
        int loss = sum_all(y);
        Model m = model_of(loss, p, 1);
        ad_run(&m, g, true, false);
        assert_int_equal(diag_error_count(), 0);
        const Node *d = &g->n[g->pgrad[0]];
        assert_int_equal(d->op, t[k].bwd);
        assert_shape(g->pgrad[0], SH(false, 4, 5));
        /* relu's backward reads its output (so relu can run in place, opt_inplace);
         * gelu's the forward node, whose aux keeps the derivative (GELU_BWD) */
        bool uses_y = t[k].f == OP_SIGMOID || t[k].f == OP_TANH || t[k].f == OP_RELU || t[k].f == OP_GELU;
        assert_int_equal(d->in[1], uses_y ? y : p[0]);
        if (d->op == OP_ACT_BWD) assert_int_equal(d->ia[0], t[k].f);           /* a table activation's */
        else if (d->op != OP_GELU_BWD) assert_true(d->fa[0] == g->n[y].fa[0] && d->fa[1] == g->n[y].fa[1]);   /* attrs carried */
        free(m.params);
    }
}

static void test_grad_binary_broadcast(void **state) {
    (void)state;
    int x = real(SH(true, B, 10));
    int p[2] = {param(SH(false, 10)), param(SH(false, 10))};
    int a = op2(OP_MUL, x, p[0]);
    int b = op2(OP_DIV, a, p[1]);
    int c = op2(OP_MAXIMUM, b, p[0]);
    int loss = sum_all(c);
    Model m = model_of(loss, p, 2);
    ad_run(&m, g, true, false);
    assert_int_equal(diag_error_count(), 0);
    for (int k = 0; k < 2; k++) assert_shape(g->pgrad[k], SH(false, 10));   /* summed over the batch */
    assert_int_equal(count_after(loss, OP_MAXMIN_BWD), 1);
    assert_true(count_after(loss, OP_SUM) >= 2);
    free(m.params);
}

static void test_grad_unary_compositions(void **state) {
    (void)state;
    const Op ops[] = {OP_NEG, OP_EXP, OP_LOG, OP_SQRT, OP_ABS, OP_SQUARE, OP_POWS, OP_SOFTPLUS, OP_SUB};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        tu_teardown(NULL);
        setup(NULL);
        int p[1] = {param(SH(false, 3, 4))};
        int y = ops[k] == OP_SUB ? op2(OP_SUB, p[0], p[0]) : op1a(ops[k], p[0], (Attrs){.f = {1.5}});
        int loss = sum_all(y);
        Model m = model_of(loss, p, 1);
        ad_run(&m, g, true, false);
        assert_int_equal(diag_error_count(), 0);
        assert_true(g->pgrad[0] > loss);
        assert_shape(g->pgrad[0], SH(false, 3, 4));
        free(m.params);
    }
    /* pow with p = 0 is constant: no gradient reaches the parameter through it */
    tu_teardown(NULL);
    setup(NULL);
    int p[1] = {param(SH(false, 3))};
    int y = op1a(OP_POWS, p[0], (Attrs){.f = {0}});
    int loss = sum_all(op2(OP_ADD, y, p[0]));
    Model m = model_of(loss, p, 1);
    ad_run(&m, g, true, false);
    assert_int_equal(count_after(loss, OP_POWS), 0);
    free(m.params);
}

static void test_grad_dropout_keeps_stream(void **state) {
    (void)state;
    int p[1] = {param(SH(false, 8))};
    Attrs at = {.f = {0.25}};
    at.i[7] = 17;
    int y = op1a(OP_DROPOUT, p[0], at);
    int loss = sum_all(y);
    Model m = model_of(loss, p, 1);
    ad_run(&m, g, true, false);
    const Node *d = &g->n[g->pgrad[0]];
    assert_int_equal(d->op, OP_DROPOUT_BWD);
    assert_int_equal(d->nin, 2);
    assert_int_equal(d->in[1], y); /* the forward node: its aux holds the kept mask */
    assert_int_equal(d->ia[7], 17);
    assert_true(d->fa[0] == 0.25);
    free(m.params);
}

static void test_grad_stop_gradient(void **state) {
    (void)state;
    int p[1] = {param(SH(false, 8))};
    int s = op1a(OP_STOP_GRAD, p[0], (Attrs){0});
    int loss = sum_all(op2(OP_MUL, s, p[0]));
    Model m = model_of(loss, p, 1);
    ad_run(&m, g, true, false);
    assert_int_equal(diag_error_count(), 0);
    const Node *d = &g->n[g->pgrad[0]];            /* only the direct path: g * s */
    assert_int_equal(d->op, OP_MUL);
    assert_int_equal(count_after(loss, OP_ADD), 0);
    free(m.params);
}

static void test_grad_losses(void **state) {
    (void)state;
    int p[2] = {param(SH(false, 6, 5)), param(SH(false, 6, 5))};
    int y = labels(SH(false, 6));
    int ce = op2a(OP_CROSS_ENTROPY, p[0], y, (Attrs){.i = {RED_SUM}, .f = {0.1}});
    int mse = op2(OP_MSE, p[0], p[1]);
    int kl = op2(OP_KL_NORMAL, p[0], p[1]);
    int nll = op2(OP_NLL, p[1], y);
    int loss = op2(OP_ADD, op2(OP_ADD, ce, mse), op2(OP_ADD, kl, nll));
    Model m = model_of(loss, p, 2);
    ad_run(&m, g, true, false);
    assert_int_equal(diag_error_count(), 0);
    for (int k = 0; k < 2; k++) assert_shape(g->pgrad[k], SH(false, 6, 5));
    int ce_bwd = -1, nll_bwd = -1, n_loss_bwd = 0, n_loss_bwd_b = 0;
    for (int i = loss + 1; i < g->len; i++) {
        const Node *n = &g->n[i];
        if (n->op == OP_CROSS_ENTROPY_BWD) ce_bwd = i;
        if (n->op == OP_NLL_BWD) nll_bwd = i;
        n_loss_bwd += n->op == OP_LOSS_BWD;
        n_loss_bwd_b += n->op == OP_LOSS_BWD_B;
    }
    assert_true(ce_bwd > 0 && nll_bwd > 0);
    assert_int_equal(g->n[ce_bwd].in[2], ce);              /* reads the forward's saved probs */
    assert_true(g->n[ce_bwd].ia[0] == RED_SUM && g->n[ce_bwd].fa[0] == 0.1);
    assert_int_equal(g->n[nll_bwd].ia[1], 5);
    assert_shape(nll_bwd, SH(false, 6, 5));
    assert_int_equal(n_loss_bwd, 2);                       /* mse, kl: d/da */
    assert_int_equal(n_loss_bwd_b, 2);                     /*          d/db */
    free(m.params);
}

/* ------------------------------------------------------------------ emitters */

/* Compile CDL text to C (f32) and return the .c text. */
static const char *emit_text(const char *src) {
    Model *m = elab_text("t.cdl", src, strlen(src), 0, NULL);
    if (!m) fail_msg("elaboration failed: %s", diags());
    char *cbuf = NULL, *hbuf = NULL;
    size_t clen = 0, hlen = 0;
    FILE *cf = open_memstream(&cbuf, &clen), *hf = open_memstream(&hbuf, &hlen);
    emit_c(pipeline_build(m, 4, false), cf, hf, false, "t.h");
    fclose(cf);
    fclose(hf);
    const char *c = arena_strdup(cc_arena, cbuf);
    free(cbuf);
    free(hbuf);
    return c;
}
#define assert_emits(c, s)                                                          \
    do {                                                                            \
        if (!strstr((c), (s))) fail_msg("generated code lacks: %s", (s));           \
    } while (0)

static void test_emit_forms(void **state) {
    (void)state;
    const char *c = emit_text(
        "model t(B = 8) {\n"
        "    input x: f32[B, 3, 4]\n"
        "    input y: i32[B]\n"
        "    param q: f32[4] = normal(0, 1)\n"
        "    param r: f32[3, 1] = normal(0, 1)\n"
        "    h = (x + q) * r\n"
        "    d = dropout(h * 0.5, 0.25)\n"
        "    k = sum(d, axis=2)\n"
        "    loss cross_entropy(k, y) + mse(h, x) + sum(maximum(h, q))\n"
        "}\n");
    /* [B, 3, 4] + [4]: dims merged to a row broadcast over nb*3 rows */
    assert_emits(c, "cdl_binary_bc_f32(CDL_BIN_ADD, 2, (const int64_t[]){nb*3, 4}, (const int64_t[]){4, 1}, (const int64_t[]){0, 1}, ");
    /* [B, 3, 4] * [3, 1]: a middle broadcast keeps 3 dims */
    assert_emits(c, "cdl_binary_bc_f32(CDL_BIN_MUL, 3, (const int64_t[]){nb, 3, 4}, (const int64_t[]){12, 4, 1}, (const int64_t[]){0, 1, 0}, ");
    /* a scalar operand: the strided fast path */
    assert_emits(c, "cdl_binary_f32(CDL_BIN_MUL, nb*12, ");
    assert_emits(c, ", 1, ");
    /* dropout: sampled in train mode with its stream, keeping its mask for the
     * backward (no second draw); in eval mode its readers read its input: no code,
     * not even a pointer */
    assert_emits(c, "cdl_dropout_keep_f32((cdl_rng_key){net->seed, net->step, ");
    /* keyed by the example's row in the global batch (shards of it draw the same) */
    assert_emits(c, ", cdl_net_row_base(net, nb, 0) * 12, nb*12, 0.25, ");
    assert_emits(c, "cdl_dropout_keep_bwd_f32(nb*12, 0.25, (const uint8_t *)");
    if (strstr(c, "cdl_copy_f32")) fail_msg("eval-mode dropout still copies");
    if (strstr(c, "identity")) fail_msg("eval-mode dropout still gets a pointer");
    /* losses count runtime rows / elements */
    assert_emits(c, "cdl_cross_entropy_f32(nb, 3, ");
    assert_emits(c, "cdl_cross_entropy_bwd_f32(nb, 3, ");
    assert_emits(c, "cdl_mse_f32(nb*12, ");
    assert_emits(c, "cdl_mse_bwd_f32(nb*12, ");
    assert_emits(c, "cdl_maxmin_bwd_f32(1, 2, (const int64_t[]){nb*3, 4}, ");
    assert_int_equal(diag_error_count(), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_leaf_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_binary_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_binary_errors, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_unary_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_bwd_helper_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_loss_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_loss_none_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_loss_bwd_shapes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_grad_activations, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_grad_binary_broadcast, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_grad_unary_compositions, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_grad_dropout_keeps_stream, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_grad_stop_gradient, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_grad_losses, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_emit_forms, setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
