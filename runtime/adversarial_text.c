/* adversarial_text.c -- HotFlip (Ebrahimi et al. 2018): character substitutions
 * against a character-level classifier, ranked by the gradient with respect to the
 * embedding output and confirmed by forward passes.
 *
 * The model marks its embedding output e = perturb(embedding(x, V, D)) [B, T, D]; the
 * compiled input_grad entry returns d loss / d e in the perturb input's gradient.  For
 * a word x, position t and character c, the first-order change of the loss when x_t
 * becomes c is
 *
 *     (W[c] - W[x_t]) . g_t        W: the embedding table [V, D], g_t = d loss / d e_t
 *
 * One flip of a word: every real position (id != 0: not padding) not flipped yet,
 * every character of the vocabulary (ids 2 .. n-1: neither padding nor "unknown")
 * other than x_t; the `cand` best by that score are run forward (many words' candidates
 * together, a compiled batch at a time) and the one of highest loss (cross-entropy of
 * output 0 against the label) is taken if it raises the loss.  `flips` flips are
 * greedy: each starts from the word the previous one left, with a fresh gradient.
 * Only words classified correctly are attacked, and a word stops being attacked as
 * soon as its prediction is wrong (or no candidate raises its loss): the attack
 * changes as few characters as it can.  Everything is a pure function of the
 * parameters and the batch (ties: the earlier position, then the lower id).
 */
#include "adversarial_text.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- specs */

int cdl_hotflip_parse(cdl_attack *a, const char *spec) {
    memset(a, 0, sizeof *a);
    adv_spec sp;
    const char *buf = adv_spec_open(&sp, spec);
    if (!buf) return -1;
    if (strcmp(buf, "hotflip")) return cdl_fail("attack '%s': not a hotflip spec", spec);
    a->kind = CDL_ATTACK_HOTFLIP;
    a->steps = 1;
    a->cand = 10;
    a->ratio = 0.5;
    for (char *kv = NULL, *val = NULL; adv_spec_next(&sp, &kv, &val);) {
        double x;
        int ratio = !strcmp(kv, "ratio");
        if (cdl_parse_f64(val, &x) < 0 || x < 0 || (ratio ? x > 1 : x != floor(x) || x > 100000))
            return cdl_fail("attack '%s': %s=%s is not %s", spec, kv, val,
                            ratio ? "in [0, 1]" : "an integer in [0, 100000]");
        if (!strcmp(kv, "flips")) a->steps = (int)x;
        else if (!strcmp(kv, "cand")) a->cand = (int)x;
        else if (!strcmp(kv, "show")) a->show = (int)x;
        else if (ratio) a->ratio = x;
        else return cdl_fail("attack '%s': unknown key '%s' (flips, cand, ratio, show)", spec, kv);
    }
    if (sp.failed) return -1;
    if (a->steps < 1 || a->cand < 1)
        return cdl_fail("attack '%s': flips and cand must be at least 1", spec);
    return 0;
}

void cdl_hotflip_str(const cdl_attack *a, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "hotflip:flips=%d,cand=%d,ratio=%g", a->steps, a->cand, a->ratio);
    if (a->show && k < n) snprintf(buf + k, n - k, ",show=%d", a->show);
}

/* ---------------------------------------------------------------- state */

struct cdl_hotflip {
    const cdl_model *m;
    int flips, cand, show;
    int xi, yi, pi;               /* ids, labels, the perturb input */
    size_t woff;                  /* the embedding table: params + woff, [nw, D] */
    int64_t T, D, C;              /* positions, embedding width, classes (output 0) */
    int32_t nv;                   /* vocabulary ids 0..nv-1; candidates 2..nv-1 */
    void **save;                  /* per batched input: its rows as the caller gave them */
    int64_t *rowb;                /* per input: bytes of one row (0: not batched) */
    int32_t *cur;                 /* [batch, T] the words as flipped so far */
    unsigned char *used, *live;   /* [batch, T] position flipped; [batch] still attacked */
    double *loss;                 /* [batch] current loss of each word */
    int *pred0, *pred, *nflip;    /* [batch] clean / current prediction, flips made */
    int32_t *cpos, *cchar;        /* [batch, cand] candidates: position, character */
    double *cscore, *closs;       /* [batch, cand] first-order gain; confirmed loss */
    int *cpred, *ncand;           /* [batch, cand] prediction; [batch] candidates */
    int *src, *slot;              /* [batch] a forward pass's rows: word, candidate */
    cdl_vocab voc;
    const char *classes;
    FILE *out;
    int64_t shown, attacked, changed, flipped;
};

