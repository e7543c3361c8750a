/* emit_infer.c -- the inference export (cdlc --inference --weights FILE): one
 * self-contained C99 file and a small header for the eval-mode forward of a model (and
 * chosen entries), with the trained weights inside.
 *
 * The functions come from the pipeline like the static target's (infer.c picks them,
 * folds batch norms, drops dropout; opt and plan run as usual), and their bodies are
 * written by the static target's own walker (emit_c_infer_body: the op emitters of
 * ops_*.c write the kernel calls).  What differs is around them:
 *   - leaves: inputs are the function's pointer arguments, parameters `static const
 *     float` arrays named after them, with their shapes in a comment;
 *   - kernels: the calls name the runtime's kernels (cdl_linear_f32); they are renamed
 *     to the portable kernels of compiler/infer_kernels.inc (nn_linear), and the
 *     sections those need are copied in, and only those;
 *   - memory: one arena of compile-time size for every function (the planner's layout),
 *     the caller's or a static array; no allocation, no threads, no BLAS, libm only
 *     for expf / tanhf-style functions;
 *   - the batch is fixed at compile time (-D B=..., 1 by default);
 *   - a model trained on standardised data (train { normalize = "MEAN,STD" }) has the
 *     standardisation done in its forward, on the data as the dataset gives it.
 */
#include "cdlc.h"
#include "cdl.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The kernel text, one C string (Makefile: build/gen/infer_kernels.h from
 * compiler/infer_kernels.inc). */
static const char kernel_text[] =
#include "infer_kernels.h"
    ;

/* ------------------------------------------------------------------ kernel sections */

typedef struct Section {
    const char *name;
    const char *text;          /* the lines after the marker, up to the next one */
    const char *needs[4];
    int nneeds;
    bool used;
} Section;

typedef struct Kernels { Section *s; int n; } Kernels;

/* Split kernel_text at its "//@ NAME [needs A B]" lines; a section may need only
 * sections before it (so copying them in file order defines everything before use). */
static Kernels kernels_load(void) {
    Kernels K = {NEWN(Section, 128), 0};
    const char *p = strstr(kernel_text, "\n//@ ");
    while (p) {
        p += 5;
        const char *eol = strchr(p, '\n');
        if (!eol || K.n == 128) die("infer_kernels.inc: bad section marker");
        Section *s = &K.s[K.n++];
        char *line = arena_strndup(cc_arena, p, (size_t)(eol - p)), *save = NULL;
        s->name = strtok_r(line, " ", &save);
        const char *w = strtok_r(NULL, " ", &save);
        if (w && strcmp(w, "needs")) die("infer_kernels.inc: section %s: expected 'needs'", s->name);
        while (w && (w = strtok_r(NULL, " ", &save))) {
            bool known = false;
            for (int k = 0; k < K.n - 1; k++) known |= !strcmp(K.s[k].name, w);
            if (!known || s->nneeds == 4) die("infer_kernels.inc: section %s needs %s, not defined before it", s->name, w);
            s->needs[s->nneeds++] = w;
        }
        const char *next = strstr(eol, "\n//@ ");
        s->text = arena_strndup(cc_arena, eol + 1, next ? (size_t)(next + 1 - (eol + 1)) : strlen(eol + 1));
        p = next;
    }
    return K;
}

static Section *section(Kernels *K, const char *name) {
    for (int k = 0; k < K->n; k++)
        if (!strcmp(K->s[k].name, name)) return &K->s[k];
    return NULL;
}

static void use_section(Kernels *K, Section *s) {
    if (s->used) return;
    s->used = true;
    for (int k = 0; k < s->nneeds; k++) use_section(K, section(K, s->needs[k]));
}

/* The portable name of a runtime identifier: cdl_X_f32 -> nn_X, cdl_X_i32 -> nn_X_i32,
 * cdl_X_geom -> nn_X_geom, CDL_BIN_ADD -> NN_BIN_ADD (section NN_BIN). */
static const char *portable(const char *id, const char **sec) {
    size_t n = strlen(id);
    if (!strncmp(id, "CDL_BIN_", 8)) {
        *sec = "NN_BIN";
        return cc_str("NN_%s", id + 4);
    }
    const char *r = NULL;
    if (n > 8 && !strcmp(id + n - 4, "_f32")) r = cc_str("nn_%.*s", (int)(n - 8), id + 4);
    else if ((n > 9 && !strcmp(id + n - 5, "_geom")) || (n > 8 && !strcmp(id + n - 4, "_i32"))) r = cc_str("nn_%s", id + 4);
    *sec = r;
    return r;
}

