/* loader.c -- the batch loader: feeds, transforms, shards and worker threads.
 *
 * The loader hands out batches in order; batch b of epoch e holds examples
 * perm_e[b * batch ...], where perm_e is a Fisher-Yates shuffle driven by Philox keyed
 * by (seed, e), and every random transform of example i is keyed by (seed, e, i).  So
 * the batches depend on (seed, epoch) only, never on the number of workers, on timing
 * or on the shard.  Each batch fills one buffer per feed (a column written as reals of
 * real_size or as int32).  A column left in its file (CDL_COL_FILE) is read a batch
 * at a time: the batch's examples are pread into the worker's byte buffer (a run of
 * consecutive examples in one read), after one check that the file has not changed.
 *
 * Threads: workers claim batch indices in order under one mutex and produce them into
 * a ring of `prefetch` slots (batch b goes to slot b % nslots, claimable only once the
 * consumer has taken batch b - nslots: the bounded prefetch queue).  The consumer
 * waits for its slot, copies the batch out and frees the slot.  A failed batch is
 * reported by the consumer as -1 with the worker's message.
 *
 * Wake-ups: workers usually run ahead, so the ring is full and they sleep.  Waking one
 * is a futex system call on the consumer's (the training) thread, so the consumer wakes
 * the sleeping workers only once half of the ring is free (or when its own next batch
 * is not claimed yet), not after every batch, and the default ring is deeper than two
 * slots when its buffers are small (LOADER_RING_BYTES): with 8 slots, one wake-up per
 * 4 batches.  The batches and their order do not depend on any of this.
 */
#include "data_int.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* RNG streams of the loader (cdl_rng_key.stream); the example index is or'ed in, and
 * the noise stream also takes the column (bits 40 and up; column 0 adds nothing). */
#define STREAM_SHUFFLE 0xDA7A000000000000ull
#define STREAM_CROP    0xDA7B000000000000ull
#define STREAM_NOISE   0xDA7C000000000000ull

enum { SLOT_FREE, SLOT_BUSY, SLOT_READY, SLOT_FAILED };

typedef struct slot {
    int state;
    int rows;
    int64_t batch;
    void *buf[CDL_DATA_MAXFEED];  /* batch * feed bytes each */
    char err[256];
} slot;

typedef struct worker {
    cdl_loader *l;
    pthread_t th;
    double *scratch;             /* scratch_bytes */
    unsigned char *raw;          /* raw_bytes: the batch's bytes of the streamed feeds */
} worker;

struct cdl_loader {
    const cdl_dataset *d;
    cdl_loader_cfg cfg;
    size_t rs;                   /* bytes per real written */
    int nfeed;
    cdl_feed feed[CDL_DATA_MAXFEED];
    size_t fbytes[CDL_DATA_MAXFEED];   /* bytes of one example of each feed */
    int ftf[CDL_DATA_MAXFEED];   /* the transforms apply to this feed */
    size_t rawoff[CDL_DATA_MAXFEED];   /* a streamed feed's bytes in raw: batch * feat from here */
    size_t raw_bytes;            /* 0: no feed is streamed */
    int64_t maxfeat;
    int64_t nbatches;
    int64_t *perm;               /* n example indices, this epoch's order */
    uint64_t epoch;
    int started;
    int64_t next;                /* next batch the consumer takes */
    double *scratch;             /* synchronous mode: scratch_bytes */
    unsigned char *raw;          /* synchronous mode: raw_bytes */
    float lut[256];              /* a CDL_COL_U8 byte's float (data_u8_table) */
    float nlut[256];             /* and normalised: what the general path makes of it */
    /* worker threads */
    int nw, nstarted;
    worker *w;
    int nslots;
    slot *slots;
    pthread_mutex_t mu;
    pthread_cond_t cv_work;      /* workers wait: a claimable batch or shutdown */
    pthread_cond_t cv_done;      /* consumer waits: its batch produced, or idle workers */
    int64_t claim;               /* next batch a worker claims */
    int busy;                    /* workers producing right now */
    int idle;                    /* workers waiting on cv_work */
    int woken;                   /* of those, signalled and not yet running: waking
                                  * them again is a futex call that does nothing */
    int64_t wakes;               /* times the consumer woke idle workers */
    int active, shutdown;
    int sync_ok;                 /* mu and the condition variables are initialised */
};

