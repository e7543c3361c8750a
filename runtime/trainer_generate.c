/* trainer_generate.c -- the trainer's generate command: text from a model's next-token
 * entry, one token per call with its state carried from call to call (the convention
 * is in docs/trainer.md, "Text"):
 *
 *   ids     the entry's first i32 input of one value per row: the token just read
 *   pos     an optional i32 input of one value per row called pos: its position
 *   logits  the output called logits, else the first: the next token's scores
 *   state   every other input S, fed the previous call's output S, or the output
 *           named S without a trailing 0 (h0 <- h); zeros at the first call
 *
 * The state buffers are swapped with the outputs that feed them after each call, so
 * carrying costs nothing.  Tokens are drawn from softmax(logits / T) cut to the top K
 * and then to the top-P mass, with one Philox draw keyed by (seed, token index): the
 * same seed gives the same text.  Only ids of the checkpoint's vocabulary are drawn.
 */
#include "trainer_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GEN_MAX_IO 16
#define GEN_STREAM 0x6E7E000000000000ull       /* the Philox stream of the draws */

/* How the entry's inputs and outputs are used. */
typedef struct gen_entry {
    const cdl_entry *e;
    int ids, pos, logits;        /* input of the ids, of the positions (-1: none); logits output */
    int from[GEN_MAX_IO];        /* state input i: the output feeding it; -1 for ids and pos */
    int64_t V;                   /* logits per row */
    int64_t ctx;                 /* with pos: the longest text fed (0: no limit) */
} gen_entry;

static size_t gen_elem(const cdl_model *m, const cdl_tensor *t) {
    return t->dtype == CDL_I32 ? 4 : (size_t)m->real_size;
}

static int gen_same_shape(const cdl_tensor *a, const cdl_tensor *b) {
    if (a->dtype != b->dtype || a->rank != b->rank) return 0;
    for (int d = 0; d < a->rank; d++)
        if (a->dims[d] != b->dims[d]) return 0;
    return 1;
}

static int gen_find_out(const cdl_entry *e, const char *name, size_t len) {
    for (int j = 0; j < e->n_out; j++)
        if (strlen(e->out[j].name) == len && !strncmp(e->out[j].name, name, len)) return j;
    return -1;
}

/* The output carried into state input t: S, else S without a trailing 0; -1. */
static int gen_state_source(const cdl_entry *e, const cdl_tensor *t) {
    size_t n = strlen(t->name);
    int j = gen_find_out(e, t->name, n);
    if (j < 0 && n > 1 && t->name[n - 1] == '0') j = gen_find_out(e, t->name, n - 1);
    return j;
}

/* Resolve the convention over entry `name` of m.  -1 and a message. */
static int gen_resolve(const cdl_model *m, const char *name, gen_entry *g) {
    memset(g, 0, sizeof *g);
    g->ids = g->pos = g->logits = -1;
    for (int i = 0; i < m->n_entries && !g->e; i++)
        if (!strcmp(m->entries[i].name, name)) g->e = &m->entries[i];
    if (!g->e)
        return cdl_fail("model %s has no entry '%s' (a next-token entry: ids in, logits and state out; "
                        "--entry NAME)", m->name, name);
    const cdl_entry *e = g->e;
    if (e->n_in > GEN_MAX_IO || e->n_out > GEN_MAX_IO || e->n_out < 1)
        return cdl_fail("entry %s: %d inputs and %d outputs (at most %d each, one output at least)", e->name,
                        e->n_in, e->n_out, GEN_MAX_IO);
    for (int i = 0; i < e->n_in; i++) {
        const cdl_tensor *t = &e->in[i];
        int one = t->dtype == CDL_I32 && cdl_tensor_numel(t, 1) == 1;
        if (one && !strcmp(t->name, "pos") && g->pos < 0) g->pos = i;
        else if (one && g->ids < 0) g->ids = i;
    }
    if (g->ids < 0) return cdl_fail("entry %s has no input of one token id per row (ids: i32[B])", e->name);
    g->logits = gen_find_out(e, "logits", 6) >= 0 ? gen_find_out(e, "logits", 6) : 0;
    const cdl_tensor *lo = &e->out[g->logits];
    if (lo->dtype == CDL_I32 || (g->V = cdl_tensor_numel(lo, 1)) < 1)
        return cdl_fail("entry %s: output %s is not the real-valued logits of the next token", e->name, lo->name);
    for (int i = 0; i < e->n_in; i++) {
        const cdl_tensor *t = &e->in[i];
        g->from[i] = -1;
        if (i == g->ids || i == g->pos) continue;
        int j = gen_state_source(e, t);
        if (j < 0)
            return cdl_fail("entry %s: state input %s has no output %s%s to carry it from one token to the next "
                            "(docs/trainer.md, Text)", e->name, t->name, t->name,
                            t->name[0] && t->name[strlen(t->name) - 1] == '0' ? " or one without the 0" : "");
        if (!gen_same_shape(t, &e->out[j]))
            return cdl_fail("entry %s: state input %s and output %s differ in type or shape", e->name, t->name,
                            e->out[j].name);
        g->from[i] = j;
    }
    int x = cdl_model_find_input(m, "x");
    if (g->pos >= 0 && x >= 0 && m->inputs[x].dtype == CDL_I32) g->ctx = cdl_tensor_numel(&m->inputs[x], 1);
    return 0;
}

