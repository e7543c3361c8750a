/* test_lexer.c -- the CDL scanner (grammar/cdl.l): tokens, literals, comments,
 * lexical errors and their locations. */
#include "test_util.h"

static void test_keywords_and_names(void **state) {
    (void)state;
    assert_string_equal(lex("model block input param output loss entry for in reversed return import train as true false"),
                        "model block input param output loss entry for in reversed return import train as true false");
    assert_string_equal(lex("models _x x1 In relu"), "ident:models ident:_x ident:x1 ident:In ident:relu");
    assert_int_equal(diag_error_count(), 0);
}

static void test_numbers(void **state) {
    (void)state;
    assert_string_equal(lex("0 42 0.5 1e-3 2.5E+4 007"), "int:0 int:42 real:0.5 real:1e-3 real:2.5E+4 int:7");
    /* a range is two integers around "..", not reals */
    assert_string_equal(lex("0..T"), "int:0 .. ident:T");
    assert_string_equal(lex("x[1:2]"), "ident:x [ int:1 : int:2 ]");
    assert_int_equal(diag_error_count(), 0);
}

static void test_operators_and_comments(void **state) {
    (void)state;
    assert_string_equal(lex("a |> b ** 2 @ c # comment ** |>\n- d / e * f"),
                        "ident:a |> ident:b ** int:2 @ ident:c - ident:d / ident:e * ident:f");
    assert_string_equal(lex("( ) [ ] { } , : = ; ."), "( ) [ ] { } , : = ; .");
    /* comparisons: the two-character ones are one token, "==" is not two "=" */
    assert_string_equal(lex("a<b<=c>d>=e==f!=g=h"),
                        "ident:a < ident:b <= ident:c > ident:d >= ident:e == ident:f != ident:g = ident:h");
    assert_string_equal(lex("# only a comment"), "");
    assert_string_equal(lex(""), "");
}

static void test_strings(void **state) {
    (void)state;
    assert_string_equal(lex("\"fashion-mnist\" \"a\\\"b\""), "str:fashion-mnist str:a\"b");
    assert_string_equal(lex("\"tab\\there\""), "str:tab\there");
    assert_int_equal(diag_error_count(), 0);
}

static void test_unterminated_string(void **state) {
    (void)state;
    const char *t = lex("x = \"abc\ny");
    assert_string_equal(t, "ident:x = str:abc ident:y");
    assert_int_equal(diag_error_count(), 1);
    assert_non_null(strstr(diags(), "t.cdl:1:5: error: unterminated string\n"));
}

static void test_bad_bytes(void **state) {
    (void)state;
    const char src[] = "a $ b \x01 c";
    assert_string_equal(lex_debug("t.cdl", src, sizeof src - 1), "ident:a ident:b ident:c");
    assert_int_equal(diag_error_count(), 2);
    assert_non_null(strstr(diags(), "t.cdl:1:3: error: unexpected character '$'"));
    assert_non_null(strstr(diags(), "t.cdl:1:7: error: unexpected byte 0x01"));
}

static void test_nul_byte(void **state) {
    (void)state;
    const char src[] = "a\0b";
    assert_string_equal(lex_debug("t.cdl", src, 3), "ident:a ident:b");
    assert_int_equal(diag_error_count(), 1);
    assert_non_null(strstr(diags(), "t.cdl:1:2: error: unexpected byte 0x00"));
}

static void test_locations_across_lines(void **state) {
    (void)state;
    lex("model m {\n  # c\n\t  $\n}");
    assert_non_null(strstr(diags(), "t.cdl:3:4: error: unexpected character '$'"));
    /* the quoted line and a caret under column 4 (tabs kept) */
    assert_non_null(strstr(diags(), "\n    \t  $\n    \t  ^\n"));
}

static void test_long_identifier(void **state) {
    (void)state;
    size_t n = 1 << 20;
    char *src = malloc(n + 1);
    memset(src, 'a', n);
    src[n] = 0;
    const char *t = lex_debug("t.cdl", src, n);
    assert_int_equal(strlen(t), strlen("ident:") + IDENT_MAX);
    assert_int_equal(diag_error_count(), 1);
    assert_non_null(strstr(diags(), "t.cdl:1:1: error: identifier too long (1048576 characters; at most 255)"));
    free(src);
}

static void test_number_too_large(void **state) {
    (void)state;
    lex("x = 123456789012345678901234567890 + 1e400");
    assert_int_equal(diag_error_count(), 2);
    assert_non_null(strstr(diags(), "t.cdl:1:5: error: integer '123456789012345678901234567890' is too large"));
    assert_non_null(strstr(diags(), "t.cdl:1:38: error: number '1e400' is out of range"));
}

static void test_nesting_limit(void **state) {
    (void)state;
    char src[PARSE_MAX_NEST + 10];
    memset(src, '(', sizeof src - 1);
    src[sizeof src - 1] = 0;
    const char *t = lex(src);
    /* the scan stops at the first bracket over the limit */
    assert_int_equal(strlen(t), 2 * PARSE_MAX_NEST - 1);
    assert_int_equal(diag_error_count(), 1);
    assert_non_null(strstr(diags(), "t.cdl:1:257: error: too deeply nested: more than 256 brackets open"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keywords_and_names, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_numbers, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_operators_and_comments, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_strings, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_unterminated_string, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_bad_bytes, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_nul_byte, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_locations_across_lines, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_long_identifier, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_number_too_large, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_nesting_limit, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