/* The normalisation of one value: the one arithmetic of the general path and of the
 * byte table (so both give the same bits). */
static inline double tf_norm(double t, double m, double is) { return (t - m) * is; }

/* Crop and flip of one value (rank >= 2: H, W the last two dims) from src into t,
 * keyed by (seed, epoch, idx) alone, so that every column of an example moves alike. */
static void tf_geometry(const cdl_loader *l, const cdl_column *c, int64_t idx, const float *src, double *t) {
    const cdl_transform *tf = &l->cfg.tf;
    int64_t H = c->dims[c->rank - 2], W = c->dims[c->rank - 1], C = c->feat / (H * W);
    int64_t p = tf->crop_pad, dy = 0, dx = 0;
    int flip = 0;
    cdl_rng_key k = {l->cfg.seed, l->epoch, STREAM_CROP | (uint64_t)idx};
    uint32_t r[4];
    cdl_philox(k, 0, r);
    if (p > 0) {
        dy = (int64_t)(r[0] % (uint32_t)(2 * p + 1)) - p;
        dx = (int64_t)(r[1] % (uint32_t)(2 * p + 1)) - p;
    }
    if (tf->hflip) flip = r[2] & 1;
    for (int64_t ch = 0; ch < C; ch++)
        for (int64_t y = 0; y < H; y++) {
            int64_t sy = y + dy;
            double *o = t + (ch * H + y) * W;
            if (sy < 0 || sy >= H) {
                for (int64_t x = 0; x < W; x++) o[x] = 0;
                continue;
            }
            const float *row = src + (ch * H + sy) * W;
            for (int64_t x = 0; x < W; x++) {
                int64_t sx = (flip ? W - 1 - x : x) + dx;
                o[x] = sx < 0 || sx >= W ? 0.0 : row[sx];
            }
        }
}

/* A worker's scratch: 2 * maxfeat doubles, then maxfeat floats (a byte column's example). */
static size_t scratch_bytes(const cdl_loader *l) {
    return (size_t)l->maxfeat * (2 * sizeof(double) + sizeof(float));
}

/* Example idx of byte column c (CDL_COL_U8; its bytes at raw when streamed) into dst
 * as reals when no transform but normalisation applies (the table lookups give the
 * bits the general path gives); else widened into f (feat floats) for the general
 * path: returns 0 then. */
static int u8_example(const cdl_loader *l, const cdl_column *c, int k, int64_t idx, const unsigned char *raw,
                      void *dst, float *f) {
    const unsigned char *b = raw ? raw : (const unsigned char *)c->data + idx * c->stride;
    const cdl_transform *tf = &l->cfg.tf;
    int64_t feat = c->feat;
    int plain = !l->ftf[k] || (!(tf->crop_pad > 0 || tf->hflip) && !tf->normalize && tf->noise_std == 0);
    int norm = l->ftf[k] && !(tf->crop_pad > 0 || tf->hflip) && tf->normalize && tf->noise_std == 0;
    if (plain && l->rs == 4) {
        for (int64_t i = 0; i < feat; i++) ((float *)dst)[i] = l->lut[b[i]];
        return 1;
    }
    if (norm && l->rs == 4) {
        for (int64_t i = 0; i < feat; i++) ((float *)dst)[i] = l->nlut[b[i]];
        return 1;
    }
    for (int64_t i = 0; i < feat; i++) f[i] = l->lut[b[i]];
    return 0;
}

/* Feed k of example idx (a streamed feed: its bytes at raw) into dst, scratch as
 * scratch_bytes.  Randomness keyed by (seed, epoch, idx) only (the noise also by the
 * column). */
