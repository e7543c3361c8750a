/* charlm.c -- train the character-level language model models/charlm.cdl on a text
 * corpus, then sample text from it.
 *
 *   charlm [--corpus FILE]... [--steps N] [--lr X] [--sample N] [--temp X] ...
 *
 * Default corpus: every regular file of /usr/share/common-licenses (Debian's
 * base-files package: the GPL, LGPL, Apache, MPL, ... licences, about 270 kB of
 * English).  The text becomes character ids (0 = newline, 1..95 = ASCII ' '..'~'; tabs
 * become spaces, other bytes are dropped); the last 5% is held out.  A training batch
 * is B random windows of T + 1 characters: x = the first T, y = the last T.
 *
 * The program drives the generated code directly: charlm_grad (forward + backward),
 * the runtime's gradient clipping, Adam and cosine lr schedule, charlm_save/load, and
 * the model's `next` entry for sampling: one character in, next-character logits and
 * the new LSTM state out; the state is carried here, in the caller's buffers.
 *
 * Build: `make` (builds $(B)/examples/charlm from the generated model); run
 * `build/examples/charlm --help`.
 */
#include "charlm.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define LM_MAX_FILES 64
#define LM_DEFAULT_DIR "/usr/share/common-licenses"

/* The model's compiled sizes, read from its descriptor (inputs x: i32[B, T], and the
 * next entry's h0: f32[B, H], logits: f32[B, V]). */
typedef struct lm_dims { int B, T, H, V; } lm_dims;

typedef struct lm_opts {
    const char *corpus[LM_MAX_FILES];
    int n_corpus;
    long steps, eval_every, sample_n;
    double lr, min_lr, clip, temp;
    uint64_t seed;
    int threads;
    const char *save, *load, *prime;
} lm_opts;

/* ------------------------------------------------------------------ corpus */

/* Vocabulary: '\n' -> 0, ' '..'~' -> 1..95, '\t' -> ' ', anything else: -1 (dropped). */
static int lm_char_id(int ch) {
    if (ch == '\n') return 0;
    if (ch == '\t') ch = ' ';
    if (ch >= ' ' && ch <= '~') return ch - ' ' + 1;
    return -1;
}
static int lm_id_char(int id) { return id == 0 ? '\n' : ' ' + id - 1; }

/* Append the ids of file path to (*ids, *n, *cap) (realloc-grown; this is set-up, not a
 * training step).  -1 and a message on an I/O or allocation failure. */
static int lm_read_file(const char *path, int32_t **ids, size_t *n, size_t *cap) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "charlm: %s: cannot open\n", path); return -1; }
    int ch;
    while ((ch = getc(f)) != EOF) {
        int id = lm_char_id(ch);
        if (id < 0) continue;
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 1 << 16;
            int32_t *p = realloc(*ids, nc * sizeof *p);
            if (!p) { fclose(f); fprintf(stderr, "charlm: out of memory\n"); return -1; }
            *ids = p; *cap = nc;
        }
        (*ids)[(*n)++] = id;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { fprintf(stderr, "charlm: %s: read error\n", path); return -1; }
    return 0;
}

static int lm_cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The default corpus: the regular files (not symlinks: GPL -> GPL-3 would be read
 * twice) of LM_DEFAULT_DIR, in name order.  -1 when the directory is missing. */
static int lm_read_default(int32_t **ids, size_t *n, size_t *cap) {
    DIR *d = opendir(LM_DEFAULT_DIR);
    if (!d) { fprintf(stderr, "charlm: %s: cannot open (give --corpus FILE)\n", LM_DEFAULT_DIR); return -1; }
    static char names[LM_MAX_FILES][512];
    const char *sorted[LM_MAX_FILES];
    int k = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && k < LM_MAX_FILES) {
        struct stat st;
        int len = snprintf(names[k], sizeof names[k], "%s/%s", LM_DEFAULT_DIR, e->d_name);
        if (e->d_name[0] == '.' || len < 0 || (size_t)len >= sizeof names[k] ||
            lstat(names[k], &st) != 0 || !S_ISREG(st.st_mode)) continue;
        sorted[k] = names[k];
        k++;
    }
    closedir(d);
    qsort(sorted, (size_t)k, sizeof sorted[0], lm_cmp_str);
    for (int i = 0; i < k; i++)
        if (lm_read_file(sorted[i], ids, n, cap) != 0) return -1;
    return 0;
}

