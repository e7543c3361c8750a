/* test_elab.c -- elaboration (compiler/elab.c, builtins.c): parameter naming and
 * sharing, block instances, entries, loops as regions, -D overrides, batching, the
 * train section, imports, and that several errors are reported in one run. */
#include "test_util.h"

#include <sys/stat.h>
#include <unistd.h>

static const Param *find_param(const Model *m, const char *name) {
    for (int i = 0; i < m->nparams; i++)
        if (strcmp(m->params[i].name, name) == 0) return &m->params[i];
    return NULL;
}

static int count_op(const Graph *g, Op op) {
    int k = 0;
    for (int i = 0; i < g->len; i++) k += g->n[i].op == op;
    return k;
}

static const Node *first_op(const Graph *g, Op op) {
    for (int i = 0; i < g->len; i++)
        if (g->n[i].op == op) return &g->n[i];
    return NULL;
}

static const char *MLP = "model mlp(B = 64, H = 256) {\n"
                         "    input x: f32[B, 784]\n"
                         "    input y: i32[B]\n"
                         "    logits = x |> linear(H) |> relu |> dropout(0.2) |> linear(10)\n"
                         "    output logits\n"
                         "    loss cross_entropy(logits, y)\n"
                         "}\n";

static void test_mlp_names_and_shapes(void **state) {
    (void)state;
    Model *m = elab_ok(MLP);
    assert_string_equal(m->name, "mlp");
    assert_int_equal(m->batch, 64);
    assert_int_equal(m->nparams, 4);
    const char *names[] = {"linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"};
    for (int i = 0; i < 4; i++) assert_string_equal(m->params[i].name, names[i]);
    assert_int_equal(m->params[0].shape.rank, 2);
    assert_int_equal(m->params[0].shape.d[0], 256);     /* PyTorch layout [out, in] */
    assert_int_equal(m->params[0].shape.d[1], 784);
    assert_int_equal(m->params[0].fan_in, 784);
    assert_int_equal(m->params[3].shape.d[0], 10);
    assert_false(m->params[0].shape.batched);
    assert_int_equal(m->ninputs, 2);
    assert_int_equal(m->noutputs, 1);
    const Node *out = &m->g->n[m->outputs[0]];
    assert_string_equal(out->name, "logits");
    assert_true(out->shape.batched);
    assert_int_equal(out->shape.d[1], 10);
    assert_true(m->loss >= 0);
    assert_int_equal(m->g->n[m->loss].op, OP_CROSS_ENTROPY);
    assert_true(m->g->n[m->loss].flags & NF_LOSS);
    /* inputs are batched, the label input is i32 */
    assert_true(m->g->n[m->inputs[0]].shape.batched);
    assert_int_equal(m->g->n[m->inputs[1]].dtype, DT_I32);
    assert_string_equal(m->consts_str, "B=64 H=256");
    ir_verify(m->g);
}

static void test_define_override(void **state) {
    (void)state;
    const char *defs[] = {"H=512", "B=32"};
    Model *m = elab_text("t.cdl", MLP, strlen(MLP), 2, defs);
    assert_non_null(m);
    assert_int_equal(m->batch, 32);
    assert_int_equal(find_param(m, "linear1.weight")->shape.d[0], 512);
    assert_int_equal(m->g->n[m->inputs[0]].shape.d[0], 32);
    assert_string_equal(m->consts_str, "B=32 H=512");
}

static void test_define_unknown(void **state) {
    (void)state;
    const char *defs[] = {"Q=1"};
    assert_null(elab_text("t.cdl", MLP, strlen(MLP), 1, defs));
    assert_non_null(strstr(diags(), "<command line>: error: -D Q=1: model 'mlp' has no constant 'Q'"));
}

static void test_share_by_name(void **state) {
    (void)state;
    Model *m = elab_ok("model m(B = 8) {\n"
                       "  input x: f32[B, 16]\n"
                       "  a = linear(x, 16, name=\"fc\")\n"
                       "  b = linear(a, 16, name=\"fc\")\n"
                       "  c = linear(b, 4)\n"
                       "  output c\n"
                       "}\n");
    assert_int_equal(m->nparams, 4);
    assert_non_null(find_param(m, "fc.weight"));
    assert_non_null(find_param(m, "linear1.weight"));   /* named layers do not use up counters */
    assert_int_equal(count_op(m->g, OP_PARAM), 4);
    assert_int_equal(count_op(m->g, OP_LINEAR), 3);
}

