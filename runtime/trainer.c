/* trainer.c -- cdl_main: the command line every generated model program shares.
 *
 *   PROG train      [options]   train on a dataset, evaluate every epoch
 *   PROG eval       --load F    test loss and accuracy of a checkpoint (--attack SPEC:
 *                               also robust accuracy under FGSM / PGD, adversarial.c)
 *   PROG gradcheck  [--load F]  central differences vs the model's gradient (f64 builds)
 *   PROG sample     [--load F]  run an entry point on N(0,1) noise, write a PNG grid
 *   PROG grad       [--load F]  loss and parameter gradients of the first batches
 *   PROG generate   --load F    text from a next-token entry (trainer_generate.c)
 *
 * This file holds the option table, parsing, usage and the dispatch to the commands:
 * trainer_train.c (train, eval), trainer_tools.c (gradcheck, sample, grad), over
 * trainer_setup.c (what they share) and progress.c (see trainer_int.h).
 *
 * Options come, in increasing priority, from the built-in defaults, the model's
 * `train {}` section (m->train_defaults, "key=value" lines whose keys are option
 * names) and argv ("--key value" or "--key=value").
 */
#include "trainer_int.h"

#include <errno.h>
#include <string.h>

/* ---------------------------------------------------------------- options */

enum { C_TRAIN = 1, C_EVAL = 2, C_GRADCHECK = 4, C_SAMPLE = 8, C_GRAD = 16, C_GENERATE = 32, C_ALL = 63 };

typedef struct tr_optdef {
    const char *name;
    const char *arg;          /* NULL: a flag */
    unsigned cmds;            /* C_* where it applies */
    const char *help;
} tr_optdef;

