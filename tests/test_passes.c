/* test_passes.c -- the optimisation passes (opt.c) and the memory planner (plan.c):
 *   - CSE merges identical pure nodes, and only those (random ops stay apart);
 *   - no GEMM fusion: a forward add of two products stays an add (the tape adds;
 *     a beta = 1 GEMM rounds otherwise), gradients accumulate in autodiff (test_ops_dense);
 *   - in place: an elementwise node takes its input's buffer when the input dies at
 *     it, and not when the input is read later, is a result, is a leaf or is smaller
 *     than the output (a broadcast operand);
 *   - the plan of every function of every zoo model puts no two buffers that are live
 *     at the same time on overlapping bytes (liveness re-derived here from the graph),
 *     keeps every buffer inside the arena, and lays loop-body slots side by side; the
 *     tape's arena bound is never below the static arena;
 *   - pipeline_emit_c (one function at a time) writes emit_c's C byte for byte;
 *   - arena_reserve keeps what a growing array holds, arena_drop gives a block back. */
#include "test_util.h"

#include <dirent.h>

static int setup(void **state) { return tu_graph_setup(state, 8, no_loc); }

static int sum_all(int x) { return op(OP_SUM, 1, &x, &(Attrs){0}, NULL); }

/* ------------------------------------------------------------------ CSE */

static void test_cse_merges_identical_nodes(void **state) {
    (void)state;
    int x = real(SH(true, 8, 4));
    Attrs ax = {.i = {1, 0}};                       /* sum over axis 0 */
    int s1 = op(OP_SUM, 1, &x, &ax, NULL), s2 = op(OP_SUM, 1, &x, &ax, NULL);
    int s3 = op(OP_SUM, 1, &x, &(Attrs){.i = {2, 0}}, NULL);   /* another axis: not the same */
    int in[2] = {s1, s2};
    int a = op(OP_ADD, 2, in, NULL, NULL);
    int in2[2] = {a, sum_all(s3)};
    int loss = sum_all(op(OP_ADD, 2, in2, NULL, NULL));
    g->n[loss].flags |= NF_LOSS;
    opt_run(g);
    assert_int_equal(g->n[a].in[0], s1);
    assert_int_equal(g->n[a].in[1], s1);            /* s2 replaced by s1 ... */
    assert_true(g->n[s2].flags & NF_DEAD);          /* ... and dropped */
    assert_false(g->n[s1].flags & NF_DEAD);
    assert_false(g->n[s3].flags & NF_DEAD);
}

static void test_cse_keeps_random_ops_apart(void **state) {
    (void)state;
    Shape s = SH(true, 8, 4);
    int r1 = ir_add(g, OP_RANDN, here, 0, NULL, &(Attrs){.i = {[7] = 3}}, &s, DT_REAL);
    int r2 = ir_add(g, OP_RANDN, here, 0, NULL, &(Attrs){.i = {[7] = 3}}, &s, DT_REAL);
    int in[2] = {r1, r2};
    int loss = sum_all(op(OP_SUB, 2, in, NULL, NULL));
    g->n[loss].flags |= NF_LOSS;
    opt_run(g);
    int sub = g->n[loss].in[0];
    assert_int_equal(g->n[sub].in[0], r1);
    assert_int_equal(g->n[sub].in[1], r2);          /* two draws stay two draws */
}

/* ------------------------------------------------------------------ GEMM accumulation */

/* A forward sum of two products is computed as the tape computes it: two GEMMs and an
 * add (a second GEMM with beta = 1 onto the first product rounds differently once the
 * BLAS blocks the inner dimension: static and tape would differ in the last bits). */
static void test_no_gemm_fusion(void **state) {
    (void)state;
    int a = real(SH(true, 8, 4)), b = param(SH(false, 4, 5)), c = real(SH(true, 8, 3)), d = param(SH(false, 3, 5));
    int m1 = op(OP_MATMUL, 2, (int[]){a, b}, NULL, NULL), m2 = op(OP_MATMUL, 2, (int[]){c, d}, NULL, NULL);
    int s = op(OP_ADD, 2, (int[]){m1, m2}, NULL, NULL);
    int loss = sum_all(s);
    g->n[loss].flags |= NF_LOSS;
    opt_run(g);
    const Node *x = &g->n[s];
    assert_int_equal(x->op, OP_ADD);
    assert_int_equal(x->nin, 2);
    assert_false(g->n[m1].flags & NF_DEAD);
    assert_false(g->n[m2].flags & NF_DEAD);
    assert_int_equal(g->n[m2].nin, 2);
}

