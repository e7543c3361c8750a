/* trainer_dp.c -- one training step over the shards of a global batch: the ranks of
 * a data-parallel job (dist.c) and, within each rank, micro-batches (--accum K).
 *
 * The global batch of G rows (--batch) is cut into S = ranks x K shards (the loader's
 * shards: shard s holds rows [g s / S, g (s + 1) / S) of a batch of g rows).  Rank r
 * runs shards r K .. r K + K - 1, one after another, each from the same parameters and
 * batch-norm state; then
 *   gradient   sum over shards of (rows_s / g) * the shard's gradient: the gradient of
 *              the mean loss over the global batch (the loss is taken to be a mean over
 *              the batch's examples, as the trainer's figures already assume);
 *   state      the mean over shards of each shard's updated state (batch-norm running
 *              statistics: each shard normalises by its own rows, as PyTorch's DDP
 *              without SyncBatchNorm, and the running averages are averaged);
 *   loss       the mean over the global batch's examples.
 * Random streams are keyed by the example's row in the global batch (net->batch_row0
 * and batch_rows, cdl_net_row_base), and the loader's shuffle and transforms by the
 * example, so the shards together compute what one process computes for the same
 * shards.  With S = 1 the step is exactly the one-process step.
 *
 * Bitwise equality: a shard's gradient is scaled by rows_s / g in the model's real
 * type, then the K shards of a rank are summed in order and the ranks' sums are
 * summed by MPI_Allreduce.  Two shards of 32 out of 64 give the same bits whether they
 * run as two ranks or as --accum 2 in one process (x * 0.5 is exact, a + b == b + a);
 * more ranks add in MPI's order.  Against one process with the whole batch (S = 1) the
 * batch sum inside the GEMMs is split differently: equal to rounding (about 1e-7
 * relative in f32), not bitwise.
 *
 * Every rank takes part in the step's agreement (cdl_dist_agree) whether its shards
 * loaded and ran or not, so a failure on one rank (a bad batch, an attack that failed,
 * a loss that is not finite on its rows: the rank that has the cause reports it) ends
 * every rank with that rank's message at the same step, and a signal caught by
 * any rank stops every rank after the same step.
 */
#include "trainer_int.h"

#include <math.h>
#include <string.h>

/* RNG stream of the attacks' random starts (as trainer_train.c's). */
#define TR_ADV_STREAM 0xAD7E5A11u

/* cdl_bn_shards.sum: batch norm's per-channel sums over the ranks. */
static void dp_bn_sum(double *v, int64_t n) { cdl_dist_sum(v, n, 8); }

int tr_dp_new(tr_dp *dp, const cdl_model *m, const cdl_dataset *d, const cdl_loader_cfg *lc, int accum) {
    memset(dp, 0, sizeof *dp);
    dp->m = m;
    dp->rank = cdl_dist_rank();
    dp->size = cdl_dist_size();
    dp->k = accum > 0 ? accum : 1;
    if (dp->k > TR_MAX_ACCUM) return cdl_fail("--accum %d: at most %d micro-batches", dp->k, TR_MAX_ACCUM);
    int shards = dp->size * dp->k;
    /* batch statistics over every rank's shard (one micro-batch per rank) */
    dp->sync = dp->size > 1 && dp->k == 1 && m->param_count > m->train_count;
    dp->bn.sum = dp_bn_sum;
    for (int j = 0; j < dp->k; j++) {
        cdl_loader_cfg c = *lc;
        /* a last batch with fewer examples than shards would leave some shard empty */
        int64_t last = lc->batch > 0 ? d->n % lc->batch : 0;
        if (shards > 1 && last > 0 && last < shards) c.drop_last = 1;
        c.shard = shards > 1 ? dp->rank * dp->k + j : 0;
        c.nshards = shards > 1 ? shards : 0;
        if (!(dp->l[j] = cdl_loader_new(d, &c))) return -1;
    }
    size_t rs = (size_t)m->real_size, nstate = m->param_count - m->train_count;
    if (dp->k > 1 && !(dp->acc = cdl_alloc(m->train_count * rs))) return -1;
    if (dp->k > 1 && nstate && (!(dp->state0 = cdl_alloc(nstate * rs)) || !(dp->state_sum = cdl_alloc(nstate * rs))))
        return -1;
    return 0;
}

void tr_dp_free(tr_dp *dp) {
    for (int j = 0; j < TR_MAX_ACCUM; j++) cdl_loader_free(dp->l[j]);
    cdl_free(dp->acc);
    cdl_free(dp->state0);
    cdl_free(dp->state_sum);
    memset(dp, 0, sizeof *dp);
}

int64_t tr_dp_batches(const tr_dp *dp) { return cdl_loader_batches(dp->l[0]); }

int tr_dp_start(tr_dp *dp, uint64_t epoch, int64_t skip) {
    for (int j = 0; j < dp->k; j++)
        if (cdl_loader_start(dp->l[j], epoch, skip) < 0) return -1;
    return 0;
}

/* y = (T)(a * x) (first) or y += (T)(a * x), over n reals of size rs. */
static void dp_axpy(void *y, const void *x, double a, size_t n, int rs, int first) {
    if (rs == 8) {
        double *p = y;
        const double *q = x;
        for (size_t i = 0; i < n; i++) p[i] = first ? a * q[i] : p[i] + a * q[i];
    } else {
        float *p = y;
        const float *q = x;
        for (size_t i = 0; i < n; i++) {
            float v = (float)(a * q[i]);
            p[i] = first ? v : p[i] + v;
        }
    }
}

