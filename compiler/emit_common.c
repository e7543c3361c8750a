/* emit_common.c -- the emitters' toolkit and what the static (emit_c.c) and tape
 * (emit_tape.c) emitters write alike.
 *
 * Toolkit: the helpers every op emitter and both emitters use to name and size values
 * (e_ptr, e_numel, e_dims_arg, ...), to spell literals (e_lit, e_cstr), to comment
 * buffers (e_shape_comment, e_loc) and to open loops.  Shared output: the header, the
 * parameter/input/output tables, the initialiser, the model fingerprint, the cdl_model
 * descriptor and the public wrappers, one copy, so that the two builds of a model stay
 * interchangeable (checkpoints move between them). */
#include "cdlc.h"
#include "cdl.h"
#include "fingerprint.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ toolkit */

void e_line(Emit *e, const char *fmt, ...) {
    static const char spaces[] = "                                                                ";
    va_list ap;
    for (int k = e->indent * 4; k > 0; k -= (int)sizeof spaces - 1)
        fwrite(spaces, 1, k < (int)sizeof spaces - 1 ? (size_t)k : sizeof spaces - 1, e->f);
    va_start(ap, fmt);
    vfprintf(e->f, fmt, ap);
    va_end(ap);
    fputc('\n', e->f);
}

/* A large stdio buffer: a big model's body is hundreds of MB, written and read back in
 * 1 MiB system calls rather than 4 KiB ones. */
#define SPOOL_BUF ((size_t)1 << 20)

FILE *e_spool_open(Spool *s) {
    *s = (Spool){.f = tmpfile()};
    if (s->f && (s->buf = malloc(SPOOL_BUF))) setvbuf(s->f, s->buf, _IOFBF, SPOOL_BUF);
    if (!s->f) {
        s->in_memory = true;
        s->f = open_memstream(&s->mem, &s->len);
        if (!s->f) diag_out_of_memory(0, 0);
    }
    return s->f;
}

/* e_spool_copy: see cdlc.h.  A temporary file that cannot be written (a full disk) is
 * the machine's problem, reported like an output file that cannot be written. */
void e_spool_copy(Spool *s, FILE *to) {
    if (s->in_memory) {
        if (fclose(s->f)) diag_out_of_memory(s->len, 0);
        fwrite(s->mem, 1, s->len, to);
        free(s->mem);
        return;
    }
    char buf[1 << 16];
    size_t n;
    if (fflush(s->f) || ferror(s->f) || fseek(s->f, 0, SEEK_SET)) {
        fprintf(stderr, "cdlc: error writing a temporary file: %s\n", strerror(errno));
        exit(1);
    }
    while ((n = fread(buf, 1, sizeof buf, s->f)) > 0) fwrite(buf, 1, n, to);
    if (ferror(s->f)) {
        fprintf(stderr, "cdlc: error reading a temporary file back: %s\n", strerror(errno));
        exit(1);
    }
    fclose(s->f);
    free(s->buf);
}

const char *e_real(Emit *e) { return e->real_size == 8 ? "double" : "float"; }
const char *e_fn(Emit *e, const char *kernel) { return cc_str("cdl_%s_%s", kernel, e->real_size == 8 ? "f64" : "f32"); }
bool e_train(Emit *e) { return e->train; }
bool e_entry(const Emit *e) { return e->entry; }
const char *e_t(Emit *e) { return e->body ? "t" : "0"; }
const char *e_nb(Emit *e) { e->used_nb = true; return "nb"; }
const Graph *e_graph(const Emit *e) { return e->body ? e->body : e->top; }
int64_t e_batch(const Emit *e) { return e->top->batch > 0 ? e->top->batch : 1; }

const char *e_ctype(const Emit *e, const Node *n) {
    return n->dtype == DT_I32 ? "int32_t" : e->real_size == 8 ? "double" : "float";
}

const char *e_dtype(const Emit *e, const Node *n) {
    return n->dtype == DT_I32 ? "CDL_I32" : e->real_size == 8 ? "CDL_F64" : "CDL_F32";
}

