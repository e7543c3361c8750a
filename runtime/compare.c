/* compare.c -- static graph vs dynamic tape, side by side (cdl_compare, cdl.h TAPE block, in cdl_tape.h).
 *
 * Both builds of one model (cdlc model.cdl, and cdlc --target=tape) run the same
 * training steps: the same initial parameters, the same batches (Fashion-MNIST's test
 * split when its columns x and y feed the model's inputs by name, else random inputs
 * shaped like the model's: --data random), the same
 * seed and step counter (so dropout masks and noise are the same), and the same
 * optimizer update after every step, each on its own parameters.  Per step we record the
 * two losses, the largest relative difference of every parameter gradient and of the
 * outputs, the time of the gradient computation (forward + backward, the part the two
 * strategies do differently), and the heap allocations made inside it.
 *
 * Relative differences are scale-aware: for a tensor, max |a - b| over its elements
 * divided by the largest |a| or |b| in it (1e-30 if all are zero); for the loss,
 * |a - b| / max(|a|, |b|).  So an element that cancels to ~0 in one tensor is judged
 * against the tensor's scale, as the tolerance |a - b| <= rel * max|.| + tiny intends.
 */
#include "cdl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct cmp_opts {
    int steps, batch, threads, json;
    uint64_t seed;
    double lr, tol;
    char data[256], optimizer[256];
} cmp_opts;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The clock of the timing phase.  With one thread, the process's CPU time: on a shared
 * machine other jobs stretch the wall time of whichever mode they happen to overlap,
 * but not its CPU time (this is what made a 1.07x difference read as 0.8x or 1.7x from
 * one run to the next).  With more threads the CPU time would add up the workers' time,
 * so wall time it is. */
static double clock_s(int threads) {
    if (threads > 1) return now_s();
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char cmp_usage[] =
    "usage: PROG [--steps N] [--batch N] [--data NAME] [--seed N] [--optimizer SPEC] [--lr X]\n"
    "            [--threads N] [--tol X] [--json]\n"
    "  runs the static and the tape build of one model on the same batches and compares\n"
    "  losses, gradients, time and memory per step.  --tol X: exit 1 when the loss or a\n"
    "  gradient differs by more than X (relative).\n";

/* Options; -1 with a message on a bad one, 1 for --help. */
static int cmp_parse(cmp_opts *o, int argc, char **argv) {
    *o = (cmp_opts){.steps = 20, .threads = 1, .seed = 1, .lr = -1, .tol = -1};
    snprintf(o->optimizer, sizeof o->optimizer, "sgd:lr=0.01");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) {
            o->json = 1;
            continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 1;
        if (!v) return cdl_fail("cdl_compare: %s needs a value (or unknown option)", a);
        i++;
        int64_t n = 0;
        int bad = 0;
        if (!strcmp(a, "--steps")) bad = cdl_parse_i64(v, 1, 1000000, &n) < 0, o->steps = (int)n;
        else if (!strcmp(a, "--batch")) bad = cdl_parse_i64(v, 1, 1 << 30, &n) < 0, o->batch = (int)n;
        else if (!strcmp(a, "--threads")) bad = cdl_parse_i64(v, 1, 1024, &n) < 0, o->threads = (int)n;
        else if (!strcmp(a, "--seed")) bad = cdl_parse_u64(v, &o->seed) < 0;
        else if (!strcmp(a, "--lr")) bad = cdl_parse_f64(v, &o->lr) < 0 || o->lr < 0;
        else if (!strcmp(a, "--tol")) bad = cdl_parse_f64(v, &o->tol) < 0 || o->tol < 0;
        else if (!strcmp(a, "--data")) snprintf(o->data, sizeof o->data, "%s", v);
        else if (!strcmp(a, "--optimizer")) snprintf(o->optimizer, sizeof o->optimizer, "%s", v);
        else return cdl_fail("cdl_compare: unknown option %s", a);
        if (bad) return cdl_fail("cdl_compare: %s: bad value '%s'", a, v);
    }
    return 0;
}

