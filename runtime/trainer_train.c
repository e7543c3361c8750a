/* trainer_train.c -- the train and eval commands.
 *
 * train runs in three parts: set-up (datasets, net, optimizer, resume, loaders, log),
 * one call per epoch (the steps, then evaluation, the epoch's line, log row, checkpoint
 * and plot), and the finish (the summary, --json).  eval evaluates a checkpoint, also
 * under attack (--attack SPEC, adversarial.c).
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
#include "adversarial_text.h"
#include "optim_groups.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* RNG stream of the attacks' random starts (train: step = the global step; eval: step =
 * the batch index). */
#define TR_ADV_STREAM 0xAD7E5A11u

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
    int rows = 0, rc = cdl_loader_start(l, 0, 0);
    while (rc == 0 && (rows = cdl_loader_next(l, net->in)) > 0) {
        cdl_clear_error();
        m->forward(net, rows);
        if (m->has_loss && !isfinite(net->loss)) {
            char what[96];
            snprintf(what, sizeof what, "on test batch %lld (eval mode)", (long long)b);
            rc = tr_loss_failed(net->loss, what);
            break;
        }
        lsum += net->loss * rows;
        seen += rows;
        const int32_t *y = map->yi >= 0 ? net->in[map->yi] : NULL;
        if (with_acc) hits += tr_hits(net->out[0], m->real_size, rows, c, y, NULL, rb ? rb->ok : NULL);
        if (rb) {
            cdl_rng_key key = {rb->seed, (uint64_t)b, TR_ADV_STREAM};
            if ((rc = cdl_adv_perturb(rb->adv, net, rows, key)) < 0) break;
            m->forward(net, rows);
            cdl_adv_reset(rb->adv, net);
            rsum += net->loss * rows;
            if (with_acc) rhits += tr_hits(net->out[0], m->real_size, rows, c, y, rb->ok, NULL);
        }
        b++;
    }
    /* Many ranks: each evaluated its shard of every test batch; the sums are summed
     * (and a failure on any rank is every rank's). */
    double sum[5] = {lsum, (double)seen, (double)hits, rsum, (double)rhits};
    if (cdl_dist_agree(rc < 0 || rows < 0, NULL, sum, 5) < 0) return -1;
    lsum = sum[0], seen = (int64_t)sum[1], hits = (int64_t)sum[2], rsum = sum[3], rhits = (int64_t)sum[4];
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
 * valid range go through the same (x - mean) / std as the data.  HotFlip attacks the
 * i32 input fed from the text's ids (column x of d) against the labels, with d's
 * vocabulary; its examples go to show (NULL: none).  NULL and a message. */
static cdl_adv *tr_adv_new(const cdl_model *m, const tr_opts *o, const char *spec, const tr_map *map,
                           const cdl_dataset *d, FILE *show) {
    cdl_attack a;
    if (cdl_attack_parse(&a, spec) < 0) return NULL;
    if (a.kind == CDL_ATTACK_HOTFLIP) {
        int col = cdl_dataset_find(d, "x"), ids = -1;
        for (int i = 0; col >= 0 && ids < 0 && i < m->n_inputs; i++)
            if (map->feed[i].col == col && m->inputs[i].dtype == CDL_I32) ids = i;
        cdl_hotflip_io io = {ids, map->yi, d->vocab, d->labels, show};
        return cdl_adv_new_text(m, &a, &io);
    }
    int xi = cdl_adv_target(m, &a, map->xi);
    if (xi < 0) return NULL;
    if (o->tf.normalize && !(m->inputs[xi].flags & CDL_T_PERTURB)) {   /* a delta is in the model's units */
        a.eps /= o->tf.std;
        a.alpha /= o->tf.std;
        a.lo = (a.lo - o->tf.mean) / o->tf.std;
        a.hi = (a.hi - o->tf.mean) / o->tf.std;
    }
    return cdl_adv_new(m, xi, &a);
}

