/* trainer.c -- cdl_main: the command line every generated model program shares.
 *
 *   PROG train      [options]   train on a dataset, evaluate every epoch
 *   PROG eval       --load F    test loss and accuracy of a checkpoint (--attack SPEC:
 *                               also robust accuracy under FGSM / PGD, adversarial.c)
 *   PROG gradcheck  [--load F]  central differences vs the model's gradient (f64 builds)
 *   PROG sample     [--load F]  run an entry point on N(0,1) noise, write a PNG grid
 *   PROG grad       [--load F]  loss and parameter gradients of the first batches
 *
 * This file holds the option table and parsing, the shared set-up (dataset, input
 * mapping, net) and the train and eval commands; trainer_tools.c holds gradcheck,
 * sample and grad; progress.c the progress bar; plot.c the SVG and PNG writers.
 *
 * Options come, in increasing priority, from the built-in defaults, the model's
 * `train {}` section (m->train_defaults, "key=value" lines whose keys are option
 * names) and argv ("--key value" or "--key=value").
 *
 * Adversarial training (--adversarial SPEC) perturbs part of every batch with
 * adversarial.c's attacks before the step (tr_perturb_batch).
 *
 * Exactness of resume: the loader's shuffle is keyed by (seed, epoch), the global step
 * (net->step, which keys dropout and the lr schedule), the optimizer state, the seed
 * and the batch position are all in the checkpoint, so `train --epochs 1 --save a`
 * then `train --resume a --epochs 2` computes the same parameters, bit for bit, as
 * `train --epochs 2`.  --epochs is the total, not the number of further epochs.
 */
#include "trainer_int.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

double tr_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------- options */

enum { C_TRAIN = 1, C_EVAL = 2, C_GRADCHECK = 4, C_SAMPLE = 8, C_GRAD = 16, C_ALL = 31 };

typedef struct tr_optdef {
    const char *name;
    const char *arg;          /* NULL: a flag */
    unsigned cmds;            /* C_* where it applies */
    const char *help;
} tr_optdef;

static const tr_optdef tr_optdefs[] = {
    {"data", "NAME|PATH", C_TRAIN | C_EVAL | C_GRAD,
     "dataset: fashion-mnist, mnist, NAME:DIR, csv:FILE, a .csv file or an IDX directory"},
    {"epochs", "N", C_TRAIN, "total epochs (a resumed run continues up to N)"},
    {"batch", "N", C_TRAIN | C_EVAL | C_GRADCHECK | C_GRAD, "batch size, at most the compiled one"},
    {"optimizer", "SPEC", C_TRAIN, "sgd[:lr=,momentum=,nesterov=,weight_decay=], adam[:lr=,beta1=,beta2=,eps=,weight_decay=], adamw[...]"},
    {"lr", "X", C_TRAIN, "learning rate (overrides the optimizer spec's)"},
    {"schedule", "SPEC", C_TRAIN, "const | step:every=EPOCHS,gamma=G | cosine[:min=X] | warmup:steps=N"},
    {"warmup", "N", C_TRAIN, "linear lr warmup over the first N steps (with any schedule)"},
    {"clip", "NORM", C_TRAIN, "clip the global gradient norm to NORM"},
    {"seed", "N", C_ALL, "seed of initialisation, shuffling, dropout and noise"},
    {"threads", "N", C_ALL, "BLAS threads"},
    {"workers", "N", C_TRAIN | C_EVAL | C_GRAD, "data loader worker threads (0: load in the training thread)"},
    {"save", "FILE", C_TRAIN, "checkpoint at every epoch end"},
    {"resume", "FILE", C_TRAIN, "continue exactly from a checkpoint of the same run"},
    {"load", "FILE", C_EVAL | C_GRADCHECK | C_SAMPLE | C_GRAD, "parameters from a checkpoint"},
    {"log", "FILE.csv", C_TRAIN, "one row per epoch: epoch,step,train_loss,test_loss,test_accuracy,seconds"},
    {"plot", "FILE.svg", C_TRAIN, "loss and accuracy curves"},
    {"json", NULL, C_TRAIN | C_EVAL | C_GRADCHECK, "print a one-line JSON summary on stdout"},
    {"quiet", NULL, C_ALL, "no progress bar or per-epoch lines"},
    {"normalize", "MEAN,STD", C_TRAIN | C_EVAL | C_GRAD, "feed (x - MEAN) / STD"},
    {"augment", "crop=P,flip,noise=S", C_TRAIN, "random crop with padding P, horizontal flips, gaussian noise"},
    {"limit", "N", C_TRAIN | C_GRAD, "use the first N training examples"},
    {"test-limit", "N", C_TRAIN | C_EVAL, "use the first N test examples"},
    {"eps", "X", C_GRADCHECK, "finite-difference step (default 1e-6)"},
    {"n", "N", C_GRADCHECK | C_SAMPLE, "gradcheck: parameter elements to check; sample: images"},
    {"classes", "N", C_GRADCHECK, "random i32 inputs in [0, N) (default: output 0's width)"},
    {"entry", "NAME", C_SAMPLE, "entry point to run (default: the first)"},
    {"out", "FILE", C_SAMPLE | C_GRAD, "output file (also -o)"},
    {"batches", "N", C_GRAD, "number of batches (default 1)"},
    {"adversarial", "SPEC", C_TRAIN, "adversarial training: fgsm[:eps=,rand=,ratio=,min=,max=,clip=] | "
                                       "pgd[:eps=,alpha=,steps=,rand=,ratio=,...] | none"},
    {"attack", "SPEC", C_EVAL, "also report robust accuracy under fgsm[:eps=...] or pgd[:eps=,alpha=,steps=,...]"},
};
enum { TR_NOPT = (int)(sizeof tr_optdefs / sizeof tr_optdefs[0]) };