static void test_share_shape_mismatch(void **state) {
    (void)state;
    assert_null(elab("model m(B = 8) {\n"
                     "  input x: f32[B, 16]\n"
                     "  a = linear(x, 16, name=\"fc\")\n"
                     "  b = linear(a, 8, name=\"fc\")\n"
                     "  output b\n"
                     "}\n"));
    assert_non_null(strstr(diags(), "t.cdl:4:7: error: parameter 'fc.weight' has shape [8, 16] here, but [16, 16] "
                                    "where it was first made at 3:7"));
    assert_non_null(strstr(diags(), "t.cdl:3:7: note: 'fc.weight' first made here"));
}

static const char *RES = "block residual(x, c) {\n"
                         "    h = x |> conv2d(c, 3, pad=1) |> relu |> conv2d(c, 3, pad=1)\n"
                         "    return relu(h + x)\n"
                         "}\n"
                         "model resnet(B = 4) {\n"
                         "    input x: f32[B, 1, 8, 8]\n"
                         "    input y: i32[B]\n"
                         "    logits = x |> conv2d(4, 3, pad=1) |> relu |> residual(4) |> residual(4)\n"
                         "               |> residual(4, name=\"shared\") |> residual(4, name=\"shared\")\n"
                         "               |> global_avgpool |> flatten |> linear(10)\n"
                         "    loss cross_entropy(logits, y)\n"
                         "}\n";

static void test_block_instances(void **state) {
    (void)state;
    Model *m = elab_ok(RES);
    assert_non_null(find_param(m, "conv1.weight"));
    assert_non_null(find_param(m, "residual1.conv1.weight"));
    assert_non_null(find_param(m, "residual1.conv2.bias"));
    assert_non_null(find_param(m, "residual2.conv1.weight"));
    assert_non_null(find_param(m, "shared.conv2.weight"));
    assert_null(find_param(m, "residual3.conv1.weight"));   /* name= replaces the counter */
    assert_int_equal(find_param(m, "residual2.conv2.weight")->shape.d[1], 4);
    /* 2 (conv1) + 3 instances * 4 + 2 (linear) */
    assert_int_equal(m->nparams, 16);
    assert_int_equal(count_op(m->g, OP_CONV2D), 9);
}

static void test_block_tuple_and_defaults(void **state) {
    (void)state;
    Model *m = elab_ok("block two(x, n, scale = 2.0) {\n"
                       "    return linear(x, n) * scale, linear(x, n)\n"
                       "}\n"
                       "model m(B = 4) {\n"
                       "    input x: f32[B, 3]\n"
                       "    a, b = two(x, 5)\n"
                       "    output a + b as s\n"
                       "}\n");
    assert_int_equal(m->nparams, 4);
    assert_non_null(find_param(m, "two1.linear2.bias"));
    assert_string_equal(m->g->n[m->outputs[0]].name, "s");
}

/* a, b = f(a), g(b): both sides are evaluated before either name changes (a swap
 * swaps), in a loop too (the pair is carried). */
static void test_tuple_expressions(void **state) {
    (void)state;
    Model *m = elab_ok("model m(B = 4) {\n"
                       "    input x: f32[B, 3]\n"
                       "    input y: f32[B, 3]\n"
                       "    a, b = x, y\n"
                       "    a, b = b, a\n"
                       "    output a * 2 as first\n"
                       "    output b * 3 as second\n"
                       "    h, c = zeros([B, 3]), x\n"
                       "    for t in 0..2 { h, c = c + h, tanh(h) }\n"
                       "    output h + c as hc\n"
                       "}\n");
    assert_int_equal(m->noutputs, 3);
    assert_int_equal(m->g->n[m->outputs[0]].in[0], m->inputs[1]);   /* first = y * 2 */
    assert_int_equal(m->g->n[m->outputs[1]].in[0], m->inputs[0]);   /* second = x * 3 */
    assert_int_equal(count_op(m->g, OP_LOOP), 1);
    assert_non_null(first_op(m->g, OP_LOOP_OUT));
    assert_null(elab("model m(B = 4) {\n    input x: f32[B, 3]\n    a, b = x, x, x\n    output a\n}\n"));
    assert_true(said("t.cdl:3:5: error: 2 names on the left, but the right side gives 3 values"));
}

