/* cdl-compare -- static graph vs dynamic tape for one model, side by side.
 *
 *   cdl-compare model.cdl [--steps 20] [--batch N] [--json] [--tol X] [...]
 *
 * Runs cdlc (found beside this program) twice into a temporary directory: the static
 * build (model.c) and the tape build (model_tape.c, cdlc --target=tape).  The tape build
 * is compiled with -DCDL_TAPE_RENAME, which renames its public symbols (mlp_model ->
 * mlp_tape_model, ...), so both link into one program whose main() is
 * cdl_compare(&mlp_model, &mlp_tape_model, argc, argv) (runtime/compare.c).  That program
 * is built with cc (or $CC) -O2 -march=native and $CDL_CFLAGS (both split at blanks, as
 * cdlc --exe splits them) against the runtime and run with the remaining options; its
 * exit status is ours.
 *
 * Options of this wrapper: -D NAME=VALUE and --precision=f32|f64 go to cdlc; --keep
 * keeps the temporary directory (its path is printed); everything else goes to the
 * comparison (see cdl_compare in cdl.h: --steps, --batch, --data, --seed, --optimizer,
 * --lr, --threads, --tol, --json).
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "argv.h"

#define MAXARG 256
#ifndef CDL_RT_LIBS
#error "compile with -DCDL_RT_LIBS='\"...\"' (the Makefile passes its RT_LIBS)"
#endif

static const char usage[] =
    "usage: cdl-compare model.cdl [--steps N] [--batch N] [--json] [--tol X] [--data NAME] [--seed N]\n"
    "                   [--optimizer SPEC] [--lr X] [--threads N] [-D NAME=VALUE] [--precision=f64] [--keep]\n"
    "  builds the model statically and as a tape program, runs both on the same batches and\n"
    "  prints losses, gradient differences, ms/step and memory for each.\n";

/* The temporary files, for the signal handler (async-signal-safe cleanup). */
enum { NTMP = 6 };
static char tmp_files[NTMP][PATH_MAX + 32], tmp_dir[64];
static int keep_files;
static volatile pid_t child;

static void remove_tmp(void) {
    if (keep_files || !tmp_dir[0]) return;
    for (int k = 0; k < NTMP; k++) unlink(tmp_files[k]);
    rmdir(tmp_dir);
}

/* Interrupted (Ctrl-C, timeout, a closed pipe): stop the child, remove the files. */
static void on_signal(int sig) {
    if (child > 0) kill(child, sig);
    remove_tmp();
    _exit(128 + sig);
}

