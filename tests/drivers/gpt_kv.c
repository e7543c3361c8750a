/* gpt_kv.c -- driver for tests/sh/gpt_kv.sh: models/gpt.cdl's entry `next` (a key/value
 * cache carried from call to call) against `next_full` (the whole prefix recomputed
 * through the training graph), greedy, token for token.
 *
 *   gpt_kv ROWS SCALE      (linked with the generated model, -DMODEL=gpt_model)
 *
 * The parameters are the model's initialisation (seed 1) with the token embedding wte
 * multiplied by SCALE (the tied output projection then spreads the logits, so that the
 * greedy choice is not a near tie).  ROWS rows run side by side (nb = ROWS), row r
 * starting from token id r + 1 at position 0; both entries are called for every
 * position 0 .. T - 1, each fed its own previous greedy token and carrying its own state
 * (output S is the next call's input S0, as `generate` does).  Prints one JSON line:
 * {"tokens", "rows", "max_abs_diff" (of the logits), "max_abs_logit", "mismatch" (tokens
 * where the two greedy choices differ)}.  Exit 0 when it ran, 1 on a setup error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdl.h"

extern const cdl_model MODEL;

#define MAXIO 8

typedef struct run {
    const cdl_entry *e;
    void *in[MAXIO], *out[MAXIO];
    int from[MAXIO];             /* input i is fed from output from[i] (-1: not state) */
    int ids, pos, logits;
} run;

static size_t elem(const cdl_tensor *t) { return t->dtype == CDL_I32 ? 4 : (size_t)MODEL.real_size; }

static int setup(run *r, const char *name, int rows) {
    r->e = NULL;
    for (int i = 0; i < MODEL.n_entries; i++)
        if (!strcmp(MODEL.entries[i].name, name)) r->e = &MODEL.entries[i];
    if (!r->e || r->e->n_in > MAXIO || r->e->n_out > MAXIO) {
        fprintf(stderr, "gpt_kv: no usable entry %s\n", name);
        return -1;
    }
    r->ids = r->pos = r->logits = -1;
    for (int i = 0; i < r->e->n_in; i++) {
        const cdl_tensor *t = &r->e->in[i];
        r->in[i] = calloc((size_t)cdl_tensor_numel(t, rows), elem(t));
        r->from[i] = -1;
        if (!strcmp(t->name, "ids")) r->ids = i;
        else if (!strcmp(t->name, "pos")) r->pos = i;
        else
            for (int j = 0; j < r->e->n_out; j++)    /* S0 takes S */
                if (strlen(r->e->out[j].name) + 1 == strlen(t->name) && !strncmp(r->e->out[j].name, t->name, strlen(t->name) - 1))
                    r->from[i] = j;
        if (!r->in[i]) return -1;
    }
    for (int j = 0; j < r->e->n_out; j++) {
        r->out[j] = calloc((size_t)cdl_tensor_numel(&r->e->out[j], rows), elem(&r->e->out[j]));
        if (!r->out[j]) return -1;
        if (!strcmp(r->e->out[j].name, "logits")) r->logits = j;
    }
    for (int i = 0; i < r->e->n_in; i++)
        if (i != r->ids && i != r->pos && r->from[i] < 0) {
            fprintf(stderr, "gpt_kv: entry %s: input %s has no output to carry it\n", name, r->e->in[i].name);
            return -1;
        }
    return r->ids >= 0 && r->pos >= 0 && r->logits >= 0 ? 0 : -1;
}

static double get(const void *p, int64_t i) {
    return MODEL.real_size == 8 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

/* One call at position pos with tokens tok[rows]; the greedy next tokens into tok. */
static void step(cdl_net *net, run *r, int rows, int pos, int32_t *tok, int64_t V) {
    for (int b = 0; b < rows; b++) {
        ((int32_t *)r->in[r->ids])[b] = tok[b];
        ((int32_t *)r->in[r->pos])[b] = pos;
    }
    r->e->run(net, rows, (const void *const *)r->in, (void *const *)r->out);
    for (int b = 0; b < rows; b++) {
        int64_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (get(r->out[r->logits], b * V + v) > get(r->out[r->logits], b * V + best)) best = v;
        tok[b] = (int32_t)best;
    }
    for (int i = 0; i < r->e->n_in; i++)            /* the state outputs become the next inputs */
        if (r->from[i] >= 0) {
            void *t = r->in[i];
            r->in[i] = r->out[r->from[i]];
            r->out[r->from[i]] = t;
        }
}

int main(int argc, char **argv) {
    int rows = argc > 1 ? atoi(argv[1]) : 2;
    double scale = argc > 2 ? atof(argv[2]) : 1.0;
    if (rows < 1 || rows > MODEL.batch) return fprintf(stderr, "gpt_kv: rows must be 1..%d\n", MODEL.batch), 1;
    cdl_net *net = cdl_net_new(&MODEL);
    if (!net) return fprintf(stderr, "gpt_kv: %s\n", cdl_last_error()), 1;
    MODEL.init(net, 1);
    int w = cdl_model_find_param(&MODEL, "wte");
    if (w < 0) return fprintf(stderr, "gpt_kv: no parameter wte\n"), 1;
    for (int64_t i = 0; i < cdl_tensor_numel(&MODEL.params[w], 1); i++) {
        size_t k = MODEL.params[w].offset + (size_t)i;
        if (MODEL.real_size == 8) ((double *)net->param)[k] *= scale;
        else ((float *)net->param)[k] *= (float)scale;
    }
    run kv, full;
    if (setup(&kv, "next", rows) < 0 || setup(&full, "next_full", rows) < 0) return 1;
    int64_t V = kv.e->out[kv.logits].dims[1], T = MODEL.inputs[0].dims[1];   /* x: i32[B, T] */
    int32_t tk[64], tf[64];
    if (rows > 64) return fprintf(stderr, "gpt_kv: at most 64 rows\n"), 1;
    for (int b = 0; b < rows; b++) tk[b] = tf[b] = (int32_t)((b + 1) % V);
    double diff = 0, big = 0;
    int mismatch = 0;
    for (int p = 0; p < T; p++) {
        step(net, &kv, rows, p, tk, V);
        step(net, &full, rows, p, tf, V);
        /* after the swap the logits are in out[logits] still (logits are not state) */
        for (int64_t i = 0; i < rows * V; i++) {
            double a = get(kv.out[kv.logits], i), c = get(full.out[full.logits], i);
            if (fabs(a - c) > diff || a != a || c != c) diff = a == a && c == c ? fabs(a - c) : INFINITY;
            if (fabs(c) > big) big = fabs(c);
        }
        for (int b = 0; b < rows; b++) mismatch += tk[b] != tf[b];
        if (cdl_last_error()[0]) return fprintf(stderr, "gpt_kv: %s\n", cdl_last_error()), 1;
    }
    printf("{\"tokens\": %lld, \"rows\": %d, \"max_abs_diff\": %.3g, \"max_abs_logit\": %.4g, \"mismatch\": %d}\n",
           (long long)T, rows, diff, big, mismatch);
    for (int i = 0; i < MAXIO; i++) {
        if (i < kv.e->n_in) free(kv.in[i]);
        if (i < kv.e->n_out) free(kv.out[i]);
        if (i < full.e->n_in) free(full.in[i]);
        if (i < full.e->n_out) free(full.out[i]);
    }
    cdl_net_free(net);
    return 0;
}