/* eval: test loss and accuracy of --load. */
int tr_eval(const cdl_model *m, const tr_opts *o) {
    if (!o->load[0]) return cdl_fail("eval: --load FILE is required");
    if (tr_check_batch(m, o) < 0) return -1;
    cdl_dataset d;
    tr_map map;
    tr_warm warm;
    tr_gemm_warm_start(m, &warm);                 /* oneDNN's kernels made during the set-up */
    if (tr_open_dataset(m, o, 0, o->test_limit, &d) < 0) {
        tr_gemm_warm_join(&warm);
        return -1;
    }
    cdl_net *net = NULL;
    cdl_loader *l = NULL;
    tr_robust rb;
    memset(&rb, 0, sizeof rb);
    rb.seed = o->seed;
    int rc = -1;
    double loss, acc, t0 = tr_now();
    char spec[256] = "";
    if (tr_map_inputs(m, &d, o, &map) < 0 || !(net = tr_make_net(m, o)) || !(l = tr_plain_loader(m, o, &d, &map)))
        goto out;
    if (o->attack[0]) {
        cdl_attack a;
        if (cdl_attack_parse(&a, o->attack) < 0) goto out;
        a.ratio = 1;                                  /* eval attacks every example */
        cdl_attack_str(&a, spec, sizeof spec);
        if (!(rb.adv = tr_adv_new(m, o, o->attack, &map, &d, o->json ? NULL : stdout)) ||
            !(rb.ok = cdl_alloc((size_t)m->batch)))
            goto out;
        if (cdl_adv_on_delta(rb.adv)) {                 /* its settings as resolved for the delta */
            a = *cdl_adv_attack(rb.adv);
            a.ratio = 1;
            cdl_attack_str(&a, spec, sizeof spec);
        }
    }
    tr_gemm_warm_join(&warm);
    if (tr_evaluate(m, net, l, &map, &loss, &acc, rb.adv ? &rb : NULL) < 0) goto out;
    int64_t attacked = 0, changed = 0, flips = 0;
    if (cdl_adv_text(rb.adv)) cdl_hotflip_counts(cdl_adv_text(rb.adv), &attacked, &changed, &flips);
    if (o->json) {
        printf("{\"model\":\"%s\",", m->name);
        tr_json_num(stdout, "test_loss", loss, 1);
        tr_json_num(stdout, "test_accuracy", acc, 1);
        if (rb.adv) {
            printf("\"attack\":\"%s\",", spec);
            tr_json_num(stdout, "clean_accuracy", acc, 1);
            tr_json_num(stdout, "robust_accuracy", rb.acc, 1);
            tr_json_num(stdout, "robust_loss", rb.loss, 1);
            tr_json_num(stdout, "attack_success", acc > 0 ? (acc - rb.acc) / acc : NAN, 1);
            if (cdl_adv_text(rb.adv)) printf("\"flips\":%lld,", (long long)flips);
        }
        printf("\"examples\":%lld,\"seconds\":%.3f}\n", (long long)d.n, tr_now() - t0);
    } else {
        printf("test_loss %.6f  test_acc %.2f%%  (%lld examples of %s)\n", loss, 100 * acc,
               (long long)d.n, d.name);
        if (rb.adv)
            printf("attack %s: robust_acc %.2f%%  robust_loss %.6f  (clean_acc %.2f%%, success %.2f%%)\n", spec,
                   100 * rb.acc, rb.loss, 100 * acc, acc > 0 ? 100 * (acc - rb.acc) / acc : NAN);
        if (cdl_adv_text(rb.adv))
            printf("hotflip: %lld words classified correctly were attacked, %lld of them are now wrong, "
                   "%lld characters flipped\n", (long long)attacked, (long long)changed, (long long)flips);
    }
    rc = 0;
out:
    tr_gemm_warm_join(&warm);
    cdl_free(rb.ok);
    cdl_adv_free(rb.adv);
    cdl_loader_free(l);
    cdl_net_free(net);
    cdl_dataset_free(&d);
    return rc;
}

/* ---------------------------------------------------------------- log and plot */

/* Per-epoch history (for the plot), indexed by epoch - 1. */
typedef struct tr_hist { double *epoch, *train, *test, *acc; int n; } tr_hist;

/* The log's buffered writes reached the file: fflush and check.  Every write error
 * (a full disk, /dev/full, a closed pipe) is an error, never a lost log. */
static int tr_log_flush(FILE *f, const char *path) {
    if (fflush(f) != 0 || ferror(f))
        return cdl_fail("%s: cannot write the log: %s", path, errno ? strerror(errno) : "write error");
    return 0;
}

