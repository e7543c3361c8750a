/* test_rt_core.c -- runtime core: allocation hook and errors, Philox RNG and
 * initialisers, nets, optimizers (against hand-computed updates). */
#include "test_rt_util.h"
#include "optim_groups.h"

#include <pthread.h>

void cdl_philox_raw(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* ---------------------------------------------------------------- test allocator */

/* Counts live blocks and fails the allocation numbered fail_at (1-based) if set. */
typedef struct count_alloc { long live, total, fail_at; } count_alloc;

static void *counting(void *ud, void *p, size_t n) {
    count_alloc *c = ud;
    if (n == 0) {
        if (p) c->live--;
        free(p);
        return NULL;
    }
    if (p) return NULL;
    c->total++;
    if (c->fail_at && c->total == c->fail_at) return NULL;
    void *q = malloc(n);
    if (q) c->live++;
    return q;
}

/* ---------------------------------------------------------------- alloc */

static void test_alloc_zeroed_aligned(void **st) {
    (void)st;
    uint64_t before = cdl_alloc_count();
    for (size_t n = 0; n < 300; n += 37) {
        unsigned char *p = cdl_alloc(n);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 64, 0);
        for (size_t i = 0; i < n; i++) assert_int_equal(p[i], 0);
        memset(p, 0xab, n);
        cdl_free(p);
    }
    assert_int_equal(cdl_alloc_count() - before, 9);
    cdl_free(NULL);
}

/* Resident pages of this process (/proc/self/statm), -1 without /proc. */
static long resident_pages(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size, res = -1;
    if (f && fscanf(f, "%ld %ld", &size, &res) != 2) res = -1;
    if (f) fclose(f);
    return res;
}

/* A large block is zero without being written: cdl_alloc does not touch its pages
 * (calloc takes them fresh from the kernel), so the process does not grow by the
 * block until it is used (it grew by all 64 MB when every block was memset).  A
 * reused block is still zero. */
static void test_alloc_large_untouched(void **st) {
    (void)st;
    size_t n = (size_t)64 << 20;
    long r0 = resident_pages();
    unsigned char *p = cdl_alloc(n);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 64, 0);
    long r1 = resident_pages();
    if (r0 > 0 && r1 > 0) assert_true((size_t)(r1 - r0) * (size_t)sysconf(_SC_PAGESIZE) < n / 4);
    for (size_t i = 0; i < n; i += 4093) assert_int_equal(p[i], 0);
    assert_int_equal(p[n - 1], 0);
    cdl_free(p);
    for (int k = 0; k < 2; k++) {                   /* the same sizes again: reused, cleared */
        unsigned char *q = cdl_alloc(100000), *r = cdl_alloc(5000);
        for (size_t i = 0; i < 100000; i++) assert_int_equal(q[i], 0);
        for (size_t i = 0; i < 5000; i++) assert_int_equal(r[i], 0);
        memset(q, 0xcd, 100000);
        memset(r, 0xcd, 5000);
        cdl_free(q);
        cdl_free(r);
    }
}

static void test_alloc_hook(void **st) {
    (void)st;
    count_alloc c = {0, 0, 0};
    cdl_set_allocator(counting, &c);
    void *a = cdl_alloc(100), *b = cdl_alloc(1);
    assert_int_equal(c.live, 2);
    cdl_free(a);
    cdl_free(b);
    assert_int_equal(c.live, 0);
    for (int k = 0; k < 2; k++) {                   /* the hook's blocks are cleared too */
        unsigned char *q = cdl_alloc(4000);
        for (size_t i = 0; i < 4000; i++) assert_int_equal(q[i], 0);
        memset(q, 0xee, 4000);
        cdl_free(q);
    }
    c.fail_at = 5;
    assert_null(cdl_alloc(10));
    assert_non_null(strstr(cdl_last_error(), "out of memory"));
    assert_null(cdl_alloc(SIZE_MAX - 10));        /* overflow is refused, not wrapped */
    cdl_set_allocator(NULL, NULL);
    void *d = cdl_alloc(8);
    assert_non_null(d);
    assert_int_equal((uintptr_t)d % 64, 0);
    cdl_free(d);
}

static void *err_thread(void *arg) {
    (void)arg;
    cdl_fail("thread %d", 2);
    return strcmp(cdl_last_error(), "thread 2") == 0 ? arg : NULL;
}

static void test_fail_message(void **st) {
    (void)st;
    assert_int_equal(cdl_fail("data.c: %s: bad %d", "x.gz", 7), -1);
    assert_string_equal(cdl_last_error(), "data.c: x.gz: bad 7");
    pthread_t th;
    void *r = NULL;
    static int token;
    assert_int_equal(pthread_create(&th, NULL, err_thread, &token), 0);
    pthread_join(th, &r);
    assert_ptr_equal(r, &token);
    assert_string_equal(cdl_last_error(), "data.c: x.gz: bad 7");   /* per thread */
    /* a message wrapping the last one (trainer.c: "--attack: %s", cdl_last_error()):
     * the old text was overwritten while it was read, "eval: --attack: eval: --at..." */
    cdl_fail("attack '%s': bad", "fgsm:eps=x");
    cdl_fail("%s: --%s: %s", "eval", "attack", cdl_last_error());
    assert_string_equal(cdl_last_error(), "eval: --attack: attack 'fgsm:eps=x': bad");
}

/* ---------------------------------------------------------------- rng */