static void tf_example(const cdl_loader *l, int k, int64_t idx, const unsigned char *raw, void *dst,
                       double *scratch) {
    const cdl_feed *fd = &l->feed[k];
    const cdl_column *c = &l->d->col[fd->col];
    const cdl_transform *tf = &l->cfg.tf;
    int64_t feat = c->feat;
    if (c->dtype == CDL_I32) {
        const int32_t *src = (const int32_t *)c->data + idx * c->stride;
        if (fd->dtype == CDL_I32) memcpy(dst, src, (size_t)feat * sizeof(int32_t));
        else if (l->rs == 4)
            for (int64_t i = 0; i < feat; i++) ((float *)dst)[i] = (float)src[i];
        else
            for (int64_t i = 0; i < feat; i++) ((double *)dst)[i] = src[i];
        return;
    }
    const float *src;
    if (c->flags & CDL_COL_U8) {
        float *f = (float *)(scratch + 2 * l->maxfeat);
        if (u8_example(l, c, k, idx, raw, dst, f)) return;
        src = f;
    } else {
        src = (const float *)c->data + idx * c->stride;
    }
    int geo = l->ftf[k] && (tf->crop_pad > 0 || tf->hflip);
    if (!l->ftf[k] || (!geo && !tf->normalize && tf->noise_std == 0)) {
        if (l->rs == 4) memcpy(dst, src, (size_t)feat * sizeof(float));
        else
            for (int64_t i = 0; i < feat; i++) ((double *)dst)[i] = src[i];
        return;
    }
    double *t = scratch, *z = scratch + feat;
    if (geo) tf_geometry(l, c, idx, src, t);
    else
        for (int64_t i = 0; i < feat; i++) t[i] = src[i];
    if (tf->normalize) {
        double m = tf->mean, is = 1.0 / tf->std;
        for (int64_t i = 0; i < feat; i++) t[i] = tf_norm(t[i], m, is);
    }
    if (tf->noise_std != 0) {
        cdl_rng_key key = {l->cfg.seed, l->epoch, STREAM_NOISE | (uint64_t)fd->col << 40 | (uint64_t)idx};
        cdl_randn_f64(key, 0, feat, z);
        for (int64_t i = 0; i < feat; i++) t[i] += tf->noise_std * z[i];
    }
    if (l->rs == 4)
        for (int64_t i = 0; i < feat; i++) ((float *)dst)[i] = (float)t[i];
    else
        memcpy(dst, t, (size_t)feat * sizeof(double));
}

/* This shard's rows [*lo, lo + rows) of batch b; returns rows. */
static int64_t batch_rows(const cdl_loader *l, int64_t b, int64_t *lo) {
    int64_t start = b * l->cfg.batch, n = l->d->n;
    int64_t g = n - start < l->cfg.batch ? n - start : l->cfg.batch;
    int64_t ns = l->cfg.nshards > 1 ? l->cfg.nshards : 1, s = ns > 1 ? l->cfg.shard : 0;
    *lo = start + g * s / ns;
    return start + g * (s + 1) / ns - *lo;
}

/* The bytes of the rows examples perm[lo ...] of every streamed feed into raw (feed k's
 * at rawoff[k], feat bytes an example): a run of consecutive examples is one read.
 * Checks first that the file is unchanged.  -1 and a message naming the file. */
static int read_streamed(const cdl_loader *l, int64_t lo, int64_t rows, unsigned char *raw) {
    const data_stream *s = l->d->stream;
    if (data_stream_check(s) < 0) return -1;
    for (int k = 0; k < l->nfeed; k++) {
        if (l->rawoff[k] == SIZE_MAX) continue;
        const cdl_column *c = &l->d->col[l->feed[k].col];
        size_t feat = (size_t)c->feat;
        for (int64_t r = 0, run; r < rows; r += run) {
            int64_t idx = l->perm[lo + r];
            for (run = 1; c->stride == c->feat && r + run < rows && l->perm[lo + r + run] == idx + run; run++) {}
            if (data_stream_read(s, (uint64_t)idx * (uint64_t)c->stride, raw + l->rawoff[k] + (size_t)r * feat,
                                 (size_t)run * feat) < 0)
                return -1;
        }
    }
    return 0;
}