/* ------------------------------------------------------------------ in place */

static void test_inplace_when_the_input_dies(void **state) {
    (void)state;
    int x = real(SH(true, 8, 4)), w = param(SH(false, 6, 4));
    int l = op(OP_LINEAR, 2, (int[]){x, w}, NULL, NULL);
    int r = op(OP_RELU, 1, &l, NULL, NULL);
    int e = op(OP_EXP, 1, &r, NULL, NULL);
    int loss = sum_all(e);
    g->n[loss].flags |= NF_LOSS;
    opt_run(g);
    assert_true(g->n[r].flags & NF_INPLACE);        /* relu over the linear's buffer */
    assert_int_equal(g->n[r].inplace, 0);
    assert_true(g->n[e].flags & NF_INPLACE);        /* a chain shares one buffer */
    assert_false(g->n[l].flags & NF_INPLACE);       /* a GEMM never runs in place */
    Plan *p = plan_run(g, 4);
    assert_int_equal(p->off[r], p->off[l]);
    assert_int_equal(p->off[e], p->off[l]);
}

static void test_no_inplace_over_live_or_leaf_or_result(void **state) {
    (void)state;
    int x = real(SH(true, 8, 4)), w = param(SH(false, 6, 4));
    int l = op(OP_LINEAR, 2, (int[]){x, w}, NULL, NULL);
    int r = op(OP_RELU, 1, &l, NULL, NULL);         /* l is read again below */
    int t = op(OP_TANH, 1, &x, NULL, NULL);         /* x is an input */
    int o = op(OP_LINEAR, 2, (int[]){x, w}, NULL, NULL);
    g->n[o].flags |= NF_OUTPUT;
    int q = op(OP_SIGMOID, 1, &o, NULL, NULL);      /* o is an output: it must survive */
    int in[4] = {sum_all(r), sum_all(l), sum_all(t), sum_all(q)};
    int a = op(OP_ADD, 2, in, NULL, NULL), b = op(OP_ADD, 2, in + 2, NULL, NULL);
    int loss = op(OP_ADD, 2, (int[]){a, b}, NULL, NULL);
    g->n[loss].flags |= NF_LOSS;
    opt_run(g);
    assert_false(g->n[r].flags & NF_INPLACE);
    assert_false(g->n[t].flags & NF_INPLACE);
    assert_false(g->n[q].flags & NF_INPLACE);
    Plan *p = plan_run(g, 4);
    assert_true(p->off[r] != p->off[l]);
}

/* Two inputs die at a broadcasting add: it goes in place over the full-size one, never
 * over the smaller (its buffer cannot hold the sum). */
static void test_inplace_over_the_full_size_input(void **state) {
    (void)state;
    int x = real(SH(true, 8, 4));
    int t = op(OP_TANH, 1, &x, NULL, NULL);                                 /* [B, 4] */
    int c = op(OP_EXP, 1, (int[]){param(SH(false, 4))}, NULL, NULL);        /* [4] */
    int s = op(OP_ADD, 2, (int[]){c, t}, NULL, NULL);
    int loss = sum_all(s);
    g->n[loss].flags |= NF_LOSS;
    opt_run(g);
    assert_true(g->n[s].flags & NF_INPLACE);
    assert_int_equal(g->n[s].inplace, 1);
    Plan *p = plan_run(g, 4);
    assert_int_equal(p->off[s], p->off[t]);
    assert_true(p->off[c] != p->off[t]);
}

/* ------------------------------------------------------------------ the plan */

