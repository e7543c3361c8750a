/* main.c -- cdlc, the cdl compiler driver.  main() is the pipeline, a straight list
 * of passes (pipeline.c runs each over every function the model compiles to):
 *
 *   elab_file          parse, elaborate, infer shapes: the model's forward graphs
 *   ir_verify          structural invariants
 *   pipeline_clone     one graph per function kind: eval, train, input gradient,
 *                      each entry (--target=tape: the record graph and the entries)
 *   pipeline_autodiff  gradient nodes for the train and input-gradient functions
 *   pipeline_verify    invariants again, gradients included
 *   pipeline_opt       convolution epilogue fusion (opt_fuse_conv.c), CSE, dead code,
 *                      in-place marking, conv2d_bwd_xw pairing (opt_fuse_conv.c)
 *   pipeline_plan      buffers in the activation arena (tape: the arena's bound)
 *   emit_c / emit_tape write the C (--exe: and compile it)
 *
 * The static target's C without --dump-after runs the passes from pipeline_clone to
 * pipeline_plan one function at a time, each just before its C (pipeline_emit_c), and
 * gives each function's memory back after it: the same C, a third of the memory.
 *
 * --inference --weights CKPT (the inference export) reads the checkpoint first
 * (weights_load), clones the chosen functions (infer_clone), folds batch norms and
 * drops dropout (infer_prepare), then runs the same passes and emit_infer.
 *
 * --dump-after=PASS prints the graphs between two of these calls and stops.
 */
#include "argv.h"
#include "cdlc.h"
#include "cdl.h"

#include <errno.h>
#include <limits.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char usage[] =
    "usage: cdlc [options] model.cdl      (\"-\" reads standard input)\n"
    "  --check              parse, elaborate and shape-check only\n"
    "  --emit=c|ir|dot      what to write (default c); ir: one node a line; dot: Graphviz\n"
    "  --dump-after=PASS    print the IR after elab, autodiff or opt (every function's graph)\n"
    "  -o FILE              output file; for C, FILE.c and FILE.h (header beside it)\n"
    "  -D NAME=VALUE        override a model constant (model mlp(B = 64, H = 256))\n"
    "  --precision=f32|f64  real type of the generated code (f64 for gradient checks)\n"
    "  --target=c|tape      static code (default) or eager calls to the runtime tape\n"
    "  --main               add main() running the generic trainer (cdl_main)\n"
    "  --exe                emit, compile and link a trainer program (-o names it) with\n"
    "                       $CC and $CDL_CFLAGS, split at blanks (no shell runs)\n"
    "  --max-nodes=N        graph-size budget after inlining blocks (default 1000000)\n"
    "  --inference          write a self-contained C99 file of the eval-mode forward with the\n"
    "                       weights inside (no runtime, no BLAS); batch 1 unless -D B=N\n"
    "  --weights FILE       the checkpoint (safetensors) --inference takes the weights from\n"
    "  --entry=NAME[,NAME]  --inference: the functions to write: forward (the default) and\n"
    "                       entries of the model\n"
    "  --quantize=int8      --inference: linear and convolution weights as int8, one scale\n"
    "                       per output channel\n"
    "  --help, --version\n";

typedef struct Opts {
    const char *path, *out, *emit, *dump_after, *target;
    int real_size;
    bool check, with_main, exe, infer, q8;
    const char *weights;
    int ndefs, nentries;
    const char **defs, **entries;
} Opts;

static int usage_error(const char *msg, const char *arg) {
    fprintf(stderr, "cdlc: %s%s%s\n%s", msg, arg ? ": " : "", arg ? arg : "", usage);
    return 2;
}

