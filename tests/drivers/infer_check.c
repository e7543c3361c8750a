/* infer_check.c -- a model's inference export (cdlc --inference) against the runtime's
 * eval on the same checkpoint; used by tests/sh/deploy.sh.  Built once per model with
 * the model's static C and the runtime:
 *
 *   cc -DMODEL_DESC=mlp_model infer_check.c mlp.c libcdlrt.a ... -o check
 *   check train ARGS...          the generic trainer (cdl_main): makes a checkpoint
 *   check init CKPT               a checkpoint of the initial parameters (seed 1)
 *   check run CKPT LIB N [TOL [SAME]]   compare on N examples (see below)
 *   check predict CKPT N          the eval's class for each of the first N test images
 *
 * LIB is a shared object built from the exported file and a shim the test script
 * writes from the exported header's prototype; it exports
 *   infer_entry    "" for the model's forward, else the entry's name
 *   infer_in, infer_out   the function's argument names, NULL-terminated, in order
 *   infer_batch    the batch the file was compiled for
 *   infer_call(in, out, arena)   the exported function on infer_batch rows
 * Inputs: a real input of 784 values per example gets the first N Fashion-MNIST test
 * images (the forward's first one normalised for the runtime as the trainer does, and
 * given raw to the export, which normalises itself); an i32 input the test labels (or
 * integers 0..9); a perturbation's delta (CDL_T_PERTURB, which the export does not
 * take) zeros, as the trainer feeds it outside an attack; other real inputs N(0, 1)
 * noise.  Every output row is compared with
 * the runtime's: the error of an example is max |export - eval| / max |eval| over the
 * row.  Printed: the largest such error, the share of bitwise-equal values and, for a
 * forward's first output, how many predictions (argmax) agree and both test accuracies.
 * Exit status 1 when the error exceeds TOL (default 1e-5) or fewer than the share SAME
 * of the predictions agree (default 1: all; the int8 export's check allows less).
 */
#include "cdl.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const cdl_model MODEL_DESC;

typedef void infer_fn(const void *const *in, void *const *out, void *arena);

static void die(const char *fmt, const char *a) {
    fprintf(stderr, "infer_check: ");
    fprintf(stderr, fmt, a);
    fprintf(stderr, "%s%s\n", cdl_last_error()[0] ? ": " : "", cdl_last_error());
    exit(1);
}

static uint64_t rng = 88172645463325252ull;
static double uniform(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}

/* Per-row element count of a batched tensor t (its dims after dim 0). */
static int64_t row_numel(const cdl_tensor *t) {
    int64_t n = 1;
    for (int i = 1; i < t->rank; i++) n *= t->dims[i];
    return n;
}

static const cdl_tensor *find(const cdl_tensor *t, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].name, name)) return &t[i];
    return NULL;
}

/* The forward's normalisation (train { normalize = "MEAN,STD" }), if any. */
static int normalize_of(const cdl_model *m, double *mean, double *std) {
    const char *p = m->train_defaults ? strstr(m->train_defaults, "normalize=") : NULL;
    return p && sscanf(p + 10, "%lf,%lf", mean, std) == 2;
}

/* The Fashion-MNIST test set: its image column x (feat floats per example) and labels y. */
typedef struct Images { cdl_dataset d; int64_t n, feat; const float *x; const int32_t *y; } Images;

static void images_open(Images *im) {
    if (cdl_dataset_open(&im->d, "fashion-mnist", 0)) die("%s", cdl_last_error());
    int cx = cdl_dataset_find(&im->d, "x"), cy = cdl_dataset_find(&im->d, "y");
    if (cx < 0 || cy < 0 || im->d.col[cx].dtype != CDL_F32 || im->d.col[cy].dtype != CDL_I32 ||
        im->d.col[cx].stride != im->d.col[cx].feat || im->d.col[cy].stride != 1)
        die("%s: no contiguous columns x (f32) and y (i32)", im->d.name);
    im->n = im->d.n;
    im->feat = im->d.col[cx].feat;
    im->x = im->d.col[cx].data;
    im->y = im->d.col[cy].data;
}