static const struct { const char *name; unsigned bit; const char *what; } tr_cmds[] = {
    {"train", C_TRAIN, "train on a dataset, evaluating on its test split every epoch"},
    {"eval", C_EVAL, "test loss and accuracy of a checkpoint"},
    {"gradcheck", C_GRADCHECK, "check the model's gradients by central differences (f64 builds)"},
    {"sample", C_SAMPLE, "run an entry point on N(0,1) noise and write a PNG grid"},
    {"grad", C_GRAD, "write the loss and parameter gradients of the first batches (safetensors)"},
};
enum { TR_NCMD = (int)(sizeof tr_cmds / sizeof tr_cmds[0]) };

static const tr_optdef *tr_find_opt(const char *name) {
    if (strcmp(name, "dataset") == 0) name = "data";
    if (strcmp(name, "o") == 0) name = "out";
    for (int i = 0; i < TR_NOPT; i++)
        if (strcmp(tr_optdefs[i].name, name) == 0) return &tr_optdefs[i];
    return NULL;
}

static void tr_opts_default(tr_opts *o, const char *cmd) {
    memset(o, 0, sizeof *o);
    snprintf(o->cmd, sizeof o->cmd, "%s", cmd);
    snprintf(o->data, sizeof o->data, "fashion-mnist");
    snprintf(o->optimizer, sizeof o->optimizer, "adam");
    snprintf(o->schedule, sizeof o->schedule, "const");
    o->epochs = 5;
    o->lr = -1;
    o->seed = 1;
    o->workers = 1;
    o->eps = 1e-6;
    o->n = -1;
    o->batches = 1;
}

/* Integer value in [lo, hi]; -1 and a message naming `where` otherwise. */
static int tr_int(const char *where, const char *name, const char *v, int64_t lo, int64_t hi,
                  int64_t *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno || x < lo || x > hi)
        return cdl_fail("%s: --%s: '%s' is not an integer in [%lld, %lld]", where, name, v,
                        (long long)lo, (long long)hi);
    *out = x;
    return 0;
}

static int tr_num(const char *where, const char *name, const char *v, double lo, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || !isfinite(x) || x < lo)
        return cdl_fail("%s: --%s: '%s' is not a number >= %g", where, name, v, lo);
    *out = x;
    return 0;
}

static int tr_str(const char *where, const char *name, const char *v, char *dst, size_t n) {
    if (strlen(v) >= n) return cdl_fail("%s: --%s: value too long", where, name);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

/* --augment crop=P,flip,noise=S into o->tf. */
static int tr_augment(const char *where, const char *v, cdl_transform *tf) {
    char buf[128];
    if (tr_str(where, "augment", v, buf, sizeof buf) < 0) return -1;
    char *save = NULL;
    for (char *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *val = strchr(kv, '=');
        if (val) *val++ = 0;
        int64_t i = 0;
        if (strcmp(kv, "flip") == 0 && !val) tf->hflip = 1;
        else if (strcmp(kv, "crop") == 0 && val) {
            if (tr_int(where, "augment crop", val, 0, 64, &i) < 0) return -1;
            tf->crop_pad = (int)i;
        } else if (strcmp(kv, "noise") == 0 && val) {
            if (tr_num(where, "augment noise", val, 0, &tf->noise_std) < 0) return -1;
        } else {
            return cdl_fail("%s: --augment: unknown item '%s' (crop=P, flip, noise=S)", where, kv);
        }
    }
    return 0;
}

/* Set option `name` (a tr_optdefs name) from value v (NULL for flags). */
static int tr_set(tr_opts *o, const char *where, const char *name, const char *v) {
    int64_t i = 0;
    double d;
    const tr_optdef *def = tr_find_opt(name);
    if (!def) return cdl_fail("%s: unknown option --%s", where, name);
    name = def->name;
    if (strcmp(name, "data") == 0) return tr_str(where, name, v, o->data, sizeof o->data);
    if (strcmp(name, "epochs") == 0) return tr_int(where, name, v, 0, 1000000, &o->epochs);
    if (strcmp(name, "batch") == 0) return tr_int(where, name, v, 1, 1 << 30, &o->batch);
    if (strcmp(name, "optimizer") == 0) {
        cdl_optim_cfg c;
        if (cdl_optim_parse(&c, v) < 0) return cdl_fail("%s: --optimizer: %s", where, cdl_last_error());
        return tr_str(where, name, v, o->optimizer, sizeof o->optimizer);
    }
    if (strcmp(name, "lr") == 0) return tr_num(where, name, v, 0, &o->lr);
    if (strcmp(name, "schedule") == 0) {
        cdl_sched s;
        if (cdl_sched_parse(&s, v) < 0) return cdl_fail("%s: --schedule: %s", where, cdl_last_error());
        return tr_str(where, name, v, o->schedule, sizeof o->schedule);
    }
    if (strcmp(name, "warmup") == 0) return tr_int(where, name, v, 0, INT64_MAX / 2, &o->warmup);
    if (strcmp(name, "clip") == 0) return tr_num(where, name, v, 0, &o->clip);
    if (strcmp(name, "seed") == 0) {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 0);
        if (end == v || *end || errno || v[0] == '-')
            return cdl_fail("%s: --seed: '%s' is not a non-negative integer", where, v);
        o->seed = s;
        return 0;
    }
    if (strcmp(name, "threads") == 0 || strcmp(name, "workers") == 0) {
        if (tr_int(where, name, v, 0, 64, &i) < 0) return -1;
        *(name[0] == 't' ? &o->threads : &o->workers) = (int)i;
        return 0;
    }
    if (strcmp(name, "save") == 0) return tr_str(where, name, v, o->save, sizeof o->save);
    if (strcmp(name, "resume") == 0) return tr_str(where, name, v, o->resume, sizeof o->resume);
    if (strcmp(name, "load") == 0) return tr_str(where, name, v, o->load, sizeof o->load);
    if (strcmp(name, "log") == 0) return tr_str(where, name, v, o->log, sizeof o->log);
    if (strcmp(name, "plot") == 0) return tr_str(where, name, v, o->plot, sizeof o->plot);
    if (strcmp(name, "out") == 0) return tr_str(where, name, v, o->out, sizeof o->out);
    if (strcmp(name, "entry") == 0) return tr_str(where, name, v, o->entry, sizeof o->entry);
    if (strcmp(name, "json") == 0) return o->json = 1, 0;
    if (strcmp(name, "quiet") == 0) return o->quiet = 1, 0;
    if (strcmp(name, "normalize") == 0) {
        char buf[128], *comma;
        if (tr_str(where, name, v, buf, sizeof buf) < 0) return -1;
        if (!(comma = strchr(buf, ',')))
            return cdl_fail("%s: --normalize: expected MEAN,STD, got '%s'", where, v);
        *comma = 0;
        if (tr_num(where, name, buf, -1e30, &o->tf.mean) < 0 ||
            tr_num(where, name, comma + 1, 0, &o->tf.std) < 0)
            return -1;
        if (o->tf.std <= 0) return cdl_fail("%s: --normalize: STD must be > 0", where);
        o->tf.normalize = 1;
        return 0;
    }
    if (strcmp(name, "augment") == 0) return tr_augment(where, v, &o->tf);
    if (strcmp(name, "limit") == 0) return tr_int(where, name, v, 1, INT64_MAX / 2, &o->limit);
    if (strcmp(name, "test-limit") == 0) return tr_int(where, name, v, 1, INT64_MAX / 2, &o->test_limit);
    if (strcmp(name, "eps") == 0) {
        if (tr_num(where, name, v, 0, &d) < 0) return -1;
        if (d <= 0) return cdl_fail("%s: --eps must be > 0", where);
        o->eps = d;
        return 0;
    }
    if (strcmp(name, "n") == 0) return tr_int(where, name, v, 1, INT64_MAX / 2, &o->n);
    if (strcmp(name, "classes") == 0) {
        if (tr_int(where, name, v, 1, 1 << 30, &i) < 0) return -1;
        o->nclasses = (int)i;
        return 0;
    }
    if (strcmp(name, "batches") == 0) return tr_int(where, name, v, 1, 1 << 20, &o->batches);
    if (strcmp(name, "adversarial") == 0 || strcmp(name, "attack") == 0) {
        int adv = name[1] == 'd';
        char *dst = adv ? o->adversarial : o->attack;
        size_t cap = adv ? sizeof o->adversarial : sizeof o->attack;
        if (!strcmp(v, "none") || !strcmp(v, "off") || !strcmp(v, "0") || !*v) return dst[0] = 0, 0;
        cdl_attack a;
        if (cdl_attack_parse(&a, v) < 0) return cdl_fail("%s: --%s: %s", where, name, cdl_last_error());
        return tr_str(where, name, v, dst, cap);
    }
    return cdl_fail("%s: option --%s is not handled", where, name);   /* table out of sync */
}