/* Copy body text to f with every runtime identifier renamed to its portable kernel,
 * marking the kernels used. */
static void rename_kernels(FILE *f, const char *body, Kernels *K) {
    for (const char *p = body; *p;) {
        if (!(isalpha((unsigned char)*p) || *p == '_')) {
            fputc(*p++, f);
            continue;
        }
        const char *q = p;
        while (isalnum((unsigned char)*q) || *q == '_') q++;
        char *id = arena_strndup(cc_arena, p, (size_t)(q - p));
        if (!strncmp(id, "cdl_", 4) || !strncmp(id, "CDL_", 4)) {
            const char *sec = NULL, *to = portable(id, &sec);
            Section *s = sec ? section(K, sec) : NULL;
            if (!s) die("inference export: no portable kernel for %s", id);
            use_section(K, s);
            fputs(to, f);
        } else {
            fputs(id, f);
        }
        p = q;
    }
}

/* ------------------------------------------------------------------ names */

/* A C identifier from a dotted name: "residual1.conv1+bn1.weight" ->
 * "residual1_conv1_bn1_weight"; unique among taken[] (a suffix _2, _3 ... otherwise),
 * never ending in _<digits> (the form of the body's node variables) nor a keyword. */
static const char *c_ident(const char *name, const char **taken, int *ntaken) {
    static const char *reserved[] = {"A", "nb", "t", "arena", "auto", "break", "case", "char", "const", "continue",
                                     "default", "do", "double", "else", "enum", "extern", "float", "for", "goto", "if",
                                     "inline", "int", "long", "register", "restrict", "return", "short", "signed",
                                     "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void",
                                     "volatile", "while", "int64_t", "int32_t", "size_t", "memcpy", "memset", NULL};
    char *s = arena_strdup(cc_arena, *name ? name : "v");
    for (char *c = s; *c; c++)
        if (!isalnum((unsigned char)*c)) *c = '_';
    const char *base = isdigit((unsigned char)s[0]) || !strncmp(s, "nn_", 3) ? cc_str("v_%s", s) : s;
    size_t n = strlen(base), d = n;
    while (d > 0 && isdigit((unsigned char)base[d - 1])) d--;
    if (d < n && d > 0 && base[d - 1] == '_') base = cc_str("%s_", base);
    const char *id = base;
    for (int k = 2;; k++) {
        bool clash = false;
        for (int i = 0; reserved[i] && !clash; i++) clash = !strcmp(id, reserved[i]);
        for (int i = 0; i < *ntaken && !clash; i++) clash = !strcmp(id, taken[i]);
        if (!clash) break;
        id = cc_str("%s_%d", base, k);
        if (isdigit((unsigned char)id[strlen(id) - 1])) id = cc_str("%s_", id);
    }
    taken[(*ntaken)++] = id;
    return id;
}

/* ------------------------------------------------------------------ the export */

typedef struct Arg { int node; const char *c; const char *name; bool i32; int64_t numel; const char *shape; } Arg;

typedef struct XFn {          /* one exported function */
    const Fn *fn;
    const char *cname;        /* mlp_infer, vae_generate_infer */
    const char *title;        /* "forward", "entry generate" */
    Arg *in; int nin;
    Arg *out; int nout;
    int norm_input;           /* index into in[] standardised in the function, or -1 */
} XFn;

typedef struct X {
    const Pipeline *p;
    const Model *m;
    Weights *w;
    Kernels K;
    const char *up, *low;     /* MLP_INFER, mlp_infer */
    XFn *f; int nf;
    const char **taken; int ntaken;   /* C names at file scope: functions, arguments, weights */
    int nf0;                  /* taken[0..nf0): the functions' names */
    const char **wname;       /* per weight tensor: its C array, or NULL when unused */
    double mean, inv_std;     /* train { normalize } */
    bool q8;                  /* --quantize=int8 */
    bool norm;
    int64_t arena;            /* bytes */
} X;

/* "[B, 784]" with the compiled batch shown as B. */
static const char *shape_text(const X *x, const Node *n) {
    char *s = arena_strdup(cc_arena, "[");
    for (int i = 0; i < n->shape.rank; i++) {
        bool b = i == 0 && n->shape.batched && x->m->batch > 0;
        int64_t k = b ? n->shape.d[0] / x->m->batch : 1;
        const char *d = !b ? cc_str("%lld", (long long)n->shape.d[i]) : k == 1 ? "B" : cc_str("B*%lld", (long long)k);
        s = cc_str("%s%s%s", s, i ? ", " : "", d);
    }
    return cc_str("%s]", s);
}