void cdl_hotflip_free(cdl_hotflip *h) {
    if (!h) return;
    if (h->save)
        for (int i = 0; i < h->m->n_inputs; i++) cdl_free(h->save[i]);
    cdl_free(h->save);
    cdl_free(h->rowb);
    void *bufs[] = {h->cur, h->used, h->live, h->loss, h->pred0, h->pred, h->nflip, h->cpos, h->cchar,
                    h->cscore, h->closs, h->cpred, h->ncand, h->src, h->slot};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) cdl_free(bufs[i]);
    cdl_vocab_free(&h->voc);
    cdl_free(h);
}

void cdl_hotflip_counts(const cdl_hotflip *h, int64_t *attacked, int64_t *changed, int64_t *flips) {
    *attacked = h->attacked;
    *changed = h->changed;
    *flips = h->flipped;
}

/* The perturb input ([B, T, D], T the ids' length) and the table: the one trainable
 * parameter [V, D] with V >= the vocabulary.  -1 and a message. */
static int hf_find(cdl_hotflip *h, const cdl_model *m) {
    const char *nm = m->name ? m->name : "?";
    h->pi = -1;
    for (int i = 0; i < m->n_inputs; i++)
        if (m->inputs[i].flags & CDL_T_PERTURB) {
            if (h->pi >= 0)
                return cdl_fail("hotflip: model %s has two perturb() inputs (%s, %s): which one is the embedding?",
                                nm, m->inputs[h->pi].name, m->inputs[i].name);
            h->pi = i;
        }
    if (h->pi < 0)
        return cdl_fail("hotflip: model %s has no perturb() input: mark the embedding output, "
                        "e = perturb(embedding(x, V, D))", nm);
    const cdl_tensor *p = &m->inputs[h->pi], *x = &m->inputs[h->xi];
    if (p->rank != 3 || x->rank != 2 || p->dims[1] != x->dims[1])
        return cdl_fail("hotflip: model %s: perturb input %s is not [B, T, D] over the ids %s [B, T]", nm,
                        p->name, x->name);
    h->T = x->dims[1];
    h->D = p->dims[2];
    int w = -1;
    for (int j = 0; j < m->n_params; j++) {
        const cdl_tensor *t = &m->params[j];
        if ((t->flags & CDL_T_STATE) || t->rank != 2 || t->dims[1] != h->D || t->dims[0] < h->nv) continue;
        if (w >= 0)
            return cdl_fail("hotflip: model %s: two parameters could be the embedding table of %s (%s, %s)", nm,
                            p->name, m->params[w].name, t->name);
        w = j;
    }
    if (w < 0)
        return cdl_fail("hotflip: model %s: no embedding table [V >= %d, %lld] for perturb input %s", nm,
                        (int)h->nv, (long long)h->D, p->name);
    h->woff = m->params[w].offset;
    return 0;
}