/* ---------------------------------------------------------------- sampling */

typedef struct gen_cand { double v; int32_t id; } gen_cand;

static int gen_cand_cmp(const void *a, const void *b) {
    const gen_cand *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The next token from the logits of ids [lo, hi) (row 0 of out): greedy at T = 0 or
 * K = 1, else a draw; -1 and a message on a non-finite logit.  c: hi - lo scratch. */
static int32_t gen_pick(const tr_opts *o, const void *logits, int rs, int32_t lo, int32_t hi, uint64_t index,
                        gen_cand *c) {
    int n = 0;
    for (int32_t id = lo; id < hi; id++) {
        double v = rs == 8 ? ((const double *)logits)[id] : ((const float *)logits)[id];
        if (!isfinite(v)) return cdl_fail("generate: logit %d of token %llu is %g", (int)id,
                                          (unsigned long long)index, v);
        c[n++] = (gen_cand){v, id};
    }
    qsort(c, (size_t)n, sizeof *c, gen_cand_cmp);
    if (o->temperature == 0 || o->top_k == 1) return c[0].id;
    int k = o->top_k > 0 && o->top_k < n ? (int)o->top_k : n;
    double sum = 0, top = c[0].v;
    for (int i = 0; i < k; i++) sum += (c[i].v = exp((c[i].v - top) / o->temperature));
    double cum = 0;
    int keep = 0;
    while (keep < k && (keep == 0 || cum < o->top_p * sum)) cum += c[keep++].v;
    uint32_t r[4];
    cdl_philox((cdl_rng_key){o->seed, index, GEN_STREAM}, 0, r);
    double u = (double)(((uint64_t)r[0] << 21) ^ (r[1] >> 11)) * 0x1p-53 * cum;
    for (int i = 0; i < keep; i++)
        if ((u -= c[i].v) < 0) return c[i].id;
    return c[keep - 1].id;
}

/* ---------------------------------------------------------------- the command */

typedef struct gen_run {
    const cdl_model *m;
    const tr_opts *o;
    gen_entry g;
    cdl_vocab v;
    cdl_net *net;
    void *in[GEN_MAX_IO], *out[GEN_MAX_IO];
    int32_t *prompt;
    int64_t np, fed;             /* prompt tokens; tokens fed so far (the next position) */
    gen_cand *cand;
} gen_run;

/* The prompt as ids of the vocabulary (empty: the newline, else id 0). */
static int gen_prompt(gen_run *s) {
    const char *p = s->o->prompt;
    size_t n = strlen(p);
    if (!(s->prompt = cdl_alloc(sizeof(int32_t) * (n + 1)))) return -1;
    for (size_t i = 0; i < n;) {
        uint32_t c = (unsigned char)p[i];
        size_t len = 1;
        if (s->v.kind == CDL_VOCAB_CHARS) {
            int32_t u = cdl_utf8_next((const unsigned char *)p + i, n - i, &len);
            if (u < 0) return cdl_fail("--prompt: not valid UTF-8 at byte %zu", i);
            c = (uint32_t)u;
        }
        int32_t id = cdl_vocab_id(&s->v, c);
        if (id < 0)
            return cdl_fail("--prompt: character '%.*s' (U+%04X) is not in the vocabulary of %s", (int)len, p + i,
                            (unsigned)c, s->o->load);
        s->prompt[s->np++] = id;
        i += len;
    }
    if (s->np == 0) {
        int32_t nl = cdl_vocab_id(&s->v, '\n');
        s->prompt[s->np++] = nl >= 0 ? nl : 0;
    }
    return 0;
}

/* Net, vocabulary, buffers (state zero), prompt.  -1 and a message. */
static int gen_setup(gen_run *s) {
    const cdl_model *m = s->m;
    const tr_opts *o = s->o;
    char *vs = NULL;
    if (!o->load[0]) return cdl_fail("generate needs --load FILE: a checkpoint of a model trained on text");
    if (gen_resolve(m, o->entry[0] ? o->entry : "next", &s->g) < 0) return -1;
    int rc = cdl_ckpt_read_meta(o->load, "vocab", &vs);
    if (rc == 0) return cdl_fail("%s has no vocabulary: train on text:FILE or bytes:FILE to make one", o->load);
    if (rc < 0 || cdl_vocab_parse(&s->v, vs, o->load) < 0) {
        cdl_free(vs);
        return -1;
    }
    cdl_free(vs);
    if (!(s->net = tr_make_net(m, o))) return -1;
    const cdl_entry *e = s->g.e;
    for (int i = 0; i < e->n_in; i++)
        if (!(s->in[i] = cdl_alloc((size_t)cdl_tensor_numel(&e->in[i], 1) * gen_elem(m, &e->in[i])))) return -1;
    for (int j = 0; j < e->n_out; j++)
        if (!(s->out[j] = cdl_alloc((size_t)cdl_tensor_numel(&e->out[j], 1) * gen_elem(m, &e->out[j])))) return -1;
    if (!(s->cand = cdl_alloc(sizeof *s->cand * (size_t)s->g.V))) return -1;
    if (gen_prompt(s) < 0) return -1;
    if (s->g.ctx > 0 && s->np + o->tokens - 1 > s->g.ctx)
        return cdl_fail("generate: %lld prompt and %lld new tokens do not fit the context of %lld positions "
                        "(entry %s takes pos)", (long long)s->np, (long long)o->tokens, (long long)s->g.ctx,
                        e->name);
    return 0;
}

/* Feed token id at the next position; carry the state.  -1 and a message. */
static int gen_feed(gen_run *s, int32_t id) {
    const cdl_entry *e = s->g.e;
    ((int32_t *)s->in[s->g.ids])[0] = id;
    if (s->g.pos >= 0) ((int32_t *)s->in[s->g.pos])[0] = (int32_t)s->fed;
    e->run(s->net, 1, (const void *const *)s->in, (void *const *)s->out);
    if (cdl_last_error()[0]) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s", cdl_last_error());
        return cdl_fail("entry %s failed at token %lld: %s", e->name, (long long)s->fed, msg);
    }
    for (int i = 0; i < e->n_in; i++)               /* the outputs become the next inputs */
        if (s->g.from[i] >= 0) {
            void *t = s->in[i];
            s->in[i] = s->out[s->g.from[i]];
            s->out[s->g.from[i]] = t;
        }
    s->fed++;
    return 0;
}