/* Is op supported by the portable kernels (or needs none)?  A table activation (an
 * OPF_FN op of one input, such as gelu) is, exactly when infer_kernels.inc has its
 * section nn_<name>: adding an activation there needs no line here. */
static bool supported(Op op, Kernels *K) {
    switch (op) {
    case OP_INPUT: case OP_PARAM: case OP_CONST: case OP_BATCHSIZE: case OP_RANDN: case OP_RAND:
    case OP_ADD: case OP_SUB: case OP_MUL: case OP_DIV: case OP_MAXIMUM: case OP_MINIMUM: case OP_NEG: case OP_EXP:
    case OP_LOG: case OP_SQRT: case OP_ABS: case OP_SQUARE: case OP_POWS: case OP_CLAMP: case OP_RELU:
    case OP_LEAKY_RELU: case OP_SIGMOID: case OP_TANH: case OP_GELU: case OP_SOFTPLUS:
    case OP_ELU: case OP_STOP_GRAD:
    case OP_MATMUL: case OP_LINEAR: case OP_SUM: case OP_MEAN: case OP_REDUCE_MAX:
    case OP_BROADCAST: case OP_RESHAPE: case OP_TRANSPOSE:
    case OP_CONCAT: case OP_SLICE: case OP_SOFTMAX: case OP_LOG_SOFTMAX: case OP_EMBEDDING: case OP_CONV2D:
    case OP_CONV: case OP_CONV_T: case OP_UPSAMPLE: case OP_BMM: case OP_ATTENTION:
    case OP_WHERE: case OP_ONE_HOT: case OP_COMPARE: case OP_TRIL: case OP_ARGMAX: case OP_CAST: case OP_MOMENTS:
    case OP_LOGSUMEXP: case OP_POOL:
    case OP_MAXPOOL2D: case OP_AVGPOOL2D: case OP_BATCHNORM: case OP_LAYER_NORM: case OP_RMS_NORM:
    case OP_GROUP_NORM: case OP_LSTM_ACT: case OP_GRU_ACT: case OP_VIEW:
    case OP_LOOP: case OP_LOOP_OUT: case OP_LOOP_CARRY: case OP_LOOP_CAPTURE:
        return true;
    default:
        return (op_info[op].flags & OPF_FN) && op_info[op].nin == 1 && section(K, cc_str("nn_%s", op_info[op].name));
    }
}

/* Every live op of g (and its loop bodies) has a portable kernel; else an error at
 * the op's source location. */
static bool check_ops(const Graph *g, const char *title, Kernels *K) {
    bool ok = true;
    for (int i = 0; i < g->len; i++) {
        const Node *n = &g->n[i];
        if (n->flags & NF_DEAD) continue;
        if (!supported(n->op, K)) {
            error_at(n->loc, "%s: the inference export (%s) has no kernel for this op", op_info[n->op].name, title);
            ok = false;
        }
        if (n->sub) ok &= check_ops(n->sub, title, K);
    }
    return ok;
}

/* train { normalize = "MEAN,STD" }, as the trainer reads it. */
static void find_normalize(X *x) {
    for (int k = 0; k < x->m->ntrain; k++) {
        if (strcmp(x->m->train[k].key, "normalize")) continue;
        const char *v = x->m->train[k].value;
        char *e1, *e2 = NULL;
        double mean = strtod(v, &e1), sd = 0;
        if (e1 != v && *e1 == ',') sd = strtod(e1 + 1, &e2);
        if (!e2 || e2 == e1 + 1 || *e2 || !isfinite(mean) || !isfinite(sd) || !(sd > 0))
            error_at(x->m->train[k].loc, "normalize: expected \"MEAN,STD\", finite, with STD > 0, got \"%s\"", v);
        x->norm = true, x->mean = mean, x->inv_std = 1.0 / sd;
    }
}

/* An argument of a function; its C name is unique among the function's arguments
 * (taken[0..*ntaken): the functions' names, then this function's arguments). */
static Arg make_arg(X *x, const Graph *g, int node, const char *name, const char **taken, int *ntaken) {
    const Node *n = &g->n[node];
    return (Arg){.node = node, .c = c_ident(name, taken, ntaken), .name = name, .i32 = n->dtype == DT_I32,
                 .numel = shape_numel(&n->shape), .shape = shape_text(x, n)};
}

static const char *fn_cname(const Model *m, const Fn *fn) {
    return fn->kind == FN_ENTRY ? cc_str("%s_%s_infer", m->name, fn->entry->name) : cc_str("%s_infer", m->name);
}

/* The exported function of pipeline function fn: its arguments (live inputs in slot
 * order, then the outputs) and names. */
