/* trainer_int.h -- runtime-private interface between the trainer's files.  Not
 * installed, not part of cdl.h.
 *
 * The files form layers; each calls only the ones below it (no cycles):
 *
 *   trainer.c        cdl_main: the option table, parsing, usage, dispatch
 *   trainer_train.c  train (set-up, one epoch, finish) and eval
 *   trainer_tools.c  sample, grad;  trainer_gradcheck.c  gradcheck;  trainer_generate.c  generate
 *   trainer_dp.c     a training step over shards: ranks (dist.c) and micro-batches
 *   trainer_setup.c  what the commands share: datasets, input mapping, nets, loaders
 *   progress.c       the clock and the progress bar
 */
#ifndef CDL_TRAINER_INT_H
#define CDL_TRAINER_INT_H

#include "cdl.h"

#include <pthread.h>

#define TR_STR 512

/* Every option of every subcommand; trainer.c fills it from the built-in defaults, the
 * model's train_defaults and then argv. */
typedef struct tr_opts {
    char cmd[16];                 /* train, eval, gradcheck, sample, grad */
    char data[TR_STR];            /* dataset name or path */
    char test[TR_STR];            /* --test: the test split's file (tsv:FILE), or "" */
    char feed[TR_STR];            /* --feed: "input=column,..." */
    int64_t epochs, batch;        /* batch 0: the compiled batch */
    char optimizer[256];
    char groups[TR_STR], no_decay[256], freeze[256];   /* parameter groups (cdl_optim_groups) */
    double lr;                    /* < 0: the optimizer spec's */
    char schedule[128];
    int64_t warmup;
    double clip;                  /* 0: no clipping */
    uint64_t seed;
    int threads, workers;
    char save[TR_STR], resume[TR_STR], load[TR_STR], log[TR_STR], plot[TR_STR], out[TR_STR];
    int64_t log_every;            /* 0: per-epoch lines and rows only */
    char entry[128];
    int json, quiet;
    int no_input_check;           /* gradcheck --no-input-check */
    int eval_mode;                /* grad --eval */
    cdl_transform tf;
    int64_t limit, test_limit;    /* 0: the whole split */
    double eps;                   /* gradcheck */
    int64_t n;                    /* gradcheck elements / sample images */
    int64_t batches;              /* grad */
    int nclasses;                 /* gradcheck: range of random i32 inputs (0: from output 0) */
    char adversarial[128], attack[128];   /* used by --adversarial and eval --attack: adversarial training / attacks */
    int accum;                    /* micro-batches per rank (0: 1) */
    char prompt[4096];            /* generate: the text to continue */
    int64_t tokens, top_k;        /* generate: tokens to draw; the K most likely (0: all) */
    double temperature, top_p;    /* generate: softmax temperature (0: greedy); nucleus mass */
} tr_opts;

/* ---- trainer_train.c */
int tr_train(const cdl_model *m, const tr_opts *o);        /* 0, -1 error, -2 interrupted */
int tr_eval(const cdl_model *m, const tr_opts *o);         /* 0, -1 error */
int tr_signal_caught(void);                                /* the signal that stopped train */

/* ---- trainer_tools.c, trainer_gradcheck.c: each returns the exit status */
int tr_gradcheck(const cdl_model *m, const tr_opts *o);
int tr_sample(const cdl_model *m, const tr_opts *o);
int tr_grad(const cdl_model *m, const tr_opts *o);
int tr_generate(const cdl_model *m, const tr_opts *o);     /* trainer_generate.c */

/* ---- trainer_dp.c: a step over the shards of a global batch (ranks x micro-batches) */
#define TR_MAX_ACCUM 64
typedef struct tr_dp {
    const cdl_model *m;
    int rank, size, k;            /* this rank, the ranks, micro-batches per rank (--accum) */
    cdl_loader *l[TR_MAX_ACCUM];  /* micro-batch j: loader shard rank * k + j of size * k */
    void *acc;                    /* k > 1: the sum of the shards' gradients */
    void *state0, *state_sum;     /* k > 1 with state: the state the step started from; the sum */
    double loss;                  /* the last shard's loss */
    int sync;                     /* batch norm over every rank's shard (cdl_bn_sharded) */
    cdl_bn_shards bn;
} tr_dp;
typedef struct tr_dp_step {
    cdl_adv *adv;                 /* --adversarial, or NULL */
    uint64_t seed;                /* keys the attacks' random starts, with net->step */
} tr_dp_step;
/* Loaders over d with lc (batch = the global batch) for this rank's shards; buffers.
 * -1 and a message. */
int tr_dp_new(tr_dp *dp, const cdl_model *m, const cdl_dataset *d, const cdl_loader_cfg *lc, int accum);
void tr_dp_free(tr_dp *dp);
int64_t tr_dp_batches(const tr_dp *dp);                    /* global batches per epoch */
int tr_dp_start(tr_dp *dp, uint64_t epoch, int64_t skip);  /* cdl_loader_start of each */
/* Global batch b (the next one): net->grad receives the gradient of the mean loss over
 * its examples (summed over every rank), the state the mean over its shards, *loss
 * that mean loss and *rows its rows.  *sig: the highest signal any rank caught up to
 * the step's agreement (tr_signal_caught on each) or 0.  1, 0 at the epoch's end, -1 on every rank when one failed. */