/* Random123's known-answer vectors for philox4x32_10. */
static void test_philox_kat(void **st) {
    (void)st;
    static const uint32_t v[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {~0u, ~0u, ~0u, ~0u, ~0u, ~0u, 0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
         0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int t = 0; t < 3; t++) {
        uint32_t out[4];
        cdl_philox_raw(v[t], v[t] + 4, out);
        for (int i = 0; i < 4; i++) assert_int_equal(out[i], v[t][6 + i]);
    }
}

static void test_rng_keys(void **st) {
    (void)st;
    cdl_rng_key k = {42, 7, 3};
    uint32_t a[4], b[4];
    cdl_philox(k, 5, a);
    cdl_philox(k, 5, b);
    assert_memory_equal(a, b, sizeof a);
    cdl_rng_key ks[3] = {{43, 7, 3}, {42, 8, 3}, {42, 7, 4}};
    for (int i = 0; i < 3; i++) {
        cdl_philox(ks[i], 5, b);
        assert_memory_not_equal(a, b, sizeof a);
    }
    cdl_philox(k, 6, b);
    assert_memory_not_equal(a, b, sizeof a);
}

static void test_rand_uniform(void **st) {
    (void)st;
    enum { N = 20000 };
    static float f[N];
    static double d[N];
    cdl_rng_key k = {1, 0, 9};
    cdl_rand_f32(k, 0, N, f);
    cdl_rand_f64(k, 0, N, d);
    double s = 0, s2 = 0;
    for (int i = 0; i < N; i++) {
        assert_true(f[i] >= 0 && f[i] < 1);
        assert_true(d[i] >= 0 && d[i] < 1);
        assert_true(fabs(f[i] - d[i]) < 1e-7);        /* f32 = top 24 of the 53 bits */
        s += d[i];
        s2 += d[i] * d[i];
    }
    double mean = s / N, var = s2 / N - mean * mean;
    assert_true(fabs(mean - 0.5) < 0.01);
    assert_true(fabs(var - 1.0 / 12) < 0.005);
    /* element i depends on base + i only */
    double part[10];
    cdl_rand_f64(k, 1234, 10, part);
    assert_memory_equal(part, d + 1234, sizeof part);
}

static void test_randn(void **st) {
    (void)st;
    enum { N = 20001 };
    static double d[N];
    static float f[N];
    cdl_rng_key k = {5, 11, 2};
    cdl_randn_f64(k, 0, N, d);
    cdl_randn_f32(k, 0, N, f);
    double s = 0, s2 = 0, s4 = 0;
    for (int i = 0; i < N; i++) {
        assert_true(isfinite(d[i]));
        assert_true(f[i] == (float)d[i]);
        s += d[i];
        s2 += d[i] * d[i];
        s4 += d[i] * d[i] * d[i] * d[i];
    }
    assert_true(fabs(s / N) < 0.03);
    assert_true(fabs(s2 / N - 1) < 0.04);
    assert_true(fabs(s4 / N - 3) < 0.3);                /* Gaussian kurtosis */
    /* pairing does not depend on base / n: odd and even starts, odd lengths */
    double part[7];
    for (uint64_t base = 0; base < 6; base++) {
        for (int64_t n = 1; n <= 7; n++) {
            cdl_randn_f64(k, base, n, part);
            assert_memory_equal(part, d + base, (size_t)n * sizeof(double));
        }
    }
    /* both outputs of a pair are used: neighbours differ */
    assert_true(d[0] != d[1]);
}

static void test_init(void **st) {
    (void)st;
    enum { N = 6000 };
    static double p[N];
    static float q[N];
    cdl_rng_key k = {3, 0, 1};
    cdl_init_f64(p, N, CDL_INIT_CONSTANT, 2.5, 0, 1, 1, k);
    assert_true(p[0] == 2.5 && p[N - 1] == 2.5);
    cdl_init_f64(p, N, CDL_INIT_ONES, 0, 0, 1, 1, k);
    assert_true(p[17] == 1);
    cdl_init_f64(p, N, CDL_INIT_ZEROS, 0, 0, 1, 1, k);
    assert_true(p[17] == 0);

    struct { cdl_init_kind kind; double a, b; int64_t fi, fo; double lo, hi; } u[] = {
        {CDL_INIT_UNIFORM, -2, 3, 1, 1, -2, 3},
        {CDL_INIT_XAVIER_UNIFORM, 0, 0, 100, 50, -0.2, 0.2},       /* sqrt(6/150) */
        {CDL_INIT_XAVIER_UNIFORM, 2, 0, 100, 50, -0.4, 0.4},
        {CDL_INIT_HE_UNIFORM, 0, 0, 24, 7, -0.5, 0.5},             /* sqrt(6/24) */
        {CDL_INIT_DEFAULT, 0, 0, 25, 7, -0.2, 0.2},                /* 1/sqrt(25) */
    };
    for (size_t t = 0; t < sizeof u / sizeof u[0]; t++) {
        cdl_init_f64(p, N, u[t].kind, u[t].a, u[t].b, u[t].fi, u[t].fo, k);
        cdl_init_f32(q, N, u[t].kind, u[t].a, u[t].b, u[t].fi, u[t].fo, k);
        double mn = 1e9, mx = -1e9;
        for (int i = 0; i < N; i++) {
            mn = fmin(mn, p[i]);
            mx = fmax(mx, p[i]);
            assert_true(q[i] == (float)p[i]);
        }
        double w = u[t].hi - u[t].lo;
        assert_true(mn >= u[t].lo && mx <= u[t].hi);
        assert_true(mn < u[t].lo + 0.01 * w && mx > u[t].hi - 0.01 * w);
    }
    struct { cdl_init_kind kind; double a, b; int64_t fi, fo; double mean, sd; } g[] = {
        {CDL_INIT_NORMAL, 1, 0.5, 1, 1, 1, 0.5},
        {CDL_INIT_XAVIER_NORMAL, 0, 0, 60, 40, 0, 0.141421356},    /* sqrt(2/100) */
        {CDL_INIT_HE_NORMAL, 0, 0, 50, 3, 0, 0.2},                 /* sqrt(2/50) */
    };
    for (size_t t = 0; t < sizeof g / sizeof g[0]; t++) {
        cdl_init_f64(p, N, g[t].kind, g[t].a, g[t].b, g[t].fi, g[t].fo, k);
        double s = 0, s2 = 0;
        for (int i = 0; i < N; i++) s += p[i];
        double mean = s / N;
        for (int i = 0; i < N; i++) s2 += (p[i] - mean) * (p[i] - mean);
        double sd = sqrt(s2 / N);
        assert_true(fabs(mean - g[t].mean) < 0.05 * g[t].sd);
        assert_true(fabs(sd / g[t].sd - 1) < 0.04);
    }
}

/* ---------------------------------------------------------------- net */

static const cdl_tensor tiny_params[] = {
    {"fc.weight", CDL_F32, 0, 2, {3, 4}, 0, "t.cdl:1:1"},
    {"fc.bias", CDL_F32, 12, 1, {3}, 0, "t.cdl:1:1"},
    {"bn.running_mean", CDL_F32, 15, 1, {3}, CDL_T_STATE, "t.cdl:2:1"},
};
static const cdl_tensor tiny_inputs[] = {
    {"x", CDL_F32, 0, 4, {8, 1, 2, 2}, CDL_T_BATCHED, "t.cdl:3:1"},
    {"y", CDL_I32, 0, 1, {8}, CDL_T_BATCHED, "t.cdl:4:1"},
    {"z", CDL_F32, 0, 2, {8, 3}, CDL_T_BATCHED, "t.cdl:5:1"},
};
static const cdl_tensor tiny_outputs[] = {
    {"logits", CDL_F32, 0, 2, {8, 3}, CDL_T_BATCHED, "t.cdl:6:1"},
};

static cdl_model tiny_model(int real_size) {
    cdl_model m;
    memset(&m, 0, sizeof m);
    m.abi = CDL_ABI;
    m.name = "tiny";
    m.real_size = real_size;
    m.batch = 8;
    m.n_params = 3;
    m.params = tiny_params;
    m.param_count = 18;
    m.train_count = 15;
    m.n_inputs = 3;
    m.inputs = tiny_inputs;
    m.n_outputs = 1;
    m.outputs = tiny_outputs;
    m.act_bytes = 1000;
    m.train_defaults = "";
    return m;
}

static void test_net_new(void **st) {
    (void)st;
    for (int rs = 4; rs <= 8; rs += 4) {
        cdl_model m = tiny_model(rs);
        count_alloc c = {0, 0, 0};
        cdl_set_allocator(counting, &c);
        cdl_net *net = cdl_net_new(&m);
        assert_non_null(net);
        assert_ptr_equal(net->model, &m);
        assert_int_equal(net->step, 0);
        assert_non_null(net->in_grad[0]);
        assert_null(net->in_grad[1]);
        assert_non_null(net->in_grad[2]);
        for (int i = 0; i < 3; i++)      /* 64-byte aligned relative to the block */
            assert_int_equal(((char *)net->in[i] - (char *)net->in[0]) % 64, 0);
        /* every buffer is writable to its full size (ASan checks the bounds) */
        memset(net->param, 1, 18 * (size_t)rs);
        memset(net->grad, 1, 15 * (size_t)rs);
        memset(net->act, 1, 1000);
        memset(net->in[0], 1, 32 * (size_t)rs);
        memset(net->in[1], 1, 8 * 4);
        memset(net->in[2], 1, 24 * (size_t)rs);
        memset(net->in_grad[0], 1, 32 * (size_t)rs);
        memset(net->in_grad[2], 1, 24 * (size_t)rs);
        net->out[0] = net->act;
        cdl_net_free(net);
        assert_int_equal(c.live, 0);
        /* failing each allocation in turn: NULL, a message, no leak */
        long total = c.total;
        for (long f = 1; f <= total; f++) {
            c = (count_alloc){0, 0, f};
            assert_null(cdl_net_new(&m));
            assert_non_null(strstr(cdl_last_error(), "out of memory"));
            assert_int_equal(c.live, 0);
        }
        cdl_set_allocator(NULL, NULL);
    }
    cdl_model bad = tiny_model(3);
    assert_null(cdl_net_new(&bad));
    assert_non_null(strstr(cdl_last_error(), "real_size"));
    bad = tiny_model(4);
    bad.train_count = 99;
    assert_null(cdl_net_new(&bad));
    assert_null(cdl_net_new(NULL));
    cdl_net_free(NULL);
}

static void test_net_lookup(void **st) {
    (void)st;
    cdl_model m = tiny_model(4);
    assert_int_equal(cdl_model_find_param(&m, "fc.bias"), 1);
    assert_int_equal(cdl_model_find_param(&m, "bn.running_mean"), 2);
    assert_int_equal(cdl_model_find_param(&m, "fc"), -1);
    assert_int_equal(cdl_model_find_input(&m, "y"), 1);
    assert_int_equal(cdl_model_find_input(&m, "w"), -1);
    assert_int_equal(cdl_tensor_numel(&tiny_inputs[0], 5), 20);
    assert_int_equal(cdl_tensor_numel(&tiny_inputs[0], 8), 32);
    assert_int_equal(cdl_tensor_numel(&tiny_params[0], 5), 12);   /* not batched */
    cdl_tensor scalar = {"s", CDL_F32, 0, 0, {0}, 0, NULL};
    assert_int_equal(cdl_tensor_numel(&scalar, 3), 1);
}

/* ---------------------------------------------------------------- optimizers */

/* Run `steps` updates on a net with params p0 (first 2 trainable elements used) and
 * gradient sequences g[step][elem]; return the final 2 params in out.  Both
 * precisions are run; the f32 result must match the f64 one closely. */
static void run_opt(const char *spec, int steps, const double p0[2], const double g[][2],
                    double out[2]) {
    double res[2][2];
    for (int prec = 0; prec < 2; prec++) {
        int rs = prec ? 8 : 4;
        cdl_model m = tiny_model(rs);
        m.train_count = 2;
        cdl_net *net = cdl_net_new(&m);
        assert_non_null(net);
        cdl_optim_cfg cfg;
        assert_int_equal(cdl_optim_parse(&cfg, spec), 0);
        cdl_optim o;
        assert_int_equal(cdl_optim_init(&o, &m, &cfg), 0);
        for (int i = 0; i < 2; i++) {
            if (rs == 4) ((float *)net->param)[i] = (float)p0[i];
            else ((double *)net->param)[i] = p0[i];
        }
        if (rs == 4) ((float *)net->param)[2] = 7;                  /* beyond train_count */
        else ((double *)net->param)[2] = 7;
        uint64_t nalloc = cdl_alloc_count();
        for (int s = 0; s < steps; s++) {
            for (int i = 0; i < 2; i++) {
                if (rs == 4) ((float *)net->grad)[i] = (float)g[s][i];
                else ((double *)net->grad)[i] = g[s][i];
            }
            cdl_optim_step(&o, net, cfg.lr);
        }
        assert_int_equal(cdl_alloc_count(), nalloc);               /* no allocation in step */
        assert_int_equal(o.t, (uint64_t)steps);
        for (int i = 0; i < 2; i++)
            res[prec][i] = rs == 4 ? ((float *)net->param)[i] : ((double *)net->param)[i];
        assert_true(rs == 4 ? ((float *)net->param)[2] == 7 : ((double *)net->param)[2] == 7);
        cdl_optim_free(&o);
        cdl_net_free(net);
    }
    for (int i = 0; i < 2; i++) {
        assert_true(fabs(res[0][i] - res[1][i]) < 1e-5 * (1 + fabs(res[1][i])));
        out[i] = res[1][i];
    }
}

#define NEAR(a, b) assert_true(fabs((a) - (b)) < 1e-12 * (1 + fabs(b)))

static void test_sgd(void **st) {
    (void)st;
    const double p0[2] = {1, -2};
    const double g[3][2] = {{1, 0.5}, {1, -1}, {2, 0}};
    double out[2];
    /* plain: p -= lr g */
    run_opt("sgd:lr=0.1", 3, p0, g, out);
    NEAR(out[0], 1 - 0.1 * 4);
    NEAR(out[1], -2 - 0.1 * (-0.5));
    /* momentum 0.9: buf 1, 1.9, 3.71; p = 1 - .1 - .19 - .371 */
    run_opt("sgd:lr=0.1,momentum=0.9", 3, p0, g, out);
    NEAR(out[0], 1 - 0.1 - 0.19 - 0.371);
    /* element 1: buf .5, -.55, -.495 */
    NEAR(out[1], -2 - 0.05 + 0.055 + 0.0495);
    /* nesterov: d + mu buf: 1.9, 1 + .9*1.9 = 2.71, 2 + .9*3.71 = 5.339 */
    run_opt("sgd:lr=0.1,momentum=0.9,nesterov=1", 3, p0, g, out);
    NEAR(out[0], 1 - 0.19 - 0.271 - 0.5339);
    /* weight decay, no momentum: p1 = 1 - .1(1 + .1) = .89; p2 = .89 - .1(1 + .089) */
    run_opt("sgd:lr=0.1,weight_decay=0.1", 2, p0, g, out);
    NEAR(out[0], 0.89 - 0.1 * (1 + 0.089));
}

static void test_adam(void **st) {
    (void)st;
    const double p0[2] = {1, 3};
    const double g[2][2] = {{1, 2}, {-1, 2}};
    double out[2];
    /* step 1: m = .1 g, v = .001 g^2, mhat = g, vhat = g^2: p -= lr * g / (|g| + eps) */
    run_opt("adam:lr=0.1,eps=0", 1, p0, g, out);
    NEAR(out[0], 0.9);
    NEAR(out[1], 2.9);
    /* step 2, element 0: m = -.01, v = .001999, mhat = -.01/.19, vhat = 1 */
    run_opt("adam:lr=0.1,eps=0", 2, p0, g, out);
    NEAR(out[0], 0.9 + 0.1 * 0.01 / 0.19);
    NEAR(out[1], 2.8);
    /* eps enters as sqrt(vhat) + eps */
    run_opt("adam:lr=0.1,eps=0.5", 1, p0, g, out);
    NEAR(out[0], 1 - 0.1 / 1.5);
    /* Adam weight decay is L2 on the gradient: g = 1 + .5 * 1 */
    run_opt("adam:lr=0.1,eps=0.5,weight_decay=0.5", 1, p0, g, out);
    NEAR(out[0], 1 - 0.1 * 1.5 / 2.0);
    /* AdamW decays the parameter: p = 1 (1 - .1 * .5) - .1 * 1 / 1.5 */
    run_opt("adamw:lr=0.1,eps=0.5,weight_decay=0.5", 1, p0, g, out);
    NEAR(out[0], 0.95 - 0.1 / 1.5);
    run_opt("adamw:lr=0.1,beta1=0.5,beta2=0.75,eps=0,wd=0", 2, p0, g, out);
    /* element 0: m = .5, v = .25; then m = -.25, v = .4375; bc1 = .75, bc2 = .4375 */
    NEAR(out[0], 0.9 - 0.1 * (-0.25 / 0.75) / 1.0);
}

/* A slab of 300,007 reals (over the pool's split size, cut unevenly): every optimizer,
 * f32 and f64, gives the same parameters and state bits at 1, 2 and 3 threads
 * (optim.c runs the update as ranges on the pool), and allocates nothing in a step. */
static const cdl_tensor big_params[] = {{"w", CDL_F32, 0, 1, {300007}, 0, "b.cdl:1:1"}};

/* A net of m and an optimizer o parsed from spec into cfg (all checked). */
static cdl_net *net_with_optim(const cdl_model *m, const char *spec, cdl_optim_cfg *cfg, cdl_optim *o) {
    cdl_net *net = cdl_net_new(m);
    assert_non_null(net);
    assert_int_equal(cdl_optim_parse(cfg, spec), 0);
    assert_int_equal(cdl_optim_init(o, m, cfg), 0);
    return net;
}

static void big_opt(const char *spec, int rs, int threads, char **out, size_t *len) {
    cdl_model m = tiny_model(rs);
    m.n_params = 1;
    m.params = big_params;
    m.param_count = m.train_count = 300007;
    cdl_optim_cfg cfg;
    cdl_optim o;
    cdl_net *net = net_with_optim(&m, spec, &cfg, &o);
    cdl_parallel_set_threads(threads);
    const size_t n = 300007, b = n * (size_t)rs;
    for (size_t i = 0; i < n; i++) {
        double v = 1 + (double)(i % 101) / 50;
        if (rs == 4) ((float *)net->param)[i] = (float)v;
        else ((double *)net->param)[i] = v;
    }
    uint64_t nalloc = cdl_alloc_count();
    for (int s = 0; s < 3; s++) {
        for (size_t i = 0; i < n; i++) {
            double v = sin((double)i * 0.37 + s);
            if (rs == 4) ((float *)net->grad)[i] = (float)v;
            else ((double *)net->grad)[i] = v;
        }
        cdl_optim_step(&o, net, cfg.lr);
    }
    assert_int_equal(cdl_alloc_count(), nalloc);
    *len = b * (size_t)(1 + o.n_slots);
    *out = malloc(*len);
    assert_non_null(*out);
    memcpy(*out, net->param, b);
    for (int k = 0; k < o.n_slots; k++) memcpy(*out + b * (size_t)(k + 1), o.slot[k], b);
    cdl_optim_free(&o);
    cdl_net_free(net);
    cdl_parallel_set_threads(1);
}

/* cdl_optim_step_count: Adam and AdamW see the Inf and NaN gradient values of the
 * slab in their update pass, at 1 and 2 threads (the pool's ranges add up), in f32 and
 * f64; finite gradients count 0; SGD does not count. */
static void test_optim_step_count(void **st) {
    (void)st;
    const char *specs[] = {"adam", "adamw", "sgd"};
    for (int rs = 4; rs <= 8; rs += 4)
        for (int k = 0; k < 3; k++)
            for (int threads = 1; threads <= 2; threads++) {
                cdl_model m = tiny_model(rs);
                m.n_params = 1;
                m.params = big_params;
                m.param_count = m.train_count = 300007;
                cdl_net *net = cdl_net_new(&m);
                cdl_optim_cfg cfg;
                cdl_optim o;
                assert_int_equal(cdl_optim_parse(&cfg, specs[k]), 0);
                assert_int_equal(cdl_optim_init(&o, &m, &cfg), 0);
                assert_int_equal(cdl_optim_counts_nonfinite(&o), k < 2);
                cdl_parallel_set_threads(threads);
                for (size_t i = 0; i < 300007; i++) {
                    double v = sin((double)i * 0.37);
                    if (rs == 4) ((float *)net->grad)[i] = (float)v;
                    else ((double *)net->grad)[i] = v;
                }
                assert_int_equal(cdl_optim_step_count(&o, net, cfg.lr), 0);
                size_t at[3] = {5, 150001, 300006};
                double bad[3] = {NAN, INFINITY, -INFINITY};
                for (int j = 0; j < 3; j++) {
                    if (rs == 4) ((float *)net->grad)[at[j]] = (float)bad[j];
                    else ((double *)net->grad)[at[j]] = bad[j];
                }
                if (k < 2) assert_true(cdl_optim_step_count(&o, net, cfg.lr) > 0);
                else assert_int_equal(cdl_optim_step_count(&o, net, cfg.lr), 0);
                cdl_optim_free(&o);
                cdl_net_free(net);
                cdl_parallel_set_threads(1);
            }
}

static void test_optim_threads(void **st) {
    (void)st;
    const char *specs[] = {"sgd:lr=0.1", "sgd:lr=0.1,momentum=0.9,nesterov,wd=0.01", "adam:lr=0.01,wd=0.1",
                           "adamw:lr=0.01", "rmsprop:centered,momentum=0.5", "adagrad:lr=0.1,lr_decay=0.1"};
    for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++)
        for (int rs = 4; rs <= 8; rs += 4) {
            char *ref, *got;
            size_t nref, ngot;
            big_opt(specs[k], rs, 1, &ref, &nref);
            for (int t = 2; t <= 3; t++) {
                big_opt(specs[k], rs, t, &got, &ngot);
                assert_int_equal(ngot, nref);
                assert_memory_equal(got, ref, nref);
                free(got);
            }
            free(ref);
        }
}