static const tr_optdef tr_optdefs[] = {
    {"data", "NAME|PATH", C_TRAIN | C_EVAL | C_GRAD,
     "dataset: fashion-mnist, mnist, NAME:DIR, csv:FILE, a .csv file, an IDX directory, random[:N], text:FILE, "
     "bytes:FILE, tsv:FILE"},
    {"test", "tsv:FILE", C_TRAIN | C_EVAL, "the test split from this file (default: the data's held-out part)"},
    {"feed", "INPUT=COLUMN,...", C_TRAIN | C_EVAL | C_GRAD,
     "feed model inputs from dataset columns of other names (default: the column of the input's name)"},
    {"epochs", "N", C_TRAIN, "total epochs (a resumed run continues up to N)"},
    {"batch", "N", C_TRAIN | C_EVAL | C_GRADCHECK | C_GRAD,
     "batch size, at most the compiled one (gradcheck: default 8 or the compiled one if smaller)"},
    {"optimizer", "SPEC", C_TRAIN, "sgd[:lr=,momentum=,nesterov=,weight_decay=], adam[:lr=,beta1=,beta2=,eps=,weight_decay=], "
                                   "adamw[...], rmsprop[:lr=,alpha=,eps=,momentum=,centered=,weight_decay=], "
                                   "adagrad[:lr=,lr_decay=,eps=,initial_accumulator_value=,weight_decay=]"},
    {"lr", "X", C_TRAIN, "learning rate (overrides the optimizer spec's)"},
    {"groups", "PATTERNS:lr=X,weight_decay=Y;...", C_TRAIN,
     "parameter groups: their own lr (scaled by the schedule) and weight decay; patterns are globs over names"},
    {"no-decay", "PATTERNS", C_TRAIN, "no weight decay on these parameters (AdamW recipe: bias,norm)"},
    {"freeze", "PATTERNS", C_TRAIN, "frozen parameters: no update, no optimizer state change (e.g. conv1.*)"},
    {"schedule", "SPEC", C_TRAIN, "const | step:every=EPOCHS,gamma=G | cosine[:min=X,epochs=N,steps=S] | warmup:steps=N"},
    {"warmup", "N", C_TRAIN, "linear lr warmup over the first N steps (with any schedule)"},
    {"clip", "NORM", C_TRAIN, "clip the global gradient norm to NORM"},
    {"seed", "N", C_ALL, "seed of initialisation, shuffling, dropout and noise"},
    {"threads", "N", C_ALL, "BLAS threads"},
    {"workers", "N", C_TRAIN | C_EVAL | C_GRAD, "data loader worker threads (0: load in the training thread)"},
    {"save", "FILE", C_TRAIN, "checkpoint at every epoch end"},
    {"resume", "FILE", C_TRAIN, "continue exactly from a checkpoint of the same run"},
    {"load", "FILE", C_EVAL | C_GRADCHECK | C_SAMPLE | C_GRAD | C_GENERATE, "parameters from a checkpoint"},
    {"log", "FILE.csv", C_TRAIN, "one row per epoch: epoch,step,train_loss,test_loss,test_accuracy,seconds"},
    {"log-every", "N", C_TRAIN, "also a line (and a --log row) every N steps: the mean train loss over them"},
    {"plot", "FILE.svg", C_TRAIN, "loss and accuracy curves"},
    {"json", NULL, C_TRAIN | C_EVAL | C_GRADCHECK, "print a one-line JSON summary on stdout"},
    {"quiet", NULL, C_ALL, "no progress bar or per-epoch lines"},
    {"normalize", "MEAN,STD|none", C_TRAIN | C_EVAL | C_GRAD, "feed (x - MEAN) / STD (none: unnormalised, whatever the model says)"},
    {"augment", "crop=P,flip,noise=S|none", C_TRAIN,
     "random crop with padding P, horizontal flips, gaussian noise (replaces the model's; none: off)"},
    {"limit", "N", C_TRAIN | C_GRAD, "use the first N training examples"},
    {"test-limit", "N", C_TRAIN | C_EVAL, "use the first N test examples"},
    {"eps", "X", C_GRADCHECK, "finite-difference step (default 1e-6)"},
    {"no-input-check", NULL, C_GRADCHECK, "do not check the gradients with respect to the inputs"},
    {"eval", NULL, C_GRAD, "eval mode: no dropout, noise at its mean, batch norm on running statistics"},
    {"n", "N", C_GRADCHECK | C_SAMPLE, "gradcheck: parameter elements to check; sample: images"},
    {"classes", "N", C_GRADCHECK, "random i32 inputs in [0, N) (default: output 0's width)"},
    {"entry", "NAME", C_SAMPLE | C_GENERATE, "entry point to run (sample: default the first; generate: next)"},
    {"prompt", "TEXT", C_GENERATE, "text to continue (default: none, start after a newline)"},
    {"tokens", "N", C_GENERATE, "tokens to generate (default 200)"},
    {"temperature", "T", C_GENERATE, "softmax temperature (default 1; 0: greedy)"},
    {"top-k", "K", C_GENERATE, "draw among the K most likely tokens (default 0: all; 1: greedy)"},
    {"top-p", "P", C_GENERATE, "draw among the most likely tokens holding probability P (default 1: all)"},
    {"out", "FILE", C_SAMPLE | C_GRAD, "output file (also -o)"},
    {"batches", "N", C_GRAD, "number of batches (default 1)"},
    {"adversarial", "SPEC", C_TRAIN, "adversarial training: fgsm[:eps=,rand=,ratio=,min=,max=,clip=] | "
                                       "pgd[:eps=,alpha=,steps=,rand=,ratio=,...] | fgm[:eps=] (L2; norm=2|inf, on=INPUT; "
                                       "a perturb() input: embedding space) | none"},
    {"accum", "K", C_TRAIN, "micro-batches per process: each shard of a batch runs as K pieces whose gradients are summed"},
    {"attack", "SPEC", C_EVAL, "also report robust accuracy under fgsm[:eps=...], fgm[:eps=...] (L2) or "
                               "pgd[:eps=,alpha=,steps=,norm=,on=,...]"},
};
enum { TR_NOPT = (int)(sizeof tr_optdefs / sizeof tr_optdefs[0]) };

