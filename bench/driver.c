/* driver.c -- the C timing driver of `make bench`.
 *
 * Compiled together with ONE generated model (static `cdlc m.cdl -o m.c` or tape
 * `cdlc --target=tape m.cdl -o m.c`; both export the same descriptor name), e.g.
 *
 *   cc -O2 -march=native -Iruntime -DBENCH_MODEL=mlp_model bench/driver.c m.c \
 *      build/libcdlrt.a $(cat build/libcdlrt.libs) -o mlp_static
 *
 * and run as `mlp_static --framework static --opt sgd --threads 1 --steps 100 ...`.
 * It allocates the net, fills every input with the bench's synthetic data (the same
 * numbers bench/torch_bench.py feeds PyTorch), runs warm-up steps, then `repeats` runs
 * of `steps` training steps (model->grad + cdl_optim_step, exactly what the trainer
 * does), and prints ONE JSON line on stdout:
 *
 *   {"framework": "static", "name": ..., "model": ..., "backend": "openblas", "batch": 64, "opt": "sgd",
 *    "threads": 1, "ms_median": ..., "ms_min": ..., "cpu_ms_per_step": ..., "ms_runs": [...],
 *    "samples_per_s": ..., "peak_rss_kb": ..., "act_bytes": ..., "param_count": ...,
 *    "allocs_per_step": ..., "loss": ..., "loss_finite": true}
 *
 * Built with -DBENCH_TAPE (a tape model), it adds the tape's statistics: records per
 * step, peak arena bytes actually used, arena allocations per step.
 *
 * Exit status: 0 success, 1 a runtime failure (message on stderr), 2 a usage error.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif
#include "cdl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#ifndef BENCH_MODEL
#error "compile with -DBENCH_MODEL=<name>_model"
#endif
extern const cdl_model BENCH_MODEL;

#define BENCH_MAX_REPEATS 64

typedef struct bench_opts {
    const char *framework, *name, *opt, *mode;
    double lr;
    int threads, steps, repeats, warmup, classes, budget_ms;
} bench_opts;

/* The bench's synthetic data stream, shared with torch_bench.py (synth()): value i of
 * input k is ((i + 1 + k * 2^32) * 0x9E3779B97F4A7C15 mod 2^64) >> 40, in [0, 2^24). */
static uint32_t bench_synth(uint64_t i, int k) {
    uint64_t v = (i + 1 + ((uint64_t)k << 32)) * UINT64_C(0x9E3779B97F4A7C15);
    return (uint32_t)(v >> 40);
}

/* Fill every input of net for nb rows: reals in [0, 1), labels in [0, classes). */
static void bench_fill_inputs(cdl_net *net, int nb, int classes) {
    const cdl_model *m = net->model;
    for (int k = 0; k < m->n_inputs; k++) {
        const cdl_tensor *t = &m->inputs[k];
        int64_t n = cdl_tensor_numel(t, nb);
        if (t->dtype == CDL_I32) {
            int32_t *y = net->in[k];
            for (int64_t i = 0; i < n; i++) y[i] = (int32_t)(bench_synth((uint64_t)i, k) % (uint32_t)classes);
        } else if (m->real_size == 8) {
            double *x = net->in[k];
            for (int64_t i = 0; i < n; i++) x[i] = bench_synth((uint64_t)i, k) / 16777216.0;
        } else {
            float *x = net->in[k];
            for (int64_t i = 0; i < n; i++) x[i] = (float)(bench_synth((uint64_t)i, k) / 16777216.0);
        }
    }
}

static double bench_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* CPU time of the whole process (all threads), in ms: with wall time it shows whether
 * the machine was busy (1 thread: cpu ~ wall on an idle machine). */
static double bench_cpu_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int bench_usage(const char *msg, const char *arg) {
    fprintf(stderr,
            "bench driver: %s%s%s\n"
            "usage: %s-bench [--framework static|tape] [--name LABEL] [--opt sgd|adam] [--lr X]\n"
            "       [--threads N] [--steps N] [--repeats N (<= %d)] [--warmup N] [--classes N]\n"
            "       [--mode train|latency] [--budget-ms N (latency: time per repeat)]\n",
            msg, arg ? ": " : "", arg ? arg : "", BENCH_MODEL.name, BENCH_MAX_REPEATS);
    return 2;
}

