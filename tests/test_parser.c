/* test_parser.c -- the CDL grammar (grammar/cdl.y): the trees of valid programs
 * (precedence, pipes, slices, keyword arguments, every statement), and syntax errors:
 * locations, several per run (statement-level recovery), nesting limits. */
#include "test_util.h"

/* The dump of the first statement of `model m { <stmt> }`. */
static const char *stmt(const char *s) {
    const char *src = arena_printf(cc_arena, "model m { %s }", s);
    const Ast *f = parse(src);
    if (diag_error_count() || f->list.n != 1 || f->list.v[0]->list2.n < 1) return "<parse failed>";
    return ast_str(f->list.v[0]->list2.v[0]);
}

/* The dump of expression e (as the value of an assignment). */
static const char *expr(const char *e) {
    const char *src = arena_printf(cc_arena, "model m { v = %s }", e);
    const Ast *f = parse(src);
    if (diag_error_count() || f->list.n != 1) return "<parse failed>";
    return ast_str(f->list.v[0]->list2.v[0]->a);
}

static void test_precedence(void **state) {
    (void)state;
    assert_string_equal(expr("a + b * c"), "(bin + (name a) (bin * (name b) (name c)))");
    assert_string_equal(expr("a - b - c"), "(bin - (bin - (name a) (name b)) (name c))");
    assert_string_equal(expr("-x ** 2"), "(neg (bin ** (name x) (int 2)))");
    assert_string_equal(expr("a ** b ** c"), "(bin ** (name a) (bin ** (name b) (name c)))");
    assert_string_equal(expr("x @ w + b"), "(bin + (bin @ (name x) (name w)) (name b))");
    assert_string_equal(expr("(a + b) / 2.0"), "(bin / (bin + (name a) (name b)) (real 2.0))");
    assert_string_equal(expr("h + x |> relu"), "(pipe (bin + (name h) (name x)) (name relu))");
    /* comparisons bind looser than arithmetic, tighter than |> (as in Python) */
    assert_string_equal(expr("a + 1 < b * 2"), "(bin < (bin + (name a) (int 1)) (bin * (name b) (int 2)))");
    assert_string_equal(expr("x - m >= 0 |> f"), "(pipe (bin >= (bin - (name x) (name m)) (int 0)) (name f))");
    assert_string_equal(expr("(a == b) * (c != d)"), "(bin * (bin == (name a) (name b)) (bin != (name c) (name d)))");
    assert_string_equal(expr("a <= -b"), "(bin <= (name a) (neg (name b)))");
}

/* a < b < c is not a chain (Python) nor (a < b) < c: an error at the second '<'. */
static void test_comparisons_do_not_chain(void **state) {
    (void)state;
    assert_string_equal(expr("a < b < c"), "<parse failed>");
    assert_non_null(strstr(diags(), "error: syntax error, unexpected '<'"));
}

static void test_pipes_and_calls(void **state) {
    (void)state;
    assert_string_equal(expr("x |> linear(256) |> relu |> dropout(0.2)"),
                        "(pipe (pipe (pipe (name x) (call linear (int 256))) (name relu)) (call dropout (real 0.2)))");
    assert_string_equal(expr("conv2d(x, 16, 3, pad=1, bias=false,)"),
                        "(call conv2d (name x) (int 16) (int 3) (kw pad (int 1)) (kw bias (bool 0)))");
    assert_string_equal(expr("f()"), "(call f)");
    assert_string_equal(expr("zeros([B, H])"), "(call zeros (list (name B) (name H)))");
    assert_string_equal(expr("concat([], axis=-1)"), "(call concat (list) (kw axis (neg (int 1))))");
    assert_string_equal(expr("linear(h, 10, name=\"fc\")"), "(call linear (name h) (int 10) (kw name (str \"fc\")))");
}

static void test_indexing(void **state) {
    (void)state;
    assert_string_equal(expr("x[:, t, :]"), "(index (name x) (slice _ _ _) (name t) (slice _ _ _))");
    assert_string_equal(expr("x[2:5]"), "(index (name x) (slice (int 2) (int 5) _))");
    assert_string_equal(expr("x[::2, 1:]"), "(index (name x) (slice _ _ (int 2)) (slice (int 1) _ _))");
    assert_string_equal(expr("x[:, T - 1 - t]"),
                        "(index (name x) (slice _ _ _) (bin - (bin - (name T) (int 1)) (name t)))");
    assert_string_equal(expr("f(a)[0][1]"), "(index (index (call f (name a)) (int 0)) (int 1))");
    assert_string_equal(expr("x.shape[-1] * 2"), "(bin * (index (attr (name x) shape) (neg (int 1))) (int 2))");
    assert_string_equal(expr("f(x).shape"), "(attr (call f (name x)) shape)");
}

