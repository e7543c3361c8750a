/* trainer_tools.c -- the trainer's sample and grad commands (gradcheck is in
 * trainer_gradcheck.c).
 *
 * sample     runs an entry point (e.g. a VAE's `generate`) on N(0, 1) noise and writes
 *            its first output as a grid of grayscale tiles (PNG).
 * grad       the loss, the inputs and every parameter gradient of the first N training
 *            batches in order, with the parameters and the metadata that reproduce the
 *            computation, as one safetensors file (for checks against PyTorch).
 */
#include "trainer_int.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

static size_t tt_elem(const cdl_model *m, const cdl_tensor *t) {
    return t->dtype == CDL_I32 ? 4 : t->dtype == CDL_F64 ? 8 : (size_t)m->real_size;
}

/* ---------------------------------------------------------------- sample */

/* Tiles of tw x th pixels from out (n rows of f values, real size rs), in a grid of
 * cols columns with a 2-pixel border.  Values are clamped to [0, 1] when they all lie
 * there, else min-max scaled. */
static int sample_png(const char *path, const void *out, int rs, int n, int64_t f, int tw, int th) {
    int cols = (int)ceil(sqrt((double)n)), rows = (n + cols - 1) / cols, pad = 2;
    int W = cols * (tw + pad) + pad, H = rows * (th + pad) + pad;
    if ((int64_t)tw * th != f) return cdl_fail("sample: tile %dx%d does not match %lld values", tw, th, (long long)f);
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < (int64_t)n * f; i++) {
        double v = rs == 8 ? ((const double *)out)[i] : ((const float *)out)[i];
        if (isfinite(v)) lo = fmin(lo, v), hi = fmax(hi, v);
    }
    int scale = !(lo >= 0 && hi <= 1);
    if (!(hi > lo)) lo = 0, hi = 1;
    unsigned char *pix = cdl_alloc((size_t)W * (size_t)H);
    if (!pix) return -1;
    for (int k = 0; k < n; k++) {
        int ox = pad + (k % cols) * (tw + pad), oy = pad + (k / cols) * (th + pad);
        for (int y = 0; y < th; y++)
            for (int x = 0; x < tw; x++) {
                int64_t i = (int64_t)k * f + (int64_t)y * tw + x;
                double v = rs == 8 ? ((const double *)out)[i] : ((const float *)out)[i];
                if (scale) v = (v - lo) / (hi - lo);
                v = isfinite(v) ? fmin(1, fmax(0, v)) : 0;
                pix[(size_t)(oy + y) * (size_t)W + (size_t)(ox + x)] = (unsigned char)lrint(v * 255);
            }
    }
    int rc = cdl_png_write_gray(path, W, H, pix);
    cdl_free(pix);
    return rc;
}