/* ---------------------------------------------------------------- parameter groups */

static const cdl_tensor group_params[] = {
    {"conv1.weight", CDL_F32, 0, 2, {2, 2}, 0, "g.cdl:1:1"},
    {"conv1.bias", CDL_F32, 4, 1, {2}, 0, "g.cdl:1:1"},
    {"ln1.weight", CDL_F32, 6, 1, {2}, 0, "g.cdl:2:1"},
    {"head.weight", CDL_F32, 8, 2, {2, 2}, 0, "g.cdl:3:1"},
    {"bn.running_mean", CDL_F32, 12, 1, {2}, CDL_T_STATE, "g.cdl:4:1"},
};

static cdl_model group_model(void) {
    cdl_model m = tiny_model(8);
    m.name = "grouped";
    m.n_params = 5;
    m.params = group_params;
    m.param_count = 14;
    m.train_count = 12;
    return m;
}

/* steps updates of spec with groups (groups, no_decay, freeze) on params 1 + i / 10,
 * gradients sin(i + s); writes the params and slot 0 to p and slot. */
static void run_groups(const char *spec, const char *groups, const char *no_decay, const char *freeze, int steps,
                       double p[12], double slot[12]) {
    cdl_model m = group_model();
    cdl_optim_cfg cfg;
    cdl_optim o;
    cdl_net *net = net_with_optim(&m, spec, &cfg, &o);
    assert_int_equal(cdl_optim_groups(&o, groups, no_decay, freeze), 0);
    double *w = net->param, *g = net->grad;
    for (int i = 0; i < 14; i++) w[i] = 1 + i / 10.0;
    uint64_t nalloc = cdl_alloc_count();
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < 12; i++) g[i] = sin(i + s);
        cdl_optim_zero_frozen(&o, net);
        cdl_optim_step(&o, net, cfg.lr);
    }
    assert_int_equal(cdl_alloc_count(), nalloc);                  /* no allocation in a step */
    assert_true(w[12] == 2.2 && w[13] == 2.3);                      /* the buffer is no parameter */
    memcpy(p, w, 12 * sizeof *p);
    if (o.n_slots) memcpy(slot, o.slot[0], 12 * sizeof *slot);
    cdl_optim_free(&o);
    cdl_net_free(net);
}