/* Produce batch b into dst[k] (one per feed); returns rows or -1 with a message in err. */
static int produce(const cdl_loader *l, int64_t b, void *const *dst, double *scratch, unsigned char *raw, char *err,
                   size_t errlen) {
    if (l->cfg.fail_batch > 0 && b == l->cfg.fail_batch - 1) {
        snprintf(err, errlen, "loader: batch %lld of epoch %llu failed (test failure injection)", (long long)b,
                 (unsigned long long)l->epoch);
        return -1;
    }
    int64_t lo, rows = batch_rows(l, b, &lo);
    if (l->raw_bytes && read_streamed(l, lo, rows, raw) < 0) {
        snprintf(err, errlen, "%s", cdl_last_error());
        return -1;
    }
    for (int64_t r = 0; r < rows; r++) {
        int64_t idx = l->perm[lo + r];
        for (int k = 0; k < l->nfeed; k++) {
            if (!dst[k] || !l->fbytes[k]) continue;
            const unsigned char *ex = l->rawoff[k] == SIZE_MAX ? NULL
                                      : raw + l->rawoff[k] + (size_t)r * (size_t)l->d->col[l->feed[k].col].feat;
            tf_example(l, k, idx, ex, (char *)dst[k] + (size_t)r * l->fbytes[k], scratch);
        }
    }
    return (int)rows;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    cdl_loader *l = w->l;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->shutdown &&
               !(l->active && l->claim < l->nbatches && l->slots[l->claim % l->nslots].state == SLOT_FREE)) {
            l->idle++;
            pthread_cond_wait(&l->cv_work, &l->mu);
            l->idle--;
            if (l->woken > 0) l->woken--;
        }
        if (l->shutdown) break;
        int64_t b = l->claim++;
        slot *s = &l->slots[b % l->nslots];
        s->state = SLOT_BUSY;
        s->batch = b;
        l->busy++;
        pthread_mutex_unlock(&l->mu);
        int rows = produce(l, b, s->buf, w->scratch, w->raw, s->err, sizeof s->err);
        pthread_mutex_lock(&l->mu);
        s->rows = rows;
        s->state = rows < 0 ? SLOT_FAILED : SLOT_READY;
        l->busy--;
        pthread_cond_broadcast(&l->cv_done);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* The feeds and transforms fit the dataset; -1 and a message. */
static int loader_check_feeds(const cdl_dataset *d, const cdl_loader_cfg *c) {
    if (c->nfeed < 0 || c->nfeed > CDL_DATA_MAXFEED || (c->nfeed == 0 && d->ncols > CDL_DATA_MAXFEED))
        return cdl_fail("cdl_loader_new: %d feeds (at most %d)", c->nfeed ? c->nfeed : d->ncols, CDL_DATA_MAXFEED);
    const cdl_transform *t = &c->tf;
    for (int k = 0; k < (c->nfeed ? c->nfeed : d->ncols); k++) {
        int col = c->nfeed ? c->feed[k].col : k;
        if (col == -1 && c->nfeed) continue;     /* fed by no column (a perturb()'s delta): left alone */
        if (col < 0 || col >= d->ncols) return cdl_fail("cdl_loader_new: feed %d: no column %d", k, col);
        const cdl_column *cc = &d->col[col];
        int streamed = (cc->flags & CDL_COL_FILE) && (cc->flags & CDL_COL_U8) && cc->dtype == CDL_F32 && d->stream;
        if ((!cc->data && !streamed) || cc->feat < 1 || cc->stride < 1 || cc->rank < 0 || cc->rank > CDL_MAXDIM)
            return cdl_fail("cdl_loader_new: dataset '%s': column %s is empty or malformed", d->name, cc->name);
        if (c->nfeed && c->feed[k].dtype == CDL_I32 && cc->dtype != CDL_I32)
            return cdl_fail("cdl_loader_new: column %s holds reals; it cannot feed integers", cc->name);
        int tf = cc->dtype != CDL_I32 && !(cc->flags & CDL_COL_TARGET);
        if (tf && (t->crop_pad || t->hflip) && cc->rank < 2)
            return cdl_fail("cdl_loader_new: crop and flip need values of rank >= 2 (column %s of dataset '%s' has "
                            "rank %d)", cc->name, d->name, cc->rank);
    }
    return 0;
}