int tr_sample(const cdl_model *m, const tr_opts *o) {
    const cdl_entry *e = NULL;
    for (int i = 0; i < m->n_entries; i++)
        if (!o->entry[0] || !strcmp(m->entries[i].name, o->entry)) {
            e = &m->entries[i];
            break;
        }
    if (!e) {
        if (o->entry[0]) fprintf(stderr, "sample: model %s has no entry point '%s'\n", m->name, o->entry);
        else fprintf(stderr, "sample: model %s has no entry point (e.g. `entry generate(z) = ...`)\n", m->name);
        return 1;
    }
    int n = (int)(o->n > 0 ? o->n : (m->batch < 64 ? m->batch : 64));
    if (o->n > m->batch) {
        fprintf(stderr, "sample: --n %lld is larger than the compiled batch %d\n", (long long)o->n, m->batch);
        return 1;
    }
    if (e->n_out < 1 || e->n_in > 16 || e->n_out > 16) {
        fprintf(stderr, "sample: entry %s has %d inputs and %d outputs\n", e->name, e->n_in, e->n_out);
        return 1;
    }
    const char *path = o->out[0] ? o->out : "sample.png";
    void *in[16] = {0}, *out[16] = {0};
    int rc = 1;
    cdl_net *net = tr_make_net(m, o);
    if (!net) goto fail;
    for (int i = 0; i < e->n_in; i++) {
        const cdl_tensor *t = &e->in[i];
        int64_t cnt = cdl_tensor_numel(t, n);
        if (!(in[i] = cdl_alloc((size_t)cnt * tt_elem(m, t)))) goto fail;
        cdl_rng_key key = {o->seed, 0, 0x5A3B1E00u + (uint64_t)i};
        if (t->dtype == CDL_I32) continue;                /* zeros */
        if (m->real_size == 8) cdl_randn_f64(key, 0, cnt, in[i]);
        else cdl_randn_f32(key, 0, cnt, in[i]);
    }
    for (int i = 0; i < e->n_out; i++)
        if (!(out[i] = cdl_alloc((size_t)cdl_tensor_numel(&e->out[i], n) * tt_elem(m, &e->out[i])))) goto fail;
    cdl_clear_error();
    e->run(net, n, (const void *const *)in, (void *const *)out);
    if (cdl_last_error()[0]) {
        char msg[600];
        snprintf(msg, sizeof msg, "entry %s failed: %s", e->name, cdl_last_error());
        cdl_fail("%s", msg);
        goto fail;
    }
    const cdl_tensor *t0 = &e->out[0];
    if (t0->dtype == CDL_I32) {
        cdl_fail("entry %s: output %s is not real-valued", e->name, t0->name);
        goto fail;
    }
    int64_t f = cdl_tensor_numel(t0, n) / n;
    int tw, th;
    if (f == 784) tw = th = 28;
    else if ((int64_t)llround(sqrt((double)f)) * llround(sqrt((double)f)) == f) tw = th = (int)llround(sqrt((double)f));
    else tw = (int)f, th = 1;
    if (f > (1 << 20) || sample_png(path, out[0], m->real_size, n, f, tw, th) < 0) goto fail;
    if (!o->quiet) printf("wrote %s: %d samples of %s.%s (%dx%d tiles)\n", path, n, m->name, e->name, tw, th);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "sample: %s\n", cdl_last_error());
done:
    for (int i = 0; i < 16; i++) {
        cdl_free(in[i]);
        cdl_free(out[i]);
    }
    cdl_net_free(net);
    return rc;
}

/* ---------------------------------------------------------------- grad */

/* What grad collects: per batch its rows, loss, inputs and gradients; then the tensor
 * table for the file. */
typedef struct gd_run {
    const cdl_model *m;
    const tr_opts *o;
    cdl_dataset d;
    tr_map map;
    cdl_loader *l;
    cdl_net *net;
    int64_t nbat, done;           /* batches asked for, taken */
    size_t in_bytes;              /* all inputs of one batch at the compiled batch */
    double *losses;
    int32_t *rows;
    char *inputs, *grads, *params;
    cdl_st_tensor *st;
    char (*names)[192];
    int nt;                       /* tensors in st */
    uint64_t step0;
} gd_run;

static void gd_free(gd_run *g) {
    cdl_free(g->losses);
    cdl_free(g->rows);
    cdl_free(g->inputs);
    cdl_free(g->grads);
    cdl_free(g->params);
    cdl_free(g->st);
    cdl_free(g->names);
    cdl_loader_free(g->l);
    cdl_net_free(g->net);
    cdl_dataset_free(&g->d);
}

/* Bytes of input i's rows rows. */
static size_t gd_input_bytes(const cdl_model *m, int i, int rows) {
    return (size_t)cdl_tensor_numel(&m->inputs[i], rows) * tt_elem(m, &m->inputs[i]);
}

/* The data, the net and the buffers of every batch; -1 and a message. */
static int gd_setup(gd_run *g) {
    const cdl_model *m = g->m;
    const tr_opts *o = g->o;
    if (tr_open_dataset(m, o, 1, o->limit, &g->d) < 0 || tr_map_inputs(m, &g->d, o, &g->map) < 0 ||
        !(g->net = tr_make_net(m, o)) || !(g->l = tr_plain_loader(m, o, &g->d, &g->map)) ||
        cdl_loader_start(g->l, 0, 0) < 0)
        return -1;
    for (int i = 0; i < m->n_inputs; i++) g->in_bytes += gd_input_bytes(m, i, m->batch);
    size_t rs = (size_t)m->real_size, nb = (size_t)g->nbat;
    int nt = m->n_params + (int)nb * (2 + m->n_inputs + m->n_params);
    g->losses = cdl_alloc(nb * sizeof(double));
    g->rows = cdl_alloc(nb * sizeof(int32_t));
    g->inputs = cdl_alloc(nb * g->in_bytes);
    g->grads = cdl_alloc(nb * m->train_count * rs);
    g->params = cdl_alloc(m->param_count * rs);
    g->st = cdl_alloc((size_t)nt * sizeof *g->st);
    g->names = cdl_alloc((size_t)nt * sizeof *g->names);
    if (!g->losses || !g->rows || !g->inputs || !g->grads || !g->params || !g->st || !g->names) return -1;
    memcpy(g->params, g->net->param, m->param_count * rs);   /* the point the gradients are taken at */
    g->step0 = g->net->step;
    return 0;
}