/* Frozen tensors keep their values and optimizer state; the others update exactly as
 * without groups (the same elementwise loop over their ranges). */
static void test_groups_freeze(void **st) {
    (void)st;
    const char *specs[] = {"adam:lr=0.1,weight_decay=0.01", "sgd:lr=0.1,momentum=0.9", "rmsprop:centered,momentum=0.5",
                           "adagrad:lr=0.1,lr_decay=0.1", "adamw:lr=0.01"};
    for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
        double p[12], slot[12] = {0}, ref[12], rslot[12] = {0};
        run_groups(specs[k], "", "", "conv1.*", 3, p, slot);
        run_groups(specs[k], NULL, NULL, NULL, 3, ref, rslot);
        for (int i = 0; i < 6; i++) {
            assert_true(p[i] == 1 + i / 10.0);
            assert_true(slot[i] == 0);
        }
        for (int i = 6; i < 12; i++) {
            assert_true(p[i] == ref[i] && p[i] != 1 + i / 10.0);
            assert_true(slot[i] == rslot[i]);
        }
    }
    /* "none" clears a setting (the command line over a model's train {} section) */
    double p[12], slot[12], ref[12];
    run_groups("sgd:lr=0.1", "none", "none", "none", 2, p, slot);
    run_groups("sgd:lr=0.1", "", "", "", 2, ref, slot);
    assert_memory_equal(p, ref, sizeof p);
}

