/* trainer_setup.c -- what the trainer's commands share: opening the dataset named by
 * --data, feeding the model's inputs from its columns by name (--feed maps others),
 * making the net (initialised or loaded), the evaluation loader and small output
 * helpers.
 */
#include "trainer_int.h"
#include "backend_int.h"

#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int tr_batch(const cdl_model *m, const tr_opts *o) {
    return o->batch > 0 ? (int)o->batch : m->batch;
}

/* --batch is the global batch: it is cut into ranks x --accum shards, and each shard
 * must fit the compiled batch. */
int tr_check_batch(const cdl_model *m, const tr_opts *o) {
    int ranks = cdl_dist_size(), k = o->accum > 0 ? o->accum : 1;
    int64_t shards = (int64_t)ranks * k;
    if (o->batch > shards * m->batch) {
        if (shards == 1)
            return cdl_fail("--batch %lld is larger than model %s's compiled batch %d (recompile with a "
                            "larger B)", (long long)o->batch, m->name, m->batch);
        return cdl_fail("--batch %lld is larger than %d rank%s x %d micro-batch%s of model %s's compiled batch %d "
                        "(at most %lld; use more micro-batches (--accum) or recompile with a larger B)",
                        (long long)o->batch, ranks, ranks > 1 ? "s" : "", k, k > 1 ? "es" : "", m->name, m->batch,
                        (long long)(shards * m->batch));
    }
    return 0;
}

/* Random data shaped like the model's inputs ("random" or "random:N"): N examples
 * (default 1024 for training, 256 for the test split), the same in every run (not
 * keyed by --seed, so that a resumed run sees the same data); i32 inputs in
 * [0, --classes) (default: output 0's width). */
static int tr_random_dataset(const cdl_model *m, const tr_opts *o, int train, cdl_dataset *d) {
    int64_t n = train ? 1024 : 256;
    if (o->data[6] == ':' && cdl_parse_i64(o->data + 7, 1, (int64_t)1 << 32, &n) < 0)
        return cdl_fail("--data %s: N must be a number of examples (random:N)", o->data);
    return cdl_dataset_random(d, m, n, o->nclasses, train ? 0xDA7A5EEDull : 0x7E575EEDull);
}

/* The window length T of text:FILE / bytes:FILE: the per-example length of the model
 * input the column x feeds (the input named x, or the one --feed maps to x), which
 * must be i32 [B, T].  -1 and a message. */