static XFn describe(X *x, const Fn *fn) {
    const Model *m = x->m;
    const Graph *g = fn->g;
    XFn f = {.fn = fn, .norm_input = -1};
    f.cname = fn_cname(m, fn);
    f.title = fn->kind == FN_ENTRY ? cc_str("entry %s", fn->entry->name) : "forward";
    const char **taken = NEWN(const char *, x->nf0 + 2 * g->len + 1);
    int ntaken = x->nf0;
    memcpy(taken, x->taken, sizeof *taken * (size_t)x->nf0);
    f.in = NEWN(Arg, g->len + 1);
    f.out = NEWN(Arg, g->len + 1);
    int *by_slot = NEWN(int, g->len + 1);
    for (int i = 0; i < g->len; i++) by_slot[i] = -1;
    for (int i = 0; i < g->len; i++)
        if (g->n[i].op == OP_INPUT && !(g->n[i].flags & NF_DEAD)) by_slot[g->n[i].slot] = i;
    /* the trainer feeds the examples into the model's first real input */
    int norm_slot = -1;
    for (int k = 0; k < m->ninputs && norm_slot < 0; k++)
        if (m->g->n[m->inputs[k]].dtype == DT_REAL) norm_slot = k;
    for (int s = 0; s < g->len; s++) {
        if (by_slot[s] < 0) continue;
        const Node *n = &g->n[by_slot[s]];
        if (fn->kind == FN_EVAL && x->norm && s == norm_slot) f.norm_input = f.nin;
        f.in[f.nin++] = make_arg(x, g, by_slot[s], n->name, taken, &ntaken);
        if (f.norm_input == f.nin - 1) taken[ntaken++] = cc_str("%s_std", f.in[f.nin - 1].c);  /* its standardised copy */
    }
    int nouts = fn->kind == FN_ENTRY ? fn->entry->nouts : m->noutputs;
    for (int k = 0; k < nouts; k++) {
        int id = fn->kind == FN_ENTRY ? fn->entry->outs[k] : m->outputs[k];
        const Node *n = &g->n[id];
        f.out[f.nout++] = make_arg(x, g, id, n->name ? n->name : n->var ? n->var : "out", taken, &ntaken);
    }
    /* weight arrays must not be shadowed by an argument of any function */
    for (int k = x->nf0; k < ntaken; k++) x->taken[x->ntaken++] = taken[k];
    return f;
}

/* Name every weight tensor a function reads (its live PARAM nodes, in bodies too). */
static void name_weights(X *x, const Graph *g) {
    for (int i = 0; i < g->len; i++) {
        const Node *n = &g->n[i];
        if (n->flags & NF_DEAD) continue;
        if (n->op == OP_PARAM && !x->wname[n->slot]) x->wname[n->slot] = c_ident(x->w->t[n->slot].name, x->taken, &x->ntaken);
    }
}

/* Tensor slot of the PARAM that node id of g is (a loop body's capture looked
 * through), or -1. */
static int param_slot(const Graph *g, int id) {
    while (g->n[id].op == OP_LOOP_CAPTURE && g->parent) {
        id = (int)g->n[id].ia[0];
        g = g->parent;
    }
    return g->n[id].op == OP_PARAM ? g->n[id].slot : -1;
}

/* Mark the weights of convolutions channel-last (nn_conv2d reads them so); a tensor
 * that is a convolution's weights and also read by another op (through *other[slot],
 * the reader) cannot be, and is reported there. */
/* Who reads each weight tensor: conv[s] a convolution as its weights, lin[s] a linear
 * layer as its weights, other[s] (the first) any other reader. */
static void mark_readers(const Graph *g, const Node **other, bool *conv, bool *lin) {
    for (int i = 0; i < g->len; i++) {
        const Node *n = &g->n[i];
        if (n->flags & NF_DEAD) continue;
        if (n->sub) mark_readers(n->sub, other, conv, lin);
        for (int k = 0; k < n->nin && n->op != OP_LOOP; k++) {
            int s = param_slot(g, n->in[k]);
            if (s < 0) continue;
            if (n->op == OP_CONV2D && k == 1) conv[s] = true;
            else if (n->op == OP_LINEAR && k == 1) lin[s] = true;
            else if (!other[s]) other[s] = n;
        }
    }
}

/* Mark the weights of convolutions channel-last (nn_conv2d reads them so); a tensor
 * that is a convolution's weights and also read otherwise cannot be, and is reported
 * at that reader.  With --quantize=int8, mark the weights that only convolutions or
 * only linear layers read (q8). */