/* Batches 0..nbat-1 in order (fewer when the data ends): loss, inputs, gradients.  A
 * loss that is not finite is an error with its recorded cause.  -1 and a message. */
static int gd_batches(gd_run *g) {
    const cdl_model *m = g->m;
    cdl_net *net = g->net;
    size_t rs = (size_t)m->real_size;
    for (int64_t b = 0; b < g->nbat; b++) {
        int rows = cdl_loader_next(g->l, net->in);
        if (rows < 0) return -1;
        if (rows == 0) break;
        net->step = g->step0 + (uint64_t)b;
        cdl_clear_error();
        double loss = g->o->eval_mode ? m->eval_grad(net, rows) : m->grad(net, rows);
        if (!isfinite(loss)) {
            char what[64];
            snprintf(what, sizeof what, "on batch %lld", (long long)b);
            return tr_loss_failed(loss, what);             /* no file: NaN and stale gradients help no one */
        }
        g->losses[b] = loss;
        g->rows[b] = rows;
        char *in = g->inputs + (size_t)b * g->in_bytes;
        for (int i = 0; i < m->n_inputs; i++) {
            memcpy(in, net->in[i], gd_input_bytes(m, i, rows));
            in += gd_input_bytes(m, i, m->batch);
        }
        memcpy(g->grads + (size_t)b * m->train_count * rs, net->grad, m->train_count * rs);
        g->done = b + 1;
        if (!g->o->quiet) printf("batch %lld: %d rows, loss %.9g\n", (long long)b, rows, loss);
    }
    return 0;
}

/* Append a tensor to the table, its name printed from fmt. */
static void gd_add(gd_run *g, cdl_dtype dt, int rank, const int64_t *dims, const void *data, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 6, 7)))
#endif
    ;
static void gd_add(gd_run *g, cdl_dtype dt, int rank, const int64_t *dims, const void *data, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->names[g->nt], sizeof g->names[0], fmt, ap);
    va_end(ap);
    cdl_st_tensor *t = &g->st[g->nt++];
    t->name = g->names[g->nt - 1];
    t->dtype = dt;
    t->rank = rank;
    memset(t->dims, 0, sizeof t->dims);
    memcpy(t->dims, dims, sizeof(int64_t) * (size_t)rank);
    t->data = data;
}

/* An input's tensor name: its own name, or "input.NAME" for the names the file uses
 * for other things (loss, rows, grad, param). */
static const char *gd_input_prefix(const char *name) {
    static const char *const used[] = {"loss", "rows", "grad", "param"};
    for (size_t k = 0; k < sizeof used / sizeof used[0]; k++)
        if (!strcmp(name, used[k])) return "input.";
    return "";
}

/* The tensor table: param.<name> for every parameter and state buffer, then per batch
 * loss.<b>, rows.<b>, <input>.<b> and grad.<b>.<param>. */