static int64_t tr_text_window(const cdl_model *m, const tr_opts *o) {
    char buf[TR_STR], in[CDL_DATA_NAME] = "x", *save = NULL;
    snprintf(buf, sizeof buf, "%s", o->feed);
    for (char *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {   /* INPUT=x */
        char *eq = strchr(kv, '=');
        if (eq && !strcmp(eq + 1, "x")) snprintf(in, sizeof in, "%.*s", (int)(eq - kv), kv);
    }
    int i = cdl_model_find_input(m, in), tsv = !strncmp(o->data, "tsv:", 4);
    if (i < 0 || m->inputs[i].dtype != CDL_I32 || !(m->inputs[i].flags & CDL_T_BATCHED))
        return cdl_fail("--data %s: model %s needs an input %s: i32[B, T] to take %s", o->data, m->name, in,
                        tsv ? "the texts' first T characters (and y: i32[B], the classes)"
                            : "the windows of T tokens (and y: i32[B, T], the next tokens)");
    return cdl_tensor_numel(&m->inputs[i], 1);
}

/* The checkpoint the run continues or evaluates (--resume, --load), or NULL. */
static const char *tr_ckpt_path(const tr_opts *o) {
    return o->resume[0] ? o->resume : o->load[0] ? o->load : NULL;
}

int tr_ckpt_text(const tr_opts *o, const char *key, char **value) {
    *value = NULL;
    const char *ck = tr_ckpt_path(o);
    return ck ? cdl_ckpt_read_meta(ck, key, value) : 0;
}

/* A loader's failure under a checkpoint's vocabulary says whose it is. */
static int tr_vocab_failed(const tr_opts *o, const char *vocab) {
    if (!vocab) return -1;
    char msg[700];
    snprintf(msg, sizeof msg, "%s", cdl_last_error());
    return cdl_fail("%s (the vocabulary of %s)", msg, tr_ckpt_path(o));
}

/* text:FILE or bytes:FILE (data_text.c), windows of the model's T, numbered with the
 * checkpoint's vocabulary when it has one. */
static int tr_text_dataset(const cdl_model *m, const tr_opts *o, int train, cdl_dataset *d) {
    int bytes = !strncmp(o->data, "bytes:", 6);
    int64_t T = tr_text_window(m, o);
    char *vocab;
    if (T < 0 || tr_ckpt_text(o, "vocab", &vocab) < 0) return -1;
    int rc = cdl_dataset_load_text_vocab(d, o->data + (bytes ? 6 : 5), T, bytes, train, vocab);
    if (rc < 0) tr_vocab_failed(o, vocab);
    cdl_free(vocab);
    return rc;
}

/* tsv:FILE (data_tsv.c), texts of the model's T: the training split, and for the test
 * split the held-out tenth or --test tsv:FILE, all numbered with the vocabulary and
 * classes of the checkpoint (--resume, --load) or else of FILE's training lines. */
static int tr_tsv_dataset(const cdl_model *m, const tr_opts *o, int train, cdl_dataset *d) {
    int64_t T = tr_text_window(m, o);
    char *vocab = NULL, *labels = NULL;
    int rc = -1;
    if (T < 0 || tr_ckpt_text(o, "vocab", &vocab) < 0 || tr_ckpt_text(o, "labels", &labels) < 0) goto out;
    if (train || !o->test[0]) {
        rc = cdl_dataset_load_tsv(d, o->data + 4, T, train ? CDL_TSV_TRAIN : CDL_TSV_HELDOUT, vocab, labels);
    } else if (strncmp(o->test, "tsv:", 4) != 0) {
        rc = cdl_fail("--test %s: with --data tsv:FILE the test file is tsv:FILE too", o->test);
    } else if (!vocab || !labels) {          /* the training file's, then the test file with them */
        cdl_dataset tr;
        if ((rc = cdl_dataset_load_tsv(&tr, o->data + 4, T, CDL_TSV_TRAIN, vocab, labels)) == 0)
            rc = cdl_dataset_load_tsv(d, o->test + 4, T, CDL_TSV_ALL, tr.vocab, tr.labels);
        cdl_dataset_free(&tr);
    } else {
        rc = cdl_dataset_load_tsv(d, o->test + 4, T, CDL_TSV_ALL, vocab, labels);
    }
    if (rc < 0 && vocab) tr_vocab_failed(o, vocab);
out:
    cdl_free(vocab);
    cdl_free(labels);
    return rc;
}

/* The dataset name for cdl_dataset_open: NAME and NAME:DIR pass through; an existing
 * directory becomes "fashion-mnist:DIR" (IDX files), an existing file "csv:FILE";
 * "random[:N]" is made here. */
int tr_open_dataset(const cdl_model *m, const tr_opts *o, int train, int64_t limit, cdl_dataset *d) {
    char name[TR_STR + 32];
    struct stat st;
    memset(d, 0, sizeof *d);
    if (!strcmp(o->data, "random") || !strncmp(o->data, "random:", 7)) {
        if (tr_random_dataset(m, o, train, d) < 0) return -1;
    } else if (!strncmp(o->data, "text:", 5) || !strncmp(o->data, "bytes:", 6)) {
        if (tr_text_dataset(m, o, train, d) < 0) return -1;
    } else if (!strncmp(o->data, "tsv:", 4)) {
        if (tr_tsv_dataset(m, o, train, d) < 0) return -1;
    } else {
        if (o->test[0]) return cdl_fail("--test %s: a separate test file is for --data tsv:FILE", o->test);
        if (!strchr(o->data, ':') && stat(o->data, &st) == 0)
            snprintf(name, sizeof name, "%s%s", S_ISDIR(st.st_mode) ? "fashion-mnist:" : "csv:", o->data);
        else
            snprintf(name, sizeof name, "%s", o->data);
        if (cdl_dataset_open_stream(d, name, train) < 0) return -1;   /* images read a batch at a time */
    }
    if (d->n < 1) {
        cdl_dataset_free(d);
        return cdl_fail("%s: dataset has no examples", o->data);
    }
    cdl_dataset_head(d, limit);
    return 0;
}

int tr_map_inputs(const cdl_model *m, const cdl_dataset *d, const tr_opts *o, tr_map *map) {
    memset(map, 0, sizeof *map);
    map->xi = map->yi = -1;
    if (cdl_dataset_feeds(d, m, o->feed, map->feed) < 0) return -1;
    /* the labels: an input fed from a target column, else the first i32 scalar (a tsv
     * model's len: i32[B] may come before its y) */
    for (int pass = 0; pass < 2 && map->yi < 0; pass++)
        for (int i = 0; i < m->n_inputs && map->yi < 0; i++) {
            const cdl_tensor *t = &m->inputs[i];
            if (t->dtype == CDL_I32 && cdl_tensor_numel(t, 1) == 1 &&
                (pass || (d->col[map->feed[i].col].flags & CDL_COL_TARGET)))
                map->yi = i;
        }
    for (int i = 0; i < m->n_inputs; i++)    /* the first real input the data feeds */
        if (m->inputs[i].dtype != CDL_I32 && map->feed[i].col >= 0 && map->xi < 0) map->xi = i;
    return 0;
}

void tr_print_feeds(FILE *f, const cdl_model *m, const cdl_dataset *d, const tr_map *map) {
    int any = 0;
    for (int i = 0; i < m->n_inputs; i++) {
        if (map->feed[i].col < 0) continue;
        const char *col = d->col[map->feed[i].col].name;
        if (!strcmp(col, m->inputs[i].name)) continue;
        fprintf(f, "%s%s <- column %s", any ? ", " : "inputs fed: ", m->inputs[i].name, col);
        any = 1;
    }
    if (any) fprintf(f, "\n");
}

cdl_net *tr_make_net(const cdl_model *m, const tr_opts *o) {
    cdl_net *net = cdl_net_new(m);
    if (!net) return NULL;
    net->seed = o->seed;
    if (m->init) m->init(net, o->seed);
    /* Many ranks: rank 0 reads the file, the others get its parameters */
    int failed = o->load[0] && cdl_dist_rank() == 0 && cdl_ckpt_load(o->load, net, NULL, NULL) < 0;
    if (cdl_dist_agree(failed, NULL, NULL, 0) < 0 || cdl_dist_sync_net(net, NULL) < 0) {
        cdl_net_free(net);
        return NULL;
    }
    return net;
}

cdl_loader *tr_plain_loader(const cdl_model *m, const tr_opts *o, const cdl_dataset *d, const tr_map *map) {
    cdl_loader_cfg lc;
    memset(&lc, 0, sizeof lc);
    /* Many ranks: rank r evaluates shard r of every batch, at most the compiled batch */
    int ranks = cdl_dist_size();
    lc.batch = tr_batch(m, o) > ranks * m->batch ? ranks * m->batch : tr_batch(m, o);
    lc.shard = ranks > 1 ? cdl_dist_rank() : 0;
    lc.nshards = ranks > 1 ? ranks : 0;
    lc.workers = o->workers;
    lc.seed = o->seed;
    lc.tf.normalize = o->tf.normalize;           /* no augmentation */
    lc.tf.mean = o->tf.mean;
    lc.tf.std = o->tf.std;
    lc.real_size = m->real_size;
    lc.nfeed = m->n_inputs;
    memcpy(lc.feed, map->feed, sizeof lc.feed);
    return cdl_loader_new(d, &lc);
}

const char *tr_cause(char *buf, size_t n) {
    const char *e = cdl_last_error();
    if (e[0]) snprintf(buf, n, ": %s", e);
    else buf[0] = 0;
    return buf;
}

int tr_loss_failed(double loss, const char *what) {
    char cause[400];
    return cdl_fail("the loss is %g %s%s", loss, what, tr_cause(cause, sizeof cause));
}

void tr_json_num(FILE *f, const char *key, double v, int comma) {
    if (isfinite(v)) fprintf(f, "\"%s\":%.17g%s", key, v, comma ? "," : "");
    else fprintf(f, "\"%s\":null%s", key, comma ? "," : "");
}

/* The warm-up product: above blas.c's CDL_DNNL_MIN_MACS (16^3), so that oneDNN takes
 * it; its result is not used. */
static void *tr_gemm_warm(void *arg) {
    (void)arg;
    enum { N = 32 };
    static const float a[N * N], b[N * N];
    float c[N * N];
    cdl_gemm_f32(0, 0, N, N, N, 1, a, N, b, N, 0, c, N);
    return NULL;
}

void tr_gemm_warm_start(const cdl_model *m, tr_warm *w) {
    w->on = m->real_size == 4 && cdl_backend_dnnl() && pthread_create(&w->th, NULL, tr_gemm_warm, NULL) == 0;
}

void tr_gemm_warm_join(tr_warm *w) {
    if (w->on) pthread_join(w->th, NULL);
    w->on = 0;
}

/* Fault in the pages of [p, p + bytes) for writing, their contents unchanged
 * (MADV_POPULATE_WRITE, Linux 5.14): the first write to each page of a fresh block
 * then takes no fault.  A no-op where the kernel or the headers lack it; the pages
 * around the block (the rounding to whole pages) are faulted in too, unchanged. */
void tr_prefault(void *p, size_t bytes) {
#ifdef MADV_POPULATE_WRITE
    long pg = sysconf(_SC_PAGESIZE);
    if (!p || !bytes || pg <= 0) return;
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(pg - 1), e = (uintptr_t)p + bytes;
    (void)madvise((void *)a, e - a, MADV_POPULATE_WRITE);
#else
    (void)p;
    (void)bytes;
#endif
}