/* Parse argv into o; 0 on success, else the exit status of a usage error. */
static int bench_parse(int argc, char **argv, bench_opts *o) {
    *o = (bench_opts){.framework = "static", .name = BENCH_MODEL.name, .opt = "sgd", .mode = "train",
                      .threads = 1, .steps = 50, .repeats = 5, .warmup = 10, .classes = 10, .budget_ms = 50};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return bench_usage("missing value after", a);
        char *end = NULL;
        long n = strtol(v, &end, 10);
        int isint = *v && !*end;
        i++;
        if (!strcmp(a, "--framework")) o->framework = v;
        else if (!strcmp(a, "--name")) o->name = v;
        else if (!strcmp(a, "--opt")) o->opt = v;
        else if (!strcmp(a, "--mode")) o->mode = v;
        else if (!strcmp(a, "--lr")) {
            o->lr = strtod(v, &end);
            if (*end || !(o->lr >= 0)) return bench_usage("bad --lr", v);
        } else if (!isint || n < 0 || n > 1000000) return bench_usage("bad option or value", a);
        else if (!strcmp(a, "--threads")) o->threads = (int)n;
        else if (!strcmp(a, "--steps")) o->steps = (int)n;
        else if (!strcmp(a, "--repeats")) o->repeats = (int)n;
        else if (!strcmp(a, "--warmup")) o->warmup = (int)n;
        else if (!strcmp(a, "--classes")) o->classes = (int)n;
        else if (!strcmp(a, "--budget-ms")) o->budget_ms = (int)n;
        else return bench_usage("unknown option", a);
    }
    if (strcmp(o->opt, "sgd") && strcmp(o->opt, "adam")) return bench_usage("--opt must be sgd or adam", o->opt);
    if (strcmp(o->mode, "train") && strcmp(o->mode, "latency"))
        return bench_usage("--mode must be train or latency", o->mode);
    if (o->threads < 1 || o->steps < 1 || o->repeats < 1 || o->repeats > BENCH_MAX_REPEATS || o->classes < 1 ||
        o->budget_ms < 1)
        return bench_usage("threads, steps, classes, budget >= 1; repeats in 1..64", NULL);
    return 0;
}

/* Print s as a JSON string (the labels we print are plain, but be safe). */
static void bench_json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20) printf("\\u%04x", *s);
        else putchar(*s);
    }
    putchar('"');
}

/* The median of the first n values of v (n <= BENCH_MAX_REPEATS); sorted gets them in
 * order. */
static double bench_median(const double *v, int n, double *sorted) {
    memcpy(sorted, v, sizeof(double) * (size_t)n);
    qsort(sorted, (size_t)n, sizeof(double), bench_cmp_double);
    return n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
}

/* The opening fields every record shares. */
static void bench_json_head(const bench_opts *o, const cdl_model *m) {
    printf("{\"framework\": ");
    bench_json_str(o->framework);
    printf(", \"name\": ");
    bench_json_str(o->name);
    printf(", \"model\": ");
    bench_json_str(m->name);
    printf(", \"backend\": \"%s\", \"mode\": \"%s\"", cdl_backend(), o->mode);
}

/* Batch-1 latency (--mode latency): eval-mode forward passes (model->forward, the loss
 * included) of ONE sample, after `warmup` calls; each repeat makes as many calls as fit
 * in about budget_ms (from the warm-up's median call, at least 3), and the median
 * repeat's time per call is reported. */
