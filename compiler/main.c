/* main.c -- cdlc, the cdl compiler driver.  main() is the pipeline, a straight list
 * of passes (pipeline.c runs each over every function the model compiles to):
 *
 *   elab_file          parse, elaborate, infer shapes: the model's forward graphs
 *   ir_verify          structural invariants
 *   pipeline_clone     one graph per function kind: eval, train, input gradient,
 *                      each entry (--target=tape: the record graph and the entries)
 *   pipeline_autodiff  gradient nodes for the train and input-gradient functions
 *   pipeline_verify    invariants again, gradients included
 *   pipeline_opt       CSE, GEMM accumulation, dead code, in-place marking
 *   pipeline_plan      buffers in the activation arena (tape: the arena's bound)
 *   emit_c / emit_tape write the C (--exe: and compile it)
 *
 * --dump-after=PASS prints the graphs between two of these calls and stops.
 */
#include "cdlc.h"
#include "cdl.h"

#include <errno.h>
#include <limits.h>
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
    "  --exe                emit, compile and link a trainer program (-o names it)\n"
    "  --max-nodes=N        graph-size budget after inlining blocks (default 1000000)\n"
    "  --help, --version\n";

typedef struct Opts {
    const char *path, *out, *emit, *dump_after, *target;
    int real_size;
    bool check, with_main, exe;
    int ndefs;
    const char **defs;
} Opts;

static int usage_error(const char *msg, const char *arg) {
    fprintf(stderr, "cdlc: %s%s%s\n%s", msg, arg ? ": " : "", arg ? arg : "", usage);
    return 2;
}

static int parse_args(int argc, char **argv, Opts *o) {
    *o = (Opts){.emit = "c", .target = "c", .real_size = 4};
    o->defs = NEWN(const char *, argc + 1);
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
    return arena_printf(cc_arena, "%.*s.h", (int)n, c);
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
        *lib = arena_printf(cc_arena, "%s/libcdlrt.a", exe);
        const char *up = "/..";
        for (int depth = 0; depth < 4; depth++, up = arena_printf(cc_arena, "%s/..", up)) {
            *inc = arena_printf(cc_arena, "%s%s/runtime", exe, up);
            if (access(arena_printf(cc_arena, "%s/cdl.h", *inc), R_OK) == 0 && access(*lib, R_OK) == 0) return;
        }
        *inc = arena_printf(cc_arena, "%s/../include", exe);
        *lib = arena_printf(cc_arena, "%s/../lib/libcdlrt.a", exe);
        if (access(arena_printf(cc_arena, "%s/cdl.h", *inc), R_OK) == 0 && access(*lib, R_OK) == 0) return;
    }
    *inc = "/usr/local/include";
    *lib = "/usr/local/lib/libcdlrt.a";
}

static void emit(const Pipeline *p, FILE *cf, FILE *hf, bool with_main, const char *header_name) {
    (p->tape ? emit_tape : emit_c)(p, cf, hf, with_main, header_name);
}

/* --exe: write the C into a temporary directory, compile and link with the system cc. */
static int build_exe(const Pipeline *p, const Opts *o) {
    const Model *m = p->m;
    char dir[] = "/tmp/cdlc-XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(stderr, "cdlc: cannot make a temporary directory: %s\n", strerror(errno));
        return 1;
    }
    char *c = arena_printf(cc_arena, "%s/%s.c", dir, m->name), *h = header_path(c);
    FILE *cf = open_out(c), *hf = open_out(h);
    emit(p, cf, hf, true, strrchr(h, '/') + 1);
    close_out(cf, c);
    close_out(hf, h);
    const char *inc, *lib;
    runtime_paths(&inc, &lib);
    const char *out = o->out ? o->out : m->name;
    /* $CC and $CDL_CFLAGS choose the compiler and add flags (the ASan suite links the
     * programs it builds against a sanitized runtime this way). */
    const char *cc = getenv("CC") && *getenv("CC") ? getenv("CC") : "cc";
    const char *extra = getenv("CDL_CFLAGS") ? getenv("CDL_CFLAGS") : "";
    char *cmd = arena_printf(cc_arena, "%s -std=c11 -O2 -march=native %s -I'%s' '%s' '%s' -o '%s' -lopenblas -lz -lpthread -lm", cc,
                             extra, inc, c, lib, out);
    int rc = system(cmd);
    remove(c);
    remove(h);
    rmdir(dir);
    if (rc != 0) {
        fprintf(stderr, "cdlc: compiling the generated program failed: %s\n", cmd);
        return 1;
    }
    return 0;
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

/* Write the generated C: to -o FILE (and its header beside it), else to stdout. */
static int write_c(const Pipeline *p, const Opts *o) {
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
    if (!m || diag_error_count()) return 1;
    ir_verify(m->g);
    for (int k = 0; k < m->nentries; k++) ir_verify(m->entries[k].g);
    if (o.check) return 0;
    if (dump_after(&o, "elab", m, NULL)) return 0;
    if (strcmp(o.emit, "c")) return emit_ir(m, &o);

    Pipeline *p = pipeline_clone(m, o.real_size, !strcmp(o.target, "tape"));
    pipeline_autodiff(p);
    if (dump_after(&o, "autodiff", m, p)) return 0;
    pipeline_verify(p);
    pipeline_opt(p);
    if (dump_after(&o, "opt", m, p)) return 0;
    pipeline_plan(p);

    rc = o.exe ? build_exe(p, &o) : write_c(p, &o);
    arena_free(cc_arena);
    return rc;
}