static int parse_args(int argc, char **argv, Opts *o) {
    *o = (Opts){.emit = "c", .target = "c", .real_size = 4};
    o->defs = NEWN(const char *, argc + 2);
    size_t names = 1;  /* --entry=A,B,...: at most one name per comma, plus one */
    for (int i = 1; i < argc; i++)
        for (const char *c = argv[i]; *c; c++) names += *c == ',';
    o->entries = NEWN(const char *, names + argc);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            exit(0);
        } else if (!strcmp(a, "--version")) {
            printf("cdlc %s\n", CDL_VERSION);
            exit(0);
        } else if (!strcmp(a, "--check")) o->check = true;
        else if (!strncmp(a, "--emit=", 7)) o->emit = a + 7;
        else if (!strncmp(a, "--dump-after=", 13)) o->dump_after = a + 13;
        else if (!strncmp(a, "--target=", 9)) o->target = a + 9;
        else if (!strcmp(a, "--precision=f32")) o->real_size = 4;
        else if (!strcmp(a, "--precision=f64")) o->real_size = 8;
        else if (!strcmp(a, "--main")) o->with_main = true;
        else if (!strcmp(a, "--exe")) o->exe = o->with_main = true;
        else if (!strncmp(a, "--max-nodes=", 12)) {
            char *end;
            long long n = strtoll(a + 12, &end, 10);
            if (end == a + 12 || *end || n <= 0) return usage_error("--max-nodes needs a positive number", a + 12);
            elab_set_max_nodes(n);
        } else if (!strcmp(a, "--inference")) o->infer = true;
        else if (!strcmp(a, "--quantize=int8")) o->q8 = true;
        else if (!strcmp(a, "--weights") || !strncmp(a, "--weights=", 10)) {
            if (!a[9] && ++i >= argc) return usage_error("--weights needs a file name", NULL);
            o->weights = a[9] ? a + 10 : argv[i];
        } else if (!strncmp(a, "--entry=", 8)) {
            for (char *s = arena_strdup(cc_arena, a + 8), *save = NULL, *w; (w = strtok_r(s, ",", &save)); s = NULL)
                o->entries[o->nentries++] = w;
            if (!a[8]) return usage_error("--entry needs a name", NULL);
        }
        else if (!strcmp(a, "-o")) {
            if (++i >= argc) return usage_error("-o needs a file name", NULL);
            o->out = argv[i];
        } else if (!strncmp(a, "-D", 2)) {
            const char *d = a[2] ? a + 2 : (++i < argc ? argv[i] : NULL);
            if (!d || !strchr(d, '=')) return usage_error("-D needs NAME=VALUE", d);
            o->defs[o->ndefs++] = d;
        } else if (a[0] == '-' && a[1]) return usage_error("unknown option", a);
        else if (o->path) return usage_error("more than one input file", a);
        else o->path = a;
    }
    if (!o->path) return usage_error("no input file", NULL);
    if (strcmp(o->emit, "c") && strcmp(o->emit, "ir") && strcmp(o->emit, "dot")) return usage_error("unknown --emit", o->emit);
    if (strcmp(o->target, "c") && strcmp(o->target, "tape")) return usage_error("unknown --target", o->target);
    if (o->infer && !o->weights) return usage_error("--inference needs --weights CHECKPOINT", NULL);
    if (!o->infer && (o->weights || o->nentries || o->q8))
        return usage_error("--weights, --entry and --quantize go with --inference", NULL);
    if (o->infer && (o->exe || o->with_main || o->real_size != 4 || strcmp(o->target, "c") || strcmp(o->emit, "c")))
        return usage_error("--inference writes f32 C only (no --exe, --main, --precision=f64, --target=tape, --emit)", NULL);
    if (o->dump_after && strcmp(o->dump_after, "elab") && strcmp(o->dump_after, "autodiff") && strcmp(o->dump_after, "opt"))
        return usage_error("unknown pass for --dump-after (elab, autodiff, opt)", o->dump_after);
    return 0;
}

static FILE *open_out(const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "cdlc: cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
    /* a big model's C in 1 MiB writes (glibc ignores a size without a buffer); the
     * buffers stay reachable until exit, after the files are closed */
    static char *buf[8];
    static int nbuf;
    if (nbuf < 8 && (buf[nbuf] = malloc((size_t)1 << 20))) setvbuf(f, buf[nbuf++], _IOFBF, (size_t)1 << 20);
    return f;
}