/* The two descriptors must describe one model. */
static int cmp_check_models(const cdl_model *s, const cdl_model *t) {
    if (!s || !t) return cdl_fail("cdl_compare: missing model");
    if (s->real_size != t->real_size || s->param_count != t->param_count || s->train_count != t->train_count ||
        s->n_params != t->n_params || s->n_inputs != t->n_inputs || s->n_outputs != t->n_outputs ||
        s->batch != t->batch || s->fingerprint != t->fingerprint)
        return cdl_fail("cdl_compare: models %s and %s are not two builds of one model (tables or fingerprint differ)", s->name,
                        t->name);
    if (!s->grad || !t->grad) return cdl_fail("cdl_compare: model %s has no loss: nothing to compare", s->name);
    return 0;
}

static double rd(const void *p, int rs, int64_t i) { return rs == 8 ? ((const double *)p)[i] : ((const float *)p)[i]; }

/* Scale-aware relative difference of two arrays of n reals. */
static double rel_diff(const void *a, const void *b, int rs, int64_t n) {
    double dmax = 0, vmax = 0;
    for (int64_t i = 0; i < n; i++) {
        double x = rd(a, rs, i), y = rd(b, rs, i), d = fabs(x - y);
        if (!(d <= dmax)) dmax = d;          /* NaN wins */
        if (fabs(x) > vmax) vmax = fabs(x);
        if (fabs(y) > vmax) vmax = fabs(y);
    }
    if (isnan(dmax)) return NAN;
    return dmax / (vmax > 0 ? vmax : 1e-30);
}

static double rel1(double a, double b) {
    if (a == b) return 0;
    double m = fmax(fabs(a), fabs(b));
    return fabs(a - b) / (m > 0 ? m : 1e-30);
}

/* The batches: a dataset whose columns feed every model input by name (Fashion-MNIST's
 * test split by default), or random inputs shaped like the model's (--data random,
 * or when the default does not fit), through a shuffling loader. */
typedef struct cmp_data {
    cdl_dataset d;
    cdl_loader *l;
} cmp_data;

static int cmp_data_open(cmp_data *cd, const cdl_model *m, const cmp_opts *o, int nb, char *what, size_t what_n) {
    memset(cd, 0, sizeof *cd);
    cdl_loader_cfg cfg = {.batch = nb, .shuffle = 1, .drop_last = 1, .seed = o->seed, .real_size = m->real_size,
                          .nfeed = m->n_inputs};
    const char *name = o->data[0] ? o->data : "fashion-mnist";
    int random = !strcmp(name, "random");
    if (!random) {
        if (cdl_dataset_open(&cd->d, name, 0) == 0 && cdl_dataset_feeds(&cd->d, m, NULL, cfg.feed) == 0) {
            snprintf(what, what_n, "%s (test split)", name);
        } else {
            if (o->data[0]) return cdl_fail("cdl_compare: dataset %s does not fit model %s: %s", name, m->name, cdl_last_error());
            cdl_dataset_free(&cd->d);
            random = 1;
        }
    }
    if (random) {
        if (cdl_dataset_random(&cd->d, m, (int64_t)nb * 8, 0, o->seed) < 0 || cdl_dataset_feeds(&cd->d, m, NULL, cfg.feed) < 0)
            return cdl_fail("cdl_compare: %s", cdl_last_error());
        snprintf(what, what_n, "random inputs");
    }
    if (!(cd->l = cdl_loader_new(&cd->d, &cfg))) return -1;
    if (cdl_loader_batches(cd->l) < 1) return cdl_fail("cdl_compare: %s has fewer than %d examples", name, nb);
    return cdl_loader_start(cd->l, 0, 0);
}

/* Fill net's inputs for step s (static net; the tape net gets a copy). */
static int cmp_fill(cmp_data *cd, cdl_net *net, int nb, int s) {
    int r = cdl_loader_next(cd->l, net->in);
    if (r == 0) {                                    /* epoch over: the next one */
        if (cdl_loader_start(cd->l, (uint64_t)s, 0) < 0) return -1;
        r = cdl_loader_next(cd->l, net->in);
    }
    if (r < 0) return -1;
    if (r != nb) return cdl_fail("cdl_compare: a batch of %d rows, wanted %d", r, nb);
    return 0;
}