static bool layout_weights(X *x) {
    const Node **other = NEWN(const Node *, x->w->n + 1);
    bool *conv = NEWN(bool, x->w->n + 1), *lin = NEWN(bool, x->w->n + 1), ok = true;
    for (int k = 0; k < x->p->nfn; k++) mark_readers(x->p->fn[k].g, other, conv, lin);
    for (int s = 0; s < x->w->n; s++) {
        if (conv[s] && (other[s] || lin[s])) {
            const Node *o = other[s];
            error_at(o ? o->loc : no_loc, "%s: reads '%s', a convolution's weights, which the inference export stores "
                     "channel-last for its convolution kernel", o ? op_info[o->op].name : "linear", x->w->t[s].name);
            ok = false;
        }
        x->w->t[s].channel_last = conv[s];
        x->w->t[s].q8 = x->q8 && (conv[s] || lin[s]) && !other[s];
    }
    return ok;
}

/* A float as the shortest C literal that reads back as the same float. */
static const char *float_lit(float v) {
    char buf[40];
    if (v == 0) return signbit(v) ? "-0.f" : "0";
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".e")) return arena_strdup(cc_arena, buf);   /* an integer: exact as int */
    return cc_str("%sf", buf);
}

/* Values v[0..n) as the body of a C array initialiser, ten-odd to a line. */
static void emit_values(FILE *f, int64_t n, const char *(*lit)(const void *, int64_t), const void *v) {
    int col = 100;
    for (int64_t i = 0; i < n; i++) {
        const char *s = lit(v, i);
        if (col + strlen(s) + 2 > 100) {
            fputs("\n   ", f);
            col = 3;
        }
        col += fprintf(f, " %s%s", s, i + 1 < n ? "," : "");
    }
    fputs("\n};\n", f);
}

static const char *lit_float(const void *v, int64_t i) { return float_lit(((const float *)v)[i]); }
static const char *lit_int8(const void *v, int64_t i) { return cc_str("%d", ((const signed char *)v)[i]); }

/* Tensor t's values in the order the kernels read them: channel-last [C, R, S, K] for
 * convolutions, else as they are. */
static float *kernel_order(const WTensor *t) {
    int64_t n = shape_numel(&t->shape), K = t->shape.d[0], crs = n / (K ? K : 1);
    float *v = NEWN(float, n + 1);
    for (int64_t i = 0; i < n; i++) v[i] = t->channel_last ? t->data[(i % K) * crs + i / K] : t->data[i];
    return v;
}

/* Quantise t per output channel k: scale[k] = max |w| / 127, q = w / scale rounded
 * (in double, then to int8: w ~ q * scale); v is t in kernel order. */
static void quantize(const WTensor *t, const float *v, signed char *q, float *scale) {
    int64_t n = shape_numel(&t->shape), K = t->shape.d[0], per = n / (K ? K : 1);
    for (int64_t k = 0; k < K; k++) {
        double m = 0;
        for (int64_t j = 0; j < per; j++) m = fmax(m, fabs((double)t->data[k * per + j]));
        scale[k] = m > 0 ? (float)(m / 127) : 1.0f;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t k = t->channel_last ? i % (K ? K : 1) : i / per;
        q[i] = (signed char)lrint(fmax(-127.0, fmin(127.0, (double)v[i] / (double)scale[k])));
    }
}

static void emit_weights(X *x, FILE *f) {
    int64_t total = 0, bytes = 0;
    for (int k = 0; k < x->w->n; k++)
        if (x->wname[k]) {
            int64_t n = shape_numel(&x->w->t[k].shape);
            total += n;
            bytes += x->w->t[k].q8 ? n + 4 * x->w->t[k].shape.d[0] : 4 * n;
        }
    fprintf(f, "\n/* ------------------------------------------------------------------ weights\n"
               " * From %s: %lld values (%lld bytes)%s%s. */\n",
            x->w->path, (long long)total, (long long)bytes, x->w->f64 ? ", rounded from the file's f64 values" : "",
            x->q8 ? "; the weights of linear and convolution layers in int8, one float scale per output" : "");
    for (int k = 0; k < x->w->n; k++) {
        const WTensor *t = &x->w->t[k];
        if (!x->wname[k]) continue;
        int64_t n = shape_numel(&t->shape), K = t->shape.d[0];
        const float *v = kernel_order(t);
        fprintf(f, "\n/* %s %s%s%s%s%s */\n", t->name, shape_str(&t->shape), t->note ? ": " : "", t->note ? t->note : "",
                t->channel_last ? ", stored channel-last [C, R, S, K]" : "",
                t->q8 ? cc_str(";\n * int8: w = %s[i] * %s_scale[output channel]", x->wname[k], x->wname[k]) : "");
        if (!t->q8) {
            fprintf(f, "static const float %s[%lld] = {", x->wname[k], (long long)n);
            emit_values(f, n, lit_float, v);
            continue;
        }
        signed char *q = NEWN(signed char, n + 1);
        float *scale = NEWN(float, K + 1);
        quantize(t, v, q, scale);
        fprintf(f, "static const int8_t %s[%lld] = {", x->wname[k], (long long)n);
        emit_values(f, n, lit_int8, q);
        fprintf(f, "static const float %s_scale[%lld] = {", x->wname[k], (long long)K);
        emit_values(f, K, lit_float, scale);
    }
}