/* The checks and the scratch of cdl_hotflip_new; -1 and a message. */
static int hf_setup(cdl_hotflip *h, const cdl_model *m, const cdl_hotflip_io *io) {
    const char *nm = m->name ? m->name : "?";
    if (!m->input_grad) return cdl_fail("hotflip: model %s has no loss to attack (no input_grad)", nm);
    if (io->ids < 0 || io->ids >= m->n_inputs || m->inputs[io->ids].dtype != CDL_I32)
        return cdl_fail("hotflip: model %s has no i32 ids input (x: i32[B, T]) fed from text", nm);
    if (io->labels < 0 || io->labels >= m->n_inputs || m->inputs[io->labels].dtype != CDL_I32)
        return cdl_fail("hotflip: model %s has no labels input (y: i32[B])", nm);
    const cdl_tensor *o = m->n_outputs > 0 ? &m->outputs[0] : NULL;
    if (!o || o->rank != 2 || !(o->flags & CDL_T_BATCHED))
        return cdl_fail("hotflip: model %s: output 0 is not the class scores [B, C]", nm);
    if (!io->vocab || cdl_vocab_parse(&h->voc, io->vocab, "hotflip vocabulary") < 0 || h->voc.kind != CDL_VOCAB_CHARS)
        return cdl_fail("hotflip: model %s: the data has no character vocabulary (train on tsv:FILE)", nm);
    h->xi = io->ids;
    h->yi = io->labels;
    h->C = o->dims[1];
    h->nv = h->voc.n;
    if (h->nv < 3) return cdl_fail("hotflip: a vocabulary of %d characters has nothing to flip to", h->nv - 2);
    if (hf_find(h, m) < 0) return -1;
    size_t B = (size_t)m->batch, K = (size_t)h->cand, T = (size_t)h->T;
    int n = m->n_inputs;
    if (!(h->save = cdl_alloc(sizeof(void *) * (size_t)n)) || !(h->rowb = cdl_alloc(sizeof(int64_t) * (size_t)n)))
        return cdl_fail("hotflip: out of memory");
    for (int i = 0; i < n; i++) {
        const cdl_tensor *t = &m->inputs[i];
        if (!(t->flags & CDL_T_BATCHED)) continue;
        h->rowb[i] = cdl_tensor_numel(t, 1) * (t->dtype == CDL_I32 ? 4 : m->real_size);
        if (!(h->save[i] = cdl_alloc((size_t)h->rowb[i] * B))) return cdl_fail("hotflip: out of memory");
    }
    if (!(h->cur = cdl_alloc(4 * B * T)) || !(h->used = cdl_alloc(B * T)) || !(h->live = cdl_alloc(B)) ||
        !(h->loss = cdl_alloc(sizeof(double) * B)) || !(h->pred0 = cdl_alloc(sizeof(int) * B)) ||
        !(h->pred = cdl_alloc(sizeof(int) * B)) || !(h->nflip = cdl_alloc(sizeof(int) * B)) ||
        !(h->cpos = cdl_alloc(4 * B * K)) || !(h->cchar = cdl_alloc(4 * B * K)) ||
        !(h->cscore = cdl_alloc(sizeof(double) * B * K)) || !(h->closs = cdl_alloc(sizeof(double) * B * K)) ||
        !(h->cpred = cdl_alloc(sizeof(int) * B * K)) || !(h->ncand = cdl_alloc(sizeof(int) * B)) ||
        !(h->src = cdl_alloc(sizeof(int) * B)) || !(h->slot = cdl_alloc(sizeof(int) * B)))
        return cdl_fail("hotflip: out of memory");
    return 0;
}

cdl_hotflip *cdl_hotflip_new(const cdl_model *m, const cdl_attack *a, const cdl_hotflip_io *io) {
    if (!m || !a || !io || a->kind != CDL_ATTACK_HOTFLIP) {
        cdl_fail("cdl_hotflip_new: NULL model, attack or io, or not a hotflip attack");
        return NULL;
    }
    cdl_hotflip *h = cdl_alloc(sizeof *h);
    if (!h) {
        cdl_fail("hotflip: out of memory");
        return NULL;
    }
    h->m = m;
    h->flips = a->steps;
    h->cand = a->cand;
    h->show = a->show;
    h->classes = io->classes;
    h->out = io->show;
    if (hf_setup(h, m, io) < 0) {
        cdl_hotflip_free(h);
        return NULL;
    }
    return h;
}

/* ---------------------------------------------------------------- the attack */

/* Element k of row r of logits p (c classes, real size rs). */
static double hf_at(const void *p, int rs, int64_t r, int64_t c, int64_t k) {
    return rs == 8 ? ((const double *)p)[r * c + k] : (double)((const float *)p)[r * c + k];
}

/* Cross-entropy of logits row r against label y, and its argmax (the first maximum). */
static double hf_ce(const void *p, int rs, int64_t r, int64_t c, int32_t y, int *arg) {
    double mx = -INFINITY, s = 0;
    int best = 0;
    *arg = 0;
    if (c < 1) return 0;   /* no classes (the model table's output has at least one) */
    for (int64_t k = 0; k < c; k++) {
        double x = hf_at(p, rs, r, c, k);
        if (x > mx) mx = x, best = (int)k;
    }
    for (int64_t k = 0; k < c; k++) s += exp(hf_at(p, rs, r, c, k) - mx);
    *arg = best;
    return mx + log(s) - hf_at(p, rs, r, c, y);
}

/* Row dst of every batched input from saved row src, the ids from h->cur row src. */
static void hf_put_row(cdl_hotflip *h, cdl_net *net, int dst, int src) {
    for (int i = 0; i < h->m->n_inputs; i++) {
        if (!h->rowb[i]) continue;
        memcpy((char *)net->in[i] + (size_t)dst * (size_t)h->rowb[i],
               (const char *)h->save[i] + (size_t)src * (size_t)h->rowb[i], (size_t)h->rowb[i]);
    }
    memcpy((int32_t *)net->in[h->xi] + (size_t)dst * (size_t)h->T, h->cur + (size_t)src * (size_t)h->T,
           4 * (size_t)h->T);
}