/* The inputs, N rows each: raw values (what the export gets) and, for the runtime,
 * the values the trainer would feed (normalised). */
typedef struct Data { void **raw, **fed; } Data;

static Data make_inputs(const cdl_model *m, int nin, const cdl_tensor *in, const Images *d, int64_t N, int fwd) {
    Data D = {calloc((size_t)nin, sizeof(void *)), calloc((size_t)nin, sizeof(void *))};
    double mean = 0, std = 1;
    int norm = fwd && normalize_of(m, &mean, &std), first_real = 1;
    for (int k = 0; k < nin; k++) {
        int64_t r = row_numel(&in[k]), n = N * r;
        if (in[k].dtype == CDL_I32) {
            int32_t *v = malloc((size_t)n * sizeof *v);
            for (int64_t i = 0; i < n; i++) v[i] = r == 1 && d->y ? d->y[i] : (int32_t)(uniform() * 10);
            D.raw[k] = D.fed[k] = v;
            continue;
        }
        float *v = malloc((size_t)n * sizeof *v), *f = v;
        for (int64_t i = 0; i < n; i++) {
            double a = uniform(), b = uniform();
            v[i] = r == d->feat ? d->x[i] : (float)(sqrt(-2 * log(a)) * cos(6.283185307179586 * b));
            if (in[k].flags & CDL_T_PERTURB) v[i] = 0;
        }
        if (norm && first_real && r == d->feat) {
            f = malloc((size_t)n * sizeof *f);
            for (int64_t i = 0; i < n; i++) f[i] = (float)(((double)v[i] - mean) * (1.0 / std)); /* as data.c */
        }
        first_real = 0;
        D.raw[k] = v;
        D.fed[k] = f;
    }
    return D;
}

static void data_free(Data *D, int nin) {
    for (int k = 0; k < nin; k++) {
        if (D->fed[k] != D->raw[k]) free(D->fed[k]);
        free(D->raw[k]);
    }
    free(D->raw);
    free(D->fed);
}

static size_t esize(const cdl_tensor *t) { (void)t; return 4; } /* f32 and i32 alike */

/* predict CKPT N: the runtime eval's class (argmax of output 0) for each of the first N
 * test images, one a line. */
static int predict(const cdl_model *m, cdl_net *net, const char *ckpt, int64_t N) {
    Images d = {0};
    if (cdl_ckpt_load(ckpt, net, NULL, NULL)) die("%s: cannot load", ckpt);
    images_open(&d);
    if (N < 1 || N > d.n) die("%s", "N is out of the test set's range");
    Data in = make_inputs(m, m->n_inputs, m->inputs, &d, N, 1);
    int64_t C = row_numel(&m->outputs[0]);
    for (int64_t r0 = 0; r0 < N; r0 += m->batch) {
        int nb = (int)(N - r0 < m->batch ? N - r0 : m->batch);
        for (int k = 0; k < m->n_inputs; k++)
            memcpy(net->in[k], (char *)in.fed[k] + (size_t)(r0 * row_numel(&m->inputs[k])) * 4,
                   (size_t)(nb * row_numel(&m->inputs[k])) * 4);
        m->forward(net, nb);
        for (int r = 0; r < nb; r++) {
            const float *o = (const float *)net->out[0] + r * C;
            int best = 0;
            for (int j = 1; j < C; j++) best = o[j] > o[best] ? j : best;
            printf("%d\n", best);
        }
    }
    data_free(&in, m->n_inputs);
    cdl_dataset_free(&d.d);
    cdl_net_free(net);
    return 0;
}