/* The loader's configuration checks; -1 and a message. */
static int loader_check(const cdl_dataset *d, const cdl_loader_cfg *c) {
    if (!d || !c) return cdl_fail("cdl_loader_new: NULL dataset or config");
    if (d->n < 1 || !d->col) return cdl_fail("cdl_loader_new: dataset '%s' is empty or not loaded", d->name);
    if (c->batch < 1) return cdl_fail("cdl_loader_new: batch %d < 1", c->batch);
    if (c->workers < 0 || c->workers > 64) return cdl_fail("cdl_loader_new: workers %d not in 0..64", c->workers);
    if (c->prefetch < 0 || c->prefetch > 1024)
        return cdl_fail("cdl_loader_new: prefetch %d not in 0..1024", c->prefetch);
    if (c->real_size != 0 && c->real_size != 4 && c->real_size != 8)
        return cdl_fail("cdl_loader_new: real_size %d is not 4 or 8", c->real_size);
    if (c->nshards < 0 || c->nshards > 1 << 20 || c->shard < 0 || (c->nshards > 1 && c->shard >= c->nshards))
        return cdl_fail("cdl_loader_new: shard %d of %d", c->shard, c->nshards);
    const cdl_transform *t = &c->tf;
    if (t->normalize && (!isfinite(t->mean) || !isfinite(t->std) || t->std <= 0))
        return cdl_fail("cdl_loader_new: normalize needs a finite mean and std > 0 (got %g, %g)", t->mean, t->std);
    if (!isfinite(t->noise_std) || t->noise_std < 0)
        return cdl_fail("cdl_loader_new: noise_std %g must be >= 0", t->noise_std);
    if (t->crop_pad < 0 || t->crop_pad > 1024)
        return cdl_fail("cdl_loader_new: crop_pad %d not in 0..1024", t->crop_pad);
    if (c->fail_batch < 0) return cdl_fail("cdl_loader_new: fail_batch < 0");
    return loader_check_feeds(d, c);
}

/* The feeds (the configured ones, or every column as itself), their sizes and which
 * take the transforms; the batches per epoch. */
static void loader_layout(cdl_loader *l) {
    const cdl_dataset *d = l->d;
    l->nfeed = l->cfg.nfeed ? l->cfg.nfeed : d->ncols;
    for (int k = 0; k < l->nfeed; k++) {
        l->feed[k] = l->cfg.nfeed ? l->cfg.feed[k] : (cdl_feed){k, d->col[k].dtype};
        if (l->feed[k].col < 0) continue;       /* no column: fbytes 0, nothing written */
        const cdl_column *c = &d->col[l->feed[k].col];
        l->fbytes[k] = (size_t)c->feat * (l->feed[k].dtype == CDL_I32 ? sizeof(int32_t) : l->rs);
        l->ftf[k] = c->dtype != CDL_I32 && l->feed[k].dtype != CDL_I32 && !(c->flags & CDL_COL_TARGET);
        if (c->feat > l->maxfeat) l->maxfeat = c->feat;
    }
    for (int k = 0; k < l->nfeed; k++) {      /* the streamed feeds' places in raw */
        l->rawoff[k] = SIZE_MAX;
        if (l->feed[k].col < 0 || !(d->col[l->feed[k].col].flags & CDL_COL_FILE)) continue;
        l->rawoff[k] = l->raw_bytes;
        l->raw_bytes += (size_t)l->cfg.batch * (size_t)d->col[l->feed[k].col].feat;
    }
    int64_t B = l->cfg.batch, n = d->n;
    l->nbatches = l->cfg.drop_last ? n / B : (n + B - 1) / B;
    if (l->cfg.nshards > 1 && l->nbatches * B > n && n - (l->nbatches - 1) * B < l->cfg.nshards) l->nbatches--;
}

/* The default ring (prefetch 0): 2 slots a worker, and up to LOADER_RING_SLOTS while
 * all of the slots' buffers take at most LOADER_RING_BYTES (the MLP's batch of 64
 * images is 200 KB: 8 slots). */
#define LOADER_RING_SLOTS 8
#define LOADER_RING_BYTES ((size_t)2 << 20)

static int loader_default_slots(const cdl_loader *l) {
    size_t bytes = 0;
    for (int k = 0; k < l->nfeed; k++) bytes += (size_t)l->cfg.batch * l->fbytes[k];
    int n = 2 * l->nw;
    while (n < LOADER_RING_SLOTS && (size_t)(n + 1) * bytes <= LOADER_RING_BYTES) n++;
    return n;
}