/* One row of our log: "epoch,step,train_loss,test_loss,test_accuracy,seconds", the
 * values into v.  A step row (--log-every) leaves the test columns empty (*step_row = 1,
 * those values NaN).  1 if line is such a row, 0 if not (the header, a foreign line). */
static int tr_log_row(const char *line, double v[6], int *step_row) {
    const char *p = line;
    int empty = 0;
    for (int k = 0; k < 6; k++) {
        char *end;
        if (k > 0 && *p++ != ',') return 0;
        if ((k == 3 || k == 4) && (*p == ',')) {
            v[k] = NAN;
            empty++;
            continue;
        }
        v[k] = strtod(p, &end);
        if (end == p) return 0;
        p = end;
    }
    *step_row = empty == 2;
    return (empty == 0 || empty == 2) && v[0] >= 1 && v[0] == floor(v[0]) && v[1] >= 0;
}

/* Start the CSV log.  On resume, keep from an existing log (a regular file) the epoch
 * rows of epochs <= upto (they seed the history) and the step rows of steps <= upto_step
 * (a mid-epoch checkpoint keeps its epoch's step rows so far), and rewrite the file with
 * them; otherwise start afresh.  The rows are the trainer's own, so a value that does not
 * read back (NaN is written as "nan", a missing accuracy) stays NaN in the history. */
static FILE *tr_log_open(const char *path, int resume, uint64_t upto, uint64_t upto_step, tr_hist *h) {
    char *keep = NULL;
    size_t nkeep = 0;
    struct stat st;
    FILE *f = resume && stat(path, &st) == 0 && S_ISREG(st.st_mode) ? fopen(path, "r") : NULL;
    if (f) {
        char line[256];
        if (!(keep = cdl_alloc((size_t)st.st_size + 1))) {
            fclose(f);
            return NULL;
        }
        while (fgets(line, sizeof line, f)) {
            double v[6];
            int step_row;
            size_t len = strlen(line);
            if (!tr_log_row(line, v, &step_row) || nkeep + len > (size_t)st.st_size) continue;
            if (step_row ? v[1] > (double)upto_step : (v[0] > (double)upto || v[0] > h->n)) continue;
            if (!step_row) {
                int e = (int)v[0];
                h->epoch[e - 1] = v[0];
                h->train[e - 1] = v[2];
                h->test[e - 1] = v[3];
                h->acc[e - 1] = v[4];
            }
            memcpy(keep + nkeep, line, len);
            nkeep += len;
        }
        fclose(f);
    }
    f = fopen(path, "w");
    if (!f) {
        cdl_free(keep);
        cdl_fail("%s: cannot write the log: %s", path, strerror(errno));
        return NULL;
    }
    errno = 0;
    fprintf(f, "epoch,step,train_loss,test_loss,test_accuracy,seconds\n");
    if (nkeep) fwrite(keep, 1, nkeep, f);
    cdl_free(keep);
    if (tr_log_flush(f, path) < 0) {
        fclose(f);
        return NULL;
    }
    return f;
}

/* ---------------------------------------------------------------- train */

/* Everything a training run holds between its parts. */
typedef struct tr_run {
    const cdl_model *m;
    const tr_opts *o;
    cdl_dataset dtr, dte;
    tr_dp dp;                     /* the training batches: this rank's shards (trainer_dp.c) */
    cdl_loader *lte;
    cdl_net *net;
    cdl_optim opt;
    cdl_optim_cfg ocfg;
    cdl_sched sched;
    tr_map map, tmap;             /* the training and test splits' feeds */
    cdl_ckpt_meta meta;           /* where the run starts (from --resume, or zeros) */
    uint64_t seed, step;          /* the run's seed; the global step */
    int B, E;                     /* batch, total epochs */
    FILE *log, *out;              /* --log; where the per-epoch lines go */
    tr_hist h;
    double *hbuf;
    cdl_adv *adv;                 /* --adversarial, or NULL */
    char adv_spec[256];           /* its canonical spec, in data units */
    char saved_at[64];            /* " (epoch N)" once a checkpoint was written */
    double train_loss, test_loss, acc, t_run;
    double cpu_run;               /* tr_thread_cpu() at the start */
    double t_epoch;               /* tr_now() at the epoch's start */
    uint64_t started;             /* epoch + 1 whose training loaders tr_train_early started, or 0 */
    double win_sum;               /* --log-every: loss * rows over the steps since the last line */
    int64_t win_rows;
    int ran;                      /* a step was taken */
} tr_run;