static void test_block_param_statement(void **state) {
    (void)state;
    Model *m = elab_ok("block scale(x) {\n"
                       "    param s: f32[1] = ones()\n"
                       "    return x * s\n"
                       "}\n"
                       "model m(B = 4) {\n"
                       "    input x: f32[B, 3]\n"
                       "    param w: f32[3, 2] = normal(0, 0.1)\n"
                       "    output scale(scale(x)) @ w as y\n"
                       "}\n");
    assert_int_equal(m->nparams, 3);
    const Param *w = find_param(m, "w");
    assert_non_null(w);
    assert_int_equal(w->init, 4);   /* CDL_INIT_NORMAL */
    assert_true(w->b == 0.1);
    assert_int_equal(w->fan_in, 3);  /* [in, out] as used by x @ w */
    assert_int_equal(find_param(m, "scale2.s")->init, 1);
}

static void test_unused_param_warning(void **state) {
    (void)state;
    Model *m = elab_ok("model m(B = 4) {\n"
                       "    input x: f32[B, 3]\n"
                       "    param w: f32[3, 2]\n"
                       "    param v: f32[3, 3]\n"
                       "    output x @ v as y\n"
                       "}\n");
    assert_non_null(strstr(diags(), "t.cdl:3:11: warning: parameter 'w' is declared but never used"));
    assert_int_equal(diag_error_count(), 0);
    assert_int_equal(m->nparams, 1);
    assert_string_equal(m->params[0].name, "v");
    assert_int_equal(first_op(m->g, OP_PARAM)->slot, 0);
}

static void test_state_params_last(void **state) {
    (void)state;
    Model *m = elab_ok("model m(B = 4) {\n"
                       "    input x: f32[B, 3, 5, 5]\n"
                       "    h = x |> conv2d(2, 3) |> batchnorm |> flatten |> linear(2)\n"
                       "    output h\n"
                       "}\n");
    const char *order[] = {"conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias", "linear1.weight",
                           "linear1.bias", "bn1.running_mean", "bn1.running_var"};
    assert_int_equal(m->nparams, 8);
    for (int i = 0; i < 8; i++) assert_string_equal(m->params[i].name, order[i]);
    assert_true(m->params[6].state);
    assert_false(m->params[5].state);
    /* PARAM nodes carry their final slot */
    for (int i = 0; i < m->g->len; i++) {
        const Node *n = &m->g->n[i];
        if (n->op != OP_PARAM) continue;
        assert_string_equal(m->params[n->slot].name, n->name);
        assert_int_equal(!!(n->flags & NF_STATE), m->params[n->slot].state);
    }
}

static const char *LSTM = "model lstm_cls(B = 8, T = 28, H = 16) {\n"
                          "    input x: f32[B, T, 12]\n"
                          "    input y: i32[B]\n"
                          "    h = zeros([B, H])  c = zeros([B, H])\n"
                          "    for t in 0..T { h, c = lstm_cell(x[:, t, :], h, c, H, name=\"cell\") }\n"
                          "    loss cross_entropy(linear(h, 10), y)\n"
                          "}\n";

static void test_loop_is_a_region(void **state) {
    (void)state;
    Model *m = elab_ok(LSTM);
    assert_int_equal(count_op(m->g, OP_LOOP), 1);
    const Node *L = first_op(m->g, OP_LOOP);
    assert_int_equal(L->ia[0], 0);
    assert_int_equal(L->ia[1], 28);
    assert_int_equal(L->ia[2], 1);
    const Graph *b = L->sub;
    assert_non_null(b);
    assert_ptr_equal(b->parent, m->g);
    assert_int_equal(b->ncarry, 2);
    assert_int_equal(b->nres, 2);
    assert_int_equal(count_op(b, OP_LOOP_CARRY), 2);
    assert_int_equal(count_op(b, OP_PARAM), 0);        /* parameters live in the root graph */
    /* x and the four cell parameters are captured; loop inputs: carries then captures */
    assert_int_equal(count_op(b, OP_LOOP_CAPTURE), 5);
    assert_int_equal(L->nin, 2 + 5);
    const Node *sl = first_op(b, OP_SLICE);
    assert_int_equal(sl->ia[0], 1);
    assert_int_equal(sl->ia[1], 0);
    assert_int_equal(sl->ia[4], 1);
    assert_int_equal(sl->ia[5], 1);
    assert_int_equal(sl->shape.d[1], 12);
    assert_non_null(find_param(m, "cell.weight_ih"));
    assert_int_equal(find_param(m, "cell.weight_ih")->shape.d[0], 64);
    assert_int_equal(count_op(m->g, OP_LOOP_OUT), 2);
    ir_verify(m->g);
}