static void cmp_data_close(cmp_data *cd) {
    cdl_loader_free(cd->l);
    cdl_dataset_free(&cd->d);
}

static size_t input_bytes(const cdl_model *m, int i, int nb) {
    return (size_t)cdl_tensor_numel(&m->inputs[i], nb) * (m->inputs[i].dtype == CDL_I32 ? 4 : (size_t)m->real_size);
}

/* Results of the run. */
typedef struct cmp_res {
    double *ls, *lt;             /* per step */
    double *gdiff;               /* per parameter: max over steps */
    double loss_diff, grad_diff, out_diff;
    int worst_param;
    double ts, tt;               /* seconds in grad(), steps after the first */
    uint64_t heap_s, heap_t;     /* heap allocations inside grad(), all steps */
    uint64_t tape_ops, tape_allocs;
    size_t tape_peak;
    double best_s, best_t;       /* timing phase: seconds per step, best round */
} cmp_res;

static void print_text(const cdl_model *m, const cmp_opts *o, int nb, const char *what, const cmp_res *r, int timed) {
    printf("cdl-compare: model %s (%s), %s, batch %d, %d steps, %s, seed %llu, %s, %d BLAS thread%s\n", m->name,
           m->source ? m->source : "?", m->real_size == 8 ? "f64" : "f32", nb, o->steps, o->optimizer, (unsigned long long)o->seed,
           what, o->threads, o->threads == 1 ? "" : "s");
    printf("\n step   static loss        tape loss          rel diff\n");
    for (int s = 0; s < o->steps; s++) printf("%5d   %-17.10g  %-17.10g  %.3g\n", s + 1, r->ls[s], r->lt[s], rel1(r->ls[s], r->lt[s]));
    printf("\nmax relative difference: loss %.3g, gradients %.3g (worst %s), outputs %.3g\n", r->loss_diff, r->grad_diff,
           r->worst_param >= 0 ? m->params[r->worst_param].name : "-", r->out_diff);
    printf("\n parameter                              elements   grad rel diff (max over steps)\n");
    for (int p = 0; p < m->n_params; p++) {
        if (m->params[p].flags & CDL_T_STATE) continue;
        printf(" %-38s %9lld   %.3g\n", m->params[p].name, (long long)cdl_tensor_numel(&m->params[p], 0), r->gdiff[p]);
    }
    double ms_s = r->best_s > 0 ? 1e3 * r->best_s : timed ? 1e3 * r->ts / timed : NAN;
    double ms_t = r->best_t > 0 ? 1e3 * r->best_t : timed ? 1e3 * r->tt / timed : NAN;
    printf("\n                      static          tape\n");
    printf(" ms / step            %-14.3f  %-14.3f  (forward + backward, best of 11 rounds, %s; speedup static over tape %.2fx)\n", ms_s, ms_t,
           o->threads == 1 ? "CPU time" : "wall time", ms_t / ms_s);
    printf(" activation memory    %-14zu  %-14zu  bytes (static: planned arena; tape: peak arena use)\n", m->act_bytes, r->tape_peak);
    printf(" heap allocs / step   %-14.1f  %-14.1f\n", (double)r->heap_s / o->steps, (double)r->heap_t / o->steps);
    printf(" tape records / step  %-14s  %-14llu  (arena allocations / step %llu)\n", "-", (unsigned long long)r->tape_ops,
           (unsigned long long)r->tape_allocs);
}