static void gd_tensors(gd_run *g) {
    const cdl_model *m = g->m;
    size_t rs = (size_t)m->real_size;
    cdl_dtype real = m->real_size == 8 ? CDL_F64 : CDL_F32;
    for (int t = 0; t < m->n_params; t++) {
        const cdl_tensor *p = &m->params[t];
        gd_add(g, real, p->rank, p->dims, g->params + p->offset * rs, "param.%s", p->name);
    }
    static const int64_t one[1] = {1};
    for (int64_t b = 0; b < g->done; b++) {
        gd_add(g, CDL_F64, 1, one, &g->losses[b], "loss.%lld", (long long)b);
        gd_add(g, CDL_I32, 1, one, &g->rows[b], "rows.%lld", (long long)b);
        const char *in = g->inputs + (size_t)b * g->in_bytes;
        for (int i = 0; i < m->n_inputs; i++) {
            const cdl_tensor *t = &m->inputs[i];
            int64_t dims[CDL_MAXDIM];
            memcpy(dims, t->dims, sizeof dims);
            if (t->flags & CDL_T_BATCHED) dims[0] = g->rows[b];
            gd_add(g, t->dtype == CDL_I32 ? CDL_I32 : real, t->rank, dims, in, "%s%s.%lld", gd_input_prefix(t->name),
                   t->name, (long long)b);
            in += gd_input_bytes(m, i, m->batch);
        }
        const char *gr = g->grads + (size_t)b * m->train_count * rs;
        for (int t = 0; t < m->n_params; t++) {
            const cdl_tensor *p = &m->params[t];
            if (!(p->flags & CDL_T_STATE))
                gd_add(g, real, p->rank, p->dims, gr + p->offset * rs, "grad.%lld.%s", (long long)b, p->name);
        }
    }
}

/* The metadata that, with the tensors, reproduces the computation; then the file. */
static int gd_write(gd_run *g) {
    const cdl_model *m = g->m;
    const tr_opts *o = g->o;
    char batch[32], batches[32], step[32], seed[32], fp[32], norm[80], feeds[TR_STR + 64] = "";
    snprintf(batch, sizeof batch, "%d", tr_batch(m, o));
    snprintf(batches, sizeof batches, "%lld", (long long)g->done);
    snprintf(step, sizeof step, "%llu", (unsigned long long)g->step0);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)g->net->seed);
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)m->fingerprint);
    if (o->tf.normalize) snprintf(norm, sizeof norm, "(x - %.17g) / %.17g", o->tf.mean, o->tf.std);
    else snprintf(norm, sizeof norm, "none");
    for (int i = 0; i < m->n_inputs; i++) {
        size_t k = strlen(feeds);
        snprintf(feeds + k, sizeof feeds - k, "%s%s=%s", i ? "," : "", m->inputs[i].name,
                 g->map.feed[i].col < 0 ? "(none)" : g->d.col[g->map.feed[i].col].name);
    }
    const char *meta[] = {"format", "cdl-grad 1", "model", m->name, "source", m->source ? m->source : "",
                          "fingerprint", fp, "precision", m->real_size == 8 ? "f64" : "f32",
                          "mode", o->eval_mode ? "eval" : "train", "data", o->data, "feeds", feeds, "normalize", norm,
                          "batch", batch, "batches", batches, "step", step, "seed", seed,
                          "rng", "batch b runs at step + b; dropout and noise keyed by (seed, step, stream): docs/trainer.md"};
    gd_tensors(g);
    if (cdl_safetensors_write(o->out, g->nt, g->st, (int)(sizeof meta / sizeof meta[0] / 2), meta) < 0) return -1;
    if (!o->quiet)
        printf("wrote %s: %lld batches (%s mode): parameters, inputs, losses, gradients\n", o->out,
               (long long)g->done, o->eval_mode ? "eval" : "train");
    return 0;
}

/* grad: the loss and gradients of the first --batches training batches, in order (no
 * shuffle, no augmentation; --normalize applied), without any update, in train mode
 * or (--eval) eval mode, in one safetensors file that holds everything needed to redo
 * the computation elsewhere. */
int tr_grad(const cdl_model *m, const tr_opts *o) {
    if (!o->out[0]) {
        fprintf(stderr, "grad: -o FILE.safetensors is required\n");
        return 2;
    }
    if (!m->grad || !m->has_loss || (o->eval_mode && !m->eval_grad)) {
        fprintf(stderr, "grad: model %s has no loss%s\n", m->name, m->has_loss ? " gradient in eval mode" : "");
        return 1;
    }
    if (tr_check_batch(m, o) < 0) {
        fprintf(stderr, "grad: %s\n", cdl_last_error());
        return 1;
    }
    gd_run g;
    memset(&g, 0, sizeof g);
    g.m = m;
    g.o = o;
    g.nbat = o->batches;
    int rc = 0;
    if (gd_setup(&g) < 0 || gd_batches(&g) < 0 || gd_write(&g) < 0) {
        fprintf(stderr, "grad: %s\n", cdl_last_error());
        rc = 1;
    }
    gd_free(&g);
    return rc;
}