static void test_loop_size_independent_of_T(void **state) {
    (void)state;
    const char *d4[] = {"T=4"}, *d28[] = {"T=28"};
    Model *a = elab_text("t.cdl", LSTM, strlen(LSTM), 1, d4);
    Model *b = elab_text("t.cdl", LSTM, strlen(LSTM), 1, d28);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(a->nparams, b->nparams);
    assert_int_equal(a->g->len, b->g->len);
    assert_int_equal(first_op(a->g, OP_LOOP)->sub->len, first_op(b->g, OP_LOOP)->sub->len);
    assert_int_equal(first_op(a->g, OP_LOOP)->ia[1], 4);
}

static void test_reversed_loop_and_collect(void **state) {
    (void)state;
    Model *m = elab_ok("model m(B = 8, T = 6) {\n"
                       "    input x: f32[B, T, 3]\n"
                       "    h = zeros([B, 3])\n"
                       "    for t in reversed(0..T) {\n"
                       "        h = tanh(h + x[:, T - 1 - t, :])\n"
                       "        hs[t] = h\n"
                       "    }\n"
                       "    output mean(hs, axis=1) as pooled\n"
                       "}\n");
    const Node *L = first_op(m->g, OP_LOOP);
    assert_int_equal(L->ia[0], 5);
    assert_int_equal(L->ia[1], 6);
    assert_int_equal(L->ia[2], -1);
    const Graph *b = L->sub;
    assert_int_equal(b->ncarry, 1);
    assert_int_equal(b->nres, 2);
    const Node *sl = first_op(b, OP_SLICE);
    assert_int_equal(sl->ia[1], 5);
    assert_int_equal(sl->ia[5], -1);
    /* the collection: LOOP_OUT 1 of shape [B, T, 3], batched */
    const Node *hs = NULL;
    for (int i = 0; i < m->g->len; i++)
        if (m->g->n[i].op == OP_LOOP_OUT && m->g->n[i].ia[0] == 1) hs = &m->g->n[i];
    assert_non_null(hs);
    assert_int_equal(hs->shape.rank, 3);
    assert_int_equal(hs->shape.d[1], 6);
    assert_true(hs->shape.batched);
    assert_string_equal(hs->var, "hs");
}

static void test_entry_shares_parameters(void **state) {
    (void)state;
    Model *m = elab_ok("block decode(z) { return z |> linear(8) |> relu |> linear(16) }\n"
                       "model vae(B = 4, Z = 2) {\n"
                       "    input x: f32[B, 16]\n"
                       "    z = linear(x, Z) + randn([B, Z])\n"
                       "    loss bce_with_logits(decode(z), x, reduce=sum) / B\n"
                       "    entry generate(z: f32[B, Z]) = sigmoid(decode(z))\n"
                       "    entry pair(z: f32[B, Z]) {\n"
                       "        a = decode(z)\n"
                       "        output a\n"
                       "        output relu(a) as r\n"
                       "    }\n"
                       "}\n");
    assert_int_equal(m->nparams, 6);
    assert_int_equal(m->nentries, 2);
    const EntryFn *g = &m->entries[0];
    assert_string_equal(g->name, "generate");
    assert_int_equal(g->nouts, 1);
    assert_string_equal(g->g->n[g->outs[0]].name, "generate");
    assert_int_equal(count_op(g->g, OP_PARAM), 4);
    for (int i = 0; i < g->g->len; i++)
        if (g->g->n[i].op == OP_PARAM) assert_string_equal(m->params[g->g->n[i].slot].name, g->g->n[i].name);
    assert_non_null(find_param(m, "decode1.linear2.weight"));
    assert_null(find_param(m, "decode2.linear1.weight"));
    assert_int_equal(m->entries[1].nouts, 2);
    assert_string_equal(m->entries[1].g->n[m->entries[1].outs[1]].name, "r");
    /* "/ B" is the runtime batch size */
    assert_int_equal(count_op(m->g, OP_BATCHSIZE), 1);
    /* random ops get distinct stream ids */
    assert_int_equal(first_op(m->g, OP_RANDN)->ia[7], 0);
}