/* ------------------------------------------------------------------ randomness */

/* Uniform 32-bit word number i of stream `stream` at step `step` (Philox, as the
 * runtime's dropout), and a uniform [0, 1) double from it. */
static uint32_t lm_word(uint64_t seed, uint64_t step, uint64_t stream, uint64_t i) {
    uint32_t out[4];
    cdl_philox((cdl_rng_key){seed, step, stream}, i / 4, out);
    return out[i % 4];
}
static double lm_unif(uint64_t seed, uint64_t step, uint64_t stream, uint64_t i) {
    return (double)lm_word(seed, step, stream, i) / 4294967296.0;
}

/* ------------------------------------------------------------------ batches */

/* Fill rows 0..B-1 of x and y (i32[B, T] each, row stride T) with random windows of
 * ids[0 .. n): x = ids[o .. o+T), y = ids[o+1 .. o+T+1).  n > T. */
static void lm_random_batch(const lm_dims *d, const int32_t *ids, size_t n, uint64_t seed,
                            uint64_t step, int32_t *x, int32_t *y) {
    size_t span = n - (size_t)d->T;
    for (int b = 0; b < d->B; b++) {
        size_t o = (size_t)lm_word(seed, step, 1, (uint64_t)b) % span;
        memcpy(x + (size_t)b * d->T, ids + o, (size_t)d->T * sizeof *x);
        memcpy(y + (size_t)b * d->T, ids + o + 1, (size_t)d->T * sizeof *y);
    }
}

/* Mean loss (nats per character) of the held-out ids: consecutive windows, in batches
 * of up to B rows, forward in eval mode.  NaN when val is shorter than one window. */
static double lm_eval(cdl_net *net, const lm_dims *d, const int32_t *val, size_t n) {
    size_t windows = n > (size_t)d->T ? (n - 1) / (size_t)d->T : 0;
    double sum = 0;
    size_t done = 0;
    int32_t *x = net->in[0], *y = net->in[1];
    while (done < windows) {
        int nb = windows - done < (size_t)d->B ? (int)(windows - done) : d->B;
        for (int b = 0; b < nb; b++) {
            size_t o = (done + (size_t)b) * (size_t)d->T;
            memcpy(x + (size_t)b * d->T, val + o, (size_t)d->T * sizeof *x);
            memcpy(y + (size_t)b * d->T, val + o + 1, (size_t)d->T * sizeof *y);
        }
        charlm_forward(net, nb);
        sum += net->loss * nb;
        done += (size_t)nb;
    }
    return windows ? sum / (double)windows : NAN;
}

/* ------------------------------------------------------------------ sampling */

/* Draw one id from softmax(logits / temp) with u in [0, 1) (temp <= 0: argmax). */
static int lm_draw(const float *logits, int V, double temp, double u) {
    int best = 0;
    for (int v = 1; v < V; v++) if (logits[v] > logits[best]) best = v;
    if (temp <= 0) return best;
    double z = 0;
    for (int v = 0; v < V; v++) z += exp((logits[v] - logits[best]) / temp);
    double acc = 0, target = u * z;
    for (int v = 0; v < V; v++) {
        acc += exp((logits[v] - logits[best]) / temp);
        if (acc > target) return v;
    }
    return best;
}

/* Print prime, then n sampled characters, to stdout.  The state starts at zero, the
 * prime's characters are fed through the next entry one by one (its last logits give
 * the first sampled character), then each drawn character is fed back.  Buffers are
 * one row each (nb = 1). */