/* The prototype of exported function f (no trailing semicolon). */
static const char *prototype(const XFn *f) {
    char *s = cc_str("void %s(", f->cname);
    for (int k = 0; k < f->nin; k++) s = cc_str("%sconst %s *%s, ", s, f->in[k].i32 ? "int32_t" : "float", f->in[k].c);
    for (int k = 0; k < f->nout; k++) s = cc_str("%s%s *%s, ", s, f->out[k].i32 ? "int32_t" : "float", f->out[k].c);
    return cc_str("%svoid *arena)", s);
}

/* The arguments of the call whose "(" is at p: their [begin, end) spans, commas inside
 * parentheses, brackets and braces skipped; returns the count (at most max). */
static int call_args(const char *p, const char **b, const char **e, int max) {
    int n = 0, depth = 0;
    b[0] = ++p;
    for (; *p && n < max; p++) {
        if (strchr("([{", *p)) depth++;
        else if (strchr("}]", *p)) depth--;
        else if (*p == ')' && depth-- == 0) {
            e[n++] = p;
            return n;
        } else if (*p == ',' && depth == 0) {
            e[n++] = p;
            b[n] = p + 1;
        }
    }
    return -1;
}

/* With --quantize=int8: the linear and convolution calls whose weights are int8 arrays
 * call the int8 kernels with the weights and their scales: cdl_linear_f32(rows, in,
 * out, x, W, b, y) -> cdl_linear_q8_f32(rows, in, out, x, W, W_scale, b, y), likewise
 * cdl_conv2d_f32 (weights: argument 2).  In the body's text, before the renaming. */
static char *quantized_calls(X *x, const char *body) {
    static const struct { const char *fn, *q8; int warg; } calls[] = {
        {"cdl_linear_f32(", "cdl_linear_q8_f32(", 4}, {"cdl_conv2d_f32(", "cdl_conv2d_q8_f32(", 2}};
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f) die("open_memstream");
    for (const char *p = body; *p;) {
        int c = -1;
        for (int k = 0; k < 2; k++)
            if (!strncmp(p, calls[k].fn, strlen(calls[k].fn)) && (p == body || !(isalnum((unsigned char)p[-1]) || p[-1] == '_'))) c = k;
        const char *b[16], *e[16];
        int n = c < 0 ? -1 : call_args(p + strlen(calls[c].fn) - 1, b, e, 16);
        int slot = -1;
        if (n > 0 && n > calls[c].warg) {
            const char *a = b[calls[c].warg], *z = e[calls[c].warg];
            while (a < z && *a == ' ') a++;
            for (int k = 0; k < x->w->n; k++)
                if (x->wname[k] && x->w->t[k].q8 && (size_t)(z - a) == strlen(x->wname[k]) && !strncmp(a, x->wname[k], (size_t)(z - a)))
                    slot = k;
        }
        if (slot < 0) {
            fputc(*p++, f);
            continue;
        }
        const char *args = p + strlen(calls[c].fn), *wend = e[calls[c].warg];   /* the weights' argument ends there */
        fprintf(f, "%s%.*s, %s_scale%.*s", calls[c].q8, (int)(wend - args), args, x->wname[slot], (int)(e[n - 1] + 1 - wend), wend);
        p = e[n - 1] + 1;
    }
    fclose(f);
    return out;
}

/* Write exported function f: arena and batch, the standardisation of its input, the
 * body (emit_c_infer_body, its kernels renamed), the copies into the outputs. */