/* The dot product of table row c with the gradient at (row b, position t). */
static double hf_dot(const cdl_hotflip *h, const void *W, const void *g, int64_t c, int64_t gt) {
    double s = 0;
    if (h->m->real_size == 8) {
        const double *w = (const double *)W + c * h->D, *q = (const double *)g + gt * h->D;
        for (int64_t k = 0; k < h->D; k++) s += w[k] * q[k];
    } else {
        const float *w = (const float *)W + c * h->D, *q = (const float *)g + gt * h->D;
        for (int64_t k = 0; k < h->D; k++) s += (double)w[k] * (double)q[k];
    }
    return s;
}

/* The cand best (position, character) flips of live row b by first-order gain, into
 * its candidate slots, best first (ties: the earlier position, then the lower id). */
static void hf_rank(cdl_hotflip *h, const cdl_net *net, int b) {
    const void *W = (const char *)net->param + h->woff * (size_t)h->m->real_size;
    const void *g = net->in_grad[h->pi];
    int K = h->cand, n = 0;
    int32_t *pos = h->cpos + (size_t)b * (size_t)K, *chr = h->cchar + (size_t)b * (size_t)K;
    double *sc = h->cscore + (size_t)b * (size_t)K;
    for (int64_t t = 0; t < h->T; t++) {
        int32_t id = h->cur[b * h->T + t];
        if (id == 0 || h->used[b * h->T + t]) continue;          /* padding; flipped already */
        int64_t gt = b * h->T + t;
        double base = id < h->nv ? hf_dot(h, W, g, id, gt) : 0;
        for (int32_t c = 2; c < h->nv; c++) {
            if (c == id) continue;
            double s = hf_dot(h, W, g, c, gt) - base;
            if (n == K && !(s > sc[K - 1])) continue;
            int j = n < K ? n++ : K - 1;                          /* insert, keeping order */
            while (j > 0 && s > sc[j - 1]) {
                sc[j] = sc[j - 1], pos[j] = pos[j - 1], chr[j] = chr[j - 1];
                j--;
            }
            sc[j] = s, pos[j] = (int32_t)t, chr[j] = c;
        }
    }
    h->ncand[b] = n;
}

/* Forward r candidate rows (row i: candidate slot[i] of word src[i]): closs, cpred. */
static void hf_run(cdl_hotflip *h, cdl_net *net, int r) {
    int K = h->cand;
    h->m->forward(net, r);
    for (int i = 0; i < r; i++) {
        int b = h->src[i], k = b * K + h->slot[i];
        int32_t y = ((const int32_t *)h->save[h->yi])[b];
        h->closs[k] = hf_ce(net->out[0], h->m->real_size, i, h->C, y, &h->cpred[k]);
    }
}

/* Confirm the candidates of the live rows by forward passes, `rows` candidates at a
 * time: only the attacked rows are scratch (in training, the rows after them are the
 * batch's clean examples and must survive). */
static void hf_confirm(cdl_hotflip *h, cdl_net *net, int rows) {
    int K = h->cand, r = 0;
    for (int b = 0; b < rows; b++) {
        if (!h->live[b]) continue;
        for (int j = 0; j < h->ncand[b]; j++) {
            hf_put_row(h, net, r, b);
            ((int32_t *)net->in[h->xi])[(int64_t)r * h->T + h->cpos[b * K + j]] = h->cchar[b * K + j];
            h->src[r] = b, h->slot[r] = j;
            if (++r == rows) {
                hf_run(h, net, r);
                r = 0;
            }
        }
    }
    if (r) hf_run(h, net, r);
}

/* Take each live row's best confirmed candidate if it raises the loss; a row whose
 * prediction is now wrong, or that nothing helps, stops. */
static void hf_apply(cdl_hotflip *h, int rows) {
    int K = h->cand;
    for (int b = 0; b < rows; b++) {
        if (!h->live[b]) continue;
        int best = -1;
        for (int j = 0; j < h->ncand[b]; j++)
            if (best < 0 || h->closs[b * K + j] > h->closs[b * K + best]) best = j;
        if (best < 0 || !(h->closs[b * K + best] > h->loss[b])) {
            h->live[b] = 0;
            continue;
        }
        int64_t t = h->cpos[b * K + best];
        h->cur[b * h->T + t] = h->cchar[b * K + best];
        h->used[b * h->T + t] = 1;
        h->nflip[b]++;
        h->flipped++;
        h->loss[b] = h->closs[b * K + best];
        h->pred[b] = h->cpred[b * K + best];
        if (h->pred[b] != ((const int32_t *)h->save[h->yi])[b]) h->live[b] = 0;
    }
}