static int lm_sample(cdl_net *net, const lm_dims *d, const char *prime, long n, double temp,
                     uint64_t seed) {
    float *st = calloc((size_t)(4 * d->H + d->V), sizeof *st);
    if (!st) { fprintf(stderr, "charlm: out of memory\n"); return -1; }
    float *h = st, *c = st + d->H, *h2 = st + 2 * d->H, *c2 = st + 3 * d->H, *logits = st + 4 * d->H;
    size_t np = strlen(prime);
    int32_t id = 0;                              /* start as after a newline */
    fputs(prime, stdout);
    for (size_t k = 0; k < np + (size_t)n; k++) {
        /* feed `id`; read the next-character logits and the new state */
        const void *in[3] = {&id, h, c};
        void *out[3] = {logits, h2, c2};
        charlm_next(net, 1, in, out);
        memcpy(h, h2, (size_t)d->H * sizeof *h);
        memcpy(c, c2, (size_t)d->H * sizeof *c);
        if (k < np) {                            /* still reading the prime */
            int p = lm_char_id((unsigned char)prime[k]);
            id = p < 0 ? 1 : p;
            continue;
        }
        id = lm_draw(logits, d->V, temp, lm_unif(seed, 0, 2, (uint64_t)k));
        putchar(lm_id_char(id));
    }
    putchar('\n');
    free(st);
    return 0;
}

/* ------------------------------------------------------------------ main */

static void lm_usage(FILE *f) {
    fprintf(f,
        "usage: charlm [options]   train models/charlm.cdl on text, then sample from it\n"
        "  --corpus FILE   training text (repeatable; default: the files of %s)\n"
        "  --steps N       training steps (default 2000; 0 with --load: only sample)\n"
        "  --lr X          Adam learning rate, cosine-decayed to --min-lr (default 3e-3)\n"
        "  --min-lr X      final learning rate (default 3e-4)\n"
        "  --clip X        clip the gradient norm (default 1; 0: off)\n"
        "  --eval-every N  print train and held-out loss every N steps (default 250)\n"
        "  --seed N        initialisation, batches and sampling (default 1)\n"
        "  --threads N     BLAS threads (default 1)\n"
        "  --save FILE     checkpoint after training;  --load FILE: start from one\n"
        "  --sample N      characters to sample after training (default 600)\n"
        "  --temp X        sampling temperature (default 0.7; 0: greedy)\n"
        "  --prime TEXT    text the sample starts from (default \"The \")\n",
        LM_DEFAULT_DIR);
}

/* Parse argv into o; 0, or 2 for a usage error, 1 for --help. */
static int lm_parse(lm_opts *o, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return 1;
        if (i + 1 >= argc) { fprintf(stderr, "charlm: %s: missing value or unknown option\n", a); return 2; }
        const char *v = argv[++i];
        char *end = NULL;
        if (strcmp(a, "--corpus") == 0) {
            if (o->n_corpus == LM_MAX_FILES) { fprintf(stderr, "charlm: too many --corpus\n"); return 2; }
            o->corpus[o->n_corpus++] = v;
            continue;
        }
        if (strcmp(a, "--save") == 0) { o->save = v; continue; }
        if (strcmp(a, "--load") == 0) { o->load = v; continue; }
        if (strcmp(a, "--prime") == 0) { o->prime = v; continue; }
        double x = strtod(v, &end);
        if (!end || *end || !isfinite(x) || x < 0) {
            fprintf(stderr, "charlm: %s: '%s' is not a non-negative number\n", a, v);
            return 2;
        }
        if (strcmp(a, "--steps") == 0) o->steps = (long)x;
        else if (strcmp(a, "--eval-every") == 0) o->eval_every = (long)x;
        else if (strcmp(a, "--sample") == 0) o->sample_n = (long)x;
        else if (strcmp(a, "--lr") == 0) o->lr = x;
        else if (strcmp(a, "--min-lr") == 0) o->min_lr = x;
        else if (strcmp(a, "--clip") == 0) o->clip = x;
        else if (strcmp(a, "--temp") == 0) o->temp = x;
        else if (strcmp(a, "--seed") == 0) o->seed = (uint64_t)x;
        else if (strcmp(a, "--threads") == 0) o->threads = (int)x;
        else { fprintf(stderr, "charlm: unknown option %s\n", a); return 2; }
    }
    return 0;
}