/* Slots, worker scratch and threads; -1 and a message (the caller frees l). */
static int loader_threads(cdl_loader *l) {
    l->nslots = l->cfg.prefetch ? l->cfg.prefetch : loader_default_slots(l);
    if (l->nslots < l->nw) l->nslots = l->nw;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv_work, NULL);
    pthread_cond_init(&l->cv_done, NULL);
    l->sync_ok = 1;
    l->slots = cdl_alloc(sizeof(slot) * (size_t)l->nslots);
    l->w = cdl_alloc(sizeof(worker) * (size_t)l->nw);
    if (!l->slots || !l->w) return -1;
    for (int i = 0; i < l->nslots; i++)
        for (int k = 0; k < l->nfeed; k++) {
            if (l->fbytes[k] > SIZE_MAX / (size_t)l->cfg.batch) return cdl_fail("cdl_loader_new: batch buffers too large");
            if (!(l->slots[i].buf[k] = cdl_alloc((size_t)l->cfg.batch * l->fbytes[k]))) return -1;
        }
    for (int i = 0; i < l->nw; i++) {
        l->w[i].l = l;
        if (!(l->w[i].scratch = cdl_alloc(scratch_bytes(l)))) return -1;
        if (l->raw_bytes && !(l->w[i].raw = cdl_alloc(l->raw_bytes))) return -1;
    }
    for (int i = 0; i < l->nw; i++) {
        int e = pthread_create(&l->w[i].th, NULL, worker_main, &l->w[i]);
        if (e != 0) return cdl_fail("cdl_loader_new: cannot start worker thread %d: %s", i, strerror(e));
        l->nstarted++;
    }
    return 0;
}

cdl_loader *cdl_loader_new(const cdl_dataset *d, const cdl_loader_cfg *cfg) {
    if (loader_check(d, cfg) < 0) return NULL;
    cdl_loader *l = cdl_alloc(sizeof *l);
    if (!l) return NULL;
    l->d = d;
    l->cfg = *cfg;
    l->rs = cfg->real_size == 8 ? 8 : 4;
    loader_layout(l);
    l->nw = cfg->workers;
    l->perm = cdl_alloc((size_t)d->n * sizeof(int64_t));
    l->scratch = cdl_alloc(scratch_bytes(l));
    l->raw = l->nw == 0 && l->raw_bytes ? cdl_alloc(l->raw_bytes) : NULL;
    data_u8_table(l->lut);
    for (int v = 0; v < 256 && cfg->tf.normalize; v++)     /* tf_example's arithmetic, per byte value */
        l->nlut[v] = (float)tf_norm(l->lut[v], cfg->tf.mean, 1.0 / cfg->tf.std);
    if (!l->perm || !l->scratch || (l->nw == 0 && l->raw_bytes && !l->raw) || (l->nw > 0 && loader_threads(l) < 0)) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", cdl_last_error());
        cdl_loader_free(l);
        cdl_fail("%s", msg);
        return NULL;
    }
    return l;
}

int64_t cdl_loader_batches(const cdl_loader *l) { return l ? l->nbatches : 0; }

int64_t cdl_loader_shard_rows(const cdl_loader *l, int64_t b, int64_t *row0, int64_t *global) {
    int64_t lo, rows = batch_rows(l, b, &lo), start = b * l->cfg.batch;
    *row0 = lo - start;
    *global = l->d->n - start < l->cfg.batch ? l->d->n - start : l->cfg.batch;
    return rows;
}

/* This epoch's order: identity, or a Fisher-Yates shuffle keyed by (seed, epoch).  The
 * 64-bit draw modulo (i + 1) has a bias below 2^-30 for any realistic n. */
static void loader_shuffle(cdl_loader *l) {
    int64_t n = l->d->n;
    for (int64_t i = 0; i < n; i++) l->perm[i] = i;
    if (!l->cfg.shuffle) return;
    cdl_rng_key k = {l->cfg.seed, l->epoch, STREAM_SHUFFLE};
    for (int64_t i = n - 1; i > 0; i--) {
        uint32_t r[4];
        cdl_philox(k, (uint64_t)i, r);
        uint64_t v = (uint64_t)r[0] << 32 | r[1];
        int64_t j = (int64_t)(v % (uint64_t)(i + 1));
        int64_t t = l->perm[i];
        l->perm[i] = l->perm[j];
        l->perm[j] = t;
    }
}