static const struct { const char *name; unsigned bit; const char *what; } tr_cmds[] = {
    {"train", C_TRAIN, "train on a dataset, evaluating on its test split every epoch"},
    {"eval", C_EVAL, "test loss and accuracy of a checkpoint"},
    {"gradcheck", C_GRADCHECK, "check the model's gradients by central differences (f64 builds)"},
    {"sample", C_SAMPLE, "run an entry point on N(0,1) noise and write a PNG grid"},
    {"grad", C_GRAD, "write the loss, inputs and parameter gradients of the first batches (safetensors)"},
    {"generate", C_GENERATE, "write text with a next-token entry (a language model trained on text)"},
};
enum { TR_NCMD = (int)(sizeof tr_cmds / sizeof tr_cmds[0]) };

static const tr_optdef *tr_find_opt(const char *name) {
    if (strcmp(name, "dataset") == 0) name = "data";
    if (strcmp(name, "o") == 0) name = "out";
    if (strcmp(name, "no_decay") == 0) name = "no-decay";     /* the train {} spellings */
    if (strcmp(name, "log_every") == 0) name = "log-every";
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
    o->tokens = 200;
    o->temperature = 1;
    o->top_p = 1;
}

/* Integer value in [lo, hi]; -1 and a message naming `where` otherwise. */
static int tr_int(const char *where, const char *name, const char *v, int64_t lo, int64_t hi,
                  int64_t *out) {
    if (cdl_parse_i64(v, lo, hi, out) < 0)
        return cdl_fail("%s: --%s: '%s' is not an integer in [%lld, %lld]", where, name, v,
                        (long long)lo, (long long)hi);
    return 0;
}

/* A finite real >= lo; -1 and a message naming `where` otherwise. */
static int tr_num(const char *where, const char *name, const char *v, double lo, double *out) {
    double x;
    if (cdl_parse_f64(v, &x) < 0 || x < lo)
        return cdl_fail("%s: --%s: '%s' is not a number >= %g", where, name, v, lo);
    *out = x;
    return 0;
}