static void test_statements(void **state) {
    (void)state;
    assert_string_equal(stmt("a, b = f(a), g(b)"), "(assign (a b) (call f (name a)) (call g (name b)))");
    assert_string_equal(stmt("input x: f32[B, 784]"), "(input x (type f32 (name B) (int 784)))");
    assert_string_equal(stmt("param w: f32[784, 10] = xavier_uniform()"),
                        "(param w (type f32 (int 784) (int 10)) (call xavier_uniform))");
    assert_string_equal(stmt("param s: f32[]"), "(param s (type f32) _)");
    assert_string_equal(stmt("h, c = lstm_cell(x, h, c)"),
                        "(assign (h c) (call lstm_cell (name x) (name h) (name c)))");
    assert_string_equal(stmt("hs[t] = h"), "(collect hs (name t) (name h))");
    assert_string_equal(stmt("output logits"), "(output (name logits))");
    assert_string_equal(stmt("output softmax(l) as probs"), "(output (call softmax (name l)) as probs)");
    assert_string_equal(stmt("loss mse(a, b) / B"), "(loss (bin / (call mse (name a) (name b)) (name B)))");
    assert_string_equal(stmt("for t in 0..T { h = f(h) }"),
                        "(for t (range (int 0) (name T)) ((assign (h) (call f (name h)))))");
    assert_string_equal(stmt("for t in reversed(1..T - 1) { }"),
                        "(for t (range reversed (int 1) (bin - (name T) (int 1))) ())");
    assert_string_equal(stmt("entry g(z: f32[B, Z]) = sigmoid(d(z))"),
                        "(entry g ((input z (type f32 (name B) (name Z)))) ((output (call sigmoid (call d (name z))))))");
    assert_string_equal(stmt("entry e(x: f32[4]) { output x }"),
                        "(entry e ((input x (type f32 (int 4)))) ((output (name x))))");
    assert_string_equal(stmt("train { optimizer = sgd(lr=0.1, momentum=0.9)  batch = 64, dataset = \"f\" }"),
                        "(train (kw optimizer (call sgd (kw lr (real 0.1)) (kw momentum (real 0.9)))) "
                        "(kw batch (int 64)) (kw dataset (str \"f\")))");
}

static void test_statements_need_no_separator(void **state) {
    (void)state;
    const Ast *f = parse("model m(B = 64, H = 128) { h = zeros([B, H])  c = zeros([B, H]); y = h\n - c }");
    assert_int_equal(diag_error_count(), 0);
    const Ast *m = f->list.v[0];
    assert_int_equal(m->list.n, 2);
    assert_int_equal(m->list2.n, 3);
    /* a newline does not end an expression */
    assert_string_equal(ast_str(m->list2.v[2]), "(assign (y) (bin - (name h) (name c)))");
}

static void test_top_level(void **state) {
    (void)state;
    const Ast *f = parse("import \"common.cdl\"\n"
                         "block residual(x, c, k = 3) { return relu(x), c }\n"
                         "model a { output x }\nmodel b(B = 2,) { }\n");
    assert_int_equal(diag_error_count(), 0);
    assert_int_equal(f->list.n, 4);
    assert_string_equal(ast_str(f->list.v[0]), "(import \"common.cdl\")");
    assert_string_equal(ast_str(f->list.v[1]),
                        "(block residual ((name x) (name c) (kw k (int 3))) (return (call relu (name x)) (name c)))");
    assert_string_equal(ast_str(f->list.v[3]), "(model b ((kw B (int 2))))");
    /* every node keeps its location: the block's name */
    assert_int_equal(f->list.v[1]->loc.line, 2);
    assert_int_equal(f->list.v[1]->loc.col, 7);
}

static void test_empty_input(void **state) {
    (void)state;
    const Ast *f = parse("");
    assert_non_null(f);
    assert_int_equal(f->kind, D_FILE);
    assert_int_equal(f->list.n, 0);
    assert_int_equal(diag_error_count(), 0);
}

static void test_syntax_error_location(void **state) {
    (void)state;
    parse("model m {\n    h = linear(x 10)\n}\n");
    assert_int_equal(diag_error_count(), 1);
    assert_non_null(strstr(diags(), "t.cdl:2:18: error: syntax error, unexpected integer"));
    assert_non_null(strstr(diags(), "    h = linear(x 10)\n                     ^\n"));
}