/* Where each node's value lives, read from the plan rather than from a copy of the
 * planner's storage_base (which would agree with a bug in it): a view or a loop's result
 * that the plan gives no bytes reads its first input's storage; any other node without
 * bytes is held outside the arena (parameters, inputs, parameter gradients); a node with
 * bytes owns them, unless it is in place, when the plan must have put it on exactly its
 * input's bytes. */
static int *storage_from_plan(const char *what, const Graph *gr, const Plan *p) {
    int *st = calloc((size_t)gr->len + 1, sizeof(int));
    for (int i = 0; i < gr->len; i++) {
        const Node *x = &gr->n[i];
        st[i] = i;
        if (x->flags & NF_DEAD) continue;
        bool reads_in0 = op_info[x->op].flags & OPF_VIEW || x->op == OP_LOOP_OUT;
        if (p->off[i] < 0 && reads_in0) st[i] = st[x->in[0]];
        else if (x->flags & NF_INPLACE) {
            st[i] = st[x->in[x->inplace]];
            if (p->off[i] != p->off[st[i]])
                fail_msg("%s: in-place node %d is at byte %lld, its input's storage (node %d) at %lld", what, i,
                         (long long)p->off[i], st[i], (long long)p->off[st[i]]);
        }
    }
    return st;
}

/* Bytes a loop's body takes from its block's start: the end of its last slot. */
static int64_t body_extent(const Graph *b, const Plan *bp, int64_t base) {
    int64_t end = base;
    for (int j = 0; j < b->len; j++) {
        if (bp->off[j] >= 0 && bp->off[j] + bp->stride[j] * bp->slots[j] > end) end = bp->off[j] + bp->stride[j] * bp->slots[j];
        if (bp->aux_off[j] >= 0 && bp->aux_off[j] + bp->aux_stride[j] * bp->aux_slots[j] > end)
            end = bp->aux_off[j] + bp->aux_stride[j] * bp->aux_slots[j];
    }
    return end - base;
}

typedef struct Buf { int64_t lo, hi; int first, last, node; } Buf;

/* Every buffer of function graph gr under plan p, with its lifetime [first, last]
 * (node indices: written at first, last read at last). */
static int buffers(const char *what, const Graph *gr, const Plan *p, Buf *out) {
    int n = gr->len, nb = 0;
    int *last = calloc((size_t)n + 1, sizeof(int)), *st = storage_from_plan(what, gr, p);
    for (int i = 0; i < n; i++) last[i] = i;
    for (int i = 0; i < n; i++) {
        const Node *x = &gr->n[i];
        if (x->flags & NF_DEAD) continue;
        for (int k = 0; k < x->nin; k++) {
            int b = st[x->in[k]];
            if (last[b] < i) last[b] = i;
            const Node *in = &gr->n[x->in[k]];
            if (in->op == OP_LOOP && x->op == OP_LOOP) /* a backward loop reads its forward loop's initial carries */
                for (int c = 0; c < in->sub->ncarry; c++)
                    if (last[st[in->in[c]]] < i) last[st[in->in[c]]] = i;
        }
        if (x->flags & (NF_OUTPUT | NF_LOSS)) last[st[i]] = n;
    }
    for (int k = 0; k < gr->npgrad; k++)
        if (gr->pgrad[k] >= 0) last[st[gr->pgrad[k]]] = n;
    for (int k = 0; k < gr->nigrad; k++)
        if (gr->igrad[k] >= 0) last[st[gr->igrad[k]]] = n;
    for (int i = n - 1; i >= 0; i--) /* reading a view or in-place node reads its owner */
        if (last[st[i]] < last[i]) last[st[i]] = last[i];
    for (int i = 0; i < n; i++) {
        const Node *x = &gr->n[i];
        if (x->flags & NF_DEAD) continue;
        int life = last[st[i]];
        if (x->op == OP_LOOP && p->sub[i]) {
            out[nb++] = (Buf){p->off[i], p->off[i] + body_extent(x->sub, p->sub[i], p->off[i]), i, life, i};
            continue;
        }
        if (p->off[i] >= 0 && st[i] == i)
            out[nb++] = (Buf){p->off[i], p->off[i] + plan_value_bytes(x, 4), i, life, i};
        if (p->aux_off[i] >= 0)
            out[nb++] = (Buf){p->aux_off[i], p->aux_off[i] + plan_aux_bytes(gr, x, 4), i, life, i};
    }
    free(last);
    free(st);
    return nb;
}