/* no_decay "bias,norm": the bias and the rank-1 ln1.weight get no weight decay, the
 * matrices do (zero gradients: only the decay moves a parameter). */
static void test_groups_no_decay(void **st) {
    (void)st;
    cdl_model m = group_model();
    cdl_net *net = cdl_net_new(&m);
    cdl_optim_cfg cfg;
    cdl_optim o;
    assert_int_equal(cdl_optim_parse(&cfg, "sgd:lr=0.1,weight_decay=0.5"), 0);
    assert_int_equal(cdl_optim_init(&o, &m, &cfg), 0);
    assert_int_equal(cdl_optim_groups(&o, "head.*:lr=0.01", "bias,norm", ""), 0);
    double *w = net->param, *g = net->grad;
    for (int i = 0; i < 12; i++) w[i] = 1, g[i] = 0;
    cdl_optim_step(&o, net, 0.1);
    for (int i = 0; i < 4; i++) NEAR(w[i], 1 - 0.1 * 0.5);          /* conv1.weight: decayed */
    for (int i = 4; i < 8; i++) assert_true(w[i] == 1);              /* conv1.bias, ln1.weight */
    for (int i = 8; i < 12; i++) NEAR(w[i], 1 - 0.01 * 0.5);         /* head: its group's lr */
    /* a group's lr follows the schedule in proportion: lr_t 0.05 of 0.1 halves it */
    for (int i = 0; i < 12; i++) w[i] = 1, g[i] = 1;
    cdl_optim_step(&o, net, 0.05);
    NEAR(w[4], 1 - 0.05);
    NEAR(w[8], 1 - 0.005 * 1.5);
    char d[160];
    cdl_optim_describe(&o, d, sizeof d);
    assert_string_equal(d, "0 tensors frozen, 2 without weight decay, 1 in --groups");
    cdl_optim_free(&o);
    cdl_net_free(net);
}