/* The model's `train {}` defaults: "key=value" lines (blank lines and # comments
 * ignored).  They are for `train`; eval and grad take only the data set-up from them
 * (data, normalize: test data must be fed as in training).  Unknown keys are an error,
 * so a typo in the model file does not go unnoticed.  A batch larger than the compiled
 * one (a model rebuilt with -D B=4) is lowered to it. */
static int tr_apply_defaults(tr_opts *o, const cdl_model *m, unsigned cmd) {
    const char *s = m->train_defaults;
    char where[160];
    snprintf(where, sizeof where, "model %s: train defaults", m->name ? m->name : "?");
    while (s && *s) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        char line[TR_STR + 64];
        if (len >= sizeof line) return cdl_fail("%s: line too long", where);
        memcpy(line, s, len);
        line[len] = 0;
        s = nl ? nl + 1 : s + len;
        char *k = line;
        while (*k == ' ' || *k == '\t') k++;
        char *e = k + strlen(k);
        while (e > k && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) *--e = 0;
        if (!*k || *k == '#') continue;
        char *v = strchr(k, '=');
        if (v) {
            char *ke = v;
            *v++ = 0;
            while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t')) *--ke = 0;
            while (*v == ' ' || *v == '\t') v++;
        }
        const tr_optdef *def = tr_find_opt(k);
        if (!def) return cdl_fail("%s: unknown key '%s'", where, k);
        if (!(def->cmds & cmd)) continue;
        if (cmd != C_TRAIN && strcmp(def->name, "data") && strcmp(def->name, "normalize")) continue;
        if (def->arg && !v) return cdl_fail("%s: '%s' needs a value (key=value)", where, k);
        if (!def->arg) {                  /* a flag: "json", "json=1" or "json=0" */
            if (v && strcmp(v, "0") && strcmp(v, "1") && strcmp(v, "true") && strcmp(v, "false"))
                return cdl_fail("%s: '%s' is a flag (0 or 1)", where, k);
            if (v && (!strcmp(v, "0") || !strcmp(v, "false"))) continue;
            v = NULL;
        }
        if (tr_set(o, where, k, v) < 0) return -1;
    }
    if (o->batch > m->batch) o->batch = m->batch;
    return 0;
}

static void tr_usage(FILE *f, const char *prog, const cdl_model *m) {
    fprintf(f, "usage: %s COMMAND [options]    (model %s, %s, cdl %s)\n\ncommands:\n", prog,
            m->name ? m->name : "?", m->real_size == 8 ? "f64" : "f32", CDL_VERSION);
    for (int i = 0; i < TR_NCMD; i++) fprintf(f, "  %-10s %s\n", tr_cmds[i].name, tr_cmds[i].what);
    fprintf(f, "\n%s COMMAND --help lists the command's options.\n", prog);
}

static void tr_cmd_help(FILE *f, const char *prog, int c, const cdl_model *m) {
    fprintf(f, "usage: %s %s [options]\n%s\n\noptions:\n", prog, tr_cmds[c].name, tr_cmds[c].what);
    for (int i = 0; i < TR_NOPT; i++) {
        const tr_optdef *d = &tr_optdefs[i];
        if (!(d->cmds & tr_cmds[c].bit)) continue;
        char head[64];
        snprintf(head, sizeof head, "--%s%s%s", d->name, d->arg ? " " : "", d->arg ? d->arg : "");
        fprintf(f, "  %-28s %s\n", head, d->help);
    }
    if (tr_cmds[c].bit == C_TRAIN && m->train_defaults && *m->train_defaults)
        fprintf(f, "\nthe model's defaults (train {}):\n  %s\n", m->train_defaults);
}

