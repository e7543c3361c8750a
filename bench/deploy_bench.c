/* deploy_bench.c -- batch-1 latency of a model's inference export against the full
 * runtime's eval forward (bench/deploy.sh).  Built per model with the model's static C
 * compiled at batch 1 (cdlc -D B=1) and libcdlrt:
 *
 *   deploy_bench LIB.so [CALLS]
 *
 * LIB.so is the export with the shim bench/deploy.sh writes (infer_call: the forward on
 * one example).  Both get the same input (the first Fashion-MNIST test image, or a
 * fixed pattern for inputs that are not images), one thread (OpenBLAS and the
 * runtime's pool), and are timed alternately in 5 rounds of CALLS / 5 calls each after a
 * warm-up; the median round is reported, in microseconds per call, as one JSON line:
 * {"export_us_median", "export_us_min", "runtime_us_median", "runtime_us_min"}. */
#include "cdl.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern const cdl_model MODEL_DESC;

typedef void infer_fn(const void *const *in, void *const *out, void *arena);

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const cdl_model *m = &MODEL_DESC;
    if (argc < 2) {
        fprintf(stderr, "usage: %s LIB.so [CALLS]\n", argv[0]);
        return 2;
    }
    int calls = argc > 2 ? atoi(argv[2]) : 2000, per = calls / 5 > 0 ? calls / 5 : 1;
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "deploy_bench: %s\n", dlerror());
        return 1;
    }
    infer_fn *call;
    *(void **)&call = dlsym(lib, "infer_call");
    cdl_blas_set_threads(1);
    cdl_net *net = cdl_net_new(m);
    cdl_dataset d = {0};
    if (!net || !call || cdl_dataset_open(&d, "fashion-mnist", 0)) {
        fprintf(stderr, "deploy_bench: %s\n", cdl_last_error());
        return 1;
    }
    int cx = cdl_dataset_find(&d, "x");
    const float *image = cx >= 0 ? d.col[cx].data : NULL;   /* the first test image */
    int64_t feat = cx >= 0 ? d.col[cx].feat : 0;
    m->init(net, 1);
    /* one example in every input: the first image where it fits, else a fixed pattern */
    for (int k = 0; k < m->n_inputs; k++) {
        int64_t n = cdl_tensor_numel(&m->inputs[k], 1);
        for (int64_t i = 0; i < n; i++) {
            if (m->inputs[k].dtype == CDL_I32) ((int32_t *)net->in[k])[i] = (int32_t)(i % 10);
            else ((float *)net->in[k])[i] = n == feat ? image[i] : (float)((i * 37) % 101) / 101.0f;
        }
    }
    const void *in[8] = {net->in[0]};
    void *outs[8] = {0};
    for (int k = 0; k < m->n_outputs && k < 8; k++) outs[k] = calloc((size_t)cdl_tensor_numel(&m->outputs[k], 1) + 16, sizeof(float));
    for (int i = 0; i < 50; i++) {
        m->forward(net, 1);
        call(in, outs, NULL);
    }
    double ex[5], rt[5];
    for (int r = 0; r < 5; r++) {
        double t0 = now_us();
        for (int i = 0; i < per; i++) call(in, outs, NULL);
        double t1 = now_us();
        for (int i = 0; i < per; i++) m->forward(net, 1);
        ex[r] = (t1 - t0) / per;
        rt[r] = (now_us() - t1) / per;
    }
    qsort(ex, 5, sizeof(double), cmp);
    qsort(rt, 5, sizeof(double), cmp);
    printf("{\"export_us_median\": %.3f, \"export_us_min\": %.3f, \"runtime_us_median\": %.3f, \"runtime_us_min\": %.3f}\n",
           ex[2], ex[0], rt[2], rt[0]);
    return 0;
}
