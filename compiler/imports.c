/* imports.c -- reading a program: the main file and, recursively, the files it imports
 * (paths relative to the importing file; a bare name such as "nn" is a module of the
 * standard library: lib/ in the source tree, share/cdl when installed), parsed once
 * each.  Collects the blocks of every file (one namespace: a second definition, or a
 * block with a built-in's name, is an error) and the last model of the main file;
 * models of imported files are ignored.
 * Import cycles and unreadable files are errors at the import statement.
 */
#include "cdlc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_MAX_BYTES ((size_t)64 << 20)

typedef struct Loader {
    Program *p;
    int bcap;
    const char **stack, **shown;   /* files being loaded: real path, name as shown */
    int nstack, scap;
    const char **done;             /* files loaded */
    int ndone, dcap;
} Loader;

/* Read a whole stream into a malloc'd buffer; *too_big past FILE_MAX_BYTES. */
static char *read_stream(FILE *f, size_t *len, bool *too_big) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) diag_out_of_memory(cap, 0);
    for (;;) {
        if (n == cap) {
            if (cap >= FILE_MAX_BYTES) {
                *too_big = true;
                break;
            }
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) diag_out_of_memory(cap, 0);
            buf = nb;
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        if (k == 0) break;
        n += k;
    }
    *len = n;
    return buf;
}

/* The file path for reading: the main file as given (standard input for "-"); an
 * imported one only when it is a regular file, opened without blocking (a FIFO would
 * wait for a writer, a device never end, and "-" is a file name there).  NULL after
 * an error at `at` naming the file as written. */
static FILE *open_source(const char *path, const char *as_written, Loc at, bool main) {
    if (main) {
        FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
        if (!f) error_at(at, "cannot open '%s': %s", as_written, strerror(errno));
        return f;
    }
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int err = errno;
        if (fd >= 0) close(fd);
        error_at(at, "cannot open '%s': %s", as_written, strerror(err));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        error_at(at, "cannot import '%s': not a regular file", as_written);
        return NULL;
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int err = errno;
        close(fd);
        error_at(at, "cannot open '%s': %s", as_written, strerror(err));
    }
    return f;
}