int main(int argc, char **argv) {
    const cdl_model *m = &MODEL_DESC;
    if (argc >= 2 && !strcmp(argv[1], "train")) return cdl_main(m, argc, argv);
    cdl_net *net = cdl_net_new(m);
    if (!net) die("%s: cannot make the net", m->name);
    if (argc == 3 && !strcmp(argv[1], "init")) {
        m->init(net, 1);
        if (cdl_ckpt_save(argv[2], net, NULL, NULL)) die("%s: cannot save", argv[2]);
        cdl_net_free(net);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "predict")) return predict(m, net, argv[2], atoll(argv[3]));
    if (argc < 5 || strcmp(argv[1], "run")) {
        fprintf(stderr, "usage: %s train ... | init CKPT | predict CKPT N | run CKPT LIB N [TOL [SAME]]\n", argv[0]);
        return 2;
    }
    if (cdl_ckpt_load(argv[2], net, NULL, NULL)) die("%s: cannot load", argv[2]);
    void *lib = dlopen(argv[3], RTLD_NOW | RTLD_LOCAL);
    if (!lib) die("%s: cannot load the export", dlerror());
    const char *entry = *(const char *const *)dlsym(lib, "infer_entry");
    const char *const *iname = dlsym(lib, "infer_in"), *const *oname = dlsym(lib, "infer_out");
    int B = *(const int *)dlsym(lib, "infer_batch");
    infer_fn *call;
    *(void **)&call = dlsym(lib, "infer_call");
    int64_t N = atoll(argv[4]);
    double tol = argc > 5 ? atof(argv[5]) : 1e-5, share = argc > 6 ? atof(argv[6]) : 1;
    if (N <= 0 || N % B) die("N must be a positive multiple of the export's batch (%s)", argv[4]);

    /* the function: the forward's or an entry's inputs and outputs */
    const cdl_entry *en = NULL;
    for (int k = 0; k < m->n_entries && *entry; k++)
        if (!strcmp(m->entries[k].name, entry)) en = &m->entries[k];
    if (*entry && !en) die("no entry %s", entry);
    int nin = en ? en->n_in : m->n_inputs, nout = en ? en->n_out : m->n_outputs;
    const cdl_tensor *tin = en ? en->in : m->inputs, *tout = en ? en->out : m->outputs;
    Images d = {0};
    images_open(&d);
    if (d.n < N) die("the test set has fewer examples than %s", argv[4]);
    Data in = make_inputs(m, nin, tin, &d, N, !en);
    float **ref = calloc((size_t)nout, sizeof(float *)), **got = calloc((size_t)nout, sizeof(float *));
    for (int k = 0; k < nout; k++) {
        ref[k] = calloc((size_t)(N * row_numel(&tout[k])), sizeof(float));
        got[k] = calloc((size_t)(N * row_numel(&tout[k])), sizeof(float));
    }

    /* the runtime's eval, batch by batch */
    int64_t Bm = m->batch;
    void **bin = calloc((size_t)nin, sizeof(void *)), **bout = calloc((size_t)nout, sizeof(void *));
    for (int k = 0; k < nout && en; k++) bout[k] = malloc((size_t)(Bm * row_numel(&tout[k])) * sizeof(float));
    for (int64_t r0 = 0; r0 < N; r0 += Bm) {
        int nb = (int)(N - r0 < Bm ? N - r0 : Bm);
        for (int k = 0; k < nin; k++) {
            size_t rb = (size_t)row_numel(&tin[k]) * esize(&tin[k]);
            bin[k] = (char *)in.fed[k] + (size_t)r0 * rb;
            if (!en) memcpy(net->in[k], bin[k], (size_t)nb * rb);
        }
        if (en) en->run(net, nb, (const void *const *)bin, bout);
        else m->forward(net, nb);
        for (int k = 0; k < nout; k++) {
            size_t rb = (size_t)row_numel(&tout[k]) * sizeof(float);
            memcpy((char *)ref[k] + (size_t)r0 * rb, en ? bout[k] : net->out[k], (size_t)nb * rb);
        }
    }

    /* the export, B rows at a time, on the raw inputs */
    int ni = 0, no = 0;
    while (iname[ni]) ni++;
    while (oname[no]) no++;
    const cdl_tensor **ti = calloc((size_t)ni + 1, sizeof *ti), **to = calloc((size_t)no + 1, sizeof *to);
    int *si = calloc((size_t)ni + 1, sizeof(int)), *so = calloc((size_t)no + 1, sizeof(int));
    for (int k = 0; k < ni; k++) {
        if (!(ti[k] = find(tin, nin, iname[k]))) die("the export takes an input %s the model does not have", iname[k]);
        si[k] = (int)(ti[k] - tin);
    }
    for (int k = 0; k < no; k++) {
        if (!(to[k] = find(tout, nout, oname[k]))) die("the export writes an output %s the model does not have", oname[k]);
        so[k] = (int)(to[k] - tout);
    }
    const void **ci = calloc((size_t)ni + 1, sizeof(void *));
    void **co = calloc((size_t)no + 1, sizeof(void *));
    for (int64_t r0 = 0; r0 < N; r0 += B) {
        for (int k = 0; k < ni; k++) ci[k] = (const char *)in.raw[si[k]] + (size_t)(r0 * row_numel(ti[k])) * esize(ti[k]);
        for (int k = 0; k < no; k++) co[k] = got[so[k]] + r0 * row_numel(to[k]);
        call(ci, co, NULL);
    }

    /* compare */
    int bad = 0;
    for (int q = 0; q < no; q++) {
        int k = so[q];
        int64_t R = row_numel(&tout[k]), same = 0, pred = 0, right_a = 0, right_b = 0;
        double worst = 0;
        for (int64_t r = 0; r < N; r++) {
            const float *a = got[k] + r * R, *b = ref[k] + r * R;
            double scale = 0, diff = 0;
            int64_t ia = 0, ib = 0;
            for (int64_t j = 0; j < R; j++) {
                scale = fmax(scale, fabs(b[j]));
                diff = fmax(diff, fabs((double)a[j] - b[j]));
                same += memcmp(&a[j], &b[j], sizeof(float)) == 0;
                if (a[j] > a[ia]) ia = j;
                if (b[j] > b[ib]) ib = j;
            }
            double e = diff == 0 ? 0 : scale > 0 ? diff / scale : INFINITY;
            worst = fmax(worst, e);
            pred += ia == ib;
            right_a += d.y && ia == d.y[r];
            right_b += d.y && ib == d.y[r];
        }
        int labels = 0;   /* a classifier: the model takes one label per example */
        for (int i = 0; i < m->n_inputs; i++) labels |= m->inputs[i].dtype == CDL_I32 && row_numel(&m->inputs[i]) == 1;
        int classify = !en && k == 0 && R > 1 && labels;
        printf("%s %s%s, output %s: %lld examples at batch %d, max rel diff %.3g, bitwise %.1f%%", m->name,
               en ? "entry " : "forward", en ? en->name : "", tout[k].name, (long long)N, B, worst,
               100.0 * (double)same / (double)(N * R));
        if (classify)
            printf(", predictions %lld/%lld same (test accuracy: export %.2f%%, eval %.2f%%)", (long long)pred, (long long)N,
                   100.0 * (double)right_a / (double)N, 100.0 * (double)right_b / (double)N);
        printf("\n");
        if (!(worst <= tol) || (classify && (double)pred < share * (double)N)) bad = 1;
    }
    if (no == 0) die("%s", "the export writes no output");
    for (int k = 0; k < nout; k++) {
        free(ref[k]);
        free(got[k]);
        if (en) free(bout[k]);
    }
    free(ref), free(got), free(bin), free(bout), free(ti), free(to), free(si), free(so), free(ci), free(co);
    data_free(&in, nin);
    cdl_dataset_free(&d.d);
    cdl_net_free(net);
    dlclose(lib);
    return bad;
}