/* Adversarial training on a shard: the global batch's first round(ratio * g) rows are
 * attacked, so this shard attacks its rows among them; the random start is keyed by
 * the global row (adversarial.c reads net->batch_row0). */
static int dp_perturb(cdl_adv *adv, cdl_net *net, int rows, uint64_t seed, uint64_t step) {
    if (!adv || cdl_adv_on_delta(adv)) return 0;     /* a delta: cdl_adv_train_grad, below */
    int64_t g = net->batch_rows > 0 ? net->batch_rows : rows;
    int64_t k = (int64_t)floor(cdl_adv_attack(adv)->ratio * (double)g + 0.5) - net->batch_row0;
    if (k > rows) k = rows;
    cdl_rng_key key = {seed, step, TR_ADV_STREAM};
    return k > 0 ? cdl_adv_perturb(adv, net, (int)k, key) : 0;
}

/* This rank's shards of batch b, each from the parameters and state the step started
 * with: gradients summed (scaled by rows / g) into net->grad, states into state_sum.
 * *lsum = sum of rows * loss, *rows its rows; 1 with a batch, 0 at the epoch's end, -1
 * on failure (message set). */
static int dp_local(tr_dp *dp, cdl_net *net, int64_t b, const tr_dp_step *st, double *lsum, int64_t *rows) {
    const cdl_model *m = dp->m;
    size_t rs = (size_t)m->real_size, nstate = m->param_count - m->train_count;
    void *state = (char *)net->param + m->train_count * rs;
    int shards = dp->size * dp->k;
    *lsum = 0;
    *rows = 0;
    if (dp->k > 1 && nstate) memcpy(dp->state0, state, nstate * rs);
    for (int j = 0; j < dp->k; j++) {
        int r = cdl_loader_next(dp->l[j], net->in), bad = r < 0;
        int64_t row0 = 0, g = 0;
        if (r > 0) {
            cdl_loader_shard_rows(dp->l[j], b, &row0, &g);
            net->batch_row0 = shards > 1 ? row0 : 0;
            net->batch_rows = shards > 1 ? g : 0;
            if (j > 0 && nstate) memcpy(state, dp->state0, nstate * rs);
            bad = dp_perturb(st->adv, net, r, st->seed, net->step) < 0;
        }
        /* batch norm's sums are collectives: no rank may skip the step alone */
        if (dp->sync && cdl_dist_agree(bad, NULL, NULL, 0) < 0) return -1;
        if (bad) return -1;
        if (r == 0) return 0;                             /* the end: every shard at once */
        dp->bn.rows = r;
        dp->bn.global_rows = g;
        cdl_bn_sharded = dp->sync ? &dp->bn : NULL;
        double loss = st->adv && cdl_adv_on_delta(st->adv)
                          ? cdl_adv_train_grad(st->adv, net, r, (cdl_rng_key){st->seed, net->step, TR_ADV_STREAM})
                          : m->grad(net, r);
        cdl_bn_sharded = NULL;
        if (dp->size > 1 && !isfinite(loss)) {           /* this rank's rows: say which, and why */
            char what[128];
            snprintf(what, sizeof what, "on rows %lld..%lld of batch %lld (rank %d's shard)", (long long)row0,
                     (long long)(row0 + r - 1), (long long)b, dp->rank);
            return tr_loss_failed(loss, what);
        }
        dp->loss = loss;
        *lsum += loss * r;
        *rows += r;
        if (shards > 1) {
            void *dst = dp->k > 1 ? dp->acc : net->grad;
            dp_axpy(dst, net->grad, (double)r / (double)g, m->train_count, m->real_size, j == 0);
        }
        if (dp->k > 1 && nstate) {
            if (j == 0) memcpy(dp->state_sum, state, nstate * rs);
            else dp_axpy(dp->state_sum, state, 1.0, nstate, m->real_size, 0);
        }
    }
    if (dp->k > 1) {
        memcpy(net->grad, dp->acc, m->train_count * rs);
        if (nstate) dp_axpy(state, dp->state_sum, 1.0 / dp->k, nstate, m->real_size, 1);
    }
    return 1;
}

int tr_dp_grad(tr_dp *dp, cdl_net *net, int64_t b, const tr_dp_step *st, int *sig, double *loss, int64_t *rows) {
    const cdl_model *m = dp->m;
    double lsum;
    int64_t r;
    int got = dp_local(dp, net, b, st, &lsum, &r);
    /* sums: rows * loss, rows, ranks at the epoch's end */
    double sum[3] = {got > 0 ? lsum : 0, (double)r, got == 0 ? 1 : 0};
    *sig = tr_signal_caught();                  /* read after the step: a signal during it counts */
    if (cdl_dist_agree(got < 0, sig, sum, 3) < 0) return -1;
    if (sum[2] > 0 && sum[2] < dp->size)
        return cdl_fail("internal error: %g of %d ranks reached the end of the epoch at batch %lld", sum[2], dp->size,
                        (long long)b);
    if (sum[2] > 0) return 0;
    if (dp->size > 1) {
        if (cdl_dist_sum(net->grad, (int64_t)m->train_count, m->real_size) < 0) return -1;
        if (cdl_dist_mean_state(net) < 0) return -1;
    }
    *rows = (int64_t)sum[1];
    *loss = dp->size * dp->k > 1 ? sum[0] / sum[1] : dp->loss;     /* one shard: its loss as it is */
    return 1;
}