int tr_dp_grad(tr_dp *dp, cdl_net *net, int64_t b, const tr_dp_step *st, int *sig, double *loss, int64_t *rows);

/* ---- trainer_setup.c */
/* Where the dataset goes: feed[i] is model input i's column; xi the first real input
 * (the one attacks perturb), yi the first i32 input of one value per example (the
 * labels accuracy is measured against); -1 when there is none. */
typedef struct tr_map { cdl_feed feed[CDL_DATA_MAXFEED]; int xi, yi; } tr_map;
/* Open split `train` of o->data ("random[:N]" makes data shaped like m's inputs), cut
 * to `limit` examples (0: all); -1 and a message. */
int tr_open_dataset(const cdl_model *m, const tr_opts *o, int train, int64_t limit, cdl_dataset *d);
/* Metadata key ("vocab", "labels") of the checkpoint --resume or --load names: 1 and
 * *value (cdl_free it), 0 when there is none or no checkpoint (*value NULL), -1. */
int tr_ckpt_text(const tr_opts *o, const char *key, char **value);
/* Feed m's inputs from d's columns by name, o->feed mapping others; -1 and a message. */
int tr_map_inputs(const cdl_model *m, const cdl_dataset *d, const tr_opts *o, tr_map *map);
/* "inputs fed: t <- column price" for the inputs fed from a column of another name. */
void tr_print_feeds(FILE *f, const cdl_model *m, const cdl_dataset *d, const tr_map *map);
/* A net with parameters from o->load (when set) or m->init(o->seed); NULL on error. */
cdl_net *tr_make_net(const cdl_model *m, const tr_opts *o);
int tr_batch(const cdl_model *m, const tr_opts *o);        /* o->batch or the compiled one */
int tr_check_batch(const cdl_model *m, const tr_opts *o);  /* o->batch <= compiled; -1 */
/* An unshuffled loader of map's feeds over d with o's batch, workers, seed and
 * normalisation (no augmentation): evaluation and grad. */
cdl_loader *tr_plain_loader(const cdl_model *m, const tr_opts *o, const cdl_dataset *d, const tr_map *map);
/* oneDNN generates its GEMM kernels at the process's first product (~0.04 s of CPU,
 * measured: the first 64x784x256 dnnl_sgemm takes 42 ms, the next 0.2 ms).
 * tr_gemm_warm_start makes a small product on a thread of its own, so that the kernels
 * are made while the main thread opens the datasets and sets up the net; it does
 * nothing for an f64 model or when oneDNN does not serve the f32 products.
 * tr_gemm_warm_join waits for that thread (call it before the first step). */
typedef struct tr_warm { pthread_t th; int on; } tr_warm;
void tr_gemm_warm_start(const cdl_model *m, tr_warm *w);
void tr_gemm_warm_join(tr_warm *w);
/* Fault in a block's pages for writing, its contents unchanged (madvise
 * MADV_POPULATE_WRITE; a no-op where it is missing). */
void tr_prefault(void *p, size_t bytes);
/* ": <the recorded cause>" into buf when a kernel or the tape recorded one (cdl_fail)
 * since the last cdl_clear_error, else "".  Returns buf. */
const char *tr_cause(char *buf, size_t n);
/* -1 and the message "the loss is nan <what>: <cause>" (the cause when one was
 * recorded): a step whose loss is not finite is an error with its reason. */
int tr_loss_failed(double loss, const char *what);
/* "key":v, for a JSON object: finite values as %.17g, others as null. */
void tr_json_num(FILE *f, const char *key, double v, int comma);

/* ---- progress.c: the clock, and a one-line progress bar on a terminal */
double tr_now(void);                                       /* monotonic seconds */
/* CPU seconds of the calling thread (NaN if the clock is missing).  train --json
 * reports the training thread's over the command ("thread_cpu_seconds"): with the
 * loader's worker on another core, the epoch's wall time on an idle machine. */
double tr_thread_cpu(void);
typedef struct tr_progress {
    int on;                       /* stderr is a terminal and not --quiet */
    int epoch, epochs;
    int64_t total, done;          /* examples in this epoch */
    int64_t left_after;           /* examples in the epochs after this one */
    double t0, last;
} tr_progress;
void tr_progress_begin(tr_progress *p, int quiet, int epoch, int epochs, int64_t total,
                       int64_t left_after);
void tr_progress_update(tr_progress *p, int64_t done, double loss);
void tr_progress_end(tr_progress *p);                      /* clears the line */
/* Seconds as "1:02:03" / "2:03" into buf. */
void tr_fmt_time(char *buf, size_t n, double s);

#endif