static void test_groups_errors(void **st) {
    (void)st;
    cdl_model m = group_model();
    cdl_optim_cfg cfg;
    cdl_optim o;
    assert_int_equal(cdl_optim_parse(&cfg, "adam"), 0);
    const struct { const char *groups, *no_decay, *freeze, *msg; } bad[] = {
        {"", "", "conv9.*", "--freeze: pattern 'conv9.*' matches no trainable parameter of model grouped"},
        {"", "running_mean", "", "--no-decay: pattern 'running_mean' matches no trainable parameter of model grouped"},
        {"conv1.*:lr=0.1;bias:lr=0.2", "", "", "--groups: parameter conv1.bias is in group 1 and group 2"},
        {"head.*:momentum=0.9", "", "", "--groups: group 1: unknown key 'momentum' (lr, weight_decay)"},
        {"head.*", "", "", "--groups 'head.*': want PATTERNS:lr=X,weight_decay=Y"},
        {"head.*:lr=-1", "", "", "--groups: group 1: 'lr=-1' needs a number >= 0 (lr=X, weight_decay=Y)"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        assert_int_equal(cdl_optim_init(&o, &m, &cfg), 0);
        assert_int_equal(cdl_optim_groups(&o, bad[k].groups, bad[k].no_decay, bad[k].freeze), -1);
        assert_string_equal(cdl_last_error(), bad[k].msg);
        cdl_optim_free(&o);
    }
}

/* The update rules of torch.optim.RMSprop and torch.optim.Adagrad written out in
 * double for a few steps of run_opt's two parameters (the kernels keep the sums in
 * their own order, so the comparison allows rounding). */
static void rmsprop_ref(double lr, double alpha, double eps, double wd, double mu, int centered, int steps,
                        const double p0[2], const double g[][2], double out[2]) {
    for (int i = 0; i < 2; i++) {
        double p = p0[i], sq = 0, ga = 0, buf = 0;
        for (int s = 0; s < steps; s++) {
            double d = g[s][i] + wd * p;
            sq = alpha * sq + (1 - alpha) * d * d;
            double avg;
            if (centered) {
                ga = alpha * ga + (1 - alpha) * d;
                avg = sqrt(sq - ga * ga) + eps;
            } else {
                avg = sqrt(sq) + eps;
            }
            if (mu > 0) {
                buf = mu * buf + d / avg;
                p -= lr * buf;
            } else {
                p -= lr * d / avg;
            }
        }
        out[i] = p;
    }
}

static void adagrad_ref(double lr, double lr_decay, double eps, double wd, double init, int steps,
                        const double p0[2], const double g[][2], double out[2]) {
    for (int i = 0; i < 2; i++) {
        double p = p0[i], sum = init;
        for (int s = 0; s < steps; s++) {
            double d = g[s][i] + wd * p, clr = lr / (1 + s * lr_decay);
            sum += d * d;
            p -= clr * d / (sqrt(sum) + eps);
        }
        out[i] = p;
    }
}

#define NEAR14(a, b) assert_true(fabs((a) - (b)) < 1e-14 * (1 + fabs(b)))

static void test_rmsprop(void **st) {
    (void)st;
    const double p0[2] = {1, -2};
    const double g[4][2] = {{1, 0.5}, {-2, 0.25}, {0.5, -1}, {3, 2}};
    double out[2], ref[2];
    /* step 1 by hand: sq = .01 g^2, p -= lr g / (.1 |g| + eps) = lr * 10 sign(g) */
    run_opt("rmsprop:lr=0.01,eps=0", 1, p0, g, out);
    NEAR(out[0], 1 - 0.1);
    NEAR(out[1], -2 - 0.1);
    const struct { const char *spec; double lr, alpha, eps, wd, mu; int centered; } k[] = {
        {"rmsprop", 0.01, 0.99, 1e-8, 0, 0, 0},
        {"rmsprop:lr=0.05,alpha=0.9,eps=1e-3", 0.05, 0.9, 1e-3, 0, 0, 0},
        {"rmsprop:momentum=0.8,weight_decay=0.1", 0.01, 0.99, 1e-8, 0.1, 0.8, 0},
        {"rmsprop:centered=1,alpha=0.5", 0.01, 0.5, 1e-8, 0, 0, 1},
        {"rmsprop:centered,momentum=0.5,wd=0.01,lr=0.02", 0.02, 0.99, 1e-8, 0.01, 0.5, 1},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        run_opt(k[i].spec, 4, p0, g, out);
        rmsprop_ref(k[i].lr, k[i].alpha, k[i].eps, k[i].wd, k[i].mu, k[i].centered, 4, p0, g, ref);
        NEAR14(out[0], ref[0]);
        NEAR14(out[1], ref[1]);
    }
}

static void test_adagrad(void **st) {
    (void)st;
    const double p0[2] = {1, -2};
    const double g[4][2] = {{1, 0.5}, {-2, 0.25}, {0.5, -1}, {3, 2}};
    double out[2], ref[2];
    /* step 1 by hand: sum = g^2, p -= lr g / |g| */
    run_opt("adagrad:lr=0.1,eps=0", 1, p0, g, out);
    NEAR(out[0], 0.9);
    NEAR(out[1], -2.1);
    /* step 2, element 0: sum = 1 + 4, p = .9 + .1 * 2 / sqrt(5) */
    run_opt("adagrad:lr=0.1,eps=0", 2, p0, g, out);
    NEAR(out[0], 0.9 + 0.2 / sqrt(5.0));
    const struct { const char *spec; double lr, decay, eps, wd, init; } k[] = {
        {"adagrad", 0.01, 0, 1e-10, 0, 0},
        {"adagrad:lr=0.5,lr_decay=0.1", 0.5, 0.1, 1e-10, 0, 0},
        {"adagrad:initial_accumulator_value=0.3,weight_decay=0.2,eps=1e-3", 0.01, 0, 1e-3, 0.2, 0.3},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        run_opt(k[i].spec, 4, p0, g, out);
        adagrad_ref(k[i].lr, k[i].decay, k[i].eps, k[i].wd, k[i].init, 4, p0, g, ref);
        NEAR14(out[0], ref[0]);
        NEAR14(out[1], ref[1]);
    }
}

static void test_optim_parse(void **st) {
    (void)st;
    cdl_optim_cfg c;
    assert_int_equal(cdl_optim_parse(&c, "sgd"), 0);
    assert_int_equal(c.kind, CDL_OPT_SGD);
    assert_true(c.lr == 0.01 && c.momentum == 0 && !c.nesterov);
    assert_int_equal(cdl_optim_parse(&c, "sgd:lr=0.1,momentum=0.9,nesterov,weight_decay=5e-4"), 0);
    assert_true(c.lr == 0.1 && c.momentum == 0.9 && c.nesterov && c.weight_decay == 5e-4);
    assert_int_equal(cdl_optim_parse(&c, "adam"), 0);
    assert_true(c.kind == CDL_OPT_ADAM && c.lr == 1e-3 && c.beta1 == 0.9 && c.beta2 == 0.999 &&
                c.eps == 1e-8 && c.weight_decay == 0);
    assert_int_equal(cdl_optim_parse(&c, "adamw:lr=3e-4"), 0);
    assert_true(c.kind == CDL_OPT_ADAMW && c.lr == 3e-4 && c.weight_decay == 0.01);
    assert_int_equal(cdl_optim_parse(&c, "rmsprop"), 0);
    assert_true(c.kind == CDL_OPT_RMSPROP && c.lr == 0.01 && c.alpha == 0.99 && c.eps == 1e-8 && !c.centered &&
                c.momentum == 0);
    assert_int_equal(cdl_optim_parse(&c, "rmsprop:alpha=0.9,centered,momentum=0.5,wd=1e-4"), 0);
    assert_true(c.alpha == 0.9 && c.centered && c.momentum == 0.5 && c.weight_decay == 1e-4);
    assert_int_equal(cdl_optim_parse(&c, "adagrad:lr_decay=0.1,initial_accumulator_value=0.5"), 0);
    assert_true(c.kind == CDL_OPT_ADAGRAD && c.lr == 0.01 && c.eps == 1e-10 && c.lr_decay == 0.1 &&
                c.initial_accumulator_value == 0.5);
    assert_string_equal(cdl_optim_kind_name(CDL_OPT_ADAGRAD), "adagrad");
    const char *bad[] = {"", "lion", "sgd:lr=", "sgd:lr=abc", "sgd:beta1=0.9",
                         "rmsprop:beta1=0.9", "rmsprop:alpha=1.5", "adagrad:momentum=0.9",
                         "adagrad:lr_decay=-1", "adam:centered=1", "sgd:alpha=0.5",
                         "adam:momentum=0.9", "sgd:nesterov=1", "adam:beta2=1", "sgd:lr=-1",
                         "sgd:lr=nan", "sgd:lr", "adam:lr=1e-3,,x=1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c.lr = 123;
        assert_int_equal(cdl_optim_parse(&c, bad[i]), -1);
        assert_true(c.lr == 123);                           /* untouched on failure */
        assert_non_null(strstr(cdl_last_error(), "optimizer spec"));
    }
}

static void test_optim_slots(void **st) {
    (void)st;
    cdl_model m = tiny_model(4);
    cdl_optim_cfg cfg;
    cdl_optim o;
    cdl_optim_defaults(&cfg, CDL_OPT_SGD);
    assert_int_equal(cdl_optim_init(&o, &m, &cfg), 0);
    assert_int_equal(o.n_slots, 0);
    cdl_optim_free(&o);
    cfg.momentum = 0.9;
    assert_int_equal(cdl_optim_init(&o, &m, &cfg), 0);
    assert_int_equal(o.n_slots, 1);
    assert_string_equal(o.slot_name[0], "sgd.momentum");
    cdl_optim_free(&o);
    cdl_optim_defaults(&cfg, CDL_OPT_ADAMW);
    count_alloc c = {0, 0, 2};
    cdl_set_allocator(counting, &c);
    assert_int_equal(cdl_optim_init(&o, &m, &cfg), -1);             /* second slot fails */
    assert_int_equal(c.live, 0);
    cdl_set_allocator(NULL, NULL);
    assert_int_equal(cdl_optim_init(&o, &m, &cfg), 0);
    assert_int_equal(o.n_slots, 2);
    assert_string_equal(o.slot_name[1], "adam.v");
    for (size_t i = 0; i < m.train_count; i++) assert_true(((float *)o.slot[1])[i] == 0);
    cdl_optim_free(&o);
    cdl_optim_free(&o);                                             /* idempotent */
    /* RMSprop: square_avg, then momentum_buffer and grad_avg when asked for */
    assert_int_equal(cdl_optim_parse(&cfg, "rmsprop:momentum=0.9,centered=1"), 0);
    assert_int_equal(cdl_optim_init(&o, &m, &cfg), 0);
    assert_int_equal(o.n_slots, 3);
    assert_string_equal(o.slot_name[0], "rmsprop.square_avg");
    assert_string_equal(o.slot_name[1], "rmsprop.momentum_buffer");
    assert_string_equal(o.slot_name[2], "rmsprop.grad_avg");
    cdl_optim_free(&o);
    assert_int_equal(cdl_optim_parse(&cfg, "rmsprop:centered=1"), 0);
    assert_int_equal(cdl_optim_init(&o, &m, &cfg), 0);
    assert_int_equal(o.n_slots, 2);
    assert_string_equal(o.slot_name[1], "rmsprop.grad_avg");
    cdl_optim_free(&o);
    /* Adagrad's sum starts at initial_accumulator_value */
    assert_int_equal(cdl_optim_parse(&cfg, "adagrad:initial_accumulator_value=0.25"), 0);
    assert_int_equal(cdl_optim_init(&o, &m, &cfg), 0);
    assert_int_equal(o.n_slots, 1);
    assert_string_equal(o.slot_name[0], "adagrad.sum");
    for (size_t i = 0; i < m.train_count; i++) assert_true(((float *)o.slot[0])[i] == 0.25f);
    cdl_optim_free(&o);
}

static void test_sched(void **st) {
    (void)st;
    cdl_sched s;
    assert_int_equal(cdl_sched_parse(&s, "const"), 0);
    assert_true(cdl_sched_lr(&s, 0.1, 12345) == 0.1);
    assert_int_equal(cdl_sched_parse(&s, "step:every=2,gamma=0.5"), 0);
    s.steps_per_epoch = 10;
    assert_true(cdl_sched_lr(&s, 0.1, 19) == 0.1);                 /* epoch 1 */
    assert_true(cdl_sched_lr(&s, 0.1, 20) == 0.05);                /* epoch 2 */
    assert_true(cdl_sched_lr(&s, 0.1, 45) == 0.025);               /* epoch 4 */
    assert_int_equal(cdl_sched_parse(&s, "cosine"), 0);
    s.total_steps = 100;
    assert_true(cdl_sched_lr(&s, 0.2, 0) == 0.2);
    NEAR(cdl_sched_lr(&s, 0.2, 50), 0.1);
    NEAR(cdl_sched_lr(&s, 0.2, 25), 0.1 * (1 + cos(M_PI / 4)));
    assert_true(cdl_sched_lr(&s, 0.2, 100) == 0);
    s.warmup = 10;                                                 /* --warmup with cosine */
    NEAR(cdl_sched_lr(&s, 0.2, 0), 0.02);
    NEAR(cdl_sched_lr(&s, 0.2, 9), 0.2);
    assert_true(cdl_sched_lr(&s, 0.2, 10) == 0.2);
    NEAR(cdl_sched_lr(&s, 0.2, 55), 0.1);                          /* middle of the 90 after */
    assert_int_equal(cdl_sched_parse(&s, "cosine:min=0.01"), 0);
    s.total_steps = 10;
    NEAR(cdl_sched_lr(&s, 0.2, 5), 0.105);
    assert_int_equal(cdl_sched_parse(&s, "cosine:steps=30"), 0);   /* a horizon in steps wins */
    s.total_steps = 1000;
    s.warmup = 10;
    assert_true(cdl_sched_lr(&s, 0.2, 10) == 0.2);
    NEAR(cdl_sched_lr(&s, 0.2, 20), 0.1);                          /* middle of the 20 after */
    assert_true(cdl_sched_lr(&s, 0.2, 30) == 0);
    assert_int_equal(cdl_sched_parse(&s, "warmup:steps=4"), 0);
    NEAR(cdl_sched_lr(&s, 1, 1), 0.5);
    assert_true(cdl_sched_lr(&s, 1, 4) == 1);
    const char *bad[] = {"", "linear", "step", "step:every=0", "step:every=1.5", "cosine:every=2",
                         "cosine:steps=0", "cosine:steps=2.5", "warmup", "warmup:steps=x", "step:gamma"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(cdl_sched_parse(&s, bad[i]), -1);
        assert_non_null(strstr(cdl_last_error(), "schedule"));
    }
}

static void test_clip(void **st) {
    (void)st;
    for (int rs = 4; rs <= 8; rs += 4) {
        cdl_model m = tiny_model(rs);
        m.train_count = 2;
        cdl_net *net = cdl_net_new(&m);
        assert_non_null(net);
        double g[2] = {3, 4};
        for (int i = 0; i < 2; i++) {
            if (rs == 4) ((float *)net->grad)[i] = (float)g[i];
            else ((double *)net->grad)[i] = g[i];
        }
        assert_true(cdl_grad_norm(net) == 5);
        assert_true(cdl_clip_grad_norm(net, 10) == 5);             /* below: untouched */
        assert_true(cdl_grad_norm(net) == 5);
        assert_true(cdl_clip_grad_norm(net, 0) == 5);              /* 0: no clipping */
        assert_true(cdl_clip_grad_norm(net, 1) == 5);
        assert_true(fabs(cdl_grad_norm(net) - 5 / (5 + 1e-6)) < 1e-6);
        if (rs == 4) ((float *)net->grad)[0] = NAN;
        else ((double *)net->grad)[0] = NAN;
        assert_true(isnan(cdl_clip_grad_norm(net, 1)));
        cdl_net_free(net);
    }
}

/* The norm over a slab that is not a whole number of the summing lanes: every element
 * counts once (the tail too), and a NaN or Inf anywhere, the last element included,
 * makes the norm non-finite. */
static void test_grad_norm_lanes(void **st) {
    (void)st;
    for (int rs = 4; rs <= 8; rs += 4) {
        cdl_model m = tiny_model(rs);
        m.param_count = 1000;
        for (size_t n = 1; n <= 1000; n += n < 40 ? 1 : 241) {
            m.train_count = n;
            cdl_net *net = cdl_net_new(&m);
            assert_non_null(net);
            double want = 0;
            for (size_t i = 0; i < n; i++) {
                double v = (double)(i % 7) - 3;   /* small integers: exact sums */
                want += v * v;
                if (rs == 4) ((float *)net->grad)[i] = (float)v;
                else ((double *)net->grad)[i] = v;
            }
            assert_true(cdl_grad_norm(net) == sqrt(want));
            size_t at[3] = {0, n / 2, n - 1};
            for (int k = 0; k < 3; k++) {
                double bad = k == 1 ? INFINITY : NAN;
                if (rs == 4) ((float *)net->grad)[at[k]] = (float)bad;
                else ((double *)net->grad)[at[k]] = bad;
                assert_false(isfinite(cdl_grad_norm(net)));
                if (rs == 4) ((float *)net->grad)[at[k]] = 0;
                else ((double *)net->grad)[at[k]] = 0;
            }
            cdl_net_free(net);
        }
    }
}

/* Every test leaves the default allocator installed, even when it fails midway. */
static int reset_alloc(void **st) {
    (void)st;
    cdl_set_allocator(NULL, NULL);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_alloc_zeroed_aligned, reset_alloc),
        cmocka_unit_test_teardown(test_alloc_large_untouched, reset_alloc),
        cmocka_unit_test_teardown(test_alloc_hook, reset_alloc),
        cmocka_unit_test_teardown(test_fail_message, reset_alloc),
        cmocka_unit_test_teardown(test_philox_kat, reset_alloc),
        cmocka_unit_test_teardown(test_rng_keys, reset_alloc),
        cmocka_unit_test_teardown(test_rand_uniform, reset_alloc),
        cmocka_unit_test_teardown(test_randn, reset_alloc),
        cmocka_unit_test_teardown(test_init, reset_alloc),
        cmocka_unit_test_teardown(test_net_new, reset_alloc),
        cmocka_unit_test_teardown(test_net_lookup, reset_alloc),
        cmocka_unit_test_teardown(test_sgd, reset_alloc),
        cmocka_unit_test_teardown(test_adam, reset_alloc),
        cmocka_unit_test_teardown(test_optim_threads, reset_alloc),
        cmocka_unit_test_teardown(test_optim_step_count, reset_alloc),
        cmocka_unit_test_teardown(test_rmsprop, reset_alloc),
        cmocka_unit_test_teardown(test_adagrad, reset_alloc),
        cmocka_unit_test_teardown(test_groups_freeze, reset_alloc),
        cmocka_unit_test_teardown(test_groups_no_decay, reset_alloc),
        cmocka_unit_test_teardown(test_groups_errors, reset_alloc),
        cmocka_unit_test_teardown(test_optim_parse, reset_alloc),
        cmocka_unit_test_teardown(test_optim_slots, reset_alloc),
        cmocka_unit_test_teardown(test_sched, reset_alloc),
        cmocka_unit_test_teardown(test_clip, reset_alloc),
        cmocka_unit_test_teardown(test_grad_norm_lanes, reset_alloc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
