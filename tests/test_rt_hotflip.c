/* test_rt_hotflip.c -- HotFlip (adversarial_text.c) on a hand-written model whose
 * flips are known in closed form.
 *
 * bag: x i32[B, T] (T = 3), e.delta [B, T, 2] (the perturb input), y i32[B];
 *      logits_k = sum over the real positions t (x_t != 0) of W[x_t, k] + delta[t, k],
 *      loss = mean cross-entropy.  d loss / d delta[t] = (p - onehot(y)) / nb at every
 *      position.  The vocabulary is "chars:a,b,c,d" (ids 2..5); W has 8 rows, and the
 *      ids the attack must never use (0 padding, 1 unknown, 6 and 7 beyond the
 *      vocabulary) carry the largest class-1 weights: the first-order favourites
 *      against a class-0 word, if the attack did not leave them out.
 */
#include "test_rt_util.h"
#include "adversarial_text.h"

#define HB 4
#define HT 3
#define HV 8
static const float bag_W[HV * 2] = {0, 9, 0, 9, 1, 0, 1, 0, 0, 1, 0, 3, 0, 20, 0, 20};

static double bag_run(cdl_net *net, int nb, int igrad) {
    const int32_t *x = net->in[0], *y = net->in[2];
    const float *W = net->param, *d = net->in[1];
    float *logit = net->act, *g = net->in_grad[1];
    double loss = 0;
    for (int r = 0; r < nb; r++) {
        double l[2] = {0, 0};
        for (int t = 0; t < HT; t++)
            for (int k = 0; k < 2; k++)
                l[k] += (x[r * HT + t] ? W[x[r * HT + t] * 2 + k] : 0) + d[(r * HT + t) * 2 + k];
        double mx = fmax(l[0], l[1]), z = exp(l[0] - mx) + exp(l[1] - mx);
        loss += log(z) + mx - l[y[r]];
        for (int k = 0; k < 2; k++) {
            logit[2 * r + k] = (float)l[k];
            for (int t = 0; igrad && t < HT; t++)
                g[(r * HT + t) * 2 + k] = (float)((exp(l[k] - mx) / z - (k == y[r])) / nb);
        }
    }
    net->out[0] = logit;
    net->loss = loss / nb;
    return net->loss;
}
static void bag_init(cdl_net *n, uint64_t s) {
    (void)s;
    memcpy(n->param, bag_W, sizeof bag_W);
}
static void bag_fwd(cdl_net *n, int nb) { bag_run(n, nb, 0); }
static double bag_grad(cdl_net *n, int nb) { return bag_run(n, nb, 0); }
static double bag_igrad(cdl_net *n, int nb) { return bag_run(n, nb, 1); }
static const cdl_tensor bag_params[] = {{"embed.weight", CDL_F32, 0, 2, {HV, 2}, 0, "t:1:1"}};
static const cdl_tensor bag_inputs[] = {{"x", CDL_I32, 0, 2, {HB, HT}, CDL_T_BATCHED, "t:2:1"},
                                        {"e.delta", CDL_F32, 0, 3, {HB, HT, 2}, CDL_T_BATCHED | CDL_T_PERTURB, "t:3:1"},
                                        {"y", CDL_I32, 0, 1, {HB}, CDL_T_BATCHED, "t:4:1"}};
static const cdl_tensor bag_outputs[] = {{"logits", CDL_F32, 0, 2, {HB, 2}, CDL_T_BATCHED, "t:5:1"}};
static const cdl_model bag = {CDL_ABI, "bag", "t", 0xB4, 4, HB, 1, bag_params, HV * 2, HV * 2, 3, bag_inputs, 1,
                              bag_outputs, 1, sizeof(float) * HB * 2, 0, NULL, "", bag_init, bag_fwd,
                              bag_grad, bag_igrad, NULL};
/* The same without the perturb mark. */
static const cdl_tensor nop_inputs[] = {{"x", CDL_I32, 0, 2, {HB, HT}, CDL_T_BATCHED, "t:2:1"},
                                        {"e.delta", CDL_F32, 0, 3, {HB, HT, 2}, CDL_T_BATCHED, "t:3:1"},
                                        {"y", CDL_I32, 0, 1, {HB}, CDL_T_BATCHED, "t:4:1"}};
static const cdl_model nop = {CDL_ABI, "nop", "t", 0xB5, 4, HB, 1, bag_params, HV * 2, HV * 2, 3, nop_inputs, 1,
                              bag_outputs, 1, sizeof(float) * HB * 2, 0, NULL, "", bag_init, bag_fwd,
                              bag_grad, bag_igrad, NULL};

static const char *voc = "chars:61,62,63,64";
static const char *classes = "north\nsouth";

/* rows 0..3: "ab" (0), "ccc" (1), "aaa" (0), "d" (1) */
static const int32_t bag_x[HB * HT] = {2, 3, 0, 4, 4, 4, 2, 2, 2, 5, 0, 0};
static const int32_t bag_y[HB] = {0, 1, 0, 1};