/* Run argv (argv[0] searched in PATH); the exit status, or -1 if it could not run. */
static int run(char *const *argv, const char *out_path) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        if (out_path) {
            FILE *f = freopen(out_path, "w", stdout);
            (void)f;
        }
        execvp(argv[0], argv);
        fprintf(stderr, "cdl-compare: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    child = pid;
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    child = 0;
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    fprintf(stderr, "cdl-compare: %s killed by signal %d\n", argv[0], WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static int exists(const char *p) { return access(p, R_OK) == 0; }

/* The directory of this program. */
static int self_dir(char *dir, size_t n) {
    ssize_t k = readlink("/proc/self/exe", dir, n - 1);
    if (k <= 0) return -1;
    dir[k] = 0;
    char *slash = strrchr(dir, '/');
    if (!slash) return -1;
    *slash = 0;
    return 0;
}

/* cdlc, the runtime headers and libcdlrt.a: beside us in a build directory (build/ or
 * build/NAME/, the sources two or three levels up), or installed (PREFIX/bin,
 * PREFIX/include, PREFIX/lib). */
static int find_tools(const char *dir, char *cdlc, char *inc, char *lib, size_t n) {
    snprintf(cdlc, n, "%s/cdlc", dir);
    snprintf(lib, n, "%s/libcdlrt.a", dir);
    if (!exists(cdlc) || !exists(lib)) return -1;
    static const char *const incs[] = {"%s/../runtime", "%s/../../runtime", "%s/../include"};
    for (size_t k = 0; k < sizeof incs / sizeof incs[0]; k++) {
        snprintf(inc, n, incs[k], dir);
        char h[2 * PATH_MAX];
        snprintf(h, sizeof h, "%s/cdl.h", inc);
        if (exists(h)) return 0;
    }
    snprintf(lib, n, "%s/../lib/libcdlrt.a", dir);
    snprintf(inc, n, "%s/../include", dir);
    return exists(lib) ? 0 : -1;
}

/* NAME from "extern const cdl_model NAME_model;" in the generated header. */
static int model_name(const char *header, char *name, size_t n) {
    FILE *f = fopen(header, "r");
    if (!f) return -1;
    char buf[1024];
    int ok = -1;
    while (fgets(buf, sizeof buf, f)) {
        const char *p = strstr(buf, "extern const cdl_model ");
        if (!p) continue;
        p += strlen("extern const cdl_model ");
        const char *e = strstr(p, "_model;");
        if (!e || (size_t)(e - p) >= n) continue;
        memcpy(name, p, (size_t)(e - p));
        name[e - p] = 0;
        ok = 0;
        break;
    }
    fclose(f);
    return ok;
}


int main(int argc, char **argv) {
    const char *model = NULL;
    char *cdlc_extra[MAXARG], *pass[MAXARG];
    int ncx = 0, npass = 0, keep = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return 0;
        }
        if (ncx + 2 >= MAXARG || npass + 2 >= MAXARG) {
            fprintf(stderr, "cdl-compare: too many arguments\n");
            return 2;
        }
        if (!strcmp(a, "--keep")) keep = 1;
        else if (!strncmp(a, "--precision=", 12)) cdlc_extra[ncx++] = argv[i];
        else if (!strcmp(a, "-D") && i + 1 < argc) cdlc_extra[ncx++] = argv[i], cdlc_extra[ncx++] = argv[++i];
        else if (!strncmp(a, "-D", 2) && a[2]) cdlc_extra[ncx++] = argv[i];
        else if (a[0] != '-' && !model && (npass == 0 || strncmp(pass[npass - 1], "--", 2) != 0 || !strcmp(pass[npass - 1], "--json")))
            model = a;
        else pass[npass++] = argv[i];
    }
    keep_files = keep;
    if (!model) {
        fprintf(stderr, "cdl-compare: no model file\n%s", usage);
        return 2;
    }
    char self[PATH_MAX], cdlc[PATH_MAX + 32], inc[PATH_MAX + 32], lib[PATH_MAX + 32];
    if (self_dir(self, sizeof self) < 0 || find_tools(self, cdlc, inc, lib, sizeof cdlc) < 0) {
        fprintf(stderr, "cdl-compare: cannot find cdlc, cdl.h and libcdlrt.a beside %s (build them first)\n", argv[0]);
        return 1;
    }
    char dir[] = "/tmp/cdl-compare-XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(stderr, "cdl-compare: cannot make a temporary directory: %s\n", strerror(errno));
        return 1;
    }
    static const char *const files[NTMP] = {"static.c", "static.h", "tape.c", "tape.h", "main.c", "compare"};
    snprintf(tmp_dir, sizeof tmp_dir, "%s", dir);
    for (int k = 0; k < NTMP; k++) snprintf(tmp_files[k], sizeof tmp_files[k], "%s/%s", dir, files[k]);
    char *s_c = tmp_files[0], *s_h = tmp_files[1], *t_c = tmp_files[2], *m_c = tmp_files[4], *prog = tmp_files[5], name[200];
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);
    int status = 1;

    /* the compile command, checked before anything is built: $CC may hold flags ("clang
     * -fsanitize=address"), $CDL_CFLAGS adds flags after ours (the ASan suite links with
     * its sanitizers); both split at blanks, quotes refused, as cdlc --exe does (argv.c) */
    Argv cc_av = {0};
    char incflag[PATH_MAX + 40];
    snprintf(incflag, sizeof incflag, "-I%s", inc);
    const char *cc = getenv("CC") && *getenv("CC") ? getenv("CC") : "cc";
    const char *extra = getenv("CDL_CFLAGS") ? getenv("CDL_CFLAGS") : "";
    if (!argv_split(&cc_av, cc, "cdl-compare", "CC")) goto out;
    if (!cc_av.n) argv_push(&cc_av, "cc");
    const char *rest[] = {"-std=c11", "-O2", "-march=native", "-DCDL_TAPE_RENAME", incflag, s_c, t_c, m_c, lib, "-o", prog};
    for (size_t k = 0; k < sizeof rest / sizeof rest[0]; k++) argv_push(&cc_av, rest[k]);
    if (!argv_split(&cc_av, extra, "cdl-compare", "CDL_CFLAGS")) goto out;
    /* the runtime's libraries, as the Makefile names them for this build's backend */
    argv_split(&cc_av, CDL_RT_LIBS, "cdl-compare", "CDL_RT_LIBS");

    /* the two builds */
    for (int tape = 0; tape < 2; tape++) {
        char *av[MAXARG + 8];
        int n = 0;
        av[n++] = cdlc;
        if (tape) av[n++] = "--target=tape";
        for (int k = 0; k < ncx; k++) av[n++] = cdlc_extra[k];
        av[n++] = (char *)model;
        av[n++] = "-o";
        av[n++] = tape ? t_c : s_c;
        av[n] = NULL;
        if (run(av, NULL) != 0) {
            fprintf(stderr, "cdl-compare: cdlc failed on %s\n", model);
            goto out;
        }
    }
    if (model_name(s_h, name, sizeof name) < 0) {
        fprintf(stderr, "cdl-compare: no model descriptor in %s\n", s_h);
        goto out;
    }
    FILE *f = fopen(m_c, "w");
    if (!f) {
        fprintf(stderr, "cdl-compare: cannot write %s\n", m_c);
        goto out;
    }
    fprintf(f, "/* generated by cdl-compare: the static and the tape build of model %s in one program */\n", name);
    fprintf(f, "#include \"cdl.h\"\n\nextern const cdl_model %s_model, %s_tape_model;\n\n", name, name);
    fprintf(f, "int main(int argc, char **argv) { return cdl_compare(&%s_model, &%s_tape_model, argc, argv); }\n", name, name);
    if (fclose(f) != 0) goto out;

    /* compile and link */
    if (run(cc_av.v, NULL) != 0) {
        fprintf(stderr, "cdl-compare: compiling the comparison program failed (in %s)\n", dir);
        keep = keep_files = 1;
        goto out;
    }

    /* run it */
    {
        char *av[MAXARG + 2];
        int n = 0;
        av[n++] = prog;
        for (int k = 0; k < npass; k++) av[n++] = pass[k];
        av[n] = NULL;
        status = run(av, NULL);
    }
out:
    argv_free(&cc_av);
    keep_files = keep;
    if (keep) fprintf(stderr, "cdl-compare: files kept in %s\n", dir);
    remove_tmp();
    return status;
}