static bool in_list(const char **l, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (strcmp(l[i], s) == 0) return true;
    return false;
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static void register_block(Loader *L, const Ast *b) {
    Program *p = L->p;
    for (int i = 0; i < p->nblocks; i++) {
        const Ast *old = p->blocks[i];
        if (strcmp(old->name, b->name) != 0) continue;
        if (old->loc.file && strcmp(old->loc.file, b->loc.file) == 0)
            error_at(b->loc, "block '%s' is already defined at %d:%d", b->name, old->loc.line, old->loc.col);
        else
            error_at(b->loc, "block '%s' is already defined at %s:%d:%d", b->name, old->loc.file, old->loc.line,
                     old->loc.col);
        return;
    }
    if (builtin_find(b->name)) {
        error_at(b->loc, "block '%s' has the name of a built-in function", b->name);
        return;
    }
    for (int i = 0; i < b->list.n; i++) {
        const char *n = b->list.v[i]->name;
        if (strcmp(n, "name") == 0) error_at(b->list.v[i]->loc, "'name' is reserved for the instance name");
        for (int k = 0; k < i; k++)
            if (strcmp(b->list.v[k]->name, n) == 0) error_at(b->list.v[i]->loc, "duplicate parameter '%s'", n);
    }
    if (b->list.n > MAX_FORMALS - 1) {
        error_at(b->loc, "block '%s' has more than %d parameters", b->name, MAX_FORMALS - 1);
        return;
    }
    p->blocks = el_grow(p->blocks, &L->bcap, p->nblocks + 1, sizeof(Ast *));
    p->blocks[p->nblocks++] = b;
}

/* A library module: an import that is a name ("nn": letters, digits, '_') is NAME.cdl of the
 * standard library, looked up in the directories of $CDL_PATH (':'-separated), then
 * beside the compiler: <bin>/../share/cdl (make install), <bin>/../lib and
 * <bin>/../../lib (build/cdlc, build/onednn/cdlc in the source tree: lib/nn.cdl).
 * The path of the first that exists; NULL after an error at `at`.  *shown: the name
 * diagnostics and --emit=ir give the file: the path through $CDL_PATH as it is, the
 * standard library's as lib/NAME.cdl (the same wherever the compiler and its library
 * are installed or checked out). */
static bool is_module_name(const char *s) {
    if (!(*s == '_' || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z'))) return false;
    for (; *s; s++)
        if (!(*s == '_' || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')))
            return false;
    return true;
}

static bool regular_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static const char *find_module(const char *name, Loc at, const char **shown) {
    const char *env = getenv("CDL_PATH");
    while (env && *env) {
        size_t n = strcspn(env, ":");
        if (n) {
            const char *p = cc_str("%.*s/%s.cdl", (int)n, env, name);
            if (regular_file(p)) return *shown = p;
        }
        env += n + (env[n] == ':');
    }
    char exe[4096];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k > 0) {
        exe[k] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        const char *rel[] = {"../share/cdl", "../lib", "../../lib"};
        for (int i = 0; i < 3; i++) {
            const char *p = cc_str("%s/%s/%s.cdl", exe, rel[i], name);
            if (regular_file(p)) {
                *shown = cc_str("lib/%s.cdl", name);
                return p;
            }
        }
    }
    error_at(at, "cannot find the library module '%s' (no %s.cdl in $CDL_PATH, nor in share/cdl or lib/ beside "
             "the compiler)", name, name);
    return NULL;
}

/* Load path (or the given text), then its imports (relative ones from path's directory).
 * shown_as: its name in diagnostics and the IR (NULL: path).  main: take its last model. */
static void load(Loader *L, const char *path, const char *shown_as, const char *as_written, const char *text,
                 size_t len, Loc at, bool main) {
    char *rp = NULL;
    bool std = main && strcmp(path, "-") == 0;   /* the main file from standard input */
    if (!text && !std) rp = realpath(path, NULL);
    const char *key = arena_strdup(cc_arena, rp ? rp : path);
    free(rp);
    if (in_list(L->stack, L->nstack, key)) {
        const char *chain = "";
        int first = 0;
        while (strcmp(L->stack[first], key) != 0) first++;
        for (int i = first; i < L->nstack; i++)
            chain = cc_str("%s%s -> ", chain, base_name(L->shown[i]));
        error_at(at, "import cycle: %s%s", chain, base_name(path));
        return;
    }
    if (in_list(L->done, L->ndone, key)) return;
    if (!text) {
        bool big = false;
        FILE *f = open_source(path, as_written, at, main);
        if (!f) return;
        char *buf = read_stream(f, &len, &big);
        if (f != stdin) fclose(f);
        /* into the arena: nothing is left to free when the errors below stop the
         * compilation (diag_set_recovery) */
        text = big ? NULL : arena_strndup(cc_arena, buf, len);
        free(buf);
        if (big) {
            error_at(at, "'%s' is too large (more than %zu bytes)", as_written, FILE_MAX_BYTES);
            return;
        }
    }
    const char *shown = std ? "<stdin>" : shown_as ? shown_as : path;
    int errs = diag_error_count();
    Ast *file = parse_text(shown, text, len);
    int c = L->scap;
    L->stack = el_grow(L->stack, &c, L->nstack + 1, sizeof(char *));
    L->shown = el_grow(L->shown, &L->scap, L->nstack + 1, sizeof(char *));
    L->shown[L->nstack] = shown;
    L->stack[L->nstack++] = key;
    for (int i = 0; i < file->list.n; i++) {
        const Ast *it = file->list.v[i];
        if (it->kind == D_IMPORT) {
            const char *p = it->text, *as = NULL;
            const char *slash = strrchr(path, '/');
            if (is_module_name(p))
                p = find_module(p, it->loc, &as);
            else if (p[0] != '/' && slash && !std)
                p = cc_str("%.*s/%s", (int)(slash - path), path, p);
            if (p) load(L, p, as, it->text, NULL, 0, it->loc, false);
        } else if (it->kind == D_BLOCK) {
            register_block(L, it);
        } else if (it->kind == D_MODEL && main) {
            L->p->model = it;
        }
    }
    L->nstack--;
    L->done = el_grow(L->done, &L->dcap, L->ndone + 1, sizeof(char *));
    L->done[L->ndone++] = key;
    if (main && !L->p->model && diag_error_count() == errs) error_at(file->loc, "no model in this file");
}

void load_program(const char *path, const char *text, size_t len, Program *p) {
    *p = (Program){0};
    Loader L = {.p = p};
    load(&L, path, NULL, path, text, len, no_loc, true);
}