static cdl_adv *bag_attack(const cdl_model *m, const char *spec, cdl_net **net, FILE *show) {
    cdl_attack a;
    assert_int_equal(cdl_attack_parse(&a, spec), 0);
    cdl_hotflip_io io = {0, 2, voc, classes, show};
    cdl_adv *s = cdl_adv_new_text(m, &a, &io);
    if (!s) return NULL;
    assert_non_null(*net = cdl_net_new(m));
    bag_init(*net, 0);
    memcpy((*net)->in[0], bag_x, sizeof bag_x);
    memcpy((*net)->in[2], bag_y, sizeof bag_y);
    return s;
}

/* One flip on the first two rows (a training batch's attacked part; their 4
 * candidates are confirmed 2 at a time, in those rows alone): "ab" -> "db"
 * (the best flip: the first of two equal positions; it changes the class), "ccc" ->
 * "acc" (a and b tie: the lower id; the class stays); rows 2 and 3 are the batch's
 * clean examples and stay as they were. */
static void test_one_flip(void **st) {
    (void)st;
    cdl_net *net = NULL;
    cdl_adv *s = bag_attack(&bag, "hotflip:flips=1,cand=2", &net, NULL);
    assert_non_null(s);
    assert_int_equal(cdl_adv_perturb(s, net, 2, (cdl_rng_key){0, 0, 0}), 0);
    const int32_t *x = net->in[0], *y = net->in[2];
    const int32_t want[HB * HT] = {5, 3, 0, 2, 4, 4, 2, 2, 2, 5, 0, 0};
    assert_memory_equal(x, want, sizeof want);
    assert_memory_equal(y, bag_y, sizeof bag_y);
    const float *d = net->in[1];
    for (int i = 0; i < HB * HT * 2; i++) assert_true(d[i] == 0);
    int64_t attacked, changed, flips;
    cdl_hotflip_counts(cdl_adv_text(s), &attacked, &changed, &flips);
    assert_int_equal(attacked, 2);
    assert_int_equal(changed, 1);
    assert_int_equal(flips, 2);
    cdl_adv_free(s);
    cdl_net_free(net);
}

/* Two flips on the whole batch: "ccc" -> "aac" is now class 0; "aaa" -> "daa" is class
 * 1 after one flip and stops there; "d" (one real position) -> "a" (its padding is
 * never flipped); the words changed are printed with the class names. */
static void test_two_flips(void **st) {
    (void)st;
    cdl_net *net = NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *show = open_memstream(&buf, &len);
    assert_non_null(show);
    cdl_adv *s = bag_attack(&bag, "hotflip:flips=2,cand=3,show=10", &net, show);
    assert_non_null(s);
    assert_int_equal(cdl_adv_perturb(s, net, HB, (cdl_rng_key){0, 0, 0}), 0);
    fclose(show);
    const int32_t want[HB * HT] = {5, 3, 0, 2, 2, 4, 5, 2, 2, 2, 0, 0};
    assert_memory_equal(net->in[0], want, sizeof want);
    assert_string_equal(buf, "hotflip: ab (north) -> db (south)  [1 flip]\n"
                             "hotflip: ccc (south) -> aac (north)  [2 flips]\n"
                             "hotflip: aaa (north) -> daa (south)  [1 flip]\n"
                             "hotflip: d (south) -> a (north)  [1 flip]\n");
    free(buf);
    cdl_adv_free(s);
    cdl_net_free(net);
}

static void test_errors(void **st) {
    (void)st;
    cdl_net *net = NULL;
    assert_null(bag_attack(&nop, "hotflip", &net, NULL));
    expect_error("model nop has no perturb() input");
    cdl_attack a;
    assert_int_equal(cdl_attack_parse(&a, "hotflip:flips=0"), -1);
    expect_error("flips and cand must be at least 1");
    assert_int_equal(cdl_attack_parse(&a, "hotflip:beam=2"), -1);
    expect_error("unknown key 'beam'");
    assert_int_equal(cdl_attack_parse(&a, "hotflip:flips"), -1);     /* the shared key=value walk */
    expect_error("attack 'hotflip:flips': 'flips' is not key=value");
    assert_int_equal(cdl_attack_parse(&a, "hotflip:cand=2,show="), -1);
    expect_error("'show=' is not key=value");
    assert_int_equal(cdl_attack_parse(&a, "hotflip:cand=3,,flips=2"), 0);  /* empty items skipped, as for pgd */
    assert_true(a.cand == 3 && a.steps == 2);
    cdl_hotflip_io io = {0, 2, "bytes", NULL, NULL};
    assert_int_equal(cdl_attack_parse(&a, "hotflip"), 0);
    assert_null(cdl_adv_new_text(&bag, &a, &io));
    expect_error("no character vocabulary");
    io.vocab = voc;
    io.ids = 1;                                   /* a real input is not the ids */
    assert_null(cdl_adv_new_text(&bag, &a, &io));
    expect_error("no i32 ids input");
    char spec[128];
    assert_int_equal(cdl_attack_parse(&a, "hotflip:show=3,ratio=0.25"), 0);
    cdl_attack_str(&a, spec, sizeof spec);
    assert_string_equal(spec, "hotflip:flips=1,cand=10,ratio=0.25,show=3");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_flip),
        cmocka_unit_test(test_two_flips),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