/* ---------------------------------------------------------------- shared set-up */

int tr_batch(const cdl_model *m, const tr_opts *o) {
    return o->batch > 0 ? (int)o->batch : m->batch;
}

/* The dataset name for cdl_dataset_open: NAME and NAME:DIR pass through; an existing
 * directory becomes "fashion-mnist:DIR" (IDX files), an existing file "csv:FILE". */
int tr_open_dataset(const tr_opts *o, int train, int64_t limit, cdl_dataset *d) {
    char name[TR_STR + 32];
    struct stat st;
    memset(d, 0, sizeof *d);
    if (!strchr(o->data, ':') && stat(o->data, &st) == 0)
        snprintf(name, sizeof name, "%s%s", S_ISDIR(st.st_mode) ? "fashion-mnist:" : "csv:", o->data);
    else
        snprintf(name, sizeof name, "%s", o->data);
    if (cdl_dataset_open(d, name, train) < 0) return -1;
    if (d->n < 1) {
        cdl_dataset_free(d);
        return cdl_fail("%s: dataset has no examples", name);
    }
    if (limit > 0 && limit < d->n) {
        cdl_dataset sub;
        memset(&sub, 0, sizeof sub);
        if (cdl_dataset_from_arrays(&sub, limit, d->rank, d->dims, d->x, d->y) < 0) {
            cdl_dataset_free(d);
            return -1;
        }
        sub.nclasses = d->nclasses;          /* the subset may miss the top class */
        memcpy(sub.name, d->name, sizeof sub.name);
        cdl_dataset_free(d);
        *d = sub;
    }
    return 0;
}