static void emit_function_infer(X *x, const XFn *f, FILE *cf) {
    const Graph *g = f->fn->g;
    const char **leaf = NEWN(const char *, g->len + 1);
    for (int i = 0; i < g->len; i++)
        if (g->n[i].op == OP_PARAM && !(g->n[i].flags & NF_DEAD)) leaf[i] = x->wname[g->n[i].slot];
    for (int k = 0; k < f->nin; k++) leaf[f->in[k].node] = f->in[k].c;
    fprintf(cf, "\n/* The %s: ", f->title);
    for (int k = 0; k < f->nin; k++) fprintf(cf, "%s%s %s%s", k ? ", " : "", f->in[k].c, f->in[k].i32 ? "i32" : "f32", f->in[k].shape);
    fprintf(cf, " -> ");
    for (int k = 0; k < f->nout; k++) fprintf(cf, "%s%s %s%s", k ? ", " : "", f->out[k].c, f->out[k].i32 ? "i32" : "f32", f->out[k].shape);
    fprintf(cf, ".\n * Arena: %lld bytes used of %s_ARENA_BYTES. */\n%s\n{\n", (long long)f->fn->plan->bytes, x->up, prototype(f));
    fprintf(cf, "#ifdef %s_NO_STATIC_ARENA\n    char *A = (char *)arena;\n#else\n"
                "    char *A = arena ? (char *)arena : (char *)%s_arena;\n#endif\n"
                "    const int nb = %s_BATCH;\n    (void)A; (void)nb;\n",
            x->up, x->low, x->up);
    if (f->norm_input >= 0) {
        const Arg *a = &f->in[f->norm_input];
        const char *v = cc_str("%s_std", a->c);
        fprintf(cf, "    /* %s standardised as in training (train { normalize = \"%.17g,%.17g\" }), in double like the\n"
                    "     * data loader, after the planned buffers */\n"
                    "    float *%s = (float *)(A + %lld);\n"
                    "    for (int64_t i = 0; i < %lld; i++) %s[i] = (float)(((double)%s[i] - %s) * %s);\n",
                a->c, x->mean, 1.0 / x->inv_std, v, (long long)f->fn->plan->bytes, (long long)a->numel, v, a->c, e_lit(x->mean),
                e_lit(x->inv_std));
        leaf[a->node] = v;
    }
    char *body = NULL;
    size_t blen = 0;
    FILE *mf = open_memstream(&body, &blen);
    if (!mf) die("open_memstream");
    const char **name = emit_c_infer_body(mf, x->m, f->fn, leaf);
    fclose(mf);
    if (x->q8) {
        char *q = quantized_calls(x, body);
        free(body);
        body = q;
    }
    rename_kernels(cf, body, &x->K);
    free(body);
    for (int k = 0; k < f->nout; k++)
        fprintf(cf, "    memcpy(%s, %s, %lld * sizeof(%s));\n", f->out[k].c, name[f->out[k].node], (long long)f->out[k].numel,
                f->out[k].i32 ? "int32_t" : "float");
    fprintf(cf, "}\n");
}

static void emit_header_infer(X *x, FILE *hf, const char *header_name) {
    const Model *m = x->m;
    fprintf(hf, "/* %s -- generated by cdlc %s --inference from %s (model %s%s%s) and %s.\n"
                " * Do not edit.  The model's eval-mode forward as plain C99 (see the .c file). */\n",
            header_name, CDL_VERSION, m->file, m->name, m->consts_str ? "; " : "", m->consts_str ? m->consts_str : "",
            x->w->path);
    fprintf(hf, "#ifndef %s_H\n#define %s_H\n\n#include <stdint.h>\n\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n", x->up, x->up);
    fprintf(hf, "/* Rows per call: the batch B the file was compiled for (cdlc -D B=N). */\n#define %s_BATCH %lld\n",
            x->up, (long long)(m->batch > 0 ? m->batch : 1));
    fprintf(hf, "/* Activation memory every function needs: pass an arena this big (aligned for float),\n"
                " * or NULL to use the file's static one (not reentrant; compile with\n"
                " * -D%s_NO_STATIC_ARENA to leave it out). */\n#define %s_ARENA_BYTES %lld\n",
            x->up, x->up, (long long)x->arena);
    for (int k = 0; k < x->nf; k++) {
        const XFn *f = &x->f[k];
        fprintf(hf, "\n/* The %s.  Element counts of its arguments: */\n", f->title);
        const char *fu = cc_str("%s", f->cname);
        char *u = arena_strdup(cc_arena, fu);
        for (char *c = u; *c; c++) *c = (char)toupper((unsigned char)*c);
        for (int j = 0; j < f->nin + f->nout; j++) {
            const Arg *a = j < f->nin ? &f->in[j] : &f->out[j - f->nin];
            char *au = arena_strdup(cc_arena, a->c);
            for (char *c = au; *c; c++) *c = (char)toupper((unsigned char)*c);
            fprintf(hf, "#define %s_%s_SIZE %lld  /* %s %s%s%s */\n", u, au, (long long)a->numel, j < f->nin ? "in " : "out",
                    a->i32 ? "i32" : "f32", a->shape,
                    j == f->norm_input ? cc_str(": as the dataset gives it, standardised inside (mean %g, std %g)", x->mean,
                                                1.0 / x->inv_std)
                                       : "");
        }
        fprintf(hf, "%s;\n", prototype(f));
    }
    fprintf(hf, "\n#ifdef __cplusplus\n}\n#endif\n\n#endif\n");
}