static double lm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    lm_opts o = {.steps = 2000, .eval_every = 250, .sample_n = 600, .lr = 3e-3, .min_lr = 3e-4,
                 .clip = 1, .temp = 0.7, .seed = 1, .threads = 1, .prime = "The "};
    int rc = lm_parse(&o, argc, argv);
    if (rc) { lm_usage(rc == 1 ? stdout : stderr); return rc == 1 ? 0 : 2; }
    const cdl_model *m = &charlm_model;
    lm_dims d = {m->batch, (int)m->inputs[0].dims[1], (int)m->entries[0].in[1].dims[1],
                 (int)m->entries[0].out[0].dims[1]};
    cdl_blas_set_threads(o.threads);

    /* corpus -> ids; the last 5% is held out */
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    int bad = 0;
    if (o.n_corpus == 0) bad = lm_read_default(&ids, &n, &cap);
    for (int i = 0; i < o.n_corpus && !bad; i++) bad = lm_read_file(o.corpus[i], &ids, &n, &cap);
    size_t n_val = n / 20, n_train = n - n_val;
    if (!bad && n_train <= (size_t)d.T + 1) {
        fprintf(stderr, "charlm: the corpus has %zu usable characters (%zu for training, "
                "95%%); training needs more than %d\n", n, n_train, d.T + 1);
        bad = 1;
    }
    if (bad) { free(ids); return 1; }

    cdl_net *net = charlm_new();
    cdl_optim opt;
    cdl_optim_cfg cfg;
    cdl_optim_defaults(&cfg, CDL_OPT_ADAM);
    cfg.lr = o.lr;
    if (!net || cdl_optim_init(&opt, m, &cfg) != 0) {
        fprintf(stderr, "charlm: %s\n", cdl_last_error());
        charlm_free(net); free(ids);
        return 1;
    }
    charlm_init(net, o.seed);
    net->seed = o.seed;
    if (o.load && charlm_load(net, &opt, o.load) != 0) {
        fprintf(stderr, "charlm: %s\n", cdl_last_error());
        rc = 1; goto out;
    }
    char spec[64];
    snprintf(spec, sizeof spec, "cosine:min=%g", o.min_lr);
    cdl_sched sched;
    if (cdl_sched_parse(&sched, spec) != 0) { fprintf(stderr, "charlm: %s\n", cdl_last_error()); rc = 2; goto out; }
    sched.total_steps = (int64_t)o.steps;

    fprintf(stderr, "charlm: %zu characters (%zu train, %zu held out), vocabulary %d; "
            "B=%d T=%d H=%d; %ld steps, adam lr %g -> %g\n",
            n, n_train, n_val, d.V, d.B, d.T, d.H, o.steps, o.lr, o.min_lr);
    double t0 = lm_now(), run = 0;
    long since = 0;
    uint64_t first = net->step;
    for (long s = 0; s < o.steps; s++) {
        lm_random_batch(&d, ids, n_train, o.seed, net->step, net->in[0], net->in[1]);
        double loss = charlm_grad(net, d.B);
        if (!isfinite(loss)) { fprintf(stderr, "charlm: loss is %g at step %ld\n", loss, s); rc = 1; goto out; }
        cdl_clip_grad_norm(net, o.clip);
        cdl_optim_step(&opt, net, cdl_sched_lr(&sched, o.lr, net->step - first));
        net->step++;
        run += loss; since++;
        if ((o.eval_every && (s + 1) % o.eval_every == 0) || s + 1 == o.steps) {
            double v = lm_eval(net, &d, ids + n_train, n_val);
            fprintf(stderr, "step %5ld  train %.3f bits/char  held-out %.3f bits/char  %.1fs\n",
                    s + 1, run / since / log(2), v / log(2), lm_now() - t0);
            run = 0; since = 0;
        }
    }
    if (o.save && charlm_save(net, &opt, o.save) != 0) {
        fprintf(stderr, "charlm: %s\n", cdl_last_error());
        rc = 1; goto out;
    }
    if (o.sample_n > 0 && lm_sample(net, &d, o.prime, o.sample_n, o.temp, o.seed) != 0) rc = 1;
out:
    cdl_optim_free(&opt);
    charlm_free(net);
    free(ids);
    return rc;
}