static void test_streams_unique(void **state) {
    (void)state;
    Model *m = elab_ok("model m(B = 4) {\n"
                       "    input x: f32[B, 3]\n"
                       "    a = dropout(x, 0.1) + dropout(x, 0.2) + rand([B, 3])\n"
                       "    output a\n"
                       "}\n");
    int seen[8] = {0};
    for (int i = 0; i < m->g->len; i++) {
        const Node *n = &m->g->n[i];
        if (n->op == OP_DROPOUT || n->op == OP_RAND) seen[n->ia[7]]++;
    }
    assert_int_equal(seen[0], 1);
    assert_int_equal(seen[1], 1);
    assert_int_equal(seen[2], 1);
}

static void test_batched_constants(void **state) {
    (void)state;
    Model *m = elab_ok("model m(B = 4, H = 3) {\n"
                       "    input x: f32[B, H]\n"
                       "    a = x + zeros([B, H]) + ones([H])\n"
                       "    output a * (2 * B) as y\n"
                       "}\n");
    const Node *z = first_op(m->g, OP_CONST);
    assert_true(z->shape.batched);
    int consts = 0;
    for (int i = 0; i < m->g->len; i++)
        if (m->g->n[i].op == OP_CONST && !m->g->n[i].shape.batched && m->g->n[i].shape.rank == 1) consts++;
    assert_int_equal(consts, 1);
    assert_int_equal(count_op(m->g, OP_BATCHSIZE), 1);   /* 2 * B -> batch_size * 2 */
}

/* Batch multiples stay legal inside the model (reshape to [B * T, D] and back); only
 * inputs, entry arguments and outputs must have dim 0 = B (tests/errors/ *_batch_multiple). */
static void test_batch_multiples_inside(void **state) {
    (void)state;
    Model *m = elab_ok("model m(B = 8, T = 3, D = 4) {\n"
                       "    input x: f32[B, T, D]\n"
                       "    h = reshape(x, [B * T, D]) |> linear(5)\n"
                       "    output reshape(h, [B, T * 5]) as y\n"
                       "}\n");
    const Node *r = first_op(m->g, OP_RESHAPE);
    assert_true(r->shape.batched);
    assert_int_equal(r->shape.d[0], 24);
    const Node *y = &m->g->n[m->outputs[0]];
    assert_true(y->shape.batched);
    assert_int_equal(y->shape.d[0], 8);
    assert_null(elab("model m(B = 8, T = 3, D = 4) {\n"
                     "    input x: f32[B, T, D]\n"
                     "    output reshape(x, [B * T, D]) as y\n"
                     "}\n"));
    assert_diag("outputs must have the batch B itself as dimension 0");
    /* a dimension is batched when it is k * B as a function of B (issue 10 item 4) */
    diag_reset();
    m = elab_ok("model m(B = 8, T = 3, N = B * T) {\n"
                "    input x: f32[B, 2]\n"
                "    a = zeros([B + 0, 2]) + x\n"
                "    b = zeros([N, 2]) + zeros([2 * B / 2 * 3, 2])\n"
                "    c = sum(zeros([B - 1, 2])) + sum(zeros([B / 2, 1]))\n"
                "    output a\n    output x + sum(b) + sum(c) as y\n"
                "}\n");
    int batched = 0, fixed = 0;
    for (int i = 0; i < m->g->len; i++) {
        const Node *n = &m->g->n[i];
        if (n->op != OP_CONST || n->shape.rank != 2) continue;
        if (n->shape.batched) batched++, assert_true(n->shape.d[0] == 8 || n->shape.d[0] == 24);
        else fixed++, assert_true(n->shape.d[0] == 7 || n->shape.d[0] == 4);
    }
    assert_int_equal(batched, 3);
    assert_int_equal(fixed, 2);
}

/* Shapes inside blocks (issue 13 item 4): dim() and .shape are constants, the model's
 * constants (B included) are visible and may be shadowed by block locals, -1 in zeros
 * is the batch, and broadcast_to(param, [B, ...]) is batched (a class token). */