static void print_json(const cdl_model *m, const cmp_opts *o, int nb, const char *what, const cmp_res *r, int timed) {
    double ms_s = r->best_s > 0 ? 1e3 * r->best_s : timed ? 1e3 * r->ts / timed : 0;
    double ms_t = r->best_t > 0 ? 1e3 * r->best_t : timed ? 1e3 * r->tt / timed : 0;
    printf("{\"model\":\"%s\",\"real_size\":%d,\"batch\":%d,\"steps\":%d,\"data\":\"%s\",\"optimizer\":\"%s\",\"seed\":%llu,", m->name,
           m->real_size, nb, o->steps, what, o->optimizer, (unsigned long long)o->seed);
    printf("\"static_loss\":[");
    for (int s = 0; s < o->steps; s++) printf("%s%.17g", s ? "," : "", r->ls[s]);
    printf("],\"tape_loss\":[");
    for (int s = 0; s < o->steps; s++) printf("%s%.17g", s ? "," : "", r->lt[s]);
    printf("],\"max_loss_rel_diff\":%.6g,\"max_grad_rel_diff\":%.6g,\"max_output_rel_diff\":%.6g,", isnan(r->loss_diff) ? 1e300 : r->loss_diff,
           isnan(r->grad_diff) ? 1e300 : r->grad_diff, isnan(r->out_diff) ? 1e300 : r->out_diff);
    printf("\"grad_rel_diff\":{");
    int first = 1;
    for (int p = 0; p < m->n_params; p++) {
        if (m->params[p].flags & CDL_T_STATE) continue;
        printf("%s\"%s\":%.6g", first ? "" : ",", m->params[p].name, isnan(r->gdiff[p]) ? 1e300 : r->gdiff[p]);
        first = 0;
    }
    printf("},\"timing_clock\":\"%s\",\"static_ms_per_step\":%.6g,\"tape_ms_per_step\":%.6g,\"speedup_static_over_tape\":%.6g,",
           o->threads == 1 ? "cpu" : "wall", ms_s, ms_t, ms_s > 0 ? ms_t / ms_s : 0);
    printf("\"static_act_bytes\":%zu,\"tape_peak_act_bytes\":%zu,\"static_heap_allocs_per_step\":%.6g,\"tape_heap_allocs_per_step\":%.6g,",
           m->act_bytes, r->tape_peak, (double)r->heap_s / o->steps, (double)r->heap_t / o->steps);
    printf("\"tape_ops_per_step\":%llu,\"tape_arena_allocs_per_step\":%llu}\n", (unsigned long long)r->tape_ops,
           (unsigned long long)r->tape_allocs);
}

/* Everything one comparison holds. */
typedef struct cmp_run {
    const cdl_model *sm, *tm;    /* static and tape build */
    cmp_opts o;
    int nb;
    cdl_optim_cfg cfg;
    cdl_net *ns, *nt;
    cdl_optim os, ot;
    cmp_data cd;
    cmp_res r;
    cdl_tape *tp;
    char what[300];              /* where the batches come from */
    int timed;                   /* steps whose time counts */
} cmp_run;

/* Nets, optimizers, data and identical initial parameters; -1 and a message. */
static int cmp_setup(cmp_run *c) {
    const cdl_model *sm = c->sm;
    int np = sm->n_params > 0 ? sm->n_params : 1;
    c->ns = cdl_net_new(sm);
    c->nt = cdl_net_new(c->tm);
    c->r.ls = cdl_alloc((size_t)c->o.steps * sizeof(double));
    c->r.lt = cdl_alloc((size_t)c->o.steps * sizeof(double));
    c->r.gdiff = cdl_alloc((size_t)np * sizeof(double));
    c->r.worst_param = -1;
    if (!c->ns || !c->nt || !c->r.ls || !c->r.lt || !c->r.gdiff) return -1;
    if (cdl_optim_init(&c->os, sm, &c->cfg) < 0 || cdl_optim_init(&c->ot, c->tm, &c->cfg) < 0 ||
        cmp_data_open(&c->cd, sm, &c->o, c->nb, c->what, sizeof c->what) < 0)
        return -1;
    sm->init(c->ns, c->o.seed);
    c->tm->init(c->nt, c->o.seed);
    if (memcmp(c->ns->param, c->nt->param, sm->param_count * (size_t)sm->real_size) != 0)
        return cdl_fail("the two builds initialise their parameters differently");
    return (c->tp = cdl_tape_attach(c->nt)) ? 0 : -1;
}

/* Step s's gradients of both builds (in alternating order, so that neither always
 * runs on a cold cache), timed, with their heap allocations counted.  A loss that is
 * not finite ends the comparison: -1 and a message naming the build(s) and the cause
 * each recorded (a kernel's or the tape's cdl_fail). */