static void test_recovery_reports_several(void **state) {
    (void)state;
    const Ast *f = parse("model m {\n"
                         "    a = (1 +\n"
                         "    b = relu(x)\n"
                         "    c = 3 ** ** 2\n"
                         "    d = relu(x)\n"
                         "    f = ) ]\n"
                         "    e = x\n"
                         "}\n");
    assert_true(diag_error_count() >= 3);
    assert_non_null(strstr(diags(), "t.cdl:4:14: error: syntax error, unexpected '**'"));
    assert_non_null(strstr(diags(), "t.cdl:6:9: error: syntax error, unexpected ')'"));
    /* the statements between the errors survive */
    assert_int_equal(f->list.n, 1);
    const Ast *m = f->list.v[0];
    bool saw_d = false, saw_e = false;
    for (int i = 0; i < m->list2.n; i++) {
        if (m->list2.v[i]->kind != S_ASSIGN) continue;
        saw_d |= strcmp(m->list2.v[i]->list.v[0]->name, "d") == 0;
        saw_e |= strcmp(m->list2.v[i]->list.v[0]->name, "e") == 0;
    }
    assert_true(saw_d);
    assert_true(saw_e);
}

static void test_unexpected_end(void **state) {
    (void)state;
    parse("model m {\n  x = relu(");
    assert_int_equal(diag_error_count(), 1);
    assert_non_null(strstr(diags(), "t.cdl:2:12: error: syntax error, unexpected end of file"));
}

static void test_deep_nesting(void **state) {
    (void)state;
    size_t n = 10000;
    char *src = malloc(3 * n + 64);
    char *p = src + sprintf(src, "model m { y = ");
    memset(p, '(', n);
    p += n;
    *p++ = 'x';
    memset(p, ')', n);
    p += n;
    strcpy(p, " }");
    parse(src);
    assert_int_equal(diag_error_count(), 1);
    assert_non_null(strstr(diags(), "too deeply nested: more than 256 brackets open"));
    free(src);
}

static void test_deep_unary_and_long_chains(void **state) {
    (void)state;
    size_t n = 10000;
    char *src = malloc(4 * n + 64);
    char *p = src + sprintf(src, "model m { y = ");
    memset(p, '-', n);
    p += n;
    strcpy(p, "x }");
    parse(src);
    assert_int_equal(diag_error_count(), 1);
    assert_non_null(strstr(diags(), "error: too deeply nested"));

    diag_reset();
    p = src + sprintf(src, "model m { y = x");
    for (size_t i = 0; i < 1000; i++) p += sprintf(p, "+x");
    strcpy(p, " }");
    const Ast *f = parse(src);
    assert_int_equal(diag_error_count(), 1);
    assert_non_null(strstr(diags(), "error: expression too deeply nested (more than 500 levels)"));
    /* the tree holds an error node, never the deep chain */
    assert_int_equal(f->list.v[0]->list2.v[0]->a->kind, A_ERR);
    free(src);
}

/* The 21st error stops a compilation: in-process callers (the fuzz target) get control
 * back through diag_set_recovery instead of an exit, here deep inside a parse (the
 * parser's stacks grown past their first 200 entries, the scanner's buffer live: under
 * make asan, LeakSanitizer checks that nothing of them is left behind), and the next
 * compilation starts clean. */
static void test_too_many_errors_return_to_recovery(void **state) {
    (void)state;
    char src[1024];
    char *p = src + sprintf(src, "model m { y = ");
    memset(p, '(', 200);   /* under PARSE_MAX_NEST, past the stacks' first 200 */
    p += 200;
    memset(p, 0x80, 30);   /* 30 lexical errors */
    strcpy(p + 30, "x }");
    jmp_buf stop;
    volatile int stopped = 0;
    if (setjmp(stop) == 0) {
        diag_set_recovery(&stop);
        parse(src);
    } else {
        stopped = 1;
    }
    diag_set_recovery(NULL);
    assert_true(stopped);
    assert_int_equal(diag_error_count(), DIAG_MAX_ERRORS);
    assert_diag("error: too many errors, stopping");
    diag_reset();
    assert_int_equal(diag_error_count(), 0);
    const Ast *f = parse("model m { y = x }");
    assert_int_equal(diag_error_count(), 0);
    assert_int_equal(f->list.n, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_precedence, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_comparisons_do_not_chain, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_pipes_and_calls, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_indexing, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_statements, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_statements_need_no_separator, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_top_level, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_empty_input, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_syntax_error_location, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_recovery_reports_several, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_unexpected_end, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_deep_nesting, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_deep_unary_and_long_chains, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_too_many_errors_return_to_recovery, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