/* Loop bodies: every slot of every value and scratch apart from every other. */
static void check_body(const char *what, const Graph *b, const Plan *bp) {
    for (int j = 0; j < b->len; j++)
        for (int k = j + 1; k < b->len; k++) {
            int64_t r[2][2] = {{bp->off[j], bp->off[j] + bp->stride[j] * bp->slots[j]},
                               {bp->aux_off[j], bp->aux_off[j] + bp->aux_stride[j] * bp->aux_slots[j]}};
            int64_t q[2][2] = {{bp->off[k], bp->off[k] + bp->stride[k] * bp->slots[k]},
                               {bp->aux_off[k], bp->aux_off[k] + bp->aux_stride[k] * bp->aux_slots[k]}};
            for (int u = 0; u < 2; u++)
                for (int v = 0; v < 2; v++)
                    if (r[u][0] >= 0 && q[v][0] >= 0 && r[u][0] < q[v][1] && q[v][0] < r[u][1])
                        fail_msg("%s: body nodes %d and %d share bytes", what, j, k);
        }
}

static int check_plan(const char *what, const Graph *gr, const Plan *p) {
    Buf *b = calloc((size_t)gr->len * 2 + 2, sizeof(Buf));
    int nb = buffers(what, gr, p, b), pairs = 0;
    for (int i = 0; i < nb; i++) {
        if (b[i].lo < 0 || b[i].hi > p->bytes) fail_msg("%s: node %d's buffer [%lld, %lld) is outside the arena of %lld bytes",
                                                       what, b[i].node, (long long)b[i].lo, (long long)b[i].hi, (long long)p->bytes);
        for (int j = i + 1; j < nb; j++) {
            bool live_together = b[i].first <= b[j].last && b[j].first <= b[i].last;
            bool overlap = b[i].lo < b[j].hi && b[j].lo < b[i].hi;
            if (live_together && overlap)
                fail_msg("%s: nodes %d (live %d..%d) and %d (live %d..%d) overlap at bytes [%lld, %lld) / [%lld, %lld)", what,
                         b[i].node, b[i].first, b[i].last, b[j].node, b[j].first, b[j].last, (long long)b[i].lo,
                         (long long)b[i].hi, (long long)b[j].lo, (long long)b[j].hi);
            pairs += live_together;
        }
    }
    for (int i = 0; i < gr->len; i++)
        if (p->sub[i]) check_body(what, gr->n[i].sub, p->sub[i]);
    free(b);
    return pairs;
}

static void test_plans_of_every_zoo_model(void **state) {
    (void)state;
    ops_init();
    DIR *d = opendir("models");
    assert_non_null(d);
    int models = 0, fns = 0, pairs = 0;
    for (struct dirent *de; (de = readdir(d));) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 4, ".cdl")) continue;
        Model *m = elab_file(cc_str("models/%s", de->d_name), 0, NULL);
        if (!m) fail_msg("models/%s: %s", de->d_name, diags());
        Pipeline *p = pipeline_build(m, 4, false);
        for (int k = 0; k < p->nfn; k++) {
            const char *what = cc_str("%s, %s function", de->d_name, pipeline_kind_name(p->fn[k].kind));
            pairs += check_plan(what, p->fn[k].g, p->fn[k].plan);
            assert_true(p->fn[k].plan->bytes <= p->act_bytes);
            fns++;
        }
        /* the tape keeps every value of a step where the static plan reuses buffers:
         * its arena bound (plan_tape_bytes) is never below the static arena */
        Pipeline *tp = pipeline_build(m, 4, true);
        if (tp->act_bytes < p->act_bytes)
            fail_msg("models/%s: tape arena bound %lld < static arena %lld", de->d_name, (long long)tp->act_bytes,
                     (long long)p->act_bytes);
        models++;
    }
    closedir(d);
    assert_true(models >= 13);
    assert_true(fns >= 3 * models);
    assert_true(pairs > 1000);      /* the check saw buffers alive together, not an empty plan */
}

