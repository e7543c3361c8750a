/* trainer_setup.c -- what the trainer's commands share: opening the dataset named by
 * --data, checking that it fits the model's inputs, making the net (initialised or
 * loaded), the evaluation loader and small output helpers.
 */
#include "trainer_int.h"

#include <math.h>
#include <string.h>
#include <sys/stat.h>

int tr_batch(const cdl_model *m, const tr_opts *o) {
    return o->batch > 0 ? (int)o->batch : m->batch;
}

int tr_check_batch(const cdl_model *m, const tr_opts *o) {
    if (o->batch > m->batch)
        return cdl_fail("--batch %lld is larger than model %s's compiled batch %d (recompile with a "
                        "larger B)", (long long)o->batch, m->name, m->batch);
    return 0;
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

cdl_loader *tr_plain_loader(const cdl_model *m, const tr_opts *o, const cdl_dataset *d) {
    cdl_loader_cfg lc;
    memset(&lc, 0, sizeof lc);
    lc.batch = tr_batch(m, o);
    lc.workers = o->workers;
    lc.seed = o->seed;
    lc.tf.normalize = o->tf.normalize;           /* no augmentation */
    lc.tf.mean = o->tf.mean;
    lc.tf.std = o->tf.std;
    lc.real_size = m->real_size;
    return cdl_loader_new(d, &lc);
}

void tr_json_num(FILE *f, const char *key, double v, int comma) {
    if (isfinite(v)) fprintf(f, "\"%s\":%.17g%s", key, v, comma ? "," : "");
    else fprintf(f, "\"%s\":null%s", key, comma ? "," : "");
}