static void tr_run_free(tr_run *s) {
    if (s->log) fclose(s->log);                   /* written and checked at every row */
    cdl_adv_free(s->adv);
    tr_dp_free(&s->dp);
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
int tr_signal_caught(void) { return (int)tr_signal; }

/* The plot's series: epochs 1..upto (gaps from a resume without a log are NaN). */
static int tr_plot(const tr_run *s, int upto) {
    char title[160];
    snprintf(title, sizeof title, "%.60s on %.80s", s->m->name, s->o->data);
    return cdl_plot_svg(s->o->plot, title, upto, s->h.epoch, s->h.train, s->h.test, s->h.acc);
}

/* The per-epoch history, all NaN but the epoch numbers; then the log (which, on resume,
 * fills in the earlier epochs). */
static int tr_history(tr_run *s) {
    int E = s->E;
    s->h.n = E;
    if (!(s->hbuf = cdl_alloc(sizeof(double) * 4 * (size_t)(E + 1)))) return -1;
    s->h.epoch = s->hbuf;
    s->h.train = s->h.epoch + E + 1;
    s->h.test = s->h.train + E + 1;
    s->h.acc = s->h.test + E + 1;
    for (int i = 0; i < E; i++) {
        s->h.epoch[i] = i + 1;
        s->h.train[i] = s->h.test[i] = s->h.acc[i] = NAN;
    }
    if (s->o->log[0] && !(s->log = tr_log_open(s->o->log, s->o->resume[0] != 0, s->meta.epoch, s->meta.step, &s->h)))
        return -1;
    return 0;
}

/* Set-up, first part: options, datasets and their fit, net, optimizer, attack,
 * initial state, and the checkpoint to resume (read by rank 0 alone: tr_train then
 * sends it to the others).  -1 and a message. */
static int tr_train_prepare(tr_run *s) {
    const cdl_model *m = s->m;
    const tr_opts *o = s->o;
    if (!m->grad || !m->has_loss) return cdl_fail("model %s has no loss: nothing to train", m->name);
    if (tr_check_batch(m, o) < 0) return -1;
    if (cdl_optim_parse(&s->ocfg, o->optimizer) < 0 || cdl_sched_parse(&s->sched, o->schedule) < 0) return -1;
    if (o->lr >= 0) s->ocfg.lr = o->lr;
    if (o->warmup > 0) s->sched.warmup = o->warmup;
    if (o->save[0] && cdl_ckpt_check_target(o->save) < 0) return -1;      /* before any work */
    if (tr_open_dataset(m, o, 1, o->limit, &s->dtr) < 0 || tr_open_dataset(m, o, 0, o->test_limit, &s->dte) < 0 ||
        tr_map_inputs(m, &s->dtr, o, &s->map) < 0 || tr_map_inputs(m, &s->dte, o, &s->tmap) < 0)
        return -1;
    if (!(s->net = cdl_net_new(m)) || cdl_optim_init(&s->opt, m, &s->ocfg) < 0 ||
        cdl_optim_groups(&s->opt, o->groups, o->no_decay, o->freeze) < 0)
        return -1;
    if (o->adversarial[0]) {
        cdl_attack a;
        if (cdl_attack_parse(&a, o->adversarial) < 0 || !(s->adv = tr_adv_new(m, o, o->adversarial, &s->map, &s->dtr, NULL)))
            return -1;
        if (cdl_adv_on_delta(s->adv)) {
            a = *cdl_adv_attack(s->adv);
            if (a.ratio != 1)
                return cdl_fail("--adversarial %s: training on %s (embedding space) adds the adversarial loss of "
                                "every example to the clean loss (Miyato et al.): ratio must be 1", o->adversarial,
                                m->inputs[cdl_adv_input(s->adv)].name);
        }
        cdl_attack_str(&a, s->adv_spec, sizeof s->adv_spec);
    }
    cdl_net *net = s->net;
    net->seed = o->seed;
    if (m->init) m->init(net, o->seed);
    s->meta.seed = o->seed;
    if (o->resume[0] && cdl_dist_rank() == 0) {
        if (cdl_ckpt_load(o->resume, net, &s->opt, &s->meta) < 0) return -1;
        net->seed = s->meta.seed;                     /* the run's seed, whatever --seed says */
        net->step = s->meta.step;
    }
    return 0;
}

/* Set-up, second part (every rank holds rank 0's state now): loaders, schedule,
 * history and log; then the banner.  -1 and a message. */
static int tr_train_setup(tr_run *s) {
    const cdl_model *m = s->m;
    const tr_opts *o = s->o;
    s->seed = s->meta.seed;
    s->step = s->meta.step;
    s->B = tr_batch(m, o);
    cdl_loader_cfg lc;
    memset(&lc, 0, sizeof lc);
    lc.batch = s->B;
    lc.shuffle = 1;
    lc.workers = o->workers;
    lc.seed = s->seed;
    lc.tf = o->tf;
    lc.real_size = m->real_size;
    lc.nfeed = m->n_inputs;
    memcpy(lc.feed, s->map.feed, sizeof lc.feed);
    tr_opts to = *o;
    to.seed = s->seed;
    if (tr_dp_new(&s->dp, m, &s->dtr, &lc, o->accum) < 0 || !(s->lte = tr_plain_loader(m, &to, &s->dte, &s->tmap)))
        return -1;
    int64_t spe = tr_dp_batches(&s->dp);
    s->sched.steps_per_epoch = spe;
    s->sched.total_steps = spe * (s->sched.span_epochs > 0 ? s->sched.span_epochs : o->epochs);
    s->E = (int)o->epochs;
    if (tr_history(s) < 0) return -1;

    s->out = o->json ? stderr : stdout;
    char shards[80] = "";
    if (s->dp.size * s->dp.k > 1)
        snprintf(shards, sizeof shards, " (%d rank%s x %d micro-batch%s of <= %d)", s->dp.size, s->dp.size > 1 ? "s" : "",
                 s->dp.k, s->dp.k > 1 ? "es" : "", (s->B + s->dp.size * s->dp.k - 1) / (s->dp.size * s->dp.k));
    if (!o->quiet) {
        fprintf(s->out, "model %s: %zu parameters; %s: %lld train, %lld test examples; batch %d%s; "
                        "%s lr %g; epochs %llu..%d\n", m->name, m->train_count, s->dtr.name,
                (long long)s->dtr.n, (long long)s->dte.n, s->B, shards, o->optimizer, s->ocfg.lr,
                (unsigned long long)s->meta.epoch + 1, s->E);
        tr_print_feeds(s->out, m, &s->dtr, &s->map);
        if (s->opt.pset) {
            char groups[160];
            cdl_optim_describe(&s->opt, groups, sizeof groups);
            fprintf(s->out, "parameter groups: %s\n", groups);
        }
    }
    if (!o->quiet && s->adv) fprintf(s->out, "adversarial training: %s\n", s->adv_spec);
    s->train_loss = s->test_loss = s->acc = NAN;
    return 0;
}

/* A checkpoint at batch b of epoch `epoch`, with the training data's vocabulary. */
static int tr_save(const tr_run *s, uint64_t epoch, int64_t b) {
    cdl_ckpt_meta sm = {s->step, epoch, s->seed, b, "", 0, s->dtr.vocab, s->dtr.labels};
    return cdl_ckpt_save(s->o->save, s->net, &s->opt, &sm);
}

/* A signal arrived during epoch `epoch` after batch b: save a mid-epoch checkpoint
 * (with --save) and set the message.  -2, or -1 when the save fails. */
static int tr_interrupted(tr_run *s, uint64_t epoch, int64_t b) {
    const tr_opts *o = s->o;
    int failed = o->save[0] && tr_save(s, epoch, b) < 0;
    int sig = (int)tr_signal;                                     /* every rank has it (the step agreed) */
    if (cdl_dist_agree(failed, &sig, NULL, 0) < 0) return -1;     /* rank 0 saves; every rank learns */
    cdl_fail("interrupted (signal %d) at epoch %llu, batch %lld, step %llu%s%s%s", (int)tr_signal,
             (unsigned long long)epoch + 1, (long long)b, (unsigned long long)s->step,
             o->save[0] ? "; saved " : "; nothing saved", o->save[0] ? o->save : "",
             o->save[0] ? " (continue with --resume)" : "");
    return -2;
}

/* --log-every: after the step that made s->step a multiple of N, a line (unless
 * --quiet; it clears the progress bar, which redraws) and a --log row with the mean
 * train loss over the steps since the last one (in this process: a resumed run's first
 * window starts at its checkpoint) and the epoch's seconds so far.  0 or -1. */
static int tr_log_steps(tr_run *s, uint64_t epoch, tr_progress *pr, double loss, int64_t rows) {
    const tr_opts *o = s->o;
    s->win_sum += loss * (double)rows;
    s->win_rows += rows;
    if (o->log_every <= 0 || s->step % (uint64_t)o->log_every != 0) return 0;
    double mean = s->win_rows ? s->win_sum / (double)s->win_rows : NAN, secs = tr_now() - s->t_epoch;
    s->win_sum = 0;
    s->win_rows = 0;
    if (!o->quiet) {
        tr_progress_end(pr);
        fprintf(s->out, "epoch %llu/%d  step %llu  train_loss %.4f  %.1fs\n", (unsigned long long)epoch + 1, s->E,
                (unsigned long long)s->step, mean, secs);
        fflush(s->out);
    }
    if (!s->log) return 0;
    errno = 0;
    fprintf(s->log, "%llu,%llu,%.9g,,,%.3f\n", (unsigned long long)epoch + 1, (unsigned long long)s->step, mean, secs);
    /* A failed write stops one process at once.  Under mpirun only rank 0 writes, and
     * leaving the steps alone would strand the others in the next all-reduce: the
     * stream's error stays set, so the epoch's own row fails it, where all ranks agree. */
    if (tr_log_flush(s->log, o->log) < 0 && cdl_dist_size() == 1) return -1;
    return 0;
}

/* The message of a run stopped at batch b by a non-finite loss or gradient norm; -1. */
static int tr_stopped(const tr_run *s, uint64_t epoch, int64_t b, double loss, double norm) {
    const tr_opts *o = s->o;
    char cause[400];
    return cdl_fail("stopped: %s is %g at epoch %llu, step %llu (batch %lld)%s; %s%s%s",
                    isfinite(loss) ? "the gradient norm" : "the loss", isfinite(loss) ? norm : loss,
                    (unsigned long long)epoch + 1, (unsigned long long)s->step, (long long)b,
                    tr_cause(cause, sizeof cause),
                    s->saved_at[0] ? "the last good checkpoint is " : "no checkpoint was written",
                    s->saved_at[0] ? o->save : "", s->saved_at);
}

/* The training steps of epoch `epoch` (from its resume point): the mean loss into
 * s->train_loss.  0, -1 (an error, a NaN/Inf stop) or -2 (interrupted). */
static int tr_train_steps(tr_run *s, uint64_t epoch) {
    const tr_opts *o = s->o;
    cdl_net *net = s->net;
    int64_t skip = epoch == s->meta.epoch ? s->meta.batch_in_epoch : 0, b = skip;
    if (s->started != epoch + 1 && tr_dp_start(&s->dp, epoch, skip) < 0) return -1;
    s->started = 0;
    tr_progress pr;
    int64_t todo = s->dtr.n - skip * s->B;
    tr_progress_begin(&pr, o->quiet, (int)epoch + 1, s->E, todo < 0 ? 0 : todo,
                      (int64_t)(s->E - 1 - (int64_t)epoch) * s->dtr.n);
    double lsum = 0, loss;
    int64_t seen = 0, rows;
    tr_dp_step st = {s->adv, s->seed};
    int got;
    for (;;) {
        net->step = s->step;
        cdl_clear_error();
        int sig = 0;
        if ((got = tr_dp_grad(&s->dp, net, b, &st, &sig, &loss, &rows)) <= 0) break;
        if (sig) tr_signal = sig;                     /* any rank's signal stops every rank here */
        cdl_optim_zero_frozen(&s->opt, net);
        /* A non-finite gradient stops the run.  Without clipping, Adam notes such values
         * in its own pass over the gradient (no pass of the norm's, ~3% of the MLP's
         * step); the update it made is never saved. */
        int fused = !(o->clip > 0) && cdl_optim_counts_nonfinite(&s->opt);
        double norm = fused ? 0 : cdl_clip_grad_norm(net, o->clip);
        if (!isfinite(loss) || !isfinite(norm)) {
            tr_progress_end(&pr);
            return tr_stopped(s, epoch, b, loss, norm);
        }
        if (cdl_optim_step_count(&s->opt, net, cdl_sched_lr(&s->sched, s->ocfg.lr, s->step)) > 0 && fused) {
            tr_progress_end(&pr);
            return tr_stopped(s, epoch, b, loss, cdl_grad_norm(net));
        }
        net->step = ++s->step;
        b++;
        s->ran = 1;
        lsum += loss * rows;
        seen += rows;
        if (tr_log_steps(s, epoch, &pr, loss, rows) < 0) {
            tr_progress_end(&pr);
            return -1;
        }
        tr_progress_update(&pr, seen, lsum / (double)seen);
        if (tr_signal) {
            tr_progress_end(&pr);
            return tr_interrupted(s, epoch, b);
        }
    }
    tr_progress_end(&pr);
    if (got < 0) return -1;                           /* the loader or the attack failed, on some rank */
    s->train_loss = seen ? lsum / (double)seen : NAN;
    return 0;
}

/* One epoch: the steps, then evaluation, the epoch's line, log row, checkpoint and plot.
 * 0, -1 or -2 (interrupted). */
static int tr_train_epoch(tr_run *s, uint64_t epoch) {
    const tr_opts *o = s->o;
    double t_ep = s->t_epoch = tr_now();
    int rc = tr_train_steps(s, epoch);
    if (rc < 0) return rc;
    if (tr_evaluate(s->m, s->net, s->lte, &s->tmap, &s->test_loss, &s->acc, NULL) < 0) return -1;
    double secs = tr_now() - t_ep;
    s->h.train[epoch] = s->train_loss;
    s->h.test[epoch] = s->test_loss;
    s->h.acc[epoch] = s->acc;
    if (!o->quiet) {
        fprintf(s->out, "epoch %llu/%d  train_loss %.4f  test_loss %.4f", (unsigned long long)epoch + 1, s->E,
                s->train_loss, s->test_loss);
        if (isfinite(s->acc)) fprintf(s->out, "  test_acc %.2f%%", 100 * s->acc);
        fprintf(s->out, "  step %llu  %.1fs\n", (unsigned long long)s->step, secs);
        fflush(s->out);
    }
    if (s->log) {
        errno = 0;
        fprintf(s->log, "%llu,%llu,%.9g,%.9g,%.9g,%.3f\n", (unsigned long long)epoch + 1,
                (unsigned long long)s->step, s->train_loss, s->test_loss, s->acc, secs);
        if (tr_log_flush(s->log, s->o->log) < 0) return -1;
    }
    if (o->save[0]) {
        if (tr_save(s, epoch + 1, 0) < 0) return -1;
        snprintf(s->saved_at, sizeof s->saved_at, " (epoch %llu)", (unsigned long long)epoch + 1);
    }
    if (o->plot[0] && tr_plot(s, (int)epoch + 1) < 0) return -1;
    return 0;
}

/* One epoch, and on many ranks the agreement after it: whatever failed on rank 0
 * alone (the log, the checkpoint, the plot) ends every rank, and every rank must hold
 * the same parameters (a check that the reductions agree). */
static int tr_train_epoch_all(tr_run *s, uint64_t epoch) {
    int rc = tr_train_epoch(s, epoch);
    if (rc == -2 || cdl_dist_size() == 1) return rc;
    if (cdl_dist_agree(rc < 0, NULL, NULL, 0) < 0) return -1;
    const cdl_model *m = s->m;
    return cdl_dist_same(s->net->param, m->param_count * (size_t)m->real_size, "the parameters");
}

/* After the last epoch (`epoch` is where the run stopped): when no step was taken
 * (--epochs 0, or resuming a finished run) still evaluate, save and plot; then the
 * --json summary. */
static int tr_train_finish(tr_run *s, uint64_t epoch) {
    const cdl_model *m = s->m;
    const tr_opts *o = s->o;
    if (!s->ran) {
        if (tr_evaluate(m, s->net, s->lte, &s->tmap, &s->test_loss, &s->acc, NULL) < 0) return -1;
        if (!o->quiet) {
            fprintf(s->out, "no epochs to run (done %llu of %d)  test_loss %.4f", (unsigned long long)epoch, s->E,
                    s->test_loss);
            if (isfinite(s->acc)) fprintf(s->out, "  test_acc %.2f%%", 100 * s->acc);
            fprintf(s->out, "\n");
        }
        if (o->save[0]) {
            if (tr_save(s, epoch < s->meta.epoch ? s->meta.epoch : epoch,
                        epoch == s->meta.epoch ? s->meta.batch_in_epoch : 0) < 0)
                return -1;
        }
        if (o->plot[0] && tr_plot(s, s->E) < 0) return -1;
    }
    if (o->json) {
        printf("{\"model\":\"%s\",", m->name);
        tr_json_num(stdout, "train_loss", s->train_loss, 1);
        tr_json_num(stdout, "test_loss", s->test_loss, 1);
        tr_json_num(stdout, "test_accuracy", s->acc, 1);
        if (s->adv) printf("\"adversarial\":\"%s\",", s->adv_spec);
        if (s->dp.size * s->dp.k > 1) {
            cdl_dist_stats ds;
            cdl_dist_get_stats(&ds);
            printf("\"ranks\":%d,\"accum\":%d,\"allreduce_seconds\":%.6f,\"allreduce_bytes\":%llu,"
                   "\"allreduce_calls\":%llu,\"agree_seconds\":%.6f,", s->dp.size, s->dp.k, ds.sum_seconds,
                   (unsigned long long)ds.sum_bytes, (unsigned long long)ds.sum_calls, ds.agree_seconds);
        }
        tr_json_num(stdout, "thread_cpu_seconds", tr_thread_cpu() - s->cpu_run, 1);
        printf("\"epochs\":%llu,\"steps\":%llu,\"seconds\":%.3f}\n", (unsigned long long)epoch,
               (unsigned long long)s->step, tr_now() - s->t_run);
        fflush(stdout);
    }
    return 0;
}

/* The last part of the set-up, while oneDNN may still be making its GEMM kernels on
 * the warm-up thread (~40 ms of CPU; the set-up before takes ~10 ms), which the first
 * step waits for: start the first epoch's training loaders (their shuffle; the worker
 * fills the ring meanwhile), and with that thread running, fault in the blocks the
 * first step writes (gradients, optimizer state, activations: ~3 MB for the MLP, a
 * page fault each 4 KB), which it would otherwise take on the critical path.  The
 * loaders start as tr_train_steps would start them (same epoch and skip), so the
 * batches are the same.  -1 and a message. */
static int tr_train_early(tr_run *s, const tr_warm *w) {
    uint64_t e = s->meta.epoch;
    if (e >= (uint64_t)s->E) return 0;
    if (tr_dp_start(&s->dp, e, s->meta.batch_in_epoch) < 0) return -1;
    s->started = e + 1;
    if (w->on) {
        const cdl_model *m = s->m;
        size_t slab = m->train_count * (size_t)m->real_size;
        tr_prefault(s->net->grad, slab);
        for (int k = 0; k < s->opt.n_slots; k++) tr_prefault(s->opt.slot[k], slab);
        tr_prefault(s->net->act, m->act_bytes);
    }
    return 0;
}

int tr_train(const cdl_model *m, const tr_opts *o) {
    tr_run s;
    memset(&s, 0, sizeof s);
    s.m = m;
    s.o = o;
    s.t_run = tr_now();
    s.cpu_run = tr_thread_cpu();
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = tr_on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    tr_signal = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    /* Each part ends with an agreement, so a failure on any rank ends every rank; in
     * between, rank 0's parameters, state and resume point go to every rank. */
    tr_warm warm;
    tr_gemm_warm_start(m, &warm);                 /* oneDNN's kernels made during the set-up */
    int rc = cdl_dist_agree(tr_train_prepare(&s) < 0, NULL, NULL, 0);
    if (rc == 0 && cdl_dist_size() > 1) {
        rc = cdl_dist_sync_net(s.net, &s.opt);
        cdl_dist_bcast(&s.meta, sizeof s.meta);
    }
    if (rc == 0) rc = cdl_dist_agree(tr_train_setup(&s) < 0, NULL, NULL, 0);
    if (rc == 0) rc = cdl_dist_agree(tr_train_early(&s, &warm) < 0, NULL, NULL, 0);
    tr_gemm_warm_join(&warm);
    uint64_t epoch = s.meta.epoch;
    for (; rc == 0 && epoch < (uint64_t)s.E; epoch++) rc = tr_train_epoch_all(&s, epoch);
    if (rc == 0) rc = tr_train_finish(&s, epoch);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    tr_run_free(&s);
    return rc;
}