/* The C of every zoo model, f32 and f64, from pipeline_emit_c one function at a time
 * (pipeline_new: each function cloned, planned, written and given back in turn) equals
 * emit_c's after pipeline_build, byte for byte, and so does a pipeline whose functions
 * are planned already. */
static char *c_text(Pipeline *p, bool streamed) {
    char *cbuf = NULL, *hbuf = NULL;
    size_t clen = 0, hlen = 0;
    FILE *cf = open_memstream(&cbuf, &clen), *hf = open_memstream(&hbuf, &hlen);
    assert_non_null(cf);
    assert_non_null(hf);
    if (streamed) pipeline_emit_c(p, cf, hf, true, "m.h");
    else emit_c(p, cf, hf, true, "m.h");
    fclose(cf);
    fclose(hf);
    char *both = arena_printf(cc_arena, "%s\n/* header */\n%s", cbuf, hbuf);
    free(cbuf);
    free(hbuf);
    return both;
}

static void test_streamed_c_equals_emit_c(void **state) {
    (void)state;
    DIR *d = opendir("models");
    assert_non_null(d);
    int models = 0;
    for (struct dirent *de; (de = readdir(d));) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 4, ".cdl")) continue;
        Model *m = elab_file(cc_str("models/%s", de->d_name), 0, NULL);
        if (!m) fail_msg("models/%s: %s", de->d_name, diags());
        for (int real_size = 4; real_size <= 8; real_size += 4) {
            const char *whole = c_text(pipeline_build(m, real_size, false), false);
            Pipeline *p = pipeline_new(m, real_size, false);
            const char *streamed = c_text(p, true);
            if (strcmp(whole, streamed)) fail_msg("models/%s (%d-byte reals): streamed C differs", de->d_name, real_size);
            for (int k = 0; k < p->nfn; k++) assert_null(p->fn[k].g);   /* given back after its C */
            assert_string_equal(c_text(pipeline_build(m, real_size, false), true), whole);
        }
        models++;
    }
    closedir(d);
    assert_true(models >= 13);
}

/* arena_reserve keeps the old bytes wherever the block goes (in its chunk, copied, or a
 * large block moved by realloc); arena_drop gives a large block back at once, and the
 * arena's release and free then skip it (ASan: no double free). */
static void test_arena_reserve_and_drop(void **state) {
    (void)state;
    Arena *a = arena_new();
    int *v = NULL;
    size_t cap = 0;
    for (int i = 0; i < 100000; i++) {
        if ((size_t)i == cap) {
            size_t nc = cap ? 2 * cap : 4;
            v = arena_reserve(a, v, cap * sizeof *v, nc * sizeof *v);
            cap = nc;
        }
        v[i] = i * 7;
    }
    for (int i = 0; i < 100000; i++) assert_int_equal(v[i], i * 7);
    ArenaMark mark = arena_mark(a);
    char *big = arena_alloc(a, 1 << 20), *small = arena_alloc(a, 64);
    assert_int_equal(big[12345], 0);                /* a new large block is still zeroed */
    arena_drop(a, big, 1 << 20);
    arena_drop(a, small, 64);                        /* a small one stays until released */
    small[63] = 1;
    char *big2 = arena_alloc(a, 1 << 20);
    arena_release(a, mark);                          /* frees big2, not big again */
    (void)big2;
    arena_drop(a, v, cap * sizeof *v);
    arena_free(a);
}

int main(void) {
    /* The zoo's gpt and transformer import "nn".  The compiler finds lib/ beside its own
     * executable (build/cdlc: <bin>/../../lib), which from build/asan/tests/ is not the
     * source tree's lib/; the tests run from the project root, so name it. */
    setenv("CDL_PATH", "lib", 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cse_merges_identical_nodes, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_cse_keeps_random_ops_apart, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_no_gemm_fusion, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_inplace_when_the_input_dies, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_no_inplace_over_live_or_leaf_or_result, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_inplace_over_the_full_size_input, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_plans_of_every_zoo_model, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_streamed_c_equals_emit_c, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_arena_reserve_and_drop, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