const char *e_ptr(Emit *e, int node) {
    const char *s = e->body ? e->bname[node] : e->name[node];
    if (!s) die("node %d has no C variable", node);
    if (e->body && e->bref) e->bref[node] = true;
    return s;
}

const char *e_outer(Emit *e, int node) {
    if (!e->name[node]) die("top-level node %d has no C variable", node);
    return e->name[node];
}

const char *e_rows(Emit *e, int node) {
    const Node *n = &e_graph(e)->n[node];
    if (n->shape.rank == 0) return "1";
    if (!n->shape.batched) return cc_str("%lld", (long long)n->shape.d[0]);
    e->used_nb = true;
    int64_t k = n->shape.d[0] / e_batch(e);
    return k == 1 ? "nb" : cc_str("nb*%lld", (long long)k);
}

void e_conv_call(Emit *e, int n, const char *kernel, const char *geom, bool bias_slot, const char *scratch) {
    const Node *y = &e_graph(e)->n[n];
    const char *in2 = !bias_slot ? "" : y->nin == 3 ? cc_str(", %s", e_ptr(e, y->in[2])) : ", NULL";
    e_line(e, "%s(%s, %s, %s%s, %s, %s);", e_fn(e, kernel), geom, e_ptr(e, y->in[0]), e_ptr(e, y->in[1]), in2,
           e_ptr(e, n), scratch);
}

const char *e_dim(Emit *e, int node, int axis) {
    const Node *n = &e_graph(e)->n[node];
    if (axis == 0) return e_rows(e, node);
    return cc_str("%lld", (long long)n->shape.d[axis]);
}