static void close_out(FILE *f, const char *path) {
    if (fflush(f) || ferror(f) || fclose(f)) {
        fprintf(stderr, "cdlc: error writing %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

/* "dir/x.c" -> "dir/x.h" (and "x" -> "x.h"). */
static char *header_path(const char *c) {
    size_t n = strlen(c);
    if (n > 2 && !strcmp(c + n - 2, ".c")) n -= 2;
    return cc_str("%.*s.h", (int)n, c);
}

/* --dump-after=PASS: when pass is the one asked for, print the graphs as they are now
 * (the model's after elab, else every function's) and tell main to stop. */
static bool dump_after(const Opts *o, const char *pass, const Model *m, const Pipeline *p) {
    if (!o->dump_after || strcmp(o->dump_after, pass)) return false;
    if (p) pipeline_dump(stdout, p, pass);
    else ir_dump(stdout, m->g, cc_str("after %s", pass));
    return true;
}

/* The runtime's include directory and library: in-tree (cdlc in build/, the runtime
 * sources beside build/) or installed (PREFIX/bin/cdlc, PREFIX/include, PREFIX/lib). */
static void runtime_paths(const char **inc, const char **lib) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        *lib = cc_str("%s/libcdlrt.a", exe);
        const char *up = "/..";
        for (int depth = 0; depth < 4; depth++, up = cc_str("%s/..", up)) {
            *inc = cc_str("%s%s/runtime", exe, up);
            if (access(cc_str("%s/cdl.h", *inc), R_OK) == 0 && access(*lib, R_OK) == 0) return;
        }
        *inc = cc_str("%s/../include", exe);
        *lib = cc_str("%s/../lib/libcdlrt.a", exe);
        if (access(cc_str("%s/cdl.h", *inc), R_OK) == 0 && access(*lib, R_OK) == 0) return;
    }
    *inc = "/usr/local/include";
    *lib = "/usr/local/lib/libcdlrt.a";
}

static void emit(Pipeline *p, FILE *cf, FILE *hf, bool with_main, const char *header_name) {
    if (p->tape) emit_tape(p, cf, hf, with_main, header_name);
    else pipeline_emit_c(p, cf, hf, with_main, header_name);
}

/* The libraries a trainer program links besides libcdlrt.a: the Makefile passes its
 * own (LDLIBS), so a runtime built on another backend names its libraries once. */
#ifndef CDL_RT_LIBS
#define CDL_RT_LIBS "-lopenblas -lz -lpthread -lm"
#endif

extern char **environ;

/* One argument as a shell would need it, for messages: as is when plain, else quoted. */
static const char *shell_quoted(const char *s) {
    if (*s && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=+/.,:@%") == strlen(s)) return s;
    char *q = cc_str("'");
    for (const char *p = s; *p; p++) q = *p == '\'' ? cc_str("%s'\\''", q) : cc_str("%s%c", q, *p);
    return cc_str("%s'", q);
}

/* Run argv (argv[0] searched in PATH) without a shell and wait for it: 0 when it
 * exited with status 0; else a message naming the command and -1. */
static int run_argv(const Argv *a) {
    pid_t pid;
    int err = posix_spawnp(&pid, a->v[0], NULL, NULL, (char *const *)a->v, environ), st = 0;
    if (!err)
        while (waitpid(pid, &st, 0) < 0)
            if (errno != EINTR) err = errno;
    if (!err && WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
    char *cmd = cc_str("%s", shell_quoted(a->v[0]));
    for (int k = 1; k < a->n; k++) cmd = cc_str("%s %s", cmd, shell_quoted(a->v[k]));
    if (err) fprintf(stderr, "cdlc: cannot run %s: %s\n", a->v[0], strerror(err));
    fprintf(stderr, "cdlc: compiling the generated program failed: %s\n", cmd);
    return -1;
}

/* --exe: write the C into a temporary directory, then compile and link it with
 * $CC (default cc) and $CDL_CFLAGS (the ASan suite links the programs it builds
 * against a sanitized runtime this way), both split at blanks.  No shell runs, so
 * any output name is taken literally. */
static int build_exe(Pipeline *p, const Opts *o) {
    const Model *m = p->m;
    const char *cc = getenv("CC"), *extra = getenv("CDL_CFLAGS");
    if (!cc || !*cc) cc = "cc";
    if (!extra) extra = "";
    const char *inc, *lib;
    runtime_paths(&inc, &lib);
    Argv a = {0};
    bool ok = argv_split(&a, cc, "cdlc", "CC");
    if (ok && !a.n) argv_push(&a, "cc");
    ok = ok && argv_split(&a, "-std=c11 -O2 -march=native", "cdlc", "") && argv_split(&a, extra, "cdlc", "CDL_CFLAGS");
    char dir[] = "/tmp/cdlc-XXXXXX";
    if (ok && !mkdtemp(dir)) {
        fprintf(stderr, "cdlc: cannot make a temporary directory: %s\n", strerror(errno));
        ok = false;
    }
    if (!ok) {
        argv_free(&a);
        return 1;
    }
    char *c = cc_str("%s/%s.c", dir, m->name), *h = header_path(c);
    FILE *cf = open_out(c), *hf = open_out(h);
    emit(p, cf, hf, true, strrchr(h, '/') + 1);
    close_out(cf, c);
    close_out(hf, h);
    argv_push(&a, cc_str("-I%s", inc));
    argv_push(&a, c);
    argv_push(&a, lib);
    argv_push(&a, "-o");
    argv_push(&a, o->out ? o->out : m->name);
    argv_split(&a, CDL_RT_LIBS, "cdlc", "CDL_RT_LIBS");
    int rc = run_argv(&a);
    argv_free(&a);
    remove(c);
    remove(h);
    rmdir(dir);
    return rc ? 1 : 0;
}

/* --emit=ir|dot: the model's graphs after elaboration. */
static int emit_ir(const Model *m, const Opts *o) {
    FILE *out = o->out ? open_out(o->out) : stdout;
    bool dot = !strcmp(o->emit, "dot");
    if (dot) ir_dump_dot(out, m->g, m->name);
    else ir_dump(out, m->g, cc_str("model %s (%s)", m->name, m->file));
    for (int k = 0; !dot && k < m->nentries; k++) ir_dump(out, m->entries[k].g, cc_str("entry %s", m->entries[k].name));
    if (o->out) close_out(out, o->out);
    return 0;
}

/* --inference: the export to -o FILE (and its header beside it), else to stdout. */
static int write_infer(const Pipeline *p, Weights *w, const Opts *o) {
    const char *c = o->out ? o->out : cc_str("%s_infer.c", p->m->name), *h = header_path(c);
    const char *cb = strrchr(c, '/'), *hb = strrchr(h, '/');
    FILE *cf = o->out ? open_out(c) : stdout, *hf = o->out ? open_out(h) : fopen("/dev/null", "w");
    if (!hf) die("cannot open /dev/null");
    emit_infer(p, w, o->q8, cf, hf, cb ? cb + 1 : c, hb ? hb + 1 : h);
    if (o->out) {
        close_out(cf, c);
        close_out(hf, h);
    } else {
        fclose(hf);
    }
    if (!diag_error_count()) return 0;
    if (o->out) remove(c), remove(h);   /* nothing half-written is left behind */
    return 1;
}

/* --inference compiles for batch 1 unless -D sets the batch constant: a model elaborated
 * with the user's constants is elaborated again with B=1 added. */
static Model *infer_batch_one(Model *m, Opts *o) {
    if (!m->batch_name || m->batch == 1) return m;
    size_t n = strlen(m->batch_name);
    for (int k = 0; k < o->ndefs; k++)
        if (!strncmp(o->defs[k], m->batch_name, n) && o->defs[k][n] == '=') return m;
    o->defs[o->ndefs++] = cc_str("%s=1", m->batch_name);
    return elab_file(o->path, o->ndefs, o->defs);
}

/* Write the generated C: to -o FILE (and its header beside it), else to stdout. */
static int write_c(Pipeline *p, const Opts *o) {
    if (!o->out) {
        FILE *null = fopen("/dev/null", "w");
        if (!null) die("cannot open /dev/null");
        emit(p, stdout, null, o->with_main, cc_str("%s.h", p->m->name));
        fclose(null);
        return 0;
    }
    char *h = header_path(o->out);
    FILE *cf = open_out(o->out), *hf = open_out(h);
    const char *hb = strrchr(h, '/');
    emit(p, cf, hf, o->with_main, hb ? hb + 1 : h);
    close_out(cf, o->out);
    close_out(hf, h);
    return 0;
}

int main(int argc, char **argv) {
    cc_arena = arena_new();
    Opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc;
    ops_init();

    Model *m = elab_file(o.path, o.ndefs, o.defs);
    if (m && !diag_error_count() && o.infer) m = infer_batch_one(m, &o);
    if (!m || diag_error_count()) return 1;
    ir_verify(m->g);
    for (int k = 0; k < m->nentries; k++) ir_verify(m->entries[k].g);
    if (o.check) return 0;
    if (dump_after(&o, "elab", m, NULL)) return 0;
    if (strcmp(o.emit, "c")) return emit_ir(m, &o);

    Weights *w = NULL;
    if (o.infer && !(w = weights_load(o.weights, m))) return 1;
    /* The static target's C without --dump-after: each function is cloned, planned and
     * written in turn (pipeline_emit_c), so only one function's graphs are in memory. */
    if (!o.infer && !o.dump_after && !strcmp(o.target, "c")) {
        rc = o.exe ? build_exe(pipeline_new(m, o.real_size, false), &o) : write_c(pipeline_new(m, o.real_size, false), &o);
        arena_free(cc_arena);
        return rc;
    }
    Pipeline *p = o.infer ? infer_clone(m, o.nentries, o.entries) : pipeline_clone(m, o.real_size, !strcmp(o.target, "tape"));
    if (!p) return 1;
    for (int k = 0; o.infer && k < p->nfn; k++) infer_prepare(p->fn[k].g, w);
    pipeline_autodiff(p);
    if (dump_after(&o, "autodiff", m, p)) return 0;
    pipeline_verify(p);
    pipeline_opt(p);
    if (dump_after(&o, "opt", m, p)) return 0;
    pipeline_plan(p);

    rc = o.exe ? build_exe(p, &o) : o.infer ? write_infer(p, w, &o) : write_c(p, &o);
    arena_free(cc_arena);
    return rc;
}