static int cmp_grads(cmp_run *c, int s) {
    cmp_res *r = &c->r;
    double dt[2] = {0, 0};
    char cause[2][300] = {"", ""};
    for (int k = 0; k < 2; k++) {
        int tape = (k + s) % 2;
        uint64_t a0 = cdl_alloc_count();
        cdl_clear_error();
        double t0 = now_s(), loss = tape ? c->tm->grad(c->nt, c->nb) : c->sm->grad(c->ns, c->nb);
        dt[tape] = now_s() - t0;
        *(tape ? &r->lt[s] : &r->ls[s]) = loss;
        *(tape ? &r->heap_t : &r->heap_s) += cdl_alloc_count() - a0;
        if (!isfinite(loss)) snprintf(cause[tape], sizeof cause[tape], " (%s)", cdl_last_error()[0] ? cdl_last_error() : "no cause recorded");
    }
    if (!isfinite(r->ls[s]) || !isfinite(r->lt[s]))
        return cdl_fail("%s: step %d: the static build's loss is %g%s, the tape build's %g%s", c->sm->name, s + 1,
                        r->ls[s], cause[0], r->lt[s], cause[1]);
    if (s > 0 || c->o.steps == 1) {
        r->ts += dt[0];
        r->tt += dt[1];
        c->timed++;
    }
    return 0;
}

/* Fold step s's differences of losses, gradients and outputs into the results. */
static void cmp_diffs(cmp_run *c, int s) {
    const cdl_model *sm = c->sm;
    cmp_res *r = &c->r;
    size_t rs = (size_t)sm->real_size;
    double ld = rel1(r->ls[s], r->lt[s]);
    if (!(ld <= r->loss_diff)) r->loss_diff = ld;
    for (int p = 0; p < sm->n_params; p++) {
        const cdl_tensor *d = &sm->params[p];
        if (d->flags & CDL_T_STATE) continue;
        size_t off = d->offset * rs;
        double g = rel_diff((char *)c->ns->grad + off, (char *)c->nt->grad + off, sm->real_size, cdl_tensor_numel(d, 0));
        if (!(g <= r->gdiff[p])) r->gdiff[p] = g;
        if (!(g <= r->grad_diff)) {
            r->grad_diff = g;
            r->worst_param = p;
        }
    }
    for (int k = 0; k < sm->n_outputs; k++) {
        if (sm->outputs[k].dtype == CDL_I32 || !c->ns->out[k] || !c->nt->out[k]) continue;
        double d = rel_diff(c->ns->out[k], c->nt->out[k], sm->real_size, cdl_tensor_numel(&sm->outputs[k], c->nb));
        if (!(d <= r->out_diff)) r->out_diff = d;
    }
}

/* The training steps: same batch, same step counter, both builds, then the same
 * optimizer step on each build's own parameters.  -1 and a message. */
static int cmp_steps(cmp_run *c) {
    for (int s = 0; s < c->o.steps; s++) {
        c->ns->seed = c->nt->seed = c->o.seed;
        c->ns->step = c->nt->step = (uint64_t)s;
        if (cmp_fill(&c->cd, c->ns, c->nb, s) < 0) return -1;
        for (int i = 0; i < c->sm->n_inputs; i++) memcpy(c->nt->in[i], c->ns->in[i], input_bytes(c->sm, i, c->nb));
        if (cmp_grads(c, s) < 0) return -1;
        cdl_tape_stats(c->tp, &c->r.tape_ops, &c->r.tape_peak, &c->r.tape_allocs);
        cmp_diffs(c, s);
        cdl_optim_step(&c->os, c->ns, c->cfg.lr);
        cdl_optim_step(&c->ot, c->nt, c->cfg.lr);
    }
    return 0;
}

/* Timing phase: the per-step times above are one sample each and a shared machine's
 * noise swamps them.  Time both modes in alternating rounds of several steps on the
 * last batch and keep each mode's best round (CPU time at one thread: clock_s). */