static void test_shapes_in_blocks(void **state) {
    (void)state;
    Model *m = elab_ok("block tok(x) {\n"
                       "    param cls: f32[1, 1, x.shape[-1]]\n"
                       "    T = dim(x, 1) + 1\n"
                       "    h = concat([broadcast_to(cls, [B, 1, -1]), x], axis=1)\n"
                       "    return h + zeros([-1, T, dim(x, -1)])\n"
                       "}\n"
                       "model m(B = 4, T = 5, D = 6) {\n"
                       "    input x: f32[B, T, D]\n"
                       "    output tok(x) as y\n"
                       "}\n");
    const Param *cls = find_param(m, "tok1.cls");
    assert_non_null(cls);
    assert_int_equal(cls->shape.d[2], 6);
    const Node *bc = first_op(m->g, OP_BROADCAST);
    assert_true(bc->shape.batched);
    assert_int_equal(bc->shape.d[0], 4);
    assert_int_equal(bc->shape.d[2], 6);
    const Node *z = first_op(m->g, OP_CONST);
    assert_true(z->shape.batched);
    assert_int_equal(z->shape.d[1], 6);
    const Node *y = &m->g->n[m->outputs[0]];
    assert_true(y->shape.batched);
    assert_int_equal(y->shape.d[1], 6);
    /* the model body still cannot assign a constant */
    assert_null(elab("model m(B = 4) {\n    input x: f32[B, 3]\n    B = 2\n    output x\n}\n"));
    assert_diag("cannot assign to the constant 'B'");
}

static void test_train_section(void **state) {
    (void)state;
    Model *m = elab_ok("model m(B = 4) {\n"
                       "    input x: f32[B, 3]\n"
                       "    output x * 2 as y\n"
                       "    train { optimizer = sgd(lr=0.1, momentum=0.9, nesterov=true)  batch = B\n"
                       "            epochs = 5  dataset = \"fashion-mnist\"  schedule = cosine }\n"
                       "}\n");
    assert_int_equal(m->ntrain, 5);
    assert_string_equal(m->train[0].key, "optimizer");
    assert_string_equal(m->train[0].value, "sgd:lr=0.1,momentum=0.9,nesterov=1");
    assert_string_equal(m->train[1].value, "4");
    assert_string_equal(m->train[2].value, "5");
    assert_string_equal(m->train[3].value, "fashion-mnist");
    assert_string_equal(m->train[4].value, "cosine");
    /* every optimizer of the runtime is accepted (rmsprop and adagrad were refused) */
    m = elab_ok("model m(B = 4) {\n    input x: f32[B, 3]\n    output x * 2 as y\n"
                "    train { optimizer = rmsprop(lr=0.01, alpha=0.9, centered=true) }\n}\n");
    assert_string_equal(m->train[0].value, "rmsprop:lr=0.01,alpha=0.9,centered=1");
    m = elab_ok("model m(B = 4) {\n    input x: f32[B, 3]\n    output x * 2 as y\n"
                "    train { optimizer = adagrad(lr=0.1) }\n}\n");
    assert_string_equal(m->train[0].value, "adagrad:lr=0.1");
}

static void test_several_errors(void **state) {
    (void)state;
    assert_null(elab("model m(B = 4) {\n"
                     "    input x: f32[B, 3]\n"
                     "    a = relu(q)\n"
                     "    b = linear(x)\n"
                     "    c = a + b\n"
                     "    d = lineer(x, 3)\n"
                     "    output x * w as e\n"
                     "}\n"));
    assert_int_equal(diag_error_count(), 4);   /* c = a + b is silent: a and b failed */
    assert_non_null(strstr(diags(), "t.cdl:3:14: error: undefined name 'q'"));
    assert_non_null(strstr(diags(), "t.cdl:4:9: error: linear: missing argument 'out'"));
    assert_non_null(strstr(diags(), "t.cdl:6:9: error: unknown function 'lineer'"));
    assert_non_null(strstr(diags(), "t.cdl:7:16: error: undefined name 'w'"));
}