static void tr_dims(char *buf, size_t n, int rank, const int64_t *dims, const char *first) {
    size_t k = (size_t)snprintf(buf, n, "[%s", first ? first : "");
    for (int i = first ? 1 : 0; i < rank && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i || first ? ", " : "", (long long)dims[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

int tr_map_inputs(const cdl_model *m, const cdl_dataset *d, tr_map *map) {
    map->xi = map->yi = -1;
    for (int i = 0; i < m->n_inputs; i++) {
        if (m->inputs[i].dtype == CDL_I32) {
            if (map->yi < 0) map->yi = i;
        } else if (map->xi < 0) {
            map->xi = i;
        }
    }
    if (map->xi < 0) return cdl_fail("model %s has no real input to feed the examples into", m->name);
    const cdl_tensor *x = &m->inputs[map->xi];
    char ds[96], is[96];
    tr_dims(ds, sizeof ds, d->rank, d->dims, NULL);
    tr_dims(is, sizeof is, x->rank, x->dims, "B");
    if (!(x->flags & CDL_T_BATCHED))
        return cdl_fail("model %s: input %s %s has no batch dimension to feed examples into", m->name, x->name, is);
    map->feat = cdl_tensor_numel(x, 1);
    if (map->feat != d->feat)
        return cdl_fail("dataset %s: examples are %s (%lld values) but model %s's input %s is %s "
                        "(%lld values per example)", d->name, ds, (long long)d->feat, m->name,
                        x->name, is, (long long)map->feat);
    if (map->yi >= 0) {
        const cdl_tensor *y = &m->inputs[map->yi];
        if (!d->y) return cdl_fail("dataset %s has no labels but model %s has the i32 input %s", d->name, m->name, y->name);
        if (!(y->flags & CDL_T_BATCHED) || cdl_tensor_numel(y, 1) != 1)
            return cdl_fail("model %s: i32 input %s must be one label per example ([B])", m->name, y->name);
        if (m->n_outputs > 0 && m->outputs[0].rank == 2 && (m->outputs[0].flags & CDL_T_BATCHED) &&
            m->outputs[0].dims[1] < d->nclasses)
            return cdl_fail("dataset %s has %d classes but model %s's output %s has %lld", d->name,
                            d->nclasses, m->name, m->outputs[0].name, (long long)m->outputs[0].dims[1]);
    }
    return 0;
}

cdl_net *tr_make_net(const cdl_model *m, const tr_opts *o) {
    cdl_net *net = cdl_net_new(m);
    if (!net) return NULL;
    net->seed = o->seed;
    if (m->init) m->init(net, o->seed);
    if (o->load[0] && cdl_ckpt_load(o->load, net, NULL, NULL) < 0) {
        cdl_net_free(net);
        return NULL;
    }
    return net;
}

/* ---------------------------------------------------------------- evaluation */

/* Argmax of each of rows rows of width c (real type rs) against labels: hits.  When
 * gate is not NULL only rows with gate[r] != 0 can hit; mark (NULL ok) receives 1 for
 * each hit row and 0 for the others. */
static int64_t tr_hits(const void *out, int rs, int64_t rows, int64_t c, const int32_t *y,
                       const unsigned char *gate, unsigned char *mark) {
    int64_t hits = 0;
    for (int64_t r = 0; r < rows; r++) {
        int64_t best = 0;
        if (rs == 8) {
            const double *p = (const double *)out + r * c;
            for (int64_t k = 1; k < c; k++) if (p[k] > p[best]) best = k;
        } else {
            const float *p = (const float *)out + r * c;
            for (int64_t k = 1; k < c; k++) if (p[k] > p[best]) best = k;
        }
        int hit = best == y[r] && (!gate || gate[r]);
        if (mark) mark[r] = (unsigned char)hit;
        hits += hit;
    }
    return hits;
}

/* Evaluation under attack: the attack state, a per-row flag buffer (compiled batch),
 * the seed keying the random starts, and the results. */
typedef struct tr_robust {
    cdl_adv *adv;
    unsigned char *ok;            /* rows classified correctly when clean */
    uint64_t seed;
    double loss, acc;             /* out: mean loss on the adversarial examples; accuracy */
} tr_robust;

/* RNG stream of the attacks' random starts (train: step = the global step; eval: step =
 * the batch index). */
#define TR_ADV_STREAM 0xAD7E5A11u

/* Mean test loss (NaN without a loss) and accuracy (NaN without labels or a [B, C]
 * output 0) of net over one pass of loader l (eval mode).  With rb, every batch is
 * also attacked (all its rows) and rb->loss, rb->acc receive the mean loss on the
 * adversarial examples and the robust accuracy: the fraction of examples classified
 * correctly both clean and attacked (the attacker may also leave x alone, so robust
 * accuracy never exceeds clean accuracy). */
static int tr_evaluate(const cdl_model *m, cdl_net *net, cdl_loader *l, const tr_map *map,
                       double *loss, double *acc, tr_robust *rb) {
    const cdl_tensor *o0 = m->n_outputs > 0 ? &m->outputs[0] : NULL;
    int with_acc = map->yi >= 0 && o0 && o0->rank == 2 && (o0->flags & CDL_T_BATCHED);
    int64_t c = with_acc ? o0->dims[1] : 0;
    double lsum = 0, rsum = 0;
    int64_t seen = 0, hits = 0, rhits = 0, b = 0;
    int rows;
    if (cdl_loader_start(l, 0, 0) < 0) return -1;
    while ((rows = cdl_loader_next(l, net->in[map->xi], map->yi >= 0 ? net->in[map->yi] : NULL)) > 0) {
        m->forward(net, rows);
        lsum += net->loss * rows;
        seen += rows;
        const int32_t *y = map->yi >= 0 ? net->in[map->yi] : NULL;
        if (with_acc) hits += tr_hits(net->out[0], m->real_size, rows, c, y, NULL, rb ? rb->ok : NULL);
        if (rb) {
            cdl_rng_key key = {rb->seed, (uint64_t)b, TR_ADV_STREAM};
            if (cdl_adv_perturb(rb->adv, net, rows, key) < 0) return -1;
            m->forward(net, rows);
            rsum += net->loss * rows;
            if (with_acc) rhits += tr_hits(net->out[0], m->real_size, rows, c, y, rb->ok, NULL);
        }
        b++;
    }
    if (rows < 0) return -1;
    *loss = m->has_loss && seen ? lsum / (double)seen : NAN;
    *acc = with_acc && seen ? (double)hits / (double)seen : NAN;
    if (rb) {
        rb->loss = m->has_loss && seen ? rsum / (double)seen : NAN;
        rb->acc = with_acc && seen ? (double)rhits / (double)seen : NAN;
    }
    return 0;
}

/* The attack `spec` on the examples' input map->xi, in the units the model is fed:
 * specs are in data units (pixels in [0, 1]); with --normalize, eps, alpha and the
 * valid range go through the same (x - mean) / std as the data.  NULL and a message. */
static cdl_adv *tr_adv_new(const cdl_model *m, const tr_opts *o, const char *spec, const tr_map *map) {
    cdl_attack a;
    if (cdl_attack_parse(&a, spec) < 0) return NULL;
    if (o->tf.normalize) {
        a.eps /= o->tf.std;
        a.alpha /= o->tf.std;
        a.lo = (a.lo - o->tf.mean) / o->tf.std;
        a.hi = (a.hi - o->tf.mean) / o->tf.std;
    }
    return cdl_adv_new(m, map->xi, &a);
}

static cdl_loader *tr_test_loader(const cdl_model *m, const tr_opts *o, const cdl_dataset *d) {
    cdl_loader_cfg lc;
    memset(&lc, 0, sizeof lc);
    lc.batch = tr_batch(m, o);
    lc.workers = o->workers;
    lc.seed = o->seed;
    lc.tf.normalize = o->tf.normalize;           /* no augmentation at test time */
    lc.tf.mean = o->tf.mean;
    lc.tf.std = o->tf.std;
    lc.real_size = m->real_size;
    return cdl_loader_new(d, &lc);
}

/* A number for JSON: finite values as %.17g, others as null. */
static void tr_json_num(FILE *f, const char *key, double v, int comma) {
    if (isfinite(v)) fprintf(f, "\"%s\":%.17g%s", key, v, comma ? "," : "");
    else fprintf(f, "\"%s\":null%s", key, comma ? "," : "");
}

static int tr_check_batch(const cdl_model *m, const tr_opts *o) {
    if (o->batch > m->batch)
        return cdl_fail("--batch %lld is larger than model %s's compiled batch %d (recompile with a "
                        "larger B)", (long long)o->batch, m->name, m->batch);
    return 0;
}

/* eval: test loss and accuracy of --load. */
static int tr_eval(const cdl_model *m, const tr_opts *o) {
    if (!o->load[0]) return cdl_fail("eval: --load FILE is required");
    if (tr_check_batch(m, o) < 0) return -1;
    cdl_dataset d;
    tr_map map;
    if (tr_open_dataset(o, 0, o->test_limit, &d) < 0) return -1;
    cdl_net *net = NULL;
    cdl_loader *l = NULL;
    tr_robust rb;
    memset(&rb, 0, sizeof rb);
    rb.seed = o->seed;
    int rc = -1;
    double loss, acc, t0 = tr_now();
    char spec[256] = "";
    if (tr_map_inputs(m, &d, &map) < 0 || !(net = tr_make_net(m, o)) || !(l = tr_test_loader(m, o, &d)))
        goto out;
    if (o->attack[0]) {
        cdl_attack a;
        if (cdl_attack_parse(&a, o->attack) < 0) goto out;
        a.ratio = 1;                                  /* eval attacks every example */
        cdl_attack_str(&a, spec, sizeof spec);
        if (!(rb.adv = tr_adv_new(m, o, o->attack, &map)) || !(rb.ok = cdl_alloc((size_t)m->batch))) goto out;
    }
    if (tr_evaluate(m, net, l, &map, &loss, &acc, rb.adv ? &rb : NULL) < 0) goto out;
    if (o->json) {
        printf("{\"model\":\"%s\",", m->name);
        tr_json_num(stdout, "test_loss", loss, 1);
        tr_json_num(stdout, "test_accuracy", acc, 1);
        if (rb.adv) {
            printf("\"attack\":\"%s\",", spec);
            tr_json_num(stdout, "clean_accuracy", acc, 1);
            tr_json_num(stdout, "robust_accuracy", rb.acc, 1);
            tr_json_num(stdout, "robust_loss", rb.loss, 1);
        }
        printf("\"examples\":%lld,\"seconds\":%.3f}\n", (long long)d.n, tr_now() - t0);
    } else {
        printf("test_loss %.6f  test_acc %.2f%%  (%lld examples of %s)\n", loss, 100 * acc,
               (long long)d.n, d.name);
        if (rb.adv)
            printf("attack %s: robust_acc %.2f%%  robust_loss %.6f  (clean_acc %.2f%%)\n", spec,
                   100 * rb.acc, rb.loss, 100 * acc);
    }
    rc = 0;
out:
    cdl_free(rb.ok);
    cdl_adv_free(rb.adv);
    cdl_loader_free(l);
    cdl_net_free(net);
    cdl_dataset_free(&d);
    return rc;
}

/* ---------------------------------------------------------------- train */

/* Per-epoch history (for the plot), indexed by epoch - 1. */
typedef struct tr_hist { double *epoch, *train, *test, *acc; int n; } tr_hist;

/* Start the CSV log.  On resume, keep the rows of epochs <= upto from an existing log
 * (they seed the history) and rewrite the file with them; otherwise start afresh. */
static FILE *tr_log_open(const char *path, int resume, uint64_t upto, tr_hist *h) {
    char (*keep)[256] = NULL;
    int nkeep = 0;
    FILE *f = resume ? fopen(path, "r") : NULL;
    if (f) {
        char line[256];
        keep = cdl_alloc(sizeof *keep * (size_t)(h->n + 1));
        if (!keep) {
            fclose(f);
            return NULL;
        }
        while (fgets(line, sizeof line, f)) {
            char *end;
            long long e = strtoll(line, &end, 10);
            if (end == line || *end != ',' || e < 1 || (uint64_t)e > upto || e > h->n || nkeep > h->n) continue;
            double v[5];
            char *p = end;
            int ok = 1;
            for (int k = 0; k < 5 && ok; k++) {
                if (*p != ',') ok = 0;
                else v[k] = strtod(p + 1, &p);
            }
            if (!ok) continue;
            h->epoch[e - 1] = (double)e;
            h->train[e - 1] = v[1];
            h->test[e - 1] = v[2];
            h->acc[e - 1] = v[3];
            snprintf(keep[nkeep++], sizeof keep[0], "%s", line);
        }
        fclose(f);
    }
    f = fopen(path, "w");
    if (!f) {
        cdl_free(keep);
        cdl_fail("%s: cannot write the log: %s", path, strerror(errno));
        return NULL;
    }
    fprintf(f, "epoch,step,train_loss,test_loss,test_accuracy,seconds\n");
    for (int i = 0; i < nkeep; i++) fputs(keep[i], f);
    fflush(f);
    cdl_free(keep);
    return f;
}

/* The plot's series: epochs 1..upto (gaps from a resume without a log are NaN). */
static int tr_plot(const tr_opts *o, const cdl_model *m, const tr_hist *h, int upto) {
    char title[160];
    snprintf(title, sizeof title, "%.60s on %.80s", m->name, o->data);
    return cdl_plot_svg(o->plot, title, upto, h->epoch, h->train, h->test, h->acc);
}

typedef struct tr_train_state {
    cdl_dataset dtr, dte;
    cdl_loader *ltr, *lte;
    cdl_net *net;
    cdl_optim opt;
    FILE *log;
    tr_hist h;
    double *hbuf;
    cdl_adv *adv;                 /* --adversarial, or NULL */
} tr_train_state;

static void tr_train_free(tr_train_state *s) {
    if (s->log) fclose(s->log);
    cdl_adv_free(s->adv);
    cdl_loader_free(s->ltr);
    cdl_loader_free(s->lte);
    cdl_optim_free(&s->opt);
    cdl_net_free(s->net);
    cdl_dataset_free(&s->dtr);
    cdl_dataset_free(&s->dte);
    cdl_free(s->hbuf);
}

/* SIGINT / SIGTERM during `train`: finish the current step, write a mid-epoch
 * checkpoint (with --save) and stop.  SA_RESETHAND: a second signal kills at once. */
static volatile sig_atomic_t tr_signal;
static void tr_on_signal(int sig) { tr_signal = sig; }

/* Adversarial training (--adversarial SPEC): before the training step, replace the
 * first round(ratio * rows) rows of the batch in net->in by adversarial examples made
 * with m->input_grad (eval mode, no parameter gradients).  The loader shuffles, so
 * those rows are a random subset of the epoch's examples.  The random start is keyed
 * by (seed, global step), so resume stays exact.  adv NULL: nothing. */
static int tr_perturb_batch(cdl_adv *adv, cdl_net *net, int rows, uint64_t seed, uint64_t step) {
    if (!adv) return 0;
    int k = (int)floor(cdl_adv_attack(adv)->ratio * rows + 0.5);
    cdl_rng_key key = {seed, step, TR_ADV_STREAM};
    return cdl_adv_perturb(adv, net, k, key);
}

static int tr_train(const cdl_model *m, const tr_opts *o) {
    if (!m->grad || !m->has_loss) return cdl_fail("model %s has no loss: nothing to train", m->name);
    if (tr_check_batch(m, o) < 0) return -1;
    cdl_optim_cfg ocfg;
    cdl_sched sched;
    if (cdl_optim_parse(&ocfg, o->optimizer) < 0 || cdl_sched_parse(&sched, o->schedule) < 0) return -1;
    if (o->lr >= 0) ocfg.lr = o->lr;
    if (o->warmup > 0) sched.warmup = o->warmup;

    tr_train_state s;
    memset(&s, 0, sizeof s);
    int rc = -1, ran = 0;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = tr_on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    tr_signal = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    tr_map map;
    double t_run = tr_now();
    if (tr_open_dataset(o, 1, o->limit, &s.dtr) < 0 || tr_open_dataset(o, 0, o->test_limit, &s.dte) < 0 ||
        tr_map_inputs(m, &s.dtr, &map) < 0 || tr_map_inputs(m, &s.dte, &map) < 0)
        goto out;
    if (!(s.net = cdl_net_new(m)) || cdl_optim_init(&s.opt, m, &ocfg) < 0) goto out;
    char adv_spec[256] = "";                          /* canonical, in data units */
    if (o->adversarial[0]) {
        cdl_attack a;
        if (cdl_attack_parse(&a, o->adversarial) < 0 || !(s.adv = tr_adv_new(m, o, o->adversarial, &map)))
            goto out;
        cdl_attack_str(&a, adv_spec, sizeof adv_spec);
    }
    cdl_net *net = s.net;
    net->seed = o->seed;
    if (m->init) m->init(net, o->seed);
    cdl_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.seed = o->seed;
    if (o->resume[0]) {
        if (cdl_ckpt_load(o->resume, net, &s.opt, &meta) < 0) goto out;
        net->seed = meta.seed;                        /* the run's seed, whatever --seed says */
        net->step = meta.step;
    }
    uint64_t seed = meta.seed, step = meta.step;

    int B = tr_batch(m, o);
    cdl_loader_cfg lc;
    memset(&lc, 0, sizeof lc);
    lc.batch = B;
    lc.shuffle = 1;
    lc.workers = o->workers;
    lc.seed = seed;
    lc.tf = o->tf;
    lc.real_size = m->real_size;
    tr_opts to = *o;
    to.seed = seed;
    if (!(s.ltr = cdl_loader_new(&s.dtr, &lc)) || !(s.lte = tr_test_loader(m, &to, &s.dte))) goto out;
    int64_t spe = cdl_loader_batches(s.ltr);
    sched.steps_per_epoch = spe;
    sched.total_steps = spe * (sched.span_epochs > 0 ? sched.span_epochs : o->epochs);

    int E = (int)o->epochs;
    s.h.n = E;
    if (!(s.hbuf = cdl_alloc(sizeof(double) * 4 * (size_t)(E + 1)))) goto out;
    s.h.epoch = s.hbuf;
    s.h.train = s.h.epoch + E + 1;
    s.h.test = s.h.train + E + 1;
    s.h.acc = s.h.test + E + 1;
    for (int i = 0; i < E; i++) {
        s.h.epoch[i] = i + 1;
        s.h.train[i] = s.h.test[i] = s.h.acc[i] = NAN;
    }
    if (o->log[0] && !(s.log = tr_log_open(o->log, o->resume[0] != 0, meta.epoch, &s.h))) goto out;

    FILE *out = o->json ? stderr : stdout;
    if (!o->quiet)
        fprintf(out, "model %s: %zu parameters; %s: %lld train, %lld test examples; batch %d; "
                     "%s lr %g; epochs %llu..%d\n", m->name, m->train_count, s.dtr.name,
                (long long)s.dtr.n, (long long)s.dte.n, B, o->optimizer, ocfg.lr,
                (unsigned long long)meta.epoch + 1, E);
    if (!o->quiet && s.adv) fprintf(out, "adversarial training: %s\n", adv_spec);
    double train_loss = NAN, test_loss = NAN, acc = NAN;
    uint64_t epoch = meta.epoch;
    char saved_at[64] = "";
    for (; epoch < (uint64_t)E; epoch++) {
        double t_ep = tr_now();
        int64_t skip = epoch == meta.epoch ? meta.batch_in_epoch : 0, b = skip;
        if (cdl_loader_start(s.ltr, epoch, skip) < 0) goto out;
        tr_progress pr;
        int64_t todo = s.dtr.n - skip * B;
        tr_progress_begin(&pr, o->quiet, (int)epoch + 1, E, todo < 0 ? 0 : todo,
                          (int64_t)(E - 1 - (int64_t)epoch) * s.dtr.n);
        double lsum = 0;
        int64_t seen = 0;
        int rows;
        while ((rows = cdl_loader_next(s.ltr, net->in[map.xi], map.yi >= 0 ? net->in[map.yi] : NULL)) > 0) {
            net->step = step;
            if (tr_perturb_batch(s.adv, net, rows, seed, step) < 0) goto out;
            double loss = m->grad(net, rows);
            double norm = cdl_clip_grad_norm(net, o->clip);
            if (!isfinite(loss) || !isfinite(norm)) {
                tr_progress_end(&pr);
                cdl_fail("stopped: %s is %g at epoch %llu, step %llu (batch %lld); %s%s%s",
                         isfinite(loss) ? "the gradient norm" : "the loss", isfinite(loss) ? norm : loss,
                         (unsigned long long)epoch + 1, (unsigned long long)step, (long long)b,
                         saved_at[0] ? "the last good checkpoint is " : "no checkpoint was written",
                         saved_at[0] ? o->save : "", saved_at);
                goto out;
            }
            cdl_optim_step(&s.opt, net, cdl_sched_lr(&sched, ocfg.lr, step));
            net->step = ++step;
            b++;
            ran = 1;
            lsum += loss * rows;
            seen += rows;
            tr_progress_update(&pr, seen, lsum / (double)seen);
            if (tr_signal) {
                tr_progress_end(&pr);
                if (o->save[0]) {
                    cdl_ckpt_meta sm = {step, epoch, seed, b, "", 0};
                    if (cdl_ckpt_save(o->save, net, &s.opt, &sm) < 0) goto out;
                }
                cdl_fail("interrupted (signal %d) at epoch %llu, batch %lld, step %llu%s%s%s",
                         (int)tr_signal, (unsigned long long)epoch + 1, (long long)b,
                         (unsigned long long)step, o->save[0] ? "; saved " : "; nothing saved",
                         o->save[0] ? o->save : "", o->save[0] ? " (continue with --resume)" : "");
                rc = -2;
                goto out;
            }
        }
        tr_progress_end(&pr);
        if (rows < 0) goto out;
        train_loss = seen ? lsum / (double)seen : NAN;
        if (tr_evaluate(m, net, s.lte, &map, &test_loss, &acc, NULL) < 0) goto out;
        double secs = tr_now() - t_ep;
        s.h.train[epoch] = train_loss;
        s.h.test[epoch] = test_loss;
        s.h.acc[epoch] = acc;
        if (!o->quiet) {
            fprintf(out, "epoch %llu/%d  train_loss %.4f  test_loss %.4f", (unsigned long long)epoch + 1,
                    E, train_loss, test_loss);
            if (isfinite(acc)) fprintf(out, "  test_acc %.2f%%", 100 * acc);
            fprintf(out, "  step %llu  %.1fs\n", (unsigned long long)step, secs);
            fflush(out);
        }
        if (s.log) {
            fprintf(s.log, "%llu,%llu,%.9g,%.9g,%.9g,%.3f\n", (unsigned long long)epoch + 1,
                    (unsigned long long)step, train_loss, test_loss, acc, secs);
            fflush(s.log);
        }
        if (o->save[0]) {
            cdl_ckpt_meta sm = {step, epoch + 1, seed, 0, "", 0};
            if (cdl_ckpt_save(o->save, net, &s.opt, &sm) < 0) goto out;
            snprintf(saved_at, sizeof saved_at, " (epoch %llu)", (unsigned long long)epoch + 1);
        }
        if (o->plot[0] && tr_plot(o, m, &s.h, (int)epoch + 1) < 0) goto out;
    }
    if (!ran) {                  /* nothing trained (e.g. --epochs 0): still evaluate and save */
        if (tr_evaluate(m, net, s.lte, &map, &test_loss, &acc, NULL) < 0) goto out;
        if (!o->quiet) {
            fprintf(out, "no epochs to run (done %llu of %d)  test_loss %.4f", (unsigned long long)epoch, E,
                    test_loss);
            if (isfinite(acc)) fprintf(out, "  test_acc %.2f%%", 100 * acc);
            fprintf(out, "\n");
        }
        if (o->save[0]) {
            cdl_ckpt_meta sm = {step, epoch < meta.epoch ? meta.epoch : epoch, seed,
                                epoch == meta.epoch ? meta.batch_in_epoch : 0, "", 0};
            if (cdl_ckpt_save(o->save, net, &s.opt, &sm) < 0) goto out;
        }
        if (o->plot[0] && tr_plot(o, m, &s.h, E) < 0) goto out;
    }
    if (o->json) {
        printf("{\"model\":\"%s\",", m->name);
        tr_json_num(stdout, "train_loss", train_loss, 1);
        tr_json_num(stdout, "test_loss", test_loss, 1);
        tr_json_num(stdout, "test_accuracy", acc, 1);
        if (s.adv) printf("\"adversarial\":\"%s\",", adv_spec);
        printf("\"epochs\":%llu,\"steps\":%llu,\"seconds\":%.3f}\n", (unsigned long long)epoch,
               (unsigned long long)step, tr_now() - t_run);
        fflush(stdout);
    }
    rc = 0;
out:
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    tr_train_free(&s);
    return rc;
}

/* ---------------------------------------------------------------- main */

int cdl_main(const cdl_model *m, int argc, char **argv) {
    const char *prog = argc > 0 && argv[0] ? argv[0] : "model";
    const char *slash = strrchr(prog, '/');
    if (slash) prog = slash + 1;
    if (argc < 2) {
        tr_usage(stderr, prog, m);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        tr_usage(stdout, prog, m);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("%s: model %s (%s), cdl %s\n", prog, m->name, m->source ? m->source : "?", CDL_VERSION);
        return 0;
    }
    int c = -1;
    for (int i = 0; i < TR_NCMD; i++)
        if (!strcmp(cmd, tr_cmds[i].name)) c = i;
    if (c < 0) {
        fprintf(stderr, "%s: unknown command '%s'\n", prog, cmd);
        tr_usage(stderr, prog, m);
        return 2;
    }
    unsigned bit = tr_cmds[c].bit;
    tr_opts o;
    tr_opts_default(&o, cmd);
    if (tr_apply_defaults(&o, m, bit) < 0) {
        fprintf(stderr, "%s: %s\n", prog, cdl_last_error());
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            tr_cmd_help(stdout, prog, c, m);
            return 0;
        }
        char name[64];
        const char *val = NULL;
        if (!strcmp(a, "-o")) snprintf(name, sizeof name, "out");
        else if (a[0] == '-' && a[1] == '-' && a[2]) {
            const char *eq = strchr(a + 2, '=');
            size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
            if (len >= sizeof name) len = sizeof name - 1;
            memcpy(name, a + 2, len);
            name[len] = 0;
            if (eq) val = eq + 1;
        } else {
            fprintf(stderr, "%s %s: unexpected argument '%s' (see %s %s --help)\n", prog, cmd, a, prog, cmd);
            return 2;
        }
        const tr_optdef *def = tr_find_opt(name);
        if (!def || !(def->cmds & bit)) {
            fprintf(stderr, "%s %s: unknown option '%s' (see %s %s --help)\n", prog, cmd, a, prog, cmd);
            return 2;
        }
        if (def->arg && !val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s %s: option --%s needs a value (%s)\n", prog, cmd, def->name, def->arg);
                return 2;
            }
            val = argv[++i];
        } else if (!def->arg && val) {
            fprintf(stderr, "%s %s: option --%s takes no value\n", prog, cmd, def->name);
            return 2;
        }
        if (tr_set(&o, cmd, def->name, val) < 0) {
            fprintf(stderr, "%s: %s\n", prog, cdl_last_error());
            return 2;
        }
    }
    if (o.threads > 0) cdl_blas_set_threads(o.threads);
    int rc;
    switch (bit) {
    case C_TRAIN:
        rc = tr_train(m, &o);
        rc = rc == -2 ? 128 + (int)tr_signal : rc < 0 ? 1 : 0;
        break;
    case C_EVAL: rc = tr_eval(m, &o) < 0 ? 1 : 0; break;
    case C_GRADCHECK: return tr_gradcheck(m, &o);
    case C_SAMPLE: return tr_sample(m, &o);
    default: return tr_grad(m, &o);
    }
    if (rc) fprintf(stderr, "%s %s: %s\n", prog, cmd, cdl_last_error());
    return rc;
}