static void cmp_time(cmp_run *c) {
    cmp_res *r = &c->r;
    if (!c->timed) return;
    double per = (r->ts + r->tt) / (2.0 * c->timed);
    int reps = per > 0 ? (int)(0.02 / per) : 10;
    reps = reps < 1 ? 1 : reps > 50 ? 50 : reps;
    for (int round = 0; round < 11; round++)
        for (int k = 0; k < 2; k++) {
            int tape = (k + round) % 2;
            double t0 = clock_s(c->o.threads);
            for (int i = 0; i < reps; i++) tape ? c->tm->grad(c->nt, c->nb) : c->sm->grad(c->ns, c->nb);
            double dt = (clock_s(c->o.threads) - t0) / reps;
            double *best = tape ? &r->best_t : &r->best_s;
            if (*best == 0 || dt < *best) *best = dt;
        }
}

static void cmp_free(cmp_run *c) {
    cmp_data_close(&c->cd);
    cdl_optim_free(&c->os);
    cdl_optim_free(&c->ot);
    cdl_net_free(c->ns);
    cdl_net_free(c->nt);
    cdl_free(c->r.ls);
    cdl_free(c->r.lt);
    cdl_free(c->r.gdiff);
}

/* The verdict after the steps: NaN anywhere is an error, never "differs by nan" nor
 * a success; then --tol.  0 or 1, with the message on stderr. */
static int cmp_verdict(const cmp_run *c) {
    const cmp_res *r = &c->r;
    const char *nm = c->sm->name;
    if (isnan(r->grad_diff) || isnan(r->out_diff)) {
        fprintf(stderr, "cdl_compare: %s: NaN in the %s%s%s of the static or the tape build\n", nm,
                isnan(r->grad_diff) ? "gradients (worst " : "outputs", isnan(r->grad_diff) && r->worst_param >= 0 ?
                c->sm->params[r->worst_param].name : "", isnan(r->grad_diff) ? ")" : "");
        return 1;
    }
    if (c->o.tol >= 0 && !(r->loss_diff <= c->o.tol && r->grad_diff <= c->o.tol)) {
        fprintf(stderr, "cdl_compare: %s: static and tape differ by more than %g (loss %.3g, gradients %.3g)\n", nm,
                c->o.tol, r->loss_diff, r->grad_diff);
        return 1;
    }
    return 0;
}

int cdl_compare(const cdl_model *sm, const cdl_model *tm, int argc, char **argv) {
    cmp_run c;
    memset(&c, 0, sizeof c);
    c.sm = sm;
    c.tm = tm;
    int rc = cmp_parse(&c.o, argc, argv);
    if (rc == 1) {
        fputs(cmp_usage, stdout);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "%s\n%s", cdl_last_error(), cmp_usage);
        return 2;
    }
    if (cmp_check_models(sm, tm) < 0) {
        fprintf(stderr, "%s\n", cdl_last_error());
        return 1;
    }
    c.nb = c.o.batch > 0 ? c.o.batch : sm->batch;
    if (c.nb > sm->batch) {
        fprintf(stderr, "cdl_compare: --batch %d is more than the compiled %d\n", c.nb, sm->batch);
        return 2;
    }
    cdl_blas_set_threads(c.o.threads);
    if (cdl_optim_parse(&c.cfg, c.o.optimizer) < 0) {
        fprintf(stderr, "%s\n", cdl_last_error());
        return 2;
    }
    if (c.o.lr >= 0) c.cfg.lr = c.o.lr;
    snprintf(c.o.optimizer, sizeof c.o.optimizer, "%s:lr=%g", cdl_optim_kind_name(c.cfg.kind), c.cfg.lr);
    int status = 1;
    if (cmp_setup(&c) < 0 || cmp_steps(&c) < 0) {
        fprintf(stderr, "cdl_compare: %s\n", cdl_last_error());
    } else {
        cmp_time(&c);
        if (c.o.json) print_json(sm, &c.o, c.nb, c.what, &c.r, c.timed);
        else print_text(sm, &c.o, c.nb, c.what, &c.r, c.timed);
        status = cmp_verdict(&c);
    }
    cmp_free(&c);
    return status;
}