static int bench_latency(const bench_opts *o, cdl_net *net) {
    const cdl_model *m = net->model;
    double warm[BENCH_MAX_REPEATS], runs[BENCH_MAX_REPEATS], sorted[BENCH_MAX_REPEATS];
    int nw = o->warmup < 3 ? 3 : o->warmup > BENCH_MAX_REPEATS ? BENCH_MAX_REPEATS : o->warmup;
    for (int i = 0; i < nw; i++) {
        double t0 = bench_now_ms();
        m->forward(net, 1);
        warm[i] = bench_now_ms() - t0;
    }
    double est = bench_median(warm, nw, sorted);
    long calls = est > 0 ? (long)(o->budget_ms / est) : 1000;
    if (calls < 3) calls = 3;
    double cpu0 = bench_cpu_ms();
    for (int r = 0; r < o->repeats; r++) {
        double t0 = bench_now_ms();
        for (long c = 0; c < calls; c++) m->forward(net, 1);
        runs[r] = (bench_now_ms() - t0) / (double)calls;
    }
    double cpu_ms = (bench_cpu_ms() - cpu0) / ((double)calls * o->repeats);
    double med = bench_median(runs, o->repeats, sorted);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    bench_json_head(o, m);
    printf(", \"batch\": 1, \"threads\": %d, \"calls\": %ld, \"repeats\": %d, \"ms_median\": %.6f, "
           "\"ms_min\": %.6f, \"cpu_ms_per_step\": %.6f, \"peak_rss_kb\": %ld, ",
           o->threads, calls, o->repeats, med, sorted[0], cpu_ms, ru.ru_maxrss);
    if (isfinite(net->loss)) printf("\"loss\": %.9g, \"loss_finite\": true}\n", net->loss);
    else printf("\"loss\": null, \"loss_finite\": false}\n");
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    bench_opts o;
    int rc = bench_parse(argc, argv, &o);
    if (rc) return rc;
    const cdl_model *m = &BENCH_MODEL;
    if (!m->grad || !m->init || !m->has_loss) {
        fprintf(stderr, "bench driver: model %s has no loss to train\n", m->name);
        return 1;
    }
    cdl_blas_set_threads(o.threads);

    cdl_net *net = cdl_net_new(m);
    if (!net) {
        fprintf(stderr, "bench driver: %s\n", cdl_last_error());
        return 1;
    }
    m->init(net, 1);
    net->seed = 1;
    int nb = m->batch;
    bench_fill_inputs(net, nb, o.classes);
    if (!strcmp(o.mode, "latency")) {
        rc = bench_latency(&o, net);
        cdl_net_free(net);
        return rc;
    }

    cdl_optim_cfg cfg;
    int adam = !strcmp(o.opt, "adam");
    cdl_optim_defaults(&cfg, adam ? CDL_OPT_ADAM : CDL_OPT_SGD);
    if (!adam) cfg.momentum = 0.9;
    double lr = o.lr > 0 ? o.lr : adam ? 1e-3 : 0.01;
    cdl_optim opt;
    if (cdl_optim_init(&opt, m, &cfg)) {
        fprintf(stderr, "bench driver: %s\n", cdl_last_error());
        cdl_net_free(net);
        return 1;
    }

    double loss = 0;
    for (int s = 0; s < o.warmup; s++) {
        loss = m->grad(net, nb);
        cdl_optim_step(&opt, net, lr);
        net->step++;
    }
    double runs[BENCH_MAX_REPEATS], sorted[BENCH_MAX_REPEATS];
    uint64_t allocs0 = cdl_alloc_count();
    double cpu0 = bench_cpu_ms();
    for (int r = 0; r < o.repeats; r++) {
        double t0 = bench_now_ms();
        for (int s = 0; s < o.steps; s++) {
            loss = m->grad(net, nb);
            cdl_optim_step(&opt, net, lr);
            net->step++;
        }
        runs[r] = (bench_now_ms() - t0) / o.steps;
    }
    double cpu_ms = (bench_cpu_ms() - cpu0) / ((double)o.steps * o.repeats);
    double allocs = (double)(cdl_alloc_count() - allocs0) / ((double)o.steps * o.repeats);
    double med = bench_median(runs, o.repeats, sorted);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    bench_json_head(&o, m);
    printf(", \"batch\": %d, \"opt\": \"%s\", \"lr\": %g, \"threads\": %d, \"steps\": %d, "
           "\"repeats\": %d, \"warmup\": %d, \"ms_median\": %.6f, \"ms_min\": %.6f, "
           "\"cpu_ms_per_step\": %.6f, \"ms_runs\": [",
           nb, o.opt, lr, o.threads, o.steps, o.repeats, o.warmup, med, sorted[0], cpu_ms);
    for (int r = 0; r < o.repeats; r++) printf("%s%.6f", r ? ", " : "", runs[r]);
    printf("], \"samples_per_s\": %.3f, \"peak_rss_kb\": %ld, \"act_bytes\": %zu, "
           "\"param_count\": %zu, \"train_count\": %zu, \"allocs_per_step\": %g, ",
           nb * 1e3 / med, ru.ru_maxrss, m->act_bytes, m->param_count, m->train_count, allocs);
#ifdef BENCH_TAPE
    /* Tape builds (-DBENCH_TAPE): what the tape really used, besides the act_bytes it
     * reserved.  cdl_tape_attach returns the model's existing tape. */
    cdl_tape *tp = cdl_tape_attach(net);
    uint64_t ops = 0, arena_allocs = 0;
    size_t used = 0;
    if (tp) cdl_tape_stats(tp, &ops, &used, &arena_allocs);
    printf("\"tape_ops_per_step\": %llu, \"tape_arena_bytes\": %zu, \"tape_allocs_per_step\": %llu, ",
           (unsigned long long)ops, used, (unsigned long long)arena_allocs);
#endif
    if (isfinite(loss)) printf("\"loss\": %.9g, \"loss_finite\": true}\n", loss);
    else printf("\"loss\": null, \"loss_finite\": false}\n");
    fflush(stdout);

    cdl_optim_free(&opt);
    cdl_net_free(net);
    return 0;
}