void emit_infer(const Pipeline *p, Weights *w, bool q8, FILE *cf, FILE *hf, const char *c_name, const char *header_name) {
    const Model *m = p->m;
    X X0 = {.p = p, .m = m, .w = w, .K = kernels_load(), .q8 = q8}, *x = &X0;
    x->low = cc_str("%s_infer", m->name);
    x->up = cc_str("%s_INFER", m->name);
    for (char *c = (char *)x->up; *c; c++) *c = (char)toupper((unsigned char)*c);
    int cap = 64 + 4 * w->n;
    for (int k = 0; k < p->nfn; k++) cap += p->fn[k].g->len;
    x->taken = NEWN(const char *, cap);
    x->wname = NEWN(const char *, w->n + 1);
    find_normalize(x);
    bool ok = true;
    for (int k = 0; k < p->nfn; k++)
        ok &= check_ops(p->fn[k].g, p->fn[k].kind == FN_ENTRY ? cc_str("entry %s", p->fn[k].entry->name) : "forward", &x->K);
    if (!ok || !layout_weights(x) || diag_error_count()) return;
    x->f = NEWN(XFn, p->nfn + 1);
    x->taken[x->ntaken++] = cc_str("%s_arena", x->low);
    for (int k = 0; k < p->nfn; k++) x->taken[x->ntaken++] = fn_cname(m, &p->fn[k]);
    x->nf0 = x->ntaken;
    for (int k = 0; k < p->nfn; k++) x->f[x->nf++] = describe(x, &p->fn[k]);
    for (int k = 0; k < p->nfn; k++) name_weights(x, p->fn[k].g);
    x->arena = 64;
    for (int k = 0; k < x->nf; k++) {
        const XFn *f = &x->f[k];
        int64_t need = f->fn->plan->bytes + (f->norm_input >= 0 ? (f->in[f->norm_input].numel * 4 + 63) / 64 * 64 : 0);
        if (need > x->arena) x->arena = need;
    }

    /* functions first (they decide the kernels), then the file in reading order */
    char *fns = NULL;
    size_t flen = 0;
    FILE *ff = open_memstream(&fns, &flen);
    if (!ff) die("open_memstream");
    for (int k = 0; k < x->nf; k++) emit_function_infer(x, &x->f[k], ff);
    fclose(ff);

    int nfold = 0;
    for (int k = m->nparams; k < w->n; k++) nfold += x->wname[k] != NULL && strstr(w->t[k].name, ".weight") != NULL;
    fprintf(cf, "/* %s -- generated by cdlc %s --inference from %s (model %s%s%s) with the weights of %s.\n"
                " * Do not edit.\n *\n"
                " * The eval-mode forward%s of this exact model as self-contained C99: the weights\n"
                " * are static const arrays%s, activations live in one arena of %lld bytes\n"
                " * (%s_ARENA_BYTES), every shape is a constant (batch %s_BATCH).  No allocation, no\n"
                " * threads, no library but libm.\n"
                " * The kernels are plain loops; each keeps the contract of the runtime kernel it\n"
                " * stands in for (cdl_NAME_f32 in runtime/cdl.h is nn_NAME here). */\n",
            c_name, CDL_VERSION, m->file, m->name,
            m->consts_str ? "; " : "", m->consts_str ? m->consts_str : "", w->path, x->nf > 1 ? " and entries" : "",
            nfold ? cc_str(" (%d batch norm%s folded into\n * the layer before)", nfold, nfold == 1 ? "" : "s") : "",
            (long long)x->arena, x->up, x->up);
    fprintf(cf, "#include \"%s\"\n", header_name);
    for (int k = 0; k < x->K.n; k++)
        if (!strcmp(x->K.s[k].name, "preamble") || x->K.s[k].used) fputs(x->K.s[k].text, cf);
    emit_weights(x, cf);
    fprintf(cf, "\n#ifndef %s_NO_STATIC_ARENA\nstatic float %s_arena[%lld];  /* %s_ARENA_BYTES */\n#endif\n", x->up, x->low,
            (long long)(x->arena / 4), x->up);
    fputs(fns, cf);
    free(fns);
    emit_header_infer(x, hf, header_name);
}