/* Row b's word (ids row of w) as UTF-8 into buf (n bytes). */
static void hf_word(const cdl_hotflip *h, const int32_t *w, char *buf, size_t n) {
    size_t k = 0;
    for (int64_t t = 0; t < h->T && w[t] != 0 && k + 5 < n; t++) {
        int len = w[t] == 1 ? 0 : cdl_vocab_put(&h->voc, w[t], buf + k);
        if (len <= 0) buf[k] = '?', len = 1;
        k += (size_t)len;
    }
    buf[k] = 0;
}

/* Class c's name (line c of the class names) into buf, or its number. */
static void hf_class(const cdl_hotflip *h, int c, char *buf, size_t n) {
    const char *s = h->classes;
    for (int i = 0; s && i < c; i++) s = (s = strchr(s, '\n')) ? s + 1 : NULL;
    if (!s || !*s) {
        snprintf(buf, n, "%d", c);
        return;
    }
    size_t len = strcspn(s, "\n");
    snprintf(buf, n, "%.*s", (int)(len < n ? len : n - 1), s);
}

/* Counts, and the words whose prediction changed (up to `show` of them) to h->out. */
static void hf_report(cdl_hotflip *h, const int32_t *x0, int rows) {
    for (int b = 0; b < rows; b++) {
        if (h->pred[b] == h->pred0[b]) continue;
        h->changed++;
        if (!h->out || h->shown >= h->show) continue;
        h->shown++;
        char w0[256], w1[256], c0[64], c1[64];
        hf_word(h, x0 + (int64_t)b * h->T, w0, sizeof w0);
        hf_word(h, h->cur + (int64_t)b * h->T, w1, sizeof w1);
        hf_class(h, h->pred0[b], c0, sizeof c0);
        hf_class(h, h->pred[b], c1, sizeof c1);
        fprintf(h->out, "hotflip: %s (%s) -> %s (%s)  [%d flip%s]\n", w0, c0, w1, c1, h->nflip[b],
                h->nflip[b] == 1 ? "" : "s");
    }
}

int cdl_hotflip_perturb(cdl_hotflip *h, cdl_net *net, int rows) {
    const cdl_model *m = h->m;
    if (!net || net->model != m) return cdl_fail("hotflip: the net is not an instance of model %s", m->name);
    if (rows <= 0) return 0;
    if (rows > m->batch) return cdl_fail("hotflip: %d rows > model %s's compiled batch %d", rows, m->name, m->batch);
    if (!net->in_grad || !net->in_grad[h->pi])
        return cdl_fail("hotflip: model %s: input %s has no gradient buffer", m->name, m->inputs[h->pi].name);
    for (int i = 0; i < m->n_inputs; i++)
        if (h->rowb[i]) memcpy(h->save[i], net->in[i], (size_t)h->rowb[i] * (size_t)rows);
    const int32_t *x0 = h->save[h->xi], *y = h->save[h->yi];
    memcpy(h->cur, x0, 4 * (size_t)h->T * (size_t)rows);
    memset(h->used, 0, (size_t)h->T * (size_t)rows);
    m->forward(net, rows);
    for (int b = 0; b < rows; b++) {
        if (y[b] < 0 || y[b] >= h->C)
            return cdl_fail("hotflip: label %d of row %d is not one of the %lld classes", (int)y[b], b,
                            (long long)h->C);
        h->loss[b] = hf_ce(net->out[0], m->real_size, b, h->C, y[b], &h->pred0[b]);
        h->pred[b] = h->pred0[b];
        h->nflip[b] = 0;
        h->live[b] = h->pred0[b] == y[b];
        h->attacked += h->live[b];
    }
    for (int k = 0; k < h->flips; k++) {
        int any = 0;
        for (int b = 0; b < rows; b++) any |= h->live[b];
        if (!any) break;
        m->input_grad(net, rows);                 /* net->in: the words as flipped so far */
        for (int b = 0; b < rows; b++)
            if (h->live[b]) hf_rank(h, net, b);
        hf_confirm(h, net, rows);
        hf_apply(h, rows);
        for (int b = 0; b < rows; b++) hf_put_row(h, net, b, b);
    }
    hf_report(h, x0, rows);
    return 0;
}