static int gen_put(const gen_run *s, int32_t id) {
    char b[8];
    int n = cdl_vocab_put(&s->v, id, b);
    if (n > 0 && fwrite(b, 1, (size_t)n, stdout) != (size_t)n) return cdl_fail("generate: cannot write the text");
    return 0;
}

/* Prompt, then o->tokens draws, each printed (and flushed) as it comes. */
static int gen_text(gen_run *s) {
    const tr_opts *o = s->o;
    cdl_clear_error();
    for (int64_t i = 0; i < s->np; i++)
        if ((!o->prompt[0] ? 0 : gen_put(s, s->prompt[i])) < 0 || gen_feed(s, s->prompt[i]) < 0) return -1;
    fflush(stdout);
    /* never padding or "unknown", never an id past the vocabulary */
    int32_t lo = s->v.kind == CDL_VOCAB_CHARS ? 2 : 0, hi = s->g.V < s->v.n ? (int32_t)s->g.V : s->v.n;
    if (lo >= hi) return cdl_fail("generate: the logits (%lld) cover no token of the vocabulary", (long long)s->g.V);
    double t0 = tr_now();
    for (int64_t k = 0; k < o->tokens; k++) {
        const void *lg = s->out[s->g.logits];
        int32_t id = gen_pick(o, lg, s->m->real_size, lo, hi, (uint64_t)k, s->cand);
        if (id < 0 || gen_put(s, id) < 0) return -1;
        fflush(stdout);
        if (k + 1 < o->tokens && gen_feed(s, id) < 0) return -1;
    }
    double dt = tr_now() - t0;
    if (o->tokens > 0) printf("\n");
    if (!o->quiet)
        fprintf(stderr, "%lld tokens in %.3f s (%.1f tokens/s)\n", (long long)o->tokens, dt,
                dt > 0 ? (double)o->tokens / dt : 0.0);
    return 0;
}

int tr_generate(const cdl_model *m, const tr_opts *o) {
    gen_run s = {.m = m, .o = o};
    int rc = gen_setup(&s) < 0 || gen_text(&s) < 0 ? 1 : 0;
    if (rc) fprintf(stderr, "generate: %s\n", cdl_last_error());
    for (int i = 0; i < GEN_MAX_IO; i++) {
        cdl_free(s.in[i]);
        cdl_free(s.out[i]);
    }
    cdl_free(s.prompt);
    cdl_free(s.cand);
    cdl_vocab_free(&s.v);
    cdl_net_free(s.net);
    return rc;
}