static void test_recursion_and_nesting(void **state) {
    (void)state;
    assert_null(elab("block a(x) { return b(x) }\n"
                     "block b(x) { return a(x) }\n"
                     "model m(B = 4) {\n"
                     "    input x: f32[B, 3]\n"
                     "    output a(x) as y\n"
                     "}\n"));
    assert_non_null(strstr(diags(), "block 'a' calls itself (a -> b -> a): recursion is not allowed"));
}

static void test_loop_errors(void **state) {
    (void)state;
    assert_null(elab("model m(B = 4, T = 3) {\n"
                     "    input x: f32[B, T, 2]\n"
                     "    h = zeros([B, 2])\n"
                     "    for t in 0..x { h = h }\n"
                     "    for t in 3..1 { h = h }\n"
                     "    for t in 0..T { h = h * t }\n"
                     "    for t in 0..T { for u in 0..T { h = h } }\n"
                     "    output h\n"
                     "}\n"));
    assert_non_null(strstr(diags(), "t.cdl:4:17: error: loop bounds must be integer constants"));
    assert_non_null(strstr(diags(), "t.cdl:5:15: error: empty loop range 3..1"));
    assert_non_null(strstr(diags(), "t.cdl:6:27: error: the loop index can only be used in indexing"));
    assert_non_null(strstr(diags(), "t.cdl:7:21: error: nested loops are not supported"));
}

static void test_no_model(void **state) {
    (void)state;
    assert_null(elab(""));
    assert_non_null(strstr(diags(), "t.cdl:1:1: error: no model in this file"));
}

static void test_last_model_is_taken(void **state) {
    (void)state;
    Model *m = elab_ok("model a(B = 2) { input x: f32[B, 1]\n output x }\n"
                       "model b(B = 3) { input x: f32[B, 1]\n output x * 2 as y }\n");
    assert_string_equal(m->name, "b");
    assert_int_equal(m->batch, 3);
}

static void test_imports(void **state) {
    (void)state;
    char dir[] = "/tmp/cdl_test_elab_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *sub = arena_printf(cc_arena, "%s/lib", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    const char *files[][2] = {
        {"lib/layers.cdl", "import \"more.cdl\"\nblock mlp2(x, h) { return x |> linear(h) |> relu |> twice }\n"},
        {"lib/more.cdl", "import \"layers.cdl\"\nblock twice(x) { return x + x }\n"},
        {"main.cdl", "import \"lib/layers.cdl\"\nimport \"lib/more.cdl\"\n"
                     "model m(B = 2) { input x: f32[B, 3]\n output mlp2(x, 4) as y }\n"},
    };
    for (int i = 0; i < 3; i++) {
        FILE *f = fopen(arena_printf(cc_arena, "%s/%s", dir, files[i][0]), "w");
        assert_non_null(f);
        fputs(files[i][1], f);
        fclose(f);
    }
    /* layers.cdl <-> more.cdl import each other: a cycle */
    Model *m = elab_file(arena_printf(cc_arena, "%s/main.cdl", dir), 0, NULL);
    assert_null(m);
    assert_non_null(strstr(diags(), "more.cdl:1:1: error: import cycle: layers.cdl -> more.cdl -> layers.cdl"));
    /* without the cycle it elaborates; blocks come from files relative to the importer */
    FILE *f = fopen(arena_printf(cc_arena, "%s/lib/more.cdl", dir), "w");
    fputs("block twice(x) { return x + x }\n", f);
    fclose(f);
    diag_reset();
    m = elab_file(arena_printf(cc_arena, "%s/main.cdl", dir), 0, NULL);
    assert_non_null(m);
    assert_non_null(find_param(m, "mlp21.linear1.weight"));
    for (int i = 2; i >= 0; i--) unlink(arena_printf(cc_arena, "%s/%s", dir, files[i][0]));
    rmdir(sub);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_mlp_names_and_shapes, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_define_override, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_define_unknown, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_share_by_name, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_share_shape_mismatch, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_block_instances, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_block_tuple_and_defaults, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_tuple_expressions, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_block_param_statement, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_unused_param_warning, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_state_params_last, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_loop_is_a_region, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_loop_size_independent_of_T, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_reversed_loop_and_collect, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_entry_shares_parameters, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_streams_unique, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_batched_constants, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_batch_multiples_inside, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_shapes_in_blocks, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_train_section, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_several_errors, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_recursion_and_nesting, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_loop_errors, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_no_model, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_last_model_is_taken, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_imports, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