/* True when s is a plain identifier or number (needs no parentheses in a product). */
static bool is_atom(const char *s) {
    for (; *s; s++)
        if (!(*s == '_' || (*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') ||
              (*s >= 'A' && *s <= 'Z')))
            return false;
    return true;
}

/* Only a batched dim 0 is a runtime size; the rest fold to one number. */
const char *e_prod(Emit *e, int node, int from, int to) {
    const Shape *s = &e_graph(e)->n[node].shape;
    int64_t p = 1;
    bool dyn = s->batched && from == 0 && to > 0;
    for (int i = from; i < to; i++)
        if (!(dyn && i == 0)) p *= s->d[i];
    if (!dyn) return cc_str("%lld", (long long)p);
    const char *d0 = e_dim(e, node, 0);
    if (p == 1) return d0;
    return cc_str(is_atom(d0) ? "%s*%lld" : "(%s)*%lld", d0, (long long)p);
}

const char *e_numel(Emit *e, int node) {
    const Node *n = &e_graph(e)->n[node];
    int64_t total = shape_numel(&n->shape);
    if (!n->shape.batched) return cc_str("%lld", (long long)total);
    e->used_nb = true;
    int64_t per = total / e_batch(e);
    return per == 1 ? "nb" : cc_str("nb*%lld", (long long)per);
}

const char *e_dims_arg(Emit *e, int node) {
    const Shape *s = &e_graph(e)->n[node].shape;
    if (s->rank == 0) return "0, NULL";
    char *r = cc_str("%d, (const int64_t[]){%s", s->rank, e_rows(e, node));
    for (int i = 1; i < s->rank; i++) r = cc_str("%s, %lld", r, (long long)s->d[i]);
    return cc_str("%s}", r);
}

const char *e_rng(Emit *e, int node) {
    const Node *n = &e_graph(e)->n[node];
    return cc_str("(cdl_rng_key){net->seed, net->step, %lld}", (long long)n->ia[7]);
}

const char *e_var_name(const Node *n, int i, const char *prefix) {
    const char *base = n->op == OP_PARAM && n->name ? n->name : n->var ? n->var : n->name ? n->name : op_info[n->op].name;
    if (n->flags & NF_GRAD) base = n->grad_of ? n->grad_of : op_info[n->op].name;
    char buf[96];
    size_t k = 0;
    for (const char *p = prefix; *p && k < 40; p++) buf[k++] = *p;
    if (n->flags & NF_GRAD) buf[k++] = 'd', buf[k++] = '_';
    for (const char *p = base; *p && k < 60; p++) buf[k++] = isalnum((unsigned char)*p) ? *p : '_';
    if (k == 0 || isdigit((unsigned char)buf[0])) buf[k++] = 'v';
    snprintf(buf + k, sizeof buf - k, "_%d", i);
    return arena_strdup(cc_arena, buf);
}

const char *e_shape_comment(const Emit *e, const Shape *s) {
    char c[24 * MAXDIM + 4];
    size_t k = 0;
    c[k++] = '(';
    for (int i = 0; i < s->rank; i++) {
        int64_t m = s->d[0] / e_batch(e);
        if (i == 0 && s->batched) k += (size_t)(m == 1 ? snprintf(c + k, sizeof c - k, "B") : snprintf(c + k, sizeof c - k, "B*%lld", (long long)m));
        else k += (size_t)snprintf(c + k, sizeof c - k, "%s%lld", i ? ", " : "", (long long)s->d[i]);
    }
    c[k++] = ')';
    return arena_strndup(cc_arena, c, k);
}

const char *e_loc(const Node *n) {
    if (!n->loc.file) return "";
    const char *f = strrchr(n->loc.file, '/');
    return cc_str(" @ %s:%d:%d", f ? f + 1 : n->loc.file, n->loc.line, n->loc.col);
}

const char *e_join(int n, const char *const *v, const char *sep) {
    size_t len = 1, ls = strlen(sep);
    for (int k = 0; k < n; k++) len += strlen(v[k]) + (k ? ls : 0);
    char *out = arena_alloc(cc_arena, len), *p = out;
    for (int k = 0; k < n; k++) {
        if (k) memcpy(p, sep, ls), p += ls;
        size_t l = strlen(v[k]);
        memcpy(p, v[k], l);
        p += l;
    }
    *p = 0;
    return out;
}

const char *e_tape_plain(Emit *e, const Graph *g, int n) {
    const Node *x = &g->n[n];
    char *c = cc_str("cdl_t_%s(tp", op_info[x->op].name);
    for (int k = 0; k < x->nin; k++) c = cc_str("%s, %s", c, e_ptr(e, x->in[k]));
    return cc_str("%s)", c);
}

const Graph *e_loop_open(Emit *e, int loop, const char *what) {
    const Node *L = &e->top->n[loop];
    int64_t start = loop_start(L), step = loop_step(L), last = loop_last(L);
    e_line(e, "/* loop%s: t = %lld %s %lld (%lld steps); %s */", e_loc(L), (long long)start, step > 0 ? "up to" : "down to",
           (long long)last, (long long)loop_count(L), what);
    e_line(e, "for (int t = %lld; t %s %lld; t %s %lld) {", (long long)start, step > 0 ? "<=" : ">=", (long long)last,
           step > 0 ? "+=" : "-=", (long long)(step > 0 ? step : -step));
    e->indent++;
    e->body = L->sub;
    e->loop = loop;
    e->bname = NEWN(const char *, L->sub->len + 1);
    return L->sub;
}

void e_loop_close(Emit *e) {
    e->indent--;
    e_line(e, "}");
    e->body = NULL;
    e->bname = NULL;
    e->loop = -1;
}

/* ------------------------------------------------------------------ shared output */

const char *e_cstr(const char *s) {
    size_t n = strlen(s);
    char *o = arena_alloc(cc_arena, n * 4 + 3), *p = o;
    *p++ = '"';
    for (const char *q = s; *q; q++) {
        unsigned char c = (unsigned char)*q;
        if (c == '"' || c == '\\') *p++ = '\\', *p++ = (char)c;
        else if (c == '\n') *p++ = '\\', *p++ = 'n';
        else if (c < 32 || c >= 127) p += sprintf(p, "\\%03o", c);
        else *p++ = (char)c;
    }
    *p++ = '"';
    *p = 0;
    return o;
}

/* What a checkpoint must agree with (fingerprint.h, the runtime's computation too). */
uint64_t emit_fingerprint(const Model *m, int real_size) {
    uint64_t h = cdl_fp_begin(m->name, real_size);
    for (int p = 0; p < m->nparams; p++)
        h = cdl_fp_param(h, m->params[p].name, m->params[p].shape.rank, m->params[p].shape.d, m->params[p].state);
    return h;
}

EmitLayout emit_layout(const Model *m) {
    EmitLayout L = {.slab = NEWN(int64_t, m->nparams + 1)};
    int64_t off = 0;
    for (int p = 0; p < m->nparams; p++) {
        L.slab[p] = off;
        off += shape_numel(&m->params[p].shape);
        if (!m->params[p].state) L.train_count = off;
    }
    L.param_count = off;
    return L;
}

static const char *init_name(int kind) {
    static const char *names[] = {"CDL_INIT_ZEROS", "CDL_INIT_ONES", "CDL_INIT_CONSTANT", "CDL_INIT_UNIFORM",
                                  "CDL_INIT_NORMAL", "CDL_INIT_XAVIER_UNIFORM", "CDL_INIT_XAVIER_NORMAL",
                                  "CDL_INIT_HE_UNIFORM", "CDL_INIT_HE_NORMAL", "CDL_INIT_DEFAULT"};
    if (kind < 0 || kind > CDL_INIT_DEFAULT) die("bad init kind %d", kind);
    return names[kind];
}

static void tensor_row(FILE *f, int real_size, const char *name, bool real, const Shape *s, int64_t off, int flags, Loc loc) {
    char dims[200];
    size_t k = 0;
    dims[0] = 0;
    for (int i = 0; i < s->rank; i++) k += (size_t)snprintf(dims + k, sizeof dims - k, "%s%lld", i ? ", " : "", (long long)s->d[i]);
    const char *dt = real ? (real_size == 8 ? "CDL_F64" : "CDL_F32") : "CDL_I32";
    const char *lc = loc.file ? cc_str("%s:%d:%d", loc.file, loc.line, loc.col) : "";
    fprintf(f, "    {%s, %s, %lld, %d, {%s}, %s, %s},\n", e_cstr(name), dt, (long long)off, s->rank, s->rank ? dims : "0",
            flags & CDL_T_STATE ? "CDL_T_STATE" : flags & CDL_T_PERTURB ? "CDL_T_BATCHED | CDL_T_PERTURB"
            : flags & CDL_T_BATCHED ? "CDL_T_BATCHED" : "0", e_cstr(lc));
}

static void node_row(FILE *f, int real_size, const char *name, const Node *n) {
    tensor_row(f, real_size, name, n->dtype == DT_REAL, &n->shape, 0,
               (n->shape.batched ? CDL_T_BATCHED : 0) | (n->flags & NF_PERTURB ? CDL_T_PERTURB : 0), n->loc);
}

static const char *consts(const Model *m) {
    return m->consts_str ? cc_str("; %s", m->consts_str) : "";
}

void emit_header(FILE *hf, const Model *m, const char *header_name, bool tape) {
    const char *mn = m->name;
    char guard[96];
    snprintf(guard, sizeof guard, "CDL_MODEL_%s%s_H", mn, tape ? "_TAPE" : "");
    for (char *p = guard; *p; p++) *p = (char)toupper((unsigned char)*p);
    fprintf(hf, "/* %s -- generated by cdlc %s%s from %s (model %s%s).  Do not edit. */\n", header_name, CDL_VERSION,
            tape ? " --target=tape" : "", m->file, mn, consts(m));
    fprintf(hf, "#ifndef %s\n#define %s\n\n#include \"cdl.h\"\n\n", guard, guard);
    if (tape) {
        static const char *sfx[] = {"model", "new", "free", "init", "forward", "grad", "input_grad", "train_step", "save", "load"};
        fprintf(hf, "#ifdef CDL_TAPE_RENAME  /* cc -DCDL_TAPE_RENAME: %s_tape_model ..., to link beside the static build */\n", mn);
        for (size_t k = 0; k < sizeof sfx / sizeof sfx[0]; k++) fprintf(hf, "#define %s_%s %s_tape_%s\n", mn, sfx[k], mn, sfx[k]);
        for (int k = 0; k < m->nentries; k++) fprintf(hf, "#define %s_%s %s_tape_%s\n", mn, m->entries[k].name, mn, m->entries[k].name);
        fprintf(hf, "#endif\n\n");
    }
    fprintf(hf, "extern const cdl_model %s_model;  /* descriptor: drive it with the runtime (trainer, tape, compare) */\n\n", mn);
    fprintf(hf, "cdl_net *%s_new(void);                       /* NULL on failure (cdl_last_error) */\n", mn);
    fprintf(hf, "void %s_free(cdl_net *net);\n", mn);
    fprintf(hf, "void %s_init(cdl_net *net, uint64_t seed);\n", mn);
    fprintf(hf, "void %s_forward(cdl_net *net, int nb);       /* eval mode; nb <= %lld rows in net->in */\n", mn, (long long)m->batch);
    if (m->loss >= 0) {
        fprintf(hf, "double %s_grad(cdl_net *net, int nb);        /* loss; parameter gradients into net->grad */\n", mn);
        fprintf(hf, "double %s_input_grad(cdl_net *net, int nb);  /* loss; input gradients into net->in_grad */\n", mn);
        fprintf(hf, "double %s_train_step(cdl_net *net, cdl_optim *opt, int nb, double lr);\n", mn);
    }
    fprintf(hf, "int %s_save(const cdl_net *net, const cdl_optim *opt, const char *path);\n", mn);
    fprintf(hf, "int %s_load(cdl_net *net, cdl_optim *opt, const char *path);\n", mn);
    for (int k = 0; k < m->nentries; k++)
        fprintf(hf, "void %s_%s(cdl_net *net, int nb, const void *const *in, void *const *out);\n", mn, m->entries[k].name);
    fprintf(hf, "\n#endif\n");
}

/* The runtime ABI this cdlc generates for (cdl.h, CDL_ABI): C compiled against a cdl.h
 * of another number stops here, naming both numbers (the note prints the header's). */
static void emit_abi_check(FILE *cf, const char *name) {
    fprintf(cf, "#if CDL_ABI != %d\n"
                "#define CDL_ABI_STR_(x) #x\n#define CDL_ABI_STR(x) CDL_ABI_STR_(x)\n"
                "#pragma message \"this cdl.h is runtime ABI \" CDL_ABI_STR(CDL_ABI)\n"
                "#error \"%s.c was generated by cdlc for runtime ABI %d; this cdl.h is another ABI (the note above): "
                "regenerate it with this runtime's cdlc\"\n"
                "#endif\n\n",
            CDL_ABI, name, CDL_ABI);
}

void emit_prologue(FILE *cf, const Model *m, const char *header_name, const char *about) {
    fprintf(cf, "/* %s.c -- generated by cdlc %s from %s (model %s%s).  Do not edit.\n%s */\n", m->name, CDL_VERSION, m->file, m->name,
            consts(m), about);
    fprintf(cf, "#include <string.h>\n\n#include \"cdl.h\"\n#include \"%s\"\n\n", header_name);
    emit_abi_check(cf, m->name);
}

void emit_tables(FILE *cf, const Model *m, int real_size, const EmitLayout *L) {
    const char *mn = m->name;
    fprintf(cf, "/* Parameter slab: %lld reals (%lld trainable, then state buffers).\n"
                " *   name, dtype, offset (elements), rank, dims, flags, declared at */\n",
            (long long)L->param_count, (long long)L->train_count);
    fprintf(cf, "static const cdl_tensor %s_params[] = {\n", mn);
    for (int p = 0; p < m->nparams; p++)
        tensor_row(cf, real_size, m->params[p].name, true, &m->params[p].shape, L->slab[p], m->params[p].state ? CDL_T_STATE : 0,
                   m->params[p].loc);
    if (m->nparams == 0) fprintf(cf, "    {0},\n");
    fprintf(cf, "};\n\nstatic const cdl_tensor %s_inputs[] = {\n", mn);
    for (int k = 0; k < m->ninputs; k++) node_row(cf, real_size, m->g->n[m->inputs[k]].name, &m->g->n[m->inputs[k]]);
    if (m->ninputs == 0) fprintf(cf, "    {0},\n");
    fprintf(cf, "};\n\nstatic const cdl_tensor %s_outputs[] = {\n", mn);
    for (int k = 0; k < m->noutputs; k++) {
        const Node *n = &m->g->n[m->outputs[k]];
        node_row(cf, real_size, n->name ? n->name : n->var ? n->var : "out", n);
    }
    if (m->noutputs == 0) fprintf(cf, "    {0},\n");
    fprintf(cf, "};\n");
    for (int k = 0; k < m->nentries; k++) {
        const EntryFn *en = &m->entries[k];
        fprintf(cf, "\nstatic const cdl_tensor %s_%s_in[] = {\n", mn, en->name);
        int nin = 0;
        for (int i = 0; i < en->g->len; i++)
            if (en->g->n[i].op == OP_INPUT) node_row(cf, real_size, en->g->n[i].name, &en->g->n[i]), nin++;
        if (!nin) fprintf(cf, "    {0},\n");
        fprintf(cf, "};\nstatic const cdl_tensor %s_%s_out[] = {\n", mn, en->name);
        for (int i = 0; i < en->nouts; i++) {
            const Node *n = &en->g->n[en->outs[i]];
            node_row(cf, real_size, n->name ? n->name : n->var ? n->var : "out", n);
        }
        fprintf(cf, "};\n");
    }

    fprintf(cf, "\n/* Parameter initialisation: random streams keyed by (seed, parameter index). */\n");
    fprintf(cf, "static void %s_init_params(cdl_net *net, uint64_t seed)\n{\n    %s *P = net->param;\n", mn,
            real_size == 8 ? "double" : "float");
    for (int p = 0; p < m->nparams; p++) {
        const Param *pa = &m->params[p];
        fprintf(cf, "    cdl_init_%s(P + %lld, %lld, %s, %.17g, %.17g, %lld, %lld, (cdl_rng_key){seed, UINT64_MAX, %d});  /* %s */\n",
                real_size == 8 ? "f64" : "f32", (long long)L->slab[p], (long long)shape_numel(&pa->shape), init_name(pa->init), pa->a,
                pa->b, (long long)pa->fan_in, (long long)pa->fan_out, p, pa->name);
    }
    if (m->nparams == 0) fprintf(cf, "    (void)P; (void)seed;\n");
    fprintf(cf, "}\n");
}

void emit_descriptor(FILE *cf, const Model *m, int real_size, const EmitLayout *L, int64_t act_bytes, const char *act_comment,
                     bool with_main) {
    const char *mn = m->name;
    if (m->nentries) {
        fprintf(cf, "\nstatic const cdl_entry %s_entries[] = {\n", mn);
        for (int k = 0; k < m->nentries; k++) {
            const EntryFn *en = &m->entries[k];
            int nin = 0;
            for (int i = 0; i < en->g->len; i++) nin += en->g->n[i].op == OP_INPUT;
            fprintf(cf, "    {\"%s\", %d, %s_%s_in, %d, %s_%s_out, %s_entry_%s},\n", en->name, nin, mn, en->name, en->nouts, mn,
                    en->name, mn, en->name);
        }
        fprintf(cf, "};\n");
    }
    char *defaults = arena_strdup(cc_arena, "");
    for (int k = 0; k < m->ntrain; k++) defaults = cc_str("%s%s=%s\n", defaults, m->train[k].key, m->train[k].value);

    fprintf(cf, "\nconst cdl_model %s_model = {\n", mn);
    fprintf(cf, "    .abi = %d,\n", CDL_ABI);
    fprintf(cf, "    .name = %s,\n    .source = %s,\n    .fingerprint = 0x%016llxull,\n    .real_size = %d,\n    .batch = %lld,\n",
            e_cstr(mn), e_cstr(m->file), (unsigned long long)emit_fingerprint(m, real_size), real_size,
            (long long)(m->batch > 0 ? m->batch : 1));
    fprintf(cf, "    .n_params = %d, .params = %s_params, .param_count = %lld, .train_count = %lld,\n", m->nparams, mn,
            (long long)L->param_count, (long long)L->train_count);
    fprintf(cf, "    .n_inputs = %d, .inputs = %s_inputs,\n    .n_outputs = %d, .outputs = %s_outputs,\n", m->ninputs, mn,
            m->noutputs, mn);
    fprintf(cf, "    .has_loss = %d,\n    .act_bytes = %lld,%s\n", m->loss >= 0, (long long)act_bytes, act_comment);
    if (m->nentries) fprintf(cf, "    .n_entries = %d, .entries = %s_entries,\n", m->nentries, mn);
    fprintf(cf, "    .train_defaults = %s,\n", e_cstr(defaults));
    fprintf(cf, "    .init = %s_init_params,\n    .forward = %s_fwd_eval,\n", mn, mn);
    if (m->loss >= 0)
        fprintf(cf, "    .grad = %s_fwd_bwd,\n    .input_grad = %s_fwd_bwd_input,\n    .eval_grad = %s_fwd_bwd_eval,\n", mn,
                mn, mn);
    fprintf(cf, "};\n");

    fprintf(cf, "\ncdl_net *%s_new(void) { return cdl_net_new(&%s_model); }\n", mn, mn);
    fprintf(cf, "void %s_free(cdl_net *net) { cdl_net_free(net); }\n", mn);
    fprintf(cf, "void %s_init(cdl_net *net, uint64_t seed) { %s_init_params(net, seed); }\n", mn, mn);
    fprintf(cf, "void %s_forward(cdl_net *net, int nb) { %s_fwd_eval(net, nb); }\n", mn, mn);
    if (m->loss >= 0) {
        fprintf(cf, "double %s_grad(cdl_net *net, int nb) { return %s_fwd_bwd(net, nb); }\n", mn, mn);
        fprintf(cf, "double %s_input_grad(cdl_net *net, int nb) { return %s_fwd_bwd_input(net, nb); }\n", mn, mn);
        fprintf(cf, "double %s_train_step(cdl_net *net, cdl_optim *opt, int nb, double lr)\n{\n"
                    "    double loss = %s_fwd_bwd(net, nb);\n    cdl_optim_step(opt, net, lr);\n    net->step++;\n    return loss;\n}\n",
                mn, mn);
    }
    fprintf(cf, "int %s_save(const cdl_net *net, const cdl_optim *opt, const char *path) { return cdl_ckpt_save(path, net, opt, NULL); }\n", mn);
    fprintf(cf, "int %s_load(cdl_net *net, cdl_optim *opt, const char *path) { return cdl_ckpt_load(path, net, opt, NULL); }\n", mn);
    for (int k = 0; k < m->nentries; k++)
        fprintf(cf, "void %s_%s(cdl_net *net, int nb, const void *const *in, void *const *out) { %s_entry_%s(net, nb, in, out); }\n",
                mn, m->entries[k].name, mn, m->entries[k].name);
    if (with_main) fprintf(cf, "\nint main(int argc, char **argv) { return cdl_main(&%s_model, argc, argv); }\n", mn);
}

const char *e_lit(double v) {
    if (isnan(v)) return "0";
    if (isinf(v)) return v > 0 ? "1e308" : "-1e308";
    char buf[40];
    snprintf(buf, sizeof buf, "%.15g", v);
    if (strtod(buf, NULL) != v) snprintf(buf, sizeof buf, "%.17g", v);
    return arena_strdup(cc_arena, buf);
}

bool e_mentions(const char *text, const char *word) {
    size_t n = strlen(word);
    for (const char *p = text; *p; p++) {
        if (p[0] == '/' && p[1] == '*') {   /* comments and strings do not count */
            const char *q = strstr(p + 2, "*/");
            if (!q) return false;
            p = q + 1;
        } else if (*p == '"') {
            while (p[1] && p[1] != '"') p += p[1] == '\\' && p[2] ? 2 : 1;
            if (!*++p) return false;
        } else if (isalpha((unsigned char)*p) || *p == '_') {
            const char *q = p;
            while (isalnum((unsigned char)q[1]) || q[1] == '_') q++;
            if ((size_t)(q - p + 1) == n && !strncmp(p, word, n)) return true;
            p = q;
        }
    }
    return false;
}