int cdl_loader_start(cdl_loader *l, uint64_t epoch, int64_t skip_batches) {
    if (!l) return cdl_fail("cdl_loader_start: NULL loader");
    if (skip_batches < 0 || skip_batches > l->nbatches)
        return cdl_fail("cdl_loader_start: skip_batches %lld not in 0..%lld", (long long)skip_batches,
                        (long long)l->nbatches);
    if (l->nw == 0) {
        l->epoch = epoch;
        loader_shuffle(l);
        l->next = skip_batches;
        l->started = 1;
        return 0;
    }
    pthread_mutex_lock(&l->mu);
    l->active = 0;                              /* no new claims; drain the busy ones */
    while (l->busy > 0) pthread_cond_wait(&l->cv_done, &l->mu);
    for (int i = 0; i < l->nslots; i++) l->slots[i].state = SLOT_FREE;
    l->epoch = epoch;
    loader_shuffle(l);
    l->next = l->claim = skip_batches;
    l->started = 1;
    l->active = 1;
    l->woken = l->idle;
    pthread_cond_broadcast(&l->cv_work);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

/* Under mu: wake the idle workers when there is work for them and either half of the
 * ring is free, or the consumer waits (`waiting`) or is about to wait for a batch no
 * worker has claimed.  Freed slots are claimable in order, so the free ones ahead of
 * the workers are next + nslots - claim.  Workers already signalled that have not run
 * yet (a busy machine keeps them off their core) are not signalled again. */
static void loader_wake(cdl_loader *l, int waiting) {
    if (l->idle <= l->woken || l->claim >= l->nbatches) return;
    int64_t free_ahead = l->next + l->nslots - l->claim;
    if (free_ahead < 1) return;
    if (!waiting && l->claim > l->next && 2 * free_ahead < l->nslots) return;
    l->wakes++;
    l->woken = l->idle;
    pthread_cond_broadcast(&l->cv_work);
}

void cdl_loader_stats(const cdl_loader *l, int *slots, int64_t *wakes) {
    *slots = l ? l->nslots : 0;
    *wakes = l ? l->wakes : 0;
}

int cdl_loader_next(cdl_loader *l, void *const *dst) {
    if (!l || !dst) return cdl_fail("cdl_loader_next: NULL loader or buffers");
    if (!l->started) return cdl_fail("cdl_loader_next: call cdl_loader_start first");
    if (l->next >= l->nbatches) return 0;
    if (l->nw == 0) {
        char err[256];
        int rows = produce(l, l->next, dst, l->scratch, l->raw, err, sizeof err);
        if (rows < 0) return cdl_fail("%s", err);
        l->next++;
        return rows;
    }
    pthread_mutex_lock(&l->mu);
    slot *s = &l->slots[l->next % l->nslots];
    while (!((s->state == SLOT_READY || s->state == SLOT_FAILED) && s->batch == l->next)) {
        loader_wake(l, 1);
        pthread_cond_wait(&l->cv_done, &l->mu);
    }
    int st = s->state;
    pthread_mutex_unlock(&l->mu);
    if (st == SLOT_FAILED) return cdl_fail("%s", s->err);   /* stays failed until the next start */
    int rows = s->rows;
    for (int k = 0; k < l->nfeed; k++)
        if (dst[k]) memcpy(dst[k], s->buf[k], (size_t)rows * l->fbytes[k]);
    pthread_mutex_lock(&l->mu);
    s->state = SLOT_FREE;
    l->next++;
    loader_wake(l, 0);
    pthread_mutex_unlock(&l->mu);
    return rows;
}

void cdl_loader_free(cdl_loader *l) {
    if (!l) return;
    if (l->nstarted > 0) {
        pthread_mutex_lock(&l->mu);
        l->shutdown = 1;
        pthread_cond_broadcast(&l->cv_work);
        pthread_mutex_unlock(&l->mu);
        for (int i = 0; i < l->nstarted; i++) pthread_join(l->w[i].th, NULL);
    }
    if (l->sync_ok) {
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv_work);
        pthread_cond_destroy(&l->cv_done);
    }
    for (int i = 0; l->slots && i < l->nslots; i++)
        for (int k = 0; k < l->nfeed; k++) cdl_free(l->slots[i].buf[k]);
    for (int i = 0; l->w && i < l->nw; i++) {
        cdl_free(l->w[i].scratch);
        cdl_free(l->w[i].raw);
    }
    cdl_free(l->raw);
    cdl_free(l->slots);
    cdl_free(l->w);
    cdl_free(l->perm);
    cdl_free(l->scratch);
    cdl_free(l);
}