static int tr_str(const char *where, const char *name, const char *v, char *dst, size_t n) {
    if (strlen(v) >= n) return cdl_fail("%s: --%s: value too long", where, name);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

/* --augment crop=P,flip,noise=S into o->tf.  The value replaces an earlier one (the
 * command line's the model's train {} section's) instead of adding to it, and `none`
 * switches augmentation off. */
static int tr_augment(const char *where, const char *v, cdl_transform *tf) {
    char buf[128];
    if (tr_str(where, "augment", v, buf, sizeof buf) < 0) return -1;
    tf->crop_pad = 0;
    tf->hflip = 0;
    tf->noise_std = 0;
    if (strcmp(buf, "none") == 0) return 0;
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
            return cdl_fail("%s: --augment: unknown item '%s' (crop=P, flip, noise=S, or none)", where, kv);
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
    if (strcmp(name, "test") == 0) return tr_str(where, name, v, o->test, sizeof o->test);
    if (strcmp(name, "feed") == 0) {                  /* repeatable: the maps add up */
        size_t k = strlen(o->feed);
        if (!*v || strchr(v, ' ') || k + strlen(v) + 2 > sizeof o->feed)
            return cdl_fail("%s: --feed '%s': want INPUT=COLUMN[,INPUT=COLUMN...]", where, v);
        snprintf(o->feed + k, sizeof o->feed - k, "%s%s", k ? "," : "", v);
        return 0;
    }
    if (strcmp(name, "epochs") == 0) return tr_int(where, name, v, 0, 1000000, &o->epochs);
    if (strcmp(name, "batch") == 0) return tr_int(where, name, v, 1, 1 << 30, &o->batch);
    if (strcmp(name, "optimizer") == 0) {
        cdl_optim_cfg c;
        if (cdl_optim_parse(&c, v) < 0) return cdl_fail("%s: --optimizer: %s", where, cdl_last_error());
        return tr_str(where, name, v, o->optimizer, sizeof o->optimizer);
    }
    if (strcmp(name, "lr") == 0) return tr_num(where, name, v, 0, &o->lr);
    if (strcmp(name, "groups") == 0) return tr_str(where, name, v, o->groups, sizeof o->groups);
    if (strcmp(name, "no-decay") == 0) return tr_str(where, name, v, o->no_decay, sizeof o->no_decay);
    if (strcmp(name, "freeze") == 0) return tr_str(where, name, v, o->freeze, sizeof o->freeze);
    if (strcmp(name, "schedule") == 0) {
        cdl_sched s;
        if (cdl_sched_parse(&s, v) < 0) return cdl_fail("%s: --schedule: %s", where, cdl_last_error());
        return tr_str(where, name, v, o->schedule, sizeof o->schedule);
    }
    if (strcmp(name, "warmup") == 0) return tr_int(where, name, v, 0, INT64_MAX / 2, &o->warmup);
    if (strcmp(name, "clip") == 0) return tr_num(where, name, v, 0, &o->clip);
    if (strcmp(name, "seed") == 0) {
        if (cdl_parse_u64(v, &o->seed) < 0)
            return cdl_fail("%s: --seed: '%s' is not a non-negative integer", where, v);
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
    if (strcmp(name, "log-every") == 0) return tr_int(where, name, v, 1, INT64_MAX / 2, &o->log_every);
    if (strcmp(name, "plot") == 0) return tr_str(where, name, v, o->plot, sizeof o->plot);
    if (strcmp(name, "out") == 0) return tr_str(where, name, v, o->out, sizeof o->out);
    if (strcmp(name, "entry") == 0) return tr_str(where, name, v, o->entry, sizeof o->entry);
    if (strcmp(name, "json") == 0) return o->json = 1, 0;
    if (strcmp(name, "quiet") == 0) return o->quiet = 1, 0;
    if (strcmp(name, "no-input-check") == 0) return o->no_input_check = 1, 0;
    if (strcmp(name, "eval") == 0) return o->eval_mode = 1, 0;
    if (strcmp(name, "normalize") == 0) {
        char buf[128], *comma;
        if (tr_str(where, name, v, buf, sizeof buf) < 0) return -1;
        if (strcmp(buf, "none") == 0) return o->tf.normalize = 0, 0;        /* off, whatever train {} says */
        if (!(comma = strchr(buf, ',')))
            return cdl_fail("%s: --normalize: expected MEAN,STD or none, got '%s'", where, v);
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
    if (strcmp(name, "accum") == 0) {
        if (tr_int(where, name, v, 1, TR_MAX_ACCUM, &i) < 0) return -1;
        o->accum = (int)i;
        return 0;
    }
    if (strcmp(name, "batches") == 0) return tr_int(where, name, v, 1, 1 << 20, &o->batches);
    if (strcmp(name, "prompt") == 0) return tr_str(where, name, v, o->prompt, sizeof o->prompt);
    if (strcmp(name, "tokens") == 0) return tr_int(where, name, v, 0, 1 << 30, &o->tokens);
    if (strcmp(name, "top-k") == 0) return tr_int(where, name, v, 0, 1 << 30, &o->top_k);
    if (strcmp(name, "temperature") == 0) return tr_num(where, name, v, 0, &o->temperature);
    if (strcmp(name, "top-p") == 0) {
        if (tr_num(where, name, v, 0, &o->top_p) < 0) return -1;
        if (o->top_p <= 0 || o->top_p > 1) return cdl_fail("%s: --top-p: %s is not in (0, 1]", where, v);
        return 0;
    }
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
 * (data, test, feed, normalize: test data must be fed as in training).  Unknown keys are an error,
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
        if (cmd != C_TRAIN && strcmp(def->name, "data") && strcmp(def->name, "test") && strcmp(def->name, "feed") &&
            strcmp(def->name, "normalize"))
            continue;
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

/* ---------------------------------------------------------------- main */

/* Many processes (dist.c, trainer_dp.c): train and eval run data-parallel, the other
 * commands in one process only.  Ranks other than 0 keep quiet: progress, --json,
 * --log, --plot and --save are rank 0's. */
static int tr_ranks(tr_opts *o, unsigned bit) {
    int n = cdl_dist_size();
    if (n == 1) return 0;
    if (!(bit & (C_TRAIN | C_EVAL)))
        return cdl_fail("%s runs in one process: start it without mpirun (this job has %d ranks)", o->cmd, n);
    if (cdl_dist_rank() > 0) {
        o->quiet = 1;
        o->json = 0;
        o->log[0] = o->plot[0] = o->save[0] = 0;
    }
    return 0;
}

/* Whether this rank reports a failure: rank 0 always; another rank only when the
 * others do not know of it (then it is the only one who can tell). */
static void tr_report(const char *prog, const char *cmd) {
    if (cdl_dist_rank() == 0) fprintf(stderr, "%s %s: %s\n", prog, cmd, cdl_last_error());
    else if (!cdl_dist_agreed()) fprintf(stderr, "%s %s: rank %d: %s\n", prog, cmd, cdl_dist_rank(), cdl_last_error());
}

static int tr_main(const cdl_model *m, int argc, char **argv) {
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
    if (tr_ranks(&o, bit) < 0) {
        fprintf(stderr, "%s: %s\n", prog, cdl_last_error());
        return 2;
    }
    cdl_blas_set_threads(o.threads); /* 0 (not given): the CPUs the process may use */
    int rc;
    switch (bit) {
    case C_TRAIN:
        rc = tr_train(m, &o);
        rc = rc == -2 ? 128 + tr_signal_caught() : rc < 0 ? 1 : 0;
        if (rc) tr_report(prog, cmd);
        break;
    case C_EVAL:
        rc = tr_eval(m, &o) < 0 ? 1 : 0;
        if (rc) tr_report(prog, cmd);
        break;
    case C_GRADCHECK: rc = tr_gradcheck(m, &o); break;
    case C_SAMPLE: rc = tr_sample(m, &o); break;
    case C_GENERATE: rc = tr_generate(m, &o); break;
    default: rc = tr_grad(m, &o); break;
    }
    /* What went to stdout (results, --json) must have arrived: a full disk or a closed
     * pipe is an error, not a silent success. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "%s %s: cannot write to standard output: %s\n", prog, cmd, strerror(errno));
        if (rc == 0) rc = 1;
    }
    return rc;
}

/* The program's main: joins the MPI job when mpirun started it (dist.c), runs the
 * command, leaves the job.  A usage error (status 2) comes before any collective, so
 * the ranks agree on it like on any failure; they all see the same command line. */
int cdl_main(const cdl_model *m, int argc, char **argv) {
    if (cdl_dist_init() < 0) {
        fprintf(stderr, "%s: %s\n", argc > 0 && argv[0] ? argv[0] : "model", cdl_last_error());
        return 2;
    }
    if (cdl_dist_rank() > 0 && !freopen("/dev/null", "w", stdout)) {  /* results are rank 0's */
        fprintf(stderr, "rank %d: cannot silence standard output: %s\n", cdl_dist_rank(), strerror(errno));
        return cdl_dist_finish(1);
    }
    int rc = tr_main(m, argc, argv);
    if (rc == 2 && cdl_dist_size() > 1) cdl_dist_agree(1, NULL, NULL, 0);
    return cdl_dist_finish(rc);
}
