/* test_ops_table.c -- the op table is complete: every op of runtime/ops.def has its one
 * home (an OpRule in some compiler/ops_*.c) with everything the passes and emitters ask
 * of it, so no pass needs a per-op switch of its own:
 *   - a shape rule and a static-C emitter;
 *   - a gradient rule exactly when the op is differentiable (OPF_DIFF; the loop nodes
 *     are differentiated structurally by autodiff.c), none otherwise: the flag is the
 *     explicit "not differentiable";
 *   - a tape call, except backward helpers (the tape differentiates at run time) and
 *     the loop nodes emit_tape.c writes itself;
 *   - in-place bits only for inputs the op has;
 *   - the built-in functions the table names (OPF_FN) are found by their name. */
#include "test_util.h"

static bool structural_in_tape(Op op) { return op == OP_LOOP || op == OP_LOOP_OUT || op == OP_LOOP_SAVED; }

static void test_every_op_has_its_rules(void **state) {
    (void)state;
    ops_init();
    int checked = 0;
    for (int op = 0; op < OP_COUNT; op++) {
        const OpInfo *o = &op_info[op];
        const OpRule *r = &o->rule;
        if ((int)r->op != op) fail_msg("op %s: no rule block (or one registered under another op)", o->name);
        if (!r->shape) fail_msg("op %s: no shape rule", o->name);
        if (!r->emit) fail_msg("op %s: no emitter", o->name);
        bool diff = (o->flags & OPF_DIFF) && !(o->flags & OPF_CTRL);
        if (diff && !r->grad) fail_msg("op %s: differentiable but no gradient rule", o->name);
        if (!diff && r->grad) fail_msg("op %s: a gradient rule but not OPF_DIFF", o->name);
        bool tape = !(o->flags & OPF_BWD) && !structural_in_tape((Op)op);
        if (tape && !r->tape) fail_msg("op %s: no tape call", o->name);
        if (!tape && r->tape) fail_msg("op %s: a tape call the tape never makes", o->name);
        if (o->nin >= 0 && (r->inplace >> o->nin)) fail_msg("op %s: in place over an input it does not have", o->name);
        if ((o->flags & OPF_FN) && (!builtin_find(o->name) || (int)builtin_find(o->name)->op != op))
            fail_msg("op %s: a built-in function by the table, but builtin_find does not find it", o->name);
        checked++;
    }
    assert_int_equal(checked, OP_COUNT);
}

/* The rules the passes read, spot-checked against what the ops do. */
static void test_rules_say_what_ops_do(void **state) {
    (void)state;
    ops_init();
    assert_true(op_info[OP_RELU].rule.inplace & INPLACE_IN(0));
    assert_true((op_info[OP_ADD].rule.inplace & (INPLACE_IN(0) | INPLACE_IN(1))) == (INPLACE_IN(0) | INPLACE_IN(1)));
    assert_int_equal(op_info[OP_LINEAR].rule.inplace, 0);          /* a GEMM over its operands: never */
    assert_int_equal(op_info[OP_MATMUL].rule.inplace, INPLACE_IN(2)); /* only over its accumulator */
    assert_int_equal(op_info[OP_SUM].rule.inplace, 0);
    assert_non_null(op_info[OP_CONV2D].rule.tape_scratch);
    assert_null(op_info[OP_RELU_BWD].rule.tape);
    const Builtin *b = builtin_find("relu");
    assert_non_null(b);
    assert_int_equal(b->op, OP_RELU);
    assert_null(builtin_find("relu_bwd"));                         /* helpers are not callable */
    assert_null(builtin_find("loop"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_op_has_its_rules, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_rules_say_what_ops_do, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
